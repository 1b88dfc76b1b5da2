"""Prompt templates for zero-shot classification; ``{}`` stands for the class name.

- ``openai_imagenet``: the 80 ImageNet templates of CLIP (Radford et al., 2021).
- ``laclip_imagenet``: the 7 of them that LaCLIP (and SLIP) evaluate ImageNet with.
- ``simple``: the single template ``a photo of a {}.``.

`load_templates` also reads a text file with one template per line.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError

OPENAI_IMAGENET_TEMPLATES = (
    "a bad photo of a {}.",
    "a photo of many {}.",
    "a sculpture of a {}.",
    "a photo of the hard to see {}.",
    "a low resolution photo of the {}.",
    "a rendering of a {}.",
    "graffiti of a {}.",
    "a bad photo of the {}.",
    "a cropped photo of the {}.",
    "a tattoo of a {}.",
    "the embroidered {}.",
    "a photo of a hard to see {}.",
    "a bright photo of a {}.",
    "a photo of a clean {}.",
    "a photo of a dirty {}.",
    "a dark photo of the {}.",
    "a drawing of a {}.",
    "a photo of my {}.",
    "the plastic {}.",
    "a photo of the cool {}.",
    "a close-up photo of a {}.",
    "a black and white photo of the {}.",
    "a painting of the {}.",
    "a painting of a {}.",
    "a pixelated photo of the {}.",
    "a sculpture of the {}.",
    "a bright photo of the {}.",
    "a cropped photo of a {}.",
    "a plastic {}.",
    "a photo of the dirty {}.",
    "a jpeg corrupted photo of a {}.",
    "a blurry photo of the {}.",
    "a photo of the {}.",
    "a good photo of the {}.",
    "a rendering of the {}.",
    "a {} in a video game.",
    "a photo of one {}.",
    "a doodle of a {}.",
    "a close-up photo of the {}.",
    "a photo of a {}.",
    "the origami {}.",
    "the {} in a video game.",
    "a sketch of a {}.",
    "a doodle of the {}.",
    "a origami {}.",
    "a low resolution photo of a {}.",
    "the toy {}.",
    "a rendition of the {}.",
    "a photo of the clean {}.",
    "a photo of a large {}.",
    "a rendition of a {}.",
    "a photo of a nice {}.",
    "a photo of a weird {}.",
    "a blurry photo of a {}.",
    "a cartoon {}.",
    "art of a {}.",
    "a sketch of the {}.",
    "a embroidered {}.",
    "a pixelated photo of a {}.",
    "itap of the {}.",
    "a jpeg corrupted photo of the {}.",
    "a good photo of a {}.",
    "a plushie {}.",
    "a photo of the nice {}.",
    "a photo of the small {}.",
    "a photo of the weird {}.",
    "the cartoon {}.",
    "art of the {}.",
    "a drawing of the {}.",
    "a photo of the large {}.",
    "a black and white photo of a {}.",
    "the plushie {}.",
    "a dark photo of a {}.",
    "itap of a {}.",
    "graffiti of the {}.",
    "a toy {}.",
    "itap of my {}.",
    "a photo of a cool {}.",
    "a photo of a small {}.",
    "a tattoo of the {}.",
)

LACLIP_IMAGENET_TEMPLATES = (
    "itap of a {}.",
    "a bad photo of the {}.",
    "a origami {}.",
    "a photo of the large {}.",
    "a {} in a video game.",
    "art of the {}.",
    "a photo of the small {}.",
)

TEMPLATE_SETS = {
    "openai_imagenet": OPENAI_IMAGENET_TEMPLATES,
    "laclip_imagenet": LACLIP_IMAGENET_TEMPLATES,
    "simple": ("a photo of a {}.",),
}


def _check_template(template: str, where: str) -> None:
    if template.count("{}") != 1:
        raise ConfigError(f"{where}: template {template!r} must contain '{{}}' exactly once")


def check_templates(templates) -> tuple[str, ...]:
    """Return ``templates`` as a tuple after checking that each holds exactly one ``{}``."""
    templates = tuple(templates)
    if not templates:
        raise ConfigError("no templates given")
    for index, template in enumerate(templates):
        _check_template(template, f"template {index}")
    return templates


def load_templates(name_or_path: str) -> tuple[str, ...]:
    """A built-in set by name (see `TEMPLATE_SETS`) or a text file with one template per line (blank lines skipped)."""
    if name_or_path in TEMPLATE_SETS:
        return TEMPLATE_SETS[name_or_path]
    path = Path(name_or_path)
    if not path.is_file():
        sets = ", ".join(TEMPLATE_SETS)
        raise ConfigError(f"templates {name_or_path!r} is neither a built-in set ({sets}) nor a file")
    templates = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            _check_template(line.strip(), f"{path}, line {number}")
            templates.append(line.strip())
    if not templates:
        raise ConfigError(f"{path} holds no templates")
    return tuple(templates)

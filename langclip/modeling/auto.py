"""Registration of langclip's model types with the `transformers` Auto classes, and the remote code of a folder.

Importing `langclip` (or `langclip.modeling`) runs the registration, so that ``AutoConfig``,
``AutoModel`` and ``AutoModelForZeroShotImageClassification`` (hence
``pipeline("zero-shot-image-classification", model=folder)``) load a langclip checkpoint by
its ``model_type``.

`write_remote_code` makes a checkpoint folder work without langclip: it writes the config and
model sources beside ``config.json`` (flattened into one folder, relative imports rewritten to
``from .module import``) and an ``auto_map`` naming them for the three Auto classes, so
``AutoModel.from_pretrained(folder, trust_remote_code=True)`` works anywhere. Tokenizers and
image processors are standard `transformers` classes and need no remote code.

`from_user_path` loads what a flag names (a folder or Hub id) and turns the stack's errors into a `ConfigError`
naming the flag; `check_tokenizer_fits` checks a tokenizer against a text tower's vocabulary
(`load_fitting_tokenizer`: both, for ``convert --tokenizer``).
"""

from __future__ import annotations

import inspect
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path

from huggingface_hub.utils import HFValidationError, validate_repo_id
from transformers import AutoConfig, AutoModel, AutoModelForZeroShotImageClassification

from ..errors import ConfigError

from .clips.configuration_clips import CLIPSConfig
from .clips.modeling_clips import CLIPSModel
from .laclip.configuration_laclip import LaCLIPConfig
from .laclip.modeling_laclip import LaCLIPModel

MODEL_CLASSES = {config_class: model_class for config_class, model_class in
                 ((LaCLIPConfig, LaCLIPModel), (CLIPSConfig, CLIPSModel))}
AUTO_MODEL_CLASSES = ("AutoModel", "AutoModelForZeroShotImageClassification")

for _config_class, _model_class in MODEL_CLASSES.items():
    AutoConfig.register(_config_class.model_type, _config_class, exist_ok=True)
    AutoModel.register(_config_class, _model_class, exist_ok=True)
    AutoModelForZeroShotImageClassification.register(_config_class, _model_class, exist_ok=True)


def remote_code_files(config: Mapping) -> dict[str, bytes]:
    """``config.json`` (``config`` plus an ``auto_map``) and the flat sources it names, by file name.

    Empty for model types that are not langclip's (e.g. ``clip``, which transformers provides).
    """
    by_type = {config_class.model_type: config_class for config_class in MODEL_CLASSES}
    config_class = by_type.get(config.get("model_type"))
    if config_class is None:
        return {}
    model_class = MODEL_CLASSES[config_class]
    files, auto_map = {}, {}
    for auto_classes, cls in ((("AutoConfig",), config_class), (AUTO_MODEL_CLASSES, model_class)):
        source = Path(inspect.getsourcefile(cls))
        auto_map.update({auto_class: f"{source.stem}.{cls.__name__}" for auto_class in auto_classes})
        files.update(flat_sources(source))
    files["config.json"] = (json.dumps({**config, "auto_map": auto_map}, indent=2, sort_keys=True) + "\n").encode()
    return files


def write_remote_code(folder: str | Path) -> list[str]:
    """Write `remote_code_files` of ``folder/config.json`` into ``folder``; returns the file names written."""
    folder = Path(folder)
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise ValueError(f"{folder} has no config.json: save the model with save_pretrained first")
    files = remote_code_files(json.loads(config_file.read_text(encoding="utf-8")))
    for name, content in files.items():
        (folder / name).write_bytes(content)
    return sorted(files)


def from_user_path(load, path: str, flag: str, **kwargs):
    """``load(path, **kwargs)`` (a ``from_pretrained``) of the folder or Hub id ``flag`` gives; the `OSError`
    transformers raises for a mistyped path (huggingface_hub's "Repo id must be in the form ...", a missing file, an
    unknown or unreachable Hub id) is a `ConfigError` naming ``flag``."""
    try:
        return load(path, **kwargs)
    except OSError as error:
        reason = str(error).strip().splitlines()[0]
        if os.path.exists(path):
            raise ConfigError(f"{flag} {path}: cannot load it from this local path ({reason})") from error
        try:
            validate_repo_id(path)
        except HFValidationError:
            raise ConfigError(f"{flag} {path!r} does not exist locally and is not a valid Hub id ('name' or "
                              "'namespace/name'): check the path") from error
        raise ConfigError(f"{flag} {path!r} does not exist locally, and loading it as a Hub id failed ({reason}); "
                          "check the path or the id") from error


def check_tokenizer_fits(tokenizer, text_config, flag: str) -> None:
    """A `ConfigError` naming ``flag`` when ``tokenizer`` has more tokens than the text tower's ``vocab_size``, or
    a pad/bos/eos id outside it (the embedding lookup would fail, or read another token, at the first step)."""
    size = text_config.vocab_size
    if len(tokenizer) > size:
        raise ConfigError(f"{flag}: the tokenizer has {len(tokenizer)} tokens, more than the model's vocabulary of "
                          f"{size}; give the tokenizer the model was trained with")
    for name in ("pad_token_id", "bos_token_id", "eos_token_id"):
        value = getattr(tokenizer, name, None)
        if value is not None and not 0 <= value < size:
            raise ConfigError(f"{flag}: the tokenizer's {name} {value} is outside the model's vocabulary "
                              f"(0..{size - 1}); give the tokenizer the model was trained with")


def load_fitting_tokenizer(path: str, text_config, flag: str = "--tokenizer"):
    """``AutoTokenizer`` of the folder or Hub id ``flag`` gives (`from_user_path`), checked against the text tower
    (`check_tokenizer_fits`)."""
    from transformers import AutoTokenizer

    tokenizer = from_user_path(AutoTokenizer.from_pretrained, path, flag)
    check_tokenizer_fits(tokenizer, text_config, flag)
    return tokenizer


def save_folder(model, folder: str | Path, image_processor, tokenizer=None) -> None:
    """A checkpoint folder that works anywhere: the model's weights and config, its image processor (with
    ``tokenizer``, joined by `save_processors`) and its remote code (`write_remote_code`)."""
    model.save_pretrained(folder)
    if tokenizer is None:
        image_processor.save_pretrained(folder)
    else:
        save_processors(folder, tokenizer, image_processor)
    write_remote_code(folder)


def save_processors(folder: str | Path, tokenizer, image_processor) -> None:
    """Save ``tokenizer`` and ``image_processor`` to ``folder`` with a `CLIPProcessor` joining them, so that
    ``AutoTokenizer``, ``AutoImageProcessor`` and ``AutoProcessor`` load standard classes (no remote code)."""
    from transformers import CLIPProcessor

    image_processor.save_pretrained(folder)
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder)


_RELATIVE_IMPORT = re.compile(r"^(\s*from\s+)(\.+)(\w+)(\s+import\b)", re.MULTILINE)


def flat_sources(source: Path) -> dict[str, bytes]:
    """``source`` and every module it imports relatively, by file name, with the imports rewritten
    to ``from .module import`` (remote code lives in one flat folder beside ``config.json``)."""
    files, todo = {}, [source]
    while todo:
        path = todo.pop()
        if path.name in files:
            continue
        text = path.read_text(encoding="utf-8")
        for match in _RELATIVE_IMPORT.finditer(text):
            todo.append(path.parents[len(match.group(2)) - 1] / f"{match.group(3)}.py")
        files[path.name] = _RELATIVE_IMPORT.sub(r"\1.\3\4", text).encode()
    return files

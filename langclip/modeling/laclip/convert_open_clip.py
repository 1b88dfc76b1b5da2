"""The OpenCLIP-format converter: OpenCLIP ViT state dicts (LaCLIP's 4 released LAION-400M models, ViT-B/32 and
ViT-B/16, and any other OpenCLIP ViT) -> `LaCLIPModel` with the plain CLIP architecture.

The weight renaming of the OpenCLIP layout is shared with the CLIPS converter (`langclip.modeling.open_clip`); the
command, ``langclip convert --from open_clip|laclip|clips``, is `langclip.hub_cards.convert`.
"""

from __future__ import annotations

from pathlib import Path

from ..auto import load_fitting_tokenizer, save_folder
from ..image_processing import default_image_processor
from ..open_clip import load_open_clip_weights, load_state_dict, open_clip_config
from .configuration_laclip import LaCLIPConfig
from .modeling_laclip import LaCLIPModel


def convert_open_clip(
    src: str | Path,
    dst: str | Path | None = None,
    vision_heads: int | None = None,
    text_heads: int | None = None,
    quick_gelu: bool = False,
    tokenizer: str | None = None,
) -> LaCLIPModel:
    """Load an OpenCLIP checkpoint file as a `LaCLIPModel`; save it to ``dst`` when given, with its image
    processor, the ``tokenizer`` (folder or Hub id) joined to it by a `CLIPProcessor`, and its remote code."""
    state_dict = load_state_dict(src)
    config = open_clip_config(state_dict, vision_heads, text_heads, quick_gelu)
    loaded_tokenizer = load_fitting_tokenizer(tokenizer, config.text_config) if tokenizer else None
    model = LaCLIPModel(config)
    load_open_clip_weights(model, state_dict)
    if dst is not None:
        save_folder(model, dst, _image_processor(model.config), loaded_tokenizer)
    return model


def _image_processor(config: LaCLIPConfig):
    """OpenAI/OpenCLIP preprocessing: resize shortest side, centre crop, OpenAI mean/std."""
    return default_image_processor(config.vision_config.image_size)

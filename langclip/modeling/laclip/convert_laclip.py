"""`langclip convert --from laclip`: LaCLIP's own checkpoints (its 6 released CC3M/CC12M/RedCaps ViT-B/16 models).

Those come from LaCLIP's SLIP-style ``models.py`` (``CLIP_VITB16``), not from OpenCLIP:

- the file is a ``.pt`` of ``{"state_dict": {"module.<name>": tensor}, "epoch": int, "args": argparse.Namespace,
  ...}``; it is read by `load_state_dict` (``torch.load(weights_only=True)`` with ``argparse.Namespace`` as the one
  extra allowed global: any other object is refused, nothing in the file runs);
- the vision tower is a timm ``VisionTransformer`` (``visual.*``): ``patch_embed.proj`` (a conv WITH bias),
  ``cls_token``, ``pos_embed``, ``blocks.N.{norm1, attn.qkv (fused, with bias), attn.q_norm, attn.k_norm, attn.proj,
  norm2, mlp.fc1, mlp.fc2}``, ``norm``; per-head QK-norm, exact GELU, LayerNorm eps 1e-6, no LayerNorm before the
  blocks (``norm_pre``: converted as ``pre_layrnorm`` if a file has it), the final ``norm`` then the class token;
  then ``image_projection`` (width, dim), applied as ``x @ W``;
- the text tower is OpenAI's, with OpenCLIP's names (`langclip.modeling.open_clip`): QuickGELU, causal, LayerNorm
  eps 1e-5, pooled at the highest token id (``<end_of_text>``), ``text_projection`` applied as ``x @ W``.

Sizes are read from the tensors; heads default to width // 64 (12 for the vision tower's 768, 8 for the text's 512).
The model is a `LaCLIPModel` with ``vision_qk_norm=True, vision_pre_layernorm=False`` (`ViTVisionModel`).

The patch conv's bias is folded into the position embedding: the conv adds it to every patch embedding, and the
position embedding is added right after, so adding the bias to position rows 1..N (not row 0, the class token) is
the same function, exactly (also with ``interpolate_pos_encoding``: the bicubic weights of each interpolated row
sum to 1, so the constant bias passes through); `CLIPVisionEmbeddings`' patch conv keeps ``bias=False``, and the
weights keep CLIP's names and shapes.

Preprocessing is that of the official ``eval_zeroshot_imagenet.py``: ``Resize(224)`` (shortest side, bilinear,
torchvision's default), ``CenterCrop(224)``, ``ToTensor``, ``Normalize`` with the ImageNet mean (0.485, 0.456,
0.406) and std (0.229, 0.224, 0.225), not OpenAI's.

    langclip convert --from laclip cc12m_laclip.pt out/laclip-cc12m --tokenizer openai/clip-vit-base-patch16
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from ...errors import CheckpointError
from ..auto import load_fitting_tokenizer, save_folder
from ..image_processing import IMAGENET_MEAN, IMAGENET_STD, default_image_processor
from ..open_clip import (check_heads, convert_open_clip_state_dict, load_converted_weights, load_state_dict,
                         split_qkv, text_tower_config)
from .configuration_laclip import LaCLIPConfig
from .modeling_laclip import LaCLIPModel

_TIMM_BLOCK = re.compile(r"^visual\.blocks\.(\d+)\.(.+)$")
_TIMM_BLOCK_NAMES = {
    "norm1": "layer_norm1",
    "norm2": "layer_norm2",
    "attn.proj": "self_attn.out_proj",
    "attn.q_norm": "self_attn.q_norm",
    "attn.k_norm": "self_attn.k_norm",
    "mlp.fc1": "mlp.fc1",
    "mlp.fc2": "mlp.fc2",
}
_TIMM_DIRECT = {
    "visual.patch_embed.proj.weight": "vision_model.embeddings.patch_embedding.weight",
    "visual.norm_pre.weight": "vision_model.pre_layrnorm.weight",
    "visual.norm_pre.bias": "vision_model.pre_layrnorm.bias",
    "visual.norm.weight": "vision_model.post_layernorm.weight",
    "visual.norm.bias": "vision_model.post_layernorm.bias",
}
# Handled apart: the class token and position embedding (reshaped, the conv bias folded in) and the projection.
_TIMM_SPECIAL = ("visual.cls_token", "visual.pos_embed", "visual.patch_embed.proj.bias", "image_projection")
REQUIRED = ("visual.cls_token", "visual.pos_embed", "visual.patch_embed.proj.weight", "visual.blocks.0.mlp.fc1.weight",
            "visual.norm.weight", "image_projection", "token_embedding.weight", "positional_embedding",
            "transformer.resblocks.0.mlp.c_fc.weight", "text_projection")
VISION_LAYER_NORM_EPS = 1e-6  # timm's ViT in LaCLIP's models.py: norm_layer=partial(nn.LayerNorm, eps=1e-6)


def _vision_layers(state_dict: dict[str, torch.Tensor]) -> int:
    return max(int(m.group(1)) for k in state_dict if (m := _TIMM_BLOCK.match(k))) + 1


def laclip_config(state_dict: dict[str, torch.Tensor], vision_heads: int | None = None,
                  text_heads: int | None = None) -> LaCLIPConfig:
    """The `LaCLIPConfig` of a LaCLIP (SLIP-style) state dict: sizes from the tensor shapes, QK-norm and pre-LayerNorm
    from which weights are present, heads width // 64 unless given."""
    missing = [k for k in REQUIRED if k not in state_dict]
    if missing:
        hint = " (it has visual.conv1: an OpenCLIP layout, use --from open_clip)" if (
            "visual.conv1.weight" in state_dict) else ""
        raise CheckpointError(f"not a LaCLIP (timm ViT) state dict: missing {missing}{hint}")
    vision_width, _, patch_size, _ = state_dict["visual.patch_embed.proj.weight"].shape
    grid = round((state_dict["visual.pos_embed"].shape[-2] - 1) ** 0.5)
    text_width = state_dict["token_embedding.weight"].shape[1]
    vision_heads = vision_width // 64 if vision_heads is None else vision_heads
    text_heads = text_width // 64 if text_heads is None else text_heads
    check_heads("vision", vision_width, vision_heads)
    check_heads("text", text_width, text_heads)
    projection_dim = state_dict["text_projection"].shape[1]
    if tuple(state_dict["image_projection"].shape) != (vision_width, projection_dim):
        raise CheckpointError(f"image_projection is {tuple(state_dict['image_projection'].shape)}, expected "
                              f"({vision_width}, {projection_dim}) (vision width, text_projection's dim)")
    return LaCLIPConfig(
        vision_config=dict(
            hidden_size=vision_width,
            intermediate_size=state_dict["visual.blocks.0.mlp.fc1.weight"].shape[0],
            num_hidden_layers=_vision_layers(state_dict),
            num_attention_heads=vision_heads,
            patch_size=patch_size,
            image_size=grid * patch_size,
            hidden_act="gelu",
            layer_norm_eps=VISION_LAYER_NORM_EPS,
        ),
        text_config=text_tower_config(state_dict, text_heads, "quick_gelu"),
        projection_dim=projection_dim,
        vision_qk_norm="visual.blocks.0.attn.q_norm.weight" in state_dict,
        vision_pre_layernorm="visual.norm_pre.weight" in state_dict,
    )


def _convert_timm_block_key(key: str, value: torch.Tensor) -> dict[str, torch.Tensor]:
    match = _TIMM_BLOCK.match(key)
    prefix, name = f"vision_model.encoder.layers.{match.group(1)}.", match.group(2)
    module, kind = name.rsplit(".", 1)
    if module == "attn.qkv":
        return split_qkv(prefix, kind, value)
    if module not in _TIMM_BLOCK_NAMES:
        raise CheckpointError(f"unexpected LaCLIP (timm ViT) block weight {key!r}")
    return {f"{prefix}{_TIMM_BLOCK_NAMES[module]}.{kind}": value}


def convert_laclip_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename LaCLIP weights to `LaCLIPModel` names: the timm vision tower here (fused q/k/v split, the conv bias folded
    into position rows 1..N, ``image_projection`` transposed), the rest (text tower, ``logit_scale``) as OpenCLIP's."""
    vision, other = {}, {}
    for key, value in state_dict.items():
        (vision if key.startswith("visual.") or key == "image_projection" else other)[key] = value
    converted = convert_open_clip_state_dict(other)
    position = vision["visual.pos_embed"].reshape(-1, vision["visual.pos_embed"].shape[-1]).clone()
    if "visual.patch_embed.proj.bias" in vision:
        position[1:] += vision["visual.patch_embed.proj.bias"]
    converted["vision_model.embeddings.position_embedding.weight"] = position
    converted["vision_model.embeddings.class_embedding"] = vision["visual.cls_token"].reshape(-1)
    converted["visual_projection.weight"] = vision["image_projection"].T.contiguous()
    for key, value in vision.items():
        if key in _TIMM_DIRECT:
            converted[_TIMM_DIRECT[key]] = value
        elif _TIMM_BLOCK.match(key):
            converted.update(_convert_timm_block_key(key, value))
        elif key not in _TIMM_SPECIAL:
            raise CheckpointError(f"unexpected LaCLIP (timm ViT) weight {key!r}")
    return converted


def _special_token_ids(config: LaCLIPConfig, tokenizer) -> None:
    """Pool the text tower where ``tokenizer`` puts its end token: its bos/eos/pad ids replace OpenAI BPE's (the
    same ids for OpenAI's tokenizer, ``openai/clip-vit-base-patch16``)."""
    for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
        if getattr(tokenizer, name) is not None:
            setattr(config.text_config, name, getattr(tokenizer, name))


def convert_laclip(
    src: str | Path,
    dst: str | Path | None = None,
    vision_heads: int | None = None,
    text_heads: int | None = None,
    tokenizer: str | None = None,
) -> LaCLIPModel:
    """Load a LaCLIP (SLIP-style ``CLIP_VITB16``) checkpoint file as a `LaCLIPModel`; save it to ``dst`` when given,
    with its image processor (`image_processor`), the ``tokenizer`` (folder or Hub id) joined to it by a
    `CLIPProcessor`, and its remote code."""
    state_dict = load_state_dict(src)
    config = laclip_config(state_dict, vision_heads, text_heads)
    loaded_tokenizer = None
    if tokenizer:
        loaded_tokenizer = load_fitting_tokenizer(tokenizer, config.text_config)
        _special_token_ids(config, loaded_tokenizer)
    model = LaCLIPModel(config)
    load_converted_weights(model, convert_laclip_state_dict(state_dict))
    if dst is not None:
        save_folder(model, dst, image_processor(config), loaded_tokenizer)
    return model


def image_processor(config: LaCLIPConfig):
    """The official evaluation's preprocessing: Resize(size) (shortest side, bilinear) + CenterCrop(size), ImageNet
    mean/std."""
    from transformers.image_utils import PILImageResampling

    return default_image_processor(config.vision_config.image_size, IMAGENET_MEAN, IMAGENET_STD,
                                   resample=PILImageResampling.BILINEAR, crop=True)

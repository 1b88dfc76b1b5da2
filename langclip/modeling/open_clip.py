"""OpenCLIP state dicts: reading them safely, inferring the architecture, renaming the weights to `CLIPModel`'s.

OpenCLIP layout: a ViT (`visual.*`: `conv1`, `class_embedding`, `positional_embedding`,
`ln_pre`, `transformer.resblocks.N.{ln_1,attn,ln_2,mlp}`, `ln_post`, `proj`), a causal text
transformer (`token_embedding`, `positional_embedding`, `transformer.resblocks.N.*`,
`ln_final`, `text_projection`) and `logit_scale`. Attention q/k/v are fused in `in_proj_*`;
`proj` and `text_projection` are applied as ``x @ W`` (so they are transposed here).

The OpenCLIP and CLIPS converters (`laclip.convert_open_clip`, `clips.convert_clips`) use these helpers; LaCLIP's own
layout (`laclip.convert_laclip`: a timm ViT beside this text tower) uses the reading, the text tower's config and
renaming, and `load_open_clip_weights`.
"""

from __future__ import annotations

import argparse
import pickle
import re
from pathlib import Path

import torch

from ..errors import CheckpointError, ConfigError

from .laclip.configuration_laclip import LaCLIPConfig

# Globals a checkpoint pickle may hold besides tensors and containers: the training script's parsed flags
# (LaCLIP's and SLIP's `{"state_dict", "epoch", "args": argparse.Namespace(...), ...}` files). Unpickling a Namespace
# only sets attributes from values the weights-only unpickler already allows; nothing else is added, so any other
# object (a class of the training code, a function, os.system) is still refused.
SAFE_GLOBALS = (argparse.Namespace,)

_BLOCK = re.compile(r"^(visual\.)?transformer\.resblocks\.(\d+)\.(.+)$")
_BLOCK_NAMES = {
    "ln_1": "layer_norm1",
    "ln_2": "layer_norm2",
    "attn.out_proj": "self_attn.out_proj",
    "mlp.c_fc": "mlp.fc1",
    "mlp.c_proj": "mlp.fc2",
}


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a `.safetensors` file, or a `.pt`/`.bin` file with ``torch.load(weights_only=True)``.

    A checkpoint dict holding ``state_dict`` is unwrapped (its other entries, e.g. ``epoch``, ``args``,
    ``optimizer``, are dropped) and a DDP ``module.`` prefix dropped. A pickle that holds more than tensors, plain
    containers and the `SAFE_GLOBALS` (``argparse.Namespace``) is refused (`CheckpointError`): unpickling it could
    run code.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint file at {path}")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            state_dict = load_file(path)
        except SafetensorError as error:
            raise CheckpointError(f"{path} is not a readable safetensors file ({error})") from None
    else:
        try:
            with torch.serialization.safe_globals(list(SAFE_GLOBALS)):
                state_dict = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as error:
            found = re.search(r"GLOBAL ([\w.]+)", str(error))
            if found is None:
                raise CheckpointError(f"{path} is not a readable PyTorch checkpoint (a damaged or non-torch file)") from None
            raise CheckpointError(
                f"{path}: refused for safety: the pickle holds the Python object {found.group(1).rstrip('.')}, not only "
                "tensors, and unpickling it could run arbitrary code. Where the file is trusted, re-save only its weights "
                "as safetensors (safetensors.torch.save_file(state_dict, 'model.safetensors')) and convert that file"
            ) from None
        except (RuntimeError, EOFError) as error:
            raise CheckpointError(f"{path} is not a readable PyTorch checkpoint ({error})") from None
    if isinstance(state_dict, dict) and "state_dict" in state_dict:
        state_dict = state_dict["state_dict"]
    if not isinstance(state_dict, dict) or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise CheckpointError(f"{path} does not hold a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in state_dict.items()}


def _num_layers(state_dict: dict[str, torch.Tensor], prefix: str) -> int:
    layers = {int(m.group(2)) for k in state_dict if (m := _BLOCK.match(k)) and (m.group(1) or "") == prefix}
    if not layers:
        raise CheckpointError(f"no '{prefix}transformer.resblocks.N' weights found: is this an OpenCLIP ViT checkpoint?")
    return max(layers) + 1


def open_clip_config(
    state_dict: dict[str, torch.Tensor],
    vision_heads: int | None = None,
    text_heads: int | None = None,
    quick_gelu: bool = False,
) -> LaCLIPConfig:
    """Infer the architecture from tensor shapes; heads default to width // 64 (OpenCLIP's rule)."""
    required = ["visual.conv1.weight", "visual.positional_embedding", "visual.proj", "token_embedding.weight",
                "positional_embedding", "text_projection", "visual.transformer.resblocks.0.mlp.c_fc.weight",
                "transformer.resblocks.0.mlp.c_fc.weight"]
    missing = [k for k in required if k not in state_dict]
    if missing:
        hint = " (it has visual.patch_embed: LaCLIP's own timm layout, use --from laclip)" if (
            "visual.patch_embed.proj.weight" in state_dict) else ""
        raise CheckpointError(f"not an OpenCLIP ViT state dict: missing {missing}{hint}")
    vision_width, _, patch_size, _ = state_dict["visual.conv1.weight"].shape
    grid = round((state_dict["visual.positional_embedding"].shape[0] - 1) ** 0.5)
    text_width = state_dict["token_embedding.weight"].shape[1]
    activation = "quick_gelu" if quick_gelu else "gelu"
    vision_heads = vision_width // 64 if vision_heads is None else vision_heads
    text_heads = text_width // 64 if text_heads is None else text_heads
    for name, width, heads in (("vision", vision_width, vision_heads), ("text", text_width, text_heads)):
        check_heads(name, width, heads)
    return LaCLIPConfig(
        vision_config=dict(
            hidden_size=vision_width,
            intermediate_size=state_dict["visual.transformer.resblocks.0.mlp.c_fc.weight"].shape[0],
            num_hidden_layers=_num_layers(state_dict, "visual."),
            num_attention_heads=vision_heads,
            patch_size=patch_size,
            image_size=grid * patch_size,
            hidden_act=activation,
            layer_norm_eps=1e-5,
        ),
        text_config=text_tower_config(state_dict, text_heads, activation),
        projection_dim=state_dict["text_projection"].shape[1],
    )


def check_heads(name: str, width: int, heads: int) -> None:
    """``heads`` (of the ``name`` tower, ``width`` wide) is >= 1 and divides ``width``, else a `ConfigError` naming the flag."""
    if heads < 1:
        raise ConfigError(f"--{name}-heads must be >= 1, got {heads}")
    if width % heads:
        raise ConfigError(f"{name} width {width} is not divisible by {heads} heads; pass --{name}-heads")


def text_tower_config(state_dict: dict[str, torch.Tensor], heads: int, activation: str) -> dict:
    """The `CLIPTextConfig` fields of OpenAI's text tower (OpenCLIP's and LaCLIP's share it), from tensor shapes."""
    vocab_size, width = state_dict["token_embedding.weight"].shape
    return dict(
        vocab_size=vocab_size,
        hidden_size=width,
        intermediate_size=state_dict["transformer.resblocks.0.mlp.c_fc.weight"].shape[0],
        num_hidden_layers=_num_layers(state_dict, ""),
        num_attention_heads=heads,
        max_position_embeddings=state_dict["positional_embedding"].shape[0],
        hidden_act=activation,
        layer_norm_eps=1e-5,
        # OpenAI's BPE: <start_of_text> and <end_of_text> are the last two ids, padding is 0.
        bos_token_id=vocab_size - 2,
        eos_token_id=vocab_size - 1,
        pad_token_id=0,
    )


def split_qkv(prefix: str, kind: str, value: torch.Tensor) -> dict[str, torch.Tensor]:
    """A fused (3D, ...) q/k/v ``weight`` or ``bias`` -> `CLIPAttention`'s ``q_proj``, ``k_proj``, ``v_proj`` under
    ``prefix`` (a layer's name with its trailing dot)."""
    return {f"{prefix}self_attn.{p}_proj.{kind}": t for p, t in zip("qkv", value.chunk(3, dim=0))}


def _convert_block_key(key: str, value: torch.Tensor) -> dict[str, torch.Tensor]:
    match = _BLOCK.match(key)
    tower = "vision_model" if match.group(1) else "text_model"
    prefix = f"{tower}.encoder.layers.{match.group(2)}."
    name = match.group(3)
    if name.startswith("attn.in_proj_"):
        return split_qkv(prefix, name.rsplit("_", 1)[1], value)  # weight or bias
    module, kind = name.rsplit(".", 1)
    if module not in _BLOCK_NAMES:
        raise CheckpointError(f"unexpected OpenCLIP block weight {key!r}")
    return {f"{prefix}{_BLOCK_NAMES[module]}.{kind}": value}


_DIRECT = {
    "visual.class_embedding": "vision_model.embeddings.class_embedding",
    "visual.conv1.weight": "vision_model.embeddings.patch_embedding.weight",
    "visual.positional_embedding": "vision_model.embeddings.position_embedding.weight",
    "visual.ln_pre.weight": "vision_model.pre_layrnorm.weight",
    "visual.ln_pre.bias": "vision_model.pre_layrnorm.bias",
    "visual.ln_post.weight": "vision_model.post_layernorm.weight",
    "visual.ln_post.bias": "vision_model.post_layernorm.bias",
    "token_embedding.weight": "text_model.embeddings.token_embedding.weight",
    "positional_embedding": "text_model.embeddings.position_embedding.weight",
    "ln_final.weight": "text_model.final_layer_norm.weight",
    "ln_final.bias": "text_model.final_layer_norm.bias",
    "logit_scale": "logit_scale",
}
_TRANSPOSED = {"visual.proj": "visual_projection.weight", "text_projection": "text_projection.weight"}
_IGNORED = {"attn_mask"}  # OpenCLIP's causal mask buffer


def convert_open_clip_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename OpenCLIP weights to `CLIPModel` names, splitting fused q/k/v and transposing projections."""
    converted = {}
    for key, value in state_dict.items():
        if key in _DIRECT:
            converted[_DIRECT[key]] = value
        elif key in _TRANSPOSED:
            converted[_TRANSPOSED[key]] = value.T.contiguous()
        elif _BLOCK.match(key):
            converted.update(_convert_block_key(key, value))
        elif key not in _IGNORED:
            raise CheckpointError(f"unexpected OpenCLIP weight {key!r}")
    return converted


def load_open_clip_weights(model, state_dict: dict[str, torch.Tensor], untouched: tuple[str, ...] = ()) -> None:
    """Load converted OpenCLIP weights into ``model``; any weight missing (but those under ``untouched``) or left over is an error."""
    load_converted_weights(model, convert_open_clip_state_dict(state_dict), untouched)


def load_converted_weights(model, converted: dict[str, torch.Tensor], untouched: tuple[str, ...] = ()) -> None:
    """Load weights already renamed to ``model``'s names; any weight missing (but those under ``untouched``) or left
    over is an error."""
    missing, unexpected = model.load_state_dict(converted, strict=False)
    missing = [k for k in missing if not k.endswith("position_ids") and not k.startswith(untouched)]
    if missing or unexpected:
        raise ValueError(f"conversion mismatch: missing {missing}, unexpected {unexpected}")



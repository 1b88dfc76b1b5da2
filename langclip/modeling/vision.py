"""The vision tower of the released non-standard ViTs (LaCLIP's CC3M/CC12M/RedCaps models, CLIPS): `CLIPVisionModel`
with the pre-LayerNorm optional, per-head QK-norm in every attention, and class-token or mean pooling.

With the defaults (``pooling="cls", pre_layernorm=True, qk_norm=False``) it is `transformers.CLIPVisionModel`
itself, weights and outputs alike. The options map onto timm's `VisionTransformer` as follows:

- ``pre_layernorm=False``: no ``pre_layrnorm`` (timm ``pre_norm=False``, ``norm_pre`` = Identity): the blocks see
  the embeddings as they are. The module is an `nn.Identity`, so a checkpoint has no ``pre_layrnorm`` weights.
- ``qk_norm=True``: every attention is `QKNormAttention`: a LayerNorm over each head's query and key (over
  ``head_dim``, with weight and bias, eps ``config.layer_norm_eps``) after the q/k projections and before the
  attention product (timm ``qk_norm=True``).
- ``pooling="cls"``: ``post_layernorm`` of the class token, as `CLIPVisionModel` does. timm instead normalises
  every token (``norm``) and then takes the class token; LayerNorm acts on each token alone, so the class token's
  pooled vector is the same (checked in tests/test_modeling_laclip.py). What differs is ``last_hidden_state``:
  here it is the blocks' output before ``post_layernorm``, as in `CLIPVisionModel`.
- ``pooling="mean"`` (CLIPS): ``post_layernorm`` of the mean of the patch tokens (class token excluded).

The activation and the LayerNorm eps are the vision config's own ``hidden_act`` and ``layer_norm_eps``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from transformers import CLIPVisionModel
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.models.clip.modeling_clip import CLIPAttention, eager_attention_forward

VISION_POOLING = ("cls", "mean")


class QKNormAttention(CLIPAttention):
    """`CLIPAttention` with a LayerNorm over each head's query and key (``q_norm``, ``k_norm``, over ``head_dim``),
    applied after the projections and before the attention function (eager, sdpa, flex: any
    ``config._attn_implementation``); the scaling stays ``head_dim ** -0.5``."""

    def __init__(self, config):
        super().__init__(config)
        self.q_norm = nn.LayerNorm(self.head_dim, eps=config.layer_norm_eps)
        self.k_norm = nn.LayerNorm(self.head_dim, eps=config.layer_norm_eps)

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None,
                **kwargs) -> tuple[torch.Tensor, torch.Tensor | None]:
        input_shape = hidden_states.shape[:-1]
        hidden_shape = (*input_shape, -1, self.head_dim)
        queries = self.q_norm(self.q_proj(hidden_states).view(hidden_shape)).transpose(1, 2)
        keys = self.k_norm(self.k_proj(hidden_states).view(hidden_shape)).transpose(1, 2)
        values = self.v_proj(hidden_states).view(hidden_shape).transpose(1, 2)
        attention_interface: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(
            self.config._attn_implementation, eager_attention_forward)
        attn_output, attn_weights = attention_interface(
            self, queries, keys, values, attention_mask, scaling=self.scale,
            dropout=0.0 if not self.training else self.dropout, **kwargs)
        attn_output = attn_output.reshape(*input_shape, -1).contiguous()
        return self.out_proj(attn_output), attn_weights


class ViTVisionModel(CLIPVisionModel):
    """`CLIPVisionModel` with optional pre-LayerNorm, optional per-head QK-norm, ``"cls"`` or ``"mean"`` pooling
    (LayerNorm after pooling). See the module docstring for how each option matches timm's ViT."""

    def __init__(self, config, pooling: str = "cls", pre_layernorm: bool = True, qk_norm: bool = False):
        super().__init__(config)
        if pooling not in VISION_POOLING:
            raise ValueError(f"vision pooling must be one of {VISION_POOLING}, got {pooling!r}")
        self.pooling = pooling
        if not pre_layernorm:
            self.pre_layrnorm = nn.Identity()
        if qk_norm:
            for layer in self.encoder.layers:
                layer.self_attn = QKNormAttention(config)
            self.post_init()  # initialise the new attention modules as CLIP's (q_norm / k_norm: ones and zeros)

    def forward(self, pixel_values=None, interpolate_pos_encoding=False, **kwargs) -> BaseModelOutputWithPooling:
        outputs = super().forward(pixel_values, interpolate_pos_encoding=interpolate_pos_encoding, **kwargs)
        if self.pooling == "mean":
            outputs.pooler_output = self.post_layernorm(outputs.last_hidden_state[:, 1:].mean(dim=1))
        return outputs

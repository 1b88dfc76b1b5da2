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

Patch dropout (FLIP, OpenCLIP's ``PatchDropout``), `set_patch_dropout`, works on any `CLIPVisionModel` (so on the
plain tower of a standard-architecture LaCLIP or CLIPS model too, and on `ViTVisionModel`): in training mode only,
after the embeddings (position embeddings already added) and before ``pre_layrnorm``, each image keeps its class
token and ``max(1, round((1 - p) * N))`` of its N patch tokens, drawn uniformly without replacement from torch's
global generator (kept in their spatial order). The blocks, the pooling (``"mean"`` averages the kept patches)
and ``last_hidden_state`` (1 + kept tokens) see only those. In ``eval()`` mode nothing is dropped.
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


class PatchDropout(nn.Module):
    """Keep the class token and a random ``1 - prob`` of the patch tokens of each image, in training mode only.

    Input and output (B, 1 + N, D) -> (B, 1 + K, D), K = ``max(1, round((1 - prob) * N))``; the kept patches are
    the K largest of N uniform draws per image (torch's global generator, on the input's device), in their
    original order. A module without parameters: a checkpoint's weights do not change.
    """

    def __init__(self, prob: float = 0.0):
        super().__init__()
        check_patch_dropout(prob)
        self.prob = prob

    def kept(self, num_patches: int) -> int:
        return max(1, round((1 - self.prob) * num_patches))

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        if not self.training or self.prob == 0:
            return embeddings
        batch, num_patches = embeddings.shape[0], embeddings.shape[1] - 1
        scores = torch.rand(batch, num_patches, device=embeddings.device)
        keep = scores.topk(self.kept(num_patches), dim=1, sorted=False).indices.sort(dim=1).values + 1
        keep = torch.cat([keep.new_zeros(batch, 1), keep], dim=1)  # the class token, always
        return embeddings.gather(1, keep.unsqueeze(-1).expand(-1, -1, embeddings.shape[-1]))

    def extra_repr(self) -> str:
        return f"prob={self.prob}"


def check_patch_dropout(prob: float) -> None:
    if not 0 <= prob < 1:
        raise ValueError(f"patch_dropout must be in [0, 1), got {prob}")


def _drop_patches(embeddings_module, args, output):
    return embeddings_module.patch_dropout(output)


def set_patch_dropout(vision_model: CLIPVisionModel, prob: float) -> None:
    """Patch dropout ``prob`` on ``vision_model`` (a `CLIPVisionModel`, `ViTVisionModel` included): a parameterless
    `PatchDropout` at ``vision_model.embeddings.patch_dropout``, applied to the embeddings' output by a forward
    hook, so that the tower's own forward (its output capture, SDPA, gradient checkpointing of its blocks) is
    unchanged. ``prob`` 0 installs nothing (a model without it is untouched); calling again changes the rate."""
    check_patch_dropout(prob)
    embeddings = vision_model.embeddings
    if hasattr(embeddings, "patch_dropout"):
        embeddings.patch_dropout.prob = prob
    elif prob > 0:
        embeddings.patch_dropout = PatchDropout(prob)
        embeddings.patch_dropout.train(embeddings.training)
        embeddings.register_forward_hook(_drop_patches)


class ViTVisionModel(CLIPVisionModel):
    """`CLIPVisionModel` with optional pre-LayerNorm, optional per-head QK-norm, ``"cls"`` or ``"mean"`` pooling
    (LayerNorm after pooling) and patch dropout (`set_patch_dropout`). See the module docstring for how each
    option matches timm's ViT."""

    def __init__(self, config, pooling: str = "cls", pre_layernorm: bool = True, qk_norm: bool = False,
                 patch_dropout: float = 0.0):
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
        set_patch_dropout(self, patch_dropout)

    def forward(self, pixel_values=None, interpolate_pos_encoding=False, **kwargs) -> BaseModelOutputWithPooling:
        outputs = super().forward(pixel_values, interpolate_pos_encoding=interpolate_pos_encoding, **kwargs)
        if self.pooling == "mean":
            outputs.pooler_output = self.post_layernorm(outputs.last_hidden_state[:, 1:].mean(dim=1))
        return outputs

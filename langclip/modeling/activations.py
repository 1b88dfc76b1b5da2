"""CLIP's QuickGELU, ``x * sigmoid(1.702 x)``, on torch's fused SiLU kernels."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers.activations import QuickGELUActivation

QUICK_GELU_SCALE = 1.702


class _QuickGELUFunction(torch.autograd.Function):
    """y = silu(c x) / c, c = 1.702; dy/dx = silu'(c x) (the two c cancel): one fused kernel backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        scaled = x * QUICK_GELU_SCALE
        ctx.save_for_backward(scaled)
        return F.silu(scaled).div_(QUICK_GELU_SCALE)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (scaled,) = ctx.saved_tensors
        return torch.ops.aten.silu_backward(grad, scaled)


class QuickGELU(nn.Module):
    """``x * sigmoid(1.702 x) = silu(1.702 x) / 1.702``: the same function as transformers' `QuickGELUActivation`
    (float32 results within about an ulp), on torch's fused SiLU kernels. Eager ``x * sigmoid(1.702 x)`` runs three
    elementwise kernels forward and five backward over the MLP's (..., 4 d) hidden states and keeps two of them for
    the backward; this runs three forward and one backward and keeps one."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _QuickGELUFunction.apply(x)


def fuse_quick_gelu(model: nn.Module) -> None:
    """Replace every `QuickGELUActivation` in ``model`` (the MLPs of ``hidden_act="quick_gelu"`` towers) with
    `QuickGELU`. Activations hold no weights: checkpoints and configs are unchanged."""
    for module in list(model.modules()):
        for name, child in module.named_children():
            if isinstance(child, QuickGELUActivation):
                setattr(module, name, QuickGELU())

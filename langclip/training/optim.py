"""AdamW with CLIP's parameter groups, and the warm-up + cosine (or per-epoch exponential) learning-rate schedule."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .arguments import TrainArguments


def no_weight_decay(name: str, parameter: torch.Tensor) -> bool:
    """Biases, norms and every 0/1-d parameter (gains, ``logit_scale``) are not decayed."""
    return parameter.ndim < 2 or "norm" in name or name.endswith("bias") or "logit_scale" in name


def parameter_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Two AdamW groups of the trainable parameters: decayed, and not (see `no_weight_decay`)."""
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            (no_decay if no_weight_decay(name, parameter) else decay).append(parameter)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def fused_supported(device: torch.device | str) -> bool:
    """Whether torch has a fused AdamW kernel for ``device`` (CPU, CUDA, MPS, XPU, ... in torch >= 2.4)."""
    from torch.utils._foreach_utils import _get_fused_kernels_supported_devices

    return torch.device(device).type in _get_fused_kernels_supported_devices()


def build_optimizer(model, lr: float, weight_decay: float, betas=(0.9, 0.98), eps: float = 1e-8, fused: bool = True,
                    device: torch.device | str | None = None) -> torch.optim.AdamW:
    """AdamW over `parameter_groups`, fused (one kernel for all tensors) when ``fused`` and torch has the kernel
    for ``device`` (default: the parameters' device), else torch's default (foreach on CUDA, a loop on CPU).

    A fused AdamW skips its whole update on the device, without a host sync, while
    ``optimizer.found_inf`` holds 1.0 (torch's GradScaler protocol; see `langclip.training.step.step_unless`).
    """
    device = next(model.parameters()).device if device is None else device
    fused = fused and fused_supported(device)
    return torch.optim.AdamW(parameter_groups(model, weight_decay), lr=lr, betas=betas, eps=eps, fused=fused or None)


@dataclass(frozen=True)
class Schedule:
    """The learning rate of optimizer step ``step`` (0-based), ``schedule(step)``:

    Warm-up, step < W:   lr_start + (lr - lr_start) * step / W
    then cosine:         lr_end + (lr - lr_end) * (1 + cos(pi * p)) / 2,   p = (step - W) / (total_steps - W)
    or, with ``decay_per_epoch`` g:  lr * g ** ((step - W) // steps_per_epoch)   (torch's ExponentialLR stepped
    once per epoch, as PC-CLIP's official code; ``lr_end`` unused)
    """

    total_steps: int
    lr: float
    warmup_steps: int
    lr_start: float
    lr_end: float
    decay_per_epoch: float | None = None
    steps_per_epoch: int | None = None

    @classmethod
    def from_arguments(cls, train_args: TrainArguments, steps_per_epoch: int | None) -> Schedule:
        """The run's schedule: ``--max-steps`` or ``--num-epochs`` epochs; W = ``--warmup-steps`` plus
        ``--warmup-epochs`` epochs."""
        total_steps = train_args.max_steps or math.ceil(train_args.num_epochs * steps_per_epoch)
        warmup_steps = train_args.warmup_steps + round(train_args.warmup_epochs * (steps_per_epoch or 0))
        return cls(total_steps, train_args.lr, warmup_steps, train_args.lr_start, train_args.lr_end,
                   train_args.lr_decay_per_epoch, steps_per_epoch)

    def __call__(self, step: int) -> float:
        warmup = self.warmup_steps
        if step < warmup:
            return self.lr_start + (self.lr - self.lr_start) * step / warmup
        if self.decay_per_epoch is not None:
            return self.lr * self.decay_per_epoch ** ((step - warmup) // self.steps_per_epoch)
        progress = min(1.0, (step - warmup) / max(1, self.total_steps - warmup))
        return self.lr_end + (self.lr - self.lr_end) * (1 + math.cos(math.pi * progress)) / 2


def set_learning_rate(optimizer: torch.optim.Optimizer, value: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = value

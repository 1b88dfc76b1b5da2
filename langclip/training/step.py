"""One optimizer step: accumulation over micro-batches, forward/backward, the non-finite policy, the update.

One optimizer step sees a contrastive batch of ``per_device_batch_size * accum_freq * num_processes`` pairs:
features of the micro-batches are cached and recomputed (`forward_backward`), features are gathered across
processes inside the loss, and the update is skipped on the device when the loss or gradients are not finite
(`not_finite`, `step_unless`), with no host sync.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field

import torch
from accelerate import Accelerator

from ..modeling.losses import LossContext
from ..processing.transforms import SKIP_KINDS
from .objectives import Objective


def split_batch(batch: dict, parts: int) -> list[dict]:
    """``parts`` micro-batches of (about) equal size along dim 0."""
    chunks = {key: value.chunk(parts) for key, value in batch.items()}
    return [{key: value[i] for key, value in chunks.items()} for i in range(len(next(iter(chunks.values()))))]


def finite(tensors) -> torch.Tensor:
    """Device bool: every element of every tensor is finite (no host sync)."""
    return torch.stack([torch.isfinite(t).all() for t in tensors]).all()


def forward_backward(model, batch: dict, objective: Objective, unwrapped=None, accum_freq: int = 1,
                     accelerator: Accelerator | None = None, check_finite: bool = True) -> torch.Tensor | None:
    """Gradients of the loss of the whole ``batch``, in ``accum_freq`` micro-batches; returns the loss or None.

    ``model`` computes the features (it may be DDP-wrapped); ``unwrapped`` (default: ``model``)
    holds the loss scalars, `Objective.loss_inputs` (logit scale, sigmoid bias, CLIPS weights).
    With accum_freq > 1 (OpenCLIP's accum-freq): pass 1 computes every micro-batch's
    features without gradient; pass 2, for each micro-batch j, recomputes its features with
    gradient, substitutes them into the cached ones and back-propagates the loss of the
    whole batch. The sum over j of these gradients is the full-batch gradient; the loss
    scalars take their gradient in the last micro-batch only. With ``accelerator``, its
    ``backward`` (loss scaling) and ``no_sync`` (one gradient all-reduce, in the last micro-batch).
    ``check_finite``: return None, with no backward, when the features are not finite (a host sync);
    the trainer passes False and guards the update on the loss instead (`TrainStep`), and the loss then skips
    its own check too (`LossContext`).
    """
    unwrapped = model if unwrapped is None else unwrapped
    context = LossContext.current(check_finite)
    backward = torch.Tensor.backward if accelerator is None else accelerator.backward

    def no_sync():
        return contextlib.nullcontext() if accelerator is None else accelerator.no_sync(model)

    micro_batches = split_batch(batch, accum_freq)
    if len(micro_batches) == 1:
        features = objective.features(model, batch)
        if check_finite and not finite(features):
            return None
        loss = objective.loss(*features, **objective.loss_inputs(unwrapped), context=context)
        backward(loss)
        return loss.detach()
    with torch.no_grad():
        cached = [objective.features(model, micro) for micro in micro_batches]
    if check_finite and not finite([f for features in cached for f in features]):
        return None
    last = len(micro_batches) - 1
    for j, micro in enumerate(micro_batches):
        with no_sync() if j < last else contextlib.nullcontext():
            features = objective.features(model, micro)
            merged = [torch.cat([features[k] if i == j else cached[i][k] for i in range(len(cached))])
                      for k in range(len(features))]
            inputs = objective.loss_inputs(unwrapped)
            if j < last:
                inputs = {k: v.detach() if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
            loss = objective.loss(*merged, **inputs, context=context)
            backward(loss)
    return loss.detach()


def equalize_batch(accelerator: Accelerator, batch: dict, state: dict) -> dict | None:
    """Count skipped samples per kind (``num_skipped``, one count per SKIP_KINDS); with several processes, cut every
    local batch to the smallest (the gather needs equal sizes). None when some process has no sample left."""
    skipped = batch.pop("num_skipped", None)
    if skipped is None:
        return batch
    counts = accelerator.gather(skipped.reshape(1, -1).to(accelerator.device)).sum(0).tolist()
    for kind, count in zip(SKIP_KINDS, counts):
        state["skipped"][kind] += int(count)
    state["skipped_samples"] += int(sum(counts))
    size = batch["pixel_values"].shape[0] if "pixel_values" in batch else 0
    smallest = int(accelerator.gather(torch.tensor([size], device=accelerator.device)).min())
    if smallest == 0:
        state["skipped_batches"] += 1
        return None
    return {key: value[:smallest] for key, value in batch.items()}


@dataclass
class TrainStep:
    """The optimizer step of the run: ``model`` (prepared by ``accelerator``) and ``optimizer`` updated on the loss
    of ``objective``, over ``accum_freq`` micro-batches, with gradients clipped to ``max_grad_norm`` (None: no clip)."""

    accelerator: Accelerator
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    objective: Objective
    accum_freq: int = 1
    max_grad_norm: float | None = None
    unwrapped: torch.nn.Module = field(init=False)  # holds the loss scalars (logit scale, bias)

    def __post_init__(self):
        self.unwrapped = self.accelerator.unwrap_model(self.model)

    def __call__(self, batch: dict, with_norm: bool = False):
        """One step on ``batch`` with no host sync: gradients (`forward_backward`), the gradient norm (and clipping)
        only when clipping or ``with_norm``, the update unless the loss or norm is not finite (`step_unless`), the
        logit-scale clamp. Returns (loss, bad, grad_norm or None), on the device."""
        accelerator, model, unwrapped = self.accelerator, self.model, self.unwrapped
        loss = forward_backward(model, batch, self.objective, unwrapped, self.accum_freq, accelerator,
                                check_finite=False)
        grad_norm = None
        if self.max_grad_norm or with_norm:
            grad_norm = accelerator.clip_grad_norm_(model.parameters(), self.max_grad_norm or math.inf)
        bad = not_finite(accelerator, loss, grad_norm)
        step_unless(self.optimizer, bad, accelerator.scaler)
        self.optimizer.zero_grad(set_to_none=True)
        unwrapped.clamp_logit_scale_()
        return loss, bad, grad_norm


def not_finite(accelerator: Accelerator, loss: torch.Tensor, grad_norm: torch.Tensor | None) -> torch.Tensor:
    """Device bool: the loss, or the gradient norm where computed, is not finite on some process (no host sync;
    with several processes a one-element all-reduce, so that all skip the same steps)."""
    bad = ~torch.isfinite(loss)
    if grad_norm is not None:
        bad = bad | ~torch.isfinite(grad_norm)
    if accelerator.num_processes > 1:
        bad = accelerator.reduce(bad.float(), "sum") > 0
    return bad


def step_unless(optimizer, bad: torch.Tensor, scaler) -> None:
    """``optimizer.step()`` unless ``bad``: a fused AdamW skips on the device through ``found_inf`` (no host sync);
    under fp16 the GradScaler skips non-finite gradients itself; any other optimizer reads ``bad`` (a host sync)."""
    inner = optimizer.optimizer
    if scaler is not None:
        optimizer.step()
    elif getattr(inner, "_step_supports_amp_scaling", False):
        inner.found_inf = bad.float()
        optimizer.step()
        del inner.found_inf
    elif not bad.item():
        optimizer.step()

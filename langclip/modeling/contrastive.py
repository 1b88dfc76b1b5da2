"""What LaCLIP and CLIPS share about their contrastive loss: the config fields and the model's loss scalars.

`ContrastiveConfig` is the `CLIPConfig` base of `LaCLIPConfig` and `CLIPSConfig` (the loss kind, the bounds and
initial values of the logit scale and bias); `LogitParametersMixin` gives their models the learnable scalars the
losses of `losses` take and the clamp the trainer applies after every optimizer step.
"""

import math

import torch
from huggingface_hub.dataclasses import strict
from transformers import CLIPConfig
from transformers import initialization as init

from .losses import CONTRASTIVE_LOSSES, LossContext
from .vision import check_patch_dropout


@strict
class ContrastiveConfig(CLIPConfig):
    r"""
    `CLIPConfig` plus the contrastive loss's options:

    contrastive_loss (`str`, defaults to `"softmax"`):
        `"softmax"`: CLIP's cross-entropy (`clip_loss`); `"sigmoid"`: SigLIP's pairwise
        sigmoid loss (`sigmoid_loss`), with t = exp(logit_scale) (SigLIP starts it at
        log 10: set ``logit_scale_init_value``) and a learnable bias ``logit_bias``.
    logit_scale_max (`float`, defaults to ln 100):
        Upper bound of the learnable log temperature; `clamp_logit_scale_` clamps it to
        [0, logit_scale_max] after every optimizer step.
    logit_bias_init_value (`float`, defaults to -10):
        Initial ``logit_bias`` of the sigmoid loss.
    patch_dropout (`float`, defaults to 0):
        Fraction of each image's patch tokens dropped at random in training mode (FLIP; OpenCLIP's
        ``patch_dropout``), in [0, 1); the class token is kept and nothing is dropped in ``eval()`` mode
        (`langclip.modeling.vision.set_patch_dropout`). A training option: the weights do not depend on it.
    """

    logit_scale_max: float = math.log(100.0)
    contrastive_loss: str = "softmax"
    logit_bias_init_value: float = -10.0
    patch_dropout: float = 0.0

    def validate_contrastive_loss(self):
        """Checks the loss options."""
        if self.logit_scale_max < 0:
            raise ValueError(f"logit_scale_max must be >= 0, got {self.logit_scale_max}")
        if self.contrastive_loss not in CONTRASTIVE_LOSSES:
            raise ValueError(f"contrastive_loss must be one of {CONTRASTIVE_LOSSES}, got {self.contrastive_loss!r}")

    def validate_patch_dropout(self):
        """0 <= patch_dropout < 1."""
        check_patch_dropout(self.patch_dropout)


class LogitParametersMixin:
    """The learnable loss scalars of a `CLIPModel` subclass with a `ContrastiveConfig`: log temperature (CLIP's
    ``logit_scale``) and, when ``config.contrastive_loss == "sigmoid"``, SigLIP's bias ``logit_bias`` (init
    ``config.logit_bias_init_value``).

    Call `add_logit_bias` in ``__init__`` before ``post_init``. Checkpoints keep the bias as
    ``logit_bias``; `transformers.CLIPModel` loads them and ignores it.
    """

    def add_logit_bias(self) -> None:
        self.logit_bias = None
        if self.config.contrastive_loss == "sigmoid":
            self.logit_bias = torch.nn.Parameter(torch.tensor(float(self.config.logit_bias_init_value)))

    def _init_weights(self, module):
        super()._init_weights(module)
        if module is self and getattr(self, "logit_bias", None) is not None:
            init.constant_(self.logit_bias, self.config.logit_bias_init_value)

    def loss_parameters(self) -> dict[str, torch.Tensor]:
        """``{"logit_scale": exp(logit_scale)}``, plus ``"logit_bias"`` under the sigmoid loss: the losses' keywords."""
        parameters = {"logit_scale": self.logit_scale.exp()}
        if getattr(self, "logit_bias", None) is not None:
            parameters["logit_bias"] = self.logit_bias
        return parameters

    @staticmethod
    def loss_context() -> LossContext:
        """The `LossContext` of ``forward(return_loss=True)``: this process in an initialised torch.distributed."""
        return LossContext.current()

    @torch.no_grad()
    def clamp_logit_scale_(self) -> None:
        """Clamp the log temperature to [0, config.logit_scale_max]; call after every optimizer step."""
        self.logit_scale.clamp_(0, self.config.logit_scale_max)

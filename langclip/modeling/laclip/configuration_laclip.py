"""Configuration of LaCLIP: a `CLIPConfig` with the options of the LaCLIP paper."""

import math

from huggingface_hub.dataclasses import strict
from transformers import CLIPConfig

from ..losses import CONTRASTIVE_LOSSES


@strict
class LaCLIPConfig(CLIPConfig):
    r"""
    `CLIPConfig` plus:

    multi_positive (`bool`, defaults to `False`):
        LaCLIP-MT: with (B, T, L) text inputs, score the image against all T texts
        (see `multi_positive_clip_loss`). Without it only text column 0 is used.
    logit_scale_max (`float`, defaults to ln 100):
        Upper bound of the learnable log temperature; `clamp_logit_scale_` clamps it to
        [0, logit_scale_max] after every optimizer step.
    contrastive_loss (`str`, defaults to `"softmax"`):
        `"softmax"`: CLIP's cross-entropy (`clip_loss`); `"sigmoid"`: SigLIP's pairwise
        sigmoid loss (`sigmoid_loss`), with t = exp(logit_scale) (SigLIP starts it at
        log 10: set ``logit_scale_init_value``) and a learnable bias ``logit_bias``.
    logit_bias_init_value (`float`, defaults to -10):
        Initial ``logit_bias`` of the sigmoid loss.

    Saved checkpoints keep `CLIPModel`'s weight names, so they also load with plain
    `transformers.CLIPModel.from_pretrained`.
    """

    model_type = "laclip"

    multi_positive: bool = False
    logit_scale_max: float = math.log(100.0)
    contrastive_loss: str = "softmax"
    logit_bias_init_value: float = -10.0

    def validate_architecture(self):
        """Checks the LaCLIP options (the towers validate themselves)."""
        if self.logit_scale_max < 0:
            raise ValueError(f"logit_scale_max must be >= 0, got {self.logit_scale_max}")
        if self.contrastive_loss not in CONTRASTIVE_LOSSES:
            raise ValueError(f"contrastive_loss must be one of {CONTRASTIVE_LOSSES}, got {self.contrastive_loss!r}")

"""Configuration of LaCLIP: a `CLIPConfig` with the options of the LaCLIP paper."""

import math

from huggingface_hub.dataclasses import strict
from transformers import CLIPConfig


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

    Saved checkpoints keep `CLIPModel`'s weight names, so they also load with plain
    `transformers.CLIPModel.from_pretrained`.
    """

    model_type = "laclip"

    multi_positive: bool = False
    logit_scale_max: float = math.log(100.0)

    def validate_architecture(self):
        """Checks the LaCLIP options (the towers validate themselves)."""
        if self.logit_scale_max < 0:
            raise ValueError(f"logit_scale_max must be >= 0, got {self.logit_scale_max}")

"""Configuration of LaCLIP: a `CLIPConfig` with the options of the LaCLIP paper."""

from huggingface_hub.dataclasses import strict

from ..contrastive import ContrastiveConfig


@strict
class LaCLIPConfig(ContrastiveConfig):
    r"""
    `ContrastiveConfig` (`CLIPConfig` with ``contrastive_loss``, ``logit_scale_max``, ``logit_bias_init_value``) plus:

    multi_positive (`bool`, defaults to `False`):
        LaCLIP-MT: with (B, T, L) text inputs, score the image against all T texts
        (see `multi_positive_clip_loss`). Without it only text column 0 is used.

    Saved checkpoints keep `CLIPModel`'s weight names, so they also load with plain
    `transformers.CLIPModel.from_pretrained`.
    """

    model_type = "laclip"

    multi_positive: bool = False

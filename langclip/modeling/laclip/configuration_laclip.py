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

    vision_qk_norm (`bool`, defaults to `False`):
        A LayerNorm over each attention head's query and key in the vision tower (`QKNormAttention`, eps
        ``vision_config.layer_norm_eps``): the timm ViT of LaCLIP's released CC3M/CC12M/RedCaps models.
    vision_pre_layernorm (`bool`, defaults to `True`):
        Whether the vision tower has its LayerNorm before the first block (`pre_layrnorm`); those models have none.

    The vision tower's activation and LayerNorm eps are ``vision_config.hidden_act`` and
    ``vision_config.layer_norm_eps``; it is pooled at the class token after its final LayerNorm, as
    `CLIPVisionModel` is (`langclip.modeling.vision`).

    With the default architecture (`is_standard_clip`) saved checkpoints keep `CLIPModel`'s weights and
    modules, so they also load with plain `transformers.CLIPModel.from_pretrained`. With ``vision_qk_norm`` or
    without ``vision_pre_layernorm`` they do not: `CLIPModel` has no ``q_norm``/``k_norm`` (its loading report
    lists them as unexpected keys and drops them) and would add a freshly initialised ``pre_layrnorm`` (listed as
    missing), so its embeddings are wrong; load them with `LaCLIPModel` or ``AutoModel`` (``trust_remote_code``).
    """

    model_type = "laclip"

    multi_positive: bool = False
    vision_qk_norm: bool = False
    vision_pre_layernorm: bool = True

    @property
    def is_standard_clip(self) -> bool:
        """True when the towers are exactly `transformers.CLIPModel`'s (no QK-norm, with the pre-LayerNorm)."""
        return not self.vision_qk_norm and self.vision_pre_layernorm

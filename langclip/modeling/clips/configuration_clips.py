"""Configuration of CLIPS: a `CLIPConfig` with the captioner and the architecture options of the released models."""

from huggingface_hub.dataclasses import strict

from ..contrastive import ContrastiveConfig

VISION_POOLING = ("cls", "mean")
TEXT_ATTENTION = ("causal", "bidirectional")
TEXT_POOLING = ("eos", "last")


@strict
class CLIPSConfig(ContrastiveConfig):
    r"""
    `ContrastiveConfig` (`CLIPConfig` with ``contrastive_loss``, ``logit_scale_max``, ``logit_bias_init_value``) plus:

    vision_pooling (`str`, defaults to `"cls"`):
        `"cls"`: the class token; `"mean"`: the mean of the patch tokens (class token
        excluded). `post_layernorm` is applied after pooling either way.
    vision_pre_layernorm (`bool`, defaults to `True`):
        Whether the vision tower has its LayerNorm before the first block (`pre_layrnorm`).
    text_attention (`str`, defaults to `"causal"`):
        `"causal"` or `"bidirectional"` self-attention in the text tower.
    text_pooling (`str`, defaults to `"eos"`):
        `"eos"`: the first EOS token; `"last"`: the last position.
    text_last_token_id (`int`, optional):
        The released layout: the text tower completes ``[bos] ids [eos]`` (right-padded) to
        ``[bos] ids [eos] pad ... pad [text_last_token_id]`` of ``max_position_embeddings``
        positions, all attended (`clips_text_layout`). None (default): inputs are used as given.
    captioner_layers / captioner_width / captioner_heads (`int`):
        Size of the captioner decoder; ``captioner_width`` 0 means the text tower's width.
    captioner_max_length (`int`, defaults to 128):
        Longest synthetic caption, in tokens with the special tokens.
    contrastive_loss_weight / caption_loss_weight (`float`, defaults 1.0 / 2.0):
        w_c and w_cap of the total loss w_c * contrastive + w_cap * caption (`clips_loss`).

    Each tower's activation and LayerNorm eps are its sub-config's ``hidden_act`` and
    ``layer_norm_eps``. The defaults are the standard HF CLIP; the released CLIPS models
    are ``vision_pooling="mean", vision_pre_layernorm=False, text_attention="bidirectional",
    text_pooling="last", text_last_token_id=101`` with text ``hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6``
    and vision ``layer_norm_eps=1e-6``.
    """

    model_type = "clips"

    vision_pooling: str = "cls"
    vision_pre_layernorm: bool = True
    text_attention: str = "causal"
    text_pooling: str = "eos"
    text_last_token_id: int | None = None
    captioner_layers: int = 2
    captioner_width: int = 0
    captioner_heads: int = 4
    captioner_max_length: int = 128
    contrastive_loss_weight: float = 1.0
    caption_loss_weight: float = 2.0

    @property
    def is_standard_clip(self) -> bool:
        """True when the towers are exactly `transformers.CLIPModel`'s."""
        return (self.vision_pooling, self.vision_pre_layernorm, self.text_attention, self.text_pooling,
                self.text_last_token_id) == ("cls", True, "causal", "eos", None)

    def validate_architecture(self):
        """Checks the CLIPS options (the towers validate themselves)."""
        for name, value, choices in (("vision_pooling", self.vision_pooling, VISION_POOLING),
                                     ("text_attention", self.text_attention, TEXT_ATTENTION),
                                     ("text_pooling", self.text_pooling, TEXT_POOLING)):
            if value not in choices:
                raise ValueError(f"{name} must be one of {choices}, got {value!r}")
        width = self.captioner_width or self.text_config.hidden_size
        if self.captioner_layers < 1 or self.captioner_heads < 1 or width % self.captioner_heads:
            raise ValueError(f"captioner needs >= 1 layer and a width ({width}) divisible by its heads "
                             f"({self.captioner_heads}), got {self.captioner_layers} layers")
        if self.captioner_max_length < 2:
            raise ValueError(f"captioner_max_length must be >= 2, got {self.captioner_max_length}")

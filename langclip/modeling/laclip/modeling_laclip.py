"""LaCLIP: CLIP trained on LLM-rewritten captions (Fan et al., NeurIPS 2023).

The architecture is CLIP's; what changes is the text each image is paired with (aug_T,
see `langclip.processing.collators`) and, for LaCLIP-MT, the loss over all of an
image's texts. The released CC3M/CC12M/RedCaps models have a timm ViT (per-head QK-norm, no
pre-LayerNorm): ``config.vision_qk_norm`` / ``config.vision_pre_layernorm`` swap in `ViTVisionModel`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import CLIPModel
from transformers.models.clip.modeling_clip import CLIPOutput

from .configuration_laclip import LaCLIPConfig
from ..activations import fuse_quick_gelu
from ..contrastive import LogitParametersMixin
from ..losses import contrastive_loss
from ..vision import ViTVisionModel, set_patch_dropout


def _normalize(features: torch.Tensor) -> torch.Tensor:
    return features / features.norm(p=2, dim=-1, keepdim=True)


@dataclass
class LaCLIPOutput(CLIPOutput):
    """`CLIPOutput` of N images and M texts, or of B images with T texts each.

    loss: () with ``return_loss`` (needs M = N: text i belongs to image i);
    logits_per_image: (N, M); logits_per_text: (M, N);
    image_embeds: (N, D) and text_embeds: (M, D), L2-normalised (with T texts per image: column 0, M = B);
    all_text_embeds: (B, T, D), every text of each image, normalised, when the input has
    T texts per image and ``config.multi_positive`` (else None).
    """

    all_text_embeds: torch.FloatTensor | None = None


class LaCLIPModel(LogitParametersMixin, CLIPModel):
    """`CLIPModel` whose forward takes M texts for N images, (M, L), or T texts per image, (B, T, L).

    With (M, L) inputs it scores every image against every text, as `CLIPModel` does
    (``logits_per_image`` (N, M)); the loss pairs text i with image i. With (B, T, L) inputs, column 0 holds the text that aug_T sampled. Without
    `config.multi_positive` only column 0 is encoded and the ordinary CLIP loss is used;
    with it, all T texts are encoded and the loss is `multi_positive_clip_loss`.
    With ``config.contrastive_loss == "sigmoid"`` the loss is `sigmoid_loss` (single- or
    multi-positive) with the learnable ``logit_bias``.
    `logits_per_image`, `logits_per_text` and `text_embeds` always refer to column 0.
    """

    config_class = LaCLIPConfig

    def __init__(self, config: LaCLIPConfig):
        super().__init__(config)
        if not config.is_standard_clip:
            self.vision_model = ViTVisionModel._from_config(
                config.vision_config, pre_layernorm=config.vision_pre_layernorm, qk_norm=config.vision_qk_norm)
            self.post_init()  # as CLIPSModel after its swap: the model's bookkeeping sees the new tower
        set_patch_dropout(self.vision_model, config.patch_dropout)  # plain CLIPVisionModel or ViTVisionModel
        fuse_quick_gelu(self)
        self.add_logit_bias()

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        return_loss: bool | None = None,
        interpolate_pos_encoding: bool = False,
        **kwargs,
    ) -> LaCLIPOutput:
        if input_ids is None or pixel_values is None:
            raise ValueError("LaCLIPModel.forward needs both input_ids and pixel_values")
        if input_ids.dim() not in (2, 3):
            raise ValueError(
                f"input_ids must be (batch, length) or (batch, texts, length), got shape {tuple(input_ids.shape)}"
            )
        if attention_mask is not None and attention_mask.shape != input_ids.shape:
            raise ValueError(
                f"attention_mask shape {tuple(attention_mask.shape)} differs from input_ids shape {tuple(input_ids.shape)}"
            )
        paired = input_ids.dim() == 3 or return_loss
        if paired and input_ids.shape[0] != pixel_values.shape[0]:
            raise ValueError(
                f"image and text batch sizes differ: {pixel_values.shape[0]} images, {input_ids.shape[0]} texts; "
                f"{'return_loss' if return_loss else '(batch, texts, length) input_ids'} pair text i with image i "
                "(without return_loss, (M, length) input_ids score every image against every text)"
            )
        multi_text = input_ids.dim() == 3
        use_all_texts = multi_text and self.config.multi_positive
        if multi_text and not use_all_texts:
            input_ids = input_ids[:, 0]
            attention_mask = attention_mask[:, 0] if attention_mask is not None else None
        num_texts = input_ids.shape[1] if use_all_texts else 1

        vision_outputs = self.get_image_features(
            pixel_values=pixel_values, interpolate_pos_encoding=interpolate_pos_encoding, **kwargs
        )
        text_outputs = self.get_text_features(
            input_ids=input_ids.reshape(-1, input_ids.shape[-1]),
            attention_mask=attention_mask.reshape(-1, attention_mask.shape[-1]) if attention_mask is not None else None,
            position_ids=position_ids,
            **kwargs,
        )
        image_embeds = _normalize(vision_outputs.pooler_output)
        all_text_embeds = _normalize(text_outputs.pooler_output)
        if use_all_texts:
            all_text_embeds = all_text_embeds.view(input_ids.shape[0], num_texts, -1)
            text_embeds = all_text_embeds[:, 0]
        else:
            text_embeds = all_text_embeds

        logit_scale = self.logit_scale.exp()
        logits_per_text = logit_scale * text_embeds @ image_embeds.T
        loss = None
        if return_loss:
            loss = contrastive_loss(image_embeds, all_text_embeds if use_all_texts else text_embeds,
                                    **self.loss_parameters(), kind=self.config.contrastive_loss,
                                    multi_positive=use_all_texts, context=self.loss_context())

        return LaCLIPOutput(
            loss=loss,
            all_text_embeds=all_text_embeds if use_all_texts else None,
            logits_per_image=logits_per_text.T,
            logits_per_text=logits_per_text,
            text_embeds=text_embeds,
            image_embeds=image_embeds,
            text_model_output=text_outputs,
            vision_model_output=vision_outputs,
        )

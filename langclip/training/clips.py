"""The `clips` training method: its collator, the features of a batch, and the loss on those features.

The features are per-row tensors, so `forward_backward`'s cached-feature accumulation
(accum_freq > 1) concatenates them like CLIP's: image, web-caption and partial-caption
embeddings, each row's summed caption NLL and token count, and the loss weights
(w_c, w_cap) repeated on every row. Summing the recomputed micro-batch gradients gives
the full-batch gradient of w_c * contrastive + w_cap * caption, the caption term being
the token mean over the whole local batch.
"""

from __future__ import annotations

import torch
from accelerate.utils import extract_model_from_parallel

from ..modeling.modeling_clips import clips_loss
from ..processing.partial_captions import CLIPSCollator, PartialCaption


def clips_collator(method, tokenizer, max_length: int, image_transform, data_args, num_texts, seed: int) -> CLIPSCollator:
    """`CLIPSCollator` with the ``--partial-caption`` strategy and ``--partial-tokens`` budget K."""
    partial = PartialCaption(tokenizer, data_args.partial_caption, data_args.partial_tokens, max_length=max_length,
                             seed=seed)
    return CLIPSCollator(tokenizer, max_length, partial, image_transform=image_transform,
                         synthetic_column=data_args.synthetic_caption_column,
                         skip_bad_samples=data_args.skip_bad_samples)


def clips_features(model, batch: dict) -> tuple[torch.Tensor, ...]:
    """(image, web, partial embeddings, caption NLL sums, caption token counts, loss weights), per row, >= float32."""
    output = model(**batch)
    dtype = torch.promote_types(output.image_embeds.dtype, torch.float32)
    config = extract_model_from_parallel(model).config
    weights = torch.tensor([config.contrastive_loss_weight, config.caption_loss_weight], dtype=dtype,
                           device=output.image_embeds.device).expand(output.image_embeds.shape[0], 2)
    return (output.image_embeds.to(dtype), output.text_embeds.to(dtype), output.partial_text_embeds.to(dtype),
            output.caption_nll_sum.to(dtype), output.caption_tokens, weights)


def clips_training_loss(image, web, partial, caption_nll_sum, caption_tokens, loss_weights, logit_scale) -> torch.Tensor:
    """`clips_loss` total with the weights carried by the features."""
    return clips_loss(image, web, partial, caption_nll_sum, caption_tokens, logit_scale,
                      loss_weights[0, 0], loss_weights[0, 1])[0]

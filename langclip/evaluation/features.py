"""Batched, L2-normalised features from any `CLIPModel`-compatible model.

`get_image_features` / `get_text_features` return a `BaseModelOutputWithPooling` in
transformers 5; the projected features are its ``pooler_output``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.inference_mode()
def encode_images(
    model: torch.nn.Module,
    pixel_value_batches: Iterable[torch.Tensor],
    progress: bool = True,
    total: int | None = None,
) -> torch.Tensor:
    """n(f(x)) for every image, one batch of ``pixel_values`` (B, 3, H, W) at a time; returns float32 (N, D) on CPU."""
    device = _device(model)
    features = [
        F.normalize(model.get_image_features(pixel_values=pixels.to(device)).pooler_output.float(), dim=-1).cpu()
        for pixels in tqdm(pixel_value_batches, desc="images", unit="batch", total=total, disable=not progress)
    ]
    if not features:
        raise ValueError("encode_images got no image batches")
    return torch.cat(features)


@torch.inference_mode()
def encode_texts(
    model: torch.nn.Module,
    tokenizer,
    texts: Sequence[str],
    batch_size: int = 256,
    progress: bool = True,
) -> torch.Tensor:
    """n(g(t)) for every text, tokenised ``batch_size`` at a time; returns float32 (N, D) on CPU."""
    if len(texts) == 0:
        raise ValueError("encode_texts got no texts")
    device = _device(model)
    max_length = model.config.text_config.max_position_embeddings
    features = []
    for start in tqdm(range(0, len(texts), batch_size), desc="texts", unit="batch", disable=not progress):
        tokens = tokenizer(
            list(texts[start : start + batch_size]),
            padding=True,
            truncation=True,
            max_length=max_length,
            return_tensors="pt",
        ).to(device)
        output = model.get_text_features(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"])
        features.append(F.normalize(output.pooler_output.float(), dim=-1).cpu())
    return torch.cat(features)

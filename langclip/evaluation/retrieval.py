"""Zero-shot image-text retrieval: Recall@K in both directions, several captions per image.

Image -> text: a hit at K when one of the image's captions ranks in the top K texts.
Text -> image: a hit at K when the caption's image ranks in the top K images.
As in `zero_shot`, ties count against the model: a candidate is in the top K when fewer
than K wrong candidates score at least as high.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from .zero_shot import rank_of_targets


def recall_at_k(
    similarity: torch.Tensor, text_to_image: torch.Tensor, ks: Sequence[int] = (1, 5, 10)
) -> dict[str, float]:
    """Recall@K from a (num_images, num_texts) similarity matrix; ``text_to_image[j]`` is text j's image.

    Returns ``{"image_to_text_R@K": ..., "text_to_image_R@K": ...}`` for every K.
    """
    text_to_image = torch.as_tensor(text_to_image, dtype=torch.long)
    num_images, num_texts = similarity.shape
    if num_images == 0 or num_texts == 0:
        raise ValueError(f"retrieval needs images and texts, got {num_images} images and {num_texts} texts")
    if text_to_image.shape != (num_texts,):
        raise ValueError(
            f"text_to_image must have one entry per text ({num_texts}), got shape {tuple(text_to_image.shape)}"
        )
    outside = (text_to_image < 0) | (text_to_image >= num_images)
    if outside.any():
        j = int(outside.nonzero()[0])
        raise ValueError(f"text {j} points at image {int(text_to_image[j])}, outside 0..{num_images - 1}")
    positive = text_to_image[None, :] == torch.arange(num_images)[:, None]
    if not positive.any(dim=1).all():
        i = int((~positive.any(dim=1)).nonzero()[0])
        raise ValueError(f"image {i} has no caption")

    best_positive = similarity.masked_fill(~positive, float("-inf")).amax(dim=1, keepdim=True)
    image_ranks = ((similarity >= best_positive) & ~positive).sum(dim=1)
    text_ranks = rank_of_targets(similarity.T, text_to_image)
    results = {}
    for direction, ranks in (("image_to_text", image_ranks), ("text_to_image", text_ranks)):
        for k in ks:
            results[f"{direction}_R@{k}"] = (ranks < k).double().mean().item()
    return results


def retrieval_recall(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    text_to_image: torch.Tensor,
    ks: Sequence[int] = (1, 5, 10),
) -> dict[str, float]:
    """`recall_at_k` on cosine similarities between images (N, D) and texts (M, D)."""
    similarity = F.normalize(image_features.float(), dim=-1) @ F.normalize(text_features.float(), dim=-1).T
    return recall_at_k(similarity, text_to_image, ks)

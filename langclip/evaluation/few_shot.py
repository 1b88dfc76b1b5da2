"""Few-shot classification with prototypes on frozen image features (Snell et al., 2017).

One episode draws ``n_way`` classes, then ``n_shot`` support and ``n_query`` query images
per class, all distinct. A class prototype is the mean of its normalised support
features p_c = mean_s n(f(x_s)); a query goes to the nearest prototype in squared
Euclidean distance. The result is the mean episode accuracy with a 95% interval
1.96 * std / sqrt(episodes).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def prototype_predictions(support: torch.Tensor, support_labels: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
    """Label of the nearest prototype for each query row; labels are 0..C-1 over ``support_labels``."""
    num_classes = int(support_labels.max()) + 1
    support = F.normalize(support.float(), dim=-1)
    prototypes = torch.stack([support[support_labels == c].mean(dim=0) for c in range(num_classes)])
    return torch.cdist(F.normalize(query.float(), dim=-1), prototypes).argmin(dim=1)


def few_shot_accuracy(
    features: torch.Tensor,
    labels: torch.Tensor,
    n_way: int = 5,
    n_shot: int = 5,
    n_query: int = 15,
    episodes: int = 600,
    seed: int = 0,
) -> dict[str, float]:
    """Mean accuracy over ``episodes`` episodes and the half-width of its 95% interval: ``{"accuracy", "ci95"}``."""
    labels = torch.as_tensor(labels, dtype=torch.long)
    if len(features) != len(labels):
        raise ValueError(f"{len(features)} feature rows but {len(labels)} labels")
    classes, counts = labels.unique(return_counts=True)
    eligible = classes[counts >= n_shot + n_query]
    if len(eligible) < n_way:
        raise ValueError(
            f"{n_way}-way {n_shot}-shot episodes with {n_query} queries need {n_way} classes with at least "
            f"{n_shot + n_query} images each; only {len(eligible)} of {len(classes)} classes have that many"
        )
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    generator = torch.Generator().manual_seed(seed)
    accuracies = []
    for _ in range(episodes):
        chosen = eligible[torch.randperm(len(eligible), generator=generator)[:n_way]]
        support, query = [], []
        for members in ((labels == c).nonzero().squeeze(1) for c in chosen):
            picked = members[torch.randperm(len(members), generator=generator)[: n_shot + n_query]]
            support.append(picked[:n_shot])
            query.append(picked[n_shot:])
        episode_labels = torch.arange(n_way)
        predictions = prototype_predictions(
            features[torch.cat(support)], episode_labels.repeat_interleave(n_shot), features[torch.cat(query)]
        )
        accuracies.append((predictions == episode_labels.repeat_interleave(n_query)).double().mean().item())
    accuracy = torch.tensor(accuracies, dtype=torch.float64)
    std = accuracy.std().item() if episodes > 1 else 0.0
    return {"accuracy": accuracy.mean().item(), "ci95": 1.96 * std / math.sqrt(episodes)}

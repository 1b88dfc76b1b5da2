"""PC-CLIP evaluation on embeddings: difference classification, attribute ranking,
comparative prompting and the analogy metric (Sam et al., TMLR 2025).

All functions take embeddings (any scale; they are L2-normalised here), so they serve any
encoder. n(.) denotes L2 normalisation.
"""

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from scipy import stats

CLASS_PROMPT = "This is a photo of a {}"


def difference_directions(image_a: torch.Tensor, image_b: torch.Tensor) -> torch.Tensor:
    """n(n(f(x_a)) - n(f(x_b))) per pair."""
    return F.normalize(F.normalize(image_a, dim=-1) - F.normalize(image_b, dim=-1), dim=-1)


def difference_classification(image_a: torch.Tensor, image_b: torch.Tensor, difference_text: torch.Tensor) -> float:
    """Fraction of pairs with cos(n(g(s)), n(n(f(x_a)) - n(f(x_b)))) > 0."""
    if len(image_a) == 0:
        raise ValueError("difference classification needs at least one pair")
    cosines = (difference_directions(image_a, image_b) * F.normalize(difference_text, dim=-1)).sum(-1)
    return (cosines > 0).double().mean().item()


def mean_and_stderr(values: Sequence[float]) -> tuple[float, float]:
    """Mean and standard error (sample std / sqrt(n)) of per-seed results."""
    if len(values) < 2:
        raise ValueError(f"need results from at least 2 seeds, got {len(values)}")
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
    return mean, std / math.sqrt(len(values))


def attribute_ranking(image_features: torch.Tensor, direction: torch.Tensor, truth: Sequence[float]) -> dict:
    """Order images by their projection n(f(x)) . n(direction); Spearman and Kendall against ``truth``."""
    if len(image_features) != len(truth):
        raise ValueError(f"{len(image_features)} images but {len(truth)} ground-truth values")
    scores = (F.normalize(image_features, dim=-1) @ F.normalize(direction, dim=-1)).tolist()
    return {"spearman": stats.spearmanr(scores, truth).statistic, "kendall": stats.kendalltau(scores, truth).statistic}


def comparative_class_embeddings(
    class_embeddings: torch.Tensor,
    differences: Sequence[tuple[int, int, torch.Tensor]],
    alpha: float = 0.9,
) -> torch.Tensor:
    """Comparative prompting: refine class text embeddings t_c = n(g("This is a photo of a {c}")).

    For each known difference (a, b, e_s), with e_s = g(s) and s describing class a relative
    to class b, t_a - n(e_s) is an estimate of t_b. Class b becomes
    n(alpha * t_b + (1 - alpha) * mean of its estimates); classes without estimates keep t_b.
    """
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    text = F.normalize(class_embeddings, dim=-1)
    estimates = torch.zeros_like(text)
    counts = torch.zeros(len(text), dtype=text.dtype, device=text.device)
    for a, b, difference in differences:
        if not (0 <= a < len(text) and 0 <= b < len(text)):
            raise IndexError(f"difference ({a}, {b}) names a class outside 0..{len(text) - 1}")
        estimates[b] += text[a] - F.normalize(difference, dim=-1)
        counts[b] += 1
    has = counts > 0
    refined = text.clone()
    refined[has] = F.normalize(alpha * text[has] + (1 - alpha) * estimates[has] / counts[has, None], dim=-1)
    return refined


def analogy_distance(text_a: torch.Tensor, text_b: torch.Tensor, difference_text: torch.Tensor) -> torch.Tensor:
    """Cosine distance 1 - cos(t_a - t_b, e_s) per row: how well the text space composes differences."""
    return 1 - F.cosine_similarity(text_a - text_b, difference_text, dim=-1)

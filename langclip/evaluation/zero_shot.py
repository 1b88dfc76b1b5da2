"""Zero-shot classification: class embeddings from name x template prompts, top-k accuracy.

Ranks count ties against the model: the true class is in the top k when fewer than k
other classes score at least as high. A model that scores every class alike gets 0, not 1.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from .features import encode_texts, weights_fingerprint
from .templates import check_templates


def average_templates(features: torch.Tensor) -> torch.Tensor:
    """Class embeddings from per-template text features (C, T, D): W_c = n(mean_t n(g(template_t(c))))."""
    if features.dim() != 3:
        raise ValueError(f"template features must be (classes, templates, dim), got shape {tuple(features.shape)}")
    return F.normalize(F.normalize(features, dim=-1).mean(dim=1), dim=-1)


def _text_tower_key(model: torch.nn.Module, classnames: Sequence[str], templates: Sequence[str]) -> str:
    """sha256 over the text tower's weights, the class names and the templates."""
    names = json.dumps([list(classnames), list(templates), weights_fingerprint(model, text=True)])
    return hashlib.sha256(names.encode()).hexdigest()


def zero_shot_classifier(
    model: torch.nn.Module,
    tokenizer,
    classnames: Sequence[str],
    templates: Sequence[str],
    batch_size: int = 256,
    cache_dir: str | Path | None = None,
    progress: bool = True,
) -> torch.Tensor:
    """The (C, D) zero-shot classifier: `average_templates` over ``template.format(class)`` for every pair.

    With ``cache_dir``, the classifier is stored as ``<sha256>.safetensors`` there, keyed by the
    text tower's weights, the class names and the templates, and read back on the next call.
    """
    if len(classnames) == 0:
        raise ValueError("zero_shot_classifier needs at least one class name")
    templates = check_templates(templates)
    cache_file = None
    if cache_dir is not None:
        cache_file = Path(cache_dir) / f"{_text_tower_key(model, classnames, templates)}.safetensors"
        if cache_file.is_file():
            return load_file(cache_file)["classifier"]
    texts = [template.format(name) for name in classnames for template in templates]
    features = encode_texts(model, tokenizer, texts, batch_size=batch_size, progress=progress)
    classifier = average_templates(features.view(len(classnames), len(templates), -1))
    if cache_file is not None:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        save_file({"classifier": classifier.contiguous()}, cache_file)
    return classifier


def rank_of_targets(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per row of ``scores`` (N, C): how many other columns score >= the column ``targets[i]`` (ties count against)."""
    target_scores = scores.gather(1, targets[:, None])
    return (scores >= target_scores).sum(dim=1) - 1


def topk_accuracy(scores: torch.Tensor, labels: torch.Tensor, topk: Sequence[int] = (1, 5)) -> dict[str, float]:
    """Fraction of rows whose label ranks within the top k of ``scores`` (N, C), for each k: ``{"top1": ...}``."""
    labels = torch.as_tensor(labels, dtype=torch.long)
    if scores.dim() != 2 or labels.shape != scores.shape[:1]:
        raise ValueError(
            f"scores must be (N, classes) and labels (N,), got {tuple(scores.shape)} and {tuple(labels.shape)}"
        )
    if len(labels) == 0:
        raise ValueError("accuracy of an empty evaluation set is undefined")
    if labels.min() < 0 or labels.max() >= scores.shape[1]:
        bad = int(((labels < 0) | (labels >= scores.shape[1])).nonzero()[0])
        raise ValueError(f"label {int(labels[bad])} at row {bad} is outside 0..{scores.shape[1] - 1}")
    ranks = rank_of_targets(scores, labels)
    return {f"top{k}": (ranks < k).double().mean().item() for k in topk}


def mean_per_class_accuracy(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 recall of each class present in ``labels``, averaged over those classes (the CLIP protocol's
    metric for Aircraft, Pets, Caltech-101 and Flowers); ties count against the model, as in `topk_accuracy`."""
    labels = torch.as_tensor(labels, dtype=torch.long)
    topk_accuracy(scores, labels, (1,))  # the same checks of shapes and label range
    correct = (rank_of_targets(scores, labels) == 0).double()
    classes, inverse = labels.unique(return_inverse=True)
    per_class = torch.zeros(len(classes), dtype=torch.float64).index_add_(0, inverse, correct)
    return (per_class / torch.bincount(inverse)).mean().item()


def zero_shot_accuracy(
    image_features: torch.Tensor,
    classifier: torch.Tensor,
    labels: torch.Tensor,
    topk: Sequence[int] = (1, 5),
) -> dict[str, float]:
    """Top-k and mean-per-class accuracy of cosine similarity n(f(x)) . W_c between images (N, D) and the
    (C, D) classifier: ``{"top1": ..., "top5": ..., "mean_per_class": ...}``."""
    scores = F.normalize(image_features.float(), dim=-1) @ F.normalize(classifier.float(), dim=-1).T
    return {**topk_accuracy(scores, labels, topk), "mean_per_class": mean_per_class_accuracy(scores, labels)}

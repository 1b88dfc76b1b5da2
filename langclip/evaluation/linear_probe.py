"""Linear probe: multinomial logistic regression on frozen image features (CLIP, Radford et al. 2021).

The inverse regularisation strength C is chosen by accuracy on a validation split over a
log-spaced grid (the smallest C among equals); the probe is then refit on train + validation with that C and scored on
the test split (accuracy, and mean-per-class accuracy, the CLIP protocol's metric for some datasets). A C at
either end of the grid means the best value may lie outside it: that is warned about and reported.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score
from tqdm.auto import tqdm

DEFAULT_CS = tuple(10.0**e for e in range(-3, 4))


def _fit(features: np.ndarray, labels: np.ndarray, c: float, max_iter: int) -> LogisticRegression:
    return LogisticRegression(C=c, max_iter=max_iter).fit(features, labels)


def linear_probe(
    train: tuple[np.ndarray, np.ndarray],
    validation: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    cs: Sequence[float] = DEFAULT_CS,
    max_iter: int = 1000,
    progress: bool = True,
) -> dict[str, float]:
    """Each split is (features (N, D), labels (N,)).

    Returns ``{"accuracy", "mean_per_class", "validation_accuracy", "C", "C_at_grid_edge"}``."""
    for name, (features, labels) in (("train", train), ("validation", validation), ("test", test)):
        if len(features) == 0 or len(features) != len(labels):
            raise ValueError(
                f"linear probe: the {name} split needs one label per feature row and at least one row, "
                f"got {len(features)} rows and {len(labels)} labels"
            )
    scores = {
        c: _fit(*train, c, max_iter).score(*validation) for c in tqdm(cs, desc="linear probe C", disable=not progress)
    }
    best_c = max(scores, key=scores.get)
    at_edge = len(cs) > 1 and best_c in (min(cs), max(cs))
    if at_edge:
        warnings.warn(
            f"linear probe: the chosen C={best_c:g} is at the edge of the grid {[float(c) for c in cs]}; the best C "
            "may lie outside it: widen the grid (--probe-cs)",
            stacklevel=2,
        )
    probe = _fit(np.concatenate([train[0], validation[0]]), np.concatenate([train[1], validation[1]]), best_c, max_iter)
    predictions = probe.predict(test[0])
    return {
        "accuracy": float(np.mean(predictions == test[1])),
        "mean_per_class": float(balanced_accuracy_score(test[1], predictions)),
        "validation_accuracy": float(scores[best_c]),
        "C": best_c,
        "C_at_grid_edge": at_edge,
    }

"""Local `evaluate` metric modules: ``evaluate.load(metric_path("retrieval_recall"))``."""

from pathlib import Path

METRICS = ("retrieval_recall", "zero_shot_accuracy")


def metric_path(name: str) -> str:
    """The folder of a langclip metric, for `evaluate.load`."""
    if name not in METRICS:
        raise ValueError(f"unknown metric {name!r}; langclip ships {', '.join(METRICS)}")
    return str(Path(__file__).parent / name)

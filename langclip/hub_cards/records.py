"""Eval records and the model-index: what `langclip eval` writes, checked, and turned into the model-index.

An eval record is one JSON object per dataset and task::

    {"task": "zero-shot", "dataset": {"id": "imagenet-1k", "name": "ImageNet", "split": "validation"},
     "metrics": {"top1": 0.48, "top5": 0.75}, ...}

`eval_results` gives one `huggingface_hub.EvalResult` per metric (the card's model-index), and
`merge_eval_results` puts new results over earlier ones.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path

from huggingface_hub import EvalResult
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id

from ..errors import DataError

# langclip eval task -> (model-index task type, task name)
TASKS = {
    "zero-shot": ("zero-shot-image-classification", "Zero-shot image classification"),
    "retrieval": ("zero-shot-image-retrieval", "Zero-shot image-text retrieval"),
    "few-shot": ("few-shot-image-classification", "Few-shot image classification"),
    "linear-probe": ("image-classification", "Linear probe image classification"),
    "difference-classification": ("zero-shot-classification", "Image difference classification (PC-CLIP)"),
}

# eval record statistics that describe a metric rather than measure the model: shown beside it, not in the model-index
SIDE_STATISTICS = {"ci95": "95% interval ±{:.4f}", "validation_accuracy": "validation accuracy {:.4f} (chose C)"}


def load_eval_records(paths: Iterable[str | Path]) -> list[dict]:
    """Read eval records from JSON files (a record, a list of records, or a `langclip eval --suite` results.json
    whose ``results`` are the records) and check them."""
    records = []
    for path in paths:
        content = json.loads(Path(path).read_text(encoding="utf-8"))
        if isinstance(content, dict) and "results" in content:
            content = content["results"]
        for index, record in enumerate(content if isinstance(content, list) else [content]):
            check_eval_record(record, where=f"{path}, record {index}")
            records.append(record)
    return records


def check_eval_record(record: Mapping, where: str = "eval record") -> None:
    """Raise a `DataError` naming ``where`` unless ``record`` has a known task, a dataset id and split, and metrics."""
    if record.get("task") not in TASKS:
        raise DataError(f"{where}: task must be one of {', '.join(TASKS)}, got {record.get('task')!r}")
    dataset = record.get("dataset") or {}
    for key in ("id", "split"):
        if not dataset.get(key):
            raise DataError(f"{where}: dataset.{key} is missing")
    if not record.get("metrics") or not _metrics(record):
        raise DataError(f"{where}: no metrics")


def hub_dataset_type(dataset_id: str) -> str:
    """The model-index ``dataset.type`` for an eval record's dataset: its Hub id, or, for a local
    folder or file, the folder's name (a local path means nothing to the card's readers)."""
    path = Path(dataset_id).expanduser()
    if not (path.is_absolute() or path.exists() or dataset_id.startswith((".", "~"))):
        try:
            validate_repo_id(dataset_id)
            return dataset_id
        except HFValidationError:
            pass
    return path.resolve().name or dataset_id


def _metrics(record: Mapping) -> dict:
    """The record's metrics that go in the model-index (``SIDE_STATISTICS`` are shown beside them)."""
    return {metric: value for metric, value in record["metrics"].items() if metric not in SIDE_STATISTICS}


def result_key(result: EvalResult) -> str:
    """``task | dataset | split | metric``: the key of a result's note in the card metadata."""
    return f"{result.task_type} | {result.dataset_type} | {result.dataset_split} | {result.metric_type}"


def eval_notes(records: Iterable[Mapping]) -> dict[str, str]:
    """`result_key` -> text of the record's `SIDE_STATISTICS` (e.g. the 95% interval), for each of its metrics."""
    notes = {}
    for record in records:
        text = "; ".join(SIDE_STATISTICS[k].format(v) for k, v in record["metrics"].items() if k in SIDE_STATISTICS)
        if text:
            notes.update({result_key(result): text for result in eval_results([record])})
    return notes


def eval_results(records: Iterable[Mapping]) -> list[EvalResult]:
    """One `EvalResult` (task, dataset, metric) per metric of every record (not the `SIDE_STATISTICS`)."""
    results = []
    for record in records:
        check_eval_record(record)
        task_type, task_name = TASKS[record["task"]]
        dataset = record["dataset"]
        for metric, value in _metrics(record).items():
            results.append(
                EvalResult(
                    task_type=task_type,
                    task_name=task_name,
                    dataset_type=hub_dataset_type(dataset["id"]),
                    dataset_name=dataset.get("name") or dataset["id"],
                    dataset_config=dataset.get("config"),
                    dataset_split=dataset["split"],
                    metric_type=metric,
                    metric_name=f"{record['task']} {metric}",
                    metric_value=value,
                )
            )
    return results


def merge_eval_results(existing: list[EvalResult] | None, new: Iterable[EvalResult]) -> list[EvalResult]:
    """``existing`` with each result of ``new`` replacing the one for the same task, dataset and metric."""
    merged = list(existing or [])
    for result in new:
        same = [i for i, old in enumerate(merged) if old.is_equal_except_value(result)]
        if same:
            merged[same[0]] = result
        else:
            merged.append(result)
    return merged

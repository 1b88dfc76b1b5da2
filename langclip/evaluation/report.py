"""The records of a suite run as files and tables: one JSON per dataset and task, ``results.json`` (read by
`langclip push --eval-results`), ``results.md`` and ``results.png``; `compare_table` puts several runs side by side."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from ..errors import DataError


def average_score(records: Sequence[Mapping]) -> float:
    """The mean of the records' scores (one per dataset and task)."""
    return sum(record["score"] for record in records) / len(records)


def _row_name(record: Mapping) -> str:
    return f"{record['dataset']['name']} ({record['task']})"


def results_table(records: Sequence[Mapping]) -> str:
    """Markdown: a row per dataset and task (its score, then every metric), and an average row."""
    metrics = list(dict.fromkeys(metric for record in records for metric in record["metrics"]))
    lines = ["| dataset | task | split | score | " + " | ".join(metrics) + " |",
             "| --- | --- | --- |" + " ---: |" * (len(metrics) + 1)]
    for record in records:
        cells = [f"{record['metrics'][m]:.4f}" if m in record["metrics"] else "" for m in metrics]
        lines.append(f"| {record['dataset']['name']} | {record['task']} | {record['dataset']['split']} | "
                     f"{record['score']:.4f} ({record['main_metric']}) | " + " | ".join(cells) + " |")
    averages = []
    for metric in metrics:
        values = [record["metrics"][metric] for record in records if metric in record["metrics"]]
        averages.append(f"{sum(values) / len(values):.4f}")
    lines.append(f"| **average** ({len(records)}) | | | {average_score(records):.4f} | " + " | ".join(averages) + " |")
    return "\n".join(lines)


def compare_table(runs: Mapping[str, Sequence[Mapping]]) -> str:
    """Markdown: a row per dataset and task, a column of scores per model, and the average of each model."""
    rows = list(dict.fromkeys((_row_name(r), r["main_metric"]) for records in runs.values() for r in records))
    scores = {model: {(_row_name(r), r["main_metric"]): r["score"] for r in records} for model, records in runs.items()}
    lines = ["| dataset (task) | metric | " + " | ".join(runs) + " |", "| --- | --- |" + " ---: |" * len(runs)]
    for row in rows:
        lines.append(f"| {row[0]} | {row[1]} | " + " | ".join(
            f"{scores[model][row]:.4f}" if row in scores[model] else "-" for model in runs) + " |")
    lines.append("| **average** | | " + " | ".join(f"{average_score(records):.4f}" for records in runs.values()) + " |")
    return "\n".join(lines)


def plot_scores(runs: Mapping[str, Sequence[Mapping]], path: str | Path) -> Path:
    """A grouped bar plot (PNG) of each model's score per dataset and task."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(dict.fromkeys(_row_name(r) for records in runs.values() for r in records))
    width = 0.8 / len(runs)
    figure, axes = plt.subplots(figsize=(max(6.0, 0.6 * len(rows) * max(1, len(runs) / 2) + 2), 4.5))
    for i, (model, records) in enumerate(runs.items()):
        scores = {_row_name(r): r["score"] for r in records}
        axes.bar([j + (i - (len(runs) - 1) / 2) * width for j in range(len(rows))],
                 [scores.get(row, math.nan) for row in rows], width,
                 label=f"{model} (avg {average_score(records):.3f})")
    axes.set_xticks(range(len(rows)), rows, rotation=45, ha="right", fontsize=8)
    axes.set(ylabel="score (each dataset's main metric)", ylim=(0, 1))
    axes.legend(fontsize=8)
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def write_results(records: Sequence[Mapping], output_dir: str | Path, model_name: str, suite_name: str,
                  skipped: Mapping[str, str] | None = None) -> dict:
    """One ``<key>__<task>.json`` per record, ``results.json`` ({model, suite, average, results, skipped}),
    ``results.md`` and ``results.png`` under ``output_dir``; returns the combined results."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    for record in records:
        (output_dir / f"{record['key']}__{record['task']}.json").write_text(json.dumps(record, indent=2) + "\n",
                                                                              encoding="utf-8")
    skipped = dict(skipped or {})
    combined = {"model": model_name, "suite": suite_name, "average": average_score(records), "results": list(records),
                "skipped": skipped}
    (output_dir / "results.json").write_text(json.dumps(combined, indent=2) + "\n", encoding="utf-8")
    not_run = "".join(f"\nNot run: {key}, {reason}.\n" for key, reason in skipped.items())
    (output_dir / "results.md").write_text(
        f"# {suite_name}: {model_name}\n\n{results_table(records)}\n{not_run}", encoding="utf-8")
    plot_scores({model_name: records}, output_dir / "results.png")
    return combined


def load_results(path: str | Path) -> dict:
    """The combined results of a run: its ``results.json``, or that file in folder ``path``."""
    path = Path(path)
    file = path / "results.json" if path.is_dir() else path
    if not file.is_file():
        raise DataError(f"{path}: no results.json (the output folder of `langclip eval --suite`)")
    combined = json.loads(file.read_text(encoding="utf-8"))
    if not isinstance(combined, dict) or not combined.get("results"):
        raise DataError(f"{file}: expected an object with `results` (written by `langclip eval --suite`)")
    return combined


"""Evaluation for the demo and `benchmarks/reproduce_mini.py`, through `langclip eval`'s own code.

`save_test_set` writes a world split as a dataset `langclip eval` reads (labels as a
`ClassLabel`) with the zero-shot templates file; `evaluate` returns the eval records of
zero-shot classification (held-out templates; class names as the web captions write them,
and in synonyms no caption uses) and retrieval (held-out rich captions); `markdown_table`
prints results the way every demo part does.
"""

from __future__ import annotations

import argparse
import os

from datasets import ClassLabel

from ..evaluation import run as evaluation
from ..evaluation.arguments import add_arguments as add_eval_arguments
from . import world as demo_world


def synonym_names_file(test_dir: str) -> str:
    """Where `save_test_set` writes the synonym class names of the test set in ``test_dir``."""
    return f"{test_dir}_synonym_class_names.txt"


def save_test_set(test_set, output_dir: str, name: str = "test", classes=demo_world.CLASS_NAMES) -> tuple[str, str]:
    """Save ``test_set`` for `langclip eval`, its labels a `ClassLabel` over ``classes`` (a zero-shot task among
    them), their synonym names (`synonym_names_file`) and the zero-shot templates file; returns (dataset folder,
    templates file)."""
    test_dir, templates_path = os.path.join(output_dir, name), os.path.join(output_dir, "zero_shot_templates.txt")
    with open(synonym_names_file(test_dir), "w", encoding="utf-8") as handle:
        handle.write("\n".join(demo_world.synonym_name(class_name) for class_name in classes) + "\n")
    labels = [list(classes).index(class_name) for class_name in test_set["class_name"]]
    test_set = test_set.remove_columns("label").add_column("label", labels)
    test_set.cast_column("label", ClassLabel(names=list(classes))).save_to_disk(test_dir)
    with open(templates_path, "w", encoding="utf-8") as handle:
        handle.write("\n".join(demo_world.ZERO_SHOT_TEMPLATES) + "\n")
    return test_dir, templates_path


def eval_record(model_dir: str, test_dir: str, *flags: str) -> dict:
    """The eval record of `langclip eval --model model_dir --dataset test_dir *flags` on the CPU (``test_dir`` is a
    Dataset folder, evaluated whole)."""
    parser = argparse.ArgumentParser()
    add_eval_arguments(parser)
    return evaluation.run_eval(parser.parse_args(
        ["--model", model_dir, "--dataset", test_dir, "--batch-size", "256", "--device", "cpu", *flags]))


def evaluate(model_dir: str, test_dir: str, templates_path: str) -> list[dict]:
    """Eval records of a `save_test_set` folder: zero-shot with held-out templates over the class names as captions
    write them (its `ClassLabel`), the same over their synonym names, retrieval with held-out rich captions."""
    return [eval_record(model_dir, test_dir, "--task", "zero-shot", "--templates", templates_path,
                        "--dataset-name", "langclip demo world (held-out phrasings)"),
            eval_record(model_dir, test_dir, "--task", "zero-shot", "--templates", templates_path,
                        "--class-names", synonym_names_file(test_dir), "--dataset-name", "langclip demo world (synonym class names)"),
            eval_record(model_dir, test_dir, "--task", "retrieval", "--caption-column", "eval_captions",
                        "--dataset-name", "langclip demo world (held-out rich captions)")]


def headline(records: list[dict]) -> dict:
    """The demo table's metrics from `evaluate`'s records."""
    zero_shot, synonyms, retrieval = (record["metrics"] for record in records)
    return {"zero-shot": zero_shot["top1"], "zero-shot (synonyms)": synonyms["top1"],
            "image->text R@1": retrieval["image_to_text_R@1"], "text->image R@1": retrieval["text_to_image_R@1"]}


def markdown_table(results: dict[str, dict[str, float]]) -> str:
    """A markdown table with a row per model of ``results`` and a column per metric, to 3 decimals."""
    metrics = list(next(iter(results.values())))
    lines = [f"| model | {' | '.join(metrics)} |", f"| --- |{' --- |' * len(metrics)}"]
    lines += [f"| {name} | " + " | ".join(f"{values[m]:.3f}" for m in metrics) + " |" for name, values in results.items()]
    return "\n".join(lines)

"""`langclip eval`: evaluate a checkpoint on a suite of datasets or on one dataset, write JSON, print a table.

    langclip eval --model openai/clip-vit-base-patch32 --suite laclip          # or quick, retrieval, a manifest
    langclip eval --model out/laclip --dataset my/imagenet-val --split validation --task zero-shot
    langclip eval --model out/laclip --dataset my/coco-karpathy --split test --task retrieval \\
        --caption-column captions
    langclip eval --compare outputs/eval/clip outputs/eval/laclip            # side by side

A suite writes one JSON per dataset and task, ``results.json``, ``results.md`` and
``results.png`` to ``--output-dir`` (see `report`). A single task is a one-dataset suite made
from the flags; it writes ``<output-dir>/<dataset>__<task>.json`` (or ``--output``). Datasets
are Hub ids, `save_to_disk` folders or data folders that `datasets.load_dataset` reads; only the
split asked for is loaded. Any `transformers` CLIP-like checkpoint works. The flags are in `arguments`.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

import torch

from ..errors import ConfigError, check_at_least_one
from ..processing import loading
from .arguments import DTYPE_NAMES
from .differences import CLASS_PROMPT
from .features import FeatureStore
from .manifest import EvalOptions, load_suite, spec_from_mapping
from .report import compare_table, load_results, plot_scores, results_table, write_results
from .suite import run_suite, run_task
from .templates import TEMPLATE_SETS, load_templates

DTYPES = {name: getattr(torch, name) for name in DTYPE_NAMES}


def load_model(path: str, device: str, dtype: str = "float32"):
    """Model (eval mode, ``dtype``), tokenizer and image processor of a checkpoint folder or Hub id."""
    from transformers import AutoImageProcessor, AutoModel, AutoTokenizer

    from ..modeling.auto import from_user_path
    from ..modeling.image_processing import default_image_processor  # importing langclip.modeling registers its models

    model = from_user_path(AutoModel.from_pretrained, path, "--model", dtype=DTYPES[dtype]).to(device).eval()
    tokenizer = from_user_path(AutoTokenizer.from_pretrained, path, "--model")
    try:
        processor = AutoImageProcessor.from_pretrained(path)
    except OSError:
        size = model.config.vision_config.image_size
        print(f"{path} has no image processor config; using CLIP preprocessing at {size} px")
        processor = default_image_processor(size)
    return model, tokenizer, processor


def class_names_flag(value: str) -> list[str]:
    """``--class-names``: a file with one name per line, or comma-separated names."""
    path = Path(value)
    try:
        is_file = path.is_file()
    except OSError:  # e.g. a comma-separated list longer than a file name may be
        is_file = False
    found = path.read_text(encoding="utf-8").splitlines() if is_file else value.split(",")
    found = [name.strip() for name in found if name.strip()]
    if not found:
        raise ConfigError(f"--class-names {value!r} holds no class names")
    return found


def single_spec(args: argparse.Namespace):
    """The one-dataset suite entry that the single-task flags describe."""
    values = {
        "path": args.dataset, "name": args.dataset_name, "split": args.split or "test", "config": args.dataset_config,
        "label_column": args.label_column, "caption_column": args.caption_column,
        "caption_separator": args.caption_separator, "id_column": args.id_column, "tasks": [args.task],
        "metric": args.metric, "train_split": args.train_split, "validation_split": args.validation_split,
        "validation_fraction": args.validation_fraction, "comparative": args.comparative, "alpha": args.alpha,
        "differences": args.differences,
    }
    if args.image_column:
        values["image_column"] = args.image_column
    if args.class_names:
        values["classnames"] = class_names_flag(args.class_names)
    if args.templates is None and args.comparative:
        values["templates"] = [CLASS_PROMPT]  # the PC-CLIP paper's class prompt
    else:
        templates = args.templates or "openai_imagenet"
        values["templates"] = templates if templates in TEMPLATE_SETS else list(load_templates(templates))
    key = re.sub(r"[^A-Za-z0-9_.-]+", "_", args.dataset_name or Path(args.dataset.rstrip("/")).name) or "dataset"
    return spec_from_mapping(key, values, f"--dataset {args.dataset}")


def options_of(args: argparse.Namespace, cache_dir: str | None) -> EvalOptions:
    return EvalOptions(
        batch_size=args.batch_size, num_workers=args.num_workers, cache_dir=cache_dir, streaming=args.streaming,
        n_way=args.n_way, n_shot=args.n_shot, n_query=args.n_query, episodes=args.episodes, seed=args.seed,
        probe_cs=args.probe_cs,
    )


def _device(args: argparse.Namespace) -> str:
    return args.device or ("cuda" if torch.cuda.is_available() else "cpu")


def run_eval(args: argparse.Namespace) -> dict:
    """Run the single task the flags describe (``--dataset``, ``--task``) and return its eval record."""
    spec = single_spec(args)
    model, tokenizer, processor = load_model(args.model, _device(args), args.dtype)
    options = options_of(args, args.cache_dir)
    return run_task(model, tokenizer, spec, args.task, FeatureStore(model, processor, options), options, args.model)


def format_table(record: dict) -> str:
    """One record's metrics as an aligned text table."""
    rows = [("task", "dataset", "split", "metric", "value")]
    rows += [
        (record["task"], record["dataset"]["name"], record["dataset"]["split"], metric, f"{value:.4f}")
        for metric, value in record["metrics"].items()
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows)


def _dataset_paths(pairs: list[str]) -> dict[str, str]:
    found = {}
    for pair in pairs:
        key, sep, folder = pair.partition("=")
        if not sep or not key or not folder:
            raise ConfigError(f"--dataset-path expects KEY=FOLDER, got {pair!r}")
        found[key] = folder
    return found


def compare(dirs: list[str], output_dir: str) -> int:
    runs = {}
    for folder in dirs:
        combined = load_results(folder)
        name = combined.get("model") or Path(folder).name
        runs[name if name not in runs else f"{name} ({folder})"] = combined["results"]
    table = compare_table(runs)
    Path(output_dir).mkdir(parents=True, exist_ok=True)
    (Path(output_dir) / "compare.md").write_text(table + "\n", encoding="utf-8")
    plot = plot_scores(runs, Path(output_dir) / "compare.png")
    print(table)
    print(f"written to {Path(output_dir) / 'compare.md'} and {plot}")
    return 0


def check_given_flags(args: argparse.Namespace, suite) -> None:
    """Refuse (or warn about) every flag given away from its default that does not apply to this run
    (`langclip.flags.EVAL_FLAGS`): a --compare, ``suite`` (loaded) or a single --dataset task."""
    from ..flags import EVAL_FLAGS, check_flags
    from .arguments import add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    given = {action.dest for action in parser._actions
             if action.dest in vars(args) and getattr(args, action.dest) != action.default}
    mode = "compare" if args.compare else "suite" if args.suite else "dataset"
    tasks = {task for spec in suite.datasets for task in spec.tasks} if suite else {args.task} if args.dataset else set()
    check_flags(EVAL_FLAGS, given, argparse.Namespace(**vars(args), mode=mode, tasks=tasks))


def main(args: argparse.Namespace) -> int:
    suite = load_suite(args.suite, _dataset_paths(args.dataset_path), args.datasets) if args.suite else None
    check_given_flags(args, suite)
    if args.compare:
        return compare(args.compare, args.output_dir or "outputs/eval/compare")
    if not args.model:
        raise ConfigError("give --model (a checkpoint folder or Hub id) to evaluate")
    check_at_least_one(args, "batch_size")
    if args.dataset:  # a Dataset folder has no splits to choose from: naming one is an error, not all of it
        probe = [args.train_split, args.validation_split] if args.task == "linear-probe" else []
        for split in filter(None, [args.split, *probe]):
            loading.check_split_choosable(args.dataset, split)
    if args.push_to_hub:  # fail before the evaluation, not after it
        from ..hub_cards.push import check_hub_access

        check_hub_access(args.push_to_hub)
    start = time.perf_counter()
    if suite:
        model_name = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(args.model.rstrip("/")).name)
        output_dir = Path(args.output_dir or f"outputs/eval/{suite.name}/{model_name}")
        model, tokenizer, processor = load_model(args.model, _device(args), args.dtype)
        records = run_suite(model, tokenizer, processor, suite, options_of(args, args.cache_dir or str(output_dir /
                            "cache")), args.model)
        write_results(records, output_dir, args.model, suite.name, suite.skipped)
        print(results_table(records))
        for key, reason in suite.skipped.items():
            print(f"not run: {key}, {reason}")
        print(f"results written to {output_dir} (results.json, results.md, results.png) in "
              f"{time.perf_counter() - start:.0f} s")
    else:
        record = run_eval(args)
        output = Path(args.output or Path(args.output_dir or "outputs/eval") / f"{record['key']}__{args.task}.json")
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        print(format_table(record))
        print(f"results written to {output}")
        records = [record]
    if args.push_to_hub:
        from ..hub_cards.push import update_eval_results

        print(f"model-index updated: {update_eval_results(args.push_to_hub, records, args.revision)}")
    return 0

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
split asked for is loaded. Any `transformers` CLIP-like checkpoint works.
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
from .differences import CLASS_PROMPT
from .features import FeatureStore
from .manifest import TASKS, ZERO_SHOT_METRICS, EvalOptions, load_suite, shipped_suites, spec_from_mapping
from .report import compare_table, load_results, plot_scores, results_table, write_results
from .suite import run_suite, run_task
from .templates import TEMPLATE_SETS, load_templates

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def load_model(path: str, device: str, dtype: str = "float32"):
    """Model (eval mode, ``dtype``), tokenizer and image processor of a checkpoint folder or Hub id."""
    from transformers import AutoImageProcessor, AutoModel, AutoTokenizer

    from ..modeling.image_processing import default_image_processor  # importing langclip.modeling registers its models

    model = AutoModel.from_pretrained(path, dtype=DTYPES[dtype]).to(device).eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..hub_cards.command import add_push_arguments

    parser.add_argument("--model", help="Checkpoint folder or Hub id (any transformers CLIP-like model).")
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--suite", help=f"Suite to run: {', '.join(shipped_suites())}, or a manifest YAML file.")
    what.add_argument("--dataset", help="Single task: Hub dataset id, save_to_disk folder or data folder.")
    what.add_argument("--compare", nargs="+", metavar="DIR",
                      help="Table (and plot) of several `--suite` output folders side by side; runs no model.")
    parser.add_argument("--dataset-path", nargs="+", default=[], metavar="KEY=FOLDER",
                        help="Suite: evaluate dataset KEY from a local copy (e.g. a gated ImageNet, or CUB).")
    parser.add_argument("--datasets", nargs="+", metavar="KEY", help="Suite: run only these datasets of it.")
    parser.add_argument("--output-dir", help="Where results go (default: outputs/eval/<suite>/<model name>, or "
                        "outputs/eval for a single task).")
    parser.add_argument("--output", help="Single task: the JSON file of its record (default: in --output-dir).")
    parser.add_argument("--dataset-config", help="Single task: configuration name of the dataset, if it has several.")
    parser.add_argument("--dataset-name", help="Single task: readable dataset name for the table and the model card.")
    parser.add_argument("--split", help="Single task: split to evaluate (the probe's test split); default test, or all "
                        "of a save_to_disk Dataset folder, which has no splits and so takes no --split.")
    parser.add_argument("--task", choices=TASKS, default="zero-shot", help="Single task: evaluation protocol.")
    parser.add_argument("--metric", choices=ZERO_SHOT_METRICS, default="top1",
                        help="Single task: the zero-shot score (mean_per_class for Aircraft, Pets, Caltech, Flowers).")
    parser.add_argument("--image-column", help="Single task: column holding the images (default: image, or the "
                        "first of webp/png/jpg/jpeg).")
    parser.add_argument("--label-column", default="label", help="Single task: column of class indices or names.")
    parser.add_argument("--caption-column", default="caption",
                        help="Retrieval: column of one caption, a list of captions, or joined captions per image.")
    parser.add_argument("--caption-separator", help="Retrieval: split each caption string at this text (e.g. '\\n').")
    parser.add_argument("--id-column", default="id", help="Difference classification: column of image ids.")
    parser.add_argument("--class-names",
                        help="File with one class name per line, or comma-separated names (default: ClassLabel names).")
    parser.add_argument("--templates", help=f"Zero-shot prompt templates: {', '.join(TEMPLATE_SETS)}, or a file with "
                        "one per line (default: openai_imagenet; with --comparative, 'This is a photo of a {}').")
    parser.add_argument("--comparative", metavar="DIFFS", help="Zero-shot with PC-CLIP comparative prompting: a file "
                        "of class_a, class_b, difference rows (difference: how class a differs from class b).")
    parser.add_argument("--alpha", type=float, default=0.9, help="Comparative prompting: weight of the class prompt.")
    parser.add_argument("--differences", help="Difference classification: `langclip differences` output "
                        "(rows id_a, id_b, difference) whose ids are in --dataset's --id-column.")
    parser.add_argument("--cache-dir", help="Folder caching image features and zero-shot classifiers per model and "
                        "dataset (default with --suite: <output-dir>/cache; none for a single task).")
    parser.add_argument("--batch-size", type=int, default=64, help="Images or texts per forward pass.")
    parser.add_argument("--num-workers", type=int, default=0, help="DataLoader workers decoding images.")
    parser.add_argument("--dtype", choices=tuple(DTYPES), default="float32", help="Model dtype (bfloat16 on GPUs).")
    parser.add_argument("--streaming", action="store_true", help="Stream Hub datasets instead of downloading them.")
    parser.add_argument("--device", help="Torch device (default: cuda when available, else cpu).")
    parser.add_argument("--n-way", type=int, default=5, help="Few-shot: classes per episode.")
    parser.add_argument("--n-shot", type=int, default=5, help="Few-shot: support images per class.")
    parser.add_argument("--n-query", type=int, default=15, help="Few-shot: query images per class.")
    parser.add_argument("--episodes", type=int, default=600, help="Few-shot: number of episodes.")
    parser.add_argument("--train-split", default="train", help="Linear probe: split to fit on.")
    parser.add_argument(
        "--validation-split", help="Linear probe: split that chooses C (default: a fraction held out of --train-split)."
    )
    parser.add_argument(
        "--validation-fraction", type=float, default=0.2, help="Linear probe: share of the train split held out for C."
    )
    parser.add_argument("--probe-cs", type=float, nargs="+",
                        help="Linear probe: grid of inverse regularisation strengths C (default: 1e-3 ... 1e3).")
    parser.add_argument("--seed", type=int, default=0, help="Seed of few-shot episodes and the validation hold-out.")
    add_push_arguments(parser, create=False)


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


def main(args: argparse.Namespace) -> int:
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
    if args.suite:
        suite = load_suite(args.suite, _dataset_paths(args.dataset_path), args.datasets)
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

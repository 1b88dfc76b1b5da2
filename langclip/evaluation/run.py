"""`langclip eval`: evaluate a checkpoint on an image dataset, write the results as JSON, print a table.

    langclip eval --model out/laclip --dataset my/imagenet-val --split validation --task zero-shot
    langclip eval --model out/laclip --dataset my/coco-karpathy --split test --task retrieval \\
        --caption-column captions

Datasets are Hub ids, local dataset folders (`save_to_disk`) or data folders that
`datasets.load_dataset` reads (imagefolder with metadata.jsonl, parquet, ...). Class names
come from the label column's `ClassLabel` feature unless ``--class-names`` is given.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Iterator
from pathlib import Path

import datasets
import torch

from ..processing import loading
from .features import encode_images, encode_texts
from .few_shot import few_shot_accuracy
from .linear_probe import linear_probe
from .retrieval import retrieval_recall
from .templates import TEMPLATE_SETS, load_templates
from .zero_shot import zero_shot_accuracy, zero_shot_classifier

TASKS = ("zero-shot", "retrieval", "few-shot", "linear-probe")


def load_split(path: str, split: str, config: str | None = None) -> datasets.Dataset:
    """One split of a Hub dataset, a `save_to_disk` folder or a data folder; errors name what is missing."""
    data = loading.load_split(path, split, config)
    if len(data) == 0:
        raise ValueError(f"dataset {path}, split {split!r}, is empty: nothing to evaluate")
    return data


def _check_column(data: datasets.Dataset, column: str, flag: str) -> None:
    if column not in data.column_names:
        raise ValueError(f"no column {column!r} (set {flag}); the dataset has {', '.join(data.column_names)}")


def class_names(data: datasets.Dataset, label_column: str, names: str | None = None) -> list[str]:
    """``names`` (a file with one name per line, or comma-separated), else the label column's ClassLabel names."""
    if names:
        path = Path(names)
        found = path.read_text(encoding="utf-8").splitlines() if path.is_file() else names.split(",")
        found = [name.strip() for name in found if name.strip()]
    else:
        _check_column(data, label_column, "--label-column")
        feature = data.features[label_column]
        if not isinstance(feature, datasets.ClassLabel):
            raise ValueError(
                f"column {label_column!r} is {type(feature).__name__}, not ClassLabel, so it carries no class names: "
                "pass --class-names (a file with one name per line, or a comma-separated list)"
            )
        found = list(feature.names)
    if not found:
        raise ValueError("no class names given")
    return found


def image_batches(
    data: datasets.Dataset, image_column: str, processor, batch_size: int
) -> Iterator[torch.Tensor]:
    """``pixel_values`` for ``batch_size`` rows at a time."""
    _check_column(data, image_column, "--image-column")
    data = data.select_columns([image_column])  # decode only the images
    for start in range(0, len(data), batch_size):
        images = data[start : start + batch_size][image_column]
        for offset, image in enumerate(images):
            if image is None:
                raise ValueError(f"row {start + offset} has no image in column {image_column!r}")
        yield processor(images=[image.convert("RGB") for image in images], return_tensors="pt")["pixel_values"]


def captions(data: datasets.Dataset, caption_column: str) -> tuple[list[str], torch.Tensor]:
    """All captions (a string or a list of strings per row) and, for each, the row of its image."""
    _check_column(data, caption_column, "--caption-column")
    texts, text_to_image = [], []
    for row, value in enumerate(data[caption_column]):
        row_captions = [value] if isinstance(value, str) else list(value or [])
        if not row_captions or not all(isinstance(text, str) and text.strip() for text in row_captions):
            raise ValueError(
                f"row {row} of column {caption_column!r} needs one or more non-empty captions, got {value!r}"
            )
        texts += row_captions
        text_to_image += [row] * len(row_captions)
    return texts, torch.tensor(text_to_image)


def labels_of(data: datasets.Dataset, label_column: str) -> torch.Tensor:
    _check_column(data, label_column, "--label-column")
    return torch.tensor(data[label_column], dtype=torch.long)


def load_model(path: str, device: str):
    """Model, tokenizer and image processor of a checkpoint folder or Hub id."""
    from transformers import AutoImageProcessor, AutoModel, AutoTokenizer, CLIPImageProcessorPil

    import langclip.modeling  # noqa: F401  (registers the langclip model types)

    model = AutoModel.from_pretrained(path).to(device).eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    try:
        processor = AutoImageProcessor.from_pretrained(path)
    except OSError:
        size = model.config.vision_config.image_size
        print(f"{path} has no image processor config; using CLIP preprocessing at {size} px")
        processor = CLIPImageProcessorPil(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
    return model, tokenizer, processor


def run_eval(args: argparse.Namespace) -> dict:
    """Run ``args.task`` and return its eval record (see `langclip.hub_cards.cards`)."""
    data = load_split(args.dataset, args.split, args.dataset_config)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model, tokenizer, processor = load_model(args.model, device)

    def features_of(split_data: datasets.Dataset) -> torch.Tensor:
        batches = image_batches(split_data, args.image_column, processor, args.batch_size)
        return encode_images(model, batches, total=-(-len(split_data) // args.batch_size))

    settings = {}
    if args.task == "zero-shot":
        names = class_names(data, args.label_column, args.class_names)
        labels = labels_of(data, args.label_column)
        classifier = zero_shot_classifier(
            model, tokenizer, names, load_templates(args.templates), args.batch_size, args.cache_dir
        )
        metrics = zero_shot_accuracy(features_of(data), classifier, labels, topk=(1, 5))
        settings = {"templates": args.templates, "classes": len(names)}
    elif args.task == "retrieval":
        texts, text_to_image = captions(data, args.caption_column)
        text_features = encode_texts(model, tokenizer, texts, args.batch_size)
        metrics = retrieval_recall(features_of(data), text_features, text_to_image, ks=(1, 5, 10))
        settings = {"texts": len(texts)}
    elif args.task == "few-shot":
        metrics = few_shot_accuracy(
            features_of(data), labels_of(data, args.label_column), args.n_way, args.n_shot, args.n_query,
            args.episodes, args.seed,
        )
        settings = {"n_way": args.n_way, "n_shot": args.n_shot, "n_query": args.n_query, "episodes": args.episodes}
    else:
        train = load_split(args.dataset, args.train_split, args.dataset_config)
        if args.validation_split:
            validation = load_split(args.dataset, args.validation_split, args.dataset_config)
        else:
            parts = train.train_test_split(test_size=args.validation_fraction, seed=args.seed)
            train, validation = parts["train"], parts["test"]
        if len({train._fingerprint, validation._fingerprint, data._fingerprint}) < 3:
            raise ValueError(
                f"linear probe: --train-split {args.train_split!r}, the validation split and --split {args.split!r} "
                f"must be different data, but {args.dataset} gives the same rows for two of them"
            )
        splits = [(features_of(d).numpy(), labels_of(d, args.label_column).numpy()) for d in (train, validation, data)]
        metrics = linear_probe(*splits)
        settings = {"C": metrics.pop("C"), "train_rows": len(train), "validation_rows": len(validation)}
    return {
        "task": args.task,
        "model": args.model,
        "dataset": {"id": args.dataset, "name": args.dataset_name or args.dataset, "config": args.dataset_config,
                    "split": args.split},
        "num_examples": len(data),
        "metrics": metrics,
        "settings": settings,
    }


def format_table(record: dict) -> str:
    """The record's metrics as an aligned text table."""
    rows = [("task", "dataset", "split", "metric", "value")]
    rows += [
        (record["task"], record["dataset"]["name"], record["dataset"]["split"], metric, f"{value:.4f}")
        for metric, value in record["metrics"].items()
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..hub_cards.push import add_push_arguments

    parser.add_argument("--model", required=True, help="Checkpoint folder or Hub id (LaCLIP or plain CLIP).")
    parser.add_argument("--dataset", required=True, help="Hub dataset id, save_to_disk folder or data folder.")
    parser.add_argument("--dataset-config", help="Configuration name of the dataset, if it has several.")
    parser.add_argument("--dataset-name", help="Readable dataset name for the table and the model card.")
    parser.add_argument("--split", default="test", help="Split to evaluate (the test split of the linear probe).")
    parser.add_argument("--task", choices=TASKS, default="zero-shot", help="Evaluation protocol.")
    parser.add_argument("--image-column", default="image", help="Column holding the images.")
    parser.add_argument("--label-column", default="label", help="Column of class indices (zero-shot, few-shot, probe).")
    parser.add_argument(
        "--caption-column", default="caption", help="Retrieval: column of one caption or a list of captions per image."
    )
    parser.add_argument(
        "--class-names", help="File with one class name per line, or comma-separated names (default: ClassLabel names)."
    )
    parser.add_argument(
        "--templates",
        default="openai_imagenet",
        help=f"Zero-shot prompt templates: {', '.join(TEMPLATE_SETS)}, or a file with one template per line.",
    )
    parser.add_argument("--cache-dir", help="Folder that caches zero-shot classifiers between runs.")
    parser.add_argument("--batch-size", type=int, default=64, help="Images or texts per forward pass.")
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
    parser.add_argument("--seed", type=int, default=0, help="Seed of few-shot episodes and the validation hold-out.")
    parser.add_argument("--output", help="Where to write the JSON results (default: outputs/eval/<task>.json).")
    add_push_arguments(parser, create=False)


def main(args: argparse.Namespace) -> int:
    if args.push_to_hub:  # fail before the evaluation, not after it
        from ..hub_cards.push import check_repo_id, hub_token

        check_repo_id(args.push_to_hub)
        hub_token()
    start = time.perf_counter()
    record = run_eval(args)
    record["seconds"] = round(time.perf_counter() - start, 2)
    output = Path(args.output or f"outputs/eval/{args.task}.json")
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    print(format_table(record))
    print(f"results written to {output}")
    if args.push_to_hub:
        from ..hub_cards.push import update_eval_results

        print(f"model-index updated: {update_eval_results(args.push_to_hub, [record], args.revision)}")
    return 0

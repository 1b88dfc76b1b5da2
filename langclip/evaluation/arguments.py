"""The flags of `langclip eval`, apart from the command (`run`, with its ``main``) because this module imports no
torch, transformers or datasets: `langclip eval --help` answers at once."""

from __future__ import annotations

import argparse

from ..hub_cards.command import add_push_arguments
from .manifest import TASKS, ZERO_SHOT_METRICS, shipped_suites
from .templates import TEMPLATE_SETS

DTYPE_NAMES = ("float32", "bfloat16", "float16")
"""``--dtype``: the torch dtypes a model is evaluated in (`run.DTYPES`)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
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
    parser.add_argument("--dtype", choices=DTYPE_NAMES, default="float32", help="Model dtype (bfloat16 on GPUs).")
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

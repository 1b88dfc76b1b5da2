"""The flags of `langclip demo`, apart from the demo itself (`run`, with its ``main``) because this module imports
no torch, transformers or datasets: `langclip demo --help` answers at once."""

from __future__ import annotations

import argparse
import os

METHODS = ("clip", "laclip", "laclip-mt")
"""The methods the demo trains and compares (``--methods``)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output-dir", default="outputs/demo", help="Where checkpoints, results and the plot go.")
    parser.add_argument("--config", default=None, help="YAML of training arguments that override the embedded demo run.")
    parser.add_argument("--train-images", type=int, default=4096, help="Generated training images.")
    parser.add_argument("--test-images", type=int, default=512, help="Generated held-out test images.")
    parser.add_argument("--max-steps", type=int, default=None, help="Optimizer steps per model (default: the config's).")
    parser.add_argument("--corpus-steps", type=int, default=200,
                        help="Steps to fit the rewriting LM on its text-only corpus (language modelling).")
    parser.add_argument("--lm-steps", type=int, default=600, help="Steps to fit the rewriting LM on ICL rewriting prompts.")
    parser.add_argument("--num-rewrites", type=int, default=3, help="LM rewrites per training caption (M).")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS, help="Models to train.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the world, initialisation and data order.")
    parser.add_argument(
        "--threads", type=int, default=1,
        help="Torch threads per process. 1 avoids OpenMP spin-waits that make these tiny models several times "
             "slower on a shared machine; 2 can be faster on an idle 2-core one.")
    parser.add_argument(
        "--jobs", type=int, default=min(2, os.cpu_count() or 1),
        help="Models trained at once, each in its own process with --threads threads and in-process data loading "
             "(default: 2, or 1 on a 1-core machine). Every run is the same computation whichever the number of "
             "jobs, so the table does not depend on it; 1 trains them one after another with one loading worker.")

"""The `langclip` command line: `langclip <command> --help` describes each command.

Each command lives in the module that owns its work; that module defines
``add_arguments(parser)`` and ``main(args)``. Modules are imported only when their
command runs, so `langclip --help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = {
    "convert": ("langclip.modeling.laclip.convert_open_clip", "Convert an OpenCLIP-format checkpoint into a langclip checkpoint folder."),
    "train": ("langclip.training.trainer", "Train with any method: CLIP, LaCLIP, LaCLIP-MT, CLIPS or PC-CLIP (the flags and YAML config of train.py)."),
    "demo": ("langclip.demo.run", "Run the self-contained demo on generated data (what `make demo` runs)."),
    "eval": ("langclip.evaluation.run", "Evaluate a checkpoint on a suite (laclip, retrieval, quick) or one task; compare runs."),
    "push": ("langclip.hub_cards.push", "Push a checkpoint or dataset folder with its card to the Hub."),
    "meta-pairs": ("langclip.processing.generation.meta_pairs", "Build a meta input-output pool from COCO captions or a chat model."),
    "rewrite": ("langclip.processing.generation.rewrite", "Rewrite captions with an LLM (LaCLIP), EDA or back-translation."),
    "differences": ("langclip.processing.generation.differences", "Write pairwise image-difference texts with an LLM (PC-CLIP)."),
}


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    """The `langclip` parser, with the arguments of the command named by ``argv[0]`` (only that module is imported)."""
    parser = argparse.ArgumentParser(prog="langclip", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        if argv and argv[0] == name:
            importlib.import_module(module_name).add_arguments(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(argv).parse_args(argv)
    module = importlib.import_module(COMMANDS[args.command][0])
    return module.main(args) or 0


if __name__ == "__main__":
    sys.exit(main())

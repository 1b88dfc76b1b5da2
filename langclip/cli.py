"""The `langclip` command line: `langclip <command> --help` describes each command.

`COMMANDS` names, for each command, the function that adds its flags and the function that runs it, as
``module:function``. The flags live in modules that import no torch, transformers, datasets or accelerate; the
module that runs the command imports the stack. Only the named command's flags module is imported to build the
parser, and its run module only once the arguments are parsed, so `langclip --help` and `langclip <command> --help`
answer at once.

A `langclip.errors.LangclipError` (bad input, named with its fix) or a missing file is printed as
``langclip <command>: error: <message>`` on stderr with exit status 1 and no traceback; any other
error likewise, as its message and type, with a pointer to ``--debug`` (anywhere on the command
line), which shows the traceback instead. A run stopped by a signal (`RunInterrupted`) prints where it stopped and
how to resume, and exits with 128 + the signal's number.
"""

from __future__ import annotations

import argparse
import importlib
import re
import sys

from .errors import LangclipError, RunInterrupted

COMMANDS = {
    "convert": ("langclip.hub_cards.convert:add_arguments", "langclip.hub_cards.convert:main",
                "Convert a released checkpoint (OpenCLIP, LaCLIP or CLIPS layout) into a langclip checkpoint folder."),
    "train": ("langclip.training.arguments:add_arguments", "langclip.training.trainer:main",
              "Train with any method: CLIP, LaCLIP, LaCLIP-MT, CLIPS or PC-CLIP (the flags and YAML config of train.py)."),
    "demo": ("langclip.demo.arguments:add_arguments", "langclip.demo.run:main",
             "Run the self-contained demo on generated data (what `make demo` runs)."),
    "eval": ("langclip.evaluation.arguments:add_arguments", "langclip.evaluation.run:main",
             "Evaluate a checkpoint on a suite (laclip, retrieval, quick) or one task; compare runs."),
    "push": ("langclip.hub_cards.command:add_arguments", "langclip.hub_cards.command:main",
             "Push a checkpoint or dataset folder with its card to the Hub."),
    "meta-pairs": ("langclip.processing.generation.arguments:add_meta_pairs_arguments",
                   "langclip.processing.generation.meta_pairs:main",
                   "Build a meta input-output pool from COCO captions or a chat model."),
    "rewrite": ("langclip.processing.generation.arguments:add_rewrite_arguments",
                "langclip.processing.generation.rewrite:main",
                "Rewrite captions with an LLM (LaCLIP), EDA or back-translation."),
    "differences": ("langclip.processing.generation.arguments:add_differences_arguments",
                    "langclip.processing.generation.differences:main",
                    "Write pairwise image-difference texts with an LLM (PC-CLIP)."),
}
"""Command -> (the ``module:function`` that adds its flags, the ``module:function`` that runs it, its help)."""


def resolve(target: str):
    """The function a ``module:function`` entry of `COMMANDS` names (importing its module)."""
    module, function = target.split(":")
    return getattr(importlib.import_module(module), function)


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    """The `langclip` parser, with the arguments of the command named by ``argv[0]`` (only its flags module is
    imported)."""
    parser = argparse.ArgumentParser(prog="langclip", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true",
                        help="Show the traceback of an error instead of its one-line message (may follow the command).")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (add_arguments, _, help_text) in COMMANDS.items():
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        if argv and argv[0] == name:
            resolve(add_arguments)(sub)
    return parser


def worker_message(message: str) -> str:
    """The error's own message from one re-raised by a DataLoader worker ("Caught X in DataLoader worker process 0.",
    the worker's traceback, then ``module.X: message``); other messages as they are."""
    if "\nOriginal Traceback" not in message:
        return message
    last = message.rstrip().rsplit("\n", 1)[-1]
    return last.split(": ", 1)[1] if re.match(r"^[\w.]+: ", last) else last


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [arg for arg in argv if arg != "--debug"]
    args = build_parser(argv).parse_args(argv)
    del args.debug
    try:
        return resolve(COMMANDS[args.command][1])(args) or 0
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"\nlangclip {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as error:
        if debug:
            raise
        if isinstance(error, RunInterrupted):
            if not error.quiet:
                print(f"langclip {args.command}: {error}", file=sys.stderr)
            return error.exit_code
        message = worker_message(str(error))
        if not isinstance(error, (LangclipError, FileNotFoundError)):
            message = f"{message} ({type(error).__name__}; run with --debug for the traceback)"
        print(f"langclip {args.command}: error: {message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

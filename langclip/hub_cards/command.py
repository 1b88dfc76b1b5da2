"""The `langclip push` command, and the push flags the commands that push their result share (`add_push_arguments`).

    langclip push out/laclip-demo user/laclip-demo --eval-results outputs/eval/zero-shot.json
    langclip push outputs/rewrites user/cc3m-rewrites --repo-type dataset

The work is `push.push_model` and `push.push_dataset` (imported in `main`: `push` imports the models, and the
flags here serve `--help`); the cards are `cards.model_card` and `cards.dataset_card`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from ..errors import ConfigError, DataError
from .cards import DatasetCardFields, ModelCardFields, dataset_card
from .records import load_eval_records


class DeprecatedAlias(argparse.Action):
    """An old spelling of a flag: warns on stderr, then stores like the new one (``new`` names it)."""

    def __init__(self, option_strings, dest, new: str, nargs=None, **kwargs):
        self.new = new
        super().__init__(option_strings, dest, nargs=nargs, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"warning: {option_string} is deprecated; use {self.new}", file=sys.stderr)
        setattr(namespace, self.dest, True if self.nargs == 0 else values)


def add_push_arguments(parser: argparse.ArgumentParser, create: bool = True) -> None:
    """``--push-to-hub``, ``--private`` and ``--revision`` for the commands that push their result
    (`rewrite`, `differences`, `eval`); ``create=False``: the repo exists. ``--hub-private`` and
    ``--hub-revision`` stay as deprecated spellings."""
    parser.add_argument("--push-to-hub", metavar="REPO_ID", help="Push the result to this Hub repo (namespace/name).")
    if create:
        parser.add_argument("--private", action="store_true", help="With --push-to-hub: create the repo as private.")
        parser.add_argument(
            "--hub-private", dest="private", action=DeprecatedAlias, new="--private", nargs=0,
            help="Deprecated spelling of --private.",
        )
    parser.add_argument("--revision", help="With --push-to-hub: branch to push to (created if missing); default main.")
    parser.add_argument(
        "--hub-revision", dest="revision", action=DeprecatedAlias, new="--revision",
        help="Deprecated spelling of --revision.",
    )


def _read_mapping(path: str | None) -> dict | None:
    """A YAML or JSON file holding a mapping (JSON is YAML)."""
    if path is None:
        return None
    content = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    if not isinstance(content, dict):
        raise DataError(f"{path} must hold a mapping, got {type(content).__name__}")
    return content


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("folder", help="Checkpoint folder (save_pretrained output) or dataset folder to push.")
    parser.add_argument("repo_id", help="Hub repo to push to, as namespace/name (created if missing).")
    parser.add_argument("--repo-type", choices=("model", "dataset"), default="model", help="Kind of Hub repo.")
    parser.add_argument("--private", action="store_true", help="Create the repo as private.")
    parser.add_argument("--revision", help="Branch to push to (created from main if missing); defaults to main.")
    parser.add_argument("--include-logs", action="store_true",
                        help="Also upload training logs (train_log.jsonl, TensorBoard runs/), which hold local paths.")
    parser.add_argument("--commit-message", default="Upload with langclip", help="Message of the Hub commit.")
    parser.add_argument(
        "--eval-results", nargs="+", default=[], metavar="JSON", help="`langclip eval` JSON files for the model-index."
    )
    parser.add_argument("--base-model", help="Hub id of the checkpoint this model was fine-tuned from (card metadata).")
    parser.add_argument("--datasets", nargs="+", default=[], help="Hub ids of the training datasets (card metadata).")
    parser.add_argument("--license", default="apache-2.0", help="License identifier for the card metadata.")
    parser.add_argument("--training-config", help="YAML/JSON file of the run's settings, listed in the model card.")
    parser.add_argument(
        "--card-info",
        help="Dataset repos: YAML/JSON file with the `dataset_card` fields (pretty_name, source_datasets, llm, "
        "prompt, rewrites_per_source, fallbacks, num_rows); without it the folder's README.md is pushed as is.",
    )


def main(args: argparse.Namespace) -> int:
    from .push import push_dataset, push_model  # imports the models; not needed by the flags of every pushing command

    if args.repo_type == "dataset":
        info = _read_mapping(args.card_info)
        try:
            card = dataset_card(DatasetCardFields(**info)) if info else None
        except TypeError as error:
            raise ConfigError(f"{args.card_info}: {error}") from None
        url = push_dataset(args.folder, args.repo_id, card, private=args.private, revision=args.revision,
                           commit_message=args.commit_message)
    else:
        card = ModelCardFields(base_model=args.base_model, datasets=args.datasets, license=args.license,
                               training=_read_mapping(args.training_config))
        url = push_model(args.folder, args.repo_id, load_eval_records(args.eval_results), card,
                         include_logs=args.include_logs, private=args.private, revision=args.revision,
                         commit_message=args.commit_message)
    print(f"pushed {args.folder} to {args.repo_id}: {url}")
    return 0

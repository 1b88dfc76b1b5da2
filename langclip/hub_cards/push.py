"""Push checkpoint and dataset folders to the Hub with their cards (`langclip push`).

Everything goes through `huggingface_hub`, so ``HF_ENDPOINT`` picks the server and
``HF_TOKEN`` (or a saved login) the credentials; the token is never printed or logged.
A push creates the repo if needed (and the ``revision`` branch) and uploads the folder,
its card and, for langclip model types, the remote code in one commit:

    langclip push out/laclip-demo user/laclip-demo --eval-results outputs/eval/zero-shot.json

Remote code: the source files of the config and model classes (with their relative
imports) are added beside ``config.json``, whose ``auto_map`` points at them, so
``AutoModel.from_pretrained(repo, trust_remote_code=True)`` works without langclip.
"""

from __future__ import annotations

import argparse
import inspect
import json
import re
import sys
from collections.abc import Iterable, Mapping
from fnmatch import fnmatch
from pathlib import Path

import yaml
from huggingface_hub import CommitOperationAdd, HfApi, ModelCard, get_token, hf_hub_download
from huggingface_hub.errors import EntryNotFoundError, HFValidationError
from huggingface_hub.utils import validate_repo_id

from .cards import dataset_card
from .cards import eval_results, load_eval_records, merge_eval_results, model_card

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")
SKIPPED_DIRECTORIES = {".git", ".cache", "__pycache__"}


def hub_token(token: str | None = None) -> str:
    """``token``, else ``HF_TOKEN`` or the saved login; a clear error when there is none."""
    token = token or get_token()
    if not token:
        raise ValueError("no Hugging Face token: set HF_TOKEN or run `hf auth login` (pushing needs write access)")
    return token


def check_repo_id(repo_id: str) -> str:
    """Raise a ValueError unless ``repo_id`` is a valid ``namespace/name``."""
    if repo_id.count("/") != 1:
        raise ValueError(f"invalid repo id {repo_id!r}: expected 'namespace/name', e.g. 'my-user/laclip-vit-b-16'")
    try:
        validate_repo_id(repo_id)
    except HFValidationError as error:
        raise ValueError(f"invalid repo id {repo_id!r}: {error}") from None
    return repo_id


def remote_code_files(config: Mapping) -> dict[str, bytes]:
    """``config.json`` with an ``auto_map``, plus the sources it names, for a langclip model type.

    Empty for model types that transformers itself provides (e.g. ``clip``).
    """
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING
    from transformers.models.auto.modeling_auto import MODEL_MAPPING

    import langclip.modeling  # noqa: F401  (registers the langclip model types)

    if config.get("model_type") not in CONFIG_MAPPING:
        raise ValueError(f"config.json: unknown model_type {config.get('model_type')!r}")
    config_class = CONFIG_MAPPING[config["model_type"]]
    if not config_class.__module__.startswith("langclip."):
        return {}
    files, auto_map = {}, {}
    for auto_class, cls in (("AutoConfig", config_class), ("AutoModel", MODEL_MAPPING[config_class])):
        source = Path(inspect.getsourcefile(cls))
        auto_map[auto_class] = f"{source.stem}.{cls.__name__}"
        files.update(flat_sources(source))
    files["config.json"] = (json.dumps({**config, "auto_map": auto_map}, indent=2, sort_keys=True) + "\n").encode()
    return files


_RELATIVE_IMPORT = re.compile(r"^(\s*from\s+)(\.+)(\w+)(\s+import\b)", re.MULTILINE)


def flat_sources(source: Path) -> dict[str, bytes]:
    """``source`` and every module it imports relatively, by file name, with the imports rewritten
    to ``from .module import`` (remote code lives in one flat folder beside ``config.json``)."""
    files, todo = {}, [source]
    while todo:
        path = todo.pop()
        if path.name in files:
            continue
        text = path.read_text(encoding="utf-8")
        for match in _RELATIVE_IMPORT.finditer(text):
            todo.append(path.parents[len(match.group(2)) - 1] / f"{match.group(3)}.py")
        files[path.name] = _RELATIVE_IMPORT.sub(r"\1.\3\4", text).encode()
    return files


def _folder_files(folder: Path, ignore_patterns: Iterable[str] = ()) -> dict[str, Path]:
    """The files under ``folder`` by repo path, less those matching a glob of ``ignore_patterns``."""
    if not folder.is_dir():
        raise ValueError(f"nothing to push: {folder} is not a folder")
    files = {
        path.relative_to(folder).as_posix(): path
        for path in sorted(folder.rglob("*"))
        if path.is_file() and not SKIPPED_DIRECTORIES & set(path.relative_to(folder).parts)
    }
    files = {name: path for name, path in files.items() if not any(fnmatch(name, p) for p in ignore_patterns)}
    pickles = [name for name in files if name.endswith(PICKLE_SUFFIXES)]
    if pickles:
        raise ValueError(
            f"{folder} holds pickle files ({', '.join(pickles)}); langclip pushes weights as safetensors only: "
            "save with `save_pretrained` (safetensors) and remove them"
        )
    if not files:
        raise ValueError(f"nothing to push: {folder} is empty")
    return files


def push_folder(
    folder: str | Path,
    repo_id: str,
    files: Mapping[str, bytes] | None = None,
    repo_type: str = "model",
    private: bool = False,
    revision: str | None = None,
    token: str | None = None,
    commit_message: str = "Upload with langclip",
    ignore_patterns: Iterable[str] = (),
) -> str:
    """Create ``repo_id`` (and branch ``revision``) if needed, then commit ``folder`` in one commit.

    ``files`` maps repo paths to contents that are added or replace the folder's own
    (the card, remote code); folder files matching a glob of ``ignore_patterns`` stay
    behind. Returns the commit URL.
    """
    check_repo_id(repo_id)
    token = hub_token(token)
    folder_files = _folder_files(Path(folder), ignore_patterns)
    api = HfApi(token=token)
    api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True)
    if revision and revision != "main":
        api.create_branch(repo_id, branch=revision, repo_type=repo_type, exist_ok=True)
    extra = dict(files or {})
    operations = [CommitOperationAdd(path, extra.pop(path, local)) for path, local in folder_files.items()]
    operations += [CommitOperationAdd(path, content) for path, content in extra.items()]
    commit = api.create_commit(
        repo_id, operations, commit_message=commit_message, repo_type=repo_type, revision=revision
    )
    return commit.commit_url


def push_model(
    folder: str | Path,
    repo_id: str,
    eval_records: Iterable[Mapping] = (),
    base_model: str | None = None,
    datasets: Iterable[str] = (),
    license: str = "apache-2.0",
    training: Mapping | None = None,
    private: bool = False,
    revision: str | None = None,
    token: str | None = None,
    commit_message: str = "Upload langclip model",
    ignore_patterns: Iterable[str] = (),
) -> str:
    """Push a checkpoint folder with its model card and remote code; returns the commit URL.

    The card is the folder's README.md with ``eval_records`` merged into its model-index, or,
    without one, `model_card` built from config.json, the records and ``training``.
    """
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise ValueError(f"{folder} has no config.json: is it a checkpoint folder (save_pretrained output)?")
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    if (folder / "README.md").is_file():
        card = ModelCard.load(folder / "README.md")
        card.data.eval_results = merge_eval_results(card.data.eval_results, eval_results(eval_records))
        card.data.model_name = card.data.model_name or repo_id
    else:
        card = model_card(config, repo_id, eval_records, base_model, datasets, license, training)
    files = {**remote_code_files(config), "README.md": str(card).encode()}
    return push_folder(folder, repo_id, files, "model", private, revision, token, commit_message, ignore_patterns)


def update_eval_results(
    repo_id: str,
    eval_records: Iterable[Mapping],
    revision: str | None = None,
    token: str | None = None,
    commit_message: str = "Update eval results with langclip",
) -> str:
    """Merge ``eval_records`` into the model-index of the card on the Hub, in one commit; returns the commit URL."""
    check_repo_id(repo_id)
    token = hub_token(token)
    try:
        readme = hf_hub_download(repo_id, "README.md", revision=revision, token=token)
    except EntryNotFoundError:
        raise ValueError(
            f"{repo_id} has no README.md to add results to: push the model with `langclip push` first"
        ) from None
    card = ModelCard.load(readme)
    card.data.eval_results = merge_eval_results(card.data.eval_results, eval_results(eval_records))
    card.data.model_name = card.data.model_name or repo_id
    api = HfApi(token=token)
    operation = CommitOperationAdd("README.md", str(card).encode())
    return api.create_commit(repo_id, [operation], commit_message=commit_message, revision=revision).commit_url


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
        )  # fmt: skip
    parser.add_argument("--revision", help="With --push-to-hub: branch to push to (created if missing); default main.")
    parser.add_argument(
        "--hub-revision", dest="revision", action=DeprecatedAlias, new="--revision", help="Deprecated spelling of --revision."
    )


def _read_mapping(path: str | None) -> dict | None:
    """A YAML or JSON file holding a mapping (JSON is YAML)."""
    if path is None:
        return None
    content = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    if not isinstance(content, dict):
        raise ValueError(f"{path} must hold a mapping, got {type(content).__name__}")
    return content


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("folder", help="Checkpoint folder (save_pretrained output) or dataset folder to push.")
    parser.add_argument("repo_id", help="Hub repo to push to, as namespace/name (created if missing).")
    parser.add_argument("--repo-type", choices=("model", "dataset"), default="model", help="Kind of Hub repo.")
    parser.add_argument("--private", action="store_true", help="Create the repo as private.")
    parser.add_argument("--revision", help="Branch to push to (created from main if missing); defaults to main.")
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
    if args.repo_type == "dataset":
        info = _read_mapping(args.card_info)
        try:
            files = {"README.md": str(dataset_card(**info)).encode()} if info else None
        except TypeError as error:
            raise ValueError(f"{args.card_info}: {error}") from None
        url = push_folder(
            args.folder, args.repo_id, files, "dataset", args.private, args.revision, commit_message=args.commit_message
        )
    else:
        url = push_model(
            args.folder,
            args.repo_id,
            load_eval_records(args.eval_results),
            args.base_model,
            args.datasets,
            args.license,
            _read_mapping(args.training_config),
            args.private,
            args.revision,
            commit_message=args.commit_message,
        )
    print(f"pushed {args.folder} to {args.repo_id}: {url}")
    return 0

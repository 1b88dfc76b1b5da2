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
import json
import sys
from collections.abc import Iterable, Mapping
from contextlib import contextmanager
from fnmatch import fnmatch
from pathlib import Path

import httpx2
import yaml
from huggingface_hub import CommitOperationAdd, HfApi, ModelCard, constants, get_token, hf_hub_download
from huggingface_hub.errors import HfHubHTTPError, HFValidationError, LocalEntryNotFoundError, RemoteEntryNotFoundError
from huggingface_hub.utils import validate_repo_id

from ..errors import ConfigError, DataError, HubUnreachableError
from ..modeling.auto import remote_code_files
from .cards import dataset_card, load_eval_records, model_card, repo_model_card

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")
SKIPPED_DIRECTORIES = {".git", ".cache", "__pycache__"}
# training logs (`langclip train`'s train_log.jsonl, TensorBoard runs): they hold absolute local paths
LOG_PATTERNS = ("train_log*", "runs/*", "*events.out.tfevents*", "*.log")
# A training run's resumable state (optimizer, RNG: pickles) stays behind when its model folder is pushed.
CHECKPOINT_PATTERNS = ("checkpoint-*", "tmp-checkpoint-*")


def hub_token(token: str | None = None) -> str:
    """``token``, else ``HF_TOKEN`` or the saved login; a clear error when there is none."""
    token = token or get_token()
    if not token:
        raise ConfigError("no Hugging Face token: set HF_TOKEN or run `hf auth login` (pushing needs write access)")
    return token


@contextmanager
def hub_errors():
    """Turn a Hub that cannot be reached into a `HubUnreachableError` that names the endpoint and the fix."""
    try:
        yield
    except (httpx2.TransportError, LocalEntryNotFoundError) as error:
        raise HubUnreachableError(
            f"cannot reach the Hugging Face Hub at {constants.ENDPOINT} ({type(error).__name__}: {error}); "
            "check the network, or HF_ENDPOINT if you use a mirror"
        ) from None


def check_hub_access(repo_id: str, token: str | None = None, repo_type: str = "model") -> str:
    """Fail fast, before a long job: ``repo_id`` is valid, the Hub is reachable, it accepts the token with
    write access, and the repo exists or its namespace is the token's user or one of its orgs. Returns the token."""
    check_repo_id(repo_id)
    token = hub_token(token)
    api = HfApi(token=token)
    with hub_errors():
        try:
            user = api.whoami()
        except HfHubHTTPError as error:
            if error.response is not None and error.response.status_code == 401:
                raise ValueError(
                    f"the Hub at {constants.ENDPOINT} rejected the token (HF_TOKEN or the saved login): "
                    "create a token with write access at https://huggingface.co/settings/tokens"
                ) from None
            raise
        if user.get("auth", {}).get("accessToken", {}).get("role") == "read":
            raise ValueError(f"the token of {user.get('name')} is read-only: pushing to {repo_id} needs a write token")
        namespaces = {user.get("name"), *(org.get("name") for org in user.get("orgs") or [])}
        if repo_id.split("/")[0] not in namespaces and not api.repo_exists(repo_id, repo_type=repo_type):
            raise ValueError(
                f"{user.get('name')} cannot create {repo_id}: the token may create repos under "
                f"{', '.join(sorted(n for n in namespaces if n))} only"
            )
    return token


def check_repo_id(repo_id: str) -> str:
    """Raise a ValueError unless ``repo_id`` is a valid ``namespace/name``."""
    if repo_id.count("/") != 1:
        raise ConfigError(f"invalid repo id {repo_id!r}: expected 'namespace/name', e.g. 'my-user/laclip-vit-b-16'")
    try:
        validate_repo_id(repo_id)
    except HFValidationError as error:
        raise ConfigError(f"invalid repo id {repo_id!r}: {error}") from None
    return repo_id


def _folder_files(folder: Path, ignore_patterns: Iterable[str] = ()) -> dict[str, Path]:
    """The files under ``folder`` by repo path, less those matching a glob of ``ignore_patterns``."""
    if not folder.is_dir():
        raise DataError(f"nothing to push: {folder} is not a folder")
    files = {
        path.relative_to(folder).as_posix(): path
        for path in sorted(folder.rglob("*"))
        if path.is_file() and not SKIPPED_DIRECTORIES & set(path.relative_to(folder).parts)
    }
    files = {name: path for name, path in files.items() if not any(fnmatch(name, p) for p in ignore_patterns)}
    pickles = [name for name in files if name.endswith(PICKLE_SUFFIXES)]
    if pickles:
        raise DataError(
            f"{folder} holds pickle files ({', '.join(pickles)}); langclip pushes weights as safetensors only: "
            "save with `save_pretrained` (safetensors) and remove them"
        )
    if not files:
        raise DataError(f"nothing to push: {folder} is empty")
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
    folder_files = _folder_files(Path(folder), ignore_patterns)
    token = check_hub_access(repo_id, token, repo_type)
    api = HfApi(token=token)
    with hub_errors():
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
    include_logs: bool = False,
) -> str:
    """Push a checkpoint folder with its model card and remote code; returns the commit URL.

    The card is the folder's README.md rebuilt for ``repo_id`` with ``eval_records`` merged in
    (`repo_model_card`), or, without one, `model_card` built from config.json, the records and
    ``training``. Checkpoints of the run (`CHECKPOINT_PATTERNS`) stay behind, and so do training logs
(`LOG_PATTERNS`: they hold local paths) unless ``include_logs``.
    """
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise DataError(f"{folder} has no config.json: is it a checkpoint folder (save_pretrained output)?")
    if not any(folder.glob("*.safetensors")):
        raise DataError(f"{folder} has no weights (model.safetensors, or shards with their index): push the folder "
                        "save_pretrained wrote, or `langclip convert` a checkpoint first")
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    config.pop("auto_map", None)  # written afresh by remote_code_files
    if (folder / "README.md").is_file():
        card = repo_model_card(ModelCard.load(folder / "README.md"), config, repo_id, eval_records, base_model,
                               datasets, license)
    else:
        card = model_card(config, repo_id, eval_records, base_model, datasets, license, training)
    files = {**remote_code_files(config), "README.md": str(card).encode()}
    ignore_patterns = [*ignore_patterns, *CHECKPOINT_PATTERNS, *(() if include_logs else LOG_PATTERNS)]
    return push_folder(folder, repo_id, files, "model", private, revision, token, commit_message, ignore_patterns)


def update_eval_results(
    repo_id: str,
    eval_records: Iterable[Mapping],
    revision: str | None = None,
    token: str | None = None,
    commit_message: str = "Update eval results with langclip",
) -> str:
    """Merge ``eval_records`` into the model-index of the card on the Hub, in one commit; returns the commit URL."""
    token = check_hub_access(repo_id, token)
    with hub_errors():
        try:
            readme = hf_hub_download(repo_id, "README.md", revision=revision, token=token)
        except RemoteEntryNotFoundError:
            raise DataError(
                f"{repo_id} has no README.md to add results to: push the model with `langclip push` first"
            ) from None
        config = json.loads(Path(hf_hub_download(repo_id, "config.json", revision=revision, token=token)).read_text())
        card = repo_model_card(ModelCard.load(readme), config, repo_id, eval_records)
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
    if args.repo_type == "dataset":
        info = _read_mapping(args.card_info)
        try:
            files = {"README.md": str(dataset_card(**info)).encode()} if info else None
        except TypeError as error:
            raise ConfigError(f"{args.card_info}: {error}") from None
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
            include_logs=args.include_logs,
        )
    print(f"pushed {args.folder} to {args.repo_id}: {url}")
    return 0

"""Push checkpoint and dataset folders to the Hub with their cards (the `langclip push` command is `command`).

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

import json
import tempfile
from collections.abc import Iterable, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path

import httpx2
from huggingface_hub import CommitOperationAdd, DatasetCard, HfApi, ModelCard, constants, get_token, hf_hub_download
from huggingface_hub.errors import HfHubHTTPError, HFValidationError, LocalEntryNotFoundError, RemoteEntryNotFoundError
from huggingface_hub.utils import validate_repo_id

from ..errors import ConfigError, DataError, HubUnreachableError
from ..modeling.auto import remote_code_files
from .cards import ModelCardFields, model_card, repo_model_card

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
                raise ConfigError(
                    f"the Hub at {constants.ENDPOINT} rejected the token (HF_TOKEN or the saved login): "
                    "create a token with write access at https://huggingface.co/settings/tokens"
                ) from None
            raise
        if user.get("auth", {}).get("accessToken", {}).get("role") == "read":
            raise ConfigError(f"the token of {user.get('name')} is read-only: pushing to {repo_id} needs a write token")
        namespaces = {user.get("name"), *(org.get("name") for org in user.get("orgs") or [])}
        if repo_id.split("/")[0] not in namespaces and not api.repo_exists(repo_id, repo_type=repo_type):
            raise ConfigError(
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


@dataclass
class HubCommit:
    """How a push commits: the kind of repo, whether a new repo is private, the branch (``revision``, created
    from main if missing), the token (else ``HF_TOKEN`` or the saved login) and the commit message."""

    repo_type: str = "model"
    private: bool = False
    revision: str | None = None
    token: str | None = None
    commit_message: str = "Upload with langclip"


def push_folder(
    folder: str | Path,
    repo_id: str,
    files: Mapping[str, bytes | Path] | None = None,
    ignore_patterns: Iterable[str] = (),
    **commit,
) -> str:
    """Create ``repo_id`` (and its branch) if needed, then commit ``folder`` in one commit; returns the commit URL.

    ``files`` maps repo paths to contents (bytes, or a local file) that are added or replace the folder's own
    (the card, remote code); folder files matching a glob of ``ignore_patterns`` stay behind. ``commit`` holds
    `HubCommit` fields.
    """
    commit = HubCommit(**commit)
    check_repo_id(repo_id)
    folder_files = _folder_files(Path(folder), ignore_patterns)
    token = check_hub_access(repo_id, commit.token, commit.repo_type)
    api = HfApi(token=token)
    with hub_errors():
        api.create_repo(repo_id, repo_type=commit.repo_type, private=commit.private, exist_ok=True)
        if commit.revision and commit.revision != "main":
            api.create_branch(repo_id, branch=commit.revision, repo_type=commit.repo_type, exist_ok=True)
        extra = dict(files or {})
        operations = [CommitOperationAdd(path, extra.pop(path, local)) for path, local in folder_files.items()]
        operations += [CommitOperationAdd(path, content) for path, content in extra.items()]
        result = api.create_commit(repo_id, operations, commit_message=commit.commit_message,
                                   repo_type=commit.repo_type, revision=commit.revision)
    return result.commit_url


PARQUET_SHARD_BYTES = 500 << 20  # `Dataset.push_to_hub`'s default shard size


def push_dataset(folder: str | Path, repo_id: str, card: DatasetCard | None = None, **commit) -> str:
    """Push a dataset folder to the dataset repo ``repo_id`` in one commit; returns the commit URL. The one
    dataset push: `langclip push --repo-type dataset` and the `rewrite` and `differences` jobs' ``--push-to-hub``.

    ``card`` replaces the folder's README.md. A `save_to_disk` folder (a ``state.json`` beside its Arrow files)
    goes up as Parquet shards ``data/train-*.parquet`` instead of the Arrow files, so `load_dataset(repo_id)`
    reads it; its other files (card, summary, text files) go up as they are. ``commit`` holds `HubCommit`
    fields but ``repo_type``.
    """
    folder = Path(folder)
    files = {"README.md": str(card).encode()} if card is not None else {}
    commit = {"commit_message": "Upload dataset with langclip", **commit, "repo_type": "dataset"}
    with tempfile.TemporaryDirectory() as parquet_dir:
        ignore_patterns = ()
        if (folder / "state.json").is_file():
            from datasets import load_from_disk

            dataset = load_from_disk(str(folder))
            shards = max(1, -(-dataset.data.nbytes // PARQUET_SHARD_BYTES))
            for index in range(shards):
                name = f"data/train-{index:05d}-of-{shards:05d}.parquet"
                local = Path(parquet_dir) / Path(name).name
                dataset.shard(shards, index, contiguous=True).to_parquet(str(local))
                files[name] = local
            ignore_patterns = ("*.arrow", "state.json", "dataset_info.json")
        return push_folder(folder, repo_id, files, ignore_patterns, **commit)


def push_model(
    folder: str | Path,
    repo_id: str,
    eval_records: Iterable[Mapping] = (),
    card: ModelCardFields | None = None,
    include_logs: bool = False,
    ignore_patterns: Iterable[str] = (),
    **commit,
) -> str:
    """Push a checkpoint folder with its model card and remote code; returns the commit URL.

    The card is the folder's README.md rebuilt for ``repo_id`` with ``eval_records`` merged in
    (`repo_model_card`, with ``card``'s base model, datasets and license), or, without one, `model_card`
    built from config.json, the records and ``card``. Checkpoints of the run (`CHECKPOINT_PATTERNS`) stay
    behind, and so do training logs (`LOG_PATTERNS`: they hold local paths) unless ``include_logs``.
    ``commit`` holds `HubCommit` fields but ``repo_type``.
    """
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise DataError(f"{folder} has no config.json: is it a checkpoint folder (save_pretrained output)?")
    if not any(folder.glob("*.safetensors")):
        raise DataError(f"{folder} has no weights (model.safetensors, or shards with their index): push the folder "
                        "save_pretrained wrote, or `langclip convert` a checkpoint first")
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    config.pop("auto_map", None)  # written afresh by remote_code_files
    card = card or ModelCardFields()
    if (folder / "README.md").is_file():
        readme = repo_model_card(ModelCard.load(folder / "README.md"), config, repo_id, eval_records,
                                 card.base_model, card.datasets, card.license)
    else:
        readme = model_card(config, repo_id, eval_records, **vars(card))
    files = {**remote_code_files(config), "README.md": str(readme).encode()}
    ignore_patterns = [*ignore_patterns, *CHECKPOINT_PATTERNS, *(() if include_logs else LOG_PATTERNS)]
    commit = {"commit_message": "Upload langclip model", **commit, "repo_type": "model"}
    return push_folder(folder, repo_id, files, ignore_patterns, **commit)


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

"""Load image-text data into the library's records: columns ``image``, ``caption``, ``id`` and, when present, ``rewrites``.

Accepted inputs (`load_image_text_dataset` picks by the path):

- a ``.csv`` file: LaCLIP's format, a header row then ``relpath,caption`` rows, plus one
  augmented-text file per rewrite source (one line per CSV row) -> ``rewrites`` and
  ``rewrite_sources`` (the file names);
- ``.tar`` shards (a folder of them, a glob, or a list): webdataset/img2dataset output, parsed
  by `datasets`' own webdataset builder (`WebDataset._get_pipeline_from_tar` over `ArchiveIterable`,
  so local, ``hf://`` and ``https://`` shards read alike). A sample is the files sharing a key:
  the image (``jpg|jpeg|png|webp|...``), ``txt`` and/or ``json`` whose keys (``caption``,
  ``rewrites``, ``rewrite_sources``, ``synthetic_caption``, ...) become columns; ``id`` is the
  key. A sidecar ``<shard>.rewrites.parquet`` (``id`` + columns, `write_sidecars`) is joined
  by key (`load_shards`; `langclip.training.data.ShardStream` streams them shuffled, resampled
  and split across processes). The builder itself (``load_dataset("webdataset")``) is not used:
  it nests the json in one struct column and a truncated tar either ends it silently or raises
  without the shard's name, whereas `shard_records` names the shard and counts the samples lost;
- a folder written by `Dataset.save_to_disk`;
- anything else `datasets.load_dataset` reads: a Hub dataset id, an imagefolder with
  ``metadata.jsonl``, a folder of parquet/json files.

Images are kept undecoded (``datasets.Image(decode=False)``) and decoded by the image
transform, so a corrupt file is reported by name (see `langclip.processing.transforms.decode_image`).
Input that cannot be read (a file that is not UTF-8, a malformed ``metadata.jsonl`` line, an
empty dataset, a caption that is not a string) is a `DataError` naming the file, line, row or column.
"""

from __future__ import annotations

import csv
import glob
import json
import logging
import os
import re
import tarfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from datasets import Dataset, Features, IterableDataset, Value
from datasets.packaged_modules.webdataset.webdataset import WebDataset
from datasets.utils.file_utils import ArchiveIterable, xexists, xopen

from ..errors import ConfigError, DataError

logger = logging.getLogger(__name__)
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff")
SIDECAR_SUFFIX = ".rewrites.parquet"
RECORD_FEATURES = Features({"image": datasets.Image(decode=False), "caption": Value("string"), "id": Value("string")})


def check_utf8(path: str | os.PathLike, what: str = "file") -> None:
    """A `DataError` naming the file, line and byte offset of the first bytes of ``path`` that are not UTF-8.

    Reads 1 MiB at a time (memory flat in the file size); a character cut by a block boundary is carried over.
    """
    offset, line, carry = 0, 1, b""
    with open(path, "rb") as handle:
        while True:
            block = handle.read(1 << 20)
            data, carry = carry + block, b""
            try:
                data.decode("utf-8")
            except UnicodeDecodeError as error:
                if not (block and error.reason == "unexpected end of data"):
                    line += data[: error.start].count(b"\n")
                    raise DataError(f"{what} {path} is not UTF-8: line {line}, byte {offset + error.start} "
                                    f"({data[error.start:error.start + 1]!r}); re-save it as UTF-8 "
                                    "(e.g. `iconv -f latin1 -t utf-8`)") from None
                data, carry = data[: error.start], data[error.start:]
            line += data.count(b"\n")
            offset += len(data)
            if not block:
                return


def load_laclip_csv(csv_path: str, augmented_files: Sequence[str] = (), image_root: str | None = None) -> Dataset:
    """LaCLIP CSV (header, then ``relpath,caption``) plus per-source augmented-text files.

    Paths are relative to ``image_root`` (default: the CSV's folder). Row i's ``rewrites``
    are line i of each augmented file, ``rewrite_sources`` the files' stems.
    """
    image_root = image_root or os.path.dirname(os.path.abspath(csv_path))
    check_utf8(csv_path, "CSV")
    with open(csv_path, newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))[1:]
    if not rows:
        raise DataError(f"CSV {csv_path} has no rows after its header; expected 'relpath,caption' rows")
    for number, row in enumerate(rows, start=2):
        if len(row) < 2 or not row[0] or not row[1].strip():
            raise DataError(f"{csv_path}, line {number}: expected 'relpath,caption', got {row!r}")
    sources, columns = [], []
    for path in augmented_files:
        check_utf8(path, "augmented-text file")
        with open(path, encoding="utf-8") as handle:
            lines = handle.read().splitlines()
        if len(lines) != len(rows):
            raise DataError(f"{path} has {len(lines)} lines but {csv_path} has {len(rows)} rows; they must match")
        sources.append(os.path.splitext(os.path.basename(path))[0])
        columns.append(lines)
    records = {
        "image": [os.path.join(image_root, row[0]) for row in rows],
        "caption": [row[1] for row in rows],
        "id": [str(i) for i in range(len(rows))],
    }
    features = RECORD_FEATURES.copy()
    if columns:
        records["rewrites"] = [list(texts) for texts in zip(*columns)]
        records["rewrite_sources"] = [sources] * len(rows)
        features["rewrites"] = datasets.List(Value("string"))
        features["rewrite_sources"] = datasets.List(Value("string"))
    return Dataset.from_dict(records, features=features)


def webdataset_shards(path: str | Sequence[str]) -> list[str]:
    """Shard paths from a folder of ``.tar`` files, a glob, or a list."""
    if not isinstance(path, str):
        return list(path)
    shards = sorted(glob.glob(os.path.join(path, "*.tar") if os.path.isdir(path) else path))
    if not shards:
        raise FileNotFoundError(f"no .tar shards at {path}")
    return shards


class ShardError(ValueError):
    """A truncated or corrupt shard; the message names it and counts the samples lost."""


def shard_stem(shard: str) -> str:
    """``dir/00012.tar`` -> ``dir/00012``: the prefix of a shard's sidecar and img2dataset's stats file."""
    return re.sub(r"\.tar(\.[a-z0-9]+)?$", "", shard)


def sidecar_path(shard: str) -> str:
    """Where a shard's rewrites live: ``<stem>.rewrites.parquet`` next to it (one row per sample key, column ``id``)."""
    return shard_stem(shard) + SIDECAR_SUFFIX


def read_sidecar(shard: str) -> dict[str, dict] | None:
    """The shard's sidecar rows keyed by ``id`` (the sample key), or None when it has no sidecar."""
    path = sidecar_path(shard)
    if not xexists(path):
        return None
    with xopen(path, "rb") as handle:
        table = pq.read_table(handle)
    if "id" not in table.column_names:
        raise DataError(f"{path}: a sidecar needs an 'id' column holding the sample keys; columns: {table.column_names}")
    return {row.pop("id"): row for row in table.to_pylist()}


def expected_samples(shard: str, sidecar: dict | None) -> int | None:
    """Samples a shard should hold: img2dataset's ``<stem>_stats.json`` "successes", else the sidecar's rows."""
    stats = shard_stem(shard) + "_stats.json"
    if xexists(stats):
        with xopen(stats, "r") as handle:
            return int(json.load(handle)["successes"])
    return None if sidecar is None else len(sidecar)


def _shard_record(shard: str, sample: dict, caption_column: str, sidecar: dict | None) -> dict:
    """One sample of `WebDataset._get_pipeline_from_tar` (fields by extension, ``.txt``/``.json`` decoded) -> a record."""
    key = sample["__key__"]
    image = next((ext for ext in sample if ext.rsplit(".", 1)[-1].lower() in IMAGE_EXTENSIONS), None)
    record = dict(sample.get("json") or {})
    if "txt" in sample and "caption" not in record:
        record["caption"] = sample["txt"].strip()
    if not record.get(caption_column):
        raise DataError(f"{shard}: sample {key!r} has no caption (.txt or .json {caption_column!r}); "
                        f"files: {sorted(k for k in sample if not k.startswith('__'))}")
    if sidecar is not None:
        if key not in sidecar:
            raise DataError(f"{sidecar_path(shard)} has no row for sample {key!r} of {shard}; rerun `langclip "
                            "rewrite` on the shards or remove the sidecar")
        record.update(sidecar[key])
    record["image"] = {"bytes": sample.get(image), "path": f"{shard}/{key}.{image or '?'}"}
    record["id"] = key
    return record


def shard_records(shard: str, caption_column: str = "caption", skip_bad_samples: bool = False):
    """Records of one shard, read with `datasets`' webdataset parser; a truncated shard raises `ShardError`
    (with ``skip_bad_samples``: one marker row ``{"lost_samples": n}`` instead, counted by the collators).

    Truncation inside a file is always caught; a shard cut between files is caught by comparing the samples
    read with `expected_samples` (img2dataset's stats file or the sidecar). Without either, a mid-file cut
    counts 1 lost sample (the one being read).
    """
    sidecar = read_sidecar(shard)
    samples = iter(WebDataset._get_pipeline_from_tar(shard, ArchiveIterable.from_urlpath(shard)))
    read, error = 0, None
    while True:
        try:  # only the reading: the yield stays outside, so closing the generator is not caught here
            sample = next(samples)
        except StopIteration:
            break
        except (tarfile.TarError, EOFError, OSError, zlib.error) as raised:
            error = raised
            break
        yield _shard_record(shard, sample, caption_column, sidecar)
        read += 1
    expected = expected_samples(shard, sidecar)
    if error is None and (expected is None or read >= expected):
        return
    lost = expected - read if expected is not None else 1
    cause = f"unreadable after {read} samples ({error})" if error else f"ends after {read} of {expected} samples"
    message = f"shard {shard} is truncated or corrupt: {cause}; {lost} samples lost"
    if not skip_bad_samples:
        raise ShardError(message + "; pass --skip-bad-samples to train on without them")
    logger.warning(message)
    yield {"lost_samples": lost, "id": f"{shard} (lost)"}


def iter_shards(shards: list[str], caption_column: str = "caption", skip_bad_samples: bool = False):
    """Records of ``shards`` in the given order (the `IterableDataset.from_generator` generator: one shard per job)."""
    for shard in shards:
        yield from shard_records(shard, caption_column, skip_bad_samples)


def shard_features(shard: str, caption_column: str = "caption", skip_bad_samples: bool = False) -> Features:
    """The records' features, resolved from the first sample of ``shard`` (its ``.json`` keys and the sidecar's
    columns); ``rewrites``/``rewrite_sources`` are string lists, so a streamed dataset's columns are known up front.
    Later samples are read with these features: a key the first sample lacks is dropped, a missing one is None."""
    first = next(shard_records(shard, caption_column, skip_bad_samples=False))
    first = {k: v for k, v in first.items() if k not in ("image", "id")}
    features = Features.from_arrow_schema(pa.Table.from_pylist([first]).schema) if first else Features()
    for column in ("rewrites", "rewrite_sources"):
        if column in features:
            features[column] = datasets.List(Value("string"))
    features = Features({**RECORD_FEATURES, **features})
    if skip_bad_samples:
        features["lost_samples"] = Value("int64")
    return features


@dataclass(frozen=True)
class Shards:
    """Tar shards with their records' features (`shard_features`) and the renames to the library's column names."""

    paths: tuple[str, ...]
    features: Features
    caption_column: str = "caption"
    renames: tuple[tuple[str, str], ...] = ()
    skip_bad_samples: bool = False

    def dataset(self, order: Sequence[str] | None = None) -> IterableDataset:
        """The records of the shards in ``order`` (default: as given), one generator job per shard."""
        dataset = IterableDataset.from_generator(
            iter_shards, features=self.features,
            gen_kwargs={"shards": list(self.paths if order is None else order), "caption_column": self.caption_column,
                        "skip_bad_samples": self.skip_bad_samples})
        return dataset.rename_columns(dict(self.renames)) if self.renames else dataset


def load_shards(path: str | Sequence[str], caption_column: str = "caption", rewrites_column: str = "rewrites",
                image_column: str = "image", skip_bad_samples: bool = False) -> Shards:
    """The shards at ``path`` whose records are named as `standardize_columns` names them."""
    shards = webdataset_shards(path)
    features = shard_features(shards[0], caption_column, skip_bad_samples)
    if image_column != "image":
        raise ConfigError(f"--image-column {image_column!r}: in shards, the image is the file with an image "
                          f"extension ({', '.join(IMAGE_EXTENSIONS[:4])}, ...); drop the flag")
    if caption_column not in features:
        raise DataError(f"the caption column {caption_column!r} is not in the shards' samples; columns: "
                        f"{list(features)} (set --caption-column)")
    renames = tuple((old, new) for old, new in ((caption_column, "caption"), (rewrites_column, "rewrites"))
                    if old != new and old in features)
    return Shards(tuple(shards), features, caption_column, renames, skip_bad_samples)


def is_webdataset(path) -> bool:
    """Whether ``path`` names tar shards: a list, a glob, a ``.tar`` file or a folder holding some."""
    if not isinstance(path, str):
        return True
    if os.path.isdir(path):
        return bool(glob.glob(os.path.join(path, "*.tar")))
    return path.endswith(".tar") or "*" in path


def shard_captions(path: str | Sequence[str]) -> Dataset:
    """Every sample's ``caption``, ``id`` (its key) and ``shard``: the input of `langclip rewrite` over shards."""
    rows = {"caption": [], "id": [], "shard": []}
    for shard in webdataset_shards(path):
        for sample in WebDataset._get_pipeline_from_tar(shard, ArchiveIterable.from_urlpath(shard)):
            record = _shard_record(shard, sample, "caption", None)
            rows["caption"].append(record["caption"])
            rows["id"].append(record["id"])
            rows["shard"].append(shard)
    return Dataset.from_dict(rows)


def write_sidecars(dataset: Dataset, columns: Sequence[str] = ("rewrites", "rewrite_sources")) -> list[str]:
    """One ``<shard>.rewrites.parquet`` per shard of ``dataset`` (rows with ``shard``, ``id`` and ``columns``, as
    `shard_captions` + the rewrite job make them); returns their paths. Image bytes are never rewritten.

    Rows are sorted by shard (an Arrow sort) and streamed in batches, so each sidecar is written once.
    """
    missing = [column for column in ("shard", "id", *columns) if column not in dataset.column_names]
    if missing:
        raise DataError(f"write_sidecars needs the column(s) {missing}; columns: {dataset.column_names}")
    rows = dataset.select_columns(["shard", "id", *columns]).sort("shard").with_format("arrow")
    paths, current, parts = [], None, []
    for batch in rows.iter(10_000):
        shards = batch["shard"].to_pylist()
        start = 0
        for end in range(1, len(shards) + 1):
            if end < len(shards) and shards[end] == shards[start]:
                continue
            if current is not None and shards[start] != current:
                paths.append(_write_sidecar(current, parts))
                parts = []
            current = shards[start]
            parts.append(batch.slice(start, end - start))
            start = end
    if current is not None:
        paths.append(_write_sidecar(current, parts))
    return paths


def _write_sidecar(shard: str, parts: list[pa.Table]) -> str:
    path = sidecar_path(shard)
    pq.write_table(pa.concat_tables(parts).drop_columns(["shard"]), path)
    return path


def load_split(path: str, split: str = "train", config: str | None = None, streaming: bool = False,
               require_split: bool = False):
    """One split of a `save_to_disk` folder (a `Dataset` folder is its own split), a Hub id or a data folder.

    Only ``split`` is loaded; a missing split is an error that names the ones there are. With
    ``require_split``, a `Dataset` folder (which has no splits) is an error instead of itself.
    """
    folder = Path(path)
    if (folder / "state.json").is_file():
        if require_split:
            check_split_choosable(path, split)
        return datasets.load_from_disk(path)
    if (folder / "dataset_dict.json").is_file():
        data = datasets.load_from_disk(path)
        if split not in data:
            raise DataError(f"dataset {path} has no split {split!r}; it has {', '.join(data)}")
        return data[split]
    check_metadata_jsonl(folder)
    try:
        return datasets.load_dataset(path, config, split=split, streaming=streaming)
    except FileNotFoundError as error:  # also datasets' DatasetNotFoundError
        raise DataError(f"no dataset at {path}: not a local file or folder, nor a Hub dataset id ({error})") from None
    except ValueError as error:
        if "Unknown split" not in str(error) and "Bad split" not in str(error):
            raise
        raise DataError(f"dataset {path} has no split {split!r} ({error})") from None


def check_split_choosable(path: str, split: str) -> None:
    """A `DataError` when ``split`` is asked of ``path``, a `save_to_disk` `Dataset` folder: it has no splits."""
    if (Path(path) / "state.json").is_file():
        raise DataError(f"dataset {path} is a single Dataset folder without splits, so split {split!r} cannot be "
                        "chosen; leave out the split to use all of it, or save a DatasetDict with that split")


def check_metadata_jsonl(folder: Path) -> None:
    """A `DataError` naming the file and line of the first ``metadata.jsonl`` line of an imagefolder that is not
    a JSON object (the `datasets` imagefolder loader reports a bare JSON error)."""
    for path in sorted(folder.rglob("metadata.jsonl")) if folder.is_dir() else []:
        check_utf8(path, "metadata file")
        with open(path, encoding="utf-8") as handle:
            lines = handle.read().splitlines()
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise DataError(f"{path}, line {number}: not valid JSON ({error}): {line[:80]!r}") from None
            if not isinstance(record, dict):
                raise DataError(f"{path}, line {number}: expected a JSON object such as "
                                f"{{\"file_name\": ..., \"caption\": ...}}, got {line[:80]!r}")


def load_image_text_dataset(
    path: str | Sequence[str],
    split: str = "train",
    image_column: str = "image",
    caption_column: str = "caption",
    rewrites_column: str = "rewrites",
    augmented_files: Sequence[str] = (),
    image_root: str | None = None,
    streaming: bool = False,
) -> Dataset | IterableDataset:
    """Any accepted input (see the module docstring) as records with ``image``, ``caption``, ``id`` (+ ``rewrites``)."""
    if isinstance(path, str) and path.endswith(".csv"):
        dataset = load_laclip_csv(path, augmented_files, image_root)
    elif is_webdataset(path):
        return load_shards(path, caption_column, rewrites_column, image_column).dataset()
    else:
        dataset = load_split(path, split, streaming=streaming)
    if isinstance(dataset, Dataset) and len(dataset) == 0:
        raise DataError(f"dataset {path} (split {split!r}) has no rows: nothing to train on")
    return standardize_columns(dataset, image_column, caption_column, rewrites_column)


def standardize_columns(dataset, image_column="image", caption_column="caption", rewrites_column="rewrites"):
    """Rename the user's columns to ``image``/``caption``/``rewrites``, keep images undecoded, add ``id`` if absent."""
    columns = dataset.column_names or list(dataset.features or {})
    for role, column in (("image", image_column), ("caption", caption_column)):
        if column not in columns:
            raise DataError(f"the {role} column {column!r} is not in the dataset; columns: {columns} "
                            f"(set --{role}-column)")
    renames = {old: new for old, new in [(image_column, "image"), (caption_column, "caption"),
                                         (rewrites_column, "rewrites")] if old != new and old in columns}
    if renames:
        dataset = dataset.rename_columns(renames)
    if isinstance(dataset.features["image"], datasets.Image):
        dataset = dataset.cast_column("image", datasets.Image(decode=False))
    if "id" not in columns:  # with the features spelled out, so that a streamed dataset keeps its column names
        features = Features({**dataset.features, "id": Value("string")}) if dataset.features else None
        dataset = dataset.map(lambda _, index: {"id": str(index)}, with_indices=True, features=features)
    return dataset


_BUILDERS = {".csv": "csv", ".tsv": "csv", ".txt": "text", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}


def load_rows(path: str, split: str = "train") -> Dataset:
    """The rows of a table file (CSV, TSV, one-line-per-row text as column ``text``, JSON(L), Parquet) or
    ``split`` of a dataset folder or Hub id (`load_split`)."""
    local = Path(path)
    if not local.is_file():
        return load_split(path, split)
    builder = _BUILDERS.get(local.suffix.lower())
    if builder is None:
        raise DataError(f"{path}: unknown caption file type {local.suffix!r}; expected one of {sorted(_BUILDERS)}")
    if builder != "parquet":  # text formats; Parquet is binary and carries its own encoding
        check_utf8(local, "caption file")
    if local.stat().st_size == 0:
        raise DataError(f"caption file {path} is empty: give a file with one caption per line (or per row)")
    kwargs = {"delimiter": "\t"} if local.suffix.lower() == ".tsv" else {}
    if builder in ("text", "csv"):
        kwargs["encoding"] = "utf-8-sig"  # a byte-order mark (as Windows editors write) is not part of the first row
    return datasets.load_dataset(builder, data_files=str(local), split="train", **kwargs)


def load_captions(path: str, caption_column: str = "caption", id_column: str = "id", split: str = "train") -> Dataset:
    """Captions from a Hub id, a dataset folder, a LaCLIP CSV, a one-caption-per-line text file, JSON(L), Parquet
    or tar shards (`shard_captions`: ids are the sample keys, ``shard`` the tar each came from).

    A text file's lines become ``caption_column``. Without an ``id_column``, the row index
    (as a string) is added as the id.
    """
    if is_webdataset(path):
        dataset = shard_captions(path)
        return dataset if caption_column == "caption" else dataset.rename_column("caption", caption_column)
    dataset = load_rows(path, split)
    if Path(path).suffix.lower() == ".txt" and Path(path).is_file():
        dataset = dataset.rename_column("text", caption_column)
    if id_column not in dataset.column_names:
        dataset = dataset.add_column(id_column, [str(i) for i in range(len(dataset))])  # in memory: no cache file
    return dataset


def check_caption_column(dataset, where: str, column: str = "caption", allow_missing: bool = False) -> None:
    """A `DataError` when ``column`` of ``dataset`` does not hold strings (naming its type), or, unless
    ``allow_missing`` (--skip-bad-samples skips such rows), when a row's caption is null or empty (naming the row
    and its id). Uses Arrow compute: no row is decoded. Streamed data is checked row by row by the collator."""
    feature = (dataset.features or {}).get(column)
    if isinstance(feature, Value) and feature.dtype not in ("string", "large_string"):
        raise DataError(f"{where}: column {column!r} holds {feature.dtype} values, not text captions; set "
                        "--caption-column to the column of captions, or convert it to strings")
    if allow_missing or not isinstance(dataset, Dataset) or not isinstance(feature, Value):
        return
    values = dataset.data.column(column)
    bad = pc.or_kleene(pc.is_null(values), pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(values)), 0))
    row = pc.index(pc.fill_null(bad, True), True).as_py()
    if row >= 0:
        ident = dataset.data.column("id")[row].as_py() if "id" in dataset.column_names else row
        raise DataError(f"{where}: column {column!r}, row {row} (id {ident!r}) is {values[row].as_py()!r}, not a "
                        "non-empty caption; fix the row or pass --skip-bad-samples to skip and count such rows")


def check_captions(dataset: Dataset, caption_column: str = "caption", id_column: str = "id") -> None:
    """Raise a `DataError` naming the problem: a missing column, no rows, a caption that is not a
    non-empty string (with its row and id), or a repeated id."""
    for column in (caption_column, id_column):
        if column not in dataset.column_names:
            raise DataError(f"no column {column!r} in the input (columns: {dataset.column_names})")
    if len(dataset) == 0:
        raise DataError("the input dataset is empty: nothing to rewrite")
    seen, row = set(), 0
    for batch in dataset.select_columns([caption_column, id_column]).iter(10_000):
        for caption, id_ in zip(batch[caption_column], batch[id_column]):
            if not isinstance(caption, str) or not caption.strip():
                raise DataError(
                    f"column {caption_column!r}, row {row} (id {id_!r}): expected a non-empty string, got {caption!r}"
                )
            if id_ in seen:
                raise DataError(f"column {id_column!r}, row {row}: id {id_!r} is repeated; ids must be unique")
            seen.add(id_)
            row += 1

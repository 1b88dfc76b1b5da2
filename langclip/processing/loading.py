"""Load image-text data into the library's records: columns ``image``, ``caption``, ``id`` and, when present, ``rewrites``.

Accepted inputs (`load_image_text_dataset` picks by the path):

- a ``.csv`` file: LaCLIP's format, a header row then ``relpath,caption`` rows, plus one
  augmented-text file per rewrite source (one line per CSV row) -> ``rewrites`` and
  ``rewrite_sources`` (the file names);
- ``.tar`` shards (a folder of them, a glob, or a list): webdataset/img2dataset output with their rewrite
  sidecars, read by `langclip.processing.shards`;
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
import json
import os
from collections.abc import Sequence
from pathlib import Path

import datasets
import pyarrow.compute as pc
from datasets import Dataset, Features, IterableDataset, Value

from ..errors import DataError
from .shards import IMAGE_EXTENSIONS, RECORD_FEATURES, is_webdataset, load_shards, shard_captions



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

    A first line that names an image (an image file extension, or a file under ``image_root``) is a missing header,
    a `DataError`: it would be dropped as the header. Paths are relative to ``image_root`` (default: the CSV's folder). Row i's ``rewrites``
    are line i of each augmented file, ``rewrite_sources`` the files' stems.
    """
    image_root = image_root or os.path.dirname(os.path.abspath(csv_path))
    check_utf8(csv_path, "CSV")
    with open(csv_path, newline="", encoding="utf-8") as handle:
        header, *rows = list(csv.reader(handle)) or [[]]
    first = header[0] if header else ""
    if first.rsplit(".", 1)[-1].lower() in IMAGE_EXTENSIONS or os.path.isfile(os.path.join(image_root, first)):
        raise DataError(f"CSV {csv_path}: line 1 ({','.join(header)!r}) is an image row, not a header; the first line "
                        "of a LaCLIP CSV is its header (e.g. 'relpath,caption') and is not read as data: add one")
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


def input_kind(path: str | Sequence[str]) -> str:
    """The reader `load_image_text_dataset` picks for ``path``: ``csv``, ``shards``, ``dataset`` (a `save_to_disk`
    Dataset folder: its own split), ``dataset-dict`` (a `save_to_disk` DatasetDict folder) or ``load-dataset`` (a
    Hub id or a data folder, read by `datasets.load_dataset`)."""
    if isinstance(path, str) and path.endswith(".csv"):
        return "csv"
    if is_webdataset(path):
        return "shards"
    if (Path(path) / "state.json").is_file():
        return "dataset"
    return "dataset-dict" if (Path(path) / "dataset_dict.json").is_file() else "load-dataset"


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
    kind = input_kind(path)
    if kind == "csv":
        dataset = load_laclip_csv(path, augmented_files, image_root)
    elif kind == "shards":
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

    A text file's lines become ``caption_column``; a CSV or TSV file's first line is its header, which must name
    ``caption_column`` (else a `DataError`: a file without a header would lose its first row). Without an
    ``id_column``, the row index (as a string) is added as the id.
    """
    if is_webdataset(path):
        dataset = shard_captions(path)
        return dataset if caption_column == "caption" else dataset.rename_column("caption", caption_column)
    dataset = load_rows(path, split)
    suffix = Path(path).suffix.lower() if Path(path).is_file() else None
    if suffix == ".txt":
        dataset = dataset.rename_column("text", caption_column)
    if suffix in (".csv", ".tsv") and caption_column not in dataset.column_names:
        raise DataError(f"{path}: its first line, read as the header, names no column {caption_column!r} (it has "
                        f"{dataset.column_names}); a {suffix[1:].upper()} file's first line must be a header naming "
                        "its columns (e.g. 'id,caption'): add one, or set --caption-column")
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

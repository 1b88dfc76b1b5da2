"""Webdataset tar shards (img2dataset output) as records, and the rewrite sidecars joined to them.

A sample is the files sharing a key: the image (``jpg|jpeg|png|webp|...``), ``txt`` and/or ``json`` whose keys
(``caption``, ``rewrites``, ``rewrite_sources``, ``synthetic_caption``, ...) become columns; ``id`` is the key.
Shards are parsed by `datasets`' own webdataset builder (`WebDataset._get_pipeline_from_tar` over
`ArchiveIterable`, so local, ``hf://`` and ``https://`` shards read alike); ``load_dataset("webdataset")`` itself
is not used: it nests the json in one struct column and a truncated tar either ends it silently or raises without
the shard's name, whereas `shard_records` names the shard and counts the samples lost. A sidecar
``<shard>.rewrites.parquet`` (``id`` + columns, `write_sidecars`) is joined by key (`load_shards`;
`langclip.training.data.ShardStream` streams the shards shuffled, resampled and split across processes).
"""

from __future__ import annotations

import glob
import json
import logging
import os
import re
import tarfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
from datasets import Dataset, Features, IterableDataset, Value
from datasets.packaged_modules.webdataset.webdataset import WebDataset
from datasets.utils.file_utils import ArchiveIterable, xexists, xopen

from ..errors import ConfigError, DataError

logger = logging.getLogger(__name__)
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff")
SIDECAR_SUFFIX = ".rewrites.parquet"
RECORD_FEATURES = Features({"image": datasets.Image(decode=False), "caption": Value("string"), "id": Value("string")})
"""The columns every reader's records have (shards, the CSV, datasets: `langclip.processing.loading`)."""


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

"""Difference rows: the one reader and checker of PC-CLIP's ``(a, b, difference)`` tables.

Two kinds, by their key columns: image pairs (``id_a``, ``id_b``: what ``langclip differences`` writes, the training
data of ``--method pcclip`` and the eval's difference-classification pairs) and class pairs (``class_a``,
``class_b``: comparative prompting), each row's ``difference`` describing a relative to b.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import datasets

from ..errors import DataError
from .loading import load_rows

IMAGE_PAIRS = ("id_a", "id_b")
CLASS_PAIRS = ("class_a", "class_b")


def load_difference_rows(path: str, keys: Sequence[str] = IMAGE_PAIRS, *, known_ids: Iterable[str] | None = None,
                         expected: str = "(`langclip differences` output)") -> datasets.Dataset:
    """The rows of ``path`` (a dataset folder, Hub id, CSV, JSON(L) or Parquet file) with columns ``keys`` +
    ``difference``; image-pair ids are read as strings. A `DataError` naming ``path`` (and ``expected``, what the
    caller reads) when a column is missing or there is no row, and naming the first bad row (`check_difference_rows`:
    an empty difference text; given ``known_ids``, an unknown id, a self-pair or a repeated pair)."""
    rows = load_rows(path)
    missing = [column for column in (*keys, "difference") if column not in rows.column_names]
    if missing:
        raise DataError(f"{path}: no column(s) {missing}; expected {', '.join(keys)}, difference "
                        f"{expected} (columns: {', '.join(rows.column_names)})")
    if len(rows) == 0:
        raise DataError(f"{path} has no difference rows")
    if tuple(keys) == IMAGE_PAIRS:
        rows = rows.cast_column("id_a", datasets.Value("string")).cast_column("id_b", datasets.Value("string"))
    try:
        check_difference_rows(rows, known_ids, keys)
    except ValueError as error:
        raise DataError(f"{path}: {error}") from None
    return rows


def check_difference_rows(rows, known_ids: Iterable[str] | None = None, keys: Sequence[str] = IMAGE_PAIRS) -> None:
    """Raise a ValueError naming the first bad row: a missing column or an empty difference text; given
    ``known_ids`` (image pairs), also an unknown id, a self-pair or a pair seen before."""
    known_ids, seen = None if known_ids is None else set(known_ids), {}
    for index, row in enumerate(rows):
        for column in (*keys, "difference"):
            if column not in row:
                raise ValueError(f"difference row {index} has no {column!r} column")
        pair = tuple(row[column] for column in keys)
        if known_ids is not None:
            for column, value in zip(keys, pair):
                if value not in known_ids:
                    raise ValueError(f"difference row {index}: {column}={value!r} is not an id of the image dataset")
            if pair[0] == pair[1]:
                raise ValueError(f"difference row {index} pairs image {pair[0]!r} with itself")
        if not isinstance(row["difference"], str) or not row["difference"].strip():
            raise ValueError(f"difference row {index} ({pair[0]!r}, {pair[1]!r}) has an empty difference text")
        if known_ids is not None:
            if pair in seen:
                raise ValueError(f"difference row {index} repeats the pair {pair} of row {seen[pair]}; "
                                 "pairs must be distinct")
            seen[pair] = index

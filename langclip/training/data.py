"""The training batches of any input.

Tar shards and streamed datasets are read in passes (`ShardStream`, `DatasetStream`): pass k is
reproducible from (seed, k), so a resumed run yields exactly the samples of the uninterrupted one.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from datasets import IterableDataset
from datasets.distributed import split_dataset_by_node

from ..processing.loading import Shards, load_shards


@dataclass(frozen=True)
class ShardStream:
    """Tar shards as an endless stream of passes, each reproducible from (seed, pass index).

    Pass k reads the shards in the order `order(k)`: a permutation drawn from (seed, k), or with
    ``resampled`` (OpenCLIP's --dataset-resampled) as many draws with replacement. Samples are then
    shuffled in consecutive blocks of ``shuffle_buffer`` (`shuffle_block`); a batched map's state in
    `IterableDataset.state_dict` restarts at its block, so a resumed pass yields exactly the samples
    the uninterrupted one does (a rolling buffer, `IterableDataset.shuffle`, cannot be restored).
    """

    source: Shards
    seed: int = 0
    shuffle_buffer: int = 0
    resampled: bool = False

    @property
    def shards(self) -> tuple[str, ...]:
        return self.source.paths

    @property
    def num_shards(self) -> int:
        return len(self.shards)

    def order(self, pass_index: int) -> list[str]:
        rng = np.random.default_rng([self.seed, pass_index])
        if self.resampled:
            return [self.shards[i] for i in rng.integers(0, len(self.shards), len(self.shards))]
        return [self.shards[i] for i in rng.permutation(len(self.shards))]

    def dataset(self, pass_index: int | None = None, rank: int = 0, world_size: int = 1) -> IterableDataset:
        """Pass ``pass_index``'s records for process ``rank`` of ``world_size`` (`split_dataset_by_node`);
        ``None``: the shards in their given order, unshuffled."""
        order = None if pass_index is None else self.order(pass_index)
        return pass_dataset(self.source.dataset(order), pass_index, rank, world_size, self.seed, self.shuffle_buffer)


@dataclass(frozen=True)
class DatasetStream:
    """A streamed `IterableDataset` (``--streaming``: a Hub dataset read as it downloads) as passes, like
    `ShardStream`: pass k is ``source`` block-shuffled from (seed, k), for process ``rank`` of ``world_size``.
    Resumable to the exact sample through `IterableDataset.state_dict` (the rows need an ``id``)."""

    source: IterableDataset
    seed: int = 0
    shuffle_buffer: int = 0

    @property
    def num_shards(self) -> int:
        return self.source.num_shards

    def dataset(self, pass_index: int | None = None, rank: int = 0, world_size: int = 1) -> IterableDataset:
        return pass_dataset(self.source, pass_index, rank, world_size, self.seed, self.shuffle_buffer)


def pass_dataset(dataset: IterableDataset, pass_index: int | None, rank: int, world_size: int, seed: int,
                 shuffle_buffer: int) -> IterableDataset:
    """Pass ``pass_index`` of ``dataset``: rows shuffled in consecutive blocks of ``shuffle_buffer`` (`shuffle_block`;
    ``None``: as they are), then this process's part (`split_dataset_by_node`)."""
    if pass_index is not None and shuffle_buffer > 1:
        dataset = dataset.map(shuffle_block, batched=True, batch_size=shuffle_buffer,
                              fn_kwargs={"seed": seed, "pass_index": pass_index}, features=dataset.features)
    return split_dataset_by_node(dataset, rank, world_size) if world_size > 1 else dataset


def shuffle_block(block: dict, seed: int, pass_index: int) -> dict:
    """A block of rows (columns of equal length) in an order drawn from (seed, pass, the block's first id)."""
    ids = block["id"]
    order = np.random.default_rng([seed, pass_index, zlib.crc32(ids[0].encode())]).permutation(len(ids))
    return {column: [values[i] for i in order] for column, values in block.items()}


def load_shard_stream(path: str | Sequence[str], caption_column: str = "caption", rewrites_column: str = "rewrites",
                      image_column: str = "image", skip_bad_samples: bool = False, **options) -> ShardStream:
    """A `ShardStream` over the shards at ``path`` (`load_shards`); ``options``: its seed, shuffle_buffer, resampled."""
    return ShardStream(load_shards(path, caption_column, rewrites_column, image_column, skip_bad_samples), **options)

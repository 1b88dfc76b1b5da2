"""The training batches of any input: `build_data` gives the loop one `Batches`, streamed or map-style.

Tar shards and streamed datasets are read in passes (`ShardStream`, `DatasetStream`) by `StreamedBatches`: pass k is
reproducible from (seed, k), and the loader's state is saved with each checkpoint, so a resumed run yields exactly the
samples of the uninterrupted one. Map-style datasets go through accelerate's prepared DataLoader (`MapStyleBatches`),
shuffled per epoch from the seed; a resumed run skips the batches its epoch already took.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import warnings
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import datasets
import numpy as np
import pyarrow.compute as pc
import torch
from accelerate import Accelerator
from datasets import IterableDataset
from datasets.distributed import split_dataset_by_node
from torchdata.stateful_dataloader import StatefulDataLoader

from ..errors import ConfigError
from ..processing.loading import check_caption_column, load_image_text_dataset
from ..processing.shards import Shards, is_webdataset, load_shards
from .arguments import DataArguments, ModelArguments, TrainArguments
from .methods import Method


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


def default_num_workers(cap: int = 8) -> int:
    """DataLoader workers per process: the CPU cores this process may use, shared by the node's processes
    (``LOCAL_WORLD_SIZE``), minus one for the training process; at most ``cap``."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(0, min(cap, cores // int(os.environ.get("LOCAL_WORLD_SIZE", "1")) - 1))


def loader_kwargs(num_workers: int | None, device: torch.device) -> dict:
    """DataLoader settings: ``num_workers`` (None: `default_num_workers`) that stay alive across epochs and
    prefetch 4 batches each; page-locked batches when they go to a CUDA device."""
    workers = default_num_workers() if num_workers is None else num_workers
    return {"num_workers": workers, "pin_memory": device.type == "cuda"} | (
        {"persistent_workers": True, "prefetch_factor": 4} if workers else {})


class SharedEpochCollator:
    """``collator`` with its ``epoch`` in shared memory, so that persistent DataLoader workers see `set_epoch`."""

    def __init__(self, collator):
        self.collator = collator
        self.epoch = multiprocessing.RawValue("q", 0)

    def set_epoch(self, epoch: int) -> None:
        self.epoch.value = epoch

    def __call__(self, rows):
        self.collator.epoch = self.epoch.value
        return self.collator(rows)


class Batches(Protocol):
    """What the training loop reads, the same for streamed and map-style data."""

    steps_per_epoch: int | None  # None: streamed data without --train-num-samples (no epochs)
    fingerprint: str  # the data's identity, checked on --resume

    def steps(self, start: int, end: int) -> Iterator[dict]:
        """The batches of optimizer steps ``start + 1`` to ``end`` (a resumed run starts at its checkpoint's step)."""

    def state_dict(self) -> dict | None:
        """This process's position in the data, saved with each checkpoint; None when the step gives it."""

    def load_state_dict(self, state: dict | None) -> None: ...


class StreamedBatches:
    """This process's batches of a `ShardStream` or `DatasetStream`, pass after pass, resumable to the exact sample.

    Pass k is a `torchdata` `StatefulDataLoader` over ``stream.dataset(k, rank, world_size)``
    (`split_dataset_by_node` gives the process its shards, the loader's workers split them
    again); when it runs out, pass k + 1 starts. The collator's ``epoch`` is the pass, so aug_T
    draws and random crops are keyed by (pass, sample id). `state_dict` is the pass and the
    loader's state after the last batch handed out (JSON); after `load_state_dict` the next batch
    is the one the uninterrupted run would have taken. ``loader``: the `loader_kwargs` settings (``num_workers``,
    ``pin_memory``, ``prefetch_factor``; each pass has a new loader, so workers do not persist); pinned batches are
    copied to ``device`` without blocking. ``steps_per_epoch`` (set by `build_data`) only shapes the schedule:
    the stream runs on across epochs.
    """

    def __init__(self, stream: ShardStream | DatasetStream, collator, batch_size: int, loader: dict | None = None,
                 rank: int = 0, world_size: int = 1, device=None):
        loader = loader or {}
        self.stream, self.collator, self.batch_size = stream, collator, batch_size
        self.num_workers, self.pin_memory = loader.get("num_workers", 0), loader.get("pin_memory", False)
        self.prefetch_factor = loader.get("prefetch_factor")
        self.rank, self.world_size, self.device = rank, world_size, device
        self.pass_index, self.loader, self.iterator, self.loader_state = 0, None, None, None
        self.steps_per_epoch = None

    def _start_pass(self) -> None:
        self.collator.epoch = self.pass_index
        self.loader = StatefulDataLoader(
            self.stream.dataset(self.pass_index, self.rank, self.world_size), batch_size=self.batch_size,
            drop_last=True, num_workers=self.num_workers, collate_fn=self.collator, pin_memory=self.pin_memory,
            prefetch_factor=self.prefetch_factor if self.num_workers else None)
        if self.loader_state is not None:
            self.loader.load_state_dict(self.loader_state)
            self.loader_state = None
        self.iterator = iter(self.loader)

    def take(self, steps: int):
        """The next ``steps`` batches, on ``device``."""
        taken, empty_passes = 0, 0
        while taken < steps:
            if self.iterator is None:
                self._start_pass()
            try:
                batch = next(self.iterator)
            except StopIteration:
                self.pass_index, self.loader, self.iterator = self.pass_index + 1, None, None
                empty_passes += 1
                if empty_passes > 1:
                    raise ValueError(f"process {self.rank} of {self.world_size} got no full batch of "
                                     f"{self.batch_size} samples from a whole pass over its shards of "
                                     f"{self.stream.num_shards}; use more shards or a smaller batch") from None
                continue
            taken, empty_passes = taken + 1, 0
            yield {key: value.to(self.device, non_blocking=self.pin_memory) for key, value in batch.items()}

    def steps(self, start: int, end: int):
        """The batches of steps ``start + 1`` to ``end``."""
        return self.take(end - start)

    def state_dict(self) -> dict:
        loader = self.loader.state_dict() if self.loader is not None else self.loader_state
        return {"pass": self.pass_index, "loader": loader, "world_size": self.world_size,
                "num_workers": self.num_workers}

    def load_state_dict(self, state: dict) -> None:
        if (state["world_size"], state["num_workers"]) != (self.world_size, self.num_workers):
            raise ValueError(f"the checkpoint's data state is for {state['world_size']} processes x "
                             f"{state['num_workers']} workers; resume with those (here: {self.world_size} x "
                             f"{self.num_workers})")
        self.pass_index, self.loader, self.iterator, self.loader_state = state["pass"], None, None, state["loader"]


class MapStyleBatches:
    """This process's batches of a map-style dataset, epoch after epoch: a DataLoader prepared by ``accelerator``
    (its seedable sampler shuffles each epoch from (seed, epoch); batches are sharded across processes and sent to
    the device). A run resumed at step s skips the first s - epoch * steps_per_epoch batches of its epoch, so it
    has no data state of its own."""

    def __init__(self, accelerator: Accelerator, dataset, collator, batch_size: int, loader: dict):
        self.accelerator, self.collate = accelerator, SharedEpochCollator(collator)
        self.shuffled = hasattr(dataset, "__len__") and not isinstance(dataset, torch.utils.data.IterableDataset)
        self.loader = accelerator.prepare(torch.utils.data.DataLoader(
            dataset, batch_size=batch_size, shuffle=self.shuffled, drop_last=True, collate_fn=self.collate, **loader))
        self.steps_per_epoch = len(self.loader) if self.shuffled else None

    def steps(self, start: int, end: int):
        """The batches of steps ``start + 1`` to ``end``, across epochs."""
        epoch = start // self.steps_per_epoch if self.steps_per_epoch else 0
        step = start
        while step < end:
            self.collate.set_epoch(epoch)
            self.loader.set_epoch(epoch)
            skip = step - epoch * self.steps_per_epoch if self.steps_per_epoch else 0
            for batch in self.accelerator.skip_first_batches(self.loader, skip) if skip else self.loader:
                yield batch
                step += 1
                if step >= end:
                    return
            epoch += 1

    def state_dict(self) -> None:
        """None: the step gives the position (`steps`)."""
        return None

    def load_state_dict(self, state: dict | None) -> None:
        """Nothing to restore: `steps` starts from the step."""


def split_warning(num_shards: int, world_size: int, num_workers: int) -> str | None:
    """Why ``num_shards`` do not split evenly over processes and their DataLoader workers, or None."""
    if num_shards % world_size:
        return (f"{num_shards} shards do not divide among {world_size} processes: each process reads every shard "
                f"and keeps 1 sample in {world_size} (split_dataset_by_node); use a multiple of {world_size} shards")
    per_process = num_shards // world_size
    if num_workers > 1 and per_process % num_workers:
        return (f"{per_process} shards per process do not divide among {num_workers} DataLoader workers: some "
                f"workers read {per_process // num_workers + 1} shards, others {per_process // num_workers}"
                + (", some none" if per_process < num_workers else ""))
    return None


def load_rows(data_args: DataArguments, seed: int) -> tuple[datasets.Dataset | IterableDataset,
                                                             ShardStream | DatasetStream | None]:
    """(rows, stream) of ``--train-data``: tar shards as a `ShardStream`, a streamed dataset (``--streaming``) as a
    `DatasetStream` (passes block-shuffled from ``seed``), any other input as a map-style dataset and no stream."""
    if is_webdataset(data_args.train_data):
        stream = load_shard_stream(
            data_args.train_data, data_args.caption_column, data_args.rewrites_column, data_args.image_column,
            data_args.skip_bad_samples, seed=seed, shuffle_buffer=data_args.shuffle_buffer,
            resampled=data_args.dataset_resampled)
        return stream.dataset(), stream
    dataset = load_image_text_dataset(
        data_args.train_data, split=data_args.split, image_column=data_args.image_column,
        caption_column=data_args.caption_column, rewrites_column=data_args.rewrites_column,
        augmented_files=data_args.augmented_files or (), image_root=data_args.image_root,
        streaming=data_args.streaming,
    )
    if isinstance(dataset, IterableDataset):  # read in passes with a data state, as shards are
        return dataset, DatasetStream(dataset, seed=seed, shuffle_buffer=data_args.shuffle_buffer)
    return dataset, None


def build_data(accelerator: Accelerator, method: Method, model, tokenizer, processor,
               arguments: tuple[ModelArguments, DataArguments, TrainArguments]) -> Batches:
    """The run's `Batches` of ``per_device_batch_size * accum_freq`` rows for this process: `StreamedBatches` for
    shards and streamed datasets, `MapStyleBatches` for the rest; the method's columns checked and its collator
    (`Method.prepare_data`) applied. Sets ``steps_per_epoch`` (shards: ``--train-num-samples`` // global batch;
    other streamed data: None, so --max-steps is needed) and ``fingerprint`` (`data_fingerprint`), which a resumed
    run must share."""
    model_args, data_args, train_args = arguments
    dataset, stream = load_rows(data_args, train_args.seed)
    files = source_files(dataset, stream)
    method.check_columns(dataset.column_names or list(dataset.features or {}), data_args.train_data)
    check_caption_column(dataset, data_args.train_data, allow_missing=data_args.skip_bad_samples)
    max_length = model_args.max_length or model.config.text_config.max_position_embeddings
    dataset, collator = method.prepare_data(model, dataset, tokenizer, max_length, processor, accelerator.device)
    batch_size = train_args.per_device_batch_size * train_args.accum_freq
    global_batch = batch_size * accelerator.num_processes
    loader = loader_kwargs(data_args.num_workers, accelerator.device)
    if stream is None:
        batches = MapStyleBatches(accelerator, dataset, collator, batch_size, loader)
    else:
        warning = split_warning(stream.num_shards, accelerator.num_processes, loader["num_workers"])
        if warning and accelerator.is_main_process:
            warnings.warn(warning, stacklevel=2)
        batches = StreamedBatches(stream, collator, batch_size, loader, accelerator.process_index,
                                  accelerator.num_processes, accelerator.device)
        if data_args.train_num_samples:
            batches.steps_per_epoch = data_args.train_num_samples // global_batch
            if batches.steps_per_epoch == 0:
                raise ConfigError(f"--train-num-samples {data_args.train_num_samples} is less than one global batch "
                                  f"({global_batch})")
    if batches.steps_per_epoch is None and train_args.max_steps is None:
        raise ConfigError("streamed data has no length: give --max-steps (or, for shards, --train-num-samples)")
    if batches.steps_per_epoch == 0:
        raise ConfigError(f"--train-data {data_args.train_data} has fewer rows ({len(dataset)}) than one global batch "
                          f"({global_batch}); lower --per-device-batch-size or --accum-freq")
    if train_args.lr_decay_per_epoch is not None and not batches.steps_per_epoch:
        raise ConfigError("--lr-decay-per-epoch decays once per epoch, and streamed data has no epochs: give "
                          "--train-num-samples (shards) or use the cosine schedule (--lr-end)")
    batches.fingerprint = data_fingerprint(getattr(dataset, "_fingerprint", None) or f"path:{data_args.train_data}",
                                           files)
    return batches


def source_files(rows, stream) -> list[str]:
    """The local files ``rows`` are read from: the tar shards, or the images a map-style dataset names by path
    (image bytes kept in the dataset are in its own fingerprint)."""
    if isinstance(stream, ShardStream):
        return [path for path in stream.shards if os.path.isfile(path)]
    if not isinstance(rows, datasets.Dataset) or not isinstance(rows.features.get("image"), datasets.Image):
        return []
    images = rows.data.column("image")
    paths = pc.if_else(pc.is_null(pc.struct_field(images, "bytes")), pc.struct_field(images, "path"), None)
    return [path for path in paths.to_pylist() if path]


def data_fingerprint(rows: str, files: Sequence[str]) -> str:
    """The data's identity, checked on --resume: the rows' fingerprint ``rows`` and, for each of ``files``, its
    path, size and modification time (one stat each, no read), so that a file replaced in place changes it."""
    if not files:
        return rows
    digest = hashlib.sha256()
    for path in files:
        try:
            stat = os.stat(path)
            digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
        except OSError:  # a missing image is reported by name when it is read
            digest.update(f"{path}\0missing\n".encode())
    return f"{rows}+files:{digest.hexdigest()[:16]}"

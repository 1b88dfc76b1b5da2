"""The resumable, sharded `datasets.map` job that every generation job runs on.

The caption rewriter (`rewrite.py`) and PC-CLIP's difference writer use the same machinery:
`ChunkedMapJob` runs a batched function over a dataset: the rows are split contiguously
  into ``num_shards`` shards (one per process); a shard is cut into chunks of
  ``chunk_size`` rows, each mapped and saved to ``work_dir`` under a temporary name and
  then renamed, so a finished chunk is always complete and a restarted job redoes only
  unfinished ones. Random state is seeded from (seed, first row of the chunk) before
  each chunk, so a restart writes what an uninterrupted run would have. `merge` joins the
  chunks of every shard and checks that each input id appears exactly once, in order.
"""

from __future__ import annotations

import json
import os
import shutil
import zlib
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import datasets
import torch
import transformers
from accelerate import PartialState
from datasets import Dataset, concatenate_datasets, load_from_disk
from tqdm.auto import tqdm


def process_state() -> PartialState:
    """accelerate's process state, multi-process on CPU-only hosts too (launchers set WORLD_SIZE)."""
    return PartialState(cpu=not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1)


def resolve_shard(num_shards: int | None = None, shard_index: int | None = None) -> tuple[int, int]:
    """(num_shards, shard_index): the given pair, or one shard per accelerate process."""
    if num_shards is None and shard_index is None:
        state = process_state()
        return state.num_processes, state.process_index
    if num_shards is None or shard_index is None:
        raise ValueError("give both --num-shards and --shard-index, or neither")
    if not 0 <= shard_index < num_shards:
        raise ValueError(f"--shard-index {shard_index} is not in [0, {num_shards})")
    return num_shards, shard_index


class ChunkedMapJob:
    """Runs ``function`` (a batched `datasets.map` function) over a dataset, resumably and by shard.

    ``config`` is everything that determines the output (model, prompts, seed, ...): it is
    saved in ``work_dir/job.json`` and a restart with a different one is refused, since its
    chunks would not fit together.
    """

    def __init__(
        self,
        function: Callable[[dict], dict],
        work_dir: str | os.PathLike,
        config: dict,
        chunk_size: int = 1024,
        batch_size: int = 256,
        num_shards: int = 1,
        seed: int = 0,
        id_column: str = "id",
        unit: str = "row",
    ):
        if chunk_size < 1 or batch_size < 1:
            raise ValueError(f"chunk_size and batch_size must be positive, got {chunk_size} and {batch_size}")
        self.function = function
        self.work_dir = Path(work_dir)
        self.config = {**config, "chunk_size": chunk_size, "num_shards": num_shards, "seed": seed}
        self.chunk_size = chunk_size
        self.batch_size = batch_size
        self.num_shards = num_shards
        self.seed = seed
        self.id_column = id_column
        self.unit = unit

    def shard_bounds(self, num_rows: int, shard_index: int) -> tuple[int, int]:
        """[start, stop) of a shard: contiguous, sizes differing by at most one row."""
        size, extra = divmod(num_rows, self.num_shards)
        start = shard_index * size + min(shard_index, extra)
        return start, start + size + (shard_index < extra)

    def chunks(self, num_rows: int, shard_index: int) -> list[tuple[int, int, Path]]:
        """(start, stop, folder) of each chunk of a shard, in row order."""
        start, stop = self.shard_bounds(num_rows, shard_index)
        shard_dir = self.work_dir / f"shard-{shard_index:05d}-of-{self.num_shards:05d}"
        return [
            (begin, min(begin + self.chunk_size, stop), shard_dir / f"chunk-{begin:012d}")
            for begin in range(start, stop, self.chunk_size)
        ]

    def _check_config(self) -> None:
        path = self.work_dir / "job.json"
        if path.exists():
            saved = json.loads(path.read_text())
            changed = sorted(key for key in saved.keys() | self.config.keys() if saved.get(key) != self.config.get(key))
            if changed:
                raise ValueError(
                    f"{self.work_dir} holds chunks of a job with different settings ({', '.join(changed)}); "
                    "rerun with the original arguments or use a fresh output/work directory"
                )
            return
        self.work_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(self.config, indent=2, sort_keys=True))
        os.replace(tmp, path)

    def run(self, dataset: Dataset, shard_index: int = 0) -> None:
        """Map every unfinished chunk of this shard and save it; finished chunks are skipped."""
        self._check_config()
        chunks = self.chunks(len(dataset), shard_index)
        start, stop = self.shard_bounds(len(dataset), shard_index)
        finished = [end - begin for begin, end, folder in chunks if folder.exists()]
        if finished:
            print(f"resuming shard {shard_index}: {len(finished)} of {len(chunks)} chunks already done")
        progress = tqdm(
            total=stop - start, initial=sum(finished), unit=self.unit, unit_scale=True,
            desc=f"shard {shard_index + 1}/{self.num_shards}",
        )  # fmt: skip

        def mapped(batch: dict) -> dict:
            columns = self.function(batch)
            progress.update(len(batch[self.id_column]))
            return columns

        bars_were_enabled = datasets.is_progress_bar_enabled()
        datasets.disable_progress_bars()
        try:
            for begin, end, folder in chunks:
                if folder.exists():
                    continue
                transformers.set_seed(zlib.crc32(f"{self.seed}|{begin}".encode()))
                chunk = dataset.select(range(begin, end)).map(
                    mapped, batched=True, batch_size=self.batch_size, keep_in_memory=True, load_from_cache_file=False
                )
                tmp = folder.with_name(folder.name + ".tmp")
                shutil.rmtree(tmp, ignore_errors=True)
                chunk.save_to_disk(str(tmp))
                os.replace(tmp, folder)
        finally:
            progress.close()
            if bars_were_enabled:
                datasets.enable_progress_bars()

    def run_and_merge(self, dataset: Dataset, shard_index: int = 0) -> Dataset | None:
        """`run` this shard, then, on the main process once every shard is done, `merge`; else None."""
        self.run(dataset, shard_index)
        state = process_state()
        state.wait_for_everyone()
        if not state.is_main_process:
            return None
        missing = self.missing_chunks(len(dataset))
        if missing:
            print(f"shard {shard_index} is done; shards {sorted(missing)} are not. Rerun any shard then to merge.")
            return None
        return self.merge(dataset)

    def missing_chunks(self, num_rows: int) -> dict[int, int]:
        """{shard index: number of unfinished chunks} over all shards."""
        missing = {
            shard: sum(not folder.exists() for _, _, folder in self.chunks(num_rows, shard))
            for shard in range(self.num_shards)
        }
        return {shard: count for shard, count in missing.items() if count}

    def merge(self, dataset: Dataset) -> Dataset:
        """All chunks of all shards in row order; raises unless their ids are exactly the input's ids."""
        missing = self.missing_chunks(len(dataset))
        if missing:
            details = ", ".join(f"shard {shard}: {count} chunks" for shard, count in missing.items())
            raise RuntimeError(f"cannot merge: unfinished chunks ({details}); run those shards first")
        folders = [folder for shard in range(self.num_shards) for _, _, folder in self.chunks(len(dataset), shard)]
        merged = concatenate_datasets([load_from_disk(str(folder)) for folder in folders])
        check_same_ids(dataset, merged, self.id_column)
        return merged


def _ids(dataset: Dataset, id_column: str, batch_size: int = 10_000):
    for batch in dataset.select_columns(id_column).iter(batch_size):
        yield from batch[id_column]


def check_same_ids(expected: Dataset, merged: Dataset, id_column: str = "id") -> None:
    """Raise a ValueError unless ``merged`` has exactly ``expected``'s ids, each once, in the same order."""
    if len(merged) == len(expected) and all(a == b for a, b in zip(_ids(expected, id_column), _ids(merged, id_column))):
        return
    want, got = Counter(_ids(expected, id_column)), Counter(_ids(merged, id_column))
    missing = sorted(map(str, want.keys() - got.keys()))[:5]
    duplicated = sorted(str(i) for i, n in got.items() if n > 1)[:5]
    unknown = sorted(map(str, got.keys() - want.keys()))[:5]
    raise ValueError(
        f"merged output does not match the input ids ({len(merged)} rows for {len(expected)} inputs): "
        f"missing {missing}, duplicated {duplicated}, unknown {unknown}"
        + ("" if missing or duplicated or unknown else ", rows out of order")
    )

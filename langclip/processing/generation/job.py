"""The resumable, sharded `datasets.map` job that every generation job runs on.

The caption rewriter (`rewrite.py`) and PC-CLIP's difference writer use the same machinery:
`ChunkedMapJob` runs a batched function over a dataset. The rows are split contiguously
into ``num_shards`` shards (one per process); the unfinished rows of a shard are cut into
chunks of ``chunk_size`` rows, each mapped and saved to ``work_dir`` under a temporary
name and then renamed, so a finished chunk is always complete and a restarted job redoes
only unfinished rows (with any chunk size: a chunk's folder names its rows).

Fingerprinted state: ``work_dir/job.json`` records the settings that determine the output
(``config``: model, backend, prompt, sources, generation settings, seed, shards) and the
input's fingerprint (a hash per block of `BLOCK_ROWS` rows of the input columns). A
restart with other settings or an edited input is refused with an error naming what
changed; ``restart=True`` deletes the state and starts over.

A first SIGINT, SIGTERM or SIGUSR1 stops the job after the current chunk is saved (`RunInterrupted`: the rows saved
and how to continue); a second stops it at once, every finished chunk kept.

Pending rows: the function may return a boolean column `PENDING` (a request that failed
after its retries). A chunk with pending rows is saved as ``...-pending``; the next run
redoes only those rows. `merge` refuses while any row is pending, so no row is lost.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import zlib
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

import datasets
import torch
import transformers
from accelerate import PartialState
from datasets import Dataset, concatenate_datasets, load_from_disk
from datasets.fingerprint import Hasher
from tqdm.auto import tqdm

from ...errors import ConfigError, IncompleteJobError, RunInterrupted
from ...signals import StopRequest

PENDING = "pending"
BLOCK_ROWS = 10_000
_CHUNK_NAME = re.compile(r"^chunk-(\d{12})-(\d{12})(-pending)?$")


def _is_pending(folder: Path) -> bool:
    return folder.name.endswith("-pending")


def process_state() -> PartialState:
    """accelerate's process state, multi-process on CPU-only hosts too (launchers set WORLD_SIZE)."""
    return PartialState(cpu=not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1)


def resolve_shard(num_shards: int | None = None, shard_index: int | None = None) -> tuple[int, int]:
    """(num_shards, shard_index): the given pair, or one shard per accelerate process."""
    if num_shards is None and shard_index is None:
        state = process_state()
        return state.num_processes, state.process_index
    if num_shards is None or shard_index is None:
        raise ConfigError("give both --num-shards and --shard-index, or neither")
    if not 0 <= shard_index < num_shards:
        raise ConfigError(f"--shard-index {shard_index} is not in [0, {num_shards}): give an index below --num-shards")
    return num_shards, shard_index


def input_fingerprint(dataset: Dataset, columns: Sequence[str]) -> dict:
    """{"rows", "columns", "fingerprint", "blocks"}: `datasets`' Hasher over each block of `BLOCK_ROWS` rows."""
    blocks = [Hasher.hash(batch) for batch in dataset.select_columns(list(columns)).iter(BLOCK_ROWS)]
    return {"rows": len(dataset), "columns": list(columns), "fingerprint": Hasher.hash(blocks), "blocks": blocks}


def describe_changes(saved: dict, current: dict) -> list[str]:
    """What differs between two job states ({"config", "input"}), one phrase per change."""
    changes = []
    old, new = saved.get("config", {}), current["config"]
    for key in sorted(old.keys() | new.keys()):
        if old.get(key) != new.get(key):
            changes.append(f"{key}: {old.get(key)!r} -> {new.get(key)!r}")
    old, new = saved.get("input", {}), current["input"]
    if old.get("rows") != new["rows"]:
        changes.append(f"input: {old.get('rows')} rows -> {new['rows']} rows")
    elif old.get("columns") != new["columns"]:
        changes.append(f"input columns: {old.get('columns')} -> {new['columns']}")
    elif old.get("blocks") != new["blocks"]:
        changed = [i for i, (a, b) in enumerate(zip(old["blocks"], new["blocks"])) if a != b]
        first = changed[0] * BLOCK_ROWS
        changes.append(
            f"input: the content of rows {first}-{min(first + BLOCK_ROWS, new['rows']) - 1} changed "
            f"({len(changed)} of {len(new['blocks'])} blocks of {BLOCK_ROWS} rows differ)"
        )
    return changes


class ChunkedMapJob:
    """Runs ``function`` (a batched `datasets.map` function) over a dataset, resumably and by shard.

    ``config`` is everything that determines the output (model, prompts, generation
    settings, ...); with the seed and the fingerprint of ``input_columns`` (default: all) it
    is the job state, saved in ``work_dir/job.json``. ``chunk_size``, ``batch_size`` and the
    shard count are not part of it: prompts and request seeds derive from (seed, id), so a
    restart may change them (a new shard count ignores the old shards' chunks).
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
        input_columns: Sequence[str] | None = None,
    ):
        if chunk_size < 1 or batch_size < 1:
            raise ValueError(f"chunk_size and batch_size must be positive, got {chunk_size} and {batch_size}")
        self.function = function
        self.work_dir = Path(work_dir)
        self.config = {**config, "seed": seed}
        self.chunk_size = chunk_size
        self.batch_size = batch_size
        self.num_shards = num_shards
        self.seed = seed
        self.id_column = id_column
        self.unit = unit
        self.input_columns = input_columns
        self._state = (None, None)

    def state(self, dataset: Dataset) -> dict:
        """The job state: {"config": settings, "input": `input_fingerprint`} (computed once per dataset)."""
        if self._state[0] != dataset._fingerprint:
            columns = self.input_columns or dataset.column_names
            state = {"config": self.config, "input": input_fingerprint(dataset, columns)}
            self._state = (dataset._fingerprint, json.loads(json.dumps(state)))  # as saved: tuples become lists
        return self._state[1]

    def restart(self) -> None:
        """Delete every shard's chunks and the job state."""
        shutil.rmtree(self.work_dir, ignore_errors=True)

    def check_state(self, dataset: Dataset) -> dict:
        """Save the job state, or raise a `ConfigError` naming what changed since it was saved."""
        current = self.state(dataset)
        path = self.work_dir / "job.json"
        if path.exists():
            changes = describe_changes(json.loads(path.read_text()), current)
            if changes:
                raise ConfigError(
                    f"{self.work_dir} holds chunks of a job with different settings or input ({'; '.join(changes)}): "
                    "rerun with the original settings and input, or pass --restart to start over"
                )
            return current
        self.work_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(current, indent=1, sort_keys=True))
        os.replace(tmp, path)
        return current

    def shard_bounds(self, num_rows: int, shard_index: int) -> tuple[int, int]:
        """[start, stop) of a shard: contiguous, sizes differing by at most one row."""
        size, extra = divmod(num_rows, self.num_shards)
        start = shard_index * size + min(shard_index, extra)
        return start, start + size + (shard_index < extra)

    def shard_dir(self, shard_index: int) -> Path:
        return self.work_dir / f"shard-{shard_index:05d}-of-{self.num_shards:05d}"

    def saved_chunks(self, shard_index: int) -> dict[tuple[int, int], Path]:
        """{(begin, end): folder} of the saved chunks of a shard (finished or with pending rows)."""
        saved = {}
        for folder in sorted(self.shard_dir(shard_index).glob("chunk-*")):
            match = _CHUNK_NAME.match(folder.name)
            if match:  # a finished chunk wins over a pending one of the same rows (a redo cut short)
                key = (int(match[1]), int(match[2]))
                if key not in saved or not match[3]:
                    saved[key] = folder
        return saved

    def chunks(self, num_rows: int, shard_index: int) -> list[tuple[int, int, Path]]:
        """(begin, end, folder) of each chunk of a shard in row order: the saved ones, and the
        rows between them cut into ``chunk_size`` pieces."""
        start, stop = self.shard_bounds(num_rows, shard_index)
        saved = self.saved_chunks(shard_index)
        spans, position = [], start
        for begin, end in [*sorted(saved), (stop, stop)]:
            spans += [(b, min(b + self.chunk_size, begin)) for b in range(position, begin, self.chunk_size)]
            if begin < stop:
                spans.append((begin, end))
            position = end
        return [
            (b, e, saved.get((b, e), self.shard_dir(shard_index) / f"chunk-{b:012d}-{e:012d}")) for b, e in spans
        ]

    def _map(self, dataset: Dataset, rows: range | list[int], seed_key: str, progress) -> Dataset:
        def mapped(batch: dict) -> dict:
            columns = self.function(batch)
            progress.update(len(batch[self.id_column]))
            return columns

        transformers.set_seed(zlib.crc32(f"{self.seed}|{seed_key}".encode()))
        return dataset.select(rows).map(
            mapped, batched=True, batch_size=self.batch_size, keep_in_memory=True, load_from_cache_file=False
        )

    def _redo_pending(self, dataset: Dataset, begin: int, folder: Path, progress) -> Dataset:
        """The saved chunk with its pending rows mapped again."""
        chunk = load_from_disk(str(folder))
        pending = [i for i, flag in enumerate(chunk[PENDING]) if flag]
        redone = self._map(dataset, [begin + i for i in pending], f"{begin}|redo", progress)
        if redone.features != chunk.features:
            chunk = chunk.cast(redone.features)
        position = dict(zip(pending, range(len(chunk), len(chunk) + len(pending))))
        return concatenate_datasets([chunk, redone]).select([position.get(i, i) for i in range(len(chunk))])

    def run(self, dataset: Dataset, shard_index: int = 0) -> int:
        """Map every unfinished chunk of this shard and the pending rows of saved ones; returns
        the number of rows of this shard still pending."""
        self.check_state(dataset)
        chunks = self.chunks(len(dataset), shard_index)
        start, stop = self.shard_bounds(len(dataset), shard_index)
        finished = [end - begin for begin, end, folder in chunks if folder.exists() and not _is_pending(folder)]
        if any(folder.exists() for *_, folder in chunks):
            print(f"resuming shard {shard_index}: {len(finished)} of {len(chunks)} chunks already done")
        progress = tqdm(total=stop - start, initial=sum(finished), unit=self.unit, unit_scale=True,
                        desc=f"shard {shard_index + 1}/{self.num_shards}")
        bars_were_enabled = datasets.is_progress_bar_enabled()
        datasets.disable_progress_bars()
        pending = 0
        try:
            with StopRequest("chunk") as request:
                for begin, end, folder in chunks:
                    if request.signal is not None:
                        raise self.interrupted(request.signal, shard_index, len(dataset))
                    if folder.exists() and not _is_pending(folder):
                        continue
                    if folder.exists():
                        chunk = self._redo_pending(dataset, begin, folder, progress)
                    else:
                        chunk = self._map(dataset, range(begin, end), str(begin), progress)
                    left = sum(chunk[PENDING]) if PENDING in chunk.column_names else 0
                    pending += left
                    final = self.shard_dir(shard_index) / f"chunk-{begin:012d}-{end:012d}{'-pending' if left else ''}"
                    tmp = final.with_name(final.name + ".tmp")
                    shutil.rmtree(tmp, ignore_errors=True)
                    chunk.save_to_disk(str(tmp))
                    if final.exists():
                        shutil.rmtree(final)
                    os.replace(tmp, final)
                    if folder != final:
                        shutil.rmtree(folder, ignore_errors=True)
        finally:
            progress.close()
            if bars_were_enabled:
                datasets.enable_progress_bars()
        if pending:
            print(f"shard {shard_index}: {pending} {self.unit}s pending (requests failed after retries); "
                  "rerun the same command to redo them")
        return pending

    def interrupted(self, number: int, shard_index: int, num_rows: int) -> RunInterrupted:
        """The error a job stopped by signal ``number`` raises: the rows saved and how to continue."""
        saved = sum(end - begin for begin, end, folder in self.chunks(num_rows, shard_index)
                    if folder.exists() and not _is_pending(folder))
        start, stop = self.shard_bounds(num_rows, shard_index)
        return RunInterrupted(f"stopped by {signal.Signals(number).name}: {saved} of {stop - start} {self.unit}s of "
                              f"shard {shard_index} are saved in {self.shard_dir(shard_index)}; rerun the same command "
                              "to continue from there", exit_code=128 + number)

    def run_and_merge(self, dataset: Dataset, shard_index: int = 0) -> Dataset | None:
        """`run` this shard, then, on the main process once every shard is done, `merge`; else None (another
        process, or shards not done yet). Rows still pending after the run raise `IncompleteJobError`."""
        self.run(dataset, shard_index)
        state = process_state()
        state.wait_for_everyone()
        if not state.is_main_process:
            return None
        missing, pending = self.progress(len(dataset))
        if missing:
            print(f"shard {shard_index} is done; shards {sorted(missing)} are not. Rerun any shard then to merge.")
            return None
        if pending:
            raise IncompleteJobError(f"{pending} {self.unit}s pending in all (requests that failed): not merged. "
                                     "Rerun the same command to redo them.")
        return self.merge(dataset)

    def progress(self, num_rows: int) -> tuple[dict[int, int], int]:
        """({shard index: number of unsaved chunks}, number of pending rows) over all shards."""
        missing, pending = {}, 0
        for shard in range(self.num_shards):
            chunks = self.chunks(num_rows, shard)
            count = sum(not folder.exists() for *_, folder in chunks)
            if count:
                missing[shard] = count
            pending += sum(
                sum(load_from_disk(str(folder))[PENDING])
                for *_, folder in chunks
                if folder.exists() and _is_pending(folder)
            )
        return missing, pending

    def merge(self, dataset: Dataset) -> Dataset:
        """All chunks of all shards in row order, without the `PENDING` column; raises unless every
        row is done and the ids are exactly the input's ids."""
        missing, pending = self.progress(len(dataset))
        if missing or pending:
            details = ", ".join(f"shard {shard}: {count} chunks" for shard, count in missing.items())
            raise RuntimeError(f"cannot merge: unfinished chunks ({details}), {pending} pending {self.unit}s; "
                               "run those shards first")
        folders = [folder for shard in range(self.num_shards) for *_, folder in self.chunks(len(dataset), shard)]
        merged = concatenate_datasets([load_from_disk(str(folder)) for folder in folders])
        if PENDING in merged.column_names:
            merged = merged.remove_columns(PENDING)
        check_same_ids(dataset, merged, self.id_column)
        return merged


def done_before(job: ChunkedMapJob, dataset: Dataset, output: Path, summary_path: Path, restart: bool) -> bool:
    """Whether ``output`` already holds this job's result: ``summary_path`` records the same job
    state (settings and input fingerprint). An output of other settings or input is a
    ValueError naming what changed; ``restart`` deletes the summary and the chunks instead."""
    state = process_state()
    if restart:
        if state.is_main_process:
            job.restart()
            summary_path.unlink(missing_ok=True)
        state.wait_for_everyone()
        return False
    if not summary_path.exists():
        return False
    changes = describe_changes(json.loads(summary_path.read_text()).get("job", {}), job.state(dataset))
    if changes:
        raise ConfigError(
            f"{output} holds the output of a job with different settings or input ({'; '.join(changes)}): "
            "pass --restart to redo it, or choose another --output-dir"
        )
    return True


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

"""Streamed shard loader throughput against a raw PIL decode loop over the same shards, in one run.

    python benchmarks/loader_throughput.py [--shards 8 --per-shard 128 --workers 1 2 4 --batch-size 64]

Shards are made here: img2dataset-style ``<key>.jpg`` (``--image-size`` px JPEG, 256 as img2dataset resizes) +
``<key>.json`` with a caption and 4 rewrites. For each worker count W, in samples/s:

- streamed (langclip): `StreamedBatches` over a `ShardStream` (shard order by seed, block
  shuffle of 1000), W DataLoader workers, the trainer's collator for ``--method laclip``
  (`Method.prepare_data`): aug_T draw, tokenise, JPEG decode, RandomResizedCrop to 224
  (antialiased bilinear), collate uint8 pixels (the trainer normalises them on the device);
- streamed reader + decode only: the same `StreamedBatches`, with a collator that only decodes
  the images: what the reader (datasets' tar parser, sidecar join, block shuffle, typed
  records, split) costs on top of decoding;
- raw decode: W DataLoader workers over the same shards, each reading its tars with
  `tarfile` and decoding every JPEG with PIL (``Image.open(...).convert("RGB")``), nothing else.

Each measurement runs in a fresh process (timed from the loader's creation, so worker start-up
is included but imports and set-up are not; the peak
resident memory, the process's and its workers', is its own); the two paths alternate over
``--rounds`` and each keeps its best time. Memory flat in the number of shards: the streamed
loader at 2 workers over ``--shards`` and 4x as many shards (same samples per shard) reports
its peak memory for both.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import subprocess
import sys
import tarfile
import tempfile
import time

import numpy as np
import torch
from PIL import Image

WORDS = "a photo of the red green blue yellow circle square triangle picture image shape drawing small large"


def make_shards(folder: str, shards: int, per_shard: int, size: int = 256) -> None:
    from langclip.testing import write_tar  # not at the top: the raw-decode child imports nothing of langclip

    rng = np.random.default_rng(0)
    os.makedirs(folder, exist_ok=True)
    words = WORDS.split()
    for shard in range(shards):
        members = []
        for i in range(per_shard):
            key = f"{shard:05d}{i:04d}"
            pixels = (rng.random((size, size, 3)) * 40 + rng.integers(0, 200, 3)).astype(np.uint8)
            image = io.BytesIO()
            Image.fromarray(pixels).save(image, format="JPEG", quality=90)
            caption = lambda: " ".join(rng.choice(words, 8))  # noqa: E731
            record = {"caption": caption(), "rewrites": [caption() for _ in range(4)]}
            members += [(f"{key}.jpg", image.getvalue()), (f"{key}.json", json.dumps(record).encode())]
        write_tar(os.path.join(folder, f"{shard:05d}.tar"), members)


class RawDecode(torch.utils.data.IterableDataset):
    """Every JPEG of the worker's shards decoded with PIL; yields 1 per image."""

    def __init__(self, shards):
        self.shards = shards

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        shards = self.shards if info is None else self.shards[info.id :: info.num_workers]
        for shard in shards:
            with tarfile.open(shard, "r|") as tar:
                for member in tar:
                    if member.name.endswith(".jpg"):
                        Image.open(io.BytesIO(tar.extractfile(member).read())).convert("RGB")
                        yield 1


class DecodeOnly:
    """A collator that only decodes the images (as the raw loop does): the streamed reader's own cost."""

    epoch = 0

    def __call__(self, rows):
        from langclip.processing.transforms import decode_image

        return {"pixel_values": torch.zeros(sum(decode_image(row["image"]) is not None for row in rows), 1)}


def peak_memory_mb() -> float:
    """Peak resident memory of this process plus that of its largest child (the DataLoader workers), in MB."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return (own + children) / 1024


def child(path: str, mode: str, workers: int, batch_size: int, per_shard: int) -> dict:
    import glob

    torch.set_num_threads(1)
    shards = sorted(glob.glob(os.path.join(path, "*.tar")))
    if mode == "raw":
        loader = torch.utils.data.DataLoader(RawDecode(shards), batch_size=batch_size, num_workers=workers)
        started = time.perf_counter()
        samples = sum(len(batch) for batch in loader)
    else:
        from langclip.modeling.image_processing import default_image_processor
        from langclip.testing import train_word_tokenizer
        from langclip.training.data import load_shard_stream
        from langclip.training.methods import Method
        from langclip.training.data import StreamedBatches

        stream = load_shard_stream(path, seed=0, shuffle_buffer=1000)
        if mode == "decode":
            collator = DecodeOnly()
        else:  # the trainer's own collator for --method laclip (uint8 pixels; normalised later on the device)
            tokenizer = train_word_tokenizer([WORDS], max_length=77)
            _, collator = Method.preset("laclip").prepare_data(None, stream, tokenizer, 77, default_image_processor(224),
                                                                 "cpu")
        batches = StreamedBatches(stream, collator, batch_size, {"num_workers": workers})
        # One pass: each worker drops the last partial batch of its own shards.
        per_worker = [len(shards[w::max(workers, 1)]) * per_shard for w in range(max(workers, 1))]
        steps = sum(n // batch_size for n in per_worker)
        started = time.perf_counter()
        samples = sum(batch["pixel_values"].shape[0] for batch in batches.take(steps))
    return {"samples": samples, "seconds": time.perf_counter() - started, "peak_mb": peak_memory_mb()}


def measure(path: str, mode: str, workers: int, batch_size: int, per_shard: int) -> dict:
    output = subprocess.run(
        [sys.executable, __file__, "--child", path, mode, str(workers), "--batch-size", str(batch_size),
         "--per-shard", str(per_shard)],
        env={**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"},
        capture_output=True, text=True, check=True)
    return json.loads(output.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", type=int, default=8, help="Shards of the throughput runs.")
    parser.add_argument("--per-shard", type=int, default=128, help="Samples per shard.")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4], help="DataLoader worker counts.")
    parser.add_argument("--batch-size", type=int, default=64, help="Batch size of both loaders.")
    parser.add_argument("--rounds", type=int, default=2, help="Alternating rounds; each path keeps its best.")
    parser.add_argument("--image-size", type=int, default=256,
                        help="Side of the JPEGs in px (img2dataset's default 256; DataComp-style shards keep 512+).")
    parser.add_argument("--child", nargs=3, metavar=("PATH", "MODE", "WORKERS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        path, mode, workers = args.child
        print(json.dumps(child(path, mode, int(workers), args.batch_size, args.per_shard)))
        return

    root = tempfile.mkdtemp(prefix="loader_bench_")
    few, many = os.path.join(root, "few"), os.path.join(root, "many")
    make_shards(few, args.shards, args.per_shard, args.image_size)
    rows = []
    for workers in args.workers:
        best = {}
        for _ in range(args.rounds):
            for mode in ("streamed", "decode", "raw"):
                result = measure(few, mode, workers, args.batch_size, args.per_shard)
                rate = result["samples"] / result["seconds"]
                if rate > best.get(mode, {}).get("rate", 0):
                    best[mode] = {**result, "rate": rate}
        rows.append((workers, best["streamed"], best["decode"], best["raw"]))
    print(f"\n{args.shards} shards x {args.per_shard} samples ({args.image_size} px JPEG), batch {args.batch_size}, "
          f"best of {args.rounds} rounds\n")
    print("| workers | streamed, full pipeline samples/s | ratio | streamed reader + decode only samples/s | ratio "
          "| raw PIL decode samples/s | samples (each) |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for workers, streamed, decode, raw in rows:
        print(f"| {workers} | {streamed['rate']:.1f} | {streamed['rate'] / raw['rate']:.2f}x | {decode['rate']:.1f} "
              f"| {decode['rate'] / raw['rate']:.2f}x | {raw['rate']:.1f} | {raw['samples']} |")

    make_shards(many, 4 * args.shards, args.per_shard, args.image_size)
    memory = [(name, measure(folder, "streamed", 2, args.batch_size, args.per_shard))
              for name, folder in ((f"{args.shards} shards", few), (f"{4 * args.shards} shards", many))]
    print("\n| streamed, 2 workers | samples | peak memory (process + largest worker), MB |")
    print("| --- | ---: | ---: |")
    for name, result in memory:
        print(f"| {name} | {result['samples']} | {result['peak_mb']:.0f} |")


if __name__ == "__main__":
    main()

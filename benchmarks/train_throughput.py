"""Training throughput on CPU, every figure against a baseline measured in the same run.

    python benchmarks/train_throughput.py [--batch-size 64 --steps 15 --loader-steps 8]

The model is issue 20's: both towers 4 layers x 256 (19.3M parameters), 96 px images, patch 16,
context 32, fp32, identical weights everywhere. Rows:
- langclip's step (`step.TrainStep`: `forward_backward`, fused AdamW that skips non-finite steps
  on the device, no gradient norm off logging steps, logit-scale clamp) vs the naive
  `transformers.CLIPModel(..., return_loss=True)` + default AdamW loop, on the same ready batch;
- achieved FLOP/s as a fraction of this machine's measured fp32 matmul rate (FLOPs counted
  analytically: 2 per multiply-add of every linear layer, attention's QK^T and AV, patch embedding,
  projections, logits; a training step = 3x the forward);
- ablations of our step: the opt-out AdamW (--no-fused-optimizer), a logging step (gradient norm);
- LaCLIP (aug_T) vs CLIP with the collation inside the step (the in-process, num_workers=0 case);
- full-length (32-token) vs typical (14-token) captions, padding to the longest in the batch;
- bf16 autocast on CPU, and torch.compile (inductor), each against the eager fp32 step;
- streamed JPEG input: .tar shards (img2dataset-style, 256 px JPEG) read as the trainer reads them
  (`load_shard_stream` + `StreamedBatches`: decode + RandomResizedCrop + aug_T in DataLoader workers,
  the trainer's default `loader_kwargs`) vs the same step on a pre-made batch;
- peak memory of a step with and without gradient checkpointing (fresh processes).

Timings are medians over interleaved repetitions; the machine may be shared, so compare
ratios within one run.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import torch
from accelerate import Accelerator
from transformers import CLIPModel

from langclip import LaCLIPConfig, LaCLIPModel
from langclip.modeling.image_processing import default_image_processor
from langclip.testing import train_word_tokenizer
from langclip.processing.collators import ContrastiveCollator
from langclip.training.data import StreamedBatches, load_shard_stream, loader_kwargs
from langclip.processing.text import TextAugmenter
from langclip.processing.transforms import normalize_pixels
from langclip.training.methods import Method
from langclip.training.optim import build_optimizer
from langclip.training.step import TrainStep
from loader_throughput import make_shards  # the loader benchmark's img2dataset-style shards (256 px JPEG)

WORDS = "a photo of the red green blue yellow circle square triangle star small large one two three on left right top"
BENCH = dict(width=256, layers=4, heads=4, image_size=96, patch=16, context=32, projection=256)
CLIP_VOCABULARY = 49408  # the embedding table of CLIP's BPE (12.6M of the 19.3M parameters); the word tokenizer uses the first ids
TYPICAL_WORDS, FULL_WORDS = 12, 40  # + BOS/EOS: 14 tokens, and 32 (cut at the context)


def config(tokenizer) -> LaCLIPConfig:
    tower = dict(hidden_size=BENCH["width"], intermediate_size=4 * BENCH["width"], num_hidden_layers=BENCH["layers"],
                 num_attention_heads=BENCH["heads"])
    text = dict(tower, vocab_size=max(len(tokenizer), CLIP_VOCABULARY), max_position_embeddings=BENCH["context"],
                pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id)
    vision = dict(tower, image_size=BENCH["image_size"], patch_size=BENCH["patch"])
    return LaCLIPConfig(text_config=text, vision_config=vision, projection_dim=BENCH["projection"])


def training_flops(batch: int, text_length: int) -> float:
    """Analytic FLOPs of one training step (3x forward) of the benchmark model."""
    d, layers = BENCH["width"], BENCH["layers"]

    def tower(n):  # per sequence: q,k,v,o (4 d^2) + MLP (2 * 4 d^2) linear layers, QK^T and AV (2 n^2 d)
        return layers * (2 * n * 12 * d * d + 2 * 2 * n * n * d)

    patches = (BENCH["image_size"] // BENCH["patch"]) ** 2
    vision = tower(patches + 1) + 2 * patches * 3 * BENCH["patch"] ** 2 * d
    projections = 2 * 2 * d * BENCH["projection"]
    logits = 2 * 2 * batch * BENCH["projection"]
    return 3 * batch * (vision + tower(text_length) + projections + logits)


def matmul_rate(size: int = 1024, repeats: int = 20) -> float:
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        times.append(time.perf_counter() - start)
    return 2 * size**3 / statistics.median(times)


def caption(i: int, words: int, shift: int = 1) -> str:
    vocabulary = WORDS.split()
    return " ".join(vocabulary[(i * shift + k) % len(vocabulary)] for k in range(words))


def rows(batch_size: int, words: int = TYPICAL_WORDS, seed: int = 0) -> list[dict]:
    """Rows with pre-made pixels; rewrites as long as the caption (aug_T changes which text, not how much)."""
    generator = torch.Generator().manual_seed(seed)
    return [{"id": str(i), "pixel_values": torch.randn(3, BENCH["image_size"], BENCH["image_size"], generator=generator),
             "caption": caption(i, words), "rewrites": [caption(i, words, r) for r in range(2, 6)]}
            for i in range(batch_size)]


def naive_step(model, optimizer, batch):
    model(**batch, return_loss=True).loss.backward()
    optimizer.step()
    optimizer.zero_grad()


def memory_probe(checkpointing: bool, batch_size: int) -> int:
    """Peak RSS growth (bytes) over the first full-batch training step, measured in this (fresh) process."""
    tokenizer = train_word_tokenizer([WORDS], max_length=BENCH["context"])
    accelerator = Accelerator()
    model = LaCLIPModel(config(tokenizer))
    if checkpointing:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    model, optimizer = accelerator.prepare(model.train(), build_optimizer(model, 1e-4, 0.1))
    collator = ContrastiveCollator(tokenizer, BENCH["context"])
    train_step = TrainStep(accelerator, model, optimizer, Method.preset("clip").objective)
    step = lambda data: train_step(collator(data))  # noqa: E731
    step(rows(2))  # optimizer state, at a batch too small to move the peak
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    step(rows(batch_size))
    return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024


def peak_memory(checkpointing: bool, batch_size: int) -> int:
    code = (f"import sys; sys.path.insert(0, {repr(sys.path[0])}); import train_throughput as t; "
            f"print(t.memory_probe({checkpointing}, {batch_size}))")
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(output.stdout.strip().splitlines()[-1])


def median_times(runs: dict, steps: int) -> dict[str, float]:
    """Median seconds of each run over ``steps`` interleaved repetitions, after one warm-up call each."""
    times = {name: [] for name in runs}
    for run in runs.values():
        run()
    for _ in range(steps):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def loader_vs_tensors(step, loader, batch, steps: int, rounds: int = 2) -> tuple[float, float, float]:
    """(median s/step fed by ``loader``, median s/step on the ready ``batch``, mean s/step waiting for the loader),
    in ``rounds`` alternating blocks of ``steps`` steps after the workers' start and one warm-up step."""
    stream = iter(loader)
    step(batch)
    fed, ready, waits = [], [], []
    for _ in range(rounds):
        for _ in range(steps):
            start = time.perf_counter()
            streamed = next(stream)
            waits.append(time.perf_counter() - start)
            step(streamed)
            fed.append(time.perf_counter() - start)
        for _ in range(steps):
            start = time.perf_counter()
            step(batch)
            ready.append(time.perf_counter() - start)
    return statistics.median(fed), statistics.median(ready), statistics.mean(waits)


def data_seconds(batches: StreamedBatches, count: int) -> float:
    """Seconds per batch of the loader's own work (read, decode, crop, tokenise, collate) done in this process on one
    thread, as a DataLoader worker does it: the CPU time the worker takes from the step's cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        next(batches.take(1))  # the first batch starts the pass: not timed
        start = time.perf_counter()
        for _ in batches.take(count):
            pass
        return (time.perf_counter() - start) / count
    finally:
        torch.set_num_threads(threads)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=64, help="Pairs per training step.")
    parser.add_argument("--steps", type=int, default=15,
                        help="Timed repetitions of each step (after one warm-up); bf16 autocast gets at most 2.")
    parser.add_argument("--loader-steps", type=int, default=8, help="Steps per block of the streamed-JPEG comparison.")
    parser.add_argument("--memory-batch-size", type=int, default=256, help="Batch of the checkpointing memory probe.")
    parser.add_argument("--json", default=None, help="Also write the results to this JSON file.")
    args = parser.parse_args()

    # first, while this process is small: a child's ru_maxrss starts at the parent's resident size (Linux keeps
    # the pre-exec high-water mark), so probes started after the models below were built measured 0
    memory = {flag: peak_memory(flag, args.memory_batch_size) for flag in (False, True)}
    torch.manual_seed(0)
    accelerator = Accelerator()
    tokenizer = train_word_tokenizer([WORDS], max_length=BENCH["context"])
    model = LaCLIPModel(config(tokenizer)).train()
    naive = CLIPModel(config(tokenizer)).train()
    naive.load_state_dict(model.state_dict())
    compiled = LaCLIPModel(config(tokenizer)).train()
    compiled.load_state_dict(model.state_dict())
    plain = LaCLIPModel(config(tokenizer)).train()
    plain.load_state_dict(model.state_dict())
    model, optimizer = accelerator.prepare(model, build_optimizer(model, 1e-4, 0.1))
    plain, plain_optimizer = accelerator.prepare(plain, build_optimizer(plain, 1e-4, 0.1, fused=False))
    compiled_optimizer = accelerator.prepare(build_optimizer(compiled, 1e-4, 0.1))
    naive_optimizer = torch.optim.AdamW(naive.parameters(), 1e-4)
    clip, laclip = Method.preset("clip").objective, Method.preset("laclip").objective
    data = rows(args.batch_size)
    clip_collator = ContrastiveCollator(tokenizer, BENCH["context"])
    laclip_collator = ContrastiveCollator(tokenizer, BENCH["context"], augmenter=TextAugmenter(0))
    batch, full_batch = clip_collator(data), clip_collator(rows(args.batch_size, FULL_WORDS))

    clip_step, laclip_step = TrainStep(accelerator, model, optimizer, clip), TrainStep(accelerator, model, optimizer, laclip)
    plain_step = TrainStep(accelerator, plain, plain_optimizer, clip)

    def ours(batch, train_step=clip_step, with_norm=False):
        return lambda: train_step(batch, with_norm=with_norm)

    compiled_step = TrainStep(accelerator, torch.compile(compiled), compiled_optimizer, clip)
    started = time.perf_counter()
    compiled_step(batch)
    compile_seconds = time.perf_counter() - started

    def bf16():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            clip_step(batch)

    runs = {
        "naive transformers.CLIPModel loop": lambda: naive_step(naive, naive_optimizer, batch),
        "langclip step": ours(batch),
        "langclip step, --no-fused-optimizer": ours(batch, plain_step),
        "langclip step, logging step (gradient norm)": ours(batch, with_norm=True),
        "langclip step, full-length captions": ours(full_batch),
        "langclip step, torch.compile (inductor)": ours(batch, compiled_step),
        "CLIP collation + step": lambda: clip_step(clip_collator(data)),
        "LaCLIP (aug_T) collation + step": lambda: laclip_step(laclip_collator(data)),
    }
    step = median_times(runs, args.steps)
    # bf16 autocast is tens of times slower on a CPU without native bf16: timed apart, twice, so --steps stays cheap
    step["langclip step, bf16 autocast"] = median_times({"bf16": bf16}, min(2, args.steps))["bf16"]

    processor = default_image_processor(BENCH["image_size"])
    settings = loader_kwargs(None, accelerator.device)
    with tempfile.TemporaryDirectory(prefix="train_bench_shards_") as folder:  # the trainer's path for .tar shards
        make_shards(folder, shards=8, per_shard=4 * args.batch_size)  # 32 steps a pass: no pass restarts the loader
        stream = load_shard_stream(folder, seed=0, shuffle_buffer=1000)
        _, collator = Method.preset("laclip").prepare_data(model, stream.dataset(), tokenizer, BENCH["context"], processor, "cpu")
        batches = StreamedBatches(stream, collator, args.batch_size, settings, device=accelerator.device)
        loader = batches.take(1 + 2 * args.loader_steps)
        ready = next(loader)  # pre-made: the same batch, so texts and pixels match the streamed ones
        streamed, ready, wait = loader_vs_tensors(  # as the trainer: uint8 pixels normalised in the training process
            lambda b: laclip_step(normalize_pixels(b, processor.image_mean, processor.image_std)),
            loader, ready, args.loader_steps)
        data_work = data_seconds(StreamedBatches(stream, collator, args.batch_size), args.loader_steps)

    rate = matmul_rate()
    lengths = {"typical": batch["input_ids"].shape[1], "full": full_batch["input_ids"].shape[1]}
    flops = {name: training_flops(args.batch_size, length) for name, length in lengths.items()}

    parameters = sum(p.numel() for p in model.parameters())
    print(f"config: {parameters / 1e6:.1f}M parameters, ViT {BENCH['image_size']} px / patch {BENCH['patch']}, width "
          f"{BENCH['width']}, {BENCH['layers']} layers per tower, context {BENCH['context']}, batch {args.batch_size}, "
          f"fp32, {torch.get_num_threads()} threads, CPU capability {torch.backends.cpu.get_cpu_capability()}, "
          f"native bf16 matmul: {torch.ops.mkldnn._is_mkldnn_bf16_supported()}")
    print(f"measured fp32 matmul rate (1024^3 mm): {rate / 1e9:.1f} GFLOP/s; analytic step: {flops['typical'] / 1e9:.1f}"
          f" GFLOP at text length {lengths['typical']}, {flops['full'] / 1e9:.1f} GFLOP at {lengths['full']}\n")
    baseline, ours_seconds = step["naive transformers.CLIPModel loop"], step["langclip step"]
    print("| step | ms/step | samples/s | vs naive loop | vs langclip step | GFLOP/s | of matmul rate |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, seconds in step.items():
        work = flops["full" if "full-length" in name else "typical"]
        print(f"| {name} | {seconds * 1e3:.1f} | {args.batch_size / seconds:.0f} | {baseline / seconds:.2f}x | "
              f"{ours_seconds / seconds:.2f}x | {work / seconds / 1e9:.1f} | {work / seconds / rate:.0%} |")
    print(f"\nlangclip step vs naive CLIPModel loop: {baseline / ours_seconds:.2f}x (target >= 1.15x); "
          f"{flops['typical'] / ours_seconds / rate:.0%} of the matmul rate (target >= 60%)")
    print(f"LaCLIP / CLIP step time (collation in the step): "
          f"{step['LaCLIP (aug_T) collation + step'] / step['CLIP collation + step']:.3f} (target <= 1.03)")
    print(f"full-length / typical captions: {step['langclip step, full-length captions'] / ours_seconds:.2f}x the time "
          f"for {lengths['full'] / lengths['typical']:.2f}x the tokens")
    print(f"bf16 autocast: {ours_seconds / step['langclip step, bf16 autocast']:.2f}x the fp32 step; torch.compile: "
          f"{ours_seconds / step['langclip step, torch.compile (inductor)']:.2f}x (first step with compilation "
          f"{compile_seconds:.0f} s)")
    print(f"streamed JPEG (256 px, {settings['num_workers']} DataLoader workers, prefetch "
          f"{settings.get('prefetch_factor', 0)}): {streamed * 1e3:.0f} ms/step vs {ready * 1e3:.0f} ms/step on pre-made "
          f"tensors = {streamed / ready:.2f}x (target <= 1.05x); waited {wait * 1e3:.0f} ms/step for data")
    threads = torch.get_num_threads()
    print(f"the loader's work per batch on one thread: {data_work * 1e3:.0f} ms; were it to share the {threads} busy "
          f"cores perfectly, the streamed step would be {1 + data_work / (threads * ready):.2f}x, run serially "
          f"{1 + data_work / ready:.2f}x")
    reduction = 1 - memory[True] / max(memory[False], 1)
    print(f"peak memory growth of a step at batch {args.memory_batch_size}: {memory[False] / 2**20:.0f} MiB without, "
          f"{memory[True] / 2**20:.0f} MiB with gradient checkpointing ({reduction:.0%} less)")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"step_seconds": step, "matmul_flops": rate, "step_flops": flops, "peak_memory": memory,
                       "streamed_step": streamed, "ready_step": ready, "data_wait": wait, "data_work": data_work,
                       "compile_seconds": compile_seconds}, handle)


if __name__ == "__main__":
    main()

"""Training throughput on CPU, every figure against a baseline measured in the same run.

    python benchmarks/train_throughput.py [--sections core methods levers profile] [--batch-size 64 --steps 15]

Sections (all by default, each printing its table):
- ``core``: issue 20's model (`towers.SMALL`: both towers 4 layers x 256, 19.3M parameters, 96 px, patch 16,
  context 32, fp32, identical weights everywhere):
  - langclip's step (`step.TrainStep`: `forward_backward`, fused AdamW that skips non-finite steps on the device, no
    gradient norm off logging steps, logit-scale clamp) vs the naive `transformers.CLIPModel(..., return_loss=True)`
    + default AdamW loop, on the same ready batch;
  - achieved FLOP/s as a fraction of this machine's measured fp32 matmul rate (FLOPs counted analytically, `towers`);
  - ablations of our step: the opt-out AdamW (--no-fused-optimizer), a logging step (gradient norm);
  - LaCLIP (aug_T) vs CLIP with the collation inside the step (the in-process, num_workers=0 case);
  - full-length (32-token) vs typical (14-token) captions, padding to the longest in the batch;
  - bf16 autocast on CPU, and torch.compile (inductor), each against the eager fp32 step;
  - streamed JPEG input: .tar shards (img2dataset-style, 256 px JPEG) read as the trainer reads them
    (`load_shard_stream` + `StreamedBatches`: decode + RandomResizedCrop + aug_T in DataLoader workers, the trainer's
    default `loader_kwargs`) vs the same step on a pre-made batch;
  - peak memory of a step with and without gradient checkpointing (fresh processes).
- ``methods``: the step of clip, laclip-mt (5 texts per image), clips and pcclip on the same towers, its time and
  analytic FLOPs relative to the CLIP step; each method in a fresh process, interleaved with a CLIP step there; the
  CLIPS/CLIP pair again under bf16 autocast.
- ``levers``: patch dropout 0.5 and 0.75, and a locked image tower, against the plain step on ViT-B/16 at 224 px
  (`towers.VIT_B16`): time, analytic FLOPs and peak memory (fresh processes).
- ``profile``: `torch.profiler`'s top operators by self CPU time, then by input shape, in one method's step
  (``--profile-method``, default clip).

Timings are medians over interleaved repetitions; the machine may be shared, so compare
ratios within one run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time

import torch
from accelerate import Accelerator
from transformers import CLIPModel

from langclip import CLIPSModel, LaCLIPModel
from langclip.modeling.image_processing import default_image_processor
from langclip.modeling.losses import IGNORE_INDEX, caption_nll
from langclip.modeling.vision import set_patch_dropout
from langclip.testing import train_word_tokenizer
from langclip.processing.collators import CLIPSCollator, ContrastiveCollator, DifferenceCollator
from langclip.training.data import StreamedBatches, load_shard_stream, loader_kwargs
from langclip.processing.text import PartialCaption, TextAugmenter
from langclip.processing.transforms import normalize_pixels
from langclip.training.methods import Method, TowerLock
from langclip.training.optim import build_optimizer
from langclip.training.step import TrainStep
from loader_throughput import make_shards  # the loader benchmark's img2dataset-style shards (256 px JPEG)
from towers import CLIP_VOCABULARY, SMALL, VIT_B16, Towers

WORDS = "a photo of the red green blue yellow circle square triangle star small large one two three on left right top"
TYPICAL_WORDS, FULL_WORDS = 12, 40  # + BOS/EOS: 14 tokens, and 32 (cut at the context)
SENTENCES = 6  # CLIPS' synthetic captions: 6 sentences x 10 words, ~ 70 tokens with the specials
METHODS = ("clip", "laclip-mt", "clips", "pcclip")  # the methods section's rows (laclip's step is clip's)


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


def rows(batch_size: int, words: int = TYPICAL_WORDS, seed: int = 0, image_size: int = SMALL.image_size) -> list[dict]:
    """Rows with pre-made pixels; 4 rewrites as long as the caption (aug_T changes which text, not how much); a
    CLIPS synthetic caption of `SENTENCES` sentences."""
    generator = torch.Generator().manual_seed(seed)
    return [{"id": str(i), "pixel_values": torch.randn(3, image_size, image_size, generator=generator),
             "caption": caption(i, words), "rewrites": [caption(i, words, r) for r in range(2, 6)],
             "synthetic_caption": " ".join(caption(i + 3 * s, 10) + "." for s in range(SENTENCES))}
            for i in range(batch_size)]


def naive_step(model, optimizer, batch):
    model(**batch, return_loss=True).loss.backward()
    optimizer.step()
    optimizer.zero_grad()


def high_water_mark() -> int:
    """This process's peak resident memory in bytes (``VmHWM``: per address space, so it starts afresh at exec,
    unlike ``ru_maxrss``, which a child inherits from its parent)."""
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM"))


def method_model(method: str, sizes: Towers, tokenizer, **options):
    """A fresh model of ``method`` (a ``--method`` preset) on ``sizes``, with ``options`` (config values) set and the
    preset's parts frozen."""
    preset = Method.preset(method)
    if method == "clips":
        model = CLIPSModel(sizes.clips_config(tokenizer, **options))
    else:
        model = LaCLIPModel(sizes.config(tokenizer, **preset.objective.config_overrides, **options))
    preset.freeze(model)
    return model.train()


def method_batch(method: str, sizes: Towers, tokenizer, data: list[dict]) -> dict:
    """A ready batch of ``data`` (`rows`) for ``method``: LaCLIP-MT with 5 texts per image, CLIPS with a 32-token
    sub-caption, PC-CLIP with image i against image i + 1 and a caption-long difference text."""
    context = sizes.context
    if method == "laclip-mt":
        return ContrastiveCollator(tokenizer, context, augmenter=TextAugmenter(0), num_texts=5)(data)
    if method == "clips":
        return CLIPSCollator(tokenizer, context, PartialCaption(tokenizer, "subcaption", 32, seed=0))(data)
    if method == "pcclip":
        pixels = {row["id"]: row["pixel_values"] for row in data}
        pairs = [{"id_a": str(i), "id_b": str((i + 1) % len(data)), "difference": caption(i, TYPICAL_WORDS, 3)}
                 for i in range(len(data))]
        return DifferenceCollator(tokenizer, context, pixels.__getitem__)(pairs)
    return ContrastiveCollator(tokenizer, context)(data)


def memory_probe(towers: str, batch_size: int, method: str = "clip", checkpointing: bool = False,
                 lock_image: bool = False, patch_dropout: float = 0.0) -> int:
    """Peak memory growth (bytes) over the first full-batch step of ``method`` on the ``towers`` model (`SMALL`,
    `VIT_B16`), measured in this (fresh) process, after a 2-row step has made the optimizer state."""
    sizes: Towers = globals()[towers]
    tokenizer = train_word_tokenizer([WORDS], max_length=sizes.context)
    accelerator = Accelerator()
    model = method_model(method, sizes, tokenizer, patch_dropout=patch_dropout)
    TowerLock(image=lock_image).apply(model)
    if checkpointing:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    model, optimizer = accelerator.prepare(model, build_optimizer(model, 1e-4, 0.1))
    train_step = TrainStep(accelerator, model, optimizer, Method.preset(method).objective)
    step = lambda size: train_step(method_batch(method, sizes, tokenizer, rows(size, image_size=sizes.image_size)))  # noqa: E731
    step(2)
    before = high_water_mark()
    step(batch_size)
    return high_water_mark() - before


def in_fresh_process(function: str, *args, **kwargs):
    """``function(*args, **kwargs)`` of this module, run in a fresh Python process; its JSON result."""
    code = (f"import sys, json; sys.path.insert(0, {repr(sys.path[0])}); import train_throughput as t; "
            f"print(json.dumps(t.{function}(*{args!r}, **{kwargs!r})))")
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(output.stdout.strip().splitlines()[-1])


def peak_memory(towers: str, batch_size: int, **options) -> int:
    """`memory_probe` in a fresh process."""
    return in_fresh_process("memory_probe", towers, batch_size, **options)


def paired_step_seconds(method: str, batch_size: int, steps: int, mixed_precision: str = "no") -> dict:
    """Median seconds of the CLIP step and of ``method``'s step (ready batches of `rows`, `TrainStep`), interleaved
    in this process, on `SMALL` towers with the same initial weights (CLIPS' captioner is its own); with ``method``'s
    trainable parameter count. Run in a fresh process per method, as a trainer holds one model: the large tensors of
    other methods' models in one process made the CLIPS step's time vary by a third between runs. ``mixed_precision``:
    Accelerate's (``"bf16"``: both steps under bf16 autocast)."""
    tokenizer = train_word_tokenizer([WORDS], max_length=VIT_B16.context)
    accelerator = Accelerator(mixed_precision=mixed_precision)
    torch.manual_seed(0)
    data = rows(batch_size)
    base = LaCLIPModel(SMALL.config(tokenizer)).state_dict()
    runs = {}
    for name in ("clip", method):
        model = method_model(name, SMALL, tokenizer)
        model.load_state_dict(base, strict=False)
        model, optimizer = accelerator.prepare(model, build_optimizer(model, 1e-4, 0.1))
        train_step = TrainStep(accelerator, model, optimizer, Method.preset(name).objective)
        runs[name] = lambda train_step=train_step, batch=method_batch(name, SMALL, tokenizer, data): train_step(batch)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)  # the last model built: ``method``'s
    return {"seconds": median_times(runs, steps), "trainable": trainable}


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


def core(args, accelerator, tokenizer) -> dict:
    """Issue 20's rows: our step vs the naive loop and its ablations, bf16, compile, streamed JPEG, checkpointing."""
    memory = {flag: peak_memory("SMALL", args.memory_batch_size, checkpointing=flag) for flag in (False, True)}
    torch.manual_seed(0)
    model = LaCLIPModel(SMALL.config(tokenizer)).train()
    naive = CLIPModel(SMALL.config(tokenizer)).train()
    naive.load_state_dict(model.state_dict())
    compiled = LaCLIPModel(SMALL.config(tokenizer)).train()
    compiled.load_state_dict(model.state_dict())
    plain = LaCLIPModel(SMALL.config(tokenizer)).train()
    plain.load_state_dict(model.state_dict())
    model, optimizer = accelerator.prepare(model, build_optimizer(model, 1e-4, 0.1))
    plain, plain_optimizer = accelerator.prepare(plain, build_optimizer(plain, 1e-4, 0.1, fused=False))
    compiled_optimizer = accelerator.prepare(build_optimizer(compiled, 1e-4, 0.1))
    naive_optimizer = torch.optim.AdamW(naive.parameters(), 1e-4)
    clip, laclip = Method.preset("clip").objective, Method.preset("laclip").objective
    data = rows(args.batch_size)
    clip_collator = ContrastiveCollator(tokenizer, SMALL.context)
    laclip_collator = ContrastiveCollator(tokenizer, SMALL.context, augmenter=TextAugmenter(0))
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

    processor = default_image_processor(SMALL.image_size)
    settings = loader_kwargs(None, accelerator.device)
    with tempfile.TemporaryDirectory(prefix="train_bench_shards_") as folder:  # the trainer's path for .tar shards
        make_shards(folder, shards=8, per_shard=4 * args.batch_size)  # 32 steps a pass: no pass restarts the loader
        stream = load_shard_stream(folder, seed=0, shuffle_buffer=1000)
        _, collator = Method.preset("laclip").prepare_data(model, stream.dataset(), tokenizer, SMALL.context, processor, "cpu")
        batches = StreamedBatches(stream, collator, args.batch_size, settings, device=accelerator.device)
        loader = batches.take(1 + 2 * args.loader_steps)
        ready = next(loader)  # pre-made: the same batch, so texts and pixels match the streamed ones
        streamed, ready, wait = loader_vs_tensors(  # as the trainer: uint8 pixels normalised in the training process
            lambda b: laclip_step(normalize_pixels(b, processor.image_mean, processor.image_std)),
            loader, ready, args.loader_steps)
        data_work = data_seconds(StreamedBatches(stream, collator, args.batch_size), args.loader_steps)

    rate = matmul_rate()
    lengths = {"typical": batch["input_ids"].shape[1], "full": full_batch["input_ids"].shape[1]}
    flops = {name: SMALL.step_flops("clip", args.batch_size, length) for name, length in lengths.items()}

    parameters = sum(p.numel() for p in model.parameters())
    print(f"config: {parameters / 1e6:.1f}M parameters, ViT {SMALL.image_size} px / patch {SMALL.patch}, width "
          f"{SMALL.vision_width}, {SMALL.vision_layers} layers per tower, context {SMALL.context}, batch "
          f"{args.batch_size}, fp32, {torch.get_num_threads()} threads, CPU capability "
          f"{torch.backends.cpu.get_cpu_capability()}, native bf16 matmul: {torch.ops.mkldnn._is_mkldnn_bf16_supported()}")
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
          f"{memory[True] / 2**20:.0f} MiB with gradient checkpointing ({reduction:.0%} less)\n")
    return {"step_seconds": step, "matmul_flops": rate, "step_flops": flops, "peak_memory": memory,
            "streamed_step": streamed, "ready_step": ready, "data_wait": wait, "data_work": data_work,
            "compile_seconds": compile_seconds}


def cross_entropy_seconds(batch: int, length: int, steps: int) -> dict[str, float]:
    """Median seconds of the captioner's next-token cross-entropy, forward + backward over (batch, length, CLIP's
    vocabulary) logits, as `caption_nll` computes it and as ``F.cross_entropy`` would: the memory-bound softmax of
    CLIPS' captioner, which the FLOP count leaves out."""
    logits = torch.randn(batch, length, CLIP_VOCABULARY, requires_grad=True)
    ids = torch.randint(CLIP_VOCABULARY, (batch, length))
    targets = torch.nn.functional.pad(ids[:, 1:], (0, 1), value=IGNORE_INDEX).flatten()

    def run(loss):
        def once():
            loss().backward()
            logits.grad = None
        return once

    return median_times({
        "caption_nll": run(lambda: caption_nll(logits, ids, None).nll_sum.sum()),  # keeping the logits
        "F.cross_entropy": run(lambda: torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets,
                                                                         reduction="sum")),
    }, steps)


def methods(args, accelerator, tokenizer) -> dict:
    """Each method's step (ready batch: `TrainStep` = forward, backward, fused AdamW, clamp) on the `SMALL` towers,
    against its analytic FLOPs, both relative to the CLIP step (`paired_step_seconds`, a fresh process per method)."""
    memory = {name: peak_memory("SMALL", args.batch_size, method=name) for name in METHODS}
    paired = {name: in_fresh_process("paired_step_seconds", name, args.batch_size, args.steps) for name in METHODS[1:]}
    clip_seconds = [result["seconds"]["clip"] for result in paired.values()]
    seconds = {"clip": statistics.median(clip_seconds), **{name: paired[name]["seconds"][name] for name in paired}}
    time_ratio = {"clip": 1.0, **{name: paired[name]["seconds"][name] / paired[name]["seconds"]["clip"]
                                  for name in paired}}
    trainable = {"clip": sum(p.numel() for p in method_model("clip", SMALL, tokenizer).parameters() if p.requires_grad),
                 **{name: paired[name]["trainable"] for name in paired}}
    data = rows(args.batch_size)
    batches = {name: method_batch(name, SMALL, tokenizer, data) for name in METHODS}

    length = batches["clip"]["input_ids"].shape[-1]
    flops = {
        "clip": SMALL.step_flops("clip", args.batch_size, length),
        "laclip-mt": SMALL.step_flops("laclip-mt", args.batch_size, batches["laclip-mt"]["input_ids"].shape[-1],
                                      num_texts=batches["laclip-mt"]["input_ids"].shape[1]),
        "clips": SMALL.step_flops("clips", args.batch_size, batches["clips"]["input_ids"].shape[-1],
                                  partial_length=batches["clips"]["partial_input_ids"].shape[-1],
                                  caption_length=batches["clips"]["caption_input_ids"].shape[-1]),
        "pcclip": SMALL.step_flops("pcclip", args.batch_size, batches["pcclip"]["input_ids"].shape[-1]),
    }
    print(f"each method's step on the same towers, batch {args.batch_size}, texts of {length} tokens; LaCLIP-MT: 5 "
          f"texts per image; CLIPS: partial caption {batches['clips']['partial_input_ids'].shape[-1]} and synthetic "
          f"caption {batches['clips']['caption_input_ids'].shape[-1]} tokens, captioner {SMALL.captioner_layers} "
          "layers; PC-CLIP: frozen image tower, both images of a pair encoded, text blocks train. Each method is "
          "timed in its own process, interleaved with a CLIP step there (time vs CLIP is that pair's ratio; the "
          f"clip row is the median of its {len(clip_seconds)} processes: "
          f"{', '.join(f'{value * 1e3:.0f}' for value in clip_seconds)} ms)\n")
    print("| method | ms/step | analytic GFLOP | time vs CLIP | FLOPs vs CLIP | time ratio / FLOP ratio | trainable | "
          "peak memory growth |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name in METHODS:
        flop_ratio = flops[name] / flops["clip"]
        print(f"| {name} | {seconds[name] * 1e3:.0f} | {flops[name] / 1e9:.1f} | {time_ratio[name]:.2f}x | "
              f"{flop_ratio:.2f}x | {time_ratio[name] / flop_ratio:.2f} | {trainable[name] / 1e6:.1f}M | "
              f"{memory[name] / 2**20:.0f} MiB |")
    bf16_steps = min(args.steps, 5)
    bf16 = in_fresh_process("paired_step_seconds", "clips", args.batch_size, bf16_steps, "bf16")["seconds"]
    print(f"under bf16 autocast (its own process, {bf16_steps} steps): CLIP {bf16['clip'] * 1e3:.0f} ms, CLIPS "
          f"{bf16['clips'] * 1e3:.0f} ms ({seconds['clips'] / bf16['clips']:.2f}x faster than fp32 CLIPS), time / FLOP "
          f"ratio {bf16['clips'] / bf16['clip'] / (flops['clips'] / flops['clip']):.2f}")
    caption_length = batches["clips"]["caption_input_ids"].shape[-1]
    softmax = cross_entropy_seconds(args.batch_size, caption_length, args.steps)
    ours, peer = softmax["caption_nll"], softmax["F.cross_entropy"]
    print(f"target: LaCLIP-MT and CLIPS at most 1.10 in the time / FLOP column; of the CLIPS step, the captioner's "
          f"cross-entropy alone (`caption_nll`, forward + backward over ({args.batch_size * caption_length}, "
          f"{CLIP_VOCABULARY}) logits) takes {ours * 1e3:.0f} ms ({ours / seconds['clips']:.0%}; F.cross_entropy: "
          f"{peer * 1e3:.0f} ms, {peer / ours:.2f}x), 0 FLOPs in the count; without it CLIPS would be "
          f"{(seconds['clips'] - ours) / paired['clips']['seconds']['clip'] / (flops['clips'] / flops['clip']):.2f}\n")
    return {"method_seconds": seconds, "method_time_ratio": time_ratio, "method_flops": flops,
            "method_trainable": trainable, "method_memory": memory, "caption_cross_entropy_seconds": softmax,
            "bf16_clips_pair_seconds": bf16}


def levers(args, accelerator, tokenizer) -> dict:
    """Patch dropout 0.5 / 0.75 and a locked image tower against the plain CLIP step, on `VIT_B16` at 224 px."""
    batch_size = args.lever_batch_size
    memory = {name: peak_memory("VIT_B16", batch_size, **options) for name, options in
              (("none", {}), ("patch dropout 0.5", {"patch_dropout": 0.5}), ("image tower locked", {"lock_image": True}))}
    torch.manual_seed(0)
    data = rows(batch_size, image_size=VIT_B16.image_size)
    batch = ContrastiveCollator(tokenizer, VIT_B16.context)(data)
    clip = Method.preset("clip").objective
    model = LaCLIPModel(VIT_B16.config(tokenizer)).train()
    locked = LaCLIPModel(VIT_B16.config(tokenizer)).train()
    locked.load_state_dict(model.state_dict())
    TowerLock(image=True).apply(locked)
    model, optimizer = accelerator.prepare(model, build_optimizer(model, 1e-4, 0.1))
    locked, locked_optimizer = accelerator.prepare(locked, build_optimizer(locked, 1e-4, 0.1))
    train_step, locked_step = TrainStep(accelerator, model, optimizer, clip), TrainStep(accelerator, locked, locked_optimizer, clip)

    def dropping(prob: float):
        def run():
            set_patch_dropout(model.vision_model, prob)
            train_step(batch)
        return run

    runs = {"none": dropping(0.0), "patch dropout 0.5": dropping(0.5), "patch dropout 0.75": dropping(0.75),
            "image tower locked": lambda: locked_step(batch)}
    seconds = median_times(runs, args.lever_steps)
    length = batch["input_ids"].shape[1]
    flops = {"none": VIT_B16.step_flops("clip", batch_size, length),
             "patch dropout 0.5": VIT_B16.step_flops("clip", batch_size, length, patch_dropout=0.5),
             "patch dropout 0.75": VIT_B16.step_flops("clip", batch_size, length, patch_dropout=0.75),
             "image tower locked": VIT_B16.step_flops("clip", batch_size, length, image_trains=False)}
    parameters = sum(p.numel() for p in model.parameters())
    print(f"speed levers on ViT-B/16 at {VIT_B16.image_size} px ({parameters / 1e6:.1f}M parameters, text "
          f"{VIT_B16.text_layers} x {VIT_B16.text_width}), batch {batch_size}, texts of {length} tokens, fp32\n")
    print("| setting | ms/step | speed-up | analytic GFLOP | FLOP ratio | peak memory growth of a step |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, value in seconds.items():
        peak = f"{memory[name] / 2**20:.0f} MiB" if name in memory else ""
        print(f"| {name} | {value * 1e3:.0f} | {seconds['none'] / value:.2f}x | {flops[name] / 1e9:.0f} | "
              f"{flops['none'] / flops[name]:.2f}x | {peak} |")
    print(f"target: patch dropout 0.5 at least 1.5x: {seconds['none'] / seconds['patch dropout 0.5']:.2f}x\n")
    return {"lever_seconds": seconds, "lever_flops": flops, "lever_peak_memory": memory}


def profile(args, accelerator, tokenizer) -> dict:
    """`torch.profiler` of one method's step (``--profile-method``) on `SMALL`: the top operators by self CPU time,
    per step, then the top (operator, input shapes) pairs, which tell the matmuls apart."""
    torch.manual_seed(0)
    method = args.profile_method
    model = method_model(method, SMALL, tokenizer)
    model, optimizer = accelerator.prepare(model, build_optimizer(model, 1e-4, 0.1))
    train_step = TrainStep(accelerator, model, optimizer, Method.preset(method).objective)
    batch = method_batch(method, SMALL, tokenizer, rows(args.batch_size))
    train_step(batch)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], record_shapes=True) as profiler:
        for _ in range(args.profile_steps):
            train_step(batch)
    steps = args.profile_steps
    events = sorted(profiler.key_averages(), key=lambda event: event.self_cpu_time_total, reverse=True)
    total = sum(event.self_cpu_time_total for event in events)
    print(f"torch.profiler, {method} step, batch {args.batch_size}, {steps} steps: top operators by self CPU "
          f"time ({total / 1e3 / steps:.0f} ms/step profiled)\n")
    print("| operator | self ms/step | share | calls/step |")
    print("| --- | ---: | ---: | ---: |")
    top = events[:args.profile_rows]
    for event in top:
        print(f"| `{event.key}` | {event.self_cpu_time_total / 1e3 / steps:.1f} | "
              f"{event.self_cpu_time_total / total:.1%} | {event.count // steps} |")
    shaped = sorted(profiler.key_averages(group_by_input_shape=True), key=lambda event: event.self_cpu_time_total,
                    reverse=True)[:args.profile_rows]
    print("\n| operator | input shapes | self ms/step | share | calls/step |")
    print("| --- | --- | ---: | ---: | ---: |")
    for event in shaped:
        shapes = ", ".join("x".join(map(str, shape)) for shape in event.input_shapes if shape)
        print(f"| `{event.key}` | {shapes} | {event.self_cpu_time_total / 1e3 / steps:.1f} | "
              f"{event.self_cpu_time_total / total:.1%} | {event.count // steps} |")
    print()
    return {"profile": {event.key: event.self_cpu_time_total / 1e6 / steps for event in top}}


SECTIONS = {"core": core, "methods": methods, "levers": levers, "profile": profile}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sections", nargs="+", choices=tuple(SECTIONS), default=list(SECTIONS),
                        help="Which parts to run (default: all, in this order).")
    parser.add_argument("--batch-size", type=int, default=64, help="Pairs per training step on the small towers.")
    parser.add_argument("--steps", type=int, default=15,
                        help="Timed repetitions of each step (after one warm-up); bf16 autocast gets at most 2.")
    parser.add_argument("--loader-steps", type=int, default=8, help="Steps per block of the streamed-JPEG comparison.")
    parser.add_argument("--memory-batch-size", type=int, default=256, help="Batch of the checkpointing memory probe.")
    parser.add_argument("--lever-batch-size", type=int, default=8, help="Pairs per ViT-B/16 step of the levers.")
    parser.add_argument("--lever-steps", type=int, default=3, help="Timed repetitions of each ViT-B/16 step.")
    parser.add_argument("--profile-method", choices=METHODS, default="clip",
                        help="The method whose step the profile section profiles.")
    parser.add_argument("--profile-steps", type=int, default=5, help="Profiled steps (after one warm-up).")
    parser.add_argument("--profile-rows", type=int, default=12, help="Operators in the profile table.")
    parser.add_argument("--json", default=None, help="Also write the results to this JSON file.")
    args = parser.parse_args()

    accelerator = Accelerator()
    tokenizer = train_word_tokenizer([WORDS], max_length=VIT_B16.context)
    results = {}
    for name in args.sections:
        results.update(SECTIONS[name](args, accelerator, tokenizer))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle)


if __name__ == "__main__":
    main()

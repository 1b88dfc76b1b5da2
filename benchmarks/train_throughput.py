"""Training throughput on CPU, against baselines measured in the same run.

    python benchmarks/train_throughput.py [--batch-size 32 --steps 5]

Rows:
- our step (`forward_backward` + AdamW + logit-scale clamp, CLIP and LaCLIP collation) vs a naive
  `transformers.CLIPModel(..., return_loss=True)` loop on the same config and batch;
- achieved FLOP/s as a fraction of this machine's measured fp32 matmul rate (FLOPs counted
  analytically per layer: 2 FLOPs per multiply-add in every linear layer, attention's QK^T
  and AV, patch embedding and projections; a training step = 3x the forward);
- peak memory of a training step with and without gradient checkpointing (peak RSS growth
  in a fresh process, activations dominate at this batch).

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
import time

import torch
from transformers import CLIPModel

from langclip import LaCLIPConfig, LaCLIPModel
from langclip.processing.collators import ContrastiveCollator
from langclip.processing.text import TextAugmenter
from langclip.demo.tokenization import train_word_tokenizer
from langclip.training.optim import build_optimizer
from langclip.training.methods import Method
from langclip.training.trainer import forward_backward

WORDS = "a photo of the red green blue yellow circle square triangle star small large one two three on left right top"
BENCH = dict(width=256, layers=4, heads=4, image_size=64, patch=8, context=32, projection=128)


def config(tokenizer) -> LaCLIPConfig:
    tower = dict(hidden_size=BENCH["width"], intermediate_size=4 * BENCH["width"], num_hidden_layers=BENCH["layers"],
                 num_attention_heads=BENCH["heads"])
    text = dict(tower, vocab_size=len(tokenizer), max_position_embeddings=BENCH["context"],
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
    loss = 2 * 2 * batch * BENCH["projection"]
    return 3 * batch * (vision + tower(text_length) + projections + loss)


def matmul_rate(size: int = 1024, repeats: int = 20) -> float:
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        times.append(time.perf_counter() - start)
    return 2 * size**3 / statistics.median(times)


def rows(batch_size: int, seed: int = 0) -> list[dict]:
    generator = torch.Generator().manual_seed(seed)
    words = WORDS.split()
    return [{
        "id": str(i),
        "pixel_values": torch.randn(3, BENCH["image_size"], BENCH["image_size"], generator=generator),
        "caption": " ".join(words[(i + k) % len(words)] for k in range(8)),
        # rewrites as long as the caption: aug_T changes which text, not how much text, is encoded
        "rewrites": [" ".join(words[(i * r + k) % len(words)] for k in range(8)) for r in range(2, 6)],
    } for i in range(batch_size)]


def our_step(model, optimizer, collator, data):
    batch = collator(data)
    forward_backward(model, batch, Method.preset("laclip"), model)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    model.clamp_logit_scale_()
    return batch


def naive_step(model, optimizer, batch):
    model(**batch, return_loss=True).loss.backward()
    optimizer.step()
    optimizer.zero_grad()


def memory_probe(checkpointing: bool, batch_size: int) -> int:
    """Peak RSS growth (bytes) over the first full-batch training step, measured in this (fresh) process."""
    tokenizer = train_word_tokenizer([WORDS], max_length=BENCH["context"])
    model = LaCLIPModel(config(tokenizer))
    if checkpointing:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    optimizer = build_optimizer(model, 1e-4, 0.1)
    collator = ContrastiveCollator(tokenizer, BENCH["context"], augmenter=TextAugmenter(0))
    our_step(model, optimizer, collator, rows(2))  # optimizer state, at a batch too small to move the peak
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    our_step(model, optimizer, collator, rows(batch_size))
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=32, help="Pairs per training step.")
    parser.add_argument("--steps", type=int, default=5, help="Timed repetitions of each step (after one warm-up).")
    parser.add_argument("--memory-batch-size", type=int, default=256, help="Batch of the checkpointing memory probe.")
    parser.add_argument("--json", default=None, help="Also write the results to this JSON file.")
    args = parser.parse_args()

    torch.manual_seed(0)
    tokenizer = train_word_tokenizer([WORDS], max_length=BENCH["context"])
    ours = LaCLIPModel(config(tokenizer)).train()
    naive = CLIPModel(config(tokenizer)).train()
    naive.load_state_dict(ours.state_dict())
    ours_optimizer, naive_optimizer = build_optimizer(ours, 1e-4, 0.1), torch.optim.AdamW(naive.parameters(), 1e-4)
    data = rows(args.batch_size)
    clip_collator = ContrastiveCollator(tokenizer, BENCH["context"])
    laclip_collator = ContrastiveCollator(tokenizer, BENCH["context"], augmenter=TextAugmenter(0))
    naive_batch = clip_collator(data)

    runs = {
        "ours, CLIP": lambda: our_step(ours, ours_optimizer, clip_collator, data),
        "ours, LaCLIP (aug_T)": lambda: our_step(ours, ours_optimizer, laclip_collator, data),
        "naive transformers.CLIPModel loop": lambda: naive_step(naive, naive_optimizer, naive_batch),
    }
    step = median_times(runs, args.steps)
    rate = matmul_rate()
    text_length = clip_collator(data)["input_ids"].shape[1]
    flops = training_flops(args.batch_size, text_length)
    memory = {flag: peak_memory(flag, args.memory_batch_size) for flag in (False, True)}

    print(f"config: ViT {BENCH['image_size']} px / patch {BENCH['patch']}, width {BENCH['width']}, "
          f"{BENCH['layers']} layers per tower, text length {text_length}, batch {args.batch_size}, fp32, "
          f"{torch.get_num_threads()} threads")
    print(f"measured fp32 matmul rate (1024^3 mm): {rate / 1e9:.1f} GFLOP/s; analytic step: {flops / 1e9:.2f} GFLOP\n")
    baseline = step["naive transformers.CLIPModel loop"]
    print("| step | ms/step | samples/s | vs naive loop | GFLOP/s | of matmul rate |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, seconds in step.items():
        print(f"| {name} | {seconds * 1e3:.1f} | {args.batch_size / seconds:.0f} | {baseline / seconds:.2f}x | "
              f"{flops / seconds / 1e9:.1f} | {flops / seconds / rate:.0%} |")
    print(f"\nLaCLIP / CLIP step time: {step['ours, LaCLIP (aug_T)'] / step['ours, CLIP']:.3f}")
    reduction = 1 - memory[True] / memory[False]
    print(f"peak memory growth of a step at batch {args.memory_batch_size}: {memory[False] / 2**20:.0f} MiB without, "
          f"{memory[True] / 2**20:.0f} MiB with gradient checkpointing ({reduction:.0%} less)")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"step_seconds": step, "matmul_flops": rate, "step_flops": flops, "peak_memory": memory}, handle)


if __name__ == "__main__":
    main()

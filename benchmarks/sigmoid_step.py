"""Sigmoid (SigLIP) vs softmax (CLIP) loss on CPU: step time and peak memory at batch 64/256/1024, same run.

    python benchmarks/sigmoid_step.py [--batch-sizes 64 256 1024 --steps 5 --dim 512]

Two kinds of step, each with both losses:

- ``loss``: forward + backward of the loss alone on (B, D) normalised features (D = 512,
  ViT-B/16's embedding), where the two losses differ: B x B logits either way, a
  log-softmax over rows and columns (CLIP) against an elementwise log-sigmoid (SigLIP);
- ``model``: a whole training step of a small LaCLIP (2 layers x 64 wide, 32 px images, 16
  text tokens): `forward_backward` + AdamW + the clamp, on prepared batches.

Time: median seconds over interleaved repetitions, after a warm-up (softmax and sigmoid
alternate, so both see the same machine load). Peak memory: the growth of the peak
resident set size over the steps, measured in a fresh subprocess per row (CPU torch has
no allocator statistics). The ratio column is sigmoid / softmax.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys

import torch

from langclip import LaCLIPConfig, LaCLIPModel
from langclip.modeling.losses import clip_loss, sigmoid_loss
from langclip.training.methods import Method
from langclip.training.optim import build_optimizer
from langclip.training.step import forward_backward
from train_throughput import median_times

FORMS = ("softmax", "sigmoid")
TOWER = dict(hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4)


def loss_step(form: str, batch_size: int, dim: int):
    """A closure running forward + backward of ``form``'s loss on fixed random features."""
    generator = torch.Generator().manual_seed(batch_size)
    image = torch.nn.functional.normalize(torch.randn(batch_size, dim, generator=generator), dim=-1)
    text = torch.nn.functional.normalize(torch.randn(batch_size, dim, generator=generator), dim=-1)
    scale = torch.tensor(2.3, requires_grad=True)
    bias = torch.tensor(-10.0, requires_grad=True)

    def run():
        x, y = image.clone().requires_grad_(), text.clone().requires_grad_()
        if form == "sigmoid":
            loss = sigmoid_loss(x, y, scale.exp(), bias)
        else:
            loss = clip_loss(x, y, scale.exp())
        loss.backward()

    return run


def model_step(form: str, batch_size: int, dim: int):
    """A closure running one training step of a small LaCLIP with ``form``'s loss on a fixed batch."""
    del dim
    torch.manual_seed(0)
    method = Method.preset("clip", contrastive_loss=form)
    config = LaCLIPConfig(text_config=dict(TOWER, vocab_size=64, max_position_embeddings=16, pad_token_id=0,
                                           bos_token_id=1, eos_token_id=2),
                          vision_config=dict(TOWER, image_size=32, patch_size=8), projection_dim=64,
                          **method.objective.config_overrides)
    model = LaCLIPModel(config).train()
    optimizer = build_optimizer(model, 1e-4, 0.1, (0.9, 0.98), 1e-8)
    generator = torch.Generator().manual_seed(batch_size)
    batch = {"pixel_values": torch.randn(batch_size, 3, 32, 32, generator=generator),
             "input_ids": torch.randint(3, 64, (batch_size, 16), generator=generator)}

    def run():
        forward_backward(model, batch, method.objective, model)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        model.clamp_logit_scale_()

    return run


KINDS = {"loss": loss_step, "model": model_step}


def rss_kib() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def peak_growth_mib(kind: str, form: str, batch_size: int, dim: int, steps: int) -> float:
    """In this (fresh) process: peak RSS growth over ``steps`` steps, MiB."""
    run = KINDS[kind](form, batch_size, dim)
    before = rss_kib()
    for _ in range(steps):
        run()
    return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024


def measure_memory(kind: str, form: str, batch_size: int, dim: int, steps: int) -> float:
    command = [sys.executable, __file__, "--memory-of", kind, form, str(batch_size), "--dim", str(dim),
               "--steps", str(steps)]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])["peak_mib"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 256, 1024], help="Batch sizes to measure.")
    parser.add_argument("--steps", type=int, default=5, help="Timed repetitions per row (after one warm-up).")
    parser.add_argument("--dim", type=int, default=512, help="Feature size of the loss-only rows.")
    parser.add_argument("--kinds", nargs="+", default=list(KINDS), choices=list(KINDS), help="Which steps to measure.")
    parser.add_argument("--memory-of", nargs=3, metavar=("KIND", "FORM", "BATCH"),
                        help="Internal: measure one row's peak memory in this process and print it as JSON.")
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", torch.get_num_threads())))
    if args.memory_of:
        kind, form, batch_size = args.memory_of
        print(json.dumps({"peak_mib": peak_growth_mib(kind, form, int(batch_size), args.dim, args.steps)}))
        return
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; median of {args.steps} steps")
    print("| step | batch | softmax s | sigmoid s | time ratio | softmax peak MiB | sigmoid peak MiB | memory ratio |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for kind in args.kinds:
        for batch_size in args.batch_sizes:
            seconds = median_times({form: KINDS[kind](form, batch_size, args.dim) for form in FORMS}, args.steps)
            memory = {form: measure_memory(kind, form, batch_size, args.dim, args.steps) for form in FORMS}
            print(f"| {kind} | {batch_size} | {seconds['softmax']:.4f} | {seconds['sigmoid']:.4f} | "
                  f"{seconds['sigmoid'] / seconds['softmax']:.2f} | {memory['softmax']:.1f} | {memory['sigmoid']:.1f} | "
                  f"{memory['sigmoid'] / max(memory['softmax'], 1e-9):.2f} |", flush=True)


if __name__ == "__main__":
    main()

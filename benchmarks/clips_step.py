"""CLIPS training-step cost on CPU, against the CLIP step on the same towers, measured in the same run.

    python benchmarks/clips_step.py [--batch-size 32 --steps 5]

A CLIPS step encodes the web caption and the partial synthetic caption and runs the
captioner over [image patches; web tokens; full synthetic caption]. Rows: the CLIP step
(web caption only), CLIPS with a K = 32 sub-caption, with the whole synthetic caption
(``none``), and CLIPS with ``accum_freq`` 2 (cached features, recomputed: one extra
forward). Every step includes collation, `forward_backward`, AdamW and the clamp.
Timings are medians over interleaved repetitions; the machine may be shared, so compare
ratios within one run.
"""

from __future__ import annotations

import argparse

import torch
from towers import SMALL
from train_throughput import WORDS, median_times, rows

from langclip import CLIPSModel
from langclip.processing.collators import CLIPSCollator
from langclip.processing.text import PartialCaption
from langclip.processing.collators import ContrastiveCollator
from langclip.testing import train_word_tokenizer
from langclip.training.optim import build_optimizer
from langclip.training.methods import Method
from langclip.training.step import forward_backward

def step(model, optimizer, method: str, collator, data, accum_freq: int = 1) -> None:
    forward_backward(model, collator(data), Method.preset(method).objective, model, accum_freq)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    model.clamp_logit_scale_()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=32, help="Pairs per training step.")
    parser.add_argument("--steps", type=int, default=5, help="Timed repetitions of each step (after one warm-up).")
    args = parser.parse_args()

    torch.manual_seed(0)
    tokenizer = train_word_tokenizer([WORDS], max_length=SMALL.context)
    model = CLIPSModel(SMALL.clips_config(tokenizer)).train()
    optimizer = build_optimizer(model, 1e-4, 0.1)
    data = rows(args.batch_size)  # with synthetic captions of 6 sentences, ~ 70 tokens with the specials
    context = SMALL.context
    collators = {
        "subcaption": CLIPSCollator(tokenizer, context, PartialCaption(tokenizer, "subcaption", 32, seed=0)),
        "none": CLIPSCollator(tokenizer, context, PartialCaption(tokenizer, "none", max_length=context)),
    }
    runs = {
        "CLIP step (web caption only)": lambda: step(model, optimizer, "clip", ContrastiveCollator(tokenizer, context),
                                                     data),
        "CLIPS, sub-caption K=32": lambda: step(model, optimizer, "clips", collators["subcaption"], data),
        "CLIPS, full synthetic caption": lambda: step(model, optimizer, "clips", collators["none"], data),
        "CLIPS, sub-caption, accum_freq 2": lambda: step(model, optimizer, "clips", collators["subcaption"], data, 2),
    }
    median = median_times(runs, args.steps)
    caption_length = collators["none"](data)["caption_input_ids"].shape[1]

    print(f"config: ViT {SMALL.image_size} px / patch {SMALL.patch}, width {SMALL.vision_width}, {SMALL.vision_layers} "
          f"layers per tower, captioner {SMALL.captioner_layers} layers; synthetic caption {caption_length} tokens, text context {context}, "
          f"batch {args.batch_size}, fp32, {torch.get_num_threads()} threads\n")
    baseline = median["CLIP step (web caption only)"]
    print("| step | ms/step | samples/s | time vs CLIP step |")
    print("| --- | --- | --- | --- |")
    for name, seconds in median.items():
        print(f"| {name} | {seconds * 1e3:.1f} | {args.batch_size / seconds:.0f} | {seconds / baseline:.2f}x |")


if __name__ == "__main__":
    main()

"""Captions/s of the rewrite job against a per-caption pipeline loop and raw batched `generate`.

All three rewrite the same captions with the same random tiny Llama (built at run time:
nothing is downloaded), the same ICL prompts (one source, three examples) and the same
sampling settings; a random LM rarely stops early, so every prompt generates
``--max-new-tokens`` tokens in all three.

- map job: `ChunkedMapJob` + `Rewriter` over `TextGenerator` (the real `langclip rewrite`
  path: datasets.map, pipeline, parsing, cleaning, chunk saving);
- naive loop: ``pipe(prompt)`` one caption at a time (on the first ``--naive-captions``
  of the same captions: it is slow);
- raw generate: ``model.generate`` on pre-tokenised, length-sorted, left-padded batches
  (tokenisation not timed): the practical limit.

Targets: map job >= 8x the naive loop; raw generate time / map job time >= 0.8 (within 1.25x).
The map job and raw generate alternate for ``--repeats`` rounds and each reports its best
run, so that load from other processes on a shared machine hits both alike.

    python benchmarks/rewrite_throughput.py [--captions 128 --batch-size 32 --max-new-tokens 32]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch
from datasets import Dataset

from langclip.processing.generation.arguments import add_generation_arguments
from langclip.processing.generation.backends import build_generator
from langclip.processing.generation.job import ChunkedMapJob
from langclip.processing.generation.prompts import PromptBuilder
from langclip.processing.generation.meta_pairs import load_pool
from langclip.processing.generation.rewrite import Rewriter, llm_proposer
from langclip.demo.tiny_lm import build_tiny_causal_lm

WORDS = "red blue green small large old dog cat car boat bus horse man woman child street beach park field table".split()


def make_captions(n: int) -> list[str]:
    return [
        f"a {WORDS[i % 5]} {WORDS[5 + i % 3]} {WORDS[8 + i % 7]} near a {WORDS[15 + i % 5]}" + " at noon" * (i % 3)
        for i in range(n)
    ]


def timed(fn, repeat: int = 0) -> float:
    start = time.perf_counter()
    fn(repeat)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--captions", type=int, default=128, help="Number of captions.")
    parser.add_argument("--hidden-size", type=int, default=128, help="Tiny Llama width.")
    parser.add_argument("--layers", type=int, default=4, help="Tiny Llama depth.")
    parser.add_argument("--naive-captions", type=int, default=32, help="Captions timed in the naive loop.")
    parser.add_argument("--repeats", type=int, default=5, help="Map job and raw generate: best of this many rounds.")
    add_generation_arguments(parser, "Unused: the benchmark builds its own tiny Llama.")
    parser.set_defaults(batch_size=32, max_new_tokens=32, device="cpu")  # the transformers backend, on all three
    args = parser.parse_args()

    captions = make_captions(args.captions)
    pools = {"chatgpt": load_pool("chatgpt")}
    builder = PromptBuilder(pools, seed=0)
    prompts = [builder(caption, str(i), "chatgpt")[0] for i, caption in enumerate(captions)]
    generate_kwargs = dict(do_sample=True, temperature=args.temperature, top_p=args.top_p, max_new_tokens=args.max_new_tokens)

    with tempfile.TemporaryDirectory() as tmp:
        texts = [f"{a} => {b}" for a, b in pools["chatgpt"].items] + captions
        model_dir = build_tiny_causal_lm(
            texts, f"{tmp}/lm", vocab_size=1024, hidden_size=args.hidden_size, num_layers=args.layers
        )
        generator = build_generator(args, model_dir)
        pipe = generator.pipe
        generator(prompts[: args.batch_size])  # warm-up

        dataset = Dataset.from_dict({"id": [str(i) for i in range(len(captions))], "caption": captions})
        rewriter = Rewriter(llm_proposer(builder, generator), ["chatgpt"])

        def map_job(repeat):
            job = ChunkedMapJob(rewriter, f"{tmp}/work{repeat}", {}, len(captions), 4 * args.batch_size, unit="caption")
            job.run(dataset)

        def naive_loop(repeat):
            for prompt in prompts[: args.naive_captions]:
                pipe(prompt, return_full_text=False, **generate_kwargs)

        rates = {"naive loop": min(args.naive_captions, len(captions)) / timed(naive_loop)}

        tokenizer, model = pipe.tokenizer, pipe.model
        order = sorted(range(len(prompts)), key=lambda i: -len(tokenizer(prompts[i])["input_ids"]))
        batches = [
            tokenizer([prompts[i] for i in order[start : start + args.batch_size]], padding=True, return_tensors="pt").to(model.device)
            for start in range(0, len(prompts), args.batch_size)
        ]

        def raw_generate(repeat):
            with torch.inference_mode():
                for batch in batches:
                    model.generate(**batch, **generate_kwargs, pad_token_id=tokenizer.pad_token_id)

        best = {"map job": float("inf"), "raw generate": float("inf")}
        for repeat in range(args.repeats):
            best["map job"] = min(best["map job"], timed(map_job, repeat))
            best["raw generate"] = min(best["raw generate"], timed(raw_generate, repeat))
        rates = {"map job": len(captions) / best["map job"], **rates, "raw generate": len(captions) / best["raw generate"]}

    print(
        f"\n{len(captions)} captions, 1 rewrite each, {args.max_new_tokens} new tokens, batch {args.batch_size}, "
        f"tiny Llama {args.layers}x{args.hidden_size}, device {args.device}, {torch.get_num_threads()} threads\n"
    )
    print("| method | captions/s | vs naive loop | vs raw generate |")
    print("| --- | ---: | ---: | ---: |")
    for name, rate in rates.items():
        print(f"| {name} | {rate:.1f} | {rate / rates['naive loop']:.2f}x | {rate / rates['raw generate']:.2f}x |")
    speedup = rates["map job"] / rates["naive loop"]
    overhead = rates["raw generate"] / rates["map job"]
    print(f"\nmap job: {speedup:.1f}x the naive loop (target >= 8x); {overhead:.2f}x raw generate's time (target <= 1.25x)")


if __name__ == "__main__":
    main()

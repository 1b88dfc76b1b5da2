"""Rows/s of the rewrite job through the endpoint backend, against the server's own generation time.

A loopback OpenAI-compatible server (``tests/openai_server.py``: aiohttp on 127.0.0.1,
bounded in requests and time) wraps a random tiny Llama (built at run time: nothing is
downloaded) and batches the requests that wait together, as a serving engine does. The
real job (`ChunkedMapJob` + `Rewriter` + `EndpointGenerator`, the `langclip rewrite
--backend endpoint` path: prompts, HTTP, parsing, cleaning, chunk saving) rewrites the same
captions at each concurrency; the server sums the wall time of its generate calls.

- overhead = job wall time / server generation time (target <= 1.1 at concurrency 16);
- memory: the CLI job in a child process on N and 10 N captions (a scripted server, so the
  child does all the work of the job but the model's); peak RSS must stay flat.

    PYTHONPATH=. python benchmarks/endpoint_throughput.py [--captions 96 --concurrency 1 4 16]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from datasets import Dataset
from transformers import pipeline

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the loopback server lives with the tests that use it too

from openai_server import OpenAIServer, pipeline_generate  # noqa: E402

from langclip.demo.tiny_lm import build_tiny_causal_lm  # noqa: E402
from langclip.processing.generation.arguments import add_generation_arguments  # noqa: E402
from langclip.processing.generation.backends import build_generator  # noqa: E402
from langclip.processing.generation.job import ChunkedMapJob  # noqa: E402
from langclip.processing.generation.meta_pairs import load_pool  # noqa: E402
from langclip.processing.generation.prompts import PromptBuilder  # noqa: E402
from langclip.processing.generation.rewrite import Rewriter, llm_proposer  # noqa: E402

WORDS = "red blue green small large old dog cat car boat bus horse man woman child street beach park field table".split()


def make_captions(n: int) -> list[str]:
    return [f"a {WORDS[i % 5]} {WORDS[5 + i % 3]} {WORDS[8 + i % 7]} near a {WORDS[15 + i % 5]}" for i in range(n)]


def scripted(prompts, seeds, settings):
    return [f" a rewritten caption number {seed}" for seed in seeds]


def peak_rss_mb(command: list[str]) -> float:
    """Peak resident memory (MB) of a child process running ``command``."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    if status:
        raise RuntimeError(f"{command[3:5]} failed: {proc.stderr.read().decode()[-2000:]}")
    return usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--captions", type=int, default=96, help="Captions rewritten at each concurrency.")
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 4, 16], help="Concurrency levels to time.")
    parser.add_argument("--server-batch", type=int, default=16, help="Most requests the server generates together.")
    parser.add_argument("--hidden-size", type=int, default=128, help="Tiny Llama width.")
    parser.add_argument("--layers", type=int, default=4, help="Tiny Llama depth.")
    parser.add_argument("--memory-rows", type=int, default=500, help="Memory check: N captions, then 10 N.")
    add_generation_arguments(parser, "Served model name (the loopback server serves any).")
    parser.set_defaults(backend="endpoint", model="tiny", batch_size=16, max_new_tokens=16, max_retries=0)
    args = parser.parse_args()

    captions = make_captions(args.captions)
    pools = {"chatgpt": load_pool("chatgpt")}
    builder = PromptBuilder(pools, seed=args.seed)
    dataset = Dataset.from_dict({"id": [str(i) for i in range(len(captions))], "caption": captions})
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        texts = [f"{a} => {b}" for a, b in pools["chatgpt"].items] + captions
        model_dir = build_tiny_causal_lm(
            texts, f"{tmp}/lm", vocab_size=1024, hidden_size=args.hidden_size, num_layers=args.layers
        )
        pipe = pipeline("text-generation", model=model_dir, device="cpu")
        pipe.tokenizer.padding_side, pipe.tokenizer.pad_token = "left", pipe.tokenizer.eos_token
        limit = (len(args.levels) + 1) * len(captions)
        with OpenAIServer(pipeline_generate(pipe), max_batch=args.server_batch, max_requests=limit, lifetime=1800) as server:
            args.base_url = server.base_url
            for level in [args.levels[-1], *args.levels]:  # the first run (16 captions) warms up
                args.concurrency = level
                data = dataset.select(range(min(16, len(dataset)))) if not rows else dataset
                generator = build_generator(args)
                job = ChunkedMapJob(Rewriter(llm_proposer(builder, generator), ["chatgpt"]), f"{tmp}/work{len(rows)}",
                                    {}, len(captions), 4 * args.batch_size, unit="caption")
                before = server.generation_seconds
                start = time.perf_counter()
                pending = job.run(data)
                wall = time.perf_counter() - start
                generator.close()
                if pending or generator.failures:
                    raise RuntimeError(f"{pending} rows pending: {generator.last_error}")
                rows.append((level, len(data) / wall, wall, server.generation_seconds - before))
        rows = rows[1:]

        memory = []
        path = Path(tmp) / "captions.txt"
        with OpenAIServer(scripted, max_batch=64, max_requests=12 * args.memory_rows, lifetime=1800) as server:
            for n in (args.memory_rows, 10 * args.memory_rows):
                path.write_text("\n".join(make_captions(n)) + "\n")
                command = [sys.executable, "-m", "langclip.cli", "rewrite", str(path), "--backend", "endpoint",
                           "--base-url", server.base_url, "--model", "tiny", "--sources", "chatgpt", "--chunk-size",
                           "256", "--concurrency", "16", "--output-dir", f"{tmp}/mem{n}"]
                memory.append((n, peak_rss_mb(command)))

    print(
        f"\n{len(captions)} captions, {args.max_new_tokens} new tokens, server batches up to {args.server_batch}, "
        f"tiny Llama {args.layers}x{args.hidden_size}, {torch.get_num_threads()} threads\n"
    )
    print("| concurrency | captions/s | job wall s | server generation s | overhead (wall / server) | vs concurrency 1 |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    for level, rate, wall, server_s in rows:
        print(f"| {level} | {rate:.1f} | {wall:.2f} | {server_s:.2f} | {wall / server_s:.2f}x | {rate / rows[0][1]:.2f}x |")
    print("\n| captions (CLI job, child process) | peak RSS MB |\n| ---: | ---: |")
    for n, mb in memory:
        print(f"| {n} | {mb:.0f} |")
    level, _, wall, server_s = rows[-1]
    print(f"\nconcurrency {level}: job overhead {wall / server_s:.2f}x the server's generation time (target <= 1.1x); "
          f"memory {memory[1][1] / memory[0][1]:.2f}x for 10x the captions (target: flat)")


if __name__ == "__main__":
    main()

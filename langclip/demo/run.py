"""`langclip demo` (`make demo`): CLIP vs LaCLIP on the generated shapes world, end to end on a CPU.

Steps: generate the world (`langclip.demo.world`); fit a tiny causal LM (about half
a minute) on in-context rewriting prompts built from the world's `rewrite_pool`; rewrite every
web caption with the real `langclip rewrite` job (prompt, text-generation pipeline, cleaning);
train a word tokenizer, then CLIP (web captions) and LaCLIP (aug_T over the caption and its
rewrites) with the real trainer; evaluate both with `langclip eval`'s code (zero-shot
classification with held-out prompt phrasings, retrieval with held-out captions); write
``outputs/demo/``: the checkpoints (LaCLIP's with its model card), the rewrites,
``eval_results.json``, ``demo.png`` (loss and accuracy); print a CLIP vs LaCLIP table.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time

from datasets import load_from_disk

from ..hub_cards.cards import model_card
from ..processing.generation import rewrite
from ..processing.generation.prompts import build_prompt
from ..training.arguments import load_yaml_config
from ..training.trainer import LOG_FILE, train_in_process
from . import clips as demo_clips
from . import pcclip as demo_pcclip
from . import world as demo_world
from .evaluate import evaluate, headline, markdown_table, save_test_set
from .tiny_lm import build_tiny_causal_lm, train_tiny_causal_lm
from .tokenization import train_word_tokenizer

# The embedded default run; configs/demo.yaml holds the same values (a test keeps them equal).
DEMO_CONFIG = {
    "model_config": json.dumps({
        "text_config": {"hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 3,
                        "num_attention_heads": 4, "max_position_embeddings": 32},
        "vision_config": {"hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 3,
                          "num_attention_heads": 4, "image_size": 64, "patch_size": 8},
        "projection_dim": 64,
    }),
    "per_device_batch_size": 128,
    "max_steps": 300,
    "lr": 1e-3,
    "lr_start": 1e-6,
    "lr_end": 1e-5,
    "warmup_steps": 50,
    "weight_decay": 0.1,
    "save_steps": 0,
    "report_to": "none",
}
NUM_EXAMPLES = 1  # in-context examples per rewriting prompt: one is what a one-minute LM learns to follow
DATASET = {"id": "langclip-demo-world", "name": "langclip demo world (held-out phrasings)", "split": "test"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output-dir", default="outputs/demo", help="Where checkpoints, results and the plot go.")
    parser.add_argument("--config", default=None, help="YAML of training arguments that override the embedded demo run.")
    parser.add_argument("--train-images", type=int, default=4096, help="Generated training images.")
    parser.add_argument("--test-images", type=int, default=512, help="Generated held-out test images.")
    parser.add_argument("--max-steps", type=int, default=None, help="Optimizer steps per model (default: the config's).")
    parser.add_argument(
        "--lm-steps", type=int, default=1000, help="Steps to fit the rewriting LM (about 30 s on 2 cores)."
    )
    parser.add_argument("--num-rewrites", type=int, default=3, help="LM rewrites per training caption.")
    parser.add_argument("--pcclip-steps", type=int, default=150, help="PC-CLIP finetuning steps from the CLIP model.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the world, initialisation and data order.")


def fit_rewriting_lm(output_dir: str, steps: int, seed: int) -> tuple[str, str]:
    """Write the world's meta pool (JSONL) and fit a tiny LM on ICL prompts built from it; returns (lm, pool).

    Each training document is ``build_prompt(web caption, [a pool pair]) + " " + faithful rewrite``,
    exactly what the rewriting job prompts with and what it should continue with.
    """
    os.makedirs(output_dir, exist_ok=True)
    pool_path, lm_dir = os.path.join(output_dir, "world_pool.jsonl"), os.path.join(output_dir, "rewriting_lm")
    pool = demo_world.rewrite_pool(seed=seed + 12345)
    with open(pool_path, "w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(pair) + "\n" for pair in pool)
    rng = random.Random(seed + 1)
    documents = []
    for _ in range(4000):
        caption = demo_world.web_caption(demo_world.sample_attributes(rng), rng)
        examples = [(pair["input"], pair["output"]) for pair in rng.sample(pool, NUM_EXAMPLES)]
        documents.append(build_prompt(caption, examples) + " " + demo_world.faithful_rewrites(caption, rng, 1)[0])
    build_tiny_causal_lm(documents, lm_dir, hidden_size=96, max_position_embeddings=256, seed=seed)
    losses = train_tiny_causal_lm(lm_dir, documents, steps=steps, batch_size=32, lr=4e-3, seed=seed)
    print(f"rewriting LM: {steps} steps, final loss {losses[-1]:.3f}")
    return lm_dir, pool_path


def run_rewrite_job(train_set, output_dir: str, flags: list[str]):
    """The `langclip rewrite` job with ``flags`` on ``train_set``'s captions; returns its output dataset, rows aligned."""
    captions_dir = os.path.join(output_dir, "captions")
    train_set.select_columns(["id", "caption"]).save_to_disk(captions_dir)
    parser = argparse.ArgumentParser()
    rewrite.add_arguments(parser)
    rewrite.main(parser.parse_args([captions_dir, *flags]))
    rewritten = load_from_disk(flags[flags.index("--output-dir") + 1])
    if rewritten["id"] != train_set["id"]:
        raise RuntimeError("the rewriting job returned the captions in another order")
    return rewritten


def rewrite_captions(output_dir: str, train_set, lm_dir: str, pool_path: str, num_rewrites: int, seed: int):
    """``train_set`` with a ``rewrites`` column written by the LM through `langclip rewrite` (fallbacks keep the
    caption); prints how many accepted rewrites state exactly what their caption states."""
    rewritten = run_rewrite_job(train_set, output_dir, [
        "--output-dir", os.path.join(output_dir, "rewrites"), "--model", lm_dir, "--sources", pool_path,
        "--num-rewrites", str(num_rewrites), "--num-examples", str(NUM_EXAMPLES), "--max-new-tokens", "24",
        "--batch-size", "64", "--seed", str(seed), "--device", "cpu",
    ])
    ok = [(caption, text) for caption, texts, statuses in
          zip(rewritten["caption"], rewritten["rewrites"], rewritten["rewrite_status"])
          for text, status in zip(texts, statuses) if status == "ok"]
    faithful = sum(demo_world.mentioned_attributes(t) == demo_world.mentioned_attributes(c) for c, t in ok)
    print(f"{faithful} of {len(ok)} accepted rewrites state exactly what their caption states")
    return train_set.add_column("rewrites", rewritten["rewrites"])


def plot(output_dir: str, results: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (losses, scores) = plt.subplots(1, 2, figsize=(10, 4))
    for name in results:
        with open(os.path.join(output_dir, name, LOG_FILE)) as handle:
            log = [json.loads(line) for line in handle]
        losses.plot([r["step"] for r in log], [r["loss"] for r in log], label=name)
    losses.set(xlabel="step", ylabel="training loss", title="Contrastive loss")
    losses.legend()
    metrics = list(next(iter(results.values())))
    width = 0.8 / len(results)
    for i, (name, values) in enumerate(results.items()):
        scores.bar([m + i * width for m in range(len(metrics))], [values[k] for k in metrics], width, label=name)
    scores.set_xticks([m + width / 2 for m in range(len(metrics))], metrics, rotation=12, fontsize=8)
    scores.set(ylabel="accuracy", title="Held-out evaluation", ylim=(0, 1))
    scores.legend()
    figure.tight_layout()
    figure.savefig(os.path.join(output_dir, "demo.png"), dpi=100)
    plt.close(figure)


def main(args: argparse.Namespace) -> int:
    started = time.time()
    output_dir = args.output_dir
    os.makedirs(output_dir, exist_ok=True)
    settings = {**DEMO_CONFIG, **(load_yaml_config(args.config) if args.config else {}), "seed": args.seed}
    if args.max_steps is not None:
        settings["max_steps"] = args.max_steps

    print(f"generating the world: {args.train_images} training and {args.test_images} test images")
    train_set = demo_world.make_world(args.train_images, seed=args.seed)
    test_set = demo_world.make_world(args.test_images, seed=args.seed + 1000)
    test_dir, templates_path = save_test_set(test_set, output_dir)
    tokenizer = train_word_tokenizer(demo_world.world_vocabulary(), max_length=32)
    tokenizer.save_pretrained(os.path.join(output_dir, "tokenizer"))

    lm_dir, pool_path = fit_rewriting_lm(output_dir, args.lm_steps, args.seed)
    train_set = rewrite_captions(output_dir, train_set, lm_dir, pool_path, args.num_rewrites, args.seed)
    train_set.select_columns(["id", "image", "caption", "rewrites"]).save_to_disk(os.path.join(output_dir, "data"))

    records, results = {}, {}
    for method in ("clip", "laclip"):
        run_dir = os.path.join(output_dir, method)
        values = {**settings, "method": method, "train_data": os.path.join(output_dir, "data"),
                  "tokenizer_name_or_path": os.path.join(output_dir, "tokenizer"), "output_dir": run_dir}
        train_in_process({**values, "overwrite_output_dir": True})  # a rerun of the demo replaces its runs
        records[method] = [{**record, "dataset": {**record["dataset"], **DATASET}}
                           for record in evaluate(run_dir, test_dir, templates_path)]
        results[method] = headline(records[method])

    clips = demo_clips.run(output_dir, train_set, test_set, os.path.join(output_dir, "tokenizer"), settings, args.seed)
    pcclip = demo_pcclip.run(output_dir, train_set, test_set, os.path.join(output_dir, "tokenizer"),
                             settings, args.seed, base_model=os.path.join(output_dir, "clip"),
                             max_steps=args.pcclip_steps)

    laclip_dir = os.path.join(output_dir, "laclip")
    with open(os.path.join(laclip_dir, "config.json"), encoding="utf-8") as handle:
        config = json.load(handle)
    training = {k: v for k, v in settings.items() if k != "model_config"}
    model_card(config, "laclip-demo", records["laclip"], training=training).save(os.path.join(laclip_dir, "README.md"))
    with open(os.path.join(output_dir, "eval_results.json"), "w") as handle:
        json.dump({**results, "clips": clips, "pcclip": pcclip}, handle, indent=2)
    plot(output_dir, results)

    print(f"\n{markdown_table(results)}")
    print(f"\nwrote {output_dir}/ (checkpoints, rewrites, eval_results.json, demo.png) in {time.time() - started:.0f} s")
    return 0

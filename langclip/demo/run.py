"""`langclip demo` (`make demo`): CLIP vs LaCLIP vs LaCLIP-MT on the generated shapes world, end to end on a CPU.

The world (`langclip.demo.world`) is built on LaCLIP's premise: web captions are terse, with one
word per concept; a language model knows a richer language. Steps:

1. generate the world's training and test images with their web captions;
2. fit a tiny causal LM on a text-only corpus of the rich language (synonyms, many sentence
   forms; made from random attributes, never from an image), then on ICL rewriting prompts
   built from the world's meta pairs (`world.rewrite_pool`), in the paper's prompt format;
3. rewrite every web caption with the real `langclip rewrite` job and report faithfulness
   (attributes kept, contradicted, added; synonyms introduced) with a few examples;
4. train CLIP (web captions), LaCLIP (aug_T over caption and rewrites) and LaCLIP-MT with the
   real trainer, on a word tokenizer that knows every word of the world, two at a time in
   processes of their own (``--jobs``);
5. evaluate with `langclip eval`'s code: zero-shot with held-out prompt phrasings, over class
   names as captions write them and in synonyms no caption uses, and retrieval with held-out
   rich captions;
6. write ``outputs/demo/``: checkpoints (LaCLIP's with its model card), the rewrites,
   ``eval_results.json``, ``demo.png``; print the table.

The CLIPS and PC-CLIP comparisons run in `benchmarks/reproduce_mini.py` (they do not fit the
demo's five minutes).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import multiprocessing
import os
import random
import time

import torch
from datasets import load_from_disk

from ..errors import check_at_least_one
from ..hub_cards.cards import model_card
from ..processing.generation import rewrite
from ..processing.generation.arguments import add_rewrite_arguments
from ..processing.generation.prompts import build_prompt
from ..testing import train_word_tokenizer
from ..training.arguments import load_yaml_config
from ..training.logging import LOG_FILE
from ..training.trainer import train_in_process
from . import world as demo_world
from .evaluate import evaluate, headline, markdown_table, save_test_set
from .tiny_lm import build_tiny_causal_lm, train_tiny_causal_lm

# The embedded default run; configs/demo.yaml holds the same values (a test keeps them equal).
DEMO_CONFIG = {
    "model_config": json.dumps({
        "text_config": {"hidden_size": 96, "intermediate_size": 192, "num_hidden_layers": 2,
                        "num_attention_heads": 4, "max_position_embeddings": 32},
        "vision_config": {"hidden_size": 96, "intermediate_size": 192, "num_hidden_layers": 2,
                          "num_attention_heads": 4, "image_size": 64, "patch_size": 8},
        "projection_dim": 64,
    }),
    "per_device_batch_size": 128,
    "max_steps": 200,
    "lr": 1e-3,
    "lr_start": 1e-6,
    "lr_end": 1e-5,
    "warmup_steps": 30,
    "weight_decay": 0.1,
    "save_steps": 0,
    "report_to": "none",
    "num_workers": 1,
}
NUM_EXAMPLES = 1  # in-context examples per rewriting prompt (the paper: 3); one is what a one-minute LM learns
DATASET_ID = "langclip-demo-world"


def rewriting_lm_texts(seed: int, num_sentences: int = 20000, num_prompts: int = 8000):
    """The rewriting LM's training texts, from random attributes and never from an image: (meta pairs, corpus
    sentences of the rich language, ICL documents ``build_prompt(web caption, [a meta pair]) + " " +
    world.rewrite_target(caption)``: exactly what the rewriting job prompts with, and what it should continue with)."""
    pool = demo_world.rewrite_pool(seed=seed + 12345)
    rng = random.Random(seed + 1)
    corpus = [demo_world.corpus_sentence(rng) for _ in range(num_sentences)]
    prompts = []
    for _ in range(num_prompts):
        caption = demo_world.web_caption(demo_world.sample_attributes(rng), rng)
        examples = [(pair["input"], pair["output"]) for pair in rng.sample(pool, NUM_EXAMPLES)]
        prompts.append(build_prompt(caption, examples) + " " + demo_world.rewrite_target(caption, rng))
    return pool, corpus, prompts


def fit_rewriting_lm(output_dir: str, corpus_steps: int, steps: int, seed: int) -> tuple[str, str]:
    """Fit a tiny causal LM on `rewriting_lm_texts`: first the corpus, then the ICL documents; write the meta pairs
    to ``world_pool.jsonl`` (the rewriting job's ``--sources``); returns (LM folder, pool file)."""
    os.makedirs(output_dir, exist_ok=True)
    pool_path, lm_dir = os.path.join(output_dir, "world_pool.jsonl"), os.path.join(output_dir, "rewriting_lm")
    pool, corpus, prompts = rewriting_lm_texts(seed)
    with open(pool_path, "w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(pair) + "\n" for pair in pool)
    build_tiny_causal_lm(corpus + prompts, lm_dir, vocab_size=1024, hidden_size=96, max_position_embeddings=256,
                         seed=seed)
    corpus_losses = train_tiny_causal_lm(lm_dir, corpus, steps=corpus_steps, batch_size=32, lr=4e-3, seed=seed)
    losses = train_tiny_causal_lm(lm_dir, prompts, steps=steps, batch_size=32, lr=4e-3, seed=seed + 1)
    print(f"rewriting LM: {corpus_steps} corpus steps (loss {corpus_losses[-1]:.3f}), "
          f"{steps} ICL steps (loss {losses[-1]:.3f})")
    return lm_dir, pool_path


def run_rewrite_job(train_set, output_dir: str, flags: list[str]):
    """The `langclip rewrite` job with ``flags`` on ``train_set``'s captions; returns its output dataset, rows aligned."""
    captions_dir = os.path.join(output_dir, "captions")
    train_set.select_columns(["id", "caption"]).save_to_disk(captions_dir)
    parser = argparse.ArgumentParser()
    add_rewrite_arguments(parser)
    rewrite.main(parser.parse_args([captions_dir, *flags]))
    rewritten = load_from_disk(flags[flags.index("--output-dir") + 1])
    if rewritten["id"] != train_set["id"]:
        raise RuntimeError("the rewriting job returned the captions in another order")
    return rewritten


def rewrite_captions(output_dir: str, train_set, lm_dir: str, pool_path: str, num_rewrites: int, seed: int):
    """``train_set`` with a ``rewrites`` column written by the LM through `langclip rewrite` (fallbacks keep the
    caption), and the `world.faithfulness` of the accepted rewrites, which it prints with a few examples."""
    rewritten = run_rewrite_job(train_set, output_dir, [
        "--output-dir", os.path.join(output_dir, "rewrites"), "--model", lm_dir, "--sources", pool_path,
        "--num-rewrites", str(num_rewrites), "--num-examples", str(NUM_EXAMPLES), "--max-new-tokens", "32",
        "--batch-size", "64", "--seed", str(seed), "--device", "cpu",
    ])
    accepted = [(caption, text) for caption, texts, statuses in
                zip(rewritten["caption"], rewritten["rewrites"], rewritten["rewrite_status"])
                for text, status in zip(texts, statuses) if status == "ok"]
    if not accepted:
        raise RuntimeError(f"the rewriting LM in {lm_dir} wrote no acceptable rewrite; fit it longer (--lm-steps)")
    faithful = {"accepted": len(accepted), "requested": num_rewrites * len(train_set),
                **demo_world.faithfulness(*zip(*accepted))}
    print(f"rewrites: {faithful['accepted']} of {faithful['requested']} accepted; of the attributes their captions "
          f"state, {faithful['kept']:.1%} kept and {faithful['contradicted']:.1%} contradicted; "
          f"{faithful['added']:.1%} add an attribute; {faithful['with_synonym']:.1%} use a word no caption uses "
          f"({faithful['synonyms_per_rewrite']:.2f} per rewrite)")
    for caption, text in accepted[:: max(1, len(accepted) // 5)][:5]:
        print(f"  {caption!r} -> {text!r}")
    return train_set.add_column("rewrites", rewritten["rewrites"]), faithful


def train_and_evaluate(values: dict, test_dir: str, templates_path: str, threads: int) -> tuple[list[dict], float]:
    """Train one demo run (``values``: the trainer's arguments) and evaluate it; returns (eval records, seconds)."""
    started = time.time()
    torch.set_num_threads(threads)
    train_in_process(values)
    records = evaluate(values["output_dir"], test_dir, templates_path)
    return [{**record, "dataset": {**record["dataset"], "id": DATASET_ID}} for record in records], time.time() - started


def train_and_evaluate_all(runs: dict, test_dir: str, templates_path: str, jobs: int, threads: int) -> dict:
    """{name: (eval records, seconds)} of every run; ``jobs`` > 1 runs them in that many spawned processes, the
    costliest (LaCLIP-MT, M + 1 texts per image) first, each loading its data in-process (``num_workers`` 0)."""
    if jobs == 1 or len(runs) == 1:
        return {name: train_and_evaluate(values, test_dir, templates_path, threads) for name, values in runs.items()}
    order = sorted(runs, key=lambda name: name != "laclip-mt")
    context = multiprocessing.get_context("spawn")  # no fork of a process whose OpenMP and torch state are set up
    with concurrent.futures.ProcessPoolExecutor(min(jobs, len(runs)), mp_context=context) as pool:
        futures = {name: pool.submit(train_and_evaluate, {**runs[name], "num_workers": 0}, test_dir, templates_path,
                                     threads) for name in order}
        return {name: future.result() for name, future in futures.items()}


def plot(output_dir: str, results: dict, path: str) -> None:
    """Training loss per model and the held-out metrics as grouped bars, saved to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (losses, scores) = plt.subplots(1, 2, figsize=(10, 3.6))
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
    scores.set_xticks([m + width * (len(results) - 1) / 2 for m in range(len(metrics))],
                      [m.replace(" (", "\n(").replace(" R@1", "\nR@1") for m in metrics], fontsize=8)
    scores.set(ylabel="accuracy / recall", title="Held-out evaluation (test images)", ylim=(0, 1))
    scores.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    plt.close(figure)


def main(args: argparse.Namespace) -> int:
    check_at_least_one(args, "threads", "jobs", "train_images", "test_images", "num_rewrites", "max_steps")
    started = time.time()
    torch.set_num_threads(args.threads)
    output_dir = args.output_dir
    os.makedirs(output_dir, exist_ok=True)
    settings = {**DEMO_CONFIG, **(load_yaml_config(args.config) if args.config else {}), "seed": args.seed}
    if args.max_steps is not None:
        settings["max_steps"] = args.max_steps
    stages = {}

    print(f"generating the world: {args.train_images} training and {args.test_images} test images")
    train_set = demo_world.make_world(args.train_images, seed=args.seed)
    test_set = demo_world.make_world(args.test_images, seed=args.seed + 1000)
    test_dir, templates_path = save_test_set(test_set, output_dir)
    tokenizer = train_word_tokenizer(demo_world.world_vocabulary(), max_length=32)
    tokenizer.save_pretrained(os.path.join(output_dir, "tokenizer"))
    stages["world"] = time.time() - started

    lm_dir, pool_path = fit_rewriting_lm(output_dir, args.corpus_steps, args.lm_steps, args.seed)
    stages["rewriting LM"] = time.time() - started - sum(stages.values())
    train_set, faithful = rewrite_captions(output_dir, train_set, lm_dir, pool_path, args.num_rewrites, args.seed)
    train_set.select_columns(["id", "image", "caption", "rewrites"]).save_to_disk(os.path.join(output_dir, "data"))
    stages["rewriting"] = time.time() - started - sum(stages.values())

    runs = {method: {**settings, "method": method, "train_data": os.path.join(output_dir, "data"),
                     "tokenizer_name_or_path": os.path.join(output_dir, "tokenizer"),
                     "output_dir": os.path.join(output_dir, method), "overwrite_output_dir": True}  # a rerun replaces
            for method in args.methods}
    trained = train_and_evaluate_all(runs, test_dir, templates_path, args.jobs, args.threads)
    records = {method: trained[method][0] for method in args.methods}
    results = {method: headline(records[method]) for method in args.methods}
    stages.update({method: trained[method][1] for method in args.methods})
    stages[f"training ({min(args.jobs, len(runs))} at once)"] = time.time() - started - sum(
        seconds for name, seconds in stages.items() if name not in runs)

    card_model = "laclip" if "laclip" in records else args.methods[-1]
    with open(os.path.join(output_dir, card_model, "config.json"), encoding="utf-8") as handle:
        config = json.load(handle)
    training = {k: v for k, v in settings.items() if k != "model_config"}
    model_card(config, f"{card_model}-demo", records[card_model], training=training).save(
        os.path.join(output_dir, card_model, "README.md"))
    stages["total"] = time.time() - started
    with open(os.path.join(output_dir, "eval_results.json"), "w") as handle:
        json.dump({"results": results, "rewrites": faithful, "seconds": stages}, handle, indent=2)
    plot(output_dir, results, os.path.join(output_dir, "demo.png"))

    chance = 1 / len(demo_world.CLASS_NAMES)
    print(f"\n{markdown_table(results)}\n\nzero-shot chance {chance:.3f}, R@1 chance {1 / args.test_images:.3f}; "
          "held-out prompt phrasings; \"synonyms\": class names in words no web caption uses (\"crimson disc\")")
    print(f"\nwrote {output_dir}/ (checkpoints, rewrites, eval_results.json, demo.png) in {stages['total']:.0f} s: "
          + ", ".join(f"{name} {seconds:.0f} s" for name, seconds in stages.items() if name != "total"))
    return 0

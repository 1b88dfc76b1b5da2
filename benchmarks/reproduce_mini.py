"""The three papers' findings in miniature, on the demo world, on a CPU, over several seeds.

    python benchmarks/reproduce_mini.py --seeds 0 1 2 3 4 --write BENCHMARKS.md

Parts (``--parts``, default all):

- ``laclip``: CLIP vs LaCLIP (LM rewrites through the real `langclip rewrite` job) vs LaCLIP-MT
  vs EDA rewrites (LaCLIP's Table 1 and baselines), and a control: LaCLIP on the world's
  image-aware paraphrases (text that states every attribute, which no rewriter of the caption
  alone can know). Back-translation is not run: no translation model can be built offline.
- ``scaling``: LaCLIP with M = 0..4 LM rewrites per caption (M = 0 is CLIP).
- ``clips``: the full synthetic caption vs sub-captions of K tokens, with and without the
  captioner loss.
- ``pcclip``: difference classification, attribute ranking and zero-shot before vs after
  PC-CLIP finetuning: the official recipe (Adam, i.e. AdamW without weight decay, lr 1e-8,
  batch 512, 20 epochs, text transformer only, ``--lr-decay-per-epoch 0.9``) and, to find what costs
  zero-shot, lr 1e-4 for 20 and for 2 epochs, and lr 1e-4 with the CLIP loss on captions
  mixed in (``--clip-loss-weight 1``).

The world (`langclip.demo.world`), the rewriting LM and its rewrites are made once (seed 0);
each seed re-initialises and re-orders training. Four classes never appear in training:
"held-out classes" is zero-shot among them (a 2 x 2 of colours and shapes, so it takes both).
Results are mean ± std over seeds and a 95% interval of the mean (Student t); with
``--write`` the tables replace the script's section of that file and the plot goes to
``--plot``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
import statistics
import sys
import time

import torch
from scipy import stats

from langclip.demo import evaluate as demo_eval, run as demo, world as demo_world
from langclip.testing import train_word_tokenizer
from langclip.training.trainer import train_in_process

import reproduce_clips  # the CLIPS and PC-CLIP parts, beside this script
import reproduce_pcclip

# A 2 x 2 of colours and shapes: telling them apart takes both attributes, so zero-shot among them tests composition.
HELD_OUT_CLASSES = ["red star", "red circle", "blue star", "blue circle"]
MODEL_CONFIG = {
    "text_config": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 2,
                    "max_position_embeddings": 32},
    "vision_config": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 2,
                      "image_size": 64, "patch_size": 8},
    "projection_dim": 64,
}
PCCLIP_METRICS = ("difference_accuracy", "size_spearman", "count_spearman", "zero_shot_top1",
                  "zero_shot_top1_comparative")
METRICS = ("zero-shot", "zero-shot (synonyms)", "zero-shot (held-out classes)", "retrieval R@1")
START, END = "<!-- reproduce_mini:start -->", "<!-- reproduce_mini:end -->"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4], help="Training seeds per arm.")
    parser.add_argument("--parts", nargs="+", default=["laclip", "scaling", "clips", "pcclip"],
                        choices=["laclip", "scaling", "clips", "pcclip"], help="Comparisons to run.")
    parser.add_argument("--arms", nargs="+", default=None,
                        help="Only these arms of the laclip, scaling and clips parts (names as in the tables; default all).")
    parser.add_argument("--train-images", type=int, default=2048, help="Generated training images.")
    parser.add_argument("--test-images", type=int, default=512, help="Generated test images (each test set).")
    parser.add_argument("--steps", type=int, default=200, help="Optimizer steps per training run.")
    parser.add_argument("--corpus-steps", type=int, default=200, help="Steps to fit the rewriting LM on its corpus.")
    parser.add_argument("--lm-steps", type=int, default=600, help="Steps to fit the rewriting LM on ICL prompts.")
    parser.add_argument("--batch-size", type=int, default=128, help="Training batch size.")
    parser.add_argument("--output-dir", default="outputs/reproduce_mini", help="Work folder (datasets, checkpoints).")
    parser.add_argument("--write", metavar="MARKDOWN", help="Replace this file's reproduce_mini section with the table.")
    parser.add_argument("--plot", default="outputs/reproduce_mini.png", help="Where the plot of the results goes.")
    parser.add_argument("--threads", type=int, default=1, help="Torch threads (1 avoids spin-waits on a shared machine).")
    return parser.parse_args()


class World:
    """The shared data of every arm: train set (without the held-out classes), test sets, tokenizer, rewrites."""

    def __init__(self, args: argparse.Namespace):
        self.root = args.output_dir
        os.makedirs(self.root, exist_ok=True)
        seen = [name for name in demo_world.CLASS_NAMES if name not in HELD_OUT_CLASSES]
        self.train_set = demo_world.make_world(args.train_images, seed=0, classes=seen)
        self.test_set = demo_world.make_world(args.test_images, seed=1000, classes=seen)
        self.test_dir, self.templates = demo_eval.save_test_set(self.test_set, self.root)
        self.held_out_dir, _ = demo_eval.save_test_set(
            demo_world.make_world(args.test_images, seed=2000, classes=HELD_OUT_CLASSES), self.root, "held_out",
            HELD_OUT_CLASSES)
        self.tokenizer_dir = os.path.join(self.root, "tokenizer")
        train_word_tokenizer(demo_world.world_vocabulary(), max_length=32).save_pretrained(self.tokenizer_dir)
        self.corpus_steps, self.lm_steps = args.corpus_steps, args.lm_steps
        self.steps, self.batch_size = args.steps, args.batch_size
        self._data: dict[str, str] = {}

    def data(self, name: str) -> str:
        """The training dataset folder of ``name``: "web", "synthetic" (with synthetic captions), "lm" (4 LM
        rewrites), "lm-M" (the first M of them), "eda" or "oracle" (4 of the world's full, image-aware paraphrases)."""
        if name not in self._data:
            folder = os.path.join(self.root, f"data-{name}")
            if name == "web":
                rows = self.train_set.select_columns(["id", "image", "caption"])
            elif name == "synthetic":
                rows = self.train_set.select_columns(["id", "image", "caption", "synthetic_caption"])
            elif name == "oracle":
                rows = self.train_set.select_columns(["id", "image", "caption", "paraphrases"]).rename_column(
                    "paraphrases", "rewrites")
            elif name.startswith("lm-"):
                count = int(name.split("-")[1])
                rows = load(self.data("lm"))
                rows = rows.map(lambda row: {"rewrites": row["rewrites"][:count]})
            elif name == "lm":
                lm_dir, pool = demo.fit_rewriting_lm(self.root, self.corpus_steps, self.lm_steps, seed=0)
                rows, faithful = demo.rewrite_captions(self.root, self.train_set, lm_dir, pool, 4, seed=0)
                with open(os.path.join(self.root, "faithfulness.json"), "w") as handle:
                    json.dump(faithful, handle)
                rows = rows.select_columns(["id", "image", "caption", "rewrites"])
            elif name == "eda":
                rewritten = demo.run_rewrite_job(self.train_set, self.root, [
                    "--output-dir", os.path.join(self.root, "rewrites-eda"), "--method", "eda", "--num-rewrites", "4"])
                rows = self.train_set.select_columns(["id", "image", "caption"]).add_column(
                    "rewrites", rewritten["rewrites"])
            else:
                raise ValueError(f"unknown training data {name!r}")
            rows.save_to_disk(folder)
            self._data[name] = folder
        return self._data[name]

    def train(self, name: str, method: str, data: str, seed: int, **extra) -> str:
        """Train ``method`` on ``data`` with ``seed``; returns the checkpoint folder."""
        output_dir = os.path.join(self.root, "runs", f"{name}-seed{seed}")
        train_in_process({
            **demo.DEMO_CONFIG, "model_config": json.dumps(MODEL_CONFIG), "max_steps": self.steps,
            "per_device_batch_size": self.batch_size, "warmup_steps": max(1, self.steps // 8), "method": method,
            "train_data": self.data(data), "tokenizer_name_or_path": self.tokenizer_dir, "output_dir": output_dir,
            "seed": seed, "overwrite_output_dir": True, **extra,
        })
        return output_dir

    def evaluate(self, model_dir: str) -> dict:
        zero_shot, synonyms, retrieval = demo_eval.evaluate(model_dir, self.test_dir, self.templates)
        held_out = demo_eval.eval_record(model_dir, self.held_out_dir, "--task", "zero-shot", "--templates", self.templates)
        return {
            METRICS[0]: zero_shot["metrics"]["top1"],
            METRICS[1]: synonyms["metrics"]["top1"],
            METRICS[2]: held_out["metrics"]["top1"],
            METRICS[3]: (retrieval["metrics"]["image_to_text_R@1"] + retrieval["metrics"]["text_to_image_R@1"]) / 2,
        }


def load(folder: str):
    from datasets import load_from_disk

    return load_from_disk(folder)


def laclip_arms() -> dict[str, tuple[str, str]]:
    """Arm name -> (method, training data)."""
    return {"CLIP": ("clip", "web"), "LaCLIP (LM, M=4)": ("laclip", "lm"), "LaCLIP-MT (LM, M=4)": ("laclip-mt", "lm"),
            "EDA (M=4)": ("laclip", "eda"), "control: oracle paraphrases (M=4)": ("laclip", "oracle")}


def scaling_arms() -> dict[str, tuple[str, str]]:
    arms = {"M=0 (CLIP)": ("clip", "web")}
    arms.update({f"M={m}": ("laclip", f"lm-{m}") for m in range(1, 4)})
    arms["M=4"] = ("laclip", "lm")
    return arms


def clips_arms() -> dict[str, tuple[str, str, dict]]:
    """Arm name -> (method, data, extra training arguments): full caption vs sub-captions of K tokens, and the
    captioner's loss on (weight 2, the paper's) or off (weight 0)."""
    arms = {}
    for weight, label in ((2.0, "captioner"), (0.0, "no captioner")):
        config = json.dumps({**MODEL_CONFIG, **reproduce_clips.CAPTIONER, "caption_loss_weight": weight})
        arms[f"full caption, {label}"] = ("clips", "synthetic", {"model_config": config, "partial_caption": "none"})
        for k in (8, 16) if weight else (16,):
            arms[f"sub-caption K={k}, {label}"] = ("clips", "synthetic", {
                "model_config": config, "partial_caption": "subcaption", "partial_tokens": k})
    return arms


class ResultCache:
    """Metrics of finished runs, keyed by what determines them (the world's settings, method, data, arguments,
    seed), appended to ``<output dir>/results.jsonl`` as each run ends, so that an interrupted reproduction resumes
    and runs shared between parts are trained once."""

    def __init__(self, args: argparse.Namespace):
        self.path = os.path.join(args.output_dir, "results.jsonl")
        self.setup = json.dumps({k: getattr(args, k) for k in ("train_images", "test_images", "steps", "batch_size",
                                                               "corpus_steps", "lm_steps")}, sort_keys=True)
        self.found: dict[str, dict] = {}
        if os.path.exists(self.path):
            with open(self.path, encoding="utf-8") as handle:
                for line in handle:
                    record = json.loads(line)
                    self.found[record["key"]] = record["metrics"]

    def key(self, *parts) -> str:
        return json.dumps([self.setup, *parts], sort_keys=True)

    def get(self, key: str, compute) -> dict:
        if key not in self.found:
            self.found[key] = compute()
            with open(self.path, "a", encoding="utf-8") as handle:
                handle.write(json.dumps({"key": key, "metrics": self.found[key]}) + "\n")
        return self.found[key]


def run_arms(world: World, arms: dict[str, tuple], seeds, cache: ResultCache, only=None) -> dict[str, list[dict]]:
    """Metrics of every arm (of those named in ``only``, if given) and seed, seed by seed (an interrupted run leaves
    whole seeds); arms are (method, data[, extra training arguments])."""
    results = {arm: [] for arm in arms if only is None or arm in only}
    for seed in seeds:
        for arm, (method, data, *extra) in arms.items():
            if arm not in results:
                continue
            extra = json.dumps(extra[0] if extra else {}, sort_keys=True)
            name = f"{method}-{data}" + (f"-{hashlib.sha1(extra.encode()).hexdigest()[:8]}" if extra != "{}" else "")

            def compute():
                started = time.time()
                metrics = world.evaluate(world.train(name, method, data, seed, **json.loads(extra)))
                print(f"{arm}, seed {seed}: {metrics} ({time.time() - started:.0f} s)", flush=True)
                return metrics

            results[arm].append(cache.get(cache.key(method, data, extra, seed), compute))
    return results


PCCLIP_EPOCH_PAIRS, PCCLIP_BATCH = 4, 512  # difference texts per training image; the official batch


def pcclip_arms(num_images: int) -> dict[str, dict]:
    """Arm name -> finetuning arguments: the official recipe and the three changes that test the zero-shot drop."""
    steps_per_epoch = -(-PCCLIP_EPOCH_PAIRS * num_images // PCCLIP_BATCH)

    def recipe(lr: float, epochs: int, clip_loss_weight: float = 0.0) -> dict:
        return {"lr": lr, "lr_start": lr, "lr_decay_per_epoch": 0.9, "warmup_steps": 0, "weight_decay": 0.0,
                "per_device_batch_size": PCCLIP_BATCH, "max_steps": epochs * steps_per_epoch,
                "clip_loss_weight": clip_loss_weight}

    return {"official (lr 1e-8, 20 epochs)": recipe(1e-8, 20), "lr 1e-4, 20 epochs": recipe(1e-4, 20),
            "lr 1e-4, 2 epochs": recipe(1e-4, 2), "lr 1e-4, 20 epochs, + CLIP loss (weight 1)": recipe(1e-4, 20, 1.0)}


def pcclip_results(world: World, seeds, cache: ResultCache) -> dict[str, list[dict]]:
    """Base CLIP (the CLIP arm's run) vs its PC-CLIP finetunes (`pcclip_arms`), per seed, on held-out pairs."""
    run_arms(world, {"CLIP": ("clip", "web")}, seeds, cache)
    arms = pcclip_arms(len(world.train_set))
    results = {"base CLIP": [], **{arm: [] for arm in arms}}
    settings = {**demo.DEMO_CONFIG, "model_config": json.dumps(MODEL_CONFIG)}
    for seed in seeds:
        base = os.path.join(world.root, "runs", f"clip-web-seed{seed}")
        for index, (arm, finetune) in enumerate(arms.items()):
            def compute():
                found = reproduce_pcclip.run(os.path.join(world.root, f"pcclip{index}-seed{seed}"), world.train_set,
                                        world.test_set, world.tokenizer_dir, settings, seed, base_model=base,
                                        num_pairs=PCCLIP_EPOCH_PAIRS * len(world.train_set), finetune=finetune)
                return {part: {name: found[part][name] for name in PCCLIP_METRICS} for part in ("base", "pcclip")}

            found = cache.get(cache.key("pcclip", finetune, seed), compute)
            if index == 0:
                results["base CLIP"].append(found["base"])
            results[arm].append(found["pcclip"])
    return results


def summary(values: list[float]) -> tuple[float, float, float]:
    """(mean, sample std, half-width of the 95% interval of the mean, Student t with n - 1 degrees of freedom)."""
    mean = statistics.mean(values)
    if len(values) < 2:
        return mean, 0.0, float("nan")
    std = statistics.stdev(values)
    return mean, std, stats.t.ppf(0.975, len(values) - 1) * std / len(values) ** 0.5


def table(title: str, results: dict[str, list[dict]]) -> str:
    """A markdown table of mean ± std [95% interval] per arm and metric, times 100, over seeds."""
    metrics = list(next(iter(results.values()))[0])
    lines = [f"**{title}** (× 100; mean ± std over seeds [95% interval of the mean])", "",
             "| arm | seeds | " + " | ".join(metrics) + " |", "| --- | ---: |" + " ---: |" * len(metrics)]
    for arm, runs in results.items():
        cells = []
        for metric in metrics:
            mean, std, half = summary([100 * run[metric] for run in runs])
            cells.append(f"{mean:.1f} ± {std:.1f} [{mean - half:.1f}, {mean + half:.1f}]")
        lines.append(f"| {arm} | {len(runs)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(path: str, parts: dict[str, dict[str, list[dict]]]) -> None:
    """One panel per part: each metric's mean per arm with its 95% interval."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(parts), figsize=(5.5 * len(parts), 4), squeeze=False)
    for axis, (title, results) in zip(axes[0], parts.items()):
        metrics = list(next(iter(results.values()))[0])
        width = 0.8 / len(results)
        for i, (arm, runs) in enumerate(results.items()):
            found = [summary([100 * run[m] for run in runs]) for m in metrics]
            axis.bar([m + i * width for m in range(len(metrics))], [f[0] for f in found], width, label=arm,
                     yerr=[0 if f[2] != f[2] else f[2] for f in found], capsize=2)
        axis.set_xticks([m + width * (len(results) - 1) / 2 for m in range(len(metrics))], metrics, fontsize=7,
                        rotation=10)
        axis.set(title=title, ylabel="× 100 (95% interval)")
        axis.legend(fontsize=6)
    figure.tight_layout()
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    figure.savefig(path, dpi=80)
    plt.close(figure)


def write_section(path: str, text: str) -> None:
    """Replace the text between the START and END markers of ``path`` (appended if absent)."""
    content = open(path, encoding="utf-8").read() if os.path.exists(path) else ""
    section = f"{START}\n{text}\n{END}"
    if START in content and END in content:
        content = content[: content.index(START)] + section + content[content.index(END) + len(END):]
    else:
        content = content.rstrip("\n") + "\n\n" + section + "\n"
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(content)


def main() -> int:
    args = parse_args()
    started = time.time()
    torch.set_num_threads(args.threads)
    world, cache, parts = World(args), ResultCache(args), {}
    if "laclip" in args.parts:
        parts["LaCLIP vs CLIP and EDA"] = run_arms(world, laclip_arms(), args.seeds, cache, args.arms)
    if "scaling" in args.parts:
        parts["LaCLIP with M LM rewrites per caption"] = run_arms(world, scaling_arms(), args.seeds, cache, args.arms)
    if "clips" in args.parts:
        parts["CLIPS: full synthetic caption vs sub-captions, with and without the captioner"] = run_arms(
            world, clips_arms(), args.seeds, cache, args.arms)
    if "pcclip" in args.parts:
        parts["PC-CLIP: before and after finetuning on pair differences (held-out pairs)"] = pcclip_results(
            world, args.seeds, cache)
    command = "python benchmarks/reproduce_mini.py " + shlex.join(sys.argv[1:])
    faithful = ""
    if os.path.exists(os.path.join(args.output_dir, "faithfulness.json")):
        with open(os.path.join(args.output_dir, "faithfulness.json")) as handle:
            faithful = "\n\nLM rewrites (M=4 per caption), `world.faithfulness`: " + ", ".join(
                f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in json.load(handle).items())
    text = (f"Command: `{command}` ({time.time() - started:.0f} s; {len(args.seeds)} seeds, "
            f"{args.steps} steps per run, {args.train_images} training images){faithful}\n\n"
            + "\n\n".join(table(title, results) for title, results in parts.items()))
    print(text)
    plot(args.plot, parts)
    if args.write:
        write_section(args.write, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

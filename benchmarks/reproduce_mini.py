"""The three papers' findings in miniature, on the demo world, on a CPU, over several seeds.

    python benchmarks/reproduce_mini.py --seeds 0 1 2 --write BENCHMARKS.md

Parts (``--parts``, default all):

- ``laclip``: CLIP vs LaCLIP (LM rewrites through the real `langclip rewrite` job) vs LaCLIP-MT
  vs EDA rewrites (LaCLIP's Table 1 and baselines), and a control: LaCLIP on the world's
  image-aware paraphrases, text that says more than the web caption (no LLM can write it
  from the caption alone). Back-translation is not run: no translation model can be built
  offline here.
- ``scaling``: LaCLIP with M = 0..4 LM rewrites per caption (M = 0 is CLIP).
- ``clips``: retrieval with the full synthetic caption vs sub-captions of K tokens, with and
  without the captioner loss.
- ``pcclip``: difference classification and attribute ranking before vs after PC-CLIP
  finetuning, and zero-shot with vs without comparative prompting.

The world, the rewriting LM and the rewrites are made once (seed 0); each seed re-initialises
and re-orders training. Four classes never appear in training: "held-out classes" is
zero-shot among them (compositional: their colours and shapes do appear, and each colour and
each shape is shared by two of them). Results are
mean ± std over seeds; with ``--write`` the table replaces the script's section of that file.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import sys
import time

from langclip.demo import world as demo_world
from langclip.demo.tokenization import train_word_tokenizer
from langclip.demo import clips as demo_clips, evaluate as demo_eval, pcclip as demo_pcclip, run as demo
from langclip.training.trainer import train_in_process

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
METRICS = ("zero-shot (held-out phrasings)", "zero-shot (held-out classes)", "retrieval R@1")
START, END = "<!-- reproduce_mini:start -->", "<!-- reproduce_mini:end -->"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="Training seeds per arm.")
    parser.add_argument("--parts", nargs="+", default=["laclip", "scaling", "clips", "pcclip"],
                        choices=["laclip", "scaling", "clips", "pcclip"], help="Comparisons to run.")
    parser.add_argument("--train-images", type=int, default=2048, help="Generated training images.")
    parser.add_argument("--test-images", type=int, default=512, help="Generated test images (each test set).")
    parser.add_argument("--steps", type=int, default=200, help="Optimizer steps per training run.")
    parser.add_argument("--lm-steps", type=int, default=1000, help="Steps to fit the rewriting LM.")
    parser.add_argument("--batch-size", type=int, default=128, help="Training batch size.")
    parser.add_argument("--output-dir", default="outputs/reproduce_mini", help="Work folder (datasets, checkpoints).")
    parser.add_argument("--write", metavar="MARKDOWN", help="Replace this file's reproduce_mini section with the table.")
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
        self.lm_steps = args.lm_steps
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
                lm_dir, pool = demo.fit_rewriting_lm(self.root, self.lm_steps, seed=0)
                rows = demo.rewrite_captions(self.root, self.train_set, lm_dir, pool, num_rewrites=4, seed=0)
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
        zero_shot, retrieval = demo_eval.evaluate(model_dir, self.test_dir, self.templates)
        held_out = demo_eval.eval_record(model_dir, self.held_out_dir, "--task", "zero-shot", "--templates", self.templates)
        return {
            METRICS[0]: zero_shot["metrics"]["top1"],
            METRICS[1]: held_out["metrics"]["top1"],
            METRICS[2]: (retrieval["metrics"]["image_to_text_R@1"] + retrieval["metrics"]["text_to_image_R@1"]) / 2,
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
        config = json.dumps({**MODEL_CONFIG, **demo_clips.CAPTIONER, "caption_loss_weight": weight})
        arms[f"full caption, {label}"] = ("clips", "synthetic", {"model_config": config, "partial_caption": "none"})
        for k in (8, 16) if weight else (16,):
            arms[f"sub-caption K={k}, {label}"] = ("clips", "synthetic", {
                "model_config": config, "partial_caption": "subcaption", "partial_tokens": k})
    return arms


def run_arms(world: World, arms: dict[str, tuple], seeds, cache: dict) -> dict[str, list[dict]]:
    """Metrics of every arm and seed; arms are (method, data[, extra arguments]); runs shared between parts (same
    method, data, arguments and seed) are trained once."""
    results = {}
    for arm, (method, data, *extra) in arms.items():
        extra = extra[0] if extra else {}
        results[arm] = []
        for seed in seeds:
            key = (method, data, json.dumps(extra, sort_keys=True), seed)
            if key not in cache:
                started = time.time()
                name = f"{method}-{data}" + (f"-{len(cache)}" if extra else "")
                cache[key] = world.evaluate(world.train(name, method, data, seed, **extra))
                print(f"{arm}, seed {seed}: {cache[key]} ({time.time() - started:.0f} s)", flush=True)
            results[arm].append(cache[key])
    return results


def pcclip_results(world: World, seeds, cache: dict) -> dict[str, list[dict]]:
    """Base CLIP (the CLIP arm's run) vs its PC-CLIP finetune, per seed, on held-out pairs."""
    run_arms(world, {"CLIP": ("clip", "web")}, seeds, cache)
    results = {"base CLIP": [], "PC-CLIP": []}
    for seed in seeds:
        base = os.path.join(world.root, "runs", f"clip-web-seed{seed}")
        settings = {**demo.DEMO_CONFIG, "model_config": json.dumps(MODEL_CONFIG)}
        found = demo_pcclip.run(os.path.join(world.root, f"pcclip-seed{seed}"), world.train_set, world.test_set,
                                world.tokenizer_dir, settings, seed, base_model=base)
        for arm, key in (("base CLIP", "base"), ("PC-CLIP", "pcclip")):
            results[arm].append({name: found[key][name] for name in PCCLIP_METRICS})
    return results


def table(title: str, results: dict[str, list[dict]]) -> str:
    """A markdown table of mean ± std (over seeds) per arm and metric, times 100."""
    metrics = list(next(iter(results.values()))[0])
    lines = [f"**{title}** (mean ± std over seeds, × 100)", "", "| arm | " + " | ".join(metrics) + " |",
             "| --- |" + " ---: |" * len(metrics)]
    for arm, runs in results.items():
        cells = []
        for metric in metrics:
            values = [100 * run[metric] for run in runs]
            spread = statistics.stdev(values) if len(values) > 1 else 0.0
            cells.append(f"{statistics.mean(values):.1f} ± {spread:.1f}")
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


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
    world, cache, tables = World(args), {}, []
    if "laclip" in args.parts:
        tables.append(table("LaCLIP vs CLIP and EDA", run_arms(world, laclip_arms(), args.seeds, cache)))
    if "scaling" in args.parts:
        tables.append(table("LaCLIP with M LM rewrites per caption", run_arms(world, scaling_arms(), args.seeds, cache)))
    if "clips" in args.parts:
        tables.append(table("CLIPS: full synthetic caption vs sub-captions, with and without the captioner",
                            run_arms(world, clips_arms(), args.seeds, cache)))
    if "pcclip" in args.parts:
        tables.append(table("PC-CLIP: before and after finetuning on pair differences (held-out pairs)",
                            pcclip_results(world, args.seeds, cache)))
    command = "python benchmarks/reproduce_mini.py " + shlex.join(sys.argv[1:])
    text = (f"Command: `{command}` ({time.time() - started:.0f} s; {len(args.seeds)} seeds, "
            f"{args.steps} steps per run, {args.train_images} training images)\n\n" + "\n\n".join(tables))
    print(text)
    if args.write:
        write_section(args.write, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Suite wall time against the sum of single-task `langclip eval` runs on the same tiny generated suite.

    python benchmarks/eval_suite.py [--images 256 --rounds 2 --batch-size 64]

The generated suite has three datasets (random 160x128 JPEG images, saved with `save_to_disk`):
``objects`` (train and test splits; zero-shot, few-shot and linear probe), ``textures``
(zero-shot, mean-per-class) and ``captions`` (retrieval, two captions per image). The model is a
random LaCLIP (4+4 layers, width 256, 96 px, patch 16) saved next to a word tokenizer; nothing
is downloaded. Paths, each a full `langclip eval` call (model loading included), run
in-process in interleaved rounds, each keeping its best time:

- single tasks: one `langclip eval --dataset ... --task ...` per dataset and task (5 runs), no cache;
- suite, cold: `langclip eval --suite` with an empty feature cache (each split encoded once);
- suite, warm: the same command again on the cache the cold run left (features read back).

The ratio column is the sum of the single-task runs divided by each path's time.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import shutil
import tempfile
import time
from pathlib import Path

import datasets
import numpy as np
import torch
import yaml
from PIL import Image

from langclip import LaCLIPConfig, LaCLIPModel
from langclip.cli import main as cli
from langclip.modeling.image_processing import default_image_processor
from langclip.testing import train_word_tokenizer

CLASSES = [f"class{i}" for i in range(10)]
TEMPLATES = ["a photo of a {}.", "a blurry photo of a {}.", "art of the {}."]


def build_model(folder: Path) -> None:
    tokenizer = train_word_tokenizer(CLASSES + [" ".join(TEMPLATES), "a picture of one two thing"], max_length=32)
    text = dict(vocab_size=len(tokenizer), hidden_size=256, intermediate_size=1024, num_hidden_layers=4,
                num_attention_heads=4, max_position_embeddings=32, pad_token_id=tokenizer.pad_token_id,
                bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    vision = dict(hidden_size=256, intermediate_size=1024, num_hidden_layers=4, num_attention_heads=4, image_size=96,
                  patch_size=16)
    LaCLIPModel(LaCLIPConfig(text_config=text, vision_config=vision, projection_dim=256)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    default_image_processor(96).save_pretrained(folder)


def jpeg(rng) -> Image.Image:
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (128, 160, 3), dtype=np.uint8)).save(buffer, format="jpeg")
    return Image.open(io.BytesIO(buffer.getvalue()))


def build_data(root: Path, images: int) -> Path:
    rng = np.random.default_rng(0)
    classified = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=CLASSES)})

    def rows(n):
        return {"image": [jpeg(rng) for _ in range(n)], "label": [i % len(CLASSES) for i in range(n)]}

    datasets.DatasetDict({split: datasets.Dataset.from_dict(rows(images), features=classified)
                          for split in ("train", "test")}).save_to_disk(root / "objects")
    datasets.DatasetDict({"test": datasets.Dataset.from_dict(rows(images), features=classified)}).save_to_disk(
        root / "textures")
    captions = {"image": [jpeg(rng) for _ in range(images)],
                "caption": [[f"a picture of {CLASSES[i % 10]}", f"one two {CLASSES[(i + 1) % 10]}"]
                            for i in range(images)]}
    datasets.DatasetDict({"test": datasets.Dataset.from_dict(captions)}).save_to_disk(root / "captions")
    manifest = {"name": "bench", "defaults": {"templates": TEMPLATES}, "datasets": {
        "objects": {"path": str(root / "objects"), "tasks": ["zero-shot", "few-shot", "linear-probe"]},
        "textures": {"path": str(root / "textures"), "metric": "mean_per_class"},
        "captions": {"path": str(root / "captions"), "tasks": ["retrieval"]},
    }}
    (root / "bench.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
    (root / "templates.txt").write_text("\n".join(TEMPLATES) + "\n")
    return root / "bench.yaml"


def timed(argv: list[str]) -> float:
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        assert cli(argv) == 0
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=256, help="Images per dataset split.")
    parser.add_argument("--batch-size", type=int, default=64, help="Images or texts per forward pass.")
    parser.add_argument("--rounds", type=int, default=2, help="Interleaved timing rounds; the best is kept.")
    args = parser.parse_args()
    torch.manual_seed(0)
    root = Path(tempfile.mkdtemp(prefix="eval_suite_bench_"))
    try:
        build_model(root / "model")
        manifest = build_data(root, args.images)
        templates = str(root / "templates.txt")
        common = ["--model", str(root / "model"), "--batch-size", str(args.batch_size), "--device", "cpu",
                  "--episodes", "100", "--probe-cs", "0.1", "1", "10"]
        singles = [
            ["--dataset", str(root / "objects"), "--task", "zero-shot", "--templates", templates],
            ["--dataset", str(root / "objects"), "--task", "few-shot"],
            ["--dataset", str(root / "objects"), "--task", "linear-probe"],
            ["--dataset", str(root / "textures"), "--task", "zero-shot", "--metric", "mean_per_class",
             "--templates", templates],
            ["--dataset", str(root / "captions"), "--task", "retrieval"],
        ]
        best = {"single tasks (sum of 5 runs)": float("inf"), "suite, cold cache": float("inf"),
                "suite, warm cache": float("inf")}
        for round_ in range(args.rounds):
            single = sum(timed(["eval", *common, *flags, "--output-dir", str(root / "single")]) for flags in singles)
            best["single tasks (sum of 5 runs)"] = min(best["single tasks (sum of 5 runs)"], single)
            suite = ["eval", *common, "--suite", str(manifest), "--output-dir", str(root / f"suite{round_}")]
            best["suite, cold cache"] = min(best["suite, cold cache"], timed(suite))
            best["suite, warm cache"] = min(best["suite, warm cache"], timed(suite))
        baseline = best["single tasks (sum of 5 runs)"]
        print(f"{args.images} images per split, batch {args.batch_size}, {torch.get_num_threads()} threads, "
              f"best of {args.rounds} rounds\n")
        print("| path | wall s | speed-up vs single tasks |")
        print("| --- | ---: | ---: |")
        for name, seconds in best.items():
            print(f"| {name} | {seconds:.1f} | {baseline / seconds:.2f}x |")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()

"""Files the training tests share: a saved word tokenizer, a small image-text dataset, a tiny model config."""

import argparse
import json

import datasets
import numpy as np
from PIL import Image

from langclip.testing import train_word_tokenizer
from langclip.training.arguments import add_arguments, arguments_from_namespace
from langclip.training.objectives import Difference

WORDS = "a photo of the red green blue yellow circle square shape picture small large"
COLOURS = ["red", "green", "blue", "yellow"]
TINY_MODEL_CONFIG = json.dumps({
    "text_config": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                    "max_position_embeddings": 16},
    "vision_config": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                      "image_size": 32, "patch_size": 8},
    "projection_dim": 16,
})


def make_training_files(folder, rows: int = 32) -> dict:
    """Saves a tokenizer and a dataset (image, caption, rewrites) under ``folder``; returns the base flags."""
    train_word_tokenizer([WORDS], max_length=16).save_pretrained(str(folder / "tokenizer"))
    rng = np.random.default_rng(0)
    images, captions, rewrites = [], [], []
    for i in range(rows):
        colour = COLOURS[i % 4]
        pixels = rng.integers(0, 60, (40, 40, 3), dtype=np.uint8)
        pixels[..., i % 3] = 200
        images.append(Image.fromarray(pixels))
        captions.append(f"a {colour} circle")
        rewrites.append([f"a photo of a {colour} circle", f"{colour} shape picture", "x"])
    datasets.Dataset.from_dict({"image": images, "caption": captions, "rewrites": rewrites}).save_to_disk(
        str(folder / "data"))
    return {
        "train_data": str(folder / "data"),
        "tokenizer_name_or_path": str(folder / "tokenizer"),
        "model_config": TINY_MODEL_CONFIG,
        "per_device_batch_size": 4,
        "report_to": "none",
        "save_steps": 0,
    }


def training_values(files: dict, **overrides) -> dict:
    """``files`` with ``overrides``; a ``model_name_or_path`` replaces the tiny ``model_config`` (a checkpoint brings
    its own config, and --model-config with it is refused)."""
    values = {**files, **overrides}
    if "model_name_or_path" in overrides:
        values.pop("model_config", None)
    return values


def as_flags(values: dict) -> list[str]:
    flags = []
    for key, value in values.items():
        flags += [f"--{key}"] + ([str(v) for v in value] if isinstance(value, list) else [str(value)])
    return flags


def read_log(path) -> list[dict]:
    with open(path) as handle:
        return [json.loads(line) for line in handle]


def parse_train_args(argv: list[str] | None = None):
    """Parse ``argv`` (default: sys.argv) into (ModelArguments, DataArguments, TrainArguments), as `langclip train`
    does with its flags."""
    parser = argparse.ArgumentParser(description="Train CLIP, LaCLIP, LaCLIP-MT, CLIPS or PC-CLIP with accelerate.")
    add_arguments(parser)
    return arguments_from_namespace(parser.parse_args(argv))


def pcclip_loss(model, batch, clip_weight: float = 0.0):
    """The ``difference`` objective's loss on ``model`` and a `DifferenceCollator` batch, as the step computes it."""
    objective = Difference(clip_weight=clip_weight)
    return objective.loss(*objective.features(model, batch), **objective.loss_inputs(model))

"""The PC-CLIP part of `benchmarks/reproduce_mini.py`: finetune a CLIP on pairwise differences, compare it with its base.

`run` takes the demo world (`langclip.demo.world`) and a base CLIP checkpoint
(``settings["base_model"]``; without one it first trains a CLIP with the demo settings),
writes the world's ground-truth difference texts (`demo_world.describe_difference`) for
random training pairs, finetunes with ``--method pcclip`` through `trainer.train`
(text transformer layers only, precomputed image embeddings), and evaluates base and
finetuned models on held-out test pairs:

- difference classification (`evaluation.differences`): mean ± standard error over three
  samples of held-out pairs;
- attribute ranking: Spearman / Kendall of the test images' projections on the text
  direction "larger" (truth: size) and "more shapes" (truth: count);
- zero-shot top-1 with the plain "This is a photo of a {c}" classifier and with
  comparative prompting (alpha = 0.9) from the colour/shape differences between classes.

Everything goes under ``output_dir/pcclip/``: ``data`` and ``differences.jsonl`` (training
pairs), ``base`` (when trained here), ``model`` (the finetuned checkpoint), ``results.json``.
"""

from __future__ import annotations

import json
import os

import torch
from transformers import AutoTokenizer

from langclip.demo import world as demo_world
from langclip.demo.evaluate import markdown_table
from langclip.evaluation.differences import (
    CLASS_PROMPT,
    attribute_ranking,
    comparative_class_embeddings,
    difference_classification,
    mean_and_stderr,
)
from langclip.evaluation.features import encode_images, encode_texts
from langclip.evaluation.zero_shot import zero_shot_accuracy
from langclip.modeling import LaCLIPModel
from langclip.modeling.image_processing import load_image_processor
from langclip.processing.generation.differences import sample_pairs
from langclip.processing.transforms import ImageTransform
from langclip.training.trainer import train_in_process

ATTRIBUTES = ("shape", "colour", "size", "position", "count")
LARGER = "The shapes in the first image are larger than the shapes in the second image."
MORE = "The first image has more shapes than the second: three instead of one."
FINETUNE = {"per_device_batch_size": 64, "max_steps": 150, "lr": 1e-4, "warmup_steps": 10, "weight_decay": 0.0,
            "precompute_image_embeddings": True, "save_steps": 0, "report_to": "none"}
EVAL_SEEDS = (0, 1, 2)


def difference_pairs(dataset, num_pairs: int, seed: int) -> list[dict]:
    """Random ordered pairs with at least one differing attribute and their ground-truth difference text."""
    ids = dataset["id"]
    columns = zip(ids, *(dataset[name] for name in ATTRIBUTES))
    known = {image_id: dict(zip(ATTRIBUTES, values)) for image_id, *values in columns}
    pairs = [(a, b) for a, b in sample_pairs(ids, 2 * num_pairs, seed=seed) if known[a] != known[b]][:num_pairs]
    return [{"id_a": a, "id_b": b, "difference": demo_world.describe_difference(known[a], known[b])} for a, b in pairs]


@torch.no_grad()
def evaluate(model_dir: str, test_set, test_pairs: list[list[dict]]) -> dict:
    """Difference classification (mean and stderr over the pair samples), attribute ranking, zero-shot with and
    without comparative prompting."""
    model = LaCLIPModel.from_pretrained(model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    transform = ImageTransform.from_image_processor(load_image_processor(model_dir))
    images = test_set["image"]
    batches = (torch.stack([transform(image) for image in images[i : i + 256]]) for i in range(0, len(images), 256))
    features = encode_images(model, batches, progress=False)
    row = {image_id: i for i, image_id in enumerate(test_set["id"])}

    def text(texts):
        return encode_texts(model, tokenizer, texts, progress=False)

    accuracies = []
    for pairs in test_pairs:
        a = features[[row[p["id_a"]] for p in pairs]]
        b = features[[row[p["id_b"]] for p in pairs]]
        accuracies.append(difference_classification(a, b, text([p["difference"] for p in pairs])))
    accuracy, stderr = mean_and_stderr(accuracies)
    larger, more = text([LARGER, MORE])
    size = attribute_ranking(features, larger, [demo_world.SIZES[s] for s in test_set["size"]])
    count = attribute_ranking(features, more, test_set["count"])

    classes = [dict(zip(("colour", "shape"), name.split())) for name in demo_world.CLASS_NAMES]
    plain = text([CLASS_PROMPT.format(name) for name in demo_world.CLASS_NAMES])
    base = {"size": "large", "position": "centre", "count": 1}
    known = [(i, j) for i in range(len(classes)) for j in range(len(classes)) if i != j]
    descriptions = text([demo_world.describe_difference({**classes[i], **base}, {**classes[j], **base})
                         for i, j in known])
    comparative = comparative_class_embeddings(plain, [(i, j, e) for (i, j), e in zip(known, descriptions)], 0.9)
    labels = torch.tensor(test_set["label"])
    return {
        "difference_accuracy": accuracy,
        "difference_accuracy_stderr": stderr,
        "size_spearman": size["spearman"],
        "size_kendall": size["kendall"],
        "count_spearman": count["spearman"],
        "count_kendall": count["kendall"],
        "zero_shot_top1": zero_shot_accuracy(features, plain, labels, (1,))["top1"],
        "zero_shot_top1_comparative": zero_shot_accuracy(features, comparative, labels, (1,))["top1"],
    }


def run(
    output_dir: str,
    train_set,
    test_set,
    tokenizer_dir: str,
    settings: dict,
    seed: int = 0,
    base_model: str | None = None,
    max_steps: int = FINETUNE["max_steps"],
    num_pairs: int | None = None,
    finetune: dict | None = None,
) -> dict:
    """Finetune ``base_model`` (or a CLIP trained here with the training ``settings``) with PC-CLIP for
    ``max_steps`` on ``num_pairs`` difference texts (default: 4 per training image), with `FINETUNE`'s training
    arguments updated by ``finetune``; returns and prints {"base": metrics, "pcclip": metrics} on held-out pairs
    (see the module docstring).
    """
    folder = os.path.join(output_dir, "pcclip")
    os.makedirs(folder, exist_ok=True)
    data_dir, differences = os.path.join(folder, "data"), os.path.join(folder, "differences.jsonl")
    train_set.select_columns(["id", "image", "caption"]).save_to_disk(data_dir)
    pairs = difference_pairs(train_set, num_pairs or 4 * len(train_set), seed)
    with open(differences, "w") as handle:
        handle.writelines(json.dumps(pair) + "\n" for pair in pairs)

    common = {"train_data": data_dir, "seed": seed, "report_to": "none", "save_steps": 0, "overwrite_output_dir": True}
    if base_model is None:
        base_model = os.path.join(folder, "base")
        print("pcclip: training a base CLIP")
        train_in_process({**settings, **common, "method": "clip", "tokenizer_name_or_path": tokenizer_dir,
                          "output_dir": base_model})
    tuned = os.path.join(folder, "model")
    print(f"pcclip: finetuning {base_model} on {len(pairs)} difference texts")
    values = {**FINETUNE, **common, "method": "pcclip", "model_name_or_path": base_model,
              "difference_data": differences, "output_dir": tuned, "max_steps": max_steps, **(finetune or {})}
    train_in_process({**values, "per_device_batch_size": min(values["per_device_batch_size"], len(pairs))})

    test_pairs = [difference_pairs(test_set, len(test_set), seed + 1 + s) for s in EVAL_SEEDS]
    results = {"base": evaluate(base_model, test_set, test_pairs), "pcclip": evaluate(tuned, test_set, test_pairs)}
    with open(os.path.join(folder, "results.json"), "w") as handle:
        json.dump(results, handle, indent=2)
    print(f"\nPC-CLIP on held-out pairs ({len(test_pairs[0])} pairs x {len(EVAL_SEEDS)} samples)")
    print(markdown_table(results))
    return results

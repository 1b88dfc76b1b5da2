"""`langclip demo` (`make demo`): CLIP vs LaCLIP on the generated shapes world, end to end on a CPU.

Steps: generate the world (`langclip.processing.demo_world`), train a word tokenizer on
its texts, rewrite every web caption, train CLIP (web captions) and LaCLIP (aug_T over the
caption and its rewrites) with the real trainer, evaluate zero-shot classification with
held-out prompt phrasings and image-text retrieval with held-out captions, and write
``outputs/demo/``: the two checkpoints (LaCLIP's with a model card), ``eval_results.json``,
``demo.png`` (loss and accuracy), then print a CLIP vs LaCLIP table.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch
from accelerate.state import AcceleratorState

from ..modeling import LaCLIPModel
from ..processing import demo_world
from ..processing.image_transforms import ImageTransform
from ..processing.tokenization import train_word_tokenizer
from .arguments import DATACLASSES, load_yaml_config
from .trainer import LOG_FILE, train

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
    "max_steps": 400,
    "lr": 1e-3,
    "lr_start": 1e-6,
    "lr_end": 1e-5,
    "warmup_steps": 50,
    "weight_decay": 0.1,
    "save_steps": 0,
    "report_to": "none",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output-dir", default="outputs/demo", help="Where checkpoints, results and the plot go.")
    parser.add_argument("--config", default=None, help="YAML of training arguments that override the embedded demo run.")
    parser.add_argument("--train-images", type=int, default=4096, help="Generated training images.")
    parser.add_argument("--test-images", type=int, default=512, help="Generated held-out test images.")
    parser.add_argument("--max-steps", type=int, default=None, help="Optimizer steps per model (default: the config's).")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the world, initialisation and data order.")


def rewrite_captions(train_set) -> list[list[str]]:
    """The rewrites of every training caption.

    STAND-IN for the LM rewriting step (`langclip.processing.rewrite`), which the lead wires in
    here: until then the world's ground-truth paraphrases serve as oracle rewrites.
    """
    return [list(p) for p in train_set["paraphrases"]]


@torch.no_grad()
def embed(model, tokenizer, transform, images=None, texts=None, batch_size=256) -> torch.Tensor:
    """Normalised image (or text) embeddings, in batches."""
    chunks = []
    items = images if images is not None else texts
    for start in range(0, len(items), batch_size):
        part = items[start : start + batch_size]
        if images is not None:
            output = model.get_image_features(pixel_values=torch.stack([transform(image) for image in part]))
        else:
            tokens = tokenizer(list(part), padding=True, truncation=True, return_tensors="pt")
            output = model.get_text_features(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"])
        chunks.append(torch.nn.functional.normalize(output.pooler_output, dim=-1))
    return torch.cat(chunks)


def evaluate(model_dir: str, test_set) -> dict:
    """Zero-shot top-1 with held-out prompts, and retrieval R@1 with held-out captions.

    STAND-IN for `langclip.evaluation` (zero_shot / retrieval), which the lead wires in here.
    """
    from transformers import AutoTokenizer, CLIPImageProcessor

    model = LaCLIPModel.from_pretrained(model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    transform = ImageTransform.from_image_processor(CLIPImageProcessor.from_pretrained(model_dir))
    images = embed(model, tokenizer, transform, images=test_set["image"])
    prompts = [t.format(c) for c in demo_world.CLASS_NAMES for t in demo_world.ZERO_SHOT_TEMPLATES]
    classes = embed(model, tokenizer, transform, texts=prompts).view(len(demo_world.CLASS_NAMES), -1, images.shape[1])
    classes = torch.nn.functional.normalize(classes.mean(1), dim=-1)
    labels = torch.tensor(test_set["label"])
    zero_shot = (images @ classes.T).argmax(1).eq(labels).float().mean().item()
    captions = [c for row in test_set["eval_captions"] for c in row]
    per_image = len(captions) // len(images)
    owner = torch.arange(len(images)).repeat_interleave(per_image)
    similarity = images @ embed(model, tokenizer, transform, texts=captions).T
    image_to_text = owner[similarity.argmax(1)].eq(torch.arange(len(images))).float().mean().item()
    text_to_image = similarity.argmax(0).eq(owner).float().mean().item()
    return {"zero_shot_top1": zero_shot, "image_to_text_R@1": image_to_text, "text_to_image_R@1": text_to_image}


def write_model_card(model_dir: str, results: dict) -> None:
    """README.md with model-index results. STAND-IN for `langclip.hub_cards`, which the lead wires in here."""
    metrics = "\n".join(f"      - type: {name}\n        value: {value:.4f}" for name, value in results.items())
    card = (
        "---\nlibrary_name: transformers\ntags: [laclip, clip, demo]\nmodel-index:\n- name: laclip-demo\n  results:\n"
        "  - task: {type: zero-shot-image-classification}\n    dataset: {name: langclip demo world (held-out phrasings), "
        f"type: synthetic}}\n    metrics:\n{metrics}\n---\n\n# LaCLIP demo model\n\nA tiny LaCLIP trained by "
        "`langclip demo` on generated 64 px images of coloured shapes. It loads with "
        "`LaCLIPModel.from_pretrained` or `transformers.CLIPModel.from_pretrained`.\n"
    )
    with open(os.path.join(model_dir, "README.md"), "w") as handle:
        handle.write(card)


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
    scores.set_xticks([m + width / 2 for m in range(len(metrics))], metrics)
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
    tokenizer = train_word_tokenizer(demo_world.world_vocabulary(), max_length=32)
    tokenizer.save_pretrained(os.path.join(output_dir, "tokenizer"))

    print("rewriting the captions")
    train_set = train_set.add_column("rewrites", rewrite_captions(train_set))
    train_set.select_columns(["id", "image", "caption", "rewrites"]).save_to_disk(os.path.join(output_dir, "data"))

    results = {}
    for method in ("clip", "laclip"):
        run_dir = os.path.join(output_dir, method)
        values = {**settings, "method": method, "train_data": os.path.join(output_dir, "data"),
                  "tokenizer_name_or_path": os.path.join(output_dir, "tokenizer"), "output_dir": run_dir}
        if os.path.exists(os.path.join(run_dir, LOG_FILE)):
            os.remove(os.path.join(run_dir, LOG_FILE))
        train(*(dtype(**{k: v for k, v in values.items() if k in dtype.__dataclass_fields__}) for dtype in DATACLASSES))
        AcceleratorState._reset_state(reset_partial_state=True)
        results[method] = evaluate(run_dir, test_set)

    write_model_card(os.path.join(output_dir, "laclip"), results["laclip"])
    with open(os.path.join(output_dir, "eval_results.json"), "w") as handle:
        json.dump(results, handle, indent=2)
    plot(output_dir, results)

    metrics = list(results["clip"])
    print(f"\n| model | {' | '.join(metrics)} |\n| --- |{' --- |' * len(metrics)}")
    for name, values in results.items():
        print(f"| {name} | " + " | ".join(f"{values[m]:.3f}" for m in metrics) + " |")
    print(f"\nwrote {output_dir}/ (checkpoints, eval_results.json, demo.png) in {time.time() - started:.0f} s")
    return 0

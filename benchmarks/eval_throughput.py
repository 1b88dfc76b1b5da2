"""Zero-shot evaluation throughput: langclip's batched path against per-image loops, in one run.

    python benchmarks/eval_throughput.py [--images 256 --classes 100 --batch-size 64]

The zero-shot classifier (classes x templates prompts) is built once by `zero_shot_classifier`
and timed on its own: it is a fixed cost, whatever the number of images. Then, in images/s:

- batched (langclip): `encode_images` over batches of ``--batch-size``, one matmul,
  `zero_shot_accuracy`.
- per-image loop: the same classifier, one image per forward pass.
- per-image loop, model-card style: for each image, `CLIPModel(input_ids=all prompts,
  pixel_values=image)` with the same weights, as in the transformers CLIP usage snippet, so
  the prompts are re-encoded for every image.

Every path includes image preprocessing. A small random LaCLIP model is built here (no
download); images are random PIL images. The paths are interleaved over rounds and each keeps
its best time, since the machine may be shared.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from PIL import Image
from transformers import CLIPModel

from langclip import LaCLIPConfig, LaCLIPModel
from langclip.evaluation.features import encode_images
from langclip.evaluation.templates import load_templates
from langclip.evaluation.zero_shot import zero_shot_accuracy, zero_shot_classifier
from langclip.modeling.image_processing import default_image_processor
from langclip.testing import train_word_tokenizer


def build(classes: int, image_size: int):
    names = [f"class{i}" for i in range(classes)]
    tokenizer = train_word_tokenizer(names + [" ".join(load_templates("openai_imagenet"))], max_length=32)
    text = dict(vocab_size=len(tokenizer), hidden_size=256, intermediate_size=1024, num_hidden_layers=4,
                num_attention_heads=4, max_position_embeddings=32, pad_token_id=tokenizer.pad_token_id,
                bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    vision = dict(hidden_size=256, intermediate_size=1024, num_hidden_layers=4, num_attention_heads=4,
                  image_size=image_size, patch_size=16)
    model = LaCLIPModel(LaCLIPConfig(text_config=text, vision_config=vision, projection_dim=256)).eval()
    processor = default_image_processor(image_size)
    return model, tokenizer, processor, names


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=256, help="Images for the batched and per-image paths.")
    parser.add_argument("--naive-images", type=int, default=8, help="Images for the model-card-style loop.")
    parser.add_argument("--classes", type=int, default=100, help="Number of classes.")
    parser.add_argument("--templates", default="laclip_imagenet", help="Template set (or file) per class.")
    parser.add_argument("--batch-size", type=int, default=64, help="Batch size of the batched path.")
    parser.add_argument("--rounds", type=int, default=3, help="Interleaved timing rounds; the best is kept.")
    parser.add_argument("--image-size", type=int, default=96, help="Model input size in pixels.")
    args = parser.parse_args()
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    model, tokenizer, processor, names = build(args.classes, args.image_size)
    templates = load_templates(args.templates)
    images = [Image.fromarray(rng.integers(0, 256, (128, 160, 3), dtype=np.uint8)) for _ in range(args.images)]
    labels = torch.tensor(rng.integers(0, args.classes, args.images))

    def pixels(batch):
        return processor(images=batch, return_tensors="pt")["pixel_values"]

    start = time.perf_counter()
    classifier = zero_shot_classifier(model, tokenizer, names, templates, progress=False)
    prompts_per_second = len(names) * len(templates) / (time.perf_counter() - start)

    def batched_path():
        batches = (pixels(images[i : i + args.batch_size]) for i in range(0, len(images), args.batch_size))
        return zero_shot_accuracy(encode_images(model, batches, progress=False), classifier, labels)["top1"]

    def per_image_path():
        features = torch.cat([encode_images(model, [pixels([image])], progress=False) for image in images])
        return zero_shot_accuracy(features, classifier, labels)["top1"]

    subset = images[: args.naive_images]

    plain = CLIPModel(model.config).eval()  # LaCLIPModel's forward pairs images with texts one to one
    plain.load_state_dict(model.state_dict())
    prompts = [template.format(name) for name in names for template in templates]

    @torch.inference_mode()
    def card_style_path():
        text = tokenizer(prompts, padding=True, return_tensors="pt")
        for image in subset:
            logits = plain(**text, pixel_values=pixels([image])).logits_per_image  # (1, classes * templates)
            logits.view(len(names), len(templates)).mean(1).argmax()

    paths = {"batched": (batched_path, args.images), "per_image": (per_image_path, args.images),
             "card_style": (card_style_path, len(subset))}
    rates, top1 = {name: 0.0 for name in paths}, {}
    for _ in range(args.rounds):
        for name, (run, count) in paths.items():
            start = time.perf_counter()
            top1[name] = run()
            rates[name] = max(rates[name], count / (time.perf_counter() - start))
    batched, per_image, card_style = rates["batched"], rates["per_image"], rates["card_style"]
    assert abs(top1["batched"] - top1["per_image"]) < 1e-9, "batched and per-image paths disagree"

    print(f"zero-shot eval, {args.classes} classes x {len(templates)} templates, {args.image_size} px, "
          f"torch threads {torch.get_num_threads()}; top-1 {top1['batched']:.3f} (random model); "
          f"classifier built once at {prompts_per_second:.0f} prompts/s")
    print("| path | images | images/s | batched speed-up |")
    print("| --- | ---: | ---: | ---: |")
    for name, count, rate in (
        (f"langclip batched (batch {args.batch_size})", args.images, batched),
        ("per-image loop, same classifier", args.images, per_image),
        ("per-image loop, prompts re-encoded (model-card style)", len(subset), card_style),
    ):
        print(f"| {name} | {count} | {rate:.1f} | {batched / rate:.1f}x |")


if __name__ == "__main__":
    main()

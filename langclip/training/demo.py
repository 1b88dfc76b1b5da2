"""A short LaCLIP training loop on generated images and captions (`langclip demo`)."""

import argparse
import random

import torch

from ..modeling import LaCLIPConfig, LaCLIPModel
from ..processing.text_augment import ContrastiveCollator, TextAugmenter
from ..processing.tokenization import train_word_tokenizer

COLOURS = {"red": (1.0, 0.0, 0.0), "green": (0.0, 1.0, 0.0), "blue": (0.0, 0.0, 1.0), "yellow": (1.0, 1.0, 0.0)}
PLACES = {"left": (0, 0), "right": (0, 16), "top": (0, 8), "bottom": (16, 8)}


def make_rows(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        colour, place = rng.choice(list(COLOURS)), rng.choice(list(PLACES))
        image = torch.zeros(3, 32, 32)
        y, x = PLACES[place]
        image[:, y : y + 16, x : x + 16] = torch.tensor(COLOURS[colour])[:, None, None]
        rows.append({
            "id": str(i),
            "pixel_values": image,
            "caption": f"{colour} square {place}",
            "rewrites": [f"a {colour} square on the {place}", f"picture of a {colour} shape {place}"],
        })
    return rows


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--steps", type=int, default=60, help="Optimizer steps.")
    parser.add_argument("--seed", type=int, default=0, help="Seed for data, augmentation and initialisation.")


def main(args: argparse.Namespace) -> int:
    torch.manual_seed(args.seed)
    rows = make_rows(256, args.seed)
    tokenizer = train_word_tokenizer([t for r in rows for t in [r["caption"], *r["rewrites"]]], max_length=16)
    config = LaCLIPConfig(
        text_config=dict(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=16, pad_token_id=tokenizer.pad_token_id,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id),
        vision_config=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                           image_size=32, patch_size=8),
        projection_dim=32,
    )
    model = LaCLIPModel(config)
    collator = ContrastiveCollator(tokenizer, 16, augmenter=TextAugmenter(args.seed))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.98), eps=1e-8)
    for step in range(args.steps):
        batch = collator(random.Random(step).sample(rows, 64))
        loss = model(**batch, return_loss=True).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        model.clamp_logit_scale_()
        if step % 10 == 0 or step == args.steps - 1:
            print(f"step {step:3d}  loss {loss.item():.3f}")
    return 0

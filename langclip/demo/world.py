"""A small generated world for the demo and tests: 64 px images of coloured shapes and texts about them.

Each image has attributes (shape, colour, size, position, count) and, derived from them:

- ``caption``: a short, terse web-like caption (often missing attributes);
- ``paraphrases``: several correct full descriptions, from the training templates (oracle
  rewrites that know the image);
- `faithful_rewrites(caption)`: rewrites of the web caption that keep exactly what it says,
  in a few styles (what a good LLM rewrite can do without seeing the image; the demo's
  rewriting LM learns them in context from the `rewrite_pool`);
- ``eval_captions``: correct descriptions from held-out templates (retrieval queries);
- ``synthetic_caption``: a long detailed caption (CLIPS);
- ``label`` / ``class_name``: the "{colour} {shape}" class;
- `describe_difference(a, b)`: how image a differs visually from image b (PC-CLIP).

Zero-shot prompts (`ZERO_SHOT_TEMPLATES`) and ``eval_captions`` use phrasings that no
training text uses. Everything is seeded and deterministic.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Sequence

import datasets
import numpy as np
from PIL import Image, ImageDraw

IMAGE_SIZE = 64
SHAPES = ("circle", "square", "triangle", "star")
COLOURS = {
    "red": (220, 30, 30), "green": (30, 170, 40), "blue": (30, 60, 220),
    "yellow": (235, 210, 20), "purple": (140, 40, 170), "orange": (245, 130, 20),
}
SIZES = {"small": 7, "large": 13}  # shape radius in pixels
POSITIONS = {"left": (18, 32), "right": (46, 32), "top": (32, 18), "bottom": (32, 46), "centre": (32, 32)}
COUNT_WORDS = {1: "one", 2: "two", 3: "three"}
CLASS_NAMES = [f"{colour} {shape}" for colour in COLOURS for shape in SHAPES]

WEB_TEMPLATES = (
    "{colour} {shape}", "my {colour} {shape} pic", "{shape} lol", "IMG_{number} {colour}", "{count} {shapes}!!",
    "{size} {shape} drawing", "{colour} stuff on the {position}", "new {shape} art {number}",
)
TRAIN_TEMPLATES = (
    "a picture of {count} {size} {colour} {shapes} on the {position}",
    "{count} {colour} {shapes}, {size}, at the {position} of the image",
    "an image with {count} {size} {colour} {shapes} placed on the {position}",
    "{size} {colour} {shapes} on the {position}, {count} of them",
    "there are {count} {colour} {shapes} of {size} size on the {position}",
    "a simple drawing showing {count} {size} {colour} {shapes} at the {position}",
)
EVAL_TEMPLATES = (
    "toward the {position} sit {count} {colour} {shapes} that are {size}",
    "{count} {size} {shapes} coloured {colour}, located {position}",
)
REWRITE_STYLES = ("a picture of {}", "an image showing {}", "a simple drawing of {}", "{} in a picture")
ZERO_SHOT_TEMPLATES = ("a rendering of a {}.", "this graphic contains a {}", "look, a {}!")


def plural(shape: str, count: int) -> str:
    return shape if count == 1 else f"{shape}s"


def sample_attributes(rng: random.Random) -> dict:
    return {"shape": rng.choice(SHAPES), "colour": rng.choice(list(COLOURS)), "size": rng.choice(list(SIZES)),
            "position": rng.choice(list(POSITIONS)), "count": rng.choice(list(COUNT_WORDS))}


def shape_polygon(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    """Vertices of a square, triangle or five-pointed star of radius ``r`` centred at (cx, cy)."""
    if shape == "square":
        return [(cx - r, cy - r), (cx + r, cy - r), (cx + r, cy + r), (cx - r, cy + r)]
    if shape == "triangle":
        angles = [-90, 30, 150]
        return [(cx + r * math.cos(math.radians(a)), cy + r * math.sin(math.radians(a))) for a in angles]
    points = []
    for k in range(10):
        radius = r if k % 2 == 0 else r * 0.45
        angle = math.radians(-90 + 36 * k)
        points.append((cx + radius * math.cos(angle), cy + radius * math.sin(angle)))
    return points


def render(attributes: dict, rng: random.Random) -> Image.Image:
    """The image: ``count`` shapes around the position's anchor on a lightly tinted, noisy background."""
    background = tuple(rng.randint(200, 250) for _ in range(3))
    image = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), background)
    draw = ImageDraw.Draw(image)
    r = SIZES[attributes["size"]] / (1 + 0.25 * (attributes["count"] - 1))
    ax, ay = POSITIONS[attributes["position"]]
    offsets = {1: [(0, 0)], 2: [(-1, 0), (1, 0)], 3: [(-1, 0.6), (1, 0.6), (0, -0.9)]}[attributes["count"]]
    colour = tuple(min(255, max(0, c + rng.randint(-15, 15))) for c in COLOURS[attributes["colour"]])
    for dx, dy in offsets:
        cx, cy = ax + dx * 1.15 * r + rng.uniform(-1.5, 1.5), ay + dy * 1.15 * r + rng.uniform(-1.5, 1.5)
        if attributes["shape"] == "circle":
            draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=colour)
        else:
            draw.polygon(shape_polygon(attributes["shape"], cx, cy, r), fill=colour)
    noise = np.random.default_rng(rng.getrandbits(32)).integers(-8, 9, (IMAGE_SIZE, IMAGE_SIZE, 3))
    return Image.fromarray(np.clip(np.asarray(image, dtype=np.int16) + noise, 0, 255).astype(np.uint8))


def fill(template: str, attributes: dict, number: int = 0) -> str:
    count = attributes["count"]
    return template.format(
        shape=attributes["shape"], shapes=plural(attributes["shape"], count), colour=attributes["colour"],
        size=attributes["size"], position=attributes["position"], count=COUNT_WORDS[count], number=number,
    )


def web_caption(attributes: dict, rng: random.Random) -> str:
    return fill(rng.choice(WEB_TEMPLATES), attributes, number=rng.randint(100, 9999))


def paraphrases(attributes: dict, rng: random.Random, num: int = 4, templates=TRAIN_TEMPLATES) -> list[str]:
    """``num`` correct descriptions from distinct ``templates``."""
    return [fill(t, attributes) for t in rng.sample(templates, min(num, len(templates)))]


def synthetic_caption(attributes: dict) -> str:
    """A long, detailed, correct description (what a recaptioning model would write)."""
    count, shape = attributes["count"], attributes["shape"]
    shapes = plural(shape, count)
    return (
        f"The image shows {COUNT_WORDS[count]} {attributes['size']} {attributes['colour']} {shapes} "
        f"near the {attributes['position']} of a plain light background. "
        f"{'Each' if count > 1 else 'The'} {shape} is filled with a solid {attributes['colour']} colour "
        f"and has no outline. "
        f"{'The shapes are close together.' if count > 1 else 'It stands alone.'} "
        f"Apart from the {shapes}, the picture is empty."
    )


def describe_difference(a: dict, b: dict) -> str:
    """How the image with attributes ``a`` differs visually from the one with ``b``: one sentence per attribute, each
    long enough (>= 60 characters) to pass PC-CLIP's filter on its own."""
    parts = []
    if a["size"] != b["size"]:
        parts.append(f"The shapes in the first image are {'larger' if a['size'] == 'large' else 'smaller'} "
                     f"than the shapes in the second image.")
    if a["colour"] != b["colour"]:
        parts.append(f"The first image shows {a['colour']} shapes, while the second image shows {b['colour']} shapes.")
    if a["shape"] != b["shape"]:
        parts.append(f"The first image contains {plural(a['shape'], 2)}, whereas the second image contains "
                     f"{plural(b['shape'], 2)}.")
    if a["position"] != b["position"]:
        parts.append(f"The shapes in the first image sit at the {a['position']} instead of at the {b['position']}.")
    if a["count"] != b["count"]:
        more = "more" if a["count"] > b["count"] else "fewer"
        parts.append(f"The first image has {more} shapes than the second: "
                     f"{COUNT_WORDS[a['count']]} instead of {COUNT_WORDS[b['count']]}.")
    if not parts:
        return (f"The two images look the same: both show {COUNT_WORDS[a['count']]} {a['size']} "
                f"{a['colour']} {plural(a['shape'], a['count'])} at the {a['position']}.")
    return " ".join(parts)


def mentioned_attributes(caption: str) -> dict:
    """The attributes a web caption states, read off its words (e.g. "two circles!!" -> count 2, shape circle)."""
    mentioned = {}
    for word in re.findall(r"[a-z]+", caption.lower()):
        singular = word[:-1] if word.endswith("s") else word
        if singular in SHAPES:
            mentioned["shape"] = singular
        elif word in COLOURS:
            mentioned["colour"] = word
        elif word in SIZES:
            mentioned["size"] = word
        elif word in POSITIONS:
            mentioned["position"] = word
        elif word in COUNT_WORDS.values():
            mentioned["count"] = list(COUNT_WORDS.values()).index(word) + 1
    return mentioned


def faithful_rewrites(caption: str, rng: random.Random, num: int = 2) -> list[str]:
    """``num`` rewrites of ``caption`` in distinct `REWRITE_STYLES` that state what it states, and nothing more.

    "IMG_4821 red" -> "a picture of a red shape"; "red stuff on the left" -> "an image showing a red
    shape on the left"; a count above one makes the noun plural.
    """
    said = mentioned_attributes(caption)
    count = said.get("count", 1)
    words = [w for w in (said.get("size"), said.get("colour"), plural(said.get("shape", "shape"), count)) if w]
    article = COUNT_WORDS[count] if "count" in said else ("an" if words[0][0] in "aeiou" else "a")
    phrase = " ".join([article, *words]) + (f" on the {said['position']}" if "position" in said else "")
    return [style.format(phrase) for style in rng.sample(REWRITE_STYLES, min(num, len(REWRITE_STYLES)))]


def rewrite_pool(num_pairs: int = 48, seed: int = 12345) -> list[dict]:
    """In-context examples for the demo's rewriting LM: ``{"input": web caption, "output": faithful rewrite}``."""
    rng = random.Random(seed)
    pairs = []
    for _ in range(num_pairs):
        caption = web_caption(sample_attributes(rng), rng)
        pairs.append({"input": caption, "output": faithful_rewrites(caption, rng, 1)[0]})
    return pairs


def make_world(
    num_images: int, seed: int = 0, num_paraphrases: int = 4, classes: Sequence[str] = CLASS_NAMES
) -> datasets.Dataset:
    """``num_images`` rows of the given ``classes`` (default all): image, caption, paraphrases,
    eval_captions, synthetic_caption, label (index in `CLASS_NAMES`), class_name, attributes, id."""
    unknown = sorted(set(classes) - set(CLASS_NAMES))
    if unknown or not classes:
        raise ValueError(f"classes must be a non-empty subset of CLASS_NAMES; unknown: {unknown}")
    rng = random.Random(seed)
    rows = []
    for index in range(num_images):
        attributes = sample_attributes(rng)
        class_name = f"{attributes['colour']} {attributes['shape']}"
        while class_name not in classes:
            attributes = sample_attributes(rng)
            class_name = f"{attributes['colour']} {attributes['shape']}"
        rows.append({
            "id": f"{seed}-{index}",
            "image": render(attributes, rng),
            "caption": web_caption(attributes, rng),
            "paraphrases": paraphrases(attributes, rng, num_paraphrases),
            "eval_captions": [fill(t, attributes) for t in EVAL_TEMPLATES],
            "synthetic_caption": synthetic_caption(attributes),
            "label": CLASS_NAMES.index(class_name),
            "class_name": class_name,
            **attributes,
        })
    return datasets.Dataset.from_list(rows).cast_column("image", datasets.Image())


def world_vocabulary() -> list[str]:
    """Every text the world can produce (for training a word tokenizer that knows all of them)."""
    texts = [t.format(c) for t in ZERO_SHOT_TEMPLATES for c in CLASS_NAMES]
    for shape in SHAPES:
        for colour in COLOURS:
            for size in SIZES:
                for position in POSITIONS:
                    for count in COUNT_WORDS:
                        attributes = dict(shape=shape, colour=colour, size=size, position=position, count=count)
                        texts += [fill(t, attributes) for t in WEB_TEMPLATES + TRAIN_TEMPLATES + EVAL_TEMPLATES]
                        texts.append(synthetic_caption(attributes))
                        texts += [style.format(f"{COUNT_WORDS[count]} {size} {colour} {plural(shape, count)}")
                                  for style in REWRITE_STYLES]
    return texts + [describe_difference(dict(shape=s, colour="red", size="large", position="left", count=3),
                                        dict(shape="circle", colour="blue", size="small", position="right", count=1))
                    for s in SHAPES]

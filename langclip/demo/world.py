"""The demo world: images with several attributes, terse web captions, and a richer language the images never see.

The premise of LaCLIP, built so that it can be measured: an LLM knows language that the
image-text data lacks, and rewriting the captions brings that language to the text encoder.

- **Images** (`render`): 64 px, ``count`` shapes of one ``shape``, ``colour`` and ``size`` at a
  ``position`` (4 x 6 x 2 x 5 x 3 = 720 combinations).
- **Web captions** (`web_caption`): terse and noisy, one word per concept (the first word of
  each `LEXICON` entry), always in the order count size colour shape position, count, size
  and position each dropped with probability `DROP`, junk around ("IMG_4821 two red
  circles left lol").
- **The language model's corpus** (`corpus_sentence`): text only, made from random
  attributes, never from an image: every concept has synonyms (`LEXICON`: red = crimson =
  scarlet), count and position have phrase forms ("a pair of", "on the north side"), and
  sentences come in the many `LM_FORMS`. `rewrite_target` restates what a caption states
  in that language (the answer the rewriting LM learns in context); `rewrite_pool` holds the
  meta input-output pairs of the ICL prompt.
- **Held out from both** (`EVAL_FORMS`, `ZERO_SHOT_TEMPLATES`): the retrieval queries
  (``eval_captions``: every attribute, words drawn from all synonyms) and the zero-shot
  prompts, with class names either canonical (``CLASS_NAMES``: "red circle") or in synonyms
  no caption uses (`SYNONYM_CLASS_NAMES`: "crimson disc").
- **Faithfulness** (`faithfulness`): of rewrites against their captions, read with `read_attributes`,
  which knows every synonym: attributes kept, attributes added, synonyms introduced.

Rows also carry ``paraphrases`` (full descriptions written knowing the image, a control),
``synthetic_caption`` (CLIPS) and `describe_difference` (PC-CLIP). Everything is seeded.
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

# Concept -> its words. The first is the only one web captions use; the others exist only in the LM's corpus.
LEXICON = {
    "circle": ("circle", "disc", "orb"), "square": ("square", "block", "tile"),
    "triangle": ("triangle", "wedge", "pyramid"), "star": ("star", "starburst", "asterisk"),
    "red": ("red", "crimson", "scarlet"), "green": ("green", "emerald", "lime"), "blue": ("blue", "azure", "cobalt"),
    "yellow": ("yellow", "golden", "lemon"), "purple": ("purple", "violet", "lilac"),
    "orange": ("orange", "amber", "tangerine"),
    "small": ("small", "tiny", "little"), "large": ("large", "big", "huge"),
    "left": ("left", "west"), "right": ("right", "east"), "top": ("top", "north", "upper"),
    "bottom": ("bottom", "south", "lower"), "centre": ("centre", "middle"),
}
# Count phrases: "{}" is the rest of the noun phrase; the first is the web captions' form.
COUNT_FORMS = {1: ("one {}", "a single {}", "a lone {}"), 2: ("two {}", "a pair of {}", "twin {}"),
               3: ("three {}", "a trio of {}", "triple {}")}
COUNT_SYNONYMS = {"single": 1, "lone": 1, "pair": 2, "twin": 2, "trio": 3, "triple": 3}
POSITION_FORMS = ("on the {} side", "toward the {}", "at the {} of the frame", "in the {} part")
GENERIC_NOUN = "shape"  # what a rewrite calls a shape its caption does not name
DROP = 0.25  # chance that a web caption leaves out the count, the size, the position (each)
WEB_PREFIXES = ("", "", "IMG_{number}", "my", "pic:", "new")
WEB_SUFFIXES = ("", "", "lol", "!!", "#{number}", "pic")
LM_FORMS = (
    "{np} {where}", "a picture of {np} {where}", "you can see {np} {where}", "this image shows {np} {where}",
    "{where} there is {np}", "an illustration with {np} {where}", "a drawing of {np} {where}",
    "{np} drawn {where} on a pale background", "here we have {np} {where}", "a photo featuring {np} {where}",
    "{where} sits {np}", "{np}, {where}",
)
EVAL_FORMS = ("somebody painted {np} {where}", "{where} we find {np}", "the scene contains {np} {where}")
ZERO_SHOT_TEMPLATES = ("a rendering of a {}.", "this graphic contains a {}", "behold, a {}!")
SYNONYMS = {word for words in LEXICON.values() for word in words[1:]} | set(COUNT_SYNONYMS)


def plural(noun: str, count: int) -> str:
    return noun if count == 1 else f"{noun}s"


KIND = {**{s: "shape" for s in SHAPES}, **{c: "colour" for c in COLOURS}, **{s: "size" for s in SIZES},
        **{p: "position" for p in POSITIONS}}
WORD_TO_CONCEPT = {word: concept for concept, words in LEXICON.items() for word in words}
WORD_TO_COUNT = {**{word: count for count, word in COUNT_WORDS.items()}, **COUNT_SYNONYMS}


def synonym_name(class_name: str) -> str:
    """The class name in the first synonyms of its words, which no web caption uses: "red circle" -> "crimson disc"."""
    return " ".join(LEXICON[word][1] for word in class_name.split())


SYNONYM_CLASS_NAMES = [synonym_name(name) for name in CLASS_NAMES]


def words_of(text: str) -> list[str]:
    """Lower-case words, plural nouns made singular ("discs" -> "disc")."""
    words = re.findall(r"[a-z]+", text.lower())
    return [w[:-1] if w.endswith("s") and WORD_TO_CONCEPT.get(w[:-1]) in SHAPES else w for w in words]


def read_attributes(text: str) -> dict:
    """The attributes a text states, in any of the world's words: "a pair of tiny crimson discs toward the west" ->
    {count: 2, size: small, colour: red, shape: circle, position: left}. A later mention overrides an earlier one."""
    said = {}
    for word in words_of(text):
        if word in WORD_TO_CONCEPT:
            concept = WORD_TO_CONCEPT[word]
            said[KIND[concept]] = concept
        elif word in WORD_TO_COUNT:
            said["count"] = WORD_TO_COUNT[word]
    return said


def is_plural(text: str) -> bool:
    """Whether ``text`` names its shapes in the plural ("red circles")."""
    return any(w.endswith("s") and WORD_TO_CONCEPT.get(w[:-1]) in SHAPES or w == f"{GENERIC_NOUN}s"
               for w in re.findall(r"[a-z]+", text.lower()))


def describe(said: dict, rng: random.Random, forms: Sequence[str] = LM_FORMS, plural_noun: bool | None = None) -> str:
    """A sentence in the rich language stating exactly the attributes in ``said``: a form of ``forms``, a word
    drawn from each concept's `LEXICON` entry, a count phrase of `COUNT_FORMS`, a position phrase of
    `POSITION_FORMS`. Without a count the noun is plural when ``plural_noun`` says so ("some ...")."""
    count = said.get("count")
    many = count > 1 if count is not None else bool(plural_noun)
    noun = plural(rng.choice(LEXICON[said["shape"]]) if "shape" in said else GENERIC_NOUN, 2 if many else 1)
    core = " ".join([*(rng.choice(LEXICON[said[k]]) for k in ("size", "colour") if k in said), noun])
    if count is not None:
        np_ = rng.choice(COUNT_FORMS[count]).format(core)
    else:
        np_ = f"some {core}" if many else f"{'an' if core[0] in 'aeiou' else 'a'} {core}"
    where = rng.choice(POSITION_FORMS).format(rng.choice(LEXICON[said["position"]])) if "position" in said else ""
    return re.sub(r"\s+", " ", rng.choice(forms).format(np=np_, where=where)).strip(" ,")


def web_caption(attributes: dict, rng: random.Random) -> str:
    """Terse, canonical words in a fixed order; count, size and position each dropped with probability `DROP`:
    "IMG_4821 two red circles left", "my large blue square lol"."""
    count = attributes["count"]
    words = [COUNT_WORDS[count] if rng.random() >= DROP else "", attributes["size"] if rng.random() >= DROP else "",
             attributes["colour"], plural(attributes["shape"], count),
             attributes["position"] if rng.random() >= DROP else ""]
    number = rng.randint(100, 9999)
    text = " ".join([rng.choice(WEB_PREFIXES), *words, rng.choice(WEB_SUFFIXES)]).format(number=number)
    return re.sub(r"\s+", " ", text).strip()


def rewrite_target(caption: str, rng: random.Random) -> str:
    """What a faithful rewrite of ``caption`` says: its attributes (and plurality), nothing more, in the rich
    language (text only: no image is involved)."""
    said = read_attributes(caption)
    if not said:
        raise ValueError(f"caption {caption!r} states no attribute of the world; nothing to rewrite")
    return describe(said, rng, plural_noun=is_plural(caption))


def corpus_sentence(rng: random.Random) -> str:
    """A sentence of the LM's text-only corpus: random attributes (no image), each left out with probability 0.3
    (a shape or colour with 0.1), in a random form with random synonyms."""
    attributes = sample_attributes(rng)
    said = {k: v for k, v in attributes.items() if rng.random() >= (0.1 if k in ("shape", "colour") else 0.3)}
    return describe(said, rng, plural_noun=rng.random() < 0.5)


def rewrite_pool(num_pairs: int = 48, seed: int = 12345) -> list[dict]:
    """Meta input-output pairs of the ICL prompt: ``{"input": web caption, "output": rewrite_target}``, from random
    attributes (no image)."""
    rng = random.Random(seed)
    pairs = []
    for _ in range(num_pairs):
        caption = web_caption(sample_attributes(rng), rng)
        pairs.append({"input": caption, "output": rewrite_target(caption, rng)})
    return pairs


def faithfulness(captions: Sequence[str], rewrites: Sequence[str]) -> dict:
    """How rewrites relate to their captions, read with `read_attributes` (fractions in [0, 1]):

    - ``kept``: of the attributes the captions state, those their rewrite states with the same value;
    - ``contradicted``: of those, the ones it states with another value;
    - ``added``: rewrites that state an attribute their caption does not (what only the image could tell);
    - ``exact``: rewrites that state exactly their caption's attributes;
    - ``with_synonym``: rewrites using a word no web caption uses (`SYNONYMS`), ``synonyms_per_rewrite`` their mean.
    """
    if len(captions) != len(rewrites) or not captions:
        raise ValueError(f"need as many rewrites as captions (> 0), got {len(rewrites)} and {len(captions)}")
    stated = kept = contradicted = added = exact = with_synonym = synonyms = 0
    for caption, rewrite in zip(captions, rewrites):
        c, r = read_attributes(caption), read_attributes(rewrite)
        stated += len(c)
        kept += sum(r.get(k) == v for k, v in c.items())
        contradicted += sum(k in r and r[k] != v for k, v in c.items())
        added += any(k not in c for k in r)
        exact += c == r
        new = sum(w in SYNONYMS for w in words_of(rewrite))
        with_synonym += new > 0
        synonyms += new
    n = len(captions)
    return {"kept": kept / max(stated, 1), "contradicted": contradicted / max(stated, 1), "added": added / n,
            "exact": exact / n, "with_synonym": with_synonym / n, "synonyms_per_rewrite": synonyms / n}


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


def eval_captions(attributes: dict, rng: random.Random) -> list[str]:
    """The held-out retrieval queries of an image: one per `EVAL_FORMS` form, every attribute, words drawn from
    all of each concept's synonyms."""
    return [describe(attributes, rng, forms=(form,)) for form in EVAL_FORMS]


def paraphrases(attributes: dict, rng: random.Random, num: int = 4) -> list[str]:
    """``num`` full descriptions in distinct `LM_FORMS`: what a rewriter that saw the image could write (a control)."""
    return [describe(attributes, rng, forms=(form,)) for form in rng.sample(LM_FORMS, num)]


def make_world(
    num_images: int, seed: int = 0, num_paraphrases: int = 4, classes: Sequence[str] = CLASS_NAMES
) -> datasets.Dataset:
    """``num_images`` rows of the given ``classes`` (default all): id, image, caption, paraphrases,
    eval_captions, synthetic_caption, label (index in `CLASS_NAMES`), class_name and the attributes."""
    unknown = sorted(set(classes) - set(CLASS_NAMES))
    if unknown or not classes:
        raise ValueError(f"classes must be a non-empty subset of CLASS_NAMES; unknown: {unknown}")
    rng = random.Random(seed)
    rows = []
    for index in range(num_images):
        attributes = sample_attributes(rng)
        while f"{attributes['colour']} {attributes['shape']}" not in classes:
            attributes = sample_attributes(rng)
        class_name = f"{attributes['colour']} {attributes['shape']}"
        rows.append({
            "id": f"{seed}-{index}",
            "image": render(attributes, rng),
            "caption": web_caption(attributes, rng),
            "paraphrases": paraphrases(attributes, rng, num_paraphrases),
            "eval_captions": eval_captions(attributes, rng),
            "synthetic_caption": synthetic_caption(attributes),
            "label": CLASS_NAMES.index(class_name),
            "class_name": class_name,
            **attributes,
        })
    return datasets.Dataset.from_list(rows).cast_column("image", datasets.Image())


def world_vocabulary() -> list[str]:
    """Texts that hold every word the world can write (for training a word tokenizer that knows all of them)."""
    nouns = [plural(word, count) for shape in SHAPES for word in LEXICON[shape] for count in (1, 2)]
    texts = [" ".join(w for words in LEXICON.values() for w in words), " ".join(nouns), f"{GENERIC_NOUN} {GENERIC_NOUN}s some a an",
             *(form.format("") for forms in COUNT_FORMS.values() for form in forms),
             *(form.format("") for form in POSITION_FORMS),
             *(form.format(np="", where="") for form in LM_FORMS + EVAL_FORMS),
             *(template.format(name) for template in ZERO_SHOT_TEMPLATES for name in CLASS_NAMES + SYNONYM_CLASS_NAMES),
             *(prefix + " " + suffix for prefix, suffix in zip(WEB_PREFIXES, WEB_SUFFIXES))]
    for shape in SHAPES:
        for colour in COLOURS:
            for size in SIZES:
                for position in POSITIONS:
                    for count in COUNT_WORDS:
                        texts.append(synthetic_caption(dict(shape=shape, colour=colour, size=size,
                                                            position=position, count=count)))
    return texts + [describe_difference(dict(shape=s, colour="red", size="large", position="left", count=3),
                                        dict(shape="circle", colour="blue", size="small", position="right", count=1))
                    for s in SHAPES]

"""PC-CLIP data: image pairs, the comparative prompt, and the filter for LLM difference texts.

An output row is ``(id_a, id_b, difference)``: ``difference`` says how image a differs
visually from image b. The generation itself runs on the rewriting job's machinery.
"""

import random
import re
from collections.abc import Sequence

DIFFERENCE_PROMPT = (
    "Image A shows: {caption_a}\n"
    "Image B shows: {caption_b}\n"
    "Describe in one or two sentences how image A differs visually from image B.\n"
    "Image A, compared with image B,"
)
MIN_CHARS = 60
PAIRINGS = ("random", "within-class", "across-class")

# code fences, braces, function definitions, HTML tags, markdown headings/bullets/links
_CODE_OR_MARKUP = re.compile(r"```|[{}]|\bdef \w+\(|</?[a-zA-Z][^>]*>|^\s*(#+|[*-])\s|\[[^\]]*\]\(", re.MULTILINE)
_FOLLOW_UP = re.compile(r"\b(Note:|Notes:|Please note|Let me know|Do you|Would you|Is there anything|Can I help)", re.I)


def sample_pairs(
    ids: Sequence[str],
    num_pairs: int,
    pairing: str = "random",
    labels: Sequence | None = None,
    seed: int = 0,
) -> list[tuple[str, str]]:
    """Ordered pairs (a, b) of distinct images; ``within-class``/``across-class`` need ``labels``."""
    if pairing not in PAIRINGS:
        raise ValueError(f"pairing must be one of {PAIRINGS}, got {pairing!r}")
    if len(set(ids)) != len(ids):
        raise ValueError("image ids must be unique")
    if len(ids) < 2:
        raise ValueError(f"need at least 2 images to pair, got {len(ids)}")
    if pairing != "random":
        if labels is None or len(labels) != len(ids):
            raise ValueError(f"pairing {pairing!r} needs one label per image")
        by_label: dict = {}
        for image_id, label in zip(ids, labels):
            by_label.setdefault(label, []).append(image_id)
        label_of = dict(zip(ids, labels))
        if pairing == "within-class" and all(len(group) < 2 for group in by_label.values()):
            raise ValueError("within-class pairing needs a class with at least 2 images")
        if pairing == "across-class" and len(by_label) < 2:
            raise ValueError("across-class pairing needs at least 2 classes")
    rng = random.Random(seed)
    pairs = []
    while len(pairs) < num_pairs:
        a = rng.choice(ids)
        if pairing == "random":
            candidates = ids
        elif pairing == "within-class":
            candidates = by_label[label_of[a]]
        else:
            candidates = [i for label, group in by_label.items() if label != label_of[a] for i in group]
        b = rng.choice(candidates)
        if a != b:
            pairs.append((a, b))
    return pairs


def build_difference_prompt(caption_a: str, caption_b: str, template: str = DIFFERENCE_PROMPT) -> str:
    """The comparative prompt for one pair; the LLM continues after the last line."""
    for name, caption in (("caption_a", caption_a), ("caption_b", caption_b)):
        if not isinstance(caption, str) or not caption.strip():
            raise ValueError(f"{name} must be a non-empty string, got {caption!r}")
    return template.format(caption_a=caption_a.strip(), caption_b=caption_b.strip())


def clean_difference(text: str, min_chars: int = MIN_CHARS) -> tuple[str | None, str]:
    """Filter one generation as PC-CLIP does: returns (difference or None, status).

    Cut at a follow-up question or note; reject code, markup or non-ASCII text; reject
    what is left under ``min_chars`` characters. Status is ``ok`` or the rejection reason.
    """
    if not isinstance(text, str):
        return None, "empty"
    follow_up = _FOLLOW_UP.search(text)
    if follow_up:
        text = text[: follow_up.start()]
    if not text.strip():
        return None, "empty"
    if not text.isascii():
        return None, "non_ascii"
    if _CODE_OR_MARKUP.search(text):
        return None, "code_or_markup"
    text = " ".join(text.split())
    if len(text) < min_chars:
        return None, "too_short"
    return text, "ok"


def check_difference_rows(rows, known_ids) -> None:
    """Raise a ValueError naming the first bad row: unknown ids, a self-pair, or an empty difference."""
    known_ids = set(known_ids)
    for index, row in enumerate(rows):
        for column in ("id_a", "id_b", "difference"):
            if column not in row:
                raise ValueError(f"difference row {index} has no {column!r} column")
        for column in ("id_a", "id_b"):
            if row[column] not in known_ids:
                raise ValueError(f"difference row {index}: {column}={row[column]!r} is not an id of the image dataset")
        if row["id_a"] == row["id_b"]:
            raise ValueError(f"difference row {index} pairs image {row['id_a']!r} with itself")
        if not isinstance(row["difference"], str) or not row["difference"].strip():
            raise ValueError(f"difference row {index} ({row['id_a']!r}, {row['id_b']!r}) has an empty difference text")

"""PC-CLIP data: pair sampling, the comparative prompt and the generation filter."""

import pytest

from langclip.processing.generation.differences import sample_pairs
from langclip.processing.generation.filters import clean_difference
from langclip.processing.generation.prompts import build_difference_prompt

IDS = [f"img{i}" for i in range(8)]
LABELS = ["cat", "cat", "dog", "dog", "dog", "bird", "bird", "cat"]
LONG = "It shows a larger red circle placed further to the left, while image B has a small blue one."


# ordered pairs of distinct images that each pairing allows, counted by hand from LABELS (cat 3, dog 3, bird 2)
TOTALS = {"random": 8 * 7, "within-class": 3 * 2 + 3 * 2 + 2 * 1, "across-class": 3 * 5 + 3 * 5 + 2 * 6}


@pytest.mark.parametrize("pairing", ["random", "within-class", "across-class"])
def test_pairs_are_distinct_seeded_and_respect_classes(pairing):
    for n in (5, TOTALS[pairing] - 3, TOTALS[pairing]):  # rejection sampling, then sampling from the full list
        pairs = sample_pairs(IDS, n, pairing, labels=LABELS, seed=1)
        assert len(pairs) == n == len(set(pairs)) and all(a != b for a, b in pairs)
    assert len(set(pairs)) == TOTALS[pairing]  # every allowed pair, each once
    pairs = sample_pairs(IDS, 10, pairing, labels=LABELS, seed=1)
    assert pairs == sample_pairs(IDS, 10, pairing, labels=LABELS, seed=1)
    assert pairs != sample_pairs(IDS, 10, pairing, labels=LABELS, seed=2)
    with pytest.raises(ValueError, match=f"{TOTALS[pairing] + 1} pairs asked, but 8 images give only "
                                         f"{TOTALS[pairing]} distinct {pairing} pairs"):
        sample_pairs(IDS, TOTALS[pairing] + 1, pairing, labels=LABELS)
    label = dict(zip(IDS, LABELS))
    if pairing == "within-class":
        assert all(label[a] == label[b] for a, b in pairs)
    if pairing == "across-class":
        assert all(label[a] != label[b] for a, b in pairs)


def test_pair_sampling_errors():
    with pytest.raises(ValueError, match="needs one label per image"):
        sample_pairs(IDS, 3, "within-class")
    with pytest.raises(ValueError, match="at least 2 classes"):
        sample_pairs(IDS, 3, "across-class", labels=["x"] * 8)
    with pytest.raises(ValueError, match="unique"):
        sample_pairs(["a", "a"], 1)
    with pytest.raises(ValueError, match="pairing must be one of"):
        sample_pairs(IDS, 1, "nearest")


def test_prompt_golden():
    assert build_difference_prompt(" a red circle ", "a blue square") == (
        "Image A shows: a red circle\n"
        "Image B shows: a blue square\n"
        "Describe in one or two sentences how image A differs visually from image B.\n"
        "Image A, compared with image B,"
    )
    with pytest.raises(ValueError, match="caption_b must be a non-empty string"):
        build_difference_prompt("a red circle", "  ")


@pytest.mark.parametrize(
    "generation, expected",
    [
        (LONG, (LONG, "ok")),
        ("  " + LONG.replace(" while", "\n while") + "\nNote: I could not see the images.", (LONG, "ok")),
        (LONG + " Do you want more details?", (LONG, "ok")),
        ("It is larger.", (None, "too_short")),
        ("Let me know if you need anything else.", (None, "empty")),
        (LONG + " It is très grand.", (None, "non_ascii")),
        ("```python\nprint('A is red')\n```" + LONG, (None, "code_or_markup")),
        ("<b>Bigger</b> " + LONG, (None, "code_or_markup")),
        ("- " + LONG, (None, "code_or_markup")),
        (None, (None, "empty")),
        # the official filter's further rules: a next Q/A turn, pleasantries, numbered lists
        (LONG + "\nQ: How does image B differ from image A?", (LONG, "ok")),
        (LONG + " I hope this helps!", (LONG, "ok")),
        (LONG + " Feel free to ask for more.", (LONG, "ok")),
        ("1. " + LONG + "\n2. It is brighter.", (None, "list")),
        ("The differences: 1) " + LONG, (None, "list")),
        ("It is 3.5 meters taller and has 2 more windows than image B, which shows an older house.",
         ("It is 3.5 meters taller and has 2 more windows than image B, which shows an older house.", "ok")),
    ],
)
def test_clean_difference(generation, expected):
    assert clean_difference(generation) == expected

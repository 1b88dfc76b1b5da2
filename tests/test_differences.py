"""PC-CLIP data: pair sampling, the comparative prompt and the generation filter."""

import pytest

from langclip.processing.generation.differences import sample_pairs
from langclip.processing.generation.filters import clean_difference
from langclip.processing.generation.prompts import build_difference_prompt

IDS = [f"img{i}" for i in range(8)]
LABELS = ["cat", "cat", "dog", "dog", "dog", "bird", "bird", "cat"]
LONG = "It shows a larger red circle placed further to the left, while image B has a small blue one."


@pytest.mark.parametrize("pairing", ["random", "within-class", "across-class"])
def test_pairs_are_distinct_seeded_and_respect_classes(pairing):
    pairs = sample_pairs(IDS, 50, pairing, labels=LABELS, seed=1)
    assert len(pairs) == 50 and all(a != b for a, b in pairs)
    assert pairs == sample_pairs(IDS, 50, pairing, labels=LABELS, seed=1)
    assert pairs != sample_pairs(IDS, 50, pairing, labels=LABELS, seed=2)
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
    ],
)
def test_clean_difference(generation, expected):
    assert clean_difference(generation) == expected

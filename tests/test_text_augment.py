"""aug_T sampling, its fallback rule, and the collator's batch layouts."""

from collections import Counter

import pytest
import torch

from langclip.errors import DataError
from langclip.processing.collators import ContrastiveCollator
from langclip.processing.text import TextAugmenter, candidate_texts

CAPTION = "a red circle"
REWRITES = ["a circle in red", "one red circle shape", "red circle on a picture", "a small red circle"]


def test_sampling_is_uniform_over_original_and_rewrites():
    augmenter, draws = TextAugmenter(seed=0), 20000
    counts = Counter(augmenter.sample(CAPTION, REWRITES) for _ in range(draws))
    assert set(counts) == {CAPTION, *REWRITES}
    expected = draws / 5
    # Each count is Binomial(20000, 0.2): std = 56.6; 4.5 std is a 1-in-100000 event per text.
    assert all(abs(c - expected) < 4.5 * (draws * 0.2 * 0.8) ** 0.5 for c in counts.values()), counts


def test_picks_under_two_words_fall_back_to_the_original():
    assert candidate_texts(CAPTION, ["circle", "", None, "  red  ", "two words"]) == [CAPTION] * 5 + ["two words"]
    augmenter = TextAugmenter(seed=1)
    counts = Counter(augmenter.sample(CAPTION, ["circle", "a red ring"]) for _ in range(3000))
    assert set(counts) == {CAPTION, "a red ring"}
    assert counts[CAPTION] == pytest.approx(2000, abs=150)  # original + fallen-back pick: 2/3


@pytest.mark.parametrize("rewrites", ["a red dog on grass", 7, [1, 2], ["a red dog", 3]])
def test_rewrites_that_are_not_a_list_of_strings_are_named(rewrites):
    """A string would be read character by character, numbers as unusable: both silently became the caption."""
    with pytest.raises(DataError, match=r"the rewrites column must hold a list of strings per row"):
        candidate_texts("a dog", rewrites)
    with pytest.raises(DataError, match=r"--rewrites-column"):
        TextAugmenter(0).sample("a dog", rewrites)


def test_keyed_draws_are_reproducible_and_seed_dependent():
    a, b = TextAugmenter(seed=3), TextAugmenter(seed=3)
    keys = [(epoch, f"id{i}") for epoch in range(2) for i in range(50)]
    draws = [a.sample(CAPTION, REWRITES, key) for key in keys]
    assert draws == [b.sample(CAPTION, REWRITES, key) for key in reversed(keys)][::-1]
    assert draws != [TextAugmenter(seed=4).sample(CAPTION, REWRITES, key) for key in keys]


def test_sample_all_puts_the_draw_first_and_keeps_the_rest_in_order():
    augmenter = TextAugmenter(seed=0)
    for i in range(30):
        texts = augmenter.sample_all(CAPTION, REWRITES, num_texts=5, key=i)
        pick = ([CAPTION] + REWRITES).index(texts[0])
        assert texts[1:] == [t for j, t in enumerate([CAPTION] + REWRITES) if j != pick]
    padded = augmenter.sample_all(CAPTION, REWRITES[:1], num_texts=4, key=0)
    assert sorted(padded) == sorted([CAPTION, REWRITES[0], CAPTION, CAPTION])
    with pytest.raises(DataError, match=r"has 5 texts \(itself \+ rewrites\), more than --num-texts 3; set --num-texts"):
        augmenter.sample_all(CAPTION, REWRITES, num_texts=3)


def test_empty_caption_is_rejected():
    with pytest.raises(ValueError, match="caption must be a non-empty string"):
        candidate_texts("  ", REWRITES)


def _rows(n):
    return [{"id": str(i), "caption": CAPTION, "rewrites": REWRITES, "pixel_values": torch.full((3, 4, 4), i)}
            for i in range(n)]


def test_collator_single_and_multi_text_layouts(tokenizer):
    single = ContrastiveCollator(tokenizer, max_length=16, augmenter=TextAugmenter(0))
    batch = single(_rows(3))
    assert batch["input_ids"].shape[0] == 3 and batch["input_ids"].dim() == 2
    assert batch["pixel_values"].shape == (3, 3, 4, 4) and batch["pixel_values"][2].eq(2).all()

    multi = ContrastiveCollator(tokenizer, max_length=16, augmenter=TextAugmenter(0), num_texts=5)
    batch = multi(_rows(3))
    assert batch["input_ids"].shape[:2] == (3, 5) and batch["attention_mask"].shape == batch["input_ids"].shape
    decoded = [tokenizer.decode(ids, skip_special_tokens=True) for ids in batch["input_ids"][0]]
    assert sorted(decoded) == sorted(t.lower() for t in [CAPTION] + REWRITES)
    # column 0 of the multi-text batch is the same keyed draw the single-text collator makes
    assert decoded[0] == tokenizer.decode(single(_rows(1))["input_ids"][0], skip_special_tokens=True)


def test_collator_draws_change_with_epoch_and_truncate(tokenizer):
    collator = ContrastiveCollator(tokenizer, max_length=4, augmenter=TextAugmenter(0))
    first = collator(_rows(40))["input_ids"]
    collator.epoch = 1
    assert not torch.equal(first, collator(_rows(40))["input_ids"])
    assert first.shape[1] <= 4
    plain = ContrastiveCollator(tokenizer, max_length=16)
    assert tokenizer.decode(plain(_rows(1))["input_ids"][0], skip_special_tokens=True) == CAPTION


def test_collator_names_a_missing_column(tokenizer):
    with pytest.raises(KeyError, match="no 'caption' column"):
        ContrastiveCollator(tokenizer, 16)([{"text": "a b", "pixel_values": torch.zeros(3, 2, 2)}])

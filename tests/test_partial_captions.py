"""CLIPS partial captions: strategy invariants, special-token framing, seeding, and the CLIPS collator."""

import random

import pytest
import torch

from langclip.processing.collators import CLIPSCollator
from langclip.processing.text import PartialCaption, block_mask, random_mask, special_frame, split_sentences, subcaption, truncate

# Sentences with distinct ids, so every output token names its sentence and position.
SENTENCES = [list(range(100 * s, 100 * s + n)) for s, n in enumerate([5, 8, 3, 12, 6, 9])]
IDS = [token for sentence in SENTENCES for token in sentence]
SYNTHETIC = "a red circle on the left. two blue square shapes in the picture! a small star. the image with a triangle?"


def check_subcaption(out: list[int], budget: int) -> None:
    """``out`` is whole sentences in increasing order; only a last one cut at the budget may be partial."""
    position, previous = 0, -1
    while position < len(out):
        index = out[position] // 100
        sentence = SENTENCES[index]
        assert out[position] == sentence[0] and index > previous, out
        piece = out[position : position + len(sentence)]
        if piece != sentence:
            assert piece == sentence[: len(piece)] and position + len(piece) == len(out) == budget, out
        position, previous = position + len(piece), index


@pytest.mark.parametrize("budget", [1, 4, 10, 30, 100])
def test_strategy_invariants(budget):
    rng = random.Random(0)
    assert truncate(IDS, budget) == IDS[:budget]
    for _ in range(200):
        masked = random_mask(IDS, budget, rng)
        assert len(masked) == min(budget, len(IDS)) and len(set(masked)) == len(masked)
        assert masked == sorted(masked) and set(masked) <= set(IDS)  # ids increase along IDS: order kept
        block = block_mask(IDS, budget, rng)
        start = IDS.index(block[0])
        assert block == IDS[start : start + len(block)] and len(block) == min(budget, len(IDS))  # contiguous
        sub = subcaption(SENTENCES, budget, rng)
        assert 0 < len(sub) <= budget
        check_subcaption(sub, budget)


def test_subcaption_draws_vary_and_cover_single_sentences():
    rng = random.Random(1)
    draws = {tuple(subcaption(SENTENCES, 100, rng)) for _ in range(300)}
    assert len(draws) > 20
    assert all(tuple(s) in draws for s in SENTENCES)  # every single sentence can be drawn alone


def test_split_sentences():
    assert split_sentences(SYNTHETIC) == [
        "a red circle on the left.", "two blue square shapes in the picture!", "a small star.",
        "the image with a triangle?"]


def test_special_frame(tokenizer):
    assert special_frame(tokenizer) == ([tokenizer.bos_token_id], [tokenizer.eos_token_id])


@pytest.mark.parametrize("strategy", ["subcaption", "block", "random", "truncate"])
def test_partial_caption_is_framed_and_within_k(tokenizer, strategy):
    partial = PartialCaption(tokenizer, strategy, num_tokens=6, seed=0)
    content = tokenizer(SYNTHETIC, add_special_tokens=False)["input_ids"]
    for key in range(50):
        ids = partial(SYNTHETIC, key=(0, key))
        assert len(ids) <= 6
        assert ids[0] == tokenizer.bos_token_id and ids[-1] == tokenizer.eos_token_id
        assert tokenizer.eos_token_id not in ids[1:-1] and tokenizer.bos_token_id not in ids[1:-1]
        assert set(ids[1:-1]) <= set(content)
    if strategy == "subcaption":  # one sentence of 6 words cut to 4, or a whole short sentence
        assert tokenizer.decode(partial(SYNTHETIC, key=3)[1:-1]) in {
            "a red circle on", "two blue square shapes", "a small star .", "the image with a"}


def test_partial_caption_is_seedable(tokenizer):
    first, again, other = (PartialCaption(tokenizer, "random", 8, seed=s) for s in (0, 0, 1))
    keyed = [first(SYNTHETIC, key=(0, i)) for i in range(20)]
    assert keyed == [again(SYNTHETIC, key=(0, i)) for i in range(20)]
    assert keyed != [other(SYNTHETIC, key=(0, i)) for i in range(20)]
    assert [first(SYNTHETIC) for _ in range(5)] == [again(SYNTHETIC) for _ in range(5)]  # the unkeyed stream too


def test_none_keeps_the_whole_caption(tokenizer):
    ids = PartialCaption(tokenizer, "none", max_length=64)(SYNTHETIC)
    assert ids == tokenizer(SYNTHETIC)["input_ids"]
    assert PartialCaption(tokenizer, "none", max_length=5)(SYNTHETIC) == tokenizer(SYNTHETIC)["input_ids"][:4] + [
        tokenizer.eos_token_id]


@pytest.mark.parametrize("k", [0, -3, 2])
def test_bad_budget_is_an_error(tokenizer, k):
    with pytest.raises(ValueError, match=f"K={k}"):
        PartialCaption(tokenizer, "subcaption", num_tokens=k)


def test_bad_strategy_and_caption(tokenizer):
    with pytest.raises(ValueError, match="strategy must be one of"):
        PartialCaption(tokenizer, "middle")
    with pytest.raises(ValueError, match="non-empty string"):
        PartialCaption(tokenizer)("  ")


def rows(n=3):
    return [{"id": str(i), "pixel_values": torch.full((3, 4, 4), float(i)), "caption": f"a red circle {i}",
             "synthetic_caption": SYNTHETIC if i % 2 else "a small star. a blue square."} for i in range(n)]


def test_clips_collator(tokenizer):
    collator = CLIPSCollator(tokenizer, 16, PartialCaption(tokenizer, "subcaption", 6, seed=0), caption_max_length=40)
    data = rows()
    batch = collator(data)
    assert set(batch) == {"pixel_values", "input_ids", "attention_mask", "partial_input_ids", "partial_attention_mask",
                          "caption_input_ids", "caption_attention_mask"}
    web = tokenizer([row["caption"] for row in data], padding=True, return_tensors="pt")
    assert torch.equal(batch["input_ids"], web["input_ids"])
    for i, row in enumerate(data):
        full = tokenizer(row["synthetic_caption"])["input_ids"]
        length = int(batch["caption_attention_mask"][i].sum())
        assert batch["caption_input_ids"][i, :length].tolist() == full and length == len(full)
        assert (batch["caption_input_ids"][i, length:] == tokenizer.pad_token_id).all()
        partial = batch["partial_input_ids"][i, : int(batch["partial_attention_mask"][i].sum())].tolist()
        assert partial == collator.partial(row["synthetic_caption"], key=(0, row["id"]))
    assert batch["partial_input_ids"].shape[1] <= 6


def test_clips_collator_errors(tokenizer):
    collator = CLIPSCollator(tokenizer, 16, PartialCaption(tokenizer), caption_max_length=10)
    with pytest.raises(KeyError, match="'synthetic_caption'"):
        collator([{k: v for k, v in row.items() if k != "synthetic_caption"} for row in rows()])
    with pytest.raises(ValueError, match=r"row '1': synthetic_caption has \d+ tokens, more than .*=10"):
        collator(rows())

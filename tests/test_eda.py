"""EDA operations against hand-worked cases, and back-translation's two legs."""

import json
import random
from collections import Counter

import pytest

from langclip.processing.generation.baselines import TRANSLATION_PROMPT, BackTranslator, PromptedTranslation
from langclip.processing.text import EDA, STOP_WORDS, eda_words, load_synonyms, num_changes, random_deletion, random_insertion, random_swap, synonym_replacement

SYNONYMS = {"dog": ["puppy"], "grass": ["lawn", "turf"], "the": ["a"]}


def test_eda_preprocessing_and_counts():
    assert eda_words("A Dog's ball, on the GRASS!") == ["a", "dog's", "ball", "on", "the", "grass"]
    assert num_changes(0.1, ["w"] * 5) == 1
    assert num_changes(0.1, ["w"] * 25) == 2


def test_synonym_replacement_replaces_every_occurrence_and_skips_stop_words():
    words = "the dog chased another dog".split()
    assert synonym_replacement(words, 1, SYNONYMS, random.Random(0)) == "the puppy chased another puppy".split()
    assert "the" in STOP_WORDS
    assert synonym_replacement(["the", "cat"], 5, SYNONYMS, random.Random(0)) == ["the", "cat"]


def test_synonym_replacement_replaces_n_distinct_words():
    words = "a dog on the grass".split()
    out = synonym_replacement(words, 1, SYNONYMS, random.Random(1))
    changed = [(a, b) for a, b in zip(words, out) if a != b]
    assert len(changed) == 1 and changed[0][1] in SYNONYMS[changed[0][0]]
    both = synonym_replacement(words, 2, SYNONYMS, random.Random(1))
    assert both[1] == "puppy" and both[4] in {"lawn", "turf"} and both[:1] + both[2:4] == ["a", "on", "the"]


def test_random_insertion_adds_synonyms_and_keeps_the_rest_in_order():
    words = "a dog on the grass".split()
    table = {"dog": ["puppy"], "grass": ["lawn", "turf"]}
    for seed in range(10):
        out = random_insertion(words, 2, table, random.Random(seed))
        assert len(out) == 7
        assert [w for w in out if w not in {"puppy", "lawn", "turf"}] == words
    assert random_insertion(["cat", "sat"], 3, SYNONYMS, random.Random(0)) == ["cat", "sat"]


def test_random_swap_moves_exactly_two_positions_per_swap():
    words = "one two three four five".split()
    out = random_swap(words, 1, random.Random(2))
    assert sorted(out) == sorted(words) and sum(a != b for a, b in zip(words, out)) == 2
    assert random_swap(["alone"], 3, random.Random(0)) == ["alone"]


def test_random_deletion():
    words = [f"w{i}" for i in range(2000)]
    assert random_deletion(words, 0.0, random.Random(0)) == words
    only = random_deletion(words[:5], 1.0, random.Random(0))
    assert len(only) == 1 and only[0] in words[:5]
    assert random_deletion(["alone"], 1.0, random.Random(0)) == ["alone"]
    kept = random_deletion(words, 0.1, random.Random(0))
    assert 2000 - 300 < len(kept) < 2000 - 100  # Binomial(2000, 0.1) deletions: mean 200, sd 13
    assert kept == [w for w in words if w in set(kept)]  # order kept


def test_eda_is_seeded_and_uses_all_four_operations():
    eda = EDA(SYNONYMS)
    caption = "A dog runs on the grass near the big old house"
    assert eda(caption, random.Random(7)) == eda(caption, random.Random(7))
    operations = Counter(random.Random(seed).choice(EDA.OPERATIONS) for seed in range(40))
    assert set(operations) == set(EDA.OPERATIONS)
    with pytest.raises(ValueError, match="unknown EDA operation 'shout'"):
        eda.apply("shout", ["a"], random.Random(0))


def test_load_synonyms(tmp_path):
    path = tmp_path / "syn.json"
    path.write_text(json.dumps({"Dog": ["Puppy", "dog"], "car": []}))
    assert load_synonyms(path) == {"dog": ["puppy"], "car": []}
    path.write_text(json.dumps({"dog": "puppy"}))
    with pytest.raises(ValueError, match="synonyms of 'dog' must be a list"):
        load_synonyms(path)
    path.write_text(json.dumps(["dog"]))
    with pytest.raises(ValueError, match="expected a JSON object"):
        load_synonyms(path)


class Recorder:
    """A generator stand-in that records prompts and answers with a tagged first line."""

    def __init__(self, tag):
        self.tag, self.prompts = tag, []

    def __call__(self, prompts, names=None, seeds=None):
        self.prompts += prompts
        return [None if "fail" in p else f" {self.tag}{i}\nextra line" for i, p in enumerate(prompts)]


def prompted_back_translator(forward, backward, language: str = "French", source_language: str = "English"):
    """Back-translation through causal LMs (they may be the same one)."""
    return BackTranslator(PromptedTranslation(forward, source_language, language),
                          PromptedTranslation(backward, language, source_language))


def test_back_translation_runs_both_legs_in_order():
    forward, backward = Recorder("fr"), Recorder("en")
    out = prompted_back_translator(forward, backward, language="German")(["a dog", "a cat"])
    assert forward.prompts == [TRANSLATION_PROMPT.format(source="English", target="German", text=t) for t in ("a dog", "a cat")]
    assert forward.prompts[0] == "Translate from English to German.\nEnglish: a dog\nGerman:"
    assert backward.prompts == [f"Translate from German to English.\nGerman: fr{i}\nEnglish:" for i in range(2)]
    assert out == ["en0", "en1"]
    # a failed forward request stays None (its row becomes pending) and is not sent back
    backward.prompts = []
    assert prompted_back_translator(forward, backward)(["fail", "a cat"]) == [None, "en0"]
    assert len(backward.prompts) == 1

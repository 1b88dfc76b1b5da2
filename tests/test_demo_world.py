"""The demo world: deterministic, images that match their attributes, correct and held-out texts."""

import random

import numpy as np
import pytest

from langclip.demo import run as demo
from langclip.demo import world
from langclip.testing import train_word_tokenizer
from langclip.processing.generation.filters import MIN_CHARS, clean_difference


@pytest.fixture(scope="module")
def rows():
    return world.make_world(48, seed=1)


def shape_pixels(image, colour):
    pixels = np.asarray(image, dtype=np.int32)
    return np.abs(pixels - np.array(world.COLOURS[colour])).sum(-1) < 80


def test_world_is_deterministic_and_64px(rows):
    again = world.make_world(48, seed=1)
    assert rows["caption"] == again["caption"] and rows["paraphrases"] == again["paraphrases"]
    assert np.array_equal(np.asarray(rows[5]["image"]), np.asarray(again[5]["image"]))
    assert rows[0]["image"].size == (64, 64)
    assert world.make_world(4, seed=2)["caption"] != rows["caption"][:4]


def test_images_show_their_colour_position_and_size():
    rng = random.Random(0)
    for position, (ax, ay) in world.POSITIONS.items():
        attributes = dict(shape="square", colour="blue", size="large", position=position, count=1)
        mask = shape_pixels(world.render(attributes, rng), "blue")
        ys, xs = np.nonzero(mask)
        assert abs(xs.mean() - ax) < 3 and abs(ys.mean() - ay) < 3, position
    small = shape_pixels(world.render(dict(shape="circle", colour="red", size="small", position="left", count=1), rng),
                         "red").sum()
    large = shape_pixels(world.render(dict(shape="circle", colour="red", size="large", position="left", count=1), rng),
                         "red").sum()
    # areas of circles of radius 7 and 13: pi r^2 = 154 and 531 pixels
    assert small == pytest.approx(np.pi * 7**2, rel=0.25) and large == pytest.approx(np.pi * 13**2, rel=0.25)


def test_texts_state_the_image_and_web_captions_use_one_word_per_concept(rows):
    canonical = {words[0] for words in world.LEXICON.values()} | set(world.COUNT_WORDS.values())
    for row in rows:
        truth = {k: row[k] for k in ("shape", "colour", "size", "position", "count")}
        assert row["class_name"] == world.CLASS_NAMES[row["label"]] == f"{row['colour']} {row['shape']}"
        for text in row["paraphrases"] + row["eval_captions"]:
            assert world.read_attributes(text) == truth, text
        said = world.read_attributes(row["caption"])
        assert {"colour", "shape"} <= set(said) and all(truth[k] == v for k, v in said.items()), row["caption"]
        concept_words = [w for w in world.words_of(row["caption"]) if w in world.WORD_TO_CONCEPT or w in world.WORD_TO_COUNT]
        assert set(concept_words) <= canonical, row["caption"]
        assert len(row["synthetic_caption"]) > 2 * max(len(p) for p in row["paraphrases"])


def test_eval_phrasings_and_synonyms_are_absent_from_captions_and_present_in_the_lm_corpus(rows):
    rng = random.Random(5)
    captions = list(rows["caption"]) + [world.web_caption(world.sample_attributes(rng), rng) for _ in range(2000)]
    caption_words = {w for caption in captions for w in world.words_of(caption)}
    assert not caption_words & world.SYNONYMS  # no web caption uses a synonym
    assert not {w for name in world.SYNONYM_CLASS_NAMES for w in name.split()} & caption_words
    pool, corpus, prompts = demo.rewriting_lm_texts(seed=0, num_sentences=2000, num_prompts=500)
    lm_text = "\n".join(corpus + prompts)
    lm_words = set(world.words_of(lm_text))
    assert world.SYNONYMS <= lm_words  # every synonym is in the LM's text-only corpus and prompts
    assert {w for name in world.SYNONYM_CLASS_NAMES for w in name.split()} <= lm_words
    # held-out phrasings: no eval caption, zero-shot prompt or their fixed words occur in captions or LM texts
    for held_out in ("painted", "we find", "scene contains", "rendering", "graphic", "behold"):
        assert held_out not in lm_text and all(held_out not in caption for caption in captions), held_out
    for caption in rows["eval_captions"][0] + [t.format(n) for t in world.ZERO_SHOT_TEMPLATES
                                               for n in world.CLASS_NAMES + world.SYNONYM_CLASS_NAMES]:
        assert caption not in lm_text
    # the ICL documents are the paper's prompt: task, one meta pair "input => output", query =>, the rewrite
    task, example, query = prompts[0].split("\n\n")
    assert task == "write image captions differently," and " => " in example and " => " in query
    assert example.split(" => ") in [[pair["input"], pair["output"]] for pair in pool]


def test_rewrite_targets_keep_what_the_caption_states_in_new_words():
    rng = random.Random(0)
    caption = "IMG_4821 two red circles left lol"
    assert world.read_attributes(caption) == {"count": 2, "colour": "red", "shape": "circle", "position": "left"}
    assert world.read_attributes("a pair of tiny crimson discs toward the west") == {
        "count": 2, "size": "small", "colour": "red", "shape": "circle", "position": "left"}
    targets = [world.rewrite_target(caption, rng) for _ in range(50)]
    assert all(world.read_attributes(t) == world.read_attributes(caption) for t in targets)
    assert len(set(targets)) > 40 and sum(bool(set(world.words_of(t)) & world.SYNONYMS) for t in targets) > 40
    plural = world.rewrite_target("my red circles", rng)  # no count stated: "some", still plural
    assert "some" in plural.split() and world.is_plural(plural) and "count" not in world.read_attributes(plural)
    with pytest.raises(ValueError, match="states no attribute"):
        world.rewrite_target("IMG_1234 lol", rng)


def test_faithfulness_against_hand_counts():
    captions = ["two red circles left", "large blue square", "green star"]
    rewrites = [
        "a pair of crimson discs toward the west",  # keeps 4 of 4, synonyms: pair, crimson, discs, west
        "a big azure triangle on the north side",  # keeps 2 of 3 (size, colour), contradicts shape, adds position
        "a green star",  # keeps 2 of 2, no synonym
    ]
    assert world.faithfulness(captions, rewrites) == pytest.approx({
        "kept": 8 / 9, "contradicted": 1 / 9, "added": 1 / 3, "exact": 2 / 3, "with_synonym": 2 / 3,
        "synonyms_per_rewrite": (4 + 3) / 3})
    with pytest.raises(ValueError, match="as many rewrites as captions"):
        world.faithfulness(captions, rewrites[:2])


def test_synonym_class_names():
    assert world.synonym_name("red circle") == "crimson disc"
    assert len(set(world.SYNONYM_CLASS_NAMES)) == len(world.CLASS_NAMES)


def test_difference_descriptions():
    a = dict(shape="circle", colour="red", size="large", position="left", count=3)
    b = dict(shape="circle", colour="blue", size="small", position="left", count=1)
    assert world.describe_difference(a, b) == (
        "The shapes in the first image are larger than the shapes in the second image. "
        "The first image shows red shapes, while the second image shows blue shapes. "
        "The first image has more shapes than the second: three instead of one."
    )
    assert world.describe_difference(b, a).startswith("The shapes in the first image are smaller")
    assert world.describe_difference(a, dict(a, shape="star")) == (
        "The first image contains circles, whereas the second image contains stars.")
    assert world.describe_difference(a, dict(a, position="top")) == (
        "The shapes in the first image sit at the left instead of at the top.")
    assert world.describe_difference(a, dict(a)).startswith("The two images look the same")
    rng = random.Random(0)
    for _ in range(200):
        text = world.describe_difference(world.sample_attributes(rng), world.sample_attributes(rng))
        assert clean_difference(text) == (text, "ok") and len(text) >= MIN_CHARS


def test_vocabulary_covers_every_text(rows):
    tokenizer = train_word_tokenizer(world.world_vocabulary())
    pool, corpus, prompts = demo.rewriting_lm_texts(seed=0, num_sentences=500, num_prompts=100)
    texts = (rows["paraphrases"][0] + rows["eval_captions"][0] + [rows["synthetic_caption"][0]] + corpus
             + [t.format(n) for t in world.ZERO_SHOT_TEMPLATES for n in world.CLASS_NAMES + world.SYNONYM_CLASS_NAMES])
    unknown = tokenizer.unk_token_id
    assert all(unknown not in ids for ids in tokenizer(texts)["input_ids"])


def test_world_restricted_to_some_classes():
    held_out = ["red star", "blue circle"]
    rows = world.make_world(40, seed=3, classes=held_out)
    assert set(rows["class_name"]) == set(held_out)
    assert all(world.CLASS_NAMES[label] == name for label, name in zip(rows["label"], rows["class_name"]))
    with pytest.raises(ValueError, match="unknown: \\['pink star'\\]"):
        world.make_world(4, classes=["pink star"])

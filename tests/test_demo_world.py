"""The demo world: deterministic, images that match their attributes, correct and held-out texts."""

import random

import numpy as np
import pytest

from langclip.demo import world
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


def test_texts_are_correct_and_eval_phrasings_are_held_out(rows):
    for row in rows:
        assert row["class_name"] == world.CLASS_NAMES[row["label"]] == f"{row['colour']} {row['shape']}"
        assert len(row["paraphrases"]) == 4 and len(set(row["paraphrases"])) == 4
        for text in row["paraphrases"] + row["eval_captions"] + [row["synthetic_caption"]]:
            for word in (row["colour"], row["shape"], row["size"], row["position"], world.COUNT_WORDS[row["count"]]):
                assert word in text, (word, text)
        assert len(row["synthetic_caption"]) > 3 * max(len(p) for p in row["paraphrases"])
    training_texts = " ".join(list(rows["caption"]) + [p for ps in rows["paraphrases"] for p in ps])
    for held_out in ("toward", "coloured", "located", "rendering", "graphic", "look,"):
        assert held_out not in training_texts


def test_paraphrase_rendering_of_a_known_row():
    attributes = dict(shape="star", colour="green", size="small", position="top", count=2)
    assert world.fill(world.TRAIN_TEMPLATES[0], attributes) == "a picture of two small green stars on the top"
    assert world.synthetic_caption(attributes).startswith("The image shows two small green stars near the top")


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
    vocabulary = set(" ".join(world.world_vocabulary()).replace(",", " ").replace(".", " ").split())
    words = " ".join(rows["eval_captions"][0] + rows["paraphrases"][0] + [rows["synthetic_caption"][0]])
    assert set(words.replace(",", " ").replace(".", " ").split()) <= vocabulary


def test_faithful_rewrites_state_what_the_caption_states_and_nothing_more():
    assert world.mentioned_attributes("two circles!!") == {"count": 2, "shape": "circle"}
    assert world.mentioned_attributes("IMG_4821 orange") == {"colour": "orange"}
    assert world.mentioned_attributes("red stuff on the left") == {"colour": "red", "position": "left"}
    rng = random.Random(0)
    assert set(world.faithful_rewrites("IMG_4821 orange", rng, 4)) == {
        "a picture of an orange shape", "an image showing an orange shape", "a simple drawing of an orange shape",
        "an orange shape in a picture"}
    (rewrite,) = world.faithful_rewrites("two circles!!", rng, 1)
    assert "two circles" in rewrite
    (rewrite,) = world.faithful_rewrites("large square drawing", rng, 1)
    assert "a large square" in rewrite
    for pair in world.rewrite_pool(num_pairs=20):
        assert world.mentioned_attributes(pair["output"]) == world.mentioned_attributes(pair["input"])


def test_world_restricted_to_some_classes():
    held_out = ["red star", "blue circle"]
    rows = world.make_world(40, seed=3, classes=held_out)
    assert set(rows["class_name"]) == set(held_out)
    assert all(world.CLASS_NAMES[label] == name for label, name in zip(rows["label"], rows["class_name"]))
    with pytest.raises(ValueError, match="unknown: \\['pink star'\\]"):
        world.make_world(4, classes=["pink star"])

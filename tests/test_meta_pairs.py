"""Meta input-output pools: shipped pools, JSONL reading, the COCO source and the chatbot source."""

import json
import random

import pytest

from langclip.cli import main as cli
from langclip.processing.generation.backends import TextGenerator
from langclip.processing.generation.meta_pairs import CHATBOT_PROMPT, MetaPool, SHIPPED_POOLS, chatbot_pool, coco_pool, load_pool, read_pool

COCO = {
    "images": [{"id": 1}, {"id": 2}, {"id": 3}, {"id": 4}, {"id": 5}],
    "annotations": [
        {"image_id": 1, "id": 10, "caption": "A dog on a couch."},
        {"image_id": 1, "id": 11, "caption": "A brown dog  resting on a sofa."},
        {"image_id": 1, "id": 12, "caption": "A dog lies on the couch."},
        {"image_id": 2, "id": 20, "caption": "Two boats in a harbor."},
        {"image_id": 2, "id": 21, "caption": "Boats tied up at a dock."},
        {"image_id": 3, "id": 30, "caption": "A red bus on a street."},
        {"image_id": 3, "id": 31, "caption": "A bus parked by the road."},
        {"image_id": 4, "id": 40, "caption": "A lone caption for image four."},  # one caption: unusable
        {"image_id": 5, "id": 50, "caption": "A kite in the sky."},
        {"image_id": 5, "id": 51, "caption": "A kite in the sky."},  # a duplicate: still one caption
        {"image_id": 9, "id": 90, "caption": "Image 9 is not listed."},
        {"image_id": 9, "id": 91, "caption": "So it is left out."},
    ],
}


@pytest.fixture
def coco_file(tmp_path):
    path = tmp_path / "captions_train2017.json"
    path.write_text(json.dumps(COCO))
    return path


@pytest.mark.parametrize("name", SHIPPED_POOLS)
def test_shipped_pools(name):
    pool = load_pool(name)
    assert pool.name == name and pool.kind == "pairs" and len(pool.items) >= 16
    assert all(len(item) == 2 and all(text.strip() for text in item) for item in pool.items)
    assert len(set(pool.items)) == len(pool.items)


def test_coco_pool_groups_captions_by_listed_image(coco_file):
    pool = coco_pool(coco_file)
    assert pool.kind == "captions"
    assert pool.items == (
        ("A dog on a couch.", "A brown dog resting on a sofa.", "A dog lies on the couch."),
        ("Two boats in a harbor.", "Boats tied up at a dock."),
        ("A red bus on a street.", "A bus parked by the road."),
    )


def test_coco_sampling_rule(coco_file):
    """Three distinct images; from each, two distinct captions (input first, output second)."""
    pool = coco_pool(coco_file)
    orders = set()
    for seed in range(50):
        examples = pool.sample(3, random.Random(seed))
        images = [next(item for item in pool.items if source in item) for source, _ in examples]
        assert len({id(image) for image in images}) == 3
        for (source, target), image in zip(examples, images):
            assert source != target and target in image
        orders.add(examples[1])
    assert ("Two boats in a harbor.", "Boats tied up at a dock.") in orders
    assert ("Boats tied up at a dock.", "Two boats in a harbor.") in orders


def test_pair_pool_keeps_input_output_order():
    pool = MetaPool("p", "pairs", tuple((f"in {i}", f"out {i}") for i in range(5)))
    for seed in range(20):
        examples = pool.sample(3, random.Random(seed))
        assert len(set(examples)) == 3 and all(s.replace("in", "out") == t for s, t in examples)


def test_read_pool_round_trip_and_load_specs(tmp_path, coco_file):
    path = tmp_path / "mine.jsonl"
    load_pool("bard").save(path)
    assert read_pool(path).items == load_pool("bard").items
    assert load_pool(str(path)).name == "mine"
    assert load_pool(f"style={path}").name == "style"
    assert load_pool(f"coco={coco_file}").items == coco_pool(coco_file).items
    coco_pool(coco_file).save(tmp_path / "coco.jsonl")
    assert read_pool(tmp_path / "coco.jsonl").items == coco_pool(coco_file).items


@pytest.mark.parametrize(
    "lines, message",
    [
        (['{"input": "a", "output": "b"}', "{not json"], r"bad\.jsonl:2: not valid JSON"),
        (['{"input": "a", "output": ""}'], r"bad\.jsonl:1: expected"),
        (['{"captions": ["only one"]}'], r"bad\.jsonl:1: 'captions' needs at least two"),
        (['{"input": "a", "output": "b"}', '{"captions": ["x", "y"]}'], "mixes input/output pairs and caption lists"),
        (["", "  "], "the pool is empty"),
    ],
)
def test_read_pool_errors_name_file_and_line(tmp_path, lines, message):
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=message):
        read_pool(path)


def test_coco_and_spec_errors(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"images": []}))
    with pytest.raises(ValueError, match="no 'annotations' list"):
        coco_pool(path)
    path.write_text(json.dumps({"annotations": [{"image_id": 1, "caption": "x"}, {"image_id": 1}]}))
    with pytest.raises(ValueError, match=r"annotations\[1\] needs an 'image_id' and a non-empty 'caption'"):
        coco_pool(path)
    with pytest.raises(FileNotFoundError, match="no shipped pool"):
        load_pool("gpt5")


def test_cli_builds_a_coco_pool(tmp_path, coco_file, capsys):
    out = tmp_path / "coco.jsonl"
    assert cli(["meta-pairs", "--coco", str(coco_file), "--output", str(out)]) == 0
    assert read_pool(out, "coco").items == coco_pool(coco_file).items
    assert "wrote 3 captions" in capsys.readouterr().out


class ScriptedGenerator(TextGenerator):
    """The real pipeline's tokenizer, but scripted completions, to check prompts and cleaning exactly."""

    def __init__(self, pipe, completions):
        super().__init__(pipe)
        self.completions, self.prompts = completions, []

    def __call__(self, prompts, names=None, seeds=None):
        self.prompts += prompts
        return self.completions[: len(prompts)]


@pytest.fixture(scope="module")
def pipe(tiny_lm_dir):
    from transformers import pipeline

    return pipeline("text-generation", model=tiny_lm_dir, device="cpu")


def test_chatbot_pool_prompts_and_cleans(pipe):
    captions = ["a dog on a couch", "two boats", "a red bus"]
    generator = ScriptedGenerator(pipe, [" A sleepy dog sprawls on a couch.\nMore", "two boats", "<b>bus</b>"])
    pool, counts = chatbot_pool(captions, generator, name="gpt")
    assert generator.prompts == [f"{CHATBOT_PROMPT} {caption}\n" for caption in captions]
    assert pool == MetaPool("gpt", "pairs", (("a dog on a couch", "A sleepy dog sprawls on a couch."),))
    assert counts == {"ok": 1, "echo_query": 1, "junk": 1}


def test_chatbot_pool_uses_the_chat_template(pipe):
    pipe.tokenizer.chat_template = "{% for m in messages %}<user>{{ m['content'] }}</user>{% endfor %}<bot>"
    try:
        generator = ScriptedGenerator(pipe, ["A big red bus."])
        chatbot_pool(["a red bus"], generator)
    finally:
        pipe.tokenizer.chat_template = None
    assert generator.prompts == [f"<user>{CHATBOT_PROMPT} a red bus</user><bot>"]


def test_chatbot_pool_with_nothing_usable_says_so(pipe):
    with pytest.raises(ValueError, match=r"no usable rewrite of 2 captions: \{'empty': 2\}"):
        chatbot_pool(["a", "b"], ScriptedGenerator(pipe, ["", "\n"]))


def test_cli_chatbot_pool_through_the_real_pipeline(tmp_path, tiny_lm_dir, capsys):
    """The random LM's rewrites are mostly junk; the command either writes a valid pool or says why not."""
    captions = tmp_path / "caps.txt"
    captions.write_text("\n".join(f"a photo of {n} red dogs on the grass" for n in range(6)) + "\n")
    out = tmp_path / "chat.jsonl"
    args = ["meta-pairs", "--model", tiny_lm_dir, "--captions", str(captions), "--output", str(out), "--device", "cpu"]
    if cli(args) == 1:
        assert "no usable rewrite of 6 captions" in capsys.readouterr().err
    else:
        pool = read_pool(out)
        assert 1 <= len(pool.items) <= 6 and all(len(t.split()) >= 2 for _, t in pool.items)

"""The ICL prompt (golden strings), the completion parser, the rewrite filter and seeded example draws."""

import os
import subprocess
import sys

import pytest

from langclip.processing.generation.filters import STATUSES, clean_rewrite, parse_completion
from langclip.processing.generation.prompts import OFFICIAL_TASK, PAPER_TASK, PromptBuilder, build_prompt
from langclip.processing.generation.meta_pairs import MetaPool, load_pool

EXAMPLES = [
    ("a dog on grass", "A dog rests on green grass."),
    ("two cats", "Two cats sit together on a sofa."),
    ("a red bus", "A bright red bus waits at the stop."),
]


def test_prompt_official_format():
    assert build_prompt("a man on a horse", EXAMPLES) == (
        "write image captions differently,\n\n"
        "a dog on grass => A dog rests on green grass.\n\n"
        "two cats => Two cats sit together on a sofa.\n\n"
        "a red bus => A bright red bus waits at the stop.\n\n"
        "a man on a horse =>"
    )


def test_prompt_task_separator_and_count_are_configurable():
    prompt = build_prompt("a man on a horse", EXAMPLES[:2], task=PAPER_TASK, separator="\n")
    assert prompt == (
        "Rewrite the following image descriptions:\n"
        "a dog on grass => A dog rests on green grass.\n"
        "two cats => Two cats sit together on a sofa.\n"
        "a man on a horse =>"
    )
    assert OFFICIAL_TASK == "write image captions differently,"


@pytest.mark.parametrize(
    "completion, expected",
    [
        (" A man rides a brown horse.", "A man rides a brown horse."),  # good output
        (" A man rides a horse.\n\nthree birds => Birds fly.", "A man rides a horse."),  # multi-line
        (" A rider on a horse => a dog", "A rider on a horse"),  # a further =>
        ("   a man on his horse   ", "a man on his horse"),  # no => at all: the whole line
        ("", ""),  # empty
        ("\nA man rides a horse.", ""),  # the first line is empty
    ],
)
def test_parse_completion(completion, expected):
    assert parse_completion(completion) == expected


def test_parse_then_clean_an_echo():
    text = parse_completion(" A man on a horse!\n")
    assert clean_rewrite(text, "a man on a horse", EXAMPLES) == (None, "echo_query")


@pytest.mark.parametrize(
    "text, status",
    [
        ("A brown horse carries a man across a field.", "ok"),
        ("A class photo of smiling children.", "ok"),
        # numbers and units pass: digits may repeat
        ("A plane flies at 10000 feet above the clouds.", "ok"),
        ("A 1000 ml bottle costs $5.99 at 25°C, 3/4 full.", "ok"),
        ("A 2.5 km trail and 100% clear skies in 2024.", "ok"),
        ("", "empty"),
        ("   ", "empty"),
        ("horse", "too_short"),
        (" ".join(f"w{i}" for i in range(61)), "too_long"),
        ("A MAN, on a horse.", "echo_query"),
        ("two cats", "echo_example"),
        ("a bright red bus waits at the stop", "echo_example"),
        ("```python print(1)```", "junk"),
        ("<b>A horse</b> with a man", "junk"),
        ("def ride(horse): a man", "junk"),
        ("see https://example.com for horses", "junk"),
        ("# A man on a horse", "junk"),
        ("A man on a horse!!!!", "junk"),
        ("horse horse horse runs fast", "junk"),
        ("A man \ufffd on a horse", "junk"),
        ("A man\x07 on a horse", "junk"),
    ],
)
def test_clean_rewrite_each_reason(text, status):
    cleaned, got = clean_rewrite(text, "a man on a horse", EXAMPLES)
    assert got == status and got in STATUSES
    assert cleaned == (text if status == "ok" else None)


def test_clean_rewrite_word_limits_are_inclusive():
    assert clean_rewrite("one two", "q", min_words=2)[1] == "ok"
    assert clean_rewrite(" ".join(f"w{i}" for i in range(60)), "q", max_words=60)[1] == "ok"
    assert clean_rewrite(" ".join(f"w{i}" for i in range(61)), "q", max_words=60)[1] == "too_long"


def _pools():
    return {name: load_pool(name) for name in ("chatgpt", "bard", "human")}


def test_builder_is_seeded_by_seed_id_source_and_k():
    a, b = PromptBuilder(_pools(), seed=3), PromptBuilder(_pools(), seed=3)
    keys = [(f"id{i}", source, k) for i in range(12) for source in ("chatgpt", "bard") for k in range(2)]
    first = {key: a.examples(*key) for key in keys}
    assert {key: b.examples(*key) for key in reversed(keys)} == first  # order and instance do not matter
    assert len({tuple(first[key]) for key in keys}) > len(keys) // 2  # different keys, mostly different draws
    other_seed = PromptBuilder(_pools(), seed=4)
    assert any(other_seed.examples(*key) != first[key] for key in keys)
    pool = _pools()["chatgpt"]
    for key in keys:
        if key[1] == "chatgpt":
            assert len(set(first[key])) == 3 and set(first[key]) <= set(pool.items)


def test_builder_prompt_uses_the_drawn_examples():
    builder = PromptBuilder(_pools(), num_examples=2, task=PAPER_TASK, separator="\n", seed=1)
    prompt, examples = builder("two dogs", "17", "human", 1)
    assert len(examples) == 2
    assert prompt == build_prompt("two dogs", examples, PAPER_TASK, "\n")


def test_builder_draws_are_the_same_in_another_process():
    code = (
        "from langclip.processing.generation.prompts import PromptBuilder\n"
        "from langclip.processing.generation.meta_pairs import load_pool\n"
        "b = PromptBuilder({'bard': load_pool('bard')}, seed=5)\n"
        "print(repr([b.examples(str(i), 'bard', 0) for i in range(5)]))\n"
    )
    env = {**os.environ, "PYTHONHASHSEED": "123"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
    builder = PromptBuilder({"bard": load_pool("bard")}, seed=5)
    assert out.strip() == repr([builder.examples(str(i), "bard", 0) for i in range(5)])


def test_pool_smaller_than_examples_per_prompt_is_refused():
    small = MetaPool("tiny", "pairs", (("a b", "c d"), ("e f", "g h")))
    with pytest.raises(ValueError, match=r"pool 'tiny' has 2 pairs but each prompt needs 3"):
        PromptBuilder({"tiny": small}, num_examples=3)

"""LaCLIP's in-context rewriting prompt, the parser for its completions, and the rewrite filter.

A prompt is a task sentence, then ``num_examples`` examples ``source => target``, then
``query =>``, the blocks joined by ``separator`` (a blank line)::

    write image captions differently,

    a dog running on the beach => An energetic dog dashes along the shoreline.

    ...

    two cats on a sofa =>

The model continues after the final ``=>``; the rewrite is that continuation cut at the
first newline and at any further ``=>``, stripped.
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .meta_pairs import MetaPool

OFFICIAL_TASK = "write image captions differently,"
PAPER_TASK = "Rewrite the following image descriptions:"
ARROW = "=>"

STATUSES = ("ok", "empty", "junk", "too_short", "too_long", "echo_query", "echo_example")

_JUNK = re.compile(
    r"```|[{}<>\\|]"  # code blocks, braces, tags, escapes
    r"|[\ufffd\x00-\x08\x0b-\x1f\x7f]"  # undecodable bytes, control characters
    r"|\bhttps?://|\]\("  # links
    r"|^\s*(#|\*|-\s)"  # markdown headings and bullets
    r"|\bdef\s+\w+\s*\(|^\s*import\s+\w+|\w\(\)"  # code
    r"|(?P<char>\S)(?P=char){3,}"  # a character repeated four or more times
    r"|\b(?P<word>\w+)(\W+(?P=word)\b){2,}",  # a word repeated three or more times in a row
    re.IGNORECASE,
)


def build_prompt(
    query: str, examples: Sequence[tuple[str, str]], task: str = OFFICIAL_TASK, separator: str = "\n\n"
) -> str:
    """``task``, each ``source => target``, then ``query =>``, joined by ``separator``."""
    blocks = [task, *(f"{source} {ARROW} {target}" for source, target in examples), f"{query} {ARROW}"]
    return separator.join(blocks)


def parse_completion(completion: str) -> str:
    """The rewrite in the text generated after the prompt: up to the first newline or ``=>``, stripped."""
    return completion.split("\n", 1)[0].split(ARROW, 1)[0].strip()


def _normalize(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def clean_rewrite(
    text: str, query: str, examples: Sequence[tuple[str, str]] = (), min_words: int = 2, max_words: int = 60
) -> tuple[str | None, str]:
    """(text, "ok") for a usable rewrite, else (None, reason) with reason one of `STATUSES`.

    Rejected: empty; junk (code, markup, links, undecodable or control characters, repeated
    characters or words); fewer than
    ``min_words`` or more than ``max_words`` words; the query itself or any example's source
    or target (compared lower-cased, ignoring punctuation and spacing).
    """
    words = text.split()
    if not words:
        return None, "empty"
    if _JUNK.search(text):
        return None, "junk"
    if len(words) < min_words:
        return None, "too_short"
    if len(words) > max_words:
        return None, "too_long"
    normalized = _normalize(text)
    if normalized == _normalize(query):
        return None, "echo_query"
    if any(normalized == _normalize(side) for pair in examples for side in pair):
        return None, "echo_example"
    return text, "ok"


class PromptBuilder:
    """Builds the prompt for (caption, caption id, source, k): the k-th rewrite of a caption by a source.

    The examples are drawn by `MetaPool.sample` from a `random.Random` seeded with
    (seed, caption id, source, k), so a caption gets the same prompt on any number of
    processes, in any order, and after a restart.
    """

    def __init__(
        self,
        pools: Mapping[str, MetaPool],
        num_examples: int = 3,
        task: str = OFFICIAL_TASK,
        separator: str = "\n\n",
        seed: int = 0,
    ):
        for pool in pools.values():
            pool.check_size(num_examples)
        self.pools = dict(pools)
        self.num_examples = num_examples
        self.task = task
        self.separator = separator
        self.seed = seed

    def examples(self, caption_id: str, source: str, k: int = 0) -> list[tuple[str, str]]:
        rng = random.Random(f"{self.seed}|{caption_id}|{source}|{k}")
        return self.pools[source].sample(self.num_examples, rng)

    def __call__(self, caption: str, caption_id: str, source: str, k: int = 0) -> tuple[str, list[tuple[str, str]]]:
        """(prompt, examples) for the k-th rewrite of ``caption`` by ``source``."""
        examples = self.examples(caption_id, source, k)
        return build_prompt(caption, examples, self.task, self.separator), examples

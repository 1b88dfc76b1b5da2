"""The prompts a language model is given: LaCLIP's in-context rewriting prompt and PC-CLIP's difference prompt.

A prompt is a task sentence, then ``num_examples`` examples ``source => target``, then
``query =>``, the blocks joined by ``separator`` (a blank line)::

    write image captions differently,

    a dog running on the beach => An energetic dog dashes along the shoreline.

    ...

    two cats on a sofa =>

The model continues after the final ``=>`` (parsed by `filters.parse_completion`).
The difference prompt asks how image a differs visually from image b given their captions. This module imports
no model code: the prompt texts are also the defaults of the commands' flags (`arguments`).
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence

from .filters import ARROW

OFFICIAL_TASK = "write image captions differently,"
PAPER_TASK = "Rewrite the following image descriptions:"
CHATBOT_PROMPT = "Rewrite this caption of an image vividly, and keep it less than thirty words:"
"""The instruction before each caption when a chat model writes a meta-pair pool (`meta_pairs.chatbot_pool`)."""


def build_prompt(
    query: str, examples: Sequence[tuple[str, str]], task: str = OFFICIAL_TASK, separator: str = "\n\n"
) -> str:
    """``task``, each ``source => target``, then ``query =>``, joined by ``separator``."""
    blocks = [task, *(f"{source} {ARROW} {target}" for source, target in examples), f"{query} {ARROW}"]
    return separator.join(blocks)


class PromptBuilder:
    """Builds the prompt for (caption, caption id, source, k): the k-th rewrite of a caption by a source.

    ``pools`` maps each source to its `meta_pairs.MetaPool`. The examples are drawn by `MetaPool.sample` from a
    `random.Random` seeded with (seed, caption id, source, k), so a caption gets the same prompt on any number of
    processes, in any order, and after a restart.
    """

    def __init__(
        self,
        pools: Mapping,
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


DIFFERENCE_PROMPT = (
    "Image A shows: {caption_a}\n"
    "Image B shows: {caption_b}\n"
    "Describe in one or two sentences how image A differs visually from image B.\n"
    "Image A, compared with image B,"
)


def build_difference_prompt(caption_a: str, caption_b: str, template: str = DIFFERENCE_PROMPT) -> str:
    """The comparative prompt for one pair; the LLM continues after the last line."""
    for name, caption in (("caption_a", caption_a), ("caption_b", caption_b)):
        if not isinstance(caption, str) or not caption.strip():
            raise ValueError(f"{name} must be a non-empty string, got {caption!r}")
    return template.format(caption_a=caption_a.strip(), caption_b=caption_b.strip())

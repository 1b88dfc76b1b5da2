"""CLIPS partial synthetic captions, and the collator that builds CLIPS batches.

The text encoder of CLIPS sees only part of a long synthetic caption, at most K tokens
(special tokens included). Four strategies act on the caption's token ids:

- ``truncate``: the first K - s content tokens (s special tokens frame the result);
- ``random``: K - s content tokens at random positions, in their original order;
- ``block``: K - s consecutive content tokens from a random start;
- ``subcaption``: randomly chosen whole sentences, in their original order, joined
  and cut to K - s content tokens (the paper's best, with K = 32);
- ``none``: the whole caption, cut to the text tower's context.

The result is framed with the tokenizer's own special tokens (``<bos> ... <eos>`` for
CLIP's BPE, ``[CLS] ... [SEP]`` for BERT), so the EOS that CLIP pools at is always there.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence

import torch

from .text_augment import ContrastiveCollator

STRATEGIES = ("subcaption", "block", "random", "truncate", "none")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_PROBE = "a photo"


def split_sentences(text: str) -> list[str]:
    """Sentences of ``text``: split after ``.``, ``!`` or ``?`` followed by white space."""
    return [sentence for sentence in _SENTENCE_END.split(text.strip()) if sentence]


def special_frame(tokenizer) -> tuple[list[int], list[int]]:
    """(prefix, suffix) ids the tokenizer puts around a text's content tokens."""
    content = tokenizer(_PROBE, add_special_tokens=False)["input_ids"]
    full = tokenizer(_PROBE)["input_ids"]
    for start in range(len(full) - len(content) + 1):
        if full[start : start + len(content)] == content:
            return full[:start], full[start + len(content) :]
    raise ValueError(f"cannot find the content tokens {content} inside the framed tokens {full}")


def truncate(ids: Sequence[int], budget: int, rng: random.Random | None = None) -> list[int]:
    """The first ``budget`` ids."""
    return list(ids[:budget])


def random_mask(ids: Sequence[int], budget: int, rng: random.Random) -> list[int]:
    """``budget`` ids at distinct random positions, in their original order."""
    if len(ids) <= budget:
        return list(ids)
    return [ids[i] for i in sorted(rng.sample(range(len(ids)), budget))]


def block_mask(ids: Sequence[int], budget: int, rng: random.Random) -> list[int]:
    """``budget`` consecutive ids starting at a uniform random position."""
    start = rng.randint(0, max(len(ids) - budget, 0))
    return list(ids[start : start + budget])


def subcaption(sentences: Sequence[Sequence[int]], budget: int, rng: random.Random) -> list[int]:
    """A uniform number n >= 1 of distinct random sentences, kept in order, concatenated, cut to ``budget`` ids."""
    chosen = sorted(rng.sample(range(len(sentences)), rng.randint(1, len(sentences))))
    return [token for i in chosen for token in sentences[i]][:budget]


class PartialCaption:
    """Maps a caption to the ids of its partial caption with at most ``num_tokens`` tokens, specials included.

    ``strategy`` is one of `STRATEGIES`; ``none`` keeps the caption whole up to
    ``max_length`` tokens. With a ``key`` (e.g. ``(epoch, row_id)``) the draw depends only
    on (seed, key), so it survives a resume and any number of workers.
    """

    def __init__(self, tokenizer, strategy: str = "subcaption", num_tokens: int = 32, max_length: int | None = None,
                 seed: int = 0):
        if strategy not in STRATEGIES:
            raise ValueError(f"partial caption strategy must be one of {STRATEGIES}, got {strategy!r}")
        self.prefix, self.suffix = special_frame(tokenizer)
        specials = len(self.prefix) + len(self.suffix)
        length = max_length if strategy == "none" else num_tokens
        if length is None or length <= specials:
            raise ValueError(
                f"the partial-caption budget K must exceed the {specials} special tokens of the tokenizer, got "
                f"{'max_length' if strategy == 'none' else 'K'}={length}"
            )
        self.tokenizer = tokenizer
        self.strategy = strategy
        self.budget = length - specials
        self.seed = seed
        self.rng = random.Random(seed)

    def _rng(self, key) -> random.Random:
        return self.rng if key is None else random.Random(f"{self.seed}:{key}")

    def content_ids(self, texts: list[str]) -> list[list[int]]:
        return self.tokenizer(texts, add_special_tokens=False)["input_ids"]

    def __call__(self, caption: str, key=None) -> list[int]:
        if not isinstance(caption, str) or not caption.strip():
            raise ValueError(f"synthetic caption must be a non-empty string, got {caption!r}")
        rng = self._rng(key)
        if self.strategy == "subcaption":
            ids = subcaption(self.content_ids(split_sentences(caption)), self.budget, rng)
        else:
            select = {"none": truncate, "truncate": truncate, "random": random_mask, "block": block_mask}[self.strategy]
            ids = select(self.content_ids([caption])[0], self.budget, rng)
        return self.prefix + ids + self.suffix


def pad_ids(sequences: list[list[int]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad id lists to the longest: ``input_ids`` and ``attention_mask`` (B, L)."""
    length = max(len(ids) for ids in sequences)
    input_ids = torch.full((len(sequences), length), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), length), dtype=torch.long)
    for row, ids in enumerate(sequences):
        input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        attention_mask[row, : len(ids)] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask}


class CLIPSCollator(ContrastiveCollator):
    """Rows {image, caption, synthetic_caption} -> a `CLIPSModel` batch.

    - ``pixel_values``; ``input_ids``/``attention_mask``: the web caption (as `ContrastiveCollator`);
    - ``partial_input_ids``/``partial_attention_mask``: the partial synthetic caption (`PartialCaption`);
    - ``caption_input_ids``/``caption_attention_mask``: the full synthetic caption, framed by
      the special tokens, for the captioner. A caption longer than ``caption_max_length``
      tokens is an error that names the row.
    """

    def __init__(self, tokenizer, max_length: int, partial: PartialCaption, caption_max_length: int | None = None,
                 synthetic_column: str = "synthetic_caption", **kwargs):
        super().__init__(tokenizer, max_length, **kwargs)
        self.partial = partial
        self.caption_max_length = caption_max_length
        self.synthetic_column = synthetic_column

    def synthetic_caption(self, row: dict) -> str:
        if self.synthetic_column not in row:
            raise KeyError(f"row has no {self.synthetic_column!r} column, which CLIPS needs (columns: {sorted(row)})")
        return row[self.synthetic_column]

    def extra_inputs(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        captions = [self.synthetic_caption(row) for row in rows]
        partial = pad_ids([self.partial(text, self.key(row)) for row, text in zip(rows, captions)],
                          self.tokenizer.pad_token_id)
        full = self.tokenizer(captions)["input_ids"]
        for row, ids in zip(rows, full):
            if self.caption_max_length is not None and len(ids) > self.caption_max_length:
                where = f"row {row['id']!r}" if "id" in row else "a row"
                raise ValueError(f"{where}: {self.synthetic_column} has {len(ids)} tokens, more than the captioner's "
                                 f"captioner_max_length={self.caption_max_length}")
        caption = pad_ids(full, self.tokenizer.pad_token_id)
        return {"partial_input_ids": partial["input_ids"], "partial_attention_mask": partial["attention_mask"],
                "caption_input_ids": caption["input_ids"], "caption_attention_mask": caption["attention_mask"]}

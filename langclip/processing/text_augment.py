"""LaCLIP's text augmentation aug_T and the collator that turns rows into model batches.

aug_T(caption, rewrites) draws uniformly from [caption] + rewrites; a draw with fewer than
two words falls back to the caption. It adds no compute to training: it only chooses
which string is tokenised.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

import torch

from .image_transforms import BadSampleError

MIN_WORDS = 2


def _usable(text: Any) -> bool:
    return isinstance(text, str) and len(text.split()) >= MIN_WORDS


def candidate_texts(caption: str, rewrites: Sequence[str] | None) -> list[str]:
    """[caption] + rewrites, with every rewrite of fewer than two words replaced by the caption."""
    if not isinstance(caption, str) or not caption.strip():
        raise ValueError(f"caption must be a non-empty string, got {caption!r}")
    return [caption] + [text if _usable(text) else caption for text in (rewrites or [])]


class TextAugmenter:
    """aug_T: uniform choice among the original caption and its rewrites, seedable.

    `sample` returns one text. `sample_all(num_texts)` returns `num_texts` texts for
    LaCLIP-MT: the aug_T draw first, then the other candidates in their original order
    (original, rewrite 1, ..., rewrite M). A row with fewer rewrites than `num_texts - 1`
    is padded with its caption, so every image has the same T.

    With a ``key`` (e.g. ``(epoch, row_id)``) the draw depends only on (seed, key), so it
    is the same on any number of processes or workers and after a resume; without one it
    comes from the augmenter's own seeded stream.
    """

    def __init__(self, seed: int = 0):
        self.seed = seed
        self.rng = random.Random(seed)

    def _rng(self, key) -> random.Random:
        return self.rng if key is None else random.Random(f"{self.seed}:{key}")

    def sample(self, caption: str, rewrites: Sequence[str] | None = None, key=None) -> str:
        candidates = candidate_texts(caption, rewrites)
        return candidates[self._rng(key).randrange(len(candidates))]

    def sample_all(self, caption: str, rewrites: Sequence[str] | None, num_texts: int, key=None) -> list[str]:
        candidates = candidate_texts(caption, rewrites)
        if len(candidates) > num_texts:
            raise ValueError(f"row has {len(candidates)} texts but num_texts={num_texts}")
        candidates += [caption] * (num_texts - len(candidates))
        pick = self._rng(key).randrange(len(candidates))
        return [candidates[pick]] + candidates[:pick] + candidates[pick + 1 :]


class ContrastiveCollator:
    """Turns rows {pixel_values, caption, rewrites?} into a `LaCLIPModel` batch.

    - ``num_texts=None``: ``input_ids`` (B, L) from one text per image (aug_T when an
      augmenter is given, else the caption).
    - ``num_texts=T``: ``input_ids`` (B, T, L), column 0 the aug_T draw (LaCLIP-MT).

    Texts are tokenised with padding to the longest in the batch, truncated to
    ``max_length`` (the text tower's context). A row's aug_T draw is keyed by
    (``epoch``, row ``id``) when the row has an ``id``: set ``collator.epoch`` each epoch. ``pixel_values`` are stacked from the rows
    (already transformed) or produced by ``image_transform(row["image"], key=key, where=...)``
    with the same (``epoch``, ``id``) key, so random crops also survive a resume (see
    `langclip.processing.image_transforms.ImageTransform`).

    With ``skip_bad_samples``, a row whose image raises `BadSampleError` is dropped and
    counted in the batch's ``num_skipped`` (pop it before calling the model); without it
    the error, which names the row and file, stops the run.
    """

    def __init__(
        self,
        tokenizer,
        max_length: int,
        augmenter: TextAugmenter | None = None,
        num_texts: int | None = None,
        image_transform: Callable | None = None,
        caption_column: str = "caption",
        rewrites_column: str = "rewrites",
        skip_bad_samples: bool = False,
    ):
        if num_texts is not None and augmenter is None:
            raise ValueError("num_texts (LaCLIP-MT) needs a TextAugmenter")
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.augmenter = augmenter
        self.num_texts = num_texts
        self.image_transform = image_transform
        self.caption_column = caption_column
        self.rewrites_column = rewrites_column
        self.skip_bad_samples = skip_bad_samples
        self.epoch = 0

    def key(self, row: dict):
        """(epoch, row id) when the row has an ``id``, else None (the augmenter's own stream)."""
        return (self.epoch, row["id"]) if "id" in row else None

    def texts_for(self, row: dict) -> list[str]:
        if self.caption_column not in row:
            raise KeyError(f"row has no {self.caption_column!r} column (columns: {sorted(row)})")
        caption = row[self.caption_column]
        rewrites = row.get(self.rewrites_column)
        if self.augmenter is None:
            return [candidate_texts(caption, None)[0]]
        if self.num_texts is None:
            return [self.augmenter.sample(caption, rewrites, self.key(row))]
        return self.augmenter.sample_all(caption, rewrites, self.num_texts, self.key(row))

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        return self.tokenizer(
            texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )

    def transform_image(self, row: dict) -> torch.Tensor:
        where = f"row {row['id']!r}" if "id" in row else "row"
        return self.image_transform(row["image"], key=self.key(row), where=where)

    def extra_inputs(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        """More model inputs from the kept ``rows`` (none here; subclasses such as `CLIPSCollator` add theirs)."""
        return {}

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        num_rows = len(rows)
        if self.image_transform is None:
            pixels = [torch.as_tensor(row["pixel_values"]) for row in rows]
        else:
            kept = []
            for row in rows:
                try:
                    kept.append((row, self.transform_image(row)))
                except BadSampleError:
                    if not self.skip_bad_samples:
                        raise
            rows, pixels = [row for row, _ in kept], [pixel for _, pixel in kept]
        if not rows:
            raise BadSampleError(f"every image of a batch of {num_rows} rows is unreadable")
        texts = [self.texts_for(row) for row in rows]
        tokens = self.tokenize([text for row_texts in texts for text in row_texts])
        shape = (len(rows), -1) if self.num_texts is None else (len(rows), self.num_texts, -1)
        batch = {
            "pixel_values": torch.stack(pixels),
            "input_ids": tokens["input_ids"].view(*shape),
            "attention_mask": tokens["attention_mask"].view(*shape),
            **self.extra_inputs(rows),
        }
        if self.skip_bad_samples:
            batch["num_skipped"] = torch.tensor(num_rows - len(rows))
        return batch

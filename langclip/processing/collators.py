"""Collators: rows -> model batches, one per kind of batch.

- `ContrastiveCollator`: image-text rows -> a `LaCLIPModel` batch (CLIP, LaCLIP with aug_T,
  LaCLIP-MT with all T texts).
- `CLIPSCollator`: adds the partial synthetic caption and the full one for the captioner (CLIPS).
- `DifferenceCollator`: image pairs and their difference texts (PC-CLIP).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch

from .text import PartialCaption, TextAugmenter, candidate_texts
from .transforms import SKIP_KINDS, BadSampleError


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
    `langclip.processing.transforms.ImageTransform`).

    With ``skip_bad_samples``, a row whose image or caption raises `BadSampleError` is
    dropped and counted in the batch's ``num_skipped``, a (len(SKIP_KINDS),) count per kind
    (pop it before calling the model); a batch with no row left is ``{"num_skipped": ...}``
    alone. Without it the error, which names the row and file, stops the run.
    A truncated shard's marker row (``lost_samples``: n, see `langclip.processing.shards`) counts n as truncated.
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
        return self.image_transform(row["image"], key=self.key(row), where=_where(row))

    text_columns = ("caption_column",)  # attributes naming the columns whose text a row needs

    def check_caption(self, row: dict) -> None:
        """`BadSampleError` (kind ``bad_caption``) naming the row and column when a text is not a non-empty string."""
        for column in (getattr(self, name) for name in self.text_columns):
            text = row.get(column)
            if column in row and not (isinstance(text, str) and text.strip()):
                raise BadSampleError(f"{_where(row)}: column {column!r} must be a non-empty string, got {text!r}; "
                                     "fix the row or pass --skip-bad-samples", "bad_caption")

    def extra_inputs(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        """More model inputs from the kept ``rows`` (none here; subclasses such as `CLIPSCollator` add theirs)."""
        return {}

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        skipped, kept = dict.fromkeys(SKIP_KINDS, 0), []
        for row in rows:
            if row.get("lost_samples"):  # a truncated shard's marker row: n samples lost
                skipped["truncated"] += row["lost_samples"]
                continue
            try:
                self.check_caption(row)
                kept.append((row, torch.as_tensor(row["pixel_values"]) if self.image_transform is None
                             else self.transform_image(row)))
            except BadSampleError as error:
                if not self.skip_bad_samples:
                    raise
                skipped[error.kind] += 1
        counts = {"num_skipped": torch.tensor(list(skipped.values()))} if self.skip_bad_samples else {}
        rows, pixels = [row for row, _ in kept], [pixel for _, pixel in kept]
        if not rows:
            return counts
        texts = [self.texts_for(row) for row in rows]
        tokens = self.tokenize([text for row_texts in texts for text in row_texts])
        shape = (len(rows), -1) if self.num_texts is None else (len(rows), self.num_texts, -1)
        batch = {
            "pixel_values": torch.stack(pixels),
            "input_ids": tokens["input_ids"].view(*shape),
            "attention_mask": tokens["attention_mask"].view(*shape),
            **self.extra_inputs(rows),
        }
        return {**batch, **counts}


class CLIPSCollator(ContrastiveCollator):
    """Rows {image, caption, synthetic_caption} -> a `CLIPSModel` batch.

    - ``pixel_values``; ``input_ids``/``attention_mask``: the web caption (as `ContrastiveCollator`);
    - ``partial_input_ids``/``partial_attention_mask``: the partial synthetic caption (`PartialCaption`);
    - ``caption_input_ids``/``caption_attention_mask``: the full synthetic caption, framed by
      the special tokens, for the captioner. A caption longer than ``caption_max_length``
      tokens is an error that names the row.
    """

    text_columns = ("caption_column", "synthetic_column")

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


class DifferenceCollator:
    """Rows ``{id_a, id_b, difference}`` -> a PC-CLIP batch.

    ``image_lookup(id)`` returns either a precomputed image embedding (1-d) or pixel values
    (3-d); the batch holds ``image_embeds_a/b`` or ``pixel_values_a/b`` accordingly, plus
    the tokenised difference texts. With ``caption_lookup(id)``, it also holds the tokenised
    captions of the a images (``caption_input_ids``, ``caption_attention_mask``) for the CLIP term.
    """

    def __init__(
        self,
        tokenizer,
        max_length: int,
        image_lookup: Callable[[str], torch.Tensor],
        caption_lookup: Callable[[str], str] | None = None,
    ):
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.image_lookup = image_lookup
        self.caption_lookup = caption_lookup

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        return self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")

    def __call__(self, rows: list[Mapping]) -> dict[str, torch.Tensor]:
        images_a = torch.stack([self.image_lookup(row["id_a"]) for row in rows])
        images_b = torch.stack([self.image_lookup(row["id_b"]) for row in rows])
        kind = "image_embeds" if images_a.dim() == 2 else "pixel_values"
        batch = {f"{kind}_a": images_a, f"{kind}_b": images_b, **self.tokenize([row["difference"] for row in rows])}
        if self.caption_lookup is not None:
            captions = self.tokenize([self.caption_lookup(row["id_a"]) for row in rows])
            batch.update({f"caption_{key}": value for key, value in captions.items()})
        return batch


def _where(row: Mapping) -> str:
    return f"row {row['id']!r}" if "id" in row else "a row"


def pad_ids(sequences: list[list[int]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad id lists to the longest: ``input_ids`` and ``attention_mask`` (B, L)."""
    length = max(len(ids) for ids in sequences)
    input_ids = torch.full((len(sequences), length), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), length), dtype=torch.long)
    for row, ids in enumerate(sequences):
        input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        attention_mask[row, : len(ids)] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask}



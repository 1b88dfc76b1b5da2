"""The token layout of the released CLIPS text towers: ``[1] ids [2] 0 ... 0 [101]``, always ``context_length`` long.

Content ids come from a lower-cased WordPiece vocabulary (BERT's normaliser and
pre-tokeniser, ``vocab.txt`` one piece per line); a text longer than the context is cut so
that ``[2]`` and the final ``[101]`` always fit. The released towers attend to every
position and pool the last one, so ``attention_mask`` is all ones.

    tokenizer = CLIPSTokenizer.from_pretrained("converted/clips-vit-l-14")
    batch = tokenizer(["a dog on a beach"])     # input_ids (1, 80)
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers
from transformers import BatchEncoding

CONFIG_FILE = "clips_tokenizer.json"
VOCAB_FILE = "vocab.txt"


class CLIPSTokenizer:
    """WordPiece tokenizer producing ``[bos] ids [eos] pad ... pad [last]`` of exactly ``context_length`` ids."""

    def __init__(self, vocab: dict[str, int], context_length: int = 80, bos_token_id: int = 1, eos_token_id: int = 2,
                 pad_token_id: int = 0, last_token_id: int = 101, unk_token: str = "[UNK]"):
        if unk_token not in vocab:
            raise ValueError(f"the WordPiece vocabulary has no unknown token {unk_token!r}")
        if context_length < 4:
            raise ValueError(f"context_length must leave room for at least one token beside 3 specials, got {context_length}")
        self.vocab = vocab
        self.context_length = context_length
        self.bos_token_id, self.eos_token_id = bos_token_id, eos_token_id
        self.pad_token_id, self.last_token_id = pad_token_id, last_token_id
        self.unk_token = unk_token
        self.backend = Tokenizer(models.WordPiece(vocab, unk_token=unk_token))
        self.backend.normalizer = normalizers.BertNormalizer(lowercase=True)
        self.backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        self.backend.decoder = decoders.WordPiece()

    @classmethod
    def from_vocab_file(cls, path: str, **kwargs) -> CLIPSTokenizer:
        """From a ``vocab.txt``: one WordPiece per line, the line number its id."""
        with open(path, encoding="utf-8") as handle:
            return cls({line.rstrip("\n"): i for i, line in enumerate(handle)}, **kwargs)

    @classmethod
    def from_pretrained(cls, folder: str) -> CLIPSTokenizer:
        with open(os.path.join(folder, CONFIG_FILE), encoding="utf-8") as handle:
            settings = json.load(handle)
        return cls.from_vocab_file(os.path.join(folder, VOCAB_FILE), **settings)

    def save_pretrained(self, folder: str) -> None:
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, VOCAB_FILE), "w", encoding="utf-8") as handle:
            handle.writelines(f"{token}\n" for token, _ in sorted(self.vocab.items(), key=lambda item: item[1]))
        settings = {"context_length": self.context_length, "bos_token_id": self.bos_token_id,
                    "eos_token_id": self.eos_token_id, "pad_token_id": self.pad_token_id,
                    "last_token_id": self.last_token_id, "unk_token": self.unk_token}
        with open(os.path.join(folder, CONFIG_FILE), "w", encoding="utf-8") as handle:
            json.dump(settings, handle, indent=2)

    def encode(self, text: str, context_length: int | None = None) -> list[int]:
        length = context_length or self.context_length
        content = self.backend.encode(text, add_special_tokens=False).ids[: length - 3]
        padding = [self.pad_token_id] * (length - 3 - len(content))
        return [self.bos_token_id, *content, self.eos_token_id, *padding, self.last_token_id]

    def __call__(self, texts: str | Sequence[str], max_length: int | None = None, return_tensors: str = "pt",
                 **unused) -> BatchEncoding:
        """``input_ids`` and an all-ones ``attention_mask``, (B, max_length or context_length).

        Padding and truncation always apply (the layout is fixed-length); ``padding`` /
        ``truncation`` arguments of the `transformers` tokenizer API are accepted and ignored.
        """
        if return_tensors != "pt":
            raise ValueError(f"CLIPSTokenizer returns PyTorch tensors only, got return_tensors={return_tensors!r}")
        texts = [texts] if isinstance(texts, str) else list(texts)
        input_ids = torch.tensor([self.encode(text, max_length) for text in texts], dtype=torch.long)
        return BatchEncoding({"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)})

    def decode(self, ids: Sequence[int]) -> str:
        specials = {self.bos_token_id, self.eos_token_id, self.pad_token_id, self.last_token_id}
        return self.backend.decode([int(i) for i in ids if int(i) not in specials])

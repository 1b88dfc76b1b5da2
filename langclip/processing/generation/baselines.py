"""The rewriting baselines of LaCLIP's ablation as proposers for the rewrite job: EDA and back-translation.

EDA's operations live in `langclip.processing.text`. Back-translation sends a caption to
another language and back, en -> X -> en, in two legs of one of two kinds:

- `Seq2SeqTranslation`: an encoder-decoder translation model (Marian by default,
  ``Helsinki-NLP/opus-mt-en-fr`` then ``opus-mt-fr-en``; NLLB or M2M with language codes);
- `PromptedTranslation`: a causal LM (any backend of `backends`) prompted to translate.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import torch
import transformers

from ..text import EDA
from .backends import Proposer, request_names
from .filters import parse_completion
from .job import process_state

TRANSLATION_PROMPT = "Translate from {source} to {target}.\n{source}: {text}\n{target}:"


class PromptedTranslation:
    """One leg through a causal LM: ``template`` filled with (source, target, text); keeps the
    first line of the continuation (None where the backend failed)."""

    def __init__(self, generator, source: str, target: str, template: str = TRANSLATION_PROMPT):
        self.generator, self.source, self.target, self.template = generator, source, target, template

    def __call__(self, texts: Sequence[str], names=None, seeds=None) -> list[str | None]:
        prompts = [self.template.format(source=self.source, target=self.target, text=text) for text in texts]
        completions = self.generator(prompts, names, seeds)
        return [None if text is None else parse_completion(text) for text in completions]


class Seq2SeqTranslation:
    """One leg through an encoder-decoder translation model (Marian, NLLB, M2M) with batched
    ``generate`` (transformers 5 has no ``translation`` pipeline any more): texts sorted by
    length, padded per batch, decoded without special tokens. ``src_lang`` / ``tgt_lang`` are
    the language codes that multilingual models need (NLLB: ``eng_Latn``, ``fra_Latn``); the
    target code is forced as the first generated token."""

    def __init__(self, model, tokenizer, batch_size: int = 16, src_lang: str | None = None, tgt_lang: str | None = None,
                 **generate_kwargs):
        self.model, self.tokenizer, self.batch_size = model, tokenizer, batch_size
        if src_lang:
            tokenizer.src_lang = src_lang
        self.generate_kwargs = dict(generate_kwargs)
        if tgt_lang:
            self.generate_kwargs["forced_bos_token_id"] = tokenizer.convert_tokens_to_ids(tgt_lang)

    @classmethod
    def from_pretrained(cls, name: str, device=None, dtype: str = "auto", batch_size: int = 16, **kwargs):
        device = process_state().device if device is None else device
        model = transformers.AutoModelForSeq2SeqLM.from_pretrained(name, dtype=dtype).to(device).eval()
        return cls(model, transformers.AutoTokenizer.from_pretrained(name), batch_size, **kwargs)

    @torch.inference_mode()
    def __call__(self, texts: Sequence[str], names=None, seeds=None) -> list[str]:
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        translated = [""] * len(texts)
        for start in range(0, len(order), self.batch_size):
            batch = order[start : start + self.batch_size]
            inputs = self.tokenizer([texts[i] for i in batch], return_tensors="pt", padding=True, truncation=True)
            outputs = self.model.generate(**inputs.to(self.model.device), **self.generate_kwargs)
            for i, text in zip(batch, self.tokenizer.batch_decode(outputs, skip_special_tokens=True)):
                translated[i] = text.strip()
        return translated


def is_seq2seq(model: str) -> bool:
    """Whether ``model`` (Hub id or folder) is an encoder-decoder (a translation model)."""
    return bool(getattr(transformers.AutoConfig.from_pretrained(model), "is_encoder_decoder", False))


class BackTranslator:
    """Caption -> pivot language -> caption through two legs (`Seq2SeqTranslation` or
    `PromptedTranslation`); a text whose forward leg failed stays None."""

    def __init__(self, forward, backward):
        self.forward, self.backward = forward, backward

    def __call__(self, captions: Sequence[str], names=None, seeds=None) -> list[str | None]:
        middle = self.forward(captions, names, seeds)
        done = [i for i, text in enumerate(middle) if text is not None]
        pick = lambda values: None if values is None else [values[i] for i in done]  # noqa: E731
        back = self.backward([middle[i] for i in done], pick(names), pick(seeds))
        texts = [None] * len(captions)
        for i, text in zip(done, back):
            texts[i] = text
        return texts


def eda_proposer(eda: EDA, seed: int = 0) -> Proposer:
    """EDA, seeded by (seed, caption id, k) like the ICL examples."""

    def propose(captions, ids, requests):
        return [(eda(captions[row], random.Random(f"{seed}|{ids[row]}|eda|{k}")), ()) for row, _, k in requests]

    return propose


def backtranslation_proposer(translator: BackTranslator) -> Proposer:
    def propose(captions, ids, requests):
        texts = translator([captions[row] for row, _, _ in requests], request_names(ids, requests))
        return [(text, ()) for text in texts]

    return propose

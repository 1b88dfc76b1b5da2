"""The rewriting baselines of LaCLIP's ablation as proposers for the rewrite job: EDA and back-translation.

EDA's operations live in `langclip.processing.text`. Back-translation sends a caption
through a text-generation model to another language and back (prompted translation).
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from ..text import EDA
from .backends import Proposer, TextGenerator, request_names
from .filters import parse_completion


TRANSLATION_PROMPT = "Translate from {source} to {target}.\n{source}: {text}\n{target}:"


class BackTranslator:
    """Caption -> ``language`` -> ``source_language`` through two `TextGenerator`s (they may share a model).

    Each leg prompts with ``template`` and keeps the first line of the continuation.
    """

    def __init__(
        self,
        forward: TextGenerator,
        backward: TextGenerator,
        language: str = "French",
        source_language: str = "English",
        template: str = TRANSLATION_PROMPT,
    ):
        self.legs = ((forward, source_language, language), (backward, language, source_language))
        self.template = template

    def __call__(self, captions: Sequence[str], names: Sequence[str] | None = None) -> list[str]:
        texts = list(captions)
        for generator, source, target in self.legs:
            prompts = [self.template.format(source=source, target=target, text=text) for text in texts]
            texts = [parse_completion(completion) for completion in generator(prompts, names)]
        return texts


def eda_proposer(eda: EDA, seed: int = 0) -> Proposer:
    """EDA, seeded by (seed, caption id, k) like the ICL examples."""

    def propose(captions, ids, requests):
        return [(eda(captions[row], random.Random(f"{seed}|{ids[row]}|eda|{k}")), ()) for row, _, k in requests]

    return propose


def backtranslation_proposer(translator: BackTranslator) -> Proposer:
    def propose(captions, ids, requests):
        return [(text, ()) for text in translator([captions[row] for row, _, _ in requests], request_names(ids, requests))]

    return propose

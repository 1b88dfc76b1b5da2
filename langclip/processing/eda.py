"""The rewriting baselines of LaCLIP's ablation: EDA and back-translation.

EDA (Wei & Zou, 2019) applies one of four operations to a caption, lower-cased and
reduced to letters, digits and spaces as in the EDA code. With l words and the paper's
default rates alpha = 0.1, n = max(1, int(alpha * l)):

- synonym replacement: n distinct non-stop words, each replaced (every occurrence) by a synonym;
- random insertion: n times, a synonym of a random word is inserted at a random position;
- random swap: n times, two random positions are swapped;
- random deletion: each word is dropped with probability p = 0.1 (one word is always kept).

Synonyms come from a small built-in table of caption vocabulary (WordNet is not available
offline) or a user-given JSON ``{word: [synonym, ...]}``.

Back-translation sends a caption through a text-generation model to another language and
back (transformers 5 has no translation pipeline: translation is prompted).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence

from .generation import TextGenerator
from .icl import parse_completion

STOP_WORDS = frozenset(
    "a an the and or but of on in at to for from by with without into onto over under near next is are was were "
    "be been being it its this that these those there here some his her their our your my i you he she we they "
    "as up down out off very just than then also".split()
)

_SYNONYM_GROUPS = [
    "man guy gentleman", "woman lady", "child kid youngster", "children kids", "person individual",
    "people persons folks", "dog puppy pooch", "cat kitten kitty", "car automobile vehicle", "street road",
    "picture photo photograph image", "big large huge", "small little tiny", "standing posing", "sitting seated",
    "walking strolling", "running jogging", "beautiful pretty lovely", "house home", "field meadow",
    "table desk", "plate dish", "cup mug", "sea ocean", "shore coast beach", "hill slope", "rock stone",
    "bike bicycle", "boat ship vessel", "road path", "city town", "building structure", "forest woods",
    "sky heavens", "view scene", "holding carrying", "looking gazing", "playing frolicking", "eating dining",
    "night evening", "red crimson", "white pale", "old aged vintage", "new modern", "food meal", "top summit",
]
BUILTIN_SYNONYMS: dict[str, list[str]] = {
    word: [other for other in group.split() if other != word] for group in _SYNONYM_GROUPS for word in group.split()
}


def load_synonyms(path: str | os.PathLike) -> dict[str, list[str]]:
    """A synonym table from JSON ``{word: [synonym, ...]}``; a bad entry raises naming the file and word."""
    with open(path, encoding="utf-8") as f:
        table = json.load(f)
    if not isinstance(table, dict):
        raise ValueError(f"{path}: expected a JSON object {{word: [synonym, ...]}}")
    for word, synonyms in table.items():
        if not isinstance(synonyms, list) or not all(isinstance(s, str) and s.strip() for s in synonyms):
            raise ValueError(f"{path}: synonyms of {word!r} must be a list of non-empty strings")
    return {
        word.lower(): [s.lower() for s in synonyms if s.lower() != word.lower()] for word, synonyms in table.items()
    }


def eda_words(text: str) -> list[str]:
    """EDA's preprocessing: lower-case, keep letters, digits, apostrophes and spaces, split."""
    return re.sub(r"[^a-z0-9' ]", " ", text.lower()).split()


def num_changes(alpha: float, words: Sequence[str]) -> int:
    """EDA's n = max(1, int(alpha * l))."""
    return max(1, int(alpha * len(words)))


def synonym_replacement(words: list[str], n: int, synonyms: Mapping[str, Sequence[str]], rng) -> list[str]:
    candidates = sorted({w for w in words if w not in STOP_WORDS and synonyms.get(w)})
    rng.shuffle(candidates)
    replaced = {word: rng.choice(synonyms[word]) for word in candidates[:n]}
    return [replaced.get(word, word) for word in words]


def random_insertion(words: list[str], n: int, synonyms: Mapping[str, Sequence[str]], rng) -> list[str]:
    words = list(words)
    for _ in range(n):
        with_synonyms = [w for w in words if synonyms.get(w)]
        if not with_synonyms:
            break
        words.insert(rng.randint(0, len(words)), rng.choice(synonyms[rng.choice(with_synonyms)]))
    return words


def random_swap(words: list[str], n: int, rng) -> list[str]:
    words = list(words)
    if len(words) < 2:
        return words
    for _ in range(n):
        i, j = rng.sample(range(len(words)), 2)
        words[i], words[j] = words[j], words[i]
    return words


def random_deletion(words: list[str], p: float, rng) -> list[str]:
    if len(words) <= 1:
        return list(words)
    kept = [word for word in words if rng.random() > p]
    return kept or [rng.choice(words)]


class EDA:
    """One EDA augmentation per call: an operation drawn uniformly, at the paper's default rates."""

    OPERATIONS = ("synonym_replacement", "random_insertion", "random_swap", "random_deletion")

    def __init__(
        self,
        synonyms: Mapping[str, Sequence[str]] | None = None,
        alpha_sr: float = 0.1,
        alpha_ri: float = 0.1,
        alpha_rs: float = 0.1,
        p_rd: float = 0.1,
    ):
        self.synonyms = BUILTIN_SYNONYMS if synonyms is None else synonyms
        self.alpha_sr, self.alpha_ri, self.alpha_rs, self.p_rd = alpha_sr, alpha_ri, alpha_rs, p_rd

    def apply(self, operation: str, words: list[str], rng) -> list[str]:
        if operation == "synonym_replacement":
            return synonym_replacement(words, num_changes(self.alpha_sr, words), self.synonyms, rng)
        if operation == "random_insertion":
            return random_insertion(words, num_changes(self.alpha_ri, words), self.synonyms, rng)
        if operation == "random_swap":
            return random_swap(words, num_changes(self.alpha_rs, words), rng)
        if operation == "random_deletion":
            return random_deletion(words, self.p_rd, rng)
        raise ValueError(f"unknown EDA operation {operation!r}; expected one of {self.OPERATIONS}")

    def __call__(self, caption: str, rng) -> str:
        """An augmented caption; ``rng`` (a `random.Random`) picks the operation and drives it."""
        return " ".join(self.apply(rng.choice(self.OPERATIONS), eda_words(caption), rng))


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

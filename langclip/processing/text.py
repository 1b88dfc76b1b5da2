"""Text transforms on single captions: LaCLIP's aug_T, CLIPS' partial captions, and EDA.

**aug_T** (LaCLIP): draw uniformly from [caption] + rewrites; a draw with fewer than two
words falls back to the caption. It adds no compute to training: it only chooses which
string is tokenised.

**Partial captions** (CLIPS): the text encoder sees only part of a long synthetic caption,
at most K tokens (special tokens included). Four strategies act on the token ids:
``truncate`` (the first K - s content tokens, s special tokens framing the result),
``random`` (K - s tokens at random positions, order kept), ``block`` (K - s consecutive
tokens from a random start) and ``subcaption`` (randomly chosen whole sentences, in their
original order, joined and cut to K - s tokens; the paper's best, with K = 32); ``none``
keeps the whole caption, cut to the text tower's context. The result is framed with the
tokenizer's own special tokens, so the EOS that CLIP pools at is always there.

**EDA** (Wei & Zou, 2019; a baseline of LaCLIP's ablation) applies one of four operations
to a caption, lower-cased and reduced to letters, digits and spaces as in the EDA code.
With l words and the default rates alpha = 0.1, n = max(1, int(alpha * l)): synonym
replacement (n distinct non-stop words, every occurrence replaced by a synonym), random
insertion (n times, a synonym of a random word at a random position), random swap (n
times) and random deletion (each word with probability p = 0.1; one word is always kept).
Synonyms come from a small built-in table of caption vocabulary (WordNet is not available
offline) or a user-given JSON ``{word: [synonym, ...]}``.
"""

from __future__ import annotations

import json
import os
import random
import re
from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import DataError

MIN_WORDS = 2


def _usable(text: Any) -> bool:
    return isinstance(text, str) and len(text.split()) >= MIN_WORDS


def candidate_texts(caption: str, rewrites: Sequence[str] | None) -> list[str]:
    """[caption] + rewrites, with every rewrite of fewer than two words (or None) replaced by the caption.

    ``rewrites`` must be a list of strings: one string (whose characters would each be a "rewrite") or numbers are a
    `DataError`, not a silent fall-back to the caption."""
    if not isinstance(caption, str) or not caption.strip():
        raise ValueError(f"caption must be a non-empty string, got {caption!r}")
    if rewrites is not None and (not isinstance(rewrites, (list, tuple))
                                 or not all(text is None or isinstance(text, str) for text in rewrites)):
        raise DataError(f"the rewrites of caption {caption!r} are {rewrites!r}: the rewrites column must hold a list "
                        "of strings per row; store the rewrites as lists, or map the right column with "
                        "--rewrites-column")
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
            raise DataError(f"caption {caption!r} has {len(candidates)} texts (itself + rewrites), more than "
                            f"--num-texts {num_texts}; set --num-texts to 1 + the most rewrites of a row")
        candidates += [caption] * (num_texts - len(candidates))
        pick = self._rng(key).randrange(len(candidates))
        return [candidates[pick]] + candidates[:pick] + candidates[pick + 1 :]


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

"""Parsing and cleaning of what a language model wrote.

- `parse_completion`: the continuation after the final ``=>``, cut at the first newline
  and at any further ``=>``, stripped (LaCLIP's ICL format).
- `clean_rewrite`: a rewrite is kept, or rejected with a status in `STATUSES`.
- `clean_difference` (PC-CLIP): generations with code, markup, lists or non-ASCII text are
  dropped, follow-up questions, notes and pleasantries ("Q:", "I hope", "Let me know") cut,
  and texts under `MIN_CHARS` characters dropped.
"""

from __future__ import annotations

import re
from collections.abc import Sequence


ARROW = "=>"
STATUSES = ("ok", "empty", "junk", "too_short", "too_long", "echo_query", "echo_example", "pending")


_JUNK = re.compile(
    r"```|[{}<>\\|]"  # code blocks, braces, tags, escapes
    r"|[\ufffd\x00-\x08\x0b-\x1f\x7f]"  # undecodable bytes, control characters
    r"|\bhttps?://|\]\("  # links
    r"|^\s*(#|\*|-\s)"  # markdown headings and bullets
    r"|\bdef\s+\w+\s*\(|^\s*import\s+\w+|\w\(\)"  # code
    r"|(?P<char>[^\s\d])(?P=char){3,}"  # a character other than a digit repeated four or more times
    r"|\b(?P<word>\w+)(\W+(?P=word)\b){2,}",  # a word repeated three or more times in a row
    re.IGNORECASE,
)


def parse_completion(completion: str) -> str:
    """The rewrite in the text generated after the prompt: up to the first newline or ``=>``, stripped."""
    return completion.split("\n", 1)[0].split(ARROW, 1)[0].strip()


def _normalize(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def clean_rewrite(
    text: str, query: str, examples: Sequence[tuple[str, str]] = (), min_words: int = 2, max_words: int = 60
) -> tuple[str | None, str]:
    """(text, "ok") for a usable rewrite, else (None, reason) with reason one of `STATUSES`.

    Rejected: empty; junk (code, markup, links, undecodable or control characters, a
    non-digit character repeated four times, a word three times in a row); fewer than
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


MIN_CHARS = 60


# code fences, braces, function definitions, HTML tags, markdown headings/bullets/links
_CODE_OR_MARKUP = re.compile(r"```|[{}]|\bdef \w+\(|</?[a-zA-Z][^>]*>|^\s*(#+|[*-])\s|\[[^\]]*\]\(", re.MULTILINE)
# a numbered list: "1." / "2)" / "(3)" opening a line or following a sentence end
_NUMBERED_LIST = re.compile(r"(^|[.:;!?]\s+)\(?\d{1,2}[.)]\s", re.MULTILINE)
# what a chat model adds after the answer: follow-up questions, notes, pleasantries, a next Q/A turn
_FOLLOW_UP = re.compile(
    r"(\bQ:|\bQuestion:|\bNote:|\bNotes:|\bPlease note|\bI hope\b|\bHope this\b|\bLet me know|\bFeel free"
    r"|\bDo you\b|\bWould you\b|\bIs there anything|\bCan I help|\bIf you have any)",
    re.IGNORECASE,
)


def clean_difference(text: str, min_chars: int = MIN_CHARS) -> tuple[str | None, str]:
    """Filter one generation as PC-CLIP does: returns (difference or None, status).

    Cut at a follow-up question, note or pleasantry ("Q:", "Note:", "I hope", "Let me
    know", ...); reject non-ASCII text, code or markup, and numbered lists; reject what is
    left under ``min_chars`` characters. Status is ``ok`` or the rejection reason.
    """
    if not isinstance(text, str):
        return None, "empty"
    follow_up = _FOLLOW_UP.search(text)
    if follow_up:
        text = text[: follow_up.start()]
    if not text.strip():
        return None, "empty"
    if not text.isascii():
        return None, "non_ascii"
    if _CODE_OR_MARKUP.search(text):
        return None, "code_or_markup"
    if _NUMBERED_LIST.search(text):
        return None, "list"
    text = " ".join(text.split())
    if len(text) < min_chars:
        return None, "too_short"
    return text, "ok"

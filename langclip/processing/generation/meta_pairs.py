"""Meta input-output pools: the sources of in-context examples for LaCLIP's rewriting prompt.

A pool is a named source read from JSONL, one example per line, of one of two kinds:

- ``{"input": caption, "output": rewrite}``: a fixed pair (the chatbot and human sources);
- ``{"captions": [c1, c2, ...]}``: the captions of one image (the COCO source); a prompt
  takes two distinct ones, the first as input and the second as output.

`MetaPool.sample(k, rng)` draws k distinct lines. The package ships ``chatgpt``, ``bard``
and ``human`` pools of 18 pairs each; they were written for this project to illustrate
each style and are not the paper's pools. ``coco`` pools are built from a COCO captions
file (``captions_train2017.json``); `chatbot_pool` asks a chat model for new pairs with
the paper's chatbot prompt.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import transformers

from ...errors import ConfigError, DataError
from ..loading import check_utf8
from .backends import TextGenerator, build_generator, row_seed
from .filters import clean_rewrite, parse_completion
from .prompts import CHATBOT_PROMPT

SHIPPED_DIR = Path(__file__).with_name("pools")
SHIPPED_POOLS = ("chatgpt", "bard", "human")


@dataclass(frozen=True)
class MetaPool:
    """A named pool of examples: ``kind`` is "pairs" (fixed input, output) or "captions" (one image each)."""

    name: str
    kind: str
    items: tuple[tuple[str, ...], ...]

    def check_size(self, num_examples: int) -> None:
        if len(self.items) < num_examples:
            unit = "pairs" if self.kind == "pairs" else "images"
            raise ValueError(
                f"pool {self.name!r} has {len(self.items)} {unit} "
                f"but each prompt needs {num_examples} distinct examples"
            )

    def sample(self, num_examples: int, rng) -> list[tuple[str, str]]:
        """``num_examples`` distinct examples (input, output), drawn with ``rng`` (a `random.Random`)."""
        self.check_size(num_examples)
        picked = rng.sample(self.items, num_examples)
        return [item if self.kind == "pairs" else tuple(rng.sample(item, 2)) for item in picked]

    def save(self, path: str | os.PathLike) -> None:
        with open(path, "w", encoding="utf-8") as f:
            for item in self.items:
                line = {"input": item[0], "output": item[1]} if self.kind == "pairs" else {"captions": list(item)}
                f.write(json.dumps(line, ensure_ascii=False) + "\n")


def _is_text(value) -> bool:
    return isinstance(value, str) and bool(value.strip())


def read_pool(path: str | os.PathLike, name: str | None = None) -> MetaPool:
    """A pool from a JSONL file; a bad line raises a `DataError` naming the file and line."""
    path = Path(path)
    kinds, items = set(), []
    check_utf8(path, "meta-pair pool")
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"{where}: not valid JSON ({err.msg})") from None
            if isinstance(record, dict) and _is_text(record.get("input")) and _is_text(record.get("output")):
                kinds.add("pairs")
                items.append((record["input"].strip(), record["output"].strip()))
            elif isinstance(record, dict) and isinstance(record.get("captions"), list):
                captions = tuple(dict.fromkeys(c.strip() for c in record["captions"] if _is_text(c)))
                if len(captions) < 2:
                    raise DataError(f"{where}: 'captions' needs at least two distinct non-empty strings")
                kinds.add("captions")
                items.append(captions)
            else:
                raise DataError(
                    f'{where}: expected {{"input": str, "output": str}} or {{"captions": [str, ...]}}, '
                    f"got {line.strip()[:80]}"
                )
    if not items:
        raise DataError(f"{path}: the pool is empty")
    if len(kinds) > 1:
        raise DataError(f"{path}: mixes input/output pairs and caption lists; use one kind per file")
    return MetaPool(name or path.stem, kinds.pop(), tuple(items))


def coco_pool(annotation_file: str | os.PathLike, name: str = "coco") -> MetaPool:
    """A "captions" pool from a COCO captions file: one item per image with two or more distinct captions."""
    check_utf8(annotation_file, "COCO captions file")
    with open(annotation_file, encoding="utf-8") as f:
        try:
            data = json.load(f)
        except json.JSONDecodeError as err:
            raise DataError(f"{annotation_file}: not valid JSON at line {err.lineno}, column {err.colno} ({err.msg}); "
                            "expected a COCO captions file (captions_train2017.json layout)") from None
    if not isinstance(data, dict) or not isinstance(data.get("annotations"), list):
        raise DataError(f"{annotation_file}: not a COCO captions file (no 'annotations' list)")
    images = data.get("images", [])
    for index, image in enumerate(images if isinstance(images, list) else [None]):
        if not isinstance(image, dict) or "id" not in image:
            raise DataError(f"{annotation_file}: images[{index}] needs an 'id' ('images' is a list of objects)")
    known = {image["id"] for image in images} or None
    captions = defaultdict(dict)
    for index, annotation in enumerate(data["annotations"]):
        if not (isinstance(annotation, dict) and isinstance(annotation.get("image_id"), (int, str))
                and _is_text(annotation.get("caption"))):
            raise DataError(f"{annotation_file}: annotations[{index}] needs an 'image_id' and a non-empty 'caption'")
        if known is None or annotation["image_id"] in known:
            captions[annotation["image_id"]][" ".join(annotation["caption"].split())] = None
    items = tuple(tuple(caps) for _, caps in sorted(captions.items(), key=lambda kv: str(kv[0])) if len(caps) >= 2)
    if not items:
        raise DataError(f"{annotation_file}: no image has two distinct captions")
    return MetaPool(name, "captions", items)


def load_pool(spec: str) -> MetaPool:
    """A pool from a spec: a shipped name (``chatgpt``, ``bard``, ``human``), a path, or ``name=path``.

    A ``.json`` path is read as a COCO captions file, anything else as a JSONL pool.
    """
    name, sep, path = spec.partition("=")
    if not sep:
        name, path = None, spec
        if spec in SHIPPED_POOLS:
            return read_pool(SHIPPED_DIR / f"{spec}.jsonl")
    if not Path(path).is_file():
        raise FileNotFoundError(f"meta-pair source {spec!r}: no shipped pool {SHIPPED_POOLS} and no file {path!r}")
    if path.endswith(".json"):
        return coco_pool(path, name or "coco")
    return read_pool(path, name)


def chatbot_pool(
    captions, generator, name: str = "chatbot", prompt: str = CHATBOT_PROMPT, seed: int = 0
) -> tuple[MetaPool, dict]:
    """Pairs (caption, chat model's rewrite) made with the paper's chatbot prompt.

    ``generator`` is a backend of `backends`: a `TextGenerator` applies its tokenizer's chat
    template when it has one; an `EndpointGenerator` with ``chat=True`` leaves that to the
    server. Each request's seed derives from (seed, caption). Rewrites are cleaned with
    `clean_rewrite`; rejected ones (and failed requests, "pending") are dropped and counted.
    Returns (pool, {status: count}).
    """
    tokenizer = generator.pipe.tokenizer if isinstance(generator, TextGenerator) else None
    requests = [f"{prompt} {caption}" for caption in captions]
    if tokenizer is not None and tokenizer.chat_template:
        requests = [
            tokenizer.apply_chat_template([{"role": "user", "content": r}], tokenize=False, add_generation_prompt=True)
            for r in requests
        ]
    elif not getattr(generator, "chat", False):
        requests = [f"{r}\n" for r in requests]
    seeds = [row_seed(seed, "chatbot", caption) for caption in captions]
    counts, items = defaultdict(int), []
    for caption, completion in zip(captions, generator(requests, [f"caption {c!r}" for c in captions], seeds)):
        if completion is None:
            counts["pending"] += 1
            continue
        text, status = clean_rewrite(parse_completion(completion.lstrip()), caption)
        counts[status] += 1
        if text is not None:
            items.append((caption, text))
    if not items:
        raise ValueError(f"the chat model wrote no usable rewrite of {len(captions)} captions: {dict(counts)}")
    return MetaPool(name, "pairs", tuple(items)), dict(counts)


def main(args) -> int:
    if bool(args.coco) == bool(args.model):
        raise ConfigError("give exactly one of --coco (a COCO captions file) and --model (a chat model)")
    if args.coco:
        pool = coco_pool(args.coco, args.name or "coco")
    else:
        if not args.captions:
            raise ConfigError("--model needs --captions: the captions the chat model rewrites")
        from ..loading import load_captions

        captions = load_captions(args.captions, caption_column=args.caption_column)
        captions = captions.select(range(min(args.num_pairs, len(captions))))[args.caption_column]
        transformers.set_seed(args.seed)
        pool, counts = chatbot_pool(captions, build_generator(args), args.name or "chatbot", args.prompt, args.seed)
        print(f"chat model rewrites: {counts}")
    pool.save(args.output)
    print(f"wrote {len(pool.items)} {pool.kind} to {args.output} (pool {pool.name!r})")
    return 0

"""PC-CLIP data: image pairs, the comparative prompt, the filter, and the `langclip differences` job.

An output row is ``(id_a, id_b, difference)``: ``difference`` says how image a differs
visually from image b. The job samples pairs of an image-caption dataset (at random,
within a class or across classes), prompts a text-generation pipeline with the two
captions and filters each generation (`clean_difference`); it runs on the rewriting job's
machinery (`generation.TextGenerator`, `generation.ChunkedMapJob`: sharded, resumable by
chunk, merged with an exact id check).

Output folder: the kept rows as a dataset (`datasets.load_from_disk`),
``difference_summary.json`` (pairs, kept, rejections by reason, settings) and ``README.md``
(dataset card).
"""

from __future__ import annotations

import json
import random
import shutil
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

from datasets import Dataset

from ...hub_cards.push import add_push_arguments, push_folder
from ..loading import check_captions, load_captions
from .backends import TextGenerator
from .filters import MIN_CHARS, clean_difference
from .job import ChunkedMapJob, process_state, resolve_shard
from .prompts import DIFFERENCE_PROMPT, build_difference_prompt

PAIRINGS = ("random", "within-class", "across-class")
OUTPUT_COLUMNS = ("id_a", "id_b", "difference")
SUMMARY_FILE = "difference_summary.json"


def sample_pairs(
    ids: Sequence[str],
    num_pairs: int,
    pairing: str = "random",
    labels: Sequence | None = None,
    seed: int = 0,
) -> list[tuple[str, str]]:
    """Ordered pairs (a, b) of distinct images; ``within-class``/``across-class`` need ``labels``."""
    if pairing not in PAIRINGS:
        raise ValueError(f"pairing must be one of {PAIRINGS}, got {pairing!r}")
    if len(set(ids)) != len(ids):
        raise ValueError("image ids must be unique")
    if len(ids) < 2:
        raise ValueError(f"need at least 2 images to pair, got {len(ids)}")
    if pairing != "random":
        if labels is None or len(labels) != len(ids):
            raise ValueError(f"pairing {pairing!r} needs one label per image")
        by_label: dict = {}
        for image_id, label in zip(ids, labels):
            by_label.setdefault(label, []).append(image_id)
        label_of = dict(zip(ids, labels))
        if pairing == "within-class" and all(len(group) < 2 for group in by_label.values()):
            raise ValueError("within-class pairing needs a class with at least 2 images")
        if pairing == "across-class" and len(by_label) < 2:
            raise ValueError("across-class pairing needs at least 2 classes")
    rng = random.Random(seed)
    pairs = []
    while len(pairs) < num_pairs:
        a = rng.choice(ids)
        if pairing == "random":
            candidates = ids
        elif pairing == "within-class":
            candidates = by_label[label_of[a]]
        else:
            candidates = [i for label, group in by_label.items() if label != label_of[a] for i in group]
        b = rng.choice(candidates)
        if a != b:
            pairs.append((a, b))
    return pairs


def check_difference_rows(rows, known_ids) -> None:
    """Raise a ValueError naming the first bad row: unknown ids, a self-pair, or an empty difference."""
    known_ids = set(known_ids)
    for index, row in enumerate(rows):
        for column in ("id_a", "id_b", "difference"):
            if column not in row:
                raise ValueError(f"difference row {index} has no {column!r} column")
        for column in ("id_a", "id_b"):
            if row[column] not in known_ids:
                raise ValueError(f"difference row {index}: {column}={row[column]!r} is not an id of the image dataset")
        if row["id_a"] == row["id_b"]:
            raise ValueError(f"difference row {index} pairs image {row['id_a']!r} with itself")
        if not isinstance(row["difference"], str) or not row["difference"].strip():
            raise ValueError(f"difference row {index} ({row['id_a']!r}, {row['id_b']!r}) has an empty difference text")


def pair_dataset(
    captions: Dataset,
    num_pairs: int,
    pairing: str = "random",
    label_column: str | None = None,
    seed: int = 0,
    caption_column: str = "caption",
    id_column: str = "id",
) -> Dataset:
    """`sample_pairs` over a checked caption dataset: one row per pair with ``pair`` (its index,
    the job's row id), ``id_a``, ``id_b``, ``caption_a``, ``caption_b``."""
    check_captions(captions, caption_column, id_column)
    labels = None
    if pairing != "random":
        if not label_column or label_column not in captions.column_names:
            raise ValueError(
                f"pairing {pairing!r} needs a label column: --label-column {label_column!r} is not in the input "
                f"(columns: {captions.column_names})"
            )
        labels = captions[label_column]
    ids = [str(i) for i in captions[id_column]]
    caption_of = dict(zip(ids, captions[caption_column]))
    pairs = sample_pairs(ids, num_pairs, pairing, labels, seed)
    return Dataset.from_dict({
        "pair": [str(i) for i in range(len(pairs))],
        "id_a": [a for a, _ in pairs],
        "id_b": [b for _, b in pairs],
        "caption_a": [caption_of[a] for a, _ in pairs],
        "caption_b": [caption_of[b] for _, b in pairs],
    })


class DifferenceWriter:
    """The batched map function: the filtered difference text (None if rejected) and its status per pair.

    ``generate(prompts, names)`` returns one continuation per prompt (a `TextGenerator`).
    """

    def __init__(self, generate: Callable, template: str = DIFFERENCE_PROMPT, min_chars: int = MIN_CHARS):
        self.generate = generate
        self.template = template
        self.min_chars = min_chars

    def __call__(self, batch: dict) -> dict:
        pairs = list(zip(batch["id_a"], batch["id_b"]))
        prompts = [build_difference_prompt(a, b, self.template) for a, b in zip(batch["caption_a"], batch["caption_b"])]
        names = [f"pair ({a!r}, {b!r})" for a, b in pairs]
        cleaned = [clean_difference(text, self.min_chars) for text in self.generate(prompts, names)]
        return {"difference": [text for text, _ in cleaned], "difference_status": [status for _, status in cleaned]}


def summarize(dataset: Dataset) -> dict:
    """Pairs prompted, kept, and rejected by reason."""
    counts = Counter(dataset["difference_status"])
    return {
        "pairs": len(dataset),
        "kept": counts["ok"],
        "rejected": {reason: n for reason, n in sorted(counts.items()) if reason != "ok"},
    }


def format_summary(summary: dict) -> str:
    lines = [f"{summary['pairs']} pairs, {summary['kept']} difference texts kept"]
    lines += [f"  rejected ({reason}): {n}" for reason, n in summary["rejected"].items()]
    return "\n".join(lines)


def dataset_card(summary: dict, config: dict) -> str:
    """The dataset card (README.md) of a differences output."""
    return f"""---
tags:
- pc-clip
- pairwise-differences
- synthetic
---

# Pairwise difference descriptions

How image `id_a` differs visually from image `id_b`, written by `{config['model']}` from the two
captions of `{config['input']}` (`langclip differences`, pairing `{config['pairing']}`), as in PC-CLIP
("Finetuning CLIP to Reason about Pairwise Differences", Sam et al., TMLR 2025). Generations with
code, markup or non-ASCII text, or under {config['min_chars']} characters after cutting follow-up
questions and notes, were dropped.

Columns: `id_a`, `id_b` (ids of the source dataset), `difference`.

{format_summary(summary)}

Prompt template:

```
{config['template']}
```

Job settings:

```json
{json.dumps(config, indent=2, sort_keys=True)}
```
"""


def add_arguments(parser) -> None:
    parser.add_argument(
        "input", help="Image-caption data: Hub dataset id, dataset folder, CSV, .txt (one caption per line), JSON(L), "
        "Parquet. Only captions, ids (and labels) are read."
    )  # fmt: skip
    parser.add_argument("--model", required=True, help="Causal LM (Hub id or folder) that writes the differences.")
    parser.add_argument("--output-dir", required=True, help="Output folder (dataset, summary, card).")
    parser.add_argument("--split", default="train", help="Split to read from a Hub id or dataset folder.")
    parser.add_argument("--caption-column", default="caption", help="Column holding the captions.")
    parser.add_argument(
        "--id-column", default="id", help="Column holding a stable image id (added from the row index if absent)."
    )
    parser.add_argument("--pairing", choices=PAIRINGS, default="random", help="How images are paired.")
    parser.add_argument(
        "--label-column", default=None, help="Class label column (needed by within-class and across-class pairing)."
    )
    parser.add_argument("--num-pairs", type=int, default=None, help="Pairs to sample (default: one per image).")
    parser.add_argument(
        "--template", default=DIFFERENCE_PROMPT, help="Prompt template with {caption_a} and {caption_b}."
    )
    parser.add_argument(
        "--min-chars", type=int, default=MIN_CHARS, help="Drop difference texts shorter than this (PC-CLIP: 60)."
    )
    parser.add_argument("--seed", type=int, default=0, help="Seed for pair sampling and generation.")
    parser.add_argument("--batch-size", type=int, default=16, help="Generation batch size.")
    parser.add_argument("--chunk-size", type=int, default=1024, help="Pairs per saved chunk (the unit of resume).")
    parser.add_argument("--max-new-tokens", type=int, default=77, help="Generation length limit.")
    parser.add_argument("--temperature", type=float, default=0.9, help="Sampling temperature.")
    parser.add_argument("--top-p", type=float, default=0.95, help="Nucleus sampling top-p.")
    parser.add_argument("--dtype", default="auto", help="Model dtype: auto, float32, bfloat16, float16.")
    parser.add_argument(
        "--device", default=None, help="Device, e.g. cpu, cuda:0 (default: this process's accelerate device)."
    )
    parser.add_argument(
        "--num-shards", type=int, default=None,
        help="Split the pairs into N shards (default: one per accelerate process).",
    )  # fmt: skip
    parser.add_argument("--shard-index", type=int, default=None, help="The shard this run takes (with --num-shards).")
    parser.add_argument(
        "--work-dir", default=None, help="Chunk folder (default: OUTPUT_DIR/work; removed after the merge)."
    )
    add_push_arguments(parser)


def job_config(args) -> dict:
    """The arguments that determine the output (a restart must repeat them)."""
    keys = (
        "input", "model", "split", "caption_column", "id_column", "pairing", "label_column", "num_pairs", "template",
        "min_chars", "seed", "batch_size", "max_new_tokens", "temperature", "top_p", "dtype",
    )  # fmt: skip
    return {key: getattr(args, key) for key in keys}


def main(args) -> int:
    num_shards, shard_index = resolve_shard(args.num_shards, args.shard_index)
    output = Path(args.output_dir)
    config = job_config(args)
    summary_path = output / SUMMARY_FILE
    if summary_path.exists() and json.loads(summary_path.read_text()).get("config") == config:
        print(f"{output} already holds this job's output; nothing to do")
    else:
        captions = load_captions(args.input, args.caption_column, args.id_column, args.split)
        pairs = pair_dataset(
            captions, args.num_pairs or len(captions), args.pairing, args.label_column, args.seed,
            args.caption_column, args.id_column,
        )  # fmt: skip
        generate = dict(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p)
        generator = TextGenerator.from_pretrained(args.model, args.device, args.dtype, args.batch_size, **generate)
        job = ChunkedMapJob(
            DifferenceWriter(generator, args.template, args.min_chars), args.work_dir or output / "work", config,
            args.chunk_size, 4 * args.batch_size, num_shards, args.seed, id_column="pair", unit="pair",
        )  # fmt: skip
        merged = job.run_and_merge(pairs, shard_index)
        if merged is None:
            return 0
        summary = {**summarize(merged), "config": config}
        kept = merged.filter(lambda status: status == "ok", input_columns="difference_status", keep_in_memory=True)
        kept.select_columns(list(OUTPUT_COLUMNS)).save_to_disk(str(output))
        (output / "README.md").write_text(dataset_card(summary, config), encoding="utf-8")
        summary_path.write_text(json.dumps(summary, indent=2))
        shutil.rmtree(job.work_dir)
    if not process_state().is_main_process:
        return 0
    summary = json.loads(summary_path.read_text())
    print(format_summary(summary))
    print(f"saved to {output} (summary: {summary_path})")
    if args.push_to_hub:
        url = push_folder(output, args.push_to_hub, repo_type="dataset", private=args.hub_private,
                          revision=args.hub_revision)  # fmt: skip
        print(f"pushed to the Hub: {url}")
    return 0

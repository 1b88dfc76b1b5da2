"""PC-CLIP data: image pairs, the comparative prompt, the filter, and the `langclip differences` job.

An output row is ``(id_a, id_b, difference)``: ``difference`` says how image a differs
visually from image b. The job samples distinct pairs of an image-caption dataset without
replacement (at random, within a class or across classes), prompts a generation backend
(`backends`: in-process transformers or an inference server) with the two captions and
filters each generation (`clean_difference`); it runs on the rewriting job's machinery
(`job.ChunkedMapJob`: sharded, fingerprinted resume, pending rows redone, merged with an
exact id check). The kept rows are checked with `langclip.processing.difference_rows.check_difference_rows`
(a repeated pair is an error) before they are saved.

Output folder: the kept rows as a dataset (`datasets.load_from_disk`),
``difference_summary.json`` (pairs, kept, rejections by reason, settings) and ``README.md``
(dataset card).
"""

from __future__ import annotations

import json
import random
import shutil
import string
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

from datasets import Dataset

from ...errors import ConfigError, check_at_least_one
from ...hub_cards.cards import DatasetCardFields, dataset_card
from ...hub_cards.push import check_hub_access, push_dataset
from ..difference_rows import check_difference_rows
from ..loading import check_captions, load_captions
from .arguments import PAIRINGS
from .backends import build_generator, generation_config, row_seed
from .filters import MIN_CHARS, clean_difference
from .job import PENDING, ChunkedMapJob, done_before, process_state, resolve_shard
from .prompts import DIFFERENCE_PROMPT, build_difference_prompt

OUTPUT_COLUMNS = ("id_a", "id_b", "difference")
SUMMARY_FILE = "difference_summary.json"


def sample_pairs(
    ids: Sequence[str],
    num_pairs: int,
    pairing: str = "random",
    labels: Sequence | None = None,
    seed: int = 0,
) -> list[tuple[str, str]]:
    """``num_pairs`` distinct ordered pairs (a, b) of distinct images, drawn without replacement.

    ``within-class``/``across-class`` need ``labels``. Raises a ValueError when more pairs
    are asked than exist. A small request is drawn by rejection (a set of pairs seen); one
    for more than half of the pairs samples the list of all pairs.
    """
    if pairing not in PAIRINGS:
        raise ValueError(f"pairing must be one of {PAIRINGS}, got {pairing!r}")
    if len(set(ids)) != len(ids):
        raise ValueError("image ids must be unique")
    if len(ids) < 2:
        raise ValueError(f"need at least 2 images to pair, got {len(ids)}")
    ids = list(ids)
    label_of, by_label = None, {}
    if pairing != "random":
        if labels is None or len(labels) != len(ids):
            raise ValueError(f"pairing {pairing!r} needs one label per image")
        for image_id, label in zip(ids, labels):
            by_label.setdefault(label, []).append(image_id)
        label_of = dict(zip(ids, labels))
        if pairing == "within-class" and all(len(group) < 2 for group in by_label.values()):
            raise ValueError("within-class pairing needs a class with at least 2 images")
        if pairing == "across-class" and len(by_label) < 2:
            raise ValueError("across-class pairing needs at least 2 classes")

    def partners(a: str) -> list[str]:
        if pairing == "random":
            return ids
        if pairing == "within-class":
            return by_label[label_of[a]]
        return [i for label, group in by_label.items() if label != label_of[a] for i in group]

    sizes = Counter(label_of.values()) if label_of else None
    if pairing == "random":
        total = len(ids) * (len(ids) - 1)
    elif pairing == "within-class":
        total = sum(n * (n - 1) for n in sizes.values())
    else:
        total = sum(n * (len(ids) - n) for n in sizes.values())
    if num_pairs > total:
        raise ValueError(f"{num_pairs} pairs asked, but {len(ids)} images give only {total} distinct {pairing} pairs")
    rng = random.Random(seed)
    if 2 * num_pairs > total:
        return rng.sample([(a, b) for a in ids for b in partners(a) if a != b], num_pairs)
    pairs, seen = [], set()
    while len(pairs) < num_pairs:
        a = rng.choice(ids)
        b = rng.choice(partners(a))
        if a != b and (a, b) not in seen:
            seen.add((a, b))
            pairs.append((a, b))
    return pairs


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
    """The batched map function: the filtered difference text (None if rejected), its status and
    whether it is pending (the request failed) per pair.

    ``generate(prompts, names, seeds)`` returns one continuation (None: failed) per prompt (a
    backend of `backends`); each pair's sampling seed derives from (``seed``, pair id).
    """

    def __init__(self, generate: Callable, template: str = DIFFERENCE_PROMPT, min_chars: int = MIN_CHARS,
                 seed: int = 0):
        self.generate = generate
        self.template = template
        self.min_chars = min_chars
        self.seed = seed

    def __call__(self, batch: dict) -> dict:
        pairs = list(zip(batch["id_a"], batch["id_b"]))
        prompts = [build_difference_prompt(a, b, self.template) for a, b in zip(batch["caption_a"], batch["caption_b"])]
        names = [f"pair ({a!r}, {b!r})" for a, b in pairs]
        seeds = [row_seed(self.seed, "difference", pair) for pair in batch["pair"]]
        columns = {"difference": [], "difference_status": [], PENDING: []}
        for text in self.generate(prompts, names, seeds):
            cleaned, status = (None, "pending") if text is None else clean_difference(text, self.min_chars)
            columns["difference"].append(cleaned)
            columns["difference_status"].append(status)
            columns[PENDING].append(text is None)
        return columns


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


def card_fields(summary: dict, config: dict) -> DatasetCardFields:
    """What the dataset card (README.md) of a differences output says: the `summarize` counts and the job's
    settings, with the prompt template as its prompt."""
    rejected = summary["pairs"] - summary["kept"]
    return DatasetCardFields("Pairwise difference descriptions", [config["input"]], config["model"],
                             config["template"], {"llm": summary["pairs"]}, {"llm": rejected}, summary["kept"],
                             generation=config, kind="differences", reasons=summary["rejected"])


def job_config(args) -> dict:
    """The arguments that determine the output (a restart must repeat them); the seed is the job's."""
    keys = ("input", "split", "caption_column", "id_column", "pairing", "label_column", "num_pairs", "template",
            "min_chars")
    return {**{key: getattr(args, key) for key in keys}, **generation_config(args)}


def check_template(template: str) -> None:
    """A `ConfigError` unless ``template`` is a format string whose only fields are ``{caption_a}`` and ``{caption_b}``,
    both present (``{{``/``}}`` stand for literal braces)."""
    try:
        fields = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as error:
        raise ConfigError(f"--template {template!r} is not a format string ({error}); write literal braces as "
                          "{{ and }}") from None
    if fields != {"caption_a", "caption_b"}:
        raise ConfigError(f"--template must name {{caption_a}} and {{caption_b}} and no other field; it has "
                          f"{sorted(fields) or 'none'}")


def main(args) -> int:
    check_at_least_one(args, "num_pairs")
    check_template(args.template)
    if args.push_to_hub:  # the token, repo and permissions, before the job rather than after it
        check_hub_access(args.push_to_hub, repo_type="dataset")
    num_shards, shard_index = resolve_shard(args.num_shards, args.shard_index)
    output = Path(args.output_dir)
    config = job_config(args)
    summary_path = output / SUMMARY_FILE
    captions = load_captions(args.input, args.caption_column, args.id_column, args.split)
    pairs = pair_dataset(
        captions, args.num_pairs or len(captions), args.pairing, args.label_column, args.seed,
        args.caption_column, args.id_column,
    )
    job = ChunkedMapJob(
        None, args.work_dir or output / "work", config, args.chunk_size, 4 * args.batch_size, num_shards, args.seed,
        id_column="pair", unit="pair", input_columns=["pair", "id_a", "id_b", "caption_a", "caption_b"],
    )
    if done_before(job, pairs, output, summary_path, args.restart):
        print(f"{output} already holds this job's output; nothing to do")
    else:
        generator = build_generator(args)
        job.function = DifferenceWriter(generator, args.template, args.min_chars, args.seed)
        merged = job.run_and_merge(pairs, shard_index)
        if merged is None:
            return 0
        summary = {**summarize(merged), "config": config, "job": job.state(pairs)}
        kept = merged.filter(lambda status: status == "ok", input_columns="difference_status", keep_in_memory=True)
        kept = kept.select_columns(list(OUTPUT_COLUMNS))
        check_difference_rows(kept, captions[args.id_column])
        kept.save_to_disk(str(output))
        (output / "README.md").write_text(str(dataset_card(card_fields(summary, config))), encoding="utf-8")
        summary_path.write_text(json.dumps(summary, indent=2))
        shutil.rmtree(job.work_dir)
    if not process_state().is_main_process:
        return 0
    summary = json.loads(summary_path.read_text())
    print(format_summary(summary))
    print(f"saved to {output} (summary: {summary_path})")
    if args.push_to_hub:
        url = push_dataset(output, args.push_to_hub, private=args.private, revision=args.revision)
        print(f"pushed to the Hub: {url}")
    return 0

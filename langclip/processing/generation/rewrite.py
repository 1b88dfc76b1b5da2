"""The caption rewriting job (`langclip rewrite`): k rewrites of every caption by every source.

Methods:

- ``llm`` (LaCLIP): the ICL prompt of `prompts.PromptBuilder` continued by a causal LM
  through a backend of `backends` (in-process transformers, or an OpenAI-compatible
  inference server), parsed with `filters.parse_completion`;
- ``eda``: one EDA augmentation per rewrite (`text.EDA`);
- ``backtranslation``: to another language and back (`baselines.BackTranslator`: a seq2seq
  translation pipeline, Marian by default, or a prompted causal LM).

Every rewrite goes through `filters.clean_rewrite`; a rejected one falls back to the original
caption, and ``rewrite_status`` records "ok" or the reason. The output adds three list
columns to each row: ``rewrites``, ``rewrite_sources`` and ``rewrite_status``, ordered by
source, then k. The job runs as a `job.ChunkedMapJob`: sharded by process, resumable by
chunk with a fingerprinted state (other settings or an edited input is an error until
``--restart``), failed requests left pending and redone on the next run, merged with an
exact check of the ids.

Output folder: the merged dataset (`datasets.load_from_disk`), ``rewrite_summary.json``
(fallback counts), ``README.md`` (dataset card) and, with ``--text-files``, LaCLIP's layout
``texts/<source>.txt`` (``<source>_<k>.txt`` when k > 1), line-aligned with the input.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path

from datasets import Dataset, load_from_disk
from datasets.fingerprint import Hasher

from ...errors import ConfigError, check_at_least_one
from ...hub_cards.cards import DatasetCardFields, dataset_card
from ...hub_cards.push import check_hub_access, push_dataset
from ..loading import check_captions, load_captions
from ..shards import write_sidecars
from ..text import EDA, load_synonyms
from .arguments import MARIAN_BACKWARD, MARIAN_FORWARD
from .backends import Proposer, build_generator, generation_config, request_names, row_seed
from .baselines import (
    BackTranslator,
    PromptedTranslation,
    Seq2SeqTranslation,
    backtranslation_proposer,
    eda_proposer,
    is_seq2seq,
)
from .filters import clean_rewrite, parse_completion
from .job import PENDING, ChunkedMapJob, done_before, process_state, resolve_shard
from .meta_pairs import load_pool
from .prompts import PromptBuilder

OUTPUT_COLUMNS = ("rewrites", "rewrite_sources", "rewrite_status")
SUMMARY_FILE = "rewrite_summary.json"


class Rewriter:
    """The batched map function: ``num_rewrites`` cleaned rewrites per caption per source.

    A request the proposer could not serve (None) marks its row `job.PENDING`.
    """

    def __init__(
        self,
        propose: Proposer,
        sources: Sequence[str],
        num_rewrites: int = 1,
        caption_column: str = "caption",
        id_column: str = "id",
        min_words: int = 2,
        max_words: int = 60,
    ):
        self.propose = propose
        self.sources = list(sources)
        self.num_rewrites = num_rewrites
        self.caption_column = caption_column
        self.id_column = id_column
        self.min_words = min_words
        self.max_words = max_words

    def __call__(self, batch: dict) -> dict:
        captions, ids = batch[self.caption_column], [str(i) for i in batch[self.id_column]]
        requests = [
            (row, source, k) for row in range(len(ids)) for source in self.sources for k in range(self.num_rewrites)
        ]
        columns = {name: [[] for _ in ids] for name in OUTPUT_COLUMNS}
        columns[PENDING] = [False] * len(ids)
        for (row, source, _), (text, examples) in zip(requests, self.propose(captions, ids, requests)):
            if text is None:  # the request failed after retries: the row is redone on resume
                cleaned, status = None, "pending"
                columns[PENDING][row] = True
            else:
                cleaned, status = clean_rewrite(text, captions[row], examples, self.min_words, self.max_words)
            columns["rewrites"][row].append(captions[row] if cleaned is None else cleaned)
            columns["rewrite_sources"][row].append(source)
            columns["rewrite_status"][row].append(status)
        return columns


def llm_proposer(builder: PromptBuilder, generator) -> Proposer:
    """LaCLIP: ICL prompts continued by the LM (a backend of `backends`), parsed; each request's
    sampling seed derives from (seed, caption id, source, k) like its examples."""

    def propose(captions, ids, requests):
        prompts = [builder(captions[row], ids[row], source, k) for row, source, k in requests]
        seeds = [row_seed(builder.seed, ids[row], source, k) for row, source, k in requests]
        completions = generator([prompt for prompt, _ in prompts], request_names(ids, requests), seeds)
        return [
            (None if text is None else parse_completion(text), examples)
            for text, (_, examples) in zip(completions, prompts)
        ]

    return propose


def summarize(dataset: Dataset) -> dict:
    """Row and rewrite counts, fallbacks by reason, and status counts by source."""
    by_source = defaultdict(Counter)
    for batch in dataset.select_columns(["rewrite_sources", "rewrite_status"]).iter(10_000):
        for sources, statuses in zip(batch["rewrite_sources"], batch["rewrite_status"]):
            for source, status in zip(sources, statuses):
                by_source[source][status] += 1
    total = sum(by_source.values(), Counter())
    return {
        "rows": len(dataset),
        "rewrites": sum(total.values()),
        "ok": total["ok"],
        "fallbacks": {reason: n for reason, n in sorted(total.items()) if reason != "ok"},
        "by_source": {source: dict(sorted(counts.items())) for source, counts in by_source.items()},
    }


def format_summary(summary: dict) -> str:
    lines = [f"{summary['rows']} captions, {summary['rewrites']} rewrites, {summary['ok']} ok"]
    lines += [f"  fallback to the original ({reason}): {n}" for reason, n in summary["fallbacks"].items()]
    return "\n".join(lines)


def write_text_files(dataset: Dataset, out_dir: str | Path) -> list[Path]:
    """LaCLIP's layout: one file per (source, k), line i holding row i's rewrite (newlines become spaces)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    sources = dataset[0]["rewrite_sources"]
    per_source = Counter(sources)
    names, seen = [], Counter()
    for source in sources:
        names.append(f"{source}.txt" if per_source[source] == 1 else f"{source}_{seen[source]}.txt")
        seen[source] += 1
    files = [open(out_dir / name, "w", encoding="utf-8") for name in names]
    try:
        for batch in dataset.select_columns(["rewrites"]).iter(10_000):
            for rewrites in batch["rewrites"]:
                for f, text in zip(files, rewrites):
                    f.write(" ".join(text.split()) + "\n")
    finally:
        for f in files:
            f.close()
    return [out_dir / name for name in names]


def card_fields(summary: dict, config: dict, prompt: str) -> DatasetCardFields:
    """What the dataset card (README.md) of a rewrite output says: the `summarize` counts, the job's settings
    and ``prompt`` (one prompt as sent, or the baseline's settings)."""
    per_source = {source: sum(counts.values()) for source, counts in summary["by_source"].items()}
    fallbacks = {source: n - summary["by_source"][source].get("ok", 0) for source, n in per_source.items()}
    llm = config.get("model") or config["method"]
    return DatasetCardFields("Rewritten captions", [config["input"]], llm, prompt, per_source, fallbacks,
                             summary["rows"], generation=config, kind="rewrites", reasons=summary["fallbacks"])


def job_config(args) -> dict:
    """The arguments that determine the output (a restart must repeat them), with a fingerprint
    of each meta-pair source's content; the seed is the job's."""
    keys = (
        "input", "split", "caption_column", "id_column", "method", "sources", "num_rewrites", "num_examples", "task",
        "separator", "min_words", "max_words", "synonyms", "eda_alpha", "backward_model", "language",
        "source_lang_code", "pivot_lang_code",
    )
    config = {key: getattr(args, key) for key in keys}
    if args.method == "llm":  # a pool file edited since the job started changes the prompts
        config["source_fingerprints"] = {spec: Hasher.hash(load_pool(spec).items) for spec in args.sources}
    return {**config, **(generation_config(args) if args.method != "eda" else {"model": None})}


def translation_leg(args, model: str, source: str, target: str, codes: tuple):
    """One back-translation leg: a `Seq2SeqTranslation` for an encoder-decoder model, else a prompted causal LM."""
    if args.backend == "transformers" and is_seq2seq(model):
        src_lang, tgt_lang = codes
        return Seq2SeqTranslation.from_pretrained(
            model, args.device, args.dtype, args.batch_size, src_lang=src_lang, tgt_lang=tgt_lang,
            max_new_tokens=args.max_new_tokens,
        )
    return PromptedTranslation(build_generator(args, model), source, target)


def build_rewriter(args, example: tuple[str, str]) -> tuple[Rewriter, str]:
    """The `Rewriter` for ``--method`` and its options, and what the dataset card shows as its
    prompt: the ICL prompt of ``example`` (caption, id), or the baseline's settings."""
    if args.method == "llm":
        if not args.model:
            raise ConfigError("--method llm needs --model: a causal LM's Hub id or folder, or the endpoint's model name")
        pools = {pool.name: pool for pool in map(load_pool, args.sources)}
        builder = PromptBuilder(pools, args.num_examples, args.task, args.separator, args.seed)
        propose, sources = llm_proposer(builder, build_generator(args)), list(pools)
        prompt = builder(*example, sources[0])[0]
    elif args.method == "eda":
        synonyms = load_synonyms(args.synonyms) if args.synonyms else None
        propose, sources = eda_proposer(EDA(synonyms, *[args.eda_alpha] * 4), args.seed), ["eda"]
        prompt = f"EDA (synonym replacement, random insertion, swap, deletion), alpha {args.eda_alpha}"
    else:
        forward_model = args.model or MARIAN_FORWARD
        backward_model = args.backward_model or args.model or MARIAN_BACKWARD
        codes = (args.source_lang_code, args.pivot_lang_code)
        forward = translation_leg(args, forward_model, "English", args.language, codes)
        backward = translation_leg(args, backward_model, args.language, "English", codes[::-1])
        propose, sources = backtranslation_proposer(BackTranslator(forward, backward)), ["backtranslation"]
        prompt = f"back-translation: {forward_model} then {backward_model}"
    rewriter = Rewriter(
        propose, sources, args.num_rewrites, args.caption_column, args.id_column, args.min_words, args.max_words
    )
    return rewriter, prompt


def main(args) -> int:
    check_at_least_one(args, "num_rewrites")
    if args.push_to_hub:  # the token, repo and permissions, before the job rather than after it
        check_hub_access(args.push_to_hub, repo_type="dataset")
    num_shards, shard_index = resolve_shard(args.num_shards, args.shard_index)
    output = Path(args.output_dir)
    config = job_config(args)
    summary_path = output / SUMMARY_FILE
    state = process_state()
    dataset = load_captions(args.input, args.caption_column, args.id_column, args.split)
    check_captions(dataset, args.caption_column, args.id_column)
    job = ChunkedMapJob(
        None, args.work_dir or output / "work", config, args.chunk_size, 4 * args.batch_size, num_shards, args.seed,
        args.id_column, unit="caption", input_columns=[args.id_column, args.caption_column],
    )
    if done_before(job, dataset, output, summary_path, args.restart):
        print(f"{output} already holds this job's output; nothing to do")
        merged = load_from_disk(str(output))
    else:
        job.function, prompt = build_rewriter(args, (dataset[0][args.caption_column], str(dataset[0][args.id_column])))
        merged = job.run_and_merge(dataset, shard_index)
        if merged is None:
            return 0
        merged.save_to_disk(str(output))
        summary = {**summarize(merged), "config": config, "job": job.state(dataset)}
        card = dataset_card(card_fields(summary, config, prompt))
        (output / "README.md").write_text(str(card), encoding="utf-8")
        summary_path.write_text(json.dumps(summary, indent=2))
        shutil.rmtree(job.work_dir)
        merged = load_from_disk(str(output))
    if not state.is_main_process:
        return 0
    summary = json.loads(summary_path.read_text())
    print(format_summary(summary))
    print(f"saved to {output} (summary: {summary_path})")
    if "shard" in merged.column_names:  # the input was tar shards: rewrites go next to them, keyed by sample
        paths = write_sidecars(merged)
        print(f"wrote {len(paths)} sidecars ({paths[0]}, ...): `langclip train` on the shards joins them")
    if args.text_files:
        paths = write_text_files(merged, output / "texts")
        print(f"wrote {len(paths)} text files to {output / 'texts'}")
    if args.push_to_hub:
        url = push_dataset(output, args.push_to_hub, private=args.private, revision=args.revision)
        print(f"pushed to the Hub: {url}")
    return 0

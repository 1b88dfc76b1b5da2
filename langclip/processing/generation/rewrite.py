"""The caption rewriting job (`langclip rewrite`): k rewrites of every caption by every source.

Methods:

- ``llm`` (LaCLIP): the ICL prompt of `icl.PromptBuilder` continued by a causal LM through
  a text-generation pipeline, parsed with `icl.parse_completion`;
- ``eda``: one EDA augmentation per rewrite (`eda.EDA`);
- ``backtranslation``: to another language and back (`eda.BackTranslator`).

Every rewrite goes through `icl.clean_rewrite`; a rejected one falls back to the original
caption, and ``rewrite_status`` records "ok" or the reason. The output adds three list
columns to each row: ``rewrites``, ``rewrite_sources`` and ``rewrite_status``, ordered by
source, then k. The job runs as a `generation.ChunkedMapJob`: sharded by process,
resumable by chunk, merged with an exact check of the ids.

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
from huggingface_hub import DatasetCard

from ..loading import check_captions, load_captions, write_sidecars
from ..text import EDA, load_synonyms
from .backends import Proposer, TextGenerator, request_names
from .baselines import BackTranslator, backtranslation_proposer, eda_proposer
from .filters import clean_rewrite, parse_completion
from .job import ChunkedMapJob, process_state, resolve_shard
from .meta_pairs import load_pool
from .prompts import OFFICIAL_TASK, PromptBuilder

OUTPUT_COLUMNS = ("rewrites", "rewrite_sources", "rewrite_status")
SUMMARY_FILE = "rewrite_summary.json"


class Rewriter:
    """The batched map function: ``num_rewrites`` cleaned rewrites per caption per source."""

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
        for (row, source, _), (text, examples) in zip(requests, self.propose(captions, ids, requests)):
            cleaned, status = clean_rewrite(text, captions[row], examples, self.min_words, self.max_words)
            columns["rewrites"][row].append(captions[row] if cleaned is None else cleaned)
            columns["rewrite_sources"][row].append(source)
            columns["rewrite_status"][row].append(status)
        return columns


def llm_proposer(builder: PromptBuilder, generator: TextGenerator) -> Proposer:
    """LaCLIP: ICL prompts continued by the LM, parsed."""

    def propose(captions, ids, requests):
        prompts = [builder(captions[row], ids[row], source, k) for row, source, k in requests]
        completions = generator([prompt for prompt, _ in prompts], request_names(ids, requests))
        return [(parse_completion(text), examples) for text, (_, examples) in zip(completions, prompts)]

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


def dataset_card(summary: dict, config: dict) -> str:
    """The dataset card (README.md) of a rewrite output."""
    rows = "\n".join(
        f"| {source} | {counts.get('ok', 0)} | {sum(counts.values())} |" for source, counts in summary["by_source"].items()
    )
    return f"""---
tags:
- laclip
- caption-rewriting
- synthetic
---

# Rewritten captions

Captions rewritten by `langclip rewrite` (method `{config['method']}`, model `{config.get('model')}`),
{config['num_rewrites']} rewrite(s) per caption per source, as in LaCLIP ("Improving CLIP Training
with Language Rewrites", Fan et al., NeurIPS 2023).

Columns added to each input row: `rewrites` (list of strings), `rewrite_sources` (which
meta-pair source or baseline wrote each) and `rewrite_status` (`ok`, or why the rewrite was
rejected; a rejected rewrite is replaced by the original caption).

{format_summary(summary)}

| source | ok | rewrites |
| --- | --- | --- |
{rows}

Job settings:

```json
{json.dumps(config, indent=2, sort_keys=True)}
```
"""


def add_arguments(parser) -> None:
    parser.add_argument(
        "input", help="Captions: Hub dataset id, dataset folder, LaCLIP CSV, .txt (one per line), JSON(L), Parquet, "
        "or .tar shards (a folder or glob; writes <shard>.rewrites.parquet sidecars next to them).",
    )
    parser.add_argument("--output-dir", required=True, help="Output folder (dataset, summary, card, texts/).")
    parser.add_argument("--split", default="train", help="Split to read from a Hub id or dataset folder.")
    parser.add_argument("--caption-column", default="caption", help="Column holding the captions.")
    parser.add_argument(
        "--id-column", default="id", help="Column holding a stable row id (added from the row index if absent)."
    )
    parser.add_argument(
        "--method", choices=("llm", "eda", "backtranslation"), default="llm",
        help="Rewriter: LaCLIP's ICL LLM, or a baseline.",
    )
    parser.add_argument(
        "--model", help="Causal LM (Hub id or folder) for llm, or the forward translator for backtranslation."
    )
    parser.add_argument(
        "--sources", nargs="+", default=["chatgpt", "bard", "human"],
        help="llm: meta-pair sources: shipped names (chatgpt, bard, human), JSONL pools, COCO captions .json, "
        "or name=path.",
    )  # fmt: skip
    parser.add_argument("--num-rewrites", type=int, default=1, help="Rewrites per caption per source (k).")
    parser.add_argument("--num-examples", type=int, default=3, help="llm: in-context examples per prompt.")
    parser.add_argument("--task", default=OFFICIAL_TASK, help="llm: the prompt's task sentence.")
    parser.add_argument(
        "--separator", default="\n\n", help="llm: text between the prompt's blocks (default: a blank line)."
    )
    parser.add_argument("--seed", type=int, default=0, help="Seed for examples, EDA and sampling.")
    parser.add_argument("--batch-size", type=int, default=16, help="Generation batch size.")
    parser.add_argument("--chunk-size", type=int, default=1024, help="Captions per saved chunk (the unit of resume).")
    parser.add_argument("--max-new-tokens", type=int, default=77, help="Generation length limit.")
    parser.add_argument("--temperature", type=float, default=0.9, help="Sampling temperature.")
    parser.add_argument("--top-p", type=float, default=0.95, help="Nucleus sampling top-p.")
    parser.add_argument("--dtype", default="auto", help="Model dtype: auto, float32, bfloat16, float16.")
    parser.add_argument(
        "--device", default=None, help="Device, e.g. cpu, cuda:0 (default: this process's accelerate device)."
    )
    parser.add_argument("--min-words", type=int, default=2, help="Rewrites with fewer words fall back to the original.")
    parser.add_argument("--max-words", type=int, default=60, help="Rewrites with more words fall back to the original.")
    parser.add_argument(
        "--num-shards", type=int, default=None,
        help="Split the input into N shards (default: one per accelerate process).",
    )
    parser.add_argument("--shard-index", type=int, default=None, help="The shard this run takes (with --num-shards).")
    parser.add_argument(
        "--work-dir", default=None, help="Chunk folder (default: OUTPUT_DIR/work; removed after the merge)."
    )
    parser.add_argument("--text-files", action="store_true", help="Also write LaCLIP's texts/<source>.txt files.")
    parser.add_argument(
        "--push-to-hub", metavar="REPO_ID", default=None, help="Push the dataset and its card to this Hub repo."
    )
    parser.add_argument("--private", action="store_true", help="With --push-to-hub: make the repo private.")
    parser.add_argument(
        "--synonyms", default=None, help="eda: JSON synonym table {word: [synonyms]} (default: built-in)."
    )
    parser.add_argument(
        "--eda-alpha", type=float, default=0.1, help="eda: rate of all four operations (the EDA paper's default)."
    )
    parser.add_argument(
        "--backward-model", default=None, help="backtranslation: model for the way back (default: --model)."
    )
    parser.add_argument("--language", default="French", help="backtranslation: pivot language.")


def job_config(args) -> dict:
    """The arguments that determine the output (a restart must repeat them)."""
    keys = (
        "input", "split", "caption_column", "id_column", "method", "model", "sources", "num_rewrites", "num_examples",
        "task", "separator", "batch_size", "max_new_tokens", "temperature", "top_p", "dtype", "min_words",
        "max_words", "synonyms", "eda_alpha", "backward_model", "language",
    )  # fmt: skip
    return {key: getattr(args, key) for key in keys}


def build_rewriter(args) -> Rewriter:
    """The `Rewriter` for ``--method`` and its options."""
    generate = dict(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p)

    def load(model: str) -> TextGenerator:
        return TextGenerator.from_pretrained(model, args.device, args.dtype, args.batch_size, **generate)

    if args.method == "llm":
        if not args.model:
            raise SystemExit("--method llm needs --model")
        pools = {pool.name: pool for pool in map(load_pool, args.sources)}
        builder = PromptBuilder(pools, args.num_examples, args.task, args.separator, args.seed)
        propose, sources = llm_proposer(builder, load(args.model)), list(pools)
    elif args.method == "eda":
        synonyms = load_synonyms(args.synonyms) if args.synonyms else None
        propose, sources = eda_proposer(EDA(synonyms, *[args.eda_alpha] * 4), args.seed), ["eda"]
    else:
        if not args.model:
            raise SystemExit("--method backtranslation needs --model")
        forward = load(args.model)
        backward = forward if args.backward_model in (None, args.model) else load(args.backward_model)
        propose = backtranslation_proposer(BackTranslator(forward, backward, args.language))
        sources = ["backtranslation"]
    return Rewriter(
        propose, sources, args.num_rewrites, args.caption_column, args.id_column, args.min_words, args.max_words
    )


def main(args) -> int:
    num_shards, shard_index = resolve_shard(args.num_shards, args.shard_index)
    output = Path(args.output_dir)
    config = job_config(args)
    summary_path = output / SUMMARY_FILE
    state = process_state()
    if summary_path.exists() and json.loads(summary_path.read_text()).get("config") == config:
        print(f"{output} already holds this job's output; nothing to do")
        merged = load_from_disk(str(output))
    else:
        dataset = load_captions(args.input, args.caption_column, args.id_column, args.split)
        check_captions(dataset, args.caption_column, args.id_column)
        rewriter = build_rewriter(args)
        job = ChunkedMapJob(
            rewriter, args.work_dir or output / "work", config, args.chunk_size, 4 * args.batch_size,
            num_shards, args.seed, args.id_column, unit="caption",
        )  # fmt: skip
        merged = job.run_and_merge(dataset, shard_index)
        if merged is None:
            return 0
        merged.save_to_disk(str(output))
        summary = {**summarize(merged), "config": config}
        (output / "README.md").write_text(dataset_card(summary, config), encoding="utf-8")
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
        push_to_hub(merged, args.push_to_hub, (output / "README.md").read_text(encoding="utf-8"), args.private)
    return 0


def push_to_hub(dataset: Dataset, repo_id: str, card: str, private: bool = False) -> None:
    """Push the dataset, then its card (honours HF_ENDPOINT and HF_TOKEN)."""
    dataset.push_to_hub(repo_id, private=private)
    DatasetCard(card).push_to_hub(repo_id)
    print(f"pushed to the Hub: {repo_id}")

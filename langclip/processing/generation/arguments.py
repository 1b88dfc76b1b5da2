"""The flags of the generation commands: `langclip meta-pairs`, `rewrite` and `differences`.

They live here, apart from the commands' modules (`meta_pairs`, `rewrite`, `differences`, each with its ``main``),
because this module imports no torch, transformers or datasets: `langclip <command> --help` answers at once.
`add_generation_arguments` (model, backend, batching, sampling, seed) and `add_job_arguments` (chunks, shards,
restart) are the flags the three share. The choices and default models that the commands' modules also use
(`BACKENDS`, `MARIAN_FORWARD` and `MARIAN_BACKWARD`, `PAIRINGS`) are defined here; the prompt texts in `prompts`.
"""

from __future__ import annotations

from ...hub_cards.command import add_push_arguments
from .filters import MIN_CHARS
from .prompts import CHATBOT_PROMPT, DIFFERENCE_PROMPT, OFFICIAL_TASK

BACKENDS = ("transformers", "endpoint")
MARIAN_FORWARD, MARIAN_BACKWARD = "Helsinki-NLP/opus-mt-en-fr", "Helsinki-NLP/opus-mt-fr-en"
PAIRINGS = ("random", "within-class", "across-class")


def add_generation_arguments(parser, model_help: str, model_required: bool = False) -> None:
    """The generation flags of `rewrite`, `differences` and `meta-pairs`: model, backend, batching, sampling, seed."""
    group = parser.add_argument_group("generation")
    group.add_argument("--model", required=model_required, help=model_help)
    group.add_argument("--backend", choices=BACKENDS, default="transformers",
                       help="transformers: load --model in this process; endpoint: send requests to an "
                            "OpenAI-compatible server (vLLM, TGI, SGLang, llama.cpp, Ollama) at --base-url, --model "
                            "naming the served model.")
    group.add_argument("--seed", type=int, default=0, help="Seed for examples, pairs, EDA and sampling.")
    group.add_argument("--batch-size", type=int, default=16,
                       help="transformers: generation batch size; every backend: the job maps 4x this many rows at "
                            "a time.")
    group.add_argument("--max-new-tokens", type=int, default=77, help="Generation length limit.")
    group.add_argument("--temperature", type=float, default=0.9, help="Sampling temperature.")
    group.add_argument("--top-p", type=float, default=0.95, help="Nucleus sampling top-p.")
    group.add_argument("--dtype", default="auto", help="transformers: model dtype: auto, float32, bfloat16, float16.")
    group.add_argument("--device", default=None,
                       help="transformers: device, e.g. cpu, cuda:0 (default: this process's accelerate device).")
    group.add_argument("--base-url", default=None,
                       help="endpoint: the server's OpenAI API root, e.g. http://host:8000/v1.")
    group.add_argument("--api-key-env", default=None,
                       help="endpoint: name of the environment variable holding the API key (the key is never "
                            "printed).")
    group.add_argument("--chat", action="store_true",
                       help="endpoint: use /chat/completions (chat models) instead of /completions (base models, the "
                            "ICL prompt).")
    group.add_argument("--concurrency", type=int, default=16, help="endpoint: requests in flight at once.")
    group.add_argument("--timeout", type=float, default=120.0, help="endpoint: seconds allowed per request attempt.")
    group.add_argument("--max-retries", type=int, default=5,
                       help="endpoint: retries per request on 429, 5xx and connection errors, with exponential "
                            "backoff; a request still failing leaves its row pending for the next run.")
    group.add_argument(
        "--requests-per-second", type=float, default=None, help="endpoint: request-rate limit (default: none)."
    )


def add_job_arguments(parser, unit: str = "rows") -> None:
    """The chunking, sharding and restart flags every generation job shares."""
    parser.add_argument(
        "--chunk-size", type=int, default=1024, help=f"{unit.capitalize()} per saved chunk (the unit of resume)."
    )
    parser.add_argument("--num-shards", type=int, default=None,
                        help=f"Split the {unit} into N shards (default: one per accelerate process).")
    parser.add_argument("--shard-index", type=int, default=None, help="The shard this run takes (with --num-shards).")
    parser.add_argument(
        "--work-dir", default=None, help="Chunk folder (default: OUTPUT_DIR/work; removed after the merge)."
    )
    parser.add_argument("--restart", action="store_true",
                        help="Delete this job's finished chunks and output (all shards) and start over, e.g. after "
                             "editing the input.")


def add_meta_pairs_arguments(parser) -> None:
    parser.add_argument(
        "--coco", metavar="JSON", help="COCO captions annotation file (captions_train2017.json layout); or --model."
    )
    parser.add_argument("--captions", help="With --model: captions to rewrite (any input `langclip rewrite` reads).")
    parser.add_argument("--caption-column", default="caption", help="Caption column of --captions.")
    parser.add_argument("--num-pairs", type=int, default=64, help="With --model: rewrite the first N captions.")
    parser.add_argument("--prompt", default=CHATBOT_PROMPT, help="With --model: the instruction before each caption.")
    parser.add_argument("--name", default=None, help="Pool name (default: coco, or chatbot).")
    parser.add_argument("--output", required=True, help="Where to write the pool (JSONL).")
    add_generation_arguments(parser, "Chat model (Hub id or folder, or the served model) asked to rewrite --captions; "
                             "or --coco.")


def add_rewrite_arguments(parser) -> None:
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
        "--sources", nargs="+", default=["chatgpt", "bard", "human"],
        help="llm: meta-pair sources: shipped names (chatgpt, bard, human), JSONL pools, COCO captions .json, "
        "or name=path.",
    )
    parser.add_argument("--num-rewrites", type=int, default=1, help="Rewrites per caption per source (k).")
    parser.add_argument("--num-examples", type=int, default=3, help="llm: in-context examples per prompt.")
    parser.add_argument("--task", default=OFFICIAL_TASK, help="llm: the prompt's task sentence.")
    parser.add_argument(
        "--separator", default="\n\n", help="llm: text between the prompt's blocks (default: a blank line)."
    )
    parser.add_argument("--min-words", type=int, default=2, help="Rewrites with fewer words fall back to the original.")
    parser.add_argument("--max-words", type=int, default=60, help="Rewrites with more words fall back to the original.")
    parser.add_argument("--text-files", action="store_true", help="Also write LaCLIP's texts/<source>.txt files.")
    parser.add_argument(
        "--synonyms", default=None, help="eda: JSON synonym table {word: [synonyms]} (default: built-in)."
    )
    parser.add_argument(
        "--eda-alpha", type=float, default=0.1, help="eda: rate of all four operations (the EDA paper's default)."
    )
    parser.add_argument(
        "--backward-model", default=None,
        help=f"backtranslation: model for the way back (default: --model, or {MARIAN_BACKWARD} without --model).",
    )
    parser.add_argument(
        "--language", default="French",
        help="backtranslation with a causal LM: the pivot language's name in the prompt.",
    )
    parser.add_argument(
        "--source-lang-code", default=None,
        help="backtranslation with a multilingual seq2seq model (NLLB, M2M): the captions' language code, "
        "e.g. eng_Latn.",
    )
    parser.add_argument(
        "--pivot-lang-code", default=None,
        help="backtranslation with a multilingual seq2seq model (NLLB, M2M): the pivot language code, e.g. fra_Latn.",
    )
    add_generation_arguments(
        parser, f"llm: causal LM (Hub id or folder, or the served model with --backend endpoint); backtranslation: "
        f"the forward translator, a seq2seq translation model or a causal LM (default {MARIAN_FORWARD}).",
    )
    add_job_arguments(parser, unit="captions")
    add_push_arguments(parser)


def add_differences_arguments(parser) -> None:
    parser.add_argument(
        "input", help="Image-caption data: Hub dataset id, dataset folder, CSV, .txt (one caption per line), JSON(L), "
        "Parquet. Only captions, ids (and labels) are read."
    )
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
    parser.add_argument(
        "--num-pairs", type=int, default=None,
        help="Distinct pairs to sample, without replacement (default: one per image).",
    )
    parser.add_argument(
        "--template", default=DIFFERENCE_PROMPT, help="Prompt template with {caption_a} and {caption_b}."
    )
    parser.add_argument(
        "--min-chars", type=int, default=MIN_CHARS, help="Drop difference texts shorter than this (PC-CLIP: 60)."
    )
    add_generation_arguments(parser, "Causal LM (Hub id or folder, or the served model) that writes the differences.",
                             model_required=True)
    add_job_arguments(parser, unit="pairs")
    add_push_arguments(parser)

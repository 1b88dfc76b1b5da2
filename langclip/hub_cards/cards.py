"""Model and dataset cards: one producer each, `model_card` and `dataset_card`.

Model cards for langclip checkpoints carry YAML metadata with a `model-index` of eval results
(`records.eval_results`). `model_card` turns the checkpoint's config, the eval records and the
`ModelCardFields` (base model, datasets, training setup, method) into a `huggingface_hub.ModelCard`;
`ModelCard.load` / `metadata_load` read it back, results included. `repo_model_card` rebuilds a
card for the Hub repo it is pushed to.

Dataset cards, for caption datasets written by an LLM (`DatasetCardFields`), record where the
captions came from, which LLM wrote with which prompt, how many texts each source produced and
how many fell back to the original; the counts are also in the YAML metadata, so
`metadata_load` reads them back.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from huggingface_hub import DatasetCard, DatasetCardData, EvalResult, ModelCard, ModelCardData

from ..errors import DataError
from .methods import CITATIONS, METHODS
from .records import eval_notes, eval_results, merge_eval_results, result_key

# config.json's contrastive_loss (`modeling.losses.CONTRASTIVE_LOSSES`) -> what the card says made the model
LOSS_DESCRIPTIONS = {
    "softmax": "softmax (CLIP's symmetric cross-entropy)",
    "sigmoid": "sigmoid (SigLIP's pairwise sigmoid, learnable bias logit_bias)",
}

INTENDED_USE = """\
Research on vision-language models: zero-shot image classification, image-text retrieval and
image / text embeddings for downstream probes. The model inherits the biases of its web-scale
image-text data and of the language model that wrote its training captions; rewrites can add
details that are not in the image. It is not evaluated for, and should not be used in,
decisions about people (surveillance, face recognition, hiring) or any safety-critical setting.
Zero-shot accuracy depends strongly on the class names and templates used."""



def infer_method(config: Mapping) -> str:
    """The `METHODS` key for a checkpoint's config.json contents."""
    model_type = config.get("model_type", "clip")
    if model_type == "laclip":
        return "laclip-mt" if config.get("multi_positive") else "laclip"
    return model_type if model_type in METHODS else "clip"


# config.json options whose towers are not `transformers.CLIPModel`'s (`LaCLIPConfig`, `CLIPSConfig`): key, the
# default (plain CLIP), what the card says when the value differs.
NON_CLIP_OPTIONS = (
    ("vision_qk_norm", False, "QK-norm (a LayerNorm over each head's query and key) in every vision attention"),
    ("vision_pre_layernorm", True, "no LayerNorm before the vision blocks"),
    ("vision_pooling", "cls", "vision features pooled by the mean of the patch tokens"),
    ("text_attention", "causal", "bidirectional text attention"),
    ("text_pooling", "eos", "text features pooled at the last position"),
    ("text_last_token_id", None, "the released CLIPS token layout"),
)


def non_clip_options(config: Mapping) -> list[str]:
    """What in ``config`` (config.json contents) makes the towers differ from `transformers.CLIPModel`'s, in words."""
    return [text for key, default, text in NON_CLIP_OPTIONS if config.get(key, default) != default]


def _architecture(config: Mapping) -> dict[str, str]:
    vision, text = config.get("vision_config", {}), config.get("text_config", {})
    options = non_clip_options(config)
    return {
        "image tower": f"ViT, {vision.get('num_hidden_layers')} layers x {vision.get('hidden_size')} wide, "
        f"patch {vision.get('patch_size')}, {vision.get('image_size')} px"
        + (f", {vision.get('hidden_act')}, LayerNorm eps {vision.get('layer_norm_eps')}" if options else ""),
        **({"architecture": "not plain CLIP: " + "; ".join(options)} if options else {}),
        "text tower": f"{text.get('num_hidden_layers')} layers x {text.get('hidden_size')} wide, "
        f"context {text.get('max_position_embeddings')}",
        "embedding dim": str(config.get("projection_dim")),
    }


def _cell(value) -> str:
    """A table cell: plain strings as they are, anything else (or a string with a newline or ``|``) as JSON."""
    if isinstance(value, str) and "\n" not in value and "|" not in value:
        return value
    return json.dumps(value).replace("|", "\\|")


def _table(header: tuple[str, ...], rows: Iterable[Iterable]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


@dataclass
class ModelCardFields:
    """What a model card says besides the checkpoint's config and its eval records.

    ``training`` (e.g. the run's YAML config) is listed under "Training setup"; ``method`` (a `METHODS` key)
    defaults to `infer_method(config)`; ``results`` are earlier model-index results and ``notes`` their
    `records.eval_notes`, kept when a card is rebuilt (`repo_model_card`)."""

    base_model: str | None = None
    datasets: Sequence[str] = ()
    license: str = "apache-2.0"
    training: Mapping | None = None
    method: str | None = None
    results: Sequence[EvalResult] = ()
    notes: Mapping[str, str] | None = None


def model_card(config: Mapping, model_name: str, eval_records: Iterable[Mapping] = (), **fields) -> ModelCard:
    """A model card for a checkpoint whose config.json holds ``config``, named ``model_name`` (the Hub repo id).

    ``fields`` are those of `ModelCardFields`. The model-index holds its ``results`` merged with those of
    ``eval_records``; the body's table shows them with their notes. The contrastive loss row (and a
    ``siglip`` tag) comes from the config's ``contrastive_loss``. Method, training and notes are also kept
    in the metadata (``langclip``) for `repo_model_card`.
    """
    card = ModelCardFields(**fields)
    method = card.method or infer_method(config)
    if method not in METHODS:
        raise DataError(f"unknown method {method!r}; expected one of {', '.join(METHODS)}")
    loss = config.get("contrastive_loss", "softmax")
    if loss not in LOSS_DESCRIPTIONS:
        raise DataError(f"config.json: unknown contrastive_loss {loss!r}; "
                        f"expected one of {', '.join(LOSS_DESCRIPTIONS)}")
    eval_records = list(eval_records)
    results = merge_eval_results(list(card.results), eval_results(eval_records))
    notes = {**(card.notes or {}), **eval_notes(eval_records)}
    training = dict(card.training or {})
    data = ModelCardData(
        library_name="transformers",
        license=card.license,
        tags=["langclip", "clip", method, "zero-shot-image-classification"] + (["siglip"] if loss == "sigmoid" else []),
        datasets=list(card.datasets) or None,
        base_model=card.base_model,
        pipeline_tag="zero-shot-image-classification",
        model_name=model_name,
        eval_results=results or None,
        langclip={"method": method, "training": training, "notes": notes},
    )
    setup = {"method": METHODS[method].title, "contrastive loss": LOSS_DESCRIPTIONS[loss], **_architecture(config),
             **{k: _cell(v) for k, v in training.items()}}
    return ModelCard(f"---\n{data.to_yaml()}\n---\n{_model_card_body(model_name, method, setup, results, notes)}")


def _evaluation_table(results: Sequence[EvalResult], notes: Mapping[str, str]) -> str:
    if not results:
        return "Not evaluated yet: `langclip eval ... --push-to-hub` adds results here."
    return _table(
        ("task", "dataset", "split", "metric", "value", "note"),
        ((r.task_name, r.dataset_name, r.dataset_split, r.metric_type, f"{r.metric_value:.4f}",
          notes.get(result_key(r), "")) for r in results),
    )


def _clip_compatibility(setup: Mapping[str, str]) -> str:
    """The card's line on plain `transformers.CLIPModel`: it loads a standard checkpoint, not one whose architecture
    differs (``setup["architecture"]``, from `non_clip_options`)."""
    if "architecture" not in setup:
        return "The weights keep CLIP's names, so `transformers.CLIPModel.from_pretrained` loads them too."
    return ("**Not a plain CLIP architecture** (" + setup["architecture"].removeprefix("not plain CLIP: ") + "): "
            "load it with `AutoModel` and `trust_remote_code=True` (or langclip's class), not with "
            "`transformers.CLIPModel`, which lacks these modules: `CLIPModel.from_pretrained` still loads the "
            "folder, but its load report lists the weights it drops (e.g. `q_norm`/`k_norm`, UNEXPECTED) and the "
            "ones it initialises afresh (e.g. `pre_layrnorm`, MISSING), and its embeddings are wrong.")


def _model_card_body(model_name: str, method: str, setup: Mapping[str, str], results: Sequence[EvalResult],
                     notes: Mapping[str, str]) -> str:
    """The card's markdown: what the model is, usage, ``setup`` and the results table."""
    method_name, method_text = METHODS[method].title, METHODS[method].summary
    evaluation = _evaluation_table(results, notes)
    return f"""
# {model_name}

A {method_name} model trained with [langclip](https://github.com/langclip/langclip). {method_text}

## Usage

```python
from transformers import AutoModel, AutoProcessor

model = AutoModel.from_pretrained("{model_name}", trust_remote_code=True)  # or langclip's class after `import langclip`
processor = AutoProcessor.from_pretrained("{model_name}")
inputs = processor(text=["a photo of a dog", "a photo of a cat"], images=image, return_tensors="pt", padding=True)
probs = model(**inputs).logits_per_image.softmax(dim=-1)    # (images, texts)
```

or, in one line, `pipeline("zero-shot-image-classification", model="{model_name}", trust_remote_code=True)`.

{_clip_compatibility(setup)}

## Training setup

{_table(("setting", "value"), setup.items())}

## Evaluation

{evaluation}

## Intended use and limitations

{INTENDED_USE}

## Citation

```bibtex
{CITATIONS}
```
"""


def repo_model_card(
    card: ModelCard,
    config: Mapping,
    repo_id: str,
    eval_records: Iterable[Mapping] = (),
    base_model: str | None = None,
    datasets: Iterable[str] = (),
    license: str | None = None,
) -> ModelCard:
    """``card`` for the Hub repo ``repo_id``, with ``eval_records`` merged into its results.

    A langclip card (metadata ``langclip``) is rebuilt by `model_card` with the repo id as its
    name, its earlier results, notes, base model and datasets kept unless given; any other card
    keeps its text and gets the name and merged results in its metadata.
    """
    eval_records = list(eval_records)
    saved = card.data.to_dict().get("langclip")
    if not isinstance(saved, Mapping):
        card.data.eval_results = merge_eval_results(card.data.eval_results, eval_results(eval_records))
        card.data.model_name = repo_id
        return card
    return model_card(
        config, repo_id, eval_records, base_model=base_model or card.data.base_model,
        datasets=list(datasets) or card.data.datasets or (), license=license or card.data.license or "apache-2.0",
        training=saved.get("training"), method=saved.get("method"), results=card.data.eval_results or (),
        notes=saved.get("notes"),
    )


# what each kind of generated dataset says about itself: tags, metadata key, table header, description
DATASET_KINDS = {
    "rewrites": dict(
        tags=["langclip", "laclip", "synthetic-captions", "llm-rewrites", "caption-rewriting"],
        header=("source", "rewrites", "fell back to the original"),
        text="Image-text pairs from {sources} ({num_rows} rows), with every caption rewritten by `{llm}`, as in "
        "LaCLIP (\"Improving CLIP Training with Language Rewrites\", Fan et al., NeurIPS 2023). The `caption` column "
        "holds the original caption, `rewrites` the rewrites, `rewrite_sources` the source of each and "
        "`rewrite_status` `ok` or why the rewrite was rejected. A rejected rewrite (an empty or unusable "
        "generation) falls back to the original caption.",
    ),
    "differences": dict(
        tags=["langclip", "pc-clip", "pairwise-differences", "synthetic"],
        header=("source", "pairs prompted", "rejected"),
        text="How image `id_a` differs visually from image `id_b` (ids of {sources}), written by `{llm}` from the two "
        "captions, as in PC-CLIP (\"Finetuning CLIP to Reason about Pairwise Differences\", Sam et al., TMLR 2025); "
        "{num_rows} pairs kept. Columns: `id_a`, `id_b`, `difference`. Generations with code, markup, lists or "
        "non-ASCII text, or too short after cutting follow-up questions and notes, were dropped.",
    ),
}



@dataclass
class DatasetCardFields:
    """What the card of a dataset an LLM wrote says: caption rewrites (``kind="rewrites"``, LaCLIP) or
    pairwise difference texts (``kind="differences"``, PC-CLIP); the keys of `langclip push --card-info`.

    ``prompt`` is a prompt as sent (e.g. the in-context prompt: task sentence, examples,
    ``query =>``); ``rewrites_per_source`` and ``fallbacks`` count, per source, the texts
    written and those rejected (replaced by the original caption for rewrites, dropped for
    differences); ``reasons`` counts the rejections by reason; ``generation`` lists the
    job's settings.
    """

    pretty_name: str
    source_datasets: Sequence[str]
    llm: str
    prompt: str
    rewrites_per_source: Mapping[str, int]
    fallbacks: Mapping[str, int]
    num_rows: int
    license: str = "other"
    generation: Mapping = field(default_factory=dict)
    kind: str = "rewrites"
    reasons: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self):
        if self.kind not in DATASET_KINDS:
            raise DataError(f"dataset card kind must be one of {sorted(DATASET_KINDS)}, got {self.kind!r}")
        unknown = set(self.fallbacks) - set(self.rewrites_per_source)
        if unknown:
            raise DataError(f"fallback counts name sources without rewrites: {', '.join(sorted(unknown))}")
        self.source_datasets = list(self.source_datasets)
        self.generation, self.reasons = dict(self.generation or {}), dict(self.reasons or {})


def dataset_card(fields: DatasetCardFields) -> DatasetCard:
    """The card of a dataset an LLM wrote; the counts are also in the YAML metadata under ``fields.kind``."""
    spec = DATASET_KINDS[fields.kind]
    per_source, fallbacks = fields.rewrites_per_source, fields.fallbacks
    data = DatasetCardData(
        pretty_name=fields.pretty_name,
        license=fields.license,
        source_datasets=fields.source_datasets,
        task_categories=["zero-shot-image-classification", "image-to-text"],
        tags=spec["tags"],
        **{
            fields.kind: {
                "llm": fields.llm,
                "rows": fields.num_rows,
                "per_source": dict(per_source),
                "fallbacks": {source: fallbacks.get(source, 0) for source in per_source},
                "reasons": fields.reasons,
                "generation": fields.generation,
            }
        },
    )
    return DatasetCard(f"---\n{data.to_yaml()}\n---\n{_dataset_card_body(fields)}")


def _dataset_card_body(fields: DatasetCardFields) -> str:
    """The card's markdown: what the texts are, the counts, the prompt and the settings."""
    spec = DATASET_KINDS[fields.kind]
    pretty_name, prompt, reasons, generation = fields.pretty_name, fields.prompt, fields.reasons, fields.generation
    counts = _table(spec["header"], ((source, count, fields.fallbacks.get(source, 0))
                                     for source, count in fields.rewrites_per_source.items()))
    by_reason = _table(("rejected because", "count"), sorted(reasons.items())) if reasons else ""
    settings = _table(("setting", "value"), ((k, _cell(v)) for k, v in generation.items())) if generation else "-"
    text = spec["text"].format(sources=", ".join(fields.source_datasets) or "the source data",
                               num_rows=fields.num_rows, llm=fields.llm)
    return f"""
# {pretty_name}

{text}

## Counts

{counts}

{by_reason}

## Prompt

```text
{prompt.rstrip()}
```

## Generation

{settings}

## Citation

```bibtex
{CITATIONS}
```
"""

"""Model and dataset cards: one producer each, `model_card` and `dataset_card`.

Model cards for langclip checkpoints carry YAML metadata with a `model-index` of eval results.

An eval record is what `langclip eval` writes (one JSON object per run):

    {"task": "zero-shot", "dataset": {"id": "imagenet-1k", "name": "ImageNet", "split": "validation"},
     "metrics": {"top1": 0.48, "top5": 0.75}, ...}

`model_card` turns the checkpoint's config, the records and the training setup into a
`huggingface_hub.ModelCard`; `ModelCard.load` / `metadata_load` read it back, results included.

Dataset cards, for caption datasets written by an LLM, record where the captions came from,
which LLM wrote with which prompt, how many texts each source produced and how many fell
back to the original; the counts are also in the YAML metadata, so `metadata_load` reads them back.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path

from huggingface_hub import DatasetCard, DatasetCardData, EvalResult, ModelCard, ModelCardData
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id

# langclip eval task -> (model-index task type, task name)
TASKS = {
    "zero-shot": ("zero-shot-image-classification", "Zero-shot image classification"),
    "retrieval": ("zero-shot-image-retrieval", "Zero-shot image-text retrieval"),
    "few-shot": ("few-shot-image-classification", "Few-shot image classification"),
    "linear-probe": ("image-classification", "Linear probe image classification"),
    "difference-classification": ("zero-shot-classification", "Image difference classification (PC-CLIP)"),
}

# eval record statistics that describe a metric rather than measure the model: shown beside it, not in the model-index
SIDE_STATISTICS = {"ci95": "95% interval ±{:.4f}", "validation_accuracy": "validation accuracy {:.4f} (chose C)"}

METHODS = {
    "clip": ("CLIP", "Contrastive image-text pre-training on the original captions."),
    "laclip": (
        "LaCLIP",
        "Every caption is rewritten several times by an LLM through in-context learning; each training "
        "step pairs the image with a text drawn uniformly from the original caption and its rewrites.",
    ),
    "laclip-mt": (
        "LaCLIP-MT",
        "LaCLIP's rewritten captions with the multi-text loss: the image is contrasted against all of "
        "its texts, each against the same-index texts of the other images.",
    ),
    "clips": (
        "CLIPS",
        "The text encoder sees a partial synthetic caption, and an autoregressive captioner conditioned "
        "on the image and the web caption predicts the full synthetic caption.",
    ),
    "pcclip": (
        "PC-CLIP",
        "CLIP fine-tuned so that differences of image embeddings align with LLM-written descriptions "
        "of how two images differ.",
    ),
}

# config.json's contrastive_loss -> what the card says made the model
CONTRASTIVE_LOSSES = {
    "softmax": "softmax (CLIP's symmetric cross-entropy)",
    "sigmoid": "sigmoid (SigLIP's pairwise sigmoid, learnable bias logit_bias)",
}

CITATIONS = """\
@inproceedings{fan2023laclip,
  title={Improving CLIP Training with Language Rewrites},
  author={Fan, Lijie and Krishnan, Dilip and Isola, Phillip and Katabi, Dina and Tian, Yonglong},
  booktitle={Advances in Neural Information Processing Systems},
  year={2023}
}

@article{liu2024clips,
  title={CLIPS: An Enhanced CLIP Framework for Learning with Synthetic Captions},
  author={Liu, Yanqing and Li, Xianhang and Wang, Zeyu and Zhao, Bingchen and Xie, Cihang},
  journal={arXiv preprint arXiv:2411.16828},
  year={2024}
}

@article{sam2025pcclip,
  title={Finetuning CLIP to Reason about Pairwise Differences},
  author={Sam, Dylan and Willmott, Devin and Semedo, Joao D. and Kolter, J. Zico},
  journal={Transactions on Machine Learning Research},
  year={2025}
}"""

INTENDED_USE = """\
Research on vision-language models: zero-shot image classification, image-text retrieval and
image / text embeddings for downstream probes. The model inherits the biases of its web-scale
image-text data and of the language model that wrote its training captions; rewrites can add
details that are not in the image. It is not evaluated for, and should not be used in,
decisions about people (surveillance, face recognition, hiring) or any safety-critical setting.
Zero-shot accuracy depends strongly on the class names and templates used."""


def load_eval_records(paths: Iterable[str | Path]) -> list[dict]:
    """Read eval records from JSON files (a record, a list of records, or a `langclip eval --suite` results.json
    whose ``results`` are the records) and check them."""
    records = []
    for path in paths:
        content = json.loads(Path(path).read_text(encoding="utf-8"))
        if isinstance(content, dict) and "results" in content:
            content = content["results"]
        for index, record in enumerate(content if isinstance(content, list) else [content]):
            check_eval_record(record, where=f"{path}, record {index}")
            records.append(record)
    return records


def check_eval_record(record: Mapping, where: str = "eval record") -> None:
    """Raise a ValueError naming ``where`` unless ``record`` has a known task, a dataset id and split, and metrics."""
    if record.get("task") not in TASKS:
        raise ValueError(f"{where}: task must be one of {', '.join(TASKS)}, got {record.get('task')!r}")
    dataset = record.get("dataset") or {}
    for key in ("id", "split"):
        if not dataset.get(key):
            raise ValueError(f"{where}: dataset.{key} is missing")
    if not record.get("metrics") or not _metrics(record):
        raise ValueError(f"{where}: no metrics")


def hub_dataset_type(dataset_id: str) -> str:
    """The model-index ``dataset.type`` for an eval record's dataset: its Hub id, or, for a local
    folder or file, the folder's name (a local path means nothing to the card's readers)."""
    path = Path(dataset_id).expanduser()
    if not (path.is_absolute() or path.exists() or dataset_id.startswith((".", "~"))):
        try:
            validate_repo_id(dataset_id)
            return dataset_id
        except HFValidationError:
            pass
    return path.resolve().name or dataset_id


def _metrics(record: Mapping) -> dict:
    """The record's metrics that go in the model-index (``SIDE_STATISTICS`` are shown beside them)."""
    return {metric: value for metric, value in record["metrics"].items() if metric not in SIDE_STATISTICS}


def result_key(result: EvalResult) -> str:
    """``task | dataset | split | metric``: the key of a result's note in the card metadata."""
    return f"{result.task_type} | {result.dataset_type} | {result.dataset_split} | {result.metric_type}"


def eval_notes(records: Iterable[Mapping]) -> dict[str, str]:
    """`result_key` -> text of the record's `SIDE_STATISTICS` (e.g. the 95% interval), for each of its metrics."""
    notes = {}
    for record in records:
        text = "; ".join(SIDE_STATISTICS[k].format(v) for k, v in record["metrics"].items() if k in SIDE_STATISTICS)
        if text:
            notes.update({result_key(result): text for result in eval_results([record])})
    return notes


def eval_results(records: Iterable[Mapping]) -> list[EvalResult]:
    """One `EvalResult` (task, dataset, metric) per metric of every record (not the `SIDE_STATISTICS`)."""
    results = []
    for record in records:
        check_eval_record(record)
        task_type, task_name = TASKS[record["task"]]
        dataset = record["dataset"]
        for metric, value in _metrics(record).items():
            results.append(
                EvalResult(
                    task_type=task_type,
                    task_name=task_name,
                    dataset_type=hub_dataset_type(dataset["id"]),
                    dataset_name=dataset.get("name") or dataset["id"],
                    dataset_config=dataset.get("config"),
                    dataset_split=dataset["split"],
                    metric_type=metric,
                    metric_name=f"{record['task']} {metric}",
                    metric_value=value,
                )
            )
    return results


def merge_eval_results(existing: list[EvalResult] | None, new: Iterable[EvalResult]) -> list[EvalResult]:
    """``existing`` with each result of ``new`` replacing the one for the same task, dataset and metric."""
    merged = list(existing or [])
    for result in new:
        same = [i for i, old in enumerate(merged) if old.is_equal_except_value(result)]
        if same:
            merged[same[0]] = result
        else:
            merged.append(result)
    return merged


def infer_method(config: Mapping) -> str:
    """The `METHODS` key for a checkpoint's config.json contents."""
    model_type = config.get("model_type", "clip")
    if model_type == "laclip":
        return "laclip-mt" if config.get("multi_positive") else "laclip"
    return model_type if model_type in METHODS else "clip"


def _architecture(config: Mapping) -> dict[str, str]:
    vision, text = config.get("vision_config", {}), config.get("text_config", {})
    return {
        "image tower": f"ViT, {vision.get('num_hidden_layers')} layers x {vision.get('hidden_size')} wide, "
        f"patch {vision.get('patch_size')}, {vision.get('image_size')} px",
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


def model_card(
    config: Mapping,
    model_name: str,
    eval_records: Iterable[Mapping] = (),
    base_model: str | None = None,
    datasets: Iterable[str] = (),
    license: str = "apache-2.0",
    training: Mapping | None = None,
    method: str | None = None,
    results: Iterable[EvalResult] = (),
    notes: Mapping[str, str] | None = None,
) -> ModelCard:
    """A model card for a checkpoint whose config.json holds ``config``, named ``model_name`` (the Hub repo id).

    The model-index holds ``results`` (earlier ones) merged with those of ``eval_records``; the
    body's table shows them with their ``notes`` (`eval_notes`). ``training`` (e.g. the run's YAML
    config) is listed under "Training setup"; ``method`` defaults to `infer_method(config)`; the
    contrastive loss row (and a ``siglip`` tag) comes from the config's ``contrastive_loss``.
    Method, training and notes are also kept in the metadata (``langclip``) for `repo_model_card`.
    """
    method = method or infer_method(config)
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {', '.join(METHODS)}")
    method_name, method_text = METHODS[method]
    loss = config.get("contrastive_loss", "softmax")
    if loss not in CONTRASTIVE_LOSSES:
        raise ValueError(f"config.json: unknown contrastive_loss {loss!r}; expected one of {', '.join(CONTRASTIVE_LOSSES)}")
    eval_records = list(eval_records)
    results = merge_eval_results(list(results), eval_results(eval_records))
    notes = {**(notes or {}), **eval_notes(eval_records)}
    training = dict(training or {})
    data = ModelCardData(
        library_name="transformers",
        license=license,
        tags=["langclip", "clip", method, "zero-shot-image-classification"] + (["siglip"] if loss == "sigmoid" else []),
        datasets=list(datasets) or None,
        base_model=base_model,
        pipeline_tag="zero-shot-image-classification",
        model_name=model_name,
        eval_results=results or None,
        langclip={"method": method, "training": training, "notes": notes},
    )
    setup = {"method": method_name, "contrastive loss": CONTRASTIVE_LOSSES[loss], **_architecture(config),
             **{k: _cell(v) for k, v in training.items()}}
    if results:
        evaluation = _table(
            ("task", "dataset", "split", "metric", "value", "note"),
            ((r.task_name, r.dataset_name, r.dataset_split, r.metric_type, f"{r.metric_value:.4f}",
              notes.get(result_key(r), "")) for r in results),
        )
    else:
        evaluation = "Not evaluated yet: `langclip eval ... --push-to-hub` adds results here."
    body = f"""
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

The weights keep CLIP's names, so `transformers.CLIPModel.from_pretrained` loads them too.

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
    return ModelCard(f"---\n{data.to_yaml()}\n---\n{body}")


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
        config, repo_id, eval_records, base_model or card.data.base_model, list(datasets) or card.data.datasets or (),
        license or card.data.license or "apache-2.0", saved.get("training"), saved.get("method"),
        results=card.data.eval_results or (), notes=saved.get("notes"),
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


def dataset_card(
    pretty_name: str,
    source_datasets: Iterable[str],
    llm: str,
    prompt: str,
    rewrites_per_source: Mapping[str, int],
    fallbacks: Mapping[str, int],
    num_rows: int,
    license: str = "other",
    generation: Mapping | None = None,
    kind: str = "rewrites",
    reasons: Mapping[str, int] | None = None,
) -> DatasetCard:
    """The card of a dataset an LLM wrote: caption rewrites (``kind="rewrites"``, LaCLIP) or
    pairwise difference texts (``kind="differences"``, PC-CLIP).

    ``prompt`` is a prompt as sent (e.g. the in-context prompt: task sentence, examples,
    ``query =>``); ``rewrites_per_source`` and ``fallbacks`` count, per source, the texts
    written and those rejected (replaced by the original caption for rewrites, dropped for
    differences); ``reasons`` counts the rejections by reason; ``generation`` lists the
    job's settings. The counts are also in the YAML metadata under ``kind``.
    """
    if kind not in DATASET_KINDS:
        raise ValueError(f"dataset card kind must be one of {sorted(DATASET_KINDS)}, got {kind!r}")
    unknown = set(fallbacks) - set(rewrites_per_source)
    if unknown:
        raise ValueError(f"fallback counts name sources without rewrites: {', '.join(sorted(unknown))}")
    source_datasets = list(source_datasets)
    generation = dict(generation or {})
    spec = DATASET_KINDS[kind]
    data = DatasetCardData(
        pretty_name=pretty_name,
        license=license,
        source_datasets=source_datasets,
        task_categories=["zero-shot-image-classification", "image-to-text"],
        tags=spec["tags"],
        **{
            kind: {
                "llm": llm,
                "rows": num_rows,
                "per_source": dict(rewrites_per_source),
                "fallbacks": {source: fallbacks.get(source, 0) for source in rewrites_per_source},
                "reasons": dict(reasons or {}),
                "generation": generation,
            }
        },
    )
    counts = _table(
        spec["header"], ((source, count, fallbacks.get(source, 0)) for source, count in rewrites_per_source.items())
    )
    by_reason = _table(("rejected because", "count"), sorted((reasons or {}).items())) if reasons else ""
    settings = _table(("setting", "value"), ((k, _cell(v)) for k, v in generation.items())) if generation else "-"
    text = spec["text"].format(sources=", ".join(source_datasets) or "the source data", num_rows=num_rows, llm=llm)
    body = f"""
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
    return DatasetCard(f"---\n{data.to_yaml()}\n---\n{body}")

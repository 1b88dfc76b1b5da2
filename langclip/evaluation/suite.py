"""Run an evaluation suite: each dataset x task of a `manifest.Suite` gives one eval record
(see `langclip.hub_cards.records`) with its metrics, settings and ``score`` (the task's main metric).

The tasks read image features from a `features.FeatureStore` (each split encoded once per run
and, with a cache folder, once per model and dataset across runs). `evaluate_during_training`
is the hook `langclip train --eval-suite` calls.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import datasets
import torch
from tqdm.auto import tqdm

from ..errors import DataError
from ..processing.difference_rows import CLASS_PAIRS, load_difference_rows
from .differences import comparative_class_embeddings, difference_classification
from .features import FeatureStore, encode_texts
from .few_shot import few_shot_accuracy
from .manifest import MAIN_METRICS, DatasetSpec, EvalOptions, Suite, load_suite
from .report import average_score, write_results
from .retrieval import recall_at_k
from .templates import TEMPLATE_SETS
from .zero_shot import zero_shot_accuracy, zero_shot_classifier


def class_names(spec: DatasetSpec, feature) -> list[str]:
    """The manifest's ``classnames``, else the label column's `ClassLabel` names; a clear error otherwise."""
    if spec.classnames:
        return list(spec.classnames)
    if isinstance(feature, datasets.ClassLabel):
        return list(feature.names)
    raise DataError(
        f"dataset {spec.key!r}: the label column {spec.label_column!r} is "
        f"{type(feature).__name__ if feature is not None else 'not a ClassLabel'}, so it carries no class names: "
        "give `classnames` in the manifest (or --class-names)"
    )


def label_indices(values: Sequence, names: Sequence[str], where: str) -> torch.Tensor:
    """Class indices from integer labels (checked against ``names``) or string labels (looked up in ``names``)."""
    position = {name: index for index, name in enumerate(names)}
    indices = []
    for row, value in enumerate(values):
        if isinstance(value, str):
            if value not in position:
                raise DataError(f"{where}, row {row}: label {value!r} is not one of the {len(names)} class names")
            indices.append(position[value])
        elif isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(names):
            indices.append(value)
        else:
            raise DataError(f"{where}, row {row}: label {value!r} is neither a class name nor an index in "
                             f"0..{len(names) - 1}")
    return torch.tensor(indices, dtype=torch.long)


def _labelled(store: FeatureStore, spec: DatasetSpec, split: str, names_needed: bool = True):
    """(features, class indices, class names) of a split. Without ``names_needed`` (few-shot, the probe),
    non-negative integer labels need no class names (then None). Labels that need names and have none are an
    error before any image is encoded."""

    def check_names(types):
        feature = types["label_column"]
        if names_needed or isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string"):
            class_names(spec, feature)

    found, types = store.features(spec, split, {"label_column": spec.label_column}, check=check_names)
    values = found.columns["label_column"]
    if not names_needed and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values):
        return found, torch.tensor(values, dtype=torch.long), None
    names = class_names(spec, types["label_column"])
    return found, label_indices(values, names, f"dataset {spec.key!r}, split {split!r}"), names


def captions_of(values: Sequence, separator: str | None, where: str) -> tuple[list[str], torch.Tensor]:
    """All captions (a string, a ``separator``-joined string, or a list per row) and, for each, its row."""
    texts, text_to_image = [], []
    for row, value in enumerate(values):
        if isinstance(value, str):
            row_captions = value.split(separator) if separator else [value]
        else:
            row_captions = list(value or [])
        if not row_captions or not all(isinstance(text, str) and text.strip() for text in row_captions):
            raise DataError(f"{where}, row {row}: needs one or more non-empty captions, got {value!r}")
        texts += row_captions
        text_to_image += [row] * len(row_captions)
    return texts, torch.tensor(text_to_image)


def _templates(spec: DatasetSpec) -> tuple[str, ...]:
    return TEMPLATE_SETS[spec.templates] if isinstance(spec.templates, str) else tuple(spec.templates)


def _zero_shot(model, tokenizer, spec, store, options):
    found, labels, names = _labelled(store, spec, spec.split)
    templates = _templates(spec)
    settings = {"templates": spec.templates if isinstance(spec.templates, str) else len(templates),
                "classes": len(names)}
    classifier = zero_shot_classifier(model, tokenizer, names, templates, options.batch_size, options.cache_dir,
                                      options.progress)
    if spec.comparative:
        plain = zero_shot_accuracy(found.full, classifier, labels)
        differences = comparative_differences(spec.comparative, names)
        texts = encode_texts(model, tokenizer, [text for _, _, text in differences], options.batch_size,
                             options.progress)
        classifier = comparative_class_embeddings(
            classifier, [(a, b, texts[i]) for i, (a, b, _) in enumerate(differences)], spec.alpha)
        settings.update(comparative=spec.comparative, alpha=spec.alpha, differences=len(differences),
                        top1_without_comparative=plain["top1"])
    return zero_shot_accuracy(found.full, classifier, labels), settings, len(labels)


def comparative_differences(path: str, names: Sequence[str]) -> list[tuple[int, int, str]]:
    """(a, b, text) rows of a class-difference file (columns ``class_a``, ``class_b``, ``difference``; classes
    by name or index), where the text describes class a relative to class b."""
    rows = load_difference_rows(path, CLASS_PAIRS, expected="(comparative prompting)")
    a = label_indices(rows["class_a"], names, f"{path}, column 'class_a'").tolist()
    b = label_indices(rows["class_b"], names, f"{path}, column 'class_b'").tolist()
    return list(zip(a, b, rows["difference"]))


def _retrieval(model, tokenizer, spec, store, options):
    found, _ = store.features(spec, spec.split, {"caption_column": spec.caption_column})
    texts, text_to_image = captions_of(found.columns["caption_column"], spec.caption_separator,
                                       f"dataset {spec.key!r}, column {spec.caption_column!r}")
    position = {}
    text_index = torch.tensor([position.setdefault(text, len(position)) for text in texts])
    text_features = encode_texts(model, tokenizer, list(position), options.batch_size, options.progress)
    # distinct images x distinct texts, then copies: a repeated image or caption ties exactly with itself
    similarity = (found.unique @ text_features.T)[found.index][:, text_index]
    metrics = recall_at_k(similarity, text_to_image, ks=(1, 5, 10))
    for k in (1, 5, 10):
        metrics[f"mean_R@{k}"] = (metrics[f"image_to_text_R@{k}"] + metrics[f"text_to_image_R@{k}"]) / 2
    return metrics, {"texts": len(texts), "distinct_texts": len(position),
                     "distinct_images": len(found.unique)}, len(found.index)


def _few_shot(model, tokenizer, spec, store, options):
    found, labels, _ = _labelled(store, spec, spec.split, names_needed=False)
    metrics = few_shot_accuracy(found.full, labels, options.n_way, options.n_shot, options.n_query, options.episodes,
                                options.seed)
    return metrics, {"n_way": options.n_way, "n_shot": options.n_shot, "n_query": options.n_query,
                     "episodes": options.episodes}, len(labels)


def _linear_probe(model, tokenizer, spec, store, options):
    from .linear_probe import DEFAULT_CS, linear_probe

    test, test_labels, _ = _labelled(store, spec, spec.split, names_needed=False)
    train, train_labels, _ = _labelled(store, spec, spec.train_split, names_needed=False)
    train_x, train_y = train.full.numpy(), train_labels.numpy()
    if spec.validation_split:
        validation, validation_labels, _ = _labelled(store, spec, spec.validation_split, names_needed=False)
        validation_xy = (validation.full.numpy(), validation_labels.numpy())
    else:
        generator = torch.Generator().manual_seed(options.seed)
        order = torch.randperm(len(train_y), generator=generator).numpy()
        held = max(1, round(len(order) * spec.validation_fraction))
        validation_xy = (train_x[order[:held]], train_y[order[:held]])
        train_x, train_y = train_x[order[held:]], train_y[order[held:]]
    splits = [spec.split, spec.train_split] + ([spec.validation_split] if spec.validation_split else [])
    data = [store.fingerprints[spec.key, split] or split for split in splits]
    if len(set(splits)) < len(splits) or len(set(data)) < len(data):
        raise DataError(f"dataset {spec.key!r}: the linear probe's train split {spec.train_split!r}, validation "
                         f"split {spec.validation_split!r} and test split {spec.split!r} must be different data, "
                         f"but {spec.path} gives the same rows for two of them")
    metrics = linear_probe((train_x, train_y), validation_xy, (test.full.numpy(), test_labels.numpy()),
                           options.probe_cs or DEFAULT_CS, progress=options.progress)
    settings = {"C": metrics.pop("C"), "C_at_grid_edge": metrics.pop("C_at_grid_edge"), "train_rows": len(train_y),
                "validation_rows": len(validation_xy[1])}
    return metrics, settings, len(test_labels)


def _difference_classification(model, tokenizer, spec, store, options):
    found, _ = store.features(spec, spec.split, {"id_column": spec.id_column})
    row_of = {}
    for row, image_id in enumerate(found.columns["id_column"]):
        if str(image_id) in row_of:
            raise DataError(f"dataset {spec.key!r}, column {spec.id_column!r}: id {image_id!r} is repeated (row {row})")
        row_of[str(image_id)] = row
    pairs = load_difference_rows(spec.differences)
    a, b = [], []
    for row, (id_a, id_b) in enumerate(zip(pairs["id_a"], pairs["id_b"])):
        for image_id, into in ((id_a, a), (id_b, b)):
            if str(image_id) not in row_of:
                raise DataError(f"{spec.differences}, row {row}: image id {image_id!r} is not in dataset "
                                 f"{spec.key!r} (column {spec.id_column!r})")
            into.append(row_of[str(image_id)])
    texts = encode_texts(model, tokenizer, pairs["difference"], options.batch_size, options.progress)
    images = found.full
    accuracy = difference_classification(images[a], images[b], texts)
    return {"accuracy": accuracy}, {"differences": spec.differences, "pairs": len(pairs)}, len(pairs)


TASK_FUNCTIONS = {
    "zero-shot": _zero_shot,
    "retrieval": _retrieval,
    "few-shot": _few_shot,
    "linear-probe": _linear_probe,
    "difference-classification": _difference_classification,
}


def run_task(model, tokenizer, spec: DatasetSpec, task: str, store: FeatureStore, options: EvalOptions,
             model_name: str) -> dict:
    """The eval record of ``task`` on ``spec``: task, model, dataset, metrics, settings, main metric and score."""
    start = time.perf_counter()
    metrics, settings, num_examples = TASK_FUNCTIONS[task](model, tokenizer, spec, store, options)
    main = spec.metric if task == "zero-shot" else MAIN_METRICS[task]
    return {
        "task": task,
        "model": model_name,
        "key": spec.key,
        "dataset": {"id": spec.path, "name": spec.title, "config": spec.config, "split": spec.split},
        "num_examples": num_examples,
        "metrics": metrics,
        "main_metric": main,
        "score": metrics[main],
        "settings": settings,
        "seconds": round(time.perf_counter() - start, 2),
    }


def run_suite(model, tokenizer, processor, suite: Suite, options: EvalOptions, model_name: str,
              store: FeatureStore | None = None) -> list[dict]:
    """Every dataset x task of ``suite``: a list of eval records, in manifest order."""
    store = store or FeatureStore(model, processor, options)
    was_training = model.training
    model.eval()
    try:
        records = []
        for spec in tqdm(suite.datasets, desc=f"suite {suite.name}", unit="dataset", disable=not options.progress):
            for task in spec.tasks:
                records.append(run_task(model, tokenizer, spec, task, store, options, model_name))
        return records
    finally:
        model.train(was_training)



def evaluate_during_training(accelerator, model, tokenizer, processor, suite_name: str, step: int, output_dir: str,
                             batch_size: int = 64) -> list[dict] | None:
    """Run ``suite_name`` on the main process at training ``step``: results under ``<output_dir>/eval/step-<step>``,
    scores logged to the trackers as ``eval/<key>/<task>/<metric>``. Returns the records (None elsewhere)."""
    records = None
    if accelerator.is_main_process:
        suite = load_suite(suite_name)
        name = Path(output_dir).name
        options = EvalOptions(batch_size=batch_size, progress=False)
        records = run_suite(accelerator.unwrap_model(model), tokenizer, processor, suite, options, name)
        write_results(records, Path(output_dir) / "eval" / f"step-{step}", name, suite.name, suite.skipped)
        logged = {f"eval/{r['key']}/{r['task']}/{metric}": value
                  for r in records for metric, value in r["metrics"].items()}
        logged["eval/average"] = average_score(records)
        if accelerator.log_with:
            accelerator.log(logged, step=step)
        accelerator.print(f"step {step}: {suite.name} suite average {logged['eval/average']:.4f}")
    accelerator.wait_for_everyone()
    return records

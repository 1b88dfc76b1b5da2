"""Evaluation suites: a YAML manifest of datasets and tasks, run in one go (`langclip eval --suite`).

A manifest (the shipped ones are ``langclip/evaluation/suites/<name>.yaml``)::

    name: quick
    description: what the suite measures
    defaults: {split: test, image_column: [webp, png, jpg, jpeg], label_column: cls}
    datasets:
      cifar10:                                 # key: file names, --dataset-path KEY=FOLDER, --datasets KEY
        name: CIFAR-10                         # shown in tables and the model card
        path: clip-benchmark/wds_cifar10       # Hub id or local folder (relative to the manifest)
        tasks: [zero-shot]                     # zero-shot, retrieval, few-shot, linear-probe,
                                               # difference-classification
        metric: top1                           # zero-shot score: top1 or mean_per_class
        classnames: [airplane, automobile, ...]
        templates: ["a photo of a {}.", ...]   # or a built-in set name (templates.TEMPLATE_SETS)

Every key of `DatasetSpec` may appear per dataset or under ``defaults``. Each dataset x task
gives one eval record (see `langclip.hub_cards.cards`) with a ``score``: its main metric
(`MAIN_METRICS`, or the manifest's ``metric`` for zero-shot). `run_suite` loads only the
split it needs (streamed when asked), computes each split's image features once per run
and, with a cache folder, once per model and dataset across runs; `write_results` writes one
JSON per dataset and task, ``results.json`` (read by `langclip push --eval-results`),
``results.md`` and ``results.png``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import torch
import yaml
from tqdm.auto import tqdm

from ..errors import DataError
from ..processing import loading
from .differences import comparative_class_embeddings, difference_classification
from .features import ImageFeatures, encode_dataset, encode_texts, weights_fingerprint
from .few_shot import few_shot_accuracy
from .retrieval import recall_at_k
from .templates import TEMPLATE_SETS, check_templates
from .zero_shot import zero_shot_accuracy, zero_shot_classifier

SUITES_DIR = Path(__file__).parent / "suites"
TASKS = ("zero-shot", "retrieval", "few-shot", "linear-probe", "difference-classification")
MAIN_METRICS = {
    "zero-shot": "top1",
    "retrieval": "mean_R@1",
    "few-shot": "accuracy",
    "linear-probe": "accuracy",
    "difference-classification": "accuracy",
}
ZERO_SHOT_METRICS = ("top1", "mean_per_class")
IMAGE_EXTENSIONS = ("webp", "png", "jpg", "jpeg")


@dataclass
class DatasetSpec:
    """One dataset of a suite and how to evaluate it (the keys a manifest entry may hold)."""

    key: str
    path: str | None = None
    name: str | None = None
    split: str = "test"
    config: str | None = None
    streaming: bool = False
    image_column: str | list[str] = field(default_factory=lambda: ["image", *IMAGE_EXTENSIONS])
    label_column: str = "label"
    caption_column: str = "caption"
    caption_separator: str | None = None
    id_column: str = "id"
    tasks: list[str] = field(default_factory=lambda: ["zero-shot"])
    metric: str = "top1"
    classnames: list[str] | None = None
    templates: str | list[str] = "openai_imagenet"
    train_split: str = "train"
    validation_split: str | None = None
    validation_fraction: float = 0.2
    comparative: str | None = None
    alpha: float = 0.9
    differences: str | None = None
    note: str | None = None

    @property
    def title(self) -> str:
        return self.name or self.key


@dataclass
class Suite:
    """A loaded manifest: the datasets to run, and ``skipped``, {key: reason} for those without a path."""

    name: str
    datasets: list[DatasetSpec]
    description: str = ""
    skipped: dict[str, str] = field(default_factory=dict)


@dataclass
class EvalOptions:
    """Settings shared by every dataset of a run (the `langclip eval` flags)."""

    batch_size: int = 64
    num_workers: int = 0
    cache_dir: str | None = None
    streaming: bool = False
    progress: bool = True
    n_way: int = 5
    n_shot: int = 5
    n_query: int = 15
    episodes: int = 600
    seed: int = 0
    probe_cs: Sequence[float] | None = None


SPEC_KEYS = {f.name for f in dataclasses.fields(DatasetSpec)} - {"key"}


def shipped_suites() -> list[str]:
    return sorted(path.stem for path in SUITES_DIR.glob("*.yaml"))


def spec_from_mapping(key: str, values: Mapping, where: str, root: Path | None = None) -> DatasetSpec:
    """A checked `DatasetSpec`; errors name ``where`` (the manifest and dataset) and the key at fault.

    A relative ``path`` that exists under ``root`` (the manifest's folder) is resolved there."""
    unknown = sorted(set(values) - SPEC_KEYS)
    if unknown:
        raise DataError(f"{where}: unknown key(s) {', '.join(unknown)}; known keys: {', '.join(sorted(SPEC_KEYS))}")
    spec = DatasetSpec(key=key, **values)
    tasks = [spec.tasks] if isinstance(spec.tasks, str) else list(spec.tasks)
    bad = [task for task in tasks if task not in TASKS]
    if bad or not tasks:
        raise DataError(f"{where}: tasks must be a non-empty list of {', '.join(TASKS)}, got {spec.tasks!r}")
    spec.tasks = tasks
    if spec.metric not in ZERO_SHOT_METRICS:
        raise DataError(f"{where}: metric must be one of {', '.join(ZERO_SHOT_METRICS)}, got {spec.metric!r}")
    if spec.classnames is not None and (
        not isinstance(spec.classnames, list) or not all(isinstance(n, str) and n for n in spec.classnames)
    ):
        raise DataError(f"{where}: classnames must be a list of non-empty strings")
    if isinstance(spec.templates, str):
        if spec.templates not in TEMPLATE_SETS:
            raise DataError(f"{where}: templates {spec.templates!r} is not a built-in set ({', '.join(TEMPLATE_SETS)})")
    else:
        try:
            spec.templates = list(check_templates(spec.templates))
        except ValueError as error:
            raise DataError(f"{where}: {error}") from None
    if "difference-classification" in tasks and not spec.differences:
        raise DataError(f"{where}: difference-classification needs `differences` (a `langclip differences` output)")
    for name in ("path", "differences", "comparative"):
        value = getattr(spec, name)
        if root is not None and value and not Path(value).is_absolute() and (root / value).exists():
            setattr(spec, name, str(root / value))
    return spec


def load_suite(
    name_or_path: str, dataset_paths: Mapping[str, str] | None = None, only: Sequence[str] | None = None
) -> Suite:
    """A shipped suite by name (`shipped_suites`) or a manifest file, checked.

    ``dataset_paths`` maps dataset keys to local copies (``--dataset-path KEY=FOLDER``);
    ``only`` keeps the named datasets (``--datasets``). A dataset without a path (no public copy, e.g.
    CUB) is skipped with a warning that says how to add it, and listed in ``Suite.skipped``."""
    path = SUITES_DIR / f"{name_or_path}.yaml" if name_or_path in shipped_suites() else Path(name_or_path)
    if not path.is_file():
        raise DataError(f"suite {name_or_path!r} is neither a shipped suite ({', '.join(shipped_suites())}) nor a file")
    manifest = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(manifest, dict) or not isinstance(manifest.get("datasets"), dict) or not manifest["datasets"]:
        raise DataError(f"{path}: a suite manifest is a mapping with a non-empty `datasets` mapping")
    defaults = manifest.get("defaults") or {}
    dataset_paths = dict(dataset_paths or {})
    unknown = sorted((set(dataset_paths) | set(only or ())) - set(manifest["datasets"]))
    if unknown:
        raise DataError(f"{path}: no dataset(s) {', '.join(unknown)}; it has {', '.join(manifest['datasets'])}")
    specs, skipped = [], {}
    for key, values in manifest["datasets"].items():
        if only and key not in only:
            continue
        where = f"{path}, dataset {key!r}"
        if not isinstance(values, dict):
            raise DataError(f"{where}: expected a mapping of settings, got {type(values).__name__}")
        values = {**defaults, **values, **({"path": dataset_paths[key]} if key in dataset_paths else {})}
        spec = spec_from_mapping(str(key), values, where, path.parent)
        if spec.path:
            specs.append(spec)
            continue
        skipped[spec.key] = f"no path{f' ({spec.note})' if spec.note else ''}: add it with --dataset-path {key}=FOLDER"
        warnings.warn(f"{where} is skipped: {skipped[spec.key]}", stacklevel=2)
    if not specs:
        raise DataError(f"{path}: no dataset to run ({'; '.join(f'{k}: {v}' for k, v in skipped.items())})")
    return Suite(str(manifest.get("name") or path.stem), specs, str(manifest.get("description") or ""), skipped)


# ---------------------------------------------------------------------------------------------- data


def _column(columns: Sequence[str], wanted: str | Sequence[str], key: str, where: str) -> str:
    """``wanted`` (or the first of a list of alternatives) among ``columns``; an error names the manifest key."""
    choices = [wanted] if isinstance(wanted, str) else list(wanted)
    found = next((choice for choice in choices if choice in columns), None)
    if found is None:
        raise DataError(f"{where}: no column {' or '.join(map(repr, choices))} (set `{key}` in the manifest, "
                         f"--{key.replace('_', '-')} for a single task); the dataset has {', '.join(columns)}")
    return found


class FeatureStore:
    """Image features per dataset split: computed once per run and, with ``options.cache_dir``, stored as
    ``<sha256>.safetensors`` keyed by the image-side weights, the image processor, the dataset (its
    fingerprint when it has one), the split and the columns."""

    def __init__(self, model, processor, options: EvalOptions):
        self.model, self.processor, self.options = model, processor, options
        self.memory: dict[str, ImageFeatures] = {}
        self.fingerprints: dict[tuple[str, str], str | None] = {}
        self._model_key = None

    def model_key(self) -> str:
        """What the features depend on besides the data; without a disk cache one store holds one model."""
        if not self.options.cache_dir:
            return ""
        if self._model_key is None:
            self._model_key = hashlib.sha256(json.dumps([
                weights_fingerprint(self.model, text=False), self.processor.to_json_string(),
                str(next(self.model.parameters()).dtype)]).encode()).hexdigest()
        return self._model_key

    def features(self, spec: DatasetSpec, split: str, roles: Mapping[str, str]) -> tuple[ImageFeatures, dict]:
        """Features of ``split`` with the columns of ``roles`` (manifest key -> column), keyed by role, and the
        `datasets` feature type of each role's column (None when the dataset does not say)."""
        where = f"dataset {spec.key!r} ({spec.path}), split {split!r}"
        data = loading.load_split(spec.path, split, spec.config, streaming=spec.streaming or self.options.streaming)
        names = data.column_names or list(data.features or {})
        image_column = _column(names, spec.image_column, "image_column", where)
        columns = {role: _column(names, wanted, role, where) for role, wanted in roles.items()}
        types = {role: (data.features or {}).get(column) for role, column in columns.items()}
        fingerprint = self.fingerprints[spec.key, split] = getattr(data, "_fingerprint", None)
        key = hashlib.sha256(json.dumps([self.model_key(), spec.path, spec.config, split, fingerprint, image_column,
                                         sorted(columns.items())]).encode()).hexdigest()
        if key in self.memory:
            return self.memory[key], types
        cache_file = Path(self.options.cache_dir) / f"{key}.safetensors" if self.options.cache_dir else None
        if cache_file is not None and cache_file.is_file():
            found = ImageFeatures.load(cache_file)
        else:
            found = encode_dataset(self.model, self.processor, data, image_column, list(columns.values()),
                                   self.options.batch_size, self.options.num_workers, self.options.progress,
                                   description=f"{spec.title} {split}")
            found.columns = {role: found.columns[column] for role, column in columns.items()}
            if cache_file is not None:
                found.save(cache_file)
        self.memory[key] = found
        return found, types


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
    non-negative integer labels need no class names (then None)."""
    found, types = store.features(spec, split, {"label_column": spec.label_column})
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


# ---------------------------------------------------------------------------------------------- tasks


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


def difference_rows(path: str, keys: Sequence[str], expected: str):
    """The rows of a difference file with columns ``keys`` + ``difference``; a `DataError` saying ``expected``
    when a column is missing, or when there is no row."""
    rows = loading.load_rows(path)
    missing = [c for c in (*keys, "difference") if c not in rows.column_names]
    if missing:
        raise DataError(f"{path}: no column(s) {', '.join(missing)}; {expected} (columns: {', '.join(rows.column_names)})")
    if len(rows) == 0:
        raise DataError(f"{path} has no difference rows")
    return rows


def comparative_differences(path: str, names: Sequence[str]) -> list[tuple[int, int, str]]:
    """(a, b, text) rows of a class-difference file (columns ``class_a``, ``class_b``, ``difference``; classes
    by name or index), where the text describes class a relative to class b."""
    rows = difference_rows(path, ("class_a", "class_b"), "comparative prompting reads class_a, class_b, difference")
    a = label_indices(rows["class_a"], names, f"{path}, column 'class_a'").tolist()
    b = label_indices(rows["class_b"], names, f"{path}, column 'class_b'").tolist()
    for row, text in enumerate(rows["difference"]):
        if not isinstance(text, str) or not text.strip():
            raise DataError(f"{path}, row {row}: column 'difference' needs a non-empty text, got {text!r}")
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
    pairs = difference_rows(spec.differences, ("id_a", "id_b"),
                            "expected id_a, id_b, difference (`langclip differences` output)")
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


# ---------------------------------------------------------------------------------------------- results


def average_score(records: Sequence[Mapping]) -> float:
    """The mean of the records' scores (one per dataset and task)."""
    return sum(record["score"] for record in records) / len(records)


def _row_name(record: Mapping) -> str:
    return f"{record['dataset']['name']} ({record['task']})"


def results_table(records: Sequence[Mapping]) -> str:
    """Markdown: a row per dataset and task (its score, then every metric), and an average row."""
    metrics = list(dict.fromkeys(metric for record in records for metric in record["metrics"]))
    lines = ["| dataset | task | split | score | " + " | ".join(metrics) + " |",
             "| --- | --- | --- |" + " ---: |" * (len(metrics) + 1)]
    for record in records:
        cells = [f"{record['metrics'][m]:.4f}" if m in record["metrics"] else "" for m in metrics]
        lines.append(f"| {record['dataset']['name']} | {record['task']} | {record['dataset']['split']} | "
                     f"{record['score']:.4f} ({record['main_metric']}) | " + " | ".join(cells) + " |")
    averages = []
    for metric in metrics:
        values = [record["metrics"][metric] for record in records if metric in record["metrics"]]
        averages.append(f"{sum(values) / len(values):.4f}")
    lines.append(f"| **average** ({len(records)}) | | | {average_score(records):.4f} | " + " | ".join(averages) + " |")
    return "\n".join(lines)


def compare_table(runs: Mapping[str, Sequence[Mapping]]) -> str:
    """Markdown: a row per dataset and task, a column of scores per model, and the average of each model."""
    rows = list(dict.fromkeys((_row_name(r), r["main_metric"]) for records in runs.values() for r in records))
    scores = {model: {(_row_name(r), r["main_metric"]): r["score"] for r in records} for model, records in runs.items()}
    lines = ["| dataset (task) | metric | " + " | ".join(runs) + " |", "| --- | --- |" + " ---: |" * len(runs)]
    for row in rows:
        lines.append(f"| {row[0]} | {row[1]} | " + " | ".join(
            f"{scores[model][row]:.4f}" if row in scores[model] else "-" for model in runs) + " |")
    lines.append("| **average** | | " + " | ".join(f"{average_score(records):.4f}" for records in runs.values()) + " |")
    return "\n".join(lines)


def plot_scores(runs: Mapping[str, Sequence[Mapping]], path: str | Path) -> Path:
    """A grouped bar plot (PNG) of each model's score per dataset and task."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(dict.fromkeys(_row_name(r) for records in runs.values() for r in records))
    width = 0.8 / len(runs)
    figure, axes = plt.subplots(figsize=(max(6.0, 0.6 * len(rows) * max(1, len(runs) / 2) + 2), 4.5))
    for i, (model, records) in enumerate(runs.items()):
        scores = {_row_name(r): r["score"] for r in records}
        axes.bar([j + (i - (len(runs) - 1) / 2) * width for j in range(len(rows))],
                 [scores.get(row, math.nan) for row in rows], width, label=f"{model} (avg {average_score(records):.3f})")
    axes.set_xticks(range(len(rows)), rows, rotation=45, ha="right", fontsize=8)
    axes.set(ylabel="score (each dataset's main metric)", ylim=(0, 1))
    axes.legend(fontsize=8)
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def write_results(records: Sequence[Mapping], output_dir: str | Path, model_name: str, suite_name: str,
                  skipped: Mapping[str, str] | None = None) -> dict:
    """One ``<key>__<task>.json`` per record, ``results.json`` ({model, suite, average, results, skipped}),
    ``results.md`` and ``results.png`` under ``output_dir``; returns the combined results."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    for record in records:
        (output_dir / f"{record['key']}__{record['task']}.json").write_text(json.dumps(record, indent=2) + "\n",
                                                                              encoding="utf-8")
    skipped = dict(skipped or {})
    combined = {"model": model_name, "suite": suite_name, "average": average_score(records), "results": list(records),
                "skipped": skipped}
    (output_dir / "results.json").write_text(json.dumps(combined, indent=2) + "\n", encoding="utf-8")
    not_run = "".join(f"\nNot run: {key}, {reason}.\n" for key, reason in skipped.items())
    (output_dir / "results.md").write_text(
        f"# {suite_name}: {model_name}\n\n{results_table(records)}\n{not_run}", encoding="utf-8")
    plot_scores({model_name: records}, output_dir / "results.png")
    return combined


def load_results(path: str | Path) -> dict:
    """The combined results of a run: its ``results.json``, or that file in folder ``path``."""
    path = Path(path)
    file = path / "results.json" if path.is_dir() else path
    if not file.is_file():
        raise DataError(f"{path}: no results.json (the output folder of `langclip eval --suite`)")
    combined = json.loads(file.read_text(encoding="utf-8"))
    if not isinstance(combined, dict) or not combined.get("results"):
        raise DataError(f"{file}: expected an object with `results` (written by `langclip eval --suite`)")
    return combined


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

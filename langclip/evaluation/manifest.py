"""Evaluation suites: the YAML manifest of datasets and tasks (`langclip eval --suite`), and the run's settings.

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
gives one eval record (see `langclip.hub_cards.records`) with a ``score``: its main metric
(`MAIN_METRICS`, or the manifest's ``metric`` for zero-shot). `suite.run_suite` runs a loaded
`Suite`, `features.FeatureStore` computes each split's image features once, and
`report.write_results` writes the records.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..errors import DataError
from .templates import TEMPLATE_SETS, check_templates

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


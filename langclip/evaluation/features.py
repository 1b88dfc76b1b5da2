"""Batched, L2-normalised features from any `CLIPModel`-compatible model, and `FeatureStore`, the
per-run (and, with a cache folder, on-disk) store of each dataset split's image features.

`get_image_features` / `get_text_features` return a `BaseModelOutputWithPooling` in
transformers 5; the projected features are its ``pooler_output``.

Identical inputs get bit-identical features, whatever the batch size: `encode_texts` encodes
each distinct text once, and `encode_dataset` each distinct image (by its preprocessed
pixels) once. A tie between two copies of the same image or caption is then an exact tie,
which the metrics count against the model, so results do not depend on the batch size.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import datasets
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from ..errors import DataError
from ..processing import loading
from ..processing.transforms import decode_image
from .manifest import DatasetSpec, EvalOptions

TEXT_PREFIXES = ("text_model.", "text_projection.")


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def _dtype(model: torch.nn.Module) -> torch.dtype:
    return next(model.parameters()).dtype


def weights_fingerprint(model: torch.nn.Module, text: bool) -> str:
    """sha256 over the names and bytes of the text-tower weights (``text=True``) or of all other weights."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        if name.startswith(TEXT_PREFIXES) == text:
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


@torch.inference_mode()
def encode_images(
    model: torch.nn.Module,
    pixel_value_batches: Iterable[torch.Tensor],
    progress: bool = True,
    total: int | None = None,
) -> torch.Tensor:
    """n(f(x)) for every image, one batch of ``pixel_values`` (B, 3, H, W) at a time; returns float32 (N, D) on CPU.

    Pixels are cast to the model's dtype (a bf16 model gets bf16 pixels)."""
    device, dtype = _device(model), _dtype(model)
    features = [
        F.normalize(model.get_image_features(pixel_values=pixels.to(device, dtype)).pooler_output.float(), dim=-1).cpu()
        for pixels in tqdm(pixel_value_batches, desc="images", unit="batch", total=total, disable=not progress)
    ]
    if not features:
        raise DataError("encode_images got no image batches")
    return torch.cat(features)


@torch.inference_mode()
def encode_texts(
    model: torch.nn.Module,
    tokenizer,
    texts: Sequence[str],
    batch_size: int = 256,
    progress: bool = True,
) -> torch.Tensor:
    """n(g(t)) for every text; each distinct text is tokenised and encoded once, ``batch_size`` at a time.

    Returns float32 (N, D) on CPU; equal texts get bit-identical rows."""
    if len(texts) == 0:
        raise DataError("encode_texts got no texts")
    position = {}
    index = torch.tensor([position.setdefault(text, len(position)) for text in texts])
    unique = list(position)
    device = _device(model)
    max_length = model.config.text_config.max_position_embeddings
    features = []
    for start in tqdm(range(0, len(unique), batch_size), desc="texts", unit="batch", disable=not progress):
        tokens = tokenizer(
            unique[start : start + batch_size],
            padding=True,
            truncation=True,
            max_length=max_length,
            return_tensors="pt",
        ).to(device)
        output = model.get_text_features(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"])
        features.append(F.normalize(output.pooler_output.float(), dim=-1).cpu())
    return torch.cat(features)[index]


@dataclass
class ImageFeatures:
    """Features of a dataset's images: ``unique`` (U, D) rows of the distinct images, ``index`` (N,) the
    row of each image in ``unique``, and ``columns``, the other requested columns as lists of N values."""

    unique: torch.Tensor
    index: torch.Tensor
    columns: dict[str, list]

    @property
    def full(self) -> torch.Tensor:
        """(N, D): one row per image, copies for repeated images."""
        return self.unique[self.index]

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(".tmp")
        save_file({"unique": self.unique.contiguous(), "index": self.index}, temporary,
                  metadata={"columns": json.dumps(self.columns)})
        temporary.replace(path)

    @classmethod
    def load(cls, path: Path) -> ImageFeatures:
        from safetensors import safe_open

        with safe_open(path, "pt") as handle:
            columns = json.loads(handle.metadata()["columns"])
        tensors = load_file(path)
        return cls(tensors["unique"], tensors["index"], columns)


_ROW = "__row__"


class _Indexed(torch.utils.data.Dataset):
    """A map-style dataset's rows with their index (``__row__``), so that errors name the row."""

    def __init__(self, data):
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> dict:
        return {**self.data[index], _ROW: index}


class _Collate:
    """Rows -> (``pixel_values`` (B, 3, H, W), {column: values}); decodes with `decode_image` (errors name the row)."""

    def __init__(self, processor, image_column: str, columns: Sequence[str]):
        self.processor, self.image_column, self.columns = processor, image_column, list(columns)

    def __call__(self, rows: list[dict]):
        images = []
        for row in rows:
            where = f"row {row.get('__key__', row.get('id', row.get(_ROW)))} (column {self.image_column!r})"
            if row[self.image_column] is None:
                raise DataError(f"no image in {where}")
            images.append(decode_image(row[self.image_column], where))
        pixels = self.processor(images=images, return_tensors="pt")["pixel_values"]
        return pixels, {column: [row[column] for row in rows] for column in self.columns}


@torch.inference_mode()
def encode_dataset(
    model: torch.nn.Module,
    processor,
    data,
    image_column: str,
    columns: Sequence[str] = (),
    options: EvalOptions | None = None,
    description: str = "images",
) -> ImageFeatures:
    """n(f(x)) of every image of ``data`` (a `datasets.Dataset` or `IterableDataset`) in one pass, with ``columns``.

    Images are decoded and preprocessed in ``options.num_workers`` DataLoader workers, ``options.batch_size``
    at a time; each distinct image (equal ``pixel_values``) is encoded once, so copies get bit-identical features.
    """
    from torch.utils.data import DataLoader

    options = options or EvalOptions()
    batch_size = options.batch_size

    names = data.column_names or []
    keys = [key for key in ("__key__", "id") if key in names and key not in columns][:1]  # names rows in errors
    data = data.select_columns(list(dict.fromkeys([image_column, *columns, *keys])))
    if isinstance((data.features or {}).get(image_column), datasets.Image):
        # decoded by decode_image, whose errors name the row
        data = data.cast_column(image_column, datasets.Image(decode=False))
    loader = DataLoader(_Indexed(data) if hasattr(data, "__len__") else data, batch_size=batch_size,
                        num_workers=options.num_workers, collate_fn=_Collate(processor, image_column, columns))
    total = -(-len(data) // batch_size) if hasattr(data, "__len__") else None
    device, dtype = _device(model), _dtype(model)
    seen, index, unique, values = {}, [], [], {column: [] for column in columns}
    batches = tqdm(loader, desc=description, unit="batch", total=total, disable=not options.progress)
    for pixels, batch_columns in batches:
        fresh = []
        for row in pixels:
            key = hashlib.blake2b(row.numpy().tobytes(), digest_size=16).digest()
            if key not in seen:
                seen[key] = len(seen)
                fresh.append(row)
            index.append(seen[key])
        if fresh:
            output = model.get_image_features(pixel_values=torch.stack(fresh).to(device, dtype))
            unique.append(F.normalize(output.pooler_output.float(), dim=-1).cpu())
        for column in columns:
            values[column] += batch_columns[column]
    if not index:
        raise DataError("the dataset has no rows: nothing to evaluate")
    return ImageFeatures(torch.cat(unique), torch.tensor(index), values)


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

    def features(self, spec: DatasetSpec, split: str, roles: Mapping[str, str],
                 check: Callable[[dict], None] | None = None) -> tuple[ImageFeatures, dict]:
        """Features of ``split`` with the columns of ``roles`` (manifest key -> column), keyed by role, and the
        `datasets` feature type of each role's column (None when the dataset does not say); ``check`` is given
        those types before any image is encoded (e.g. that the labels carry class names)."""
        where = f"dataset {spec.key!r} ({spec.path}), split {split!r}"
        data = loading.load_split(spec.path, split, spec.config, streaming=spec.streaming or self.options.streaming)
        names = data.column_names or list(data.features or {})
        image_column = _column(names, spec.image_column, "image_column", where)
        columns = {role: _column(names, wanted, role, where) for role, wanted in roles.items()}
        types = {role: (data.features or {}).get(column) for role, column in columns.items()}
        if check is not None:
            check(types)
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
                                   self.options, description=f"{spec.title} {split}")
            found.columns = {role: found.columns[column] for role, column in columns.items()}
            if cache_file is not None:
                found.save(cache_file)
        self.memory[key] = found
        return found, types


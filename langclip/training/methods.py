"""Training methods as three orthogonal options: text sampling, objective, parts trained.

- **text sampling** (``--text-sampling``): ``caption`` (the web caption) or ``rewrites``
  (aug_T: a uniform draw among the caption and its LLM rewrites);
- **objective** (``--objective``, an `Objective`): ``clip`` (one text per image),
  ``multi-positive`` (LaCLIP-MT: all T texts of an image), ``clips`` (CLIPS' dual
  contrastive + captioner) or ``difference`` (PC-CLIP); the first three in either form
  of ``--contrastive-loss``: ``softmax`` (CLIP) or ``sigmoid`` (SigLIP);
- **parts trained** (``--train-parts``): ``all``, ``text`` (the text transformer blocks)
  or ``lora`` (peft adapters, ``--lora-r``).

The five ``--method`` names are `PRESETS` of these; flags change any option of a preset.
A `Method` names the columns it needs (`check_columns`, before the first step), prepares
its rows and collator (`prepare_data`), computes the features of a batch (`features`:
per-row tensors, so the trainer's cached-feature accumulation can concatenate
micro-batches) and the loss on them (`loss(*features, **loss_inputs(model))`, through
`langclip.modeling.losses`, the functions the models' ``forward(return_loss=True)`` use too).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar

import datasets
import pyarrow.compute as pc
import torch
from tqdm.auto import tqdm
from transformers import PretrainedConfig

from ..errors import ConfigError, DataError
from ..modeling import CLIPSModel, LaCLIPModel, losses
from ..modeling.losses import CONTRASTIVE_LOSSES, SIGMOID_LOGIT_SCALE_INIT, CLIPSFeatures, LossContext
from ..processing.collators import CLIPSCollator, ContrastiveCollator, DifferenceCollator
from ..processing.generation.differences import check_difference_rows
from ..processing.loading import load_captions
from ..processing.text import PartialCaption, TextAugmenter
from ..processing.transforms import ImageTransform

TEXT_SAMPLINGS = ("caption", "rewrites")
TRAIN_PARTS = ("all", "text", "lora")
PRESETS: dict[str, dict[str, str]] = {
    "clip": {"text_sampling": "caption", "objective": "clip", "train_parts": "all"},
    "laclip": {"text_sampling": "rewrites", "objective": "clip", "train_parts": "all"},
    "laclip-mt": {"text_sampling": "rewrites", "objective": "multi-positive", "train_parts": "all"},
    "clips": {"text_sampling": "caption", "objective": "clips", "train_parts": "all"},
    "pcclip": {"text_sampling": "caption", "objective": "difference", "train_parts": "text"},
}
"""The ``--method`` names: each a (text sampling, objective, parts trained) combination."""


def at_least_float32(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Floating tensors promoted to float32 or wider (losses under bf16 autocast run in float32)."""
    return tuple(t.to(torch.promote_types(t.dtype, torch.float32)) if t.is_floating_point() else t for t in tensors)


TEXT_LAYERS = "text_model.encoder.layers."
# LoRA targets: every linear map of the text transformer blocks.
TEXT_LAYER_LORA_TARGETS = r".*text_model\.encoder\.layers\.\d+\.(self_attn\.(q|k|v|out)_proj|mlp\.fc1|mlp\.fc2)"


def freeze_all_but_text_layers(model: torch.nn.Module) -> int:
    """Leave ``requires_grad`` on the text transformer blocks only; returns the trainable parameter count."""
    trainable = 0
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(TEXT_LAYERS in name)
        trainable += parameter.numel() if parameter.requires_grad else 0
    if trainable == 0:
        raise ConfigError("the model has no text_model.encoder.layers parameters to train")
    return trainable


@torch.no_grad()
def precompute_image_embeddings(model, pixel_values: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Projected image features of the frozen image tower, batch by batch."""
    return torch.cat([
        model.get_image_features(pixel_values=chunk).pooler_output for chunk in pixel_values.split(batch_size)
    ])


def _image_features(model, batch: Mapping, side: str) -> torch.Tensor:
    if f"image_embeds_{side}" in batch:
        return batch[f"image_embeds_{side}"]
    with torch.no_grad():
        return model.get_image_features(pixel_values=batch[f"pixel_values_{side}"]).pooler_output


def _text_features(model, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    return model.get_text_features(input_ids=input_ids, attention_mask=attention_mask).pooler_output


def difference_features(model, batch: Mapping) -> tuple[torch.Tensor, ...]:
    """(image a, image b, difference text) features, plus the a images' caption features when the batch has them.

    Image features come from the batch's cached embeddings or the frozen image tower (no gradient).
    """
    features = (
        _image_features(model, batch, "a"),
        _image_features(model, batch, "b"),
        _text_features(model, batch["input_ids"], batch["attention_mask"]),
    )
    if "caption_input_ids" in batch:
        features += (_text_features(model, batch["caption_input_ids"], batch["caption_attention_mask"]),)
    return features


def load_difference_rows(path: str, image_ids) -> datasets.Dataset:
    """``(id_a, id_b, difference)`` rows (dataset folder, Hub id, JSON(L), CSV, Parquet), checked against ``image_ids``."""
    rows = load_captions(path, caption_column="difference", id_column="id_a")
    missing = [column for column in ("id_a", "id_b", "difference") if column not in rows.column_names]
    if missing:
        raise DataError(f"{path}: no column(s) {missing} (columns: {rows.column_names}); expected id_a, id_b, difference")
    rows = rows.cast_column("id_a", datasets.Value("string")).cast_column("id_b", datasets.Value("string"))
    if len(rows) == 0:
        raise DataError(f"{path} has no difference rows")
    try:
        check_difference_rows(rows, image_ids)
    except ValueError as error:
        raise DataError(f"{path}: {error}") from None
    return rows


@dataclass(frozen=True)
class Objective:
    """``clip``: one text per image (the caption or aug_T's draw), `clip_loss` or `sigmoid_loss`.

    The base of every objective: ``contrastive_loss`` is its form, ``softmax`` or ``sigmoid``
    (stored in the model config, which then has the learnable bias ``logit_bias``).
    """

    name: ClassVar[str] = "clip"
    text_samplings: ClassVar[tuple[str, ...]] = TEXT_SAMPLINGS
    lora_targets: ClassVar[str | None] = None
    multi_positive: ClassVar[bool] = False

    contrastive_loss: str = "softmax"

    def __post_init__(self):
        if self.contrastive_loss not in CONTRASTIVE_LOSSES:
            raise ConfigError(f"--contrastive-loss must be one of {CONTRASTIVE_LOSSES}, got {self.contrastive_loss!r}")

    @classmethod
    def options(cls, model_args, data_args, train_args) -> dict:
        """This objective's constructor arguments from the run's flags."""
        return {"contrastive_loss": model_args.contrastive_loss}

    def columns(self, text_sampling: str) -> tuple[str, ...]:
        return ("image", "caption") + (("rewrites",) if text_sampling == "rewrites" else ())

    def model_class(self, checkpoint: str | None) -> type:
        return LaCLIPModel

    @property
    def config_overrides(self) -> dict:
        """Model config values this objective sets (on a new model and on a loaded checkpoint)."""
        if self.contrastive_loss == "sigmoid":
            return {"contrastive_loss": "sigmoid", "logit_scale_init_value": SIGMOID_LOGIT_SCALE_INIT}
        return {"contrastive_loss": "softmax"}

    def prepare_data(self, method: Method, model, dataset, tokenizer, max_length: int, processor, device):
        """(rows, collator) for the DataLoader: the records as they are, with random-crop augmentation.

        The collator's ``pixel_values`` are uint8: the trainer normalises them on the device (`normalize_pixels`)."""
        transform = ImageTransform.from_image_processor(processor, train=True, seed=method.seed, uint8=True)
        return dataset, self.collator(method, tokenizer, max_length, transform, dataset)

    def collator(self, method: Method, tokenizer, max_length: int, image_transform, dataset) -> ContrastiveCollator:
        return ContrastiveCollator(tokenizer, max_length, augmenter=method.augmenter(), image_transform=image_transform,
                                   skip_bad_samples=method.skip_bad_samples)

    def features(self, model, batch: dict) -> tuple[torch.Tensor, ...]:
        """(image (B, D), text (B, D)) normalised embeddings from the model's forward."""
        output = model(**batch)
        return at_least_float32(output.image_embeds, output.text_embeds)

    def loss_inputs(self, model) -> dict[str, torch.Tensor]:
        """The model's loss scalars, `loss`'s keywords: s = exp(logit_scale), and b = logit_bias under sigmoid."""
        inputs = model.loss_parameters()
        if self.contrastive_loss == "sigmoid" and "logit_bias" not in inputs:
            raise ValueError("the sigmoid loss needs the model's logit_bias: build or load the model with "
                             "contrastive_loss='sigmoid' (Method.config_overrides)")
        if self.contrastive_loss == "softmax":
            inputs.pop("logit_bias", None)
        return inputs

    def loss(self, image: torch.Tensor, text: torch.Tensor, logit_scale: torch.Tensor,
             logit_bias: torch.Tensor | None = None, context: LossContext = LossContext()) -> torch.Tensor:
        return losses.contrastive_loss(image, text, logit_scale, logit_bias, kind=self.contrastive_loss,
                                       multi_positive=self.multi_positive, context=context)


def most_rewrites(dataset) -> int:
    """The largest number of rewrites of a row: over every row of a `datasets.Dataset` (Arrow compute, nothing
    decoded), else (streamed data) of the first row."""
    if isinstance(dataset, datasets.Dataset):
        if not isinstance(dataset.features.get("rewrites"), (datasets.List, datasets.LargeList)):
            return 0  # no rewrites, or not lists: the collator names the row
        lengths = pc.list_value_length(dataset.data.column("rewrites"))
        return pc.max(lengths).as_py() or 0
    return len(next(iter(dataset)).get("rewrites") or [])


@dataclass(frozen=True)
class MultiPositive(Objective):
    """``multi-positive`` (LaCLIP-MT): every image with all T = M + 1 of its texts.

    Softmax: `multi_positive_clip_loss`; sigmoid: `sigmoid_loss` with every text of an image
    a positive. ``num_texts`` None: 1 + the most rewrites of a row (streamed data: of the first row).
    """

    name: ClassVar[str] = "multi-positive"
    text_samplings: ClassVar[tuple[str, ...]] = ("rewrites",)
    multi_positive: ClassVar[bool] = True

    num_texts: int | None = None

    @classmethod
    def options(cls, model_args, data_args, train_args) -> dict:
        return {**super().options(model_args, data_args, train_args), "num_texts": model_args.num_texts}

    @property
    def config_overrides(self) -> dict:
        return {**super().config_overrides, "multi_positive": True}

    def collator(self, method: Method, tokenizer, max_length: int, image_transform, dataset) -> ContrastiveCollator:
        num_texts = self.num_texts or 1 + most_rewrites(dataset)
        return ContrastiveCollator(tokenizer, max_length, augmenter=method.augmenter(), num_texts=num_texts,
                                   image_transform=image_transform, skip_bad_samples=method.skip_bad_samples)

    def features(self, model, batch: dict) -> tuple[torch.Tensor, ...]:
        """(image (B, D), all texts (B, T, D)) normalised embeddings; text column 0 is aug_T's draw."""
        output = model(**batch)
        return at_least_float32(output.image_embeds, output.all_text_embeds)


@dataclass(frozen=True)
class CLIPSObjective(Objective):
    """``clips``: web caption (or, with ``rewrites``, aug_T's draw) and partial synthetic caption for the text
    tower; the same web text and the full synthetic caption for the captioner.

    Loss: ``contrastive_weight * contrastive + caption_weight * caption`` (`clips_loss`), the
    weights being the model config's. Features per row: image, web and partial embeddings,
    each row's summed caption NLL and caption token count; summed over the micro-batches, the
    recomputed gradients give the full-batch gradient, the caption term being the token
    mean over the whole local batch.
    """

    name: ClassVar[str] = "clips"

    partial_caption: str = "subcaption"
    partial_tokens: int = 32
    synthetic_column: str = "synthetic_caption"

    @classmethod
    def options(cls, model_args, data_args, train_args) -> dict:
        return {**super().options(model_args, data_args, train_args), "partial_caption": data_args.partial_caption,
                "partial_tokens": data_args.partial_tokens, "synthetic_column": data_args.synthetic_caption_column}

    def columns(self, text_sampling: str) -> tuple[str, ...]:
        return super().columns(text_sampling) + (self.synthetic_column,)

    def model_class(self, checkpoint: str | None) -> type:
        return CLIPSModel

    def collator(self, method: Method, tokenizer, max_length: int, image_transform, dataset) -> CLIPSCollator:
        partial = PartialCaption(tokenizer, self.partial_caption, self.partial_tokens, max_length=max_length,
                                 seed=method.seed)
        return CLIPSCollator(tokenizer, max_length, partial, augmenter=method.augmenter(),
                             image_transform=image_transform, synthetic_column=self.synthetic_column,
                             skip_bad_samples=method.skip_bad_samples)

    def features(self, model, batch: dict) -> tuple[torch.Tensor, ...]:
        """(image, web, partial (B, D) embeddings, caption NLL sums (B,), caption token counts (B,))."""
        output = model(**batch)
        return at_least_float32(output.image_embeds, output.text_embeds, output.partial_text_embeds,
                                output.caption_nll_sum, output.caption_tokens)

    def loss_inputs(self, model) -> dict:
        return {**super().loss_inputs(model), "contrastive_weight": model.config.contrastive_loss_weight,
                "caption_weight": model.config.caption_loss_weight}

    def loss(self, image, web, partial, caption_nll_sum, caption_tokens, logit_scale, contrastive_weight: float,
             caption_weight: float, logit_bias: torch.Tensor | None = None,
             context: LossContext = LossContext()) -> torch.Tensor:
        features = CLIPSFeatures(image, web, partial, caption_nll_sum, caption_tokens)
        return losses.clips_loss(features, logit_scale, logit_bias, kind=self.contrastive_loss,
                                 weights=(contrastive_weight, caption_weight), context=context).total


@dataclass(frozen=True)
class Difference(Objective):
    """``difference`` (PC-CLIP): image pairs and their difference texts.

    L = difference_loss(f_a, f_b, g(d)) + clip_weight * clip_loss(n(f_a), n(g(c_a)), s); PC-CLIP's
    own loss has tau = 1, fixed, so the logit scale s only enters the optional CLIP term, which
    needs the captions of the a images. Pair ids join the rows of ``--train-data`` by their
    ``id``; images go through the eval transform (the image tower is frozen: no augmentation),
    once for all with ``precompute`` (``--precompute-image-embeddings``), else in every batch.
    Any langclip or plain CLIP checkpoint can be finetuned: a ``clips`` checkpoint (e.g. a
    converted CLIPS release) loads as `CLIPSModel`, every other as `LaCLIPModel`.
    """

    name: ClassVar[str] = "difference"
    text_samplings: ClassVar[tuple[str, ...]] = ("caption",)
    lora_targets: ClassVar[str | None] = TEXT_LAYER_LORA_TARGETS

    clip_weight: float = 0.0
    difference_data: str | None = None
    precompute: bool = False

    def __post_init__(self):
        if self.contrastive_loss != "softmax":
            raise ConfigError("--objective difference has its own loss (softmax, tau = 1): drop --contrastive-loss "
                             f"{self.contrastive_loss}")

    @classmethod
    def options(cls, model_args, data_args, train_args) -> dict:
        if data_args.difference_data is None:
            raise ConfigError("--objective difference (--method pcclip) needs --difference-data: rows of "
                             "(id_a, id_b, difference)")
        return {**super().options(model_args, data_args, train_args), "clip_weight": train_args.clip_loss_weight,
                "difference_data": data_args.difference_data, "precompute": data_args.precompute_image_embeddings}

    def columns(self, text_sampling: str) -> tuple[str, ...]:
        return ("image", "id") + (("caption",) if self.clip_weight else ())

    def model_class(self, checkpoint: str | None) -> type:
        if checkpoint is None:
            return LaCLIPModel
        model_type = PretrainedConfig.get_config_dict(checkpoint)[0].get("model_type")
        return CLIPSModel if model_type == CLIPSModel.config_class.model_type else LaCLIPModel

    @property
    def config_overrides(self) -> dict:
        return {}

    def prepare_data(self, method: Method, model, images, tokenizer, max_length: int, processor, device):
        """(``--difference-data`` rows, `DifferenceCollator`)."""
        if not isinstance(images, datasets.Dataset):
            raise ConfigError("--objective difference looks images up by id: --train-data must not be streamed or "
                             "webdataset shards")
        index = {str(image_id): row for row, image_id in enumerate(images["id"])}
        pairs = load_difference_rows(self.difference_data, index)
        transform = ImageTransform.from_image_processor(processor)

        def pixels(image_id: str) -> torch.Tensor:
            return transform(images[index[image_id]]["image"], where=f"image id {image_id!r}")

        lookup = pixels
        if self.precompute:
            needed = sorted(set(pairs["id_a"]) | set(pairs["id_b"]), key=index.get)
            model.to(device).eval()
            embeddings = {}
            for start in tqdm(range(0, len(needed), 256), desc="image embeddings", unit="batch"):
                ids = needed[start : start + 256]
                features = precompute_image_embeddings(model, torch.stack([pixels(i) for i in ids]).to(device))
                embeddings.update(zip(ids, features.float().cpu()))
            lookup = embeddings.__getitem__
        captions = None
        if self.clip_weight:
            captions = lambda image_id: images[index[image_id]]["caption"]  # noqa: E731
        return pairs, DifferenceCollator(tokenizer, max_length, lookup, captions)

    def features(self, model, batch: Mapping) -> tuple[torch.Tensor, ...]:
        return difference_features(model, batch)

    def loss_inputs(self, model) -> dict[str, torch.Tensor]:
        return {"logit_scale": model.logit_scale.exp()}

    def loss(self, image_a, image_b, text, *captions, logit_scale, context: LossContext = LossContext()) -> torch.Tensor:
        """Called as ``loss(image_a, image_b, text[, captions], logit_scale=s)``."""
        return losses.pcclip_loss(image_a, image_b, text, captions[0] if captions else None, logit_scale,
                                  self.clip_weight, context)


def pcclip_loss(model, batch: Mapping, clip_weight: float = 0.0) -> torch.Tensor:
    """The ``difference`` objective's loss on a model and a `DifferenceCollator` batch."""
    objective = Difference(clip_weight=clip_weight)
    return objective.loss(*objective.features(model, batch), **objective.loss_inputs(model))


OBJECTIVES: dict[str, type[Objective]] = {
    objective.name: objective for objective in (Objective, MultiPositive, CLIPSObjective, Difference)
}


@dataclass(frozen=True)
class Method:
    """One training method: a text sampling, an `Objective` and the parts trained.

    ``Method.preset("laclip-mt", contrastive_loss="sigmoid")`` is a preset with options
    changed; `from_arguments` builds one from the run's flags.
    """

    objective: Objective = field(default_factory=Objective)
    text_sampling: str = "caption"
    train_parts: str = "all"
    seed: int = 0
    skip_bad_samples: bool = False

    def __post_init__(self):
        for flag, value, choices in (("--text-sampling", self.text_sampling, TEXT_SAMPLINGS),
                                     ("--train-parts", self.train_parts, TRAIN_PARTS)):
            if value not in choices:
                raise ConfigError(f"{flag} must be one of {choices}, got {value!r}")
        if self.text_sampling not in self.objective.text_samplings:
            raise ConfigError(f"--objective {self.objective.name} works with --text-sampling "
                             f"{' or '.join(self.objective.text_samplings)}, not {self.text_sampling}")

    @classmethod
    def preset(cls, name: str, **options) -> Method:
        """The ``--method`` preset ``name``, with ``options`` (fields of the method or of its objective) changed."""
        if name not in PRESETS:
            raise ConfigError(f"unknown method {name!r}; expected one of {', '.join(PRESETS)}")
        values = {**PRESETS[name], **options}
        objective_class = OBJECTIVES[values.pop("objective")]
        own = {f.name for f in dataclasses.fields(cls)} - {"objective"}
        objective = objective_class(**{k: v for k, v in values.items() if k not in own})
        return cls(objective, **{k: v for k, v in values.items() if k in own})

    @classmethod
    def from_arguments(cls, model_args, data_args, train_args) -> Method:
        """The ``--method`` preset with ``--text-sampling``, ``--objective``, ``--contrastive-loss`` and
        ``--train-parts`` applied; ``--lora-r`` > 0 alone means ``--train-parts lora``."""
        preset = PRESETS[model_args.method]
        train_parts = model_args.train_parts or ("lora" if model_args.lora_r > 0 else preset["train_parts"])
        if (train_parts == "lora") != (model_args.lora_r > 0):
            raise ConfigError(f"--train-parts {train_parts} with --lora-r {model_args.lora_r}: LoRA needs --lora-r > 0, "
                             "and --lora-r > 0 needs --train-parts lora")
        objective_class = OBJECTIVES[model_args.objective or preset["objective"]]
        return cls(objective_class(**objective_class.options(model_args, data_args, train_args)),
                   text_sampling=model_args.text_sampling or preset["text_sampling"], train_parts=train_parts,
                   seed=train_args.seed, skip_bad_samples=data_args.skip_bad_samples)

    @property
    def description(self) -> str:
        """E.g. ``rewrites / multi-positive (sigmoid) / all``."""
        form = "" if self.objective.name == "difference" else f" ({self.objective.contrastive_loss})"
        return f"{self.text_sampling} / {self.objective.name}{form} / {self.train_parts}"

    @property
    def columns(self) -> tuple[str, ...]:
        """The record columns this method needs."""
        return self.objective.columns(self.text_sampling)

    @property
    def config_overrides(self) -> dict:
        return self.objective.config_overrides

    @property
    def lora_targets(self) -> str | None:
        """A regex of the modules LoRA adapts; None: ``--lora-target-modules``."""
        return self.objective.lora_targets

    def model_class(self, checkpoint: str | None = None) -> type:
        """The model class to build, or to load ``checkpoint`` (a folder or Hub id) with."""
        return self.objective.model_class(checkpoint)

    def check_columns(self, columns, where: str) -> None:
        """Raise a DataError naming the method and every column it needs that ``where``'s data lacks."""
        missing = [column for column in self.columns if column not in columns]
        if missing:
            raise DataError(
                f"--objective {self.objective.name} with --text-sampling {self.text_sampling} needs the column(s) "
                f"{', '.join(map(repr, missing))}, which {where} does not have (columns: {', '.join(map(repr, columns))}); map yours with --image-column, --caption-column, "
                "--rewrites-column or --synthetic-caption-column"
                + ("; --clip-loss-weight needs the captions of the images"
                   if "caption" in missing and getattr(self.objective, "clip_weight", 0) else "")
            )

    def augmenter(self) -> TextAugmenter | None:
        """aug_T for ``rewrites`` sampling, None for ``caption``."""
        return TextAugmenter(self.seed) if self.text_sampling == "rewrites" else None

    def freeze(self, model) -> None:
        """``text``: only the text transformer blocks keep ``requires_grad``; ``all``: every parameter trains.
        (``lora``: `peft` freezes the base model.)"""
        if self.train_parts == "text":
            freeze_all_but_text_layers(model)

    def prepare_data(self, model, dataset, tokenizer, max_length: int, processor, device):
        """(rows, collator) for the DataLoader."""
        return self.objective.prepare_data(self, model, dataset, tokenizer, max_length, processor, device)

    def features(self, model, batch: Mapping) -> tuple[torch.Tensor, ...]:
        return self.objective.features(model, batch)

    def loss_inputs(self, model) -> dict:
        """The keywords `loss` takes from the (unwrapped) model: logit scale, bias, weights."""
        return self.objective.loss_inputs(model)

    def loss(self, *features: torch.Tensor, **inputs) -> torch.Tensor:
        return self.objective.loss(*features, **inputs)

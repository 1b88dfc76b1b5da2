"""Training objectives: what a method's loss needs from the data, how its batches are built, its features and loss.

An `Objective` is one of ``clip`` (`CLIPObjective`: one text per image), ``multi-positive`` (`MultiPositive`,
LaCLIP-MT: all T texts of an image), ``clips`` (`CLIPSObjective`: CLIPS' dual contrastive + captioner) or
``difference`` (`Difference`, PC-CLIP); the first three in either form of ``--contrastive-loss``: ``softmax``
(CLIP) or ``sigmoid`` (SigLIP). It knows nothing of the method around it: the text sampling reaches it as
`RowOptions` (aug_T or none, the seed, skip-and-count). The step computes ``features(model, batch)`` (per-row
tensors, so that micro-batches concatenate) and ``loss(*features, **loss_inputs(model), context=...)``, through
`langclip.modeling.losses`, the functions the models' ``forward(return_loss=True)`` use too.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

import datasets
import pyarrow.compute as pc
import torch
from tqdm.auto import tqdm
from transformers import PretrainedConfig

from ..choices import CONTRASTIVE_LOSSES, OBJECTIVE_NAMES, TEXT_SAMPLINGS
from ..errors import ConfigError
from ..modeling import CLIPSModel, LaCLIPModel, losses
from ..modeling.losses import SIGMOID_LOGIT_SCALE_INIT, CLIPSFeatures, LossContext
from ..processing.collators import CLIPSCollator, ContrastiveCollator, DifferenceCollator
from ..processing.difference_rows import load_difference_rows
from ..processing.text import PartialCaption, TextAugmenter
from ..processing.transforms import ImageTransform

# LoRA targets: every linear map of the text transformer blocks.
TEXT_LAYER_LORA_TARGETS = r".*text_model\.encoder\.layers\.\d+\.(self_attn\.(q|k|v|out)_proj|mlp\.fc1|mlp\.fc2)"


@dataclass(frozen=True)
class RowOptions:
    """What the collators take from the method: ``augmenter`` (aug_T; None: the web caption), the ``seed`` of
    crops and partial captions, and ``skip_bad_samples`` (skip and count unreadable rows instead of stopping)."""

    augmenter: TextAugmenter | None = None
    seed: int = 0
    skip_bad_samples: bool = False


def at_least_float32(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Floating tensors promoted to float32 or wider (losses under bf16 autocast run in float32)."""
    return tuple(t.to(torch.promote_types(t.dtype, torch.float32)) if t.is_floating_point() else t for t in tensors)


class Objective:
    """The base of every objective; subclasses implement `columns`, `collator` (or `prepare_data`), `features`,
    `loss_inputs` and `loss`; ``name``, the ``--objective`` name, is set where `OBJECTIVES` lists them.

    ``text_samplings``: the ``--text-sampling`` values it works with; ``lora_targets``: a regex of the modules
    LoRA adapts (None: ``--lora-target-modules``).
    """

    name: ClassVar[str]
    text_samplings: ClassVar[tuple[str, ...]] = TEXT_SAMPLINGS
    lora_targets: ClassVar[str | None] = None

    @classmethod
    def options(cls, model_args, data_args, train_args) -> dict:
        """This objective's constructor arguments from the run's flags."""
        return {}

    @property
    def description(self) -> str:
        return self.name

    def columns(self) -> tuple[str, ...]:
        """The record columns the objective needs (the text sampling adds its own)."""
        raise NotImplementedError

    def model_class(self, checkpoint: str | None = None) -> type:
        """The model class to build, or to load ``checkpoint`` (a folder or Hub id) with."""
        return LaCLIPModel

    @property
    def config_overrides(self) -> dict:
        """Model config values this objective sets (on a new model and on a loaded checkpoint)."""
        return {}

    def prepare_data(self, model, dataset, tokenizer, max_length: int, processor, device, rows: RowOptions):
        """(rows, collator) for the DataLoader: the records as they are, with random-crop augmentation.

        The collator's ``pixel_values`` are uint8: the trainer normalises them on the device (`normalize_pixels`)."""
        transform = ImageTransform.from_image_processor(processor, train=True, seed=rows.seed, uint8=True)
        return dataset, self.collator(tokenizer, max_length, transform, dataset, rows)

    def collator(self, tokenizer, max_length: int, image_transform, dataset, rows: RowOptions):
        raise NotImplementedError

    def features(self, model, batch: Mapping) -> tuple[torch.Tensor, ...]:
        """Per-row feature tensors of ``batch`` (dim 0 is the row)."""
        raise NotImplementedError

    def loss_inputs(self, model) -> dict:
        """The keywords `loss` takes from the (unwrapped) model: logit scale, bias, weights."""
        raise NotImplementedError

    def loss(self, *features: torch.Tensor, context: LossContext = LossContext(), **inputs) -> torch.Tensor:
        raise NotImplementedError


@dataclass(frozen=True)
class CLIPObjective(Objective):
    """``clip``: one text per image (the caption or aug_T's draw), `clip_loss` or `sigmoid_loss`.

    ``contrastive_loss`` is its form, ``softmax`` or ``sigmoid`` (stored in the model config, which then has the
    learnable bias ``logit_bias``); the other contrastive objectives extend it.
    """

    multi_positive: ClassVar[bool] = False

    contrastive_loss: str = "softmax"

    def __post_init__(self):
        if self.contrastive_loss not in CONTRASTIVE_LOSSES:
            raise ConfigError(f"--contrastive-loss must be one of {CONTRASTIVE_LOSSES}, got {self.contrastive_loss!r}")

    @classmethod
    def options(cls, model_args, data_args, train_args) -> dict:
        return {"contrastive_loss": model_args.contrastive_loss}

    @property
    def description(self) -> str:
        return f"{self.name} ({self.contrastive_loss})"

    def columns(self) -> tuple[str, ...]:
        return ("image", "caption")

    @property
    def config_overrides(self) -> dict:
        if self.contrastive_loss == "sigmoid":
            return {"contrastive_loss": "sigmoid", "logit_scale_init_value": SIGMOID_LOGIT_SCALE_INIT}
        return {"contrastive_loss": "softmax"}

    def collator(self, tokenizer, max_length: int, image_transform, dataset, rows: RowOptions) -> ContrastiveCollator:
        return ContrastiveCollator(tokenizer, max_length, augmenter=rows.augmenter, image_transform=image_transform,
                                   skip_bad_samples=rows.skip_bad_samples)

    def features(self, model, batch: Mapping) -> tuple[torch.Tensor, ...]:
        """(image (B, D), text (B, D)) normalised embeddings from the model's forward."""
        output = model(**batch)
        return at_least_float32(output.image_embeds, output.text_embeds)

    def loss_inputs(self, model) -> dict[str, torch.Tensor]:
        """s = exp(logit_scale), and b = logit_bias under sigmoid."""
        inputs = model.loss_parameters()
        if self.contrastive_loss == "sigmoid" and "logit_bias" not in inputs:
            raise ValueError("the sigmoid loss needs the model's logit_bias: build or load the model with "
                             "contrastive_loss='sigmoid' (Objective.config_overrides)")
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
class MultiPositive(CLIPObjective):
    """``multi-positive`` (LaCLIP-MT): every image with all T = M + 1 of its texts.

    Softmax: `multi_positive_clip_loss`; sigmoid: `sigmoid_loss` with every text of an image
    a positive. ``num_texts`` None: 1 + the most rewrites of a row (streamed data: of the first row).
    """

    text_samplings: ClassVar[tuple[str, ...]] = ("rewrites",)
    multi_positive: ClassVar[bool] = True

    num_texts: int | None = None

    @classmethod
    def options(cls, model_args, data_args, train_args) -> dict:
        return {**super().options(model_args, data_args, train_args), "num_texts": model_args.num_texts}

    @property
    def config_overrides(self) -> dict:
        return {**super().config_overrides, "multi_positive": True}

    def collator(self, tokenizer, max_length: int, image_transform, dataset, rows: RowOptions) -> ContrastiveCollator:
        num_texts = self.num_texts or 1 + most_rewrites(dataset)
        return ContrastiveCollator(tokenizer, max_length, augmenter=rows.augmenter, num_texts=num_texts,
                                   image_transform=image_transform, skip_bad_samples=rows.skip_bad_samples)

    def features(self, model, batch: Mapping) -> tuple[torch.Tensor, ...]:
        """(image (B, D), all texts (B, T, D)) normalised embeddings; text column 0 is aug_T's draw."""
        output = model(**batch)
        return at_least_float32(output.image_embeds, output.all_text_embeds)


@dataclass(frozen=True)
class CLIPSObjective(CLIPObjective):
    """``clips``: web caption (or, with ``rewrites``, aug_T's draw) and partial synthetic caption for the text
    tower; the same web text and the full synthetic caption for the captioner.

    Loss: ``contrastive_weight * contrastive + caption_weight * caption`` (`clips_loss`), the
    weights being the model config's. Features per row: image, web and partial embeddings,
    each row's summed caption NLL and caption token count; summed over the micro-batches, the
    recomputed gradients give the full-batch gradient, the caption term being the token
    mean over the whole local batch.
    """

    partial_caption: str = "subcaption"
    partial_tokens: int = 32
    synthetic_column: str = "synthetic_caption"

    @classmethod
    def options(cls, model_args, data_args, train_args) -> dict:
        return {**super().options(model_args, data_args, train_args), "partial_caption": data_args.partial_caption,
                "partial_tokens": data_args.partial_tokens, "synthetic_column": data_args.synthetic_caption_column}

    def columns(self) -> tuple[str, ...]:
        return super().columns() + (self.synthetic_column,)

    def model_class(self, checkpoint: str | None = None) -> type:
        return CLIPSModel

    def collator(self, tokenizer, max_length: int, image_transform, dataset, rows: RowOptions) -> CLIPSCollator:
        partial = PartialCaption(tokenizer, self.partial_caption, self.partial_tokens, max_length=max_length,
                                 seed=rows.seed)
        return CLIPSCollator(tokenizer, max_length, partial, augmenter=rows.augmenter,
                             image_transform=image_transform, synthetic_column=self.synthetic_column,
                             skip_bad_samples=rows.skip_bad_samples)

    def features(self, model, batch: Mapping) -> CLIPSFeatures:
        """`CLIPSFeatures`: image, web, partial (B, D) embeddings, caption NLL sums (B,), caption token counts (B,)."""
        output = model(**batch)
        return CLIPSFeatures(*at_least_float32(output.image_embeds, output.text_embeds, output.partial_text_embeds,
                                               output.caption_nll_sum, output.caption_tokens))

    def loss_inputs(self, model) -> dict:
        return {**super().loss_inputs(model),
                "weights": (model.config.contrastive_loss_weight, model.config.caption_loss_weight)}

    def loss(self, *features: torch.Tensor, logit_scale: torch.Tensor, weights: tuple[float, float],
             logit_bias: torch.Tensor | None = None, context: LossContext = LossContext()) -> torch.Tensor:
        """``loss(*CLIPSFeatures, logit_scale=s, weights=(w_c, w_cap)[, logit_bias=b])``: `clips_loss`'s total."""
        return losses.clips_loss(CLIPSFeatures(*features), logit_scale, logit_bias, kind=self.contrastive_loss,
                                 weights=weights, context=context).total


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

    text_samplings: ClassVar[tuple[str, ...]] = ("caption",)
    lora_targets: ClassVar[str | None] = TEXT_LAYER_LORA_TARGETS
    contrastive_loss: ClassVar[str] = "softmax"  # of the optional CLIP term (the difference loss has its own form)

    clip_weight: float = 0.0
    difference_data: str | None = None
    precompute: bool = False

    @classmethod
    def options(cls, model_args, data_args, train_args) -> dict:
        if model_args.contrastive_loss != "softmax":
            raise ConfigError("--objective difference has its own loss (softmax, tau = 1): drop --contrastive-loss "
                              f"{model_args.contrastive_loss}")
        if data_args.difference_data is None:
            raise ConfigError("--objective difference (--method pcclip) needs --difference-data: rows of "
                              "(id_a, id_b, difference)")
        return {"clip_weight": train_args.clip_loss_weight, "difference_data": data_args.difference_data,
                "precompute": data_args.precompute_image_embeddings}

    def columns(self) -> tuple[str, ...]:
        return ("image", "id") + (("caption",) if self.clip_weight else ())

    def model_class(self, checkpoint: str | None = None) -> type:
        if checkpoint is None:
            return LaCLIPModel
        model_type = PretrainedConfig.get_config_dict(checkpoint)[0].get("model_type")
        return CLIPSModel if model_type == CLIPSModel.config_class.model_type else LaCLIPModel

    def prepare_data(self, model, images, tokenizer, max_length: int, processor, device, rows: RowOptions):
        """(``--difference-data`` rows, `DifferenceCollator`)."""
        if not isinstance(images, datasets.Dataset):
            raise ConfigError("--objective difference looks images up by id: --train-data must not be streamed or "
                              "webdataset shards")
        index = {str(image_id): row for row, image_id in enumerate(images["id"])}
        pairs = load_difference_rows(self.difference_data, known_ids=index)
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
        """(image a, image b, difference text) features, plus the a images' caption features when the batch has
        them. Image features come from the batch's cached embeddings or the frozen image tower (no gradient)."""
        features = (
            _image_features(model, batch, "a"),
            _image_features(model, batch, "b"),
            _text_features(model, batch["input_ids"], batch["attention_mask"]),
        )
        if "caption_input_ids" in batch:
            features += (_text_features(model, batch["caption_input_ids"], batch["caption_attention_mask"]),)
        return features

    def loss_inputs(self, model) -> dict[str, torch.Tensor]:
        return {"logit_scale": model.logit_scale.exp()}

    def loss(self, image_a, image_b, text, *captions, logit_scale, context: LossContext = LossContext()) -> torch.Tensor:
        """Called as ``loss(image_a, image_b, text[, captions], logit_scale=s)``."""
        return losses.pcclip_loss(image_a, image_b, text, captions[0] if captions else None, logit_scale,
                                  self.clip_weight, context)


OBJECTIVES: dict[str, type[Objective]] = dict(
    zip(OBJECTIVE_NAMES, (CLIPObjective, MultiPositive, CLIPSObjective, Difference), strict=True)
)
for _name, _objective in OBJECTIVES.items():  # the --objective names are spelled once, in `langclip.choices`
    _objective.name = _name

"""Training methods: one small class per method (CLIP, LaCLIP, LaCLIP-MT, CLIPS, PC-CLIP).

A method names the columns it needs (`check_columns`, before the first step), prepares its
rows and collator (`prepare_data`), computes the features of a batch (`features`: per-row
tensors, so the trainer's cached-feature accumulation can concatenate micro-batches) and the
loss on them (`loss`, through `langclip.modeling.losses`, the functions the models'
``forward(return_loss=True)`` use too). `METHODS` maps the ``--method`` names to the classes;
`Method.from_arguments` builds one from the run's model and flags.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

import datasets
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..errors import ConfigError, DataError
from ..modeling import CLIPSModel, LaCLIPModel, clip_loss, clips_loss, difference_loss, multi_positive_clip_loss
from ..processing.collators import CLIPSCollator, ContrastiveCollator, DifferenceCollator
from ..processing.generation.differences import check_difference_rows
from ..processing.loading import load_captions
from ..processing.text import PartialCaption, TextAugmenter
from ..processing.transforms import ImageTransform


def at_least_float32(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Floating tensors promoted to float32 or wider (losses under bf16 autocast run in float32)."""
    return tuple(t.to(torch.promote_types(t.dtype, torch.float32)) if t.is_floating_point() else t for t in tensors)


@dataclass(frozen=True)
class Method:
    """CLIP: one caption per image, `clip_loss`; the base every other method specialises.

    Class attributes: ``name`` (the ``--method``), ``model_class``, ``columns`` (the record
    columns it needs), ``config_overrides`` (model config values it sets) and ``lora_targets``
    (a regex for LoRA; None: ``--lora-target-modules``).
    """

    name: ClassVar[str] = "clip"
    model_class: ClassVar[type] = LaCLIPModel
    columns: ClassVar[tuple[str, ...]] = ("image", "caption")
    config_overrides: ClassVar[dict] = {}
    lora_targets: ClassVar[str | None] = None

    seed: int = 0
    skip_bad_samples: bool = False

    @classmethod
    def options(cls, model, model_args, data_args, train_args) -> dict:
        """This method's constructor arguments from the run's model and flags."""
        return {"seed": train_args.seed, "skip_bad_samples": data_args.skip_bad_samples}

    @classmethod
    def from_arguments(cls, model, model_args, data_args, train_args) -> Method:
        return cls(**cls.options(model, model_args, data_args, train_args))

    def check_columns(self, columns, where: str) -> None:
        """Raise a ValueError naming the method and every column of `columns` missing from ``where``'s data."""
        missing = [column for column in self.columns if column not in columns]
        if missing:
            raise DataError(
                f"--method {self.name} needs the column(s) {', '.join(map(repr, missing))}, which {where} does not "
                f"have (columns: {', '.join(map(repr, columns))}); map yours with --image-column, --caption-column, "
                "--rewrites-column or --synthetic-caption-column"
            )

    def freeze(self, model) -> None:
        """Set which parameters train when LoRA is off (all, for every method but PC-CLIP)."""

    def prepare_data(self, model, dataset, tokenizer, max_length: int, processor, device):
        """(rows, collator) for the DataLoader: the records as they are, with random-crop augmentation."""
        transform = ImageTransform.from_image_processor(processor, train=True, seed=self.seed)
        return dataset, self.collator(tokenizer, max_length, transform, dataset)

    def collator(self, tokenizer, max_length: int, image_transform, dataset) -> ContrastiveCollator:
        return ContrastiveCollator(tokenizer, max_length, image_transform=image_transform,
                                   skip_bad_samples=self.skip_bad_samples)

    def features(self, model, batch: dict) -> tuple[torch.Tensor, ...]:
        """(image (B, D), text (B, D)) normalised embeddings from the model's forward."""
        output = model(**batch)
        return at_least_float32(output.image_embeds, output.text_embeds)

    def loss(self, image: torch.Tensor, text: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
        return clip_loss(image, text, logit_scale)


@dataclass(frozen=True)
class LaCLIPMethod(Method):
    """LaCLIP: the text of each image is aug_T's uniform draw among the caption and its rewrites."""

    name: ClassVar[str] = "laclip"
    columns: ClassVar[tuple[str, ...]] = ("image", "caption", "rewrites")

    def collator(self, tokenizer, max_length: int, image_transform, dataset) -> ContrastiveCollator:
        return ContrastiveCollator(tokenizer, max_length, augmenter=TextAugmenter(self.seed),
                                   image_transform=image_transform, skip_bad_samples=self.skip_bad_samples)


@dataclass(frozen=True)
class LaCLIPMTMethod(LaCLIPMethod):
    """LaCLIP-MT: every image with all T = M + 1 of its texts, `multi_positive_clip_loss`.

    ``num_texts`` None: 1 + the number of rewrites of the first row.
    """

    name: ClassVar[str] = "laclip-mt"
    config_overrides: ClassVar[dict] = {"multi_positive": True}

    num_texts: int | None = None

    @classmethod
    def options(cls, model, model_args, data_args, train_args) -> dict:
        return {**super().options(model, model_args, data_args, train_args), "num_texts": model_args.num_texts}

    def collator(self, tokenizer, max_length: int, image_transform, dataset) -> ContrastiveCollator:
        num_texts = self.num_texts or 1 + len(next(iter(dataset)).get("rewrites") or [])
        return ContrastiveCollator(tokenizer, max_length, augmenter=TextAugmenter(self.seed), num_texts=num_texts,
                                   image_transform=image_transform, skip_bad_samples=self.skip_bad_samples)

    def features(self, model, batch: dict) -> tuple[torch.Tensor, ...]:
        """(image (B, D), all texts (B, T, D)) normalised embeddings; text column 0 is aug_T's draw."""
        output = model(**batch)
        return at_least_float32(output.image_embeds, output.all_text_embeds)

    def loss(self, image: torch.Tensor, texts: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
        return multi_positive_clip_loss(image, texts, logit_scale)


@dataclass(frozen=True)
class CLIPSMethod(Method):
    """CLIPS: web caption and partial synthetic caption for the text tower, the full synthetic caption for the captioner.

    Loss: ``contrastive_weight * contrastive + caption_weight * caption`` (`clips_loss`), the
    weights being the model config's. Features per row: image, web and partial embeddings,
    each row's summed caption NLL and caption token count; summed over the micro-batches, the
    recomputed gradients give the full-batch gradient, the caption term being the token
    mean over the whole local batch.
    """

    name: ClassVar[str] = "clips"
    model_class: ClassVar[type] = CLIPSModel

    partial_caption: str = "subcaption"
    partial_tokens: int = 32
    synthetic_column: str = "synthetic_caption"
    contrastive_weight: float = 1.0
    caption_weight: float = 2.0

    @property
    def required_columns(self) -> tuple[str, ...]:
        return ("image", "caption", self.synthetic_column)

    def check_columns(self, columns, where: str) -> None:
        missing = [column for column in self.required_columns if column not in columns]
        if missing:
            raise DataError(
                f"--method clips needs the column(s) {', '.join(map(repr, missing))}, which {where} does not have "
                f"(columns: {', '.join(map(repr, columns))}); name the synthetic caption column with "
                "--synthetic-caption-column"
            )

    @classmethod
    def options(cls, model, model_args, data_args, train_args) -> dict:
        return {**super().options(model, model_args, data_args, train_args),
                "partial_caption": data_args.partial_caption, "partial_tokens": data_args.partial_tokens,
                "synthetic_column": data_args.synthetic_caption_column,
                "contrastive_weight": model.config.contrastive_loss_weight,
                "caption_weight": model.config.caption_loss_weight}

    def collator(self, tokenizer, max_length: int, image_transform, dataset) -> CLIPSCollator:
        partial = PartialCaption(tokenizer, self.partial_caption, self.partial_tokens, max_length=max_length,
                                 seed=self.seed)
        return CLIPSCollator(tokenizer, max_length, partial, image_transform=image_transform,
                             synthetic_column=self.synthetic_column, skip_bad_samples=self.skip_bad_samples)

    def features(self, model, batch: dict) -> tuple[torch.Tensor, ...]:
        """(image, web, partial (B, D) embeddings, caption NLL sums (B,), caption token counts (B,))."""
        output = model(**batch)
        return at_least_float32(output.image_embeds, output.text_embeds, output.partial_text_embeds,
                                output.caption_nll_sum, output.caption_tokens)

    def loss(self, image, web, partial, caption_nll_sum, caption_tokens, logit_scale) -> torch.Tensor:
        return clips_loss(image, web, partial, caption_nll_sum, caption_tokens, logit_scale,
                          self.contrastive_weight, self.caption_weight)[0]


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


def pcclip_loss(model, batch: Mapping, clip_weight: float = 0.0) -> torch.Tensor:
    """`PCCLIPMethod`'s loss on a model and a `DifferenceCollator` batch."""
    method = PCCLIPMethod(clip_weight=clip_weight)
    return method.loss(*method.features(model, batch), model.logit_scale.exp())


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
class PCCLIPMethod(Method):
    """PC-CLIP finetuning on image pairs and their difference texts.

    L = difference_loss(f_a, f_b, g(d)) + clip_weight * clip_loss(n(f_a), n(g(c_a)), s); PC-CLIP's
    own loss has tau = 1, fixed, so the logit scale s only enters the optional CLIP term, which
    needs the captions of the a images. Only the text transformer blocks train (or LoRA on
    them). Pair ids join the rows of ``--train-data`` by their ``id``; images go through the
    eval transform (the image tower is frozen: no augmentation), once for all with
    ``precompute`` (``--precompute-image-embeddings``), else in every batch.
    """

    name: ClassVar[str] = "pcclip"
    columns: ClassVar[tuple[str, ...]] = ("image", "id")
    lora_targets: ClassVar[str | None] = TEXT_LAYER_LORA_TARGETS

    clip_weight: float = 0.0
    difference_data: str | None = None
    precompute: bool = False

    @classmethod
    def options(cls, model, model_args, data_args, train_args) -> dict:
        if data_args.difference_data is None:
            raise ConfigError("--method pcclip needs --difference-data: rows of (id_a, id_b, difference)")
        return {**super().options(model, model_args, data_args, train_args), "clip_weight": train_args.clip_loss_weight,
                "difference_data": data_args.difference_data, "precompute": data_args.precompute_image_embeddings}

    def check_columns(self, columns, where: str) -> None:
        super().check_columns(columns, where)
        if self.clip_weight and "caption" not in columns:
            raise ConfigError(f"--clip-loss-weight needs the captions of the images: {where} has no 'caption' column")

    def freeze(self, model) -> None:
        freeze_all_but_text_layers(model)

    def prepare_data(self, model, images, tokenizer, max_length: int, processor, device):
        """(``--difference-data`` rows, `DifferenceCollator`)."""
        if not isinstance(images, datasets.Dataset):
            raise ConfigError("--method pcclip looks images up by id: --train-data must not be streamed or webdataset shards")
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

    def loss(self, image_a, image_b, text, *captions_and_scale) -> torch.Tensor:
        """Called as ``loss(image_a, image_b, text[, captions], logit_scale)``."""
        *captions, logit_scale = captions_and_scale
        loss = difference_loss(image_a, image_b, text)
        if self.clip_weight:
            if not captions:
                raise ValueError("clip_weight > 0 needs the captions of the a images in the batch (caption_input_ids)")
            loss = loss + self.clip_weight * clip_loss(
                F.normalize(image_a, dim=-1), F.normalize(captions[0], dim=-1), logit_scale
            )
        return loss


METHODS: dict[str, type[Method]] = {
    method.name: method for method in (Method, LaCLIPMethod, LaCLIPMTMethod, CLIPSMethod, PCCLIPMethod)
}

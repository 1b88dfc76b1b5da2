"""Training methods: what the trainer needs to know about CLIP, LaCLIP, LaCLIP-MT, CLIPS and PC-CLIP.

A `Method` names its model class, how rows become batches (its collator), how a batch
becomes features, and the loss on those features (through `langclip.modeling.losses`).
`METHODS` maps the ``--method`` names to them.

**clips.** The features are per-row tensors, so `trainer.forward_backward`'s cached-feature
accumulation (accum_freq > 1) concatenates them like CLIP's: image, web-caption and
partial-caption embeddings, each row's summed caption NLL and token count, and the loss
weights (w_c, w_cap) repeated on every row. Summing the recomputed micro-batch gradients
gives the full-batch gradient of w_c * contrastive + w_cap * caption, the caption term
being the token mean over the whole local batch.

**pcclip.** Only the text encoder's transformer blocks train (or LoRA adapters on them);
the image tower is frozen, so image embeddings can be computed once and looked up by id.
`setup_pcclip` is the method's hook in `trainer.train`: it turns the image dataset and
``--difference-data`` into pair rows, a `DifferenceCollator` and the loss.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import datasets
import torch
import torch.nn.functional as F
from accelerate.utils import extract_model_from_parallel
from tqdm.auto import tqdm

from ..modeling import CLIPSModel, LaCLIPModel, clip_loss, clips_loss, difference_loss, multi_positive_clip_loss
from ..processing.collators import CLIPSCollator, ContrastiveCollator, DifferenceCollator
from ..processing.generation.differences import check_difference_rows
from ..processing.loading import load_captions
from ..processing.text import PartialCaption, TextAugmenter
from ..processing.transforms import ImageTransform
from .arguments import DataArguments


def contrastive_features(model, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised (image (B, D), text (B, D) or (B, T, D)) features through the model's forward, at least float32."""
    output = model(**batch)
    dtype = torch.promote_types(output.image_embeds.dtype, torch.float32)
    images, texts = output.image_embeds.to(dtype), output.text_model_output.pooler_output.to(dtype)
    if texts.shape[0] == images.shape[0]:
        return images, output.text_embeds.to(dtype)
    return images, F.normalize(texts, dim=-1).view(images.shape[0], -1, texts.shape[-1])


def contrastive_collator(method: Method, tokenizer, max_length: int, image_transform, data_args: DataArguments,
                         num_texts: int | None, seed: int) -> ContrastiveCollator:
    return ContrastiveCollator(
        tokenizer,
        max_length,
        augmenter=TextAugmenter(seed) if method.rewrites else None,
        num_texts=num_texts if method.multi_positive else None,
        image_transform=image_transform,
        skip_bad_samples=data_args.skip_bad_samples,
    )


@dataclass(frozen=True)
class Method:
    """A training method: model class, collator factory, features of a batch, and the loss on those features."""

    model_class: type
    loss: Callable
    rewrites: bool = False
    multi_positive: bool = False
    make_collator: Callable = contrastive_collator
    features: Callable = contrastive_features
    config_overrides: dict = field(default_factory=dict)
    freeze: Callable | None = None  # model -> None: which parameters train when not using LoRA (default: all)
    lora_targets: str | None = None  # LoRA target regex (default: --lora-target-modules)
    setup: Callable | None = None  # (method, model, dataset, ...) -> (method, rows, collator): a method's own data


def clips_collator(method, tokenizer, max_length: int, image_transform, data_args, num_texts, seed: int) -> CLIPSCollator:
    """`CLIPSCollator` with the ``--partial-caption`` strategy and ``--partial-tokens`` budget K."""
    partial = PartialCaption(tokenizer, data_args.partial_caption, data_args.partial_tokens, max_length=max_length,
                             seed=seed)
    return CLIPSCollator(tokenizer, max_length, partial, image_transform=image_transform,
                         synthetic_column=data_args.synthetic_caption_column,
                         skip_bad_samples=data_args.skip_bad_samples)


def clips_features(model, batch: dict) -> tuple[torch.Tensor, ...]:
    """(image, web, partial embeddings, caption NLL sums, caption token counts, loss weights), per row, >= float32."""
    output = model(**batch)
    dtype = torch.promote_types(output.image_embeds.dtype, torch.float32)
    config = extract_model_from_parallel(model).config
    weights = torch.tensor([config.contrastive_loss_weight, config.caption_loss_weight], dtype=dtype,
                           device=output.image_embeds.device).expand(output.image_embeds.shape[0], 2)
    return (output.image_embeds.to(dtype), output.text_embeds.to(dtype), output.partial_text_embeds.to(dtype),
            output.caption_nll_sum.to(dtype), output.caption_tokens, weights)


def clips_training_loss(image, web, partial, caption_nll_sum, caption_tokens, loss_weights, logit_scale) -> torch.Tensor:
    """`clips_loss` total with the weights carried by the features."""
    return clips_loss(image, web, partial, caption_nll_sum, caption_tokens, logit_scale,
                      loss_weights[0, 0], loss_weights[0, 1])[0]


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
        raise ValueError("the model has no text_model.encoder.layers parameters to train")
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


@dataclasses.dataclass(frozen=True)
class PCCLIPLoss:
    """L = difference_loss(f_a, f_b, g(d)) + clip_weight * clip_loss(n(f_a), n(g(c_a)), s).

    Called as ``loss(image_a, image_b, text[, captions], logit_scale)`` (`difference_features`,
    then the exponentiated logit scale, which only the CLIP term uses: PC-CLIP's own loss has
    tau = 1, fixed). The CLIP term needs the captions of the a images.
    """

    clip_weight: float = 0.0

    def __call__(self, image_a, image_b, text, *captions_and_scale) -> torch.Tensor:
        *captions, logit_scale = captions_and_scale
        loss = difference_loss(image_a, image_b, text)
        if self.clip_weight:
            if not captions:
                raise ValueError("clip_weight > 0 needs the captions of the a images in the batch (caption_input_ids)")
            loss = loss + self.clip_weight * clip_loss(
                F.normalize(image_a, dim=-1), F.normalize(captions[0], dim=-1), logit_scale
            )
        return loss


def pcclip_loss(model, batch: Mapping, clip_weight: float = 0.0) -> torch.Tensor:
    """`PCCLIPLoss` on a model and a `DifferenceCollator` batch."""
    return PCCLIPLoss(clip_weight)(*difference_features(model, batch), model.logit_scale.exp())


def load_difference_rows(path: str, image_ids) -> datasets.Dataset:
    """``(id_a, id_b, difference)`` rows (dataset folder, Hub id, JSON(L), CSV, Parquet), checked against ``image_ids``."""
    rows = load_captions(path, caption_column="difference", id_column="id_a")
    missing = [column for column in ("id_a", "id_b", "difference") if column not in rows.column_names]
    if missing:
        raise ValueError(f"{path}: no column(s) {missing} (columns: {rows.column_names}); expected id_a, id_b, difference")
    rows = rows.cast_column("id_a", datasets.Value("string")).cast_column("id_b", datasets.Value("string"))
    if len(rows) == 0:
        raise ValueError(f"{path} has no difference rows")
    try:
        check_difference_rows(rows, image_ids)
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None
    return rows


def setup_pcclip(method, model, images, tokenizer, max_length: int, processor, data_args, train_args, device):
    """The ``pcclip`` method's data: (method with its loss, ``--difference-data`` rows, `DifferenceCollator`).

    Pair ids join the rows of ``--train-data`` by their ``id``. Images go through the eval
    transform (the image tower is frozen: no augmentation), once for all with
    ``--precompute-image-embeddings``, else in every batch.
    """
    if data_args.difference_data is None:
        raise ValueError("--method pcclip needs --difference-data: rows of (id_a, id_b, difference)")
    if not isinstance(images, datasets.Dataset):
        raise ValueError("--method pcclip looks images up by id: --train-data must not be streamed or webdataset shards")
    index = {str(image_id): row for row, image_id in enumerate(images["id"])}
    pairs = load_difference_rows(data_args.difference_data, index)
    transform = ImageTransform.from_image_processor(processor)

    def pixels(image_id: str) -> torch.Tensor:
        return transform(images[index[image_id]]["image"], where=f"image id {image_id!r}")

    lookup = pixels
    if data_args.precompute_image_embeddings:
        needed = sorted(set(pairs["id_a"]) | set(pairs["id_b"]), key=index.get)
        model.to(device).eval()
        embeddings = {}
        for start in tqdm(range(0, len(needed), 256), desc="image embeddings", unit="batch"):
            ids = needed[start : start + 256]
            features = precompute_image_embeddings(model, torch.stack([pixels(i) for i in ids]).to(device))
            embeddings.update(zip(ids, features.float().cpu()))
        lookup = embeddings.__getitem__
    captions = None
    if train_args.clip_loss_weight:
        captions = lambda image_id: images[index[image_id]]["caption"]  # noqa: E731
    collator = DifferenceCollator(tokenizer, max_length, lookup, captions)
    return dataclasses.replace(method, loss=PCCLIPLoss(train_args.clip_loss_weight)), pairs, collator


METHODS = {
    "clip": Method(LaCLIPModel, clip_loss),
    "laclip": Method(LaCLIPModel, clip_loss, rewrites=True),
    "laclip-mt": Method(LaCLIPModel, multi_positive_clip_loss, rewrites=True, multi_positive=True,
                        config_overrides={"multi_positive": True}),
    "pcclip": Method(LaCLIPModel, PCCLIPLoss(), features=difference_features, freeze=freeze_all_but_text_layers,
                     lora_targets=TEXT_LAYER_LORA_TARGETS, setup=setup_pcclip),
    "clips": Method(CLIPSModel, clips_training_loss, make_collator=clips_collator, features=clips_features),
}

"""PC-CLIP finetuning pieces: which parameters train, the pair batches, the loss, and the trainer's data setup.

Only the text encoder's transformer blocks train (or LoRA adapters on them); the image
tower is frozen, so image embeddings can be computed once and looked up by id.
`setup_pcclip` is the ``pcclip`` method's hook in `trainer.train`: it turns the image
dataset and ``--difference-data`` into pair rows, a `DifferenceCollator` and the loss.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

import datasets
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..modeling.losses import clip_loss, difference_loss
from ..processing.differences import check_difference_rows
from ..processing.image_transforms import ImageTransform
from ..processing.rewrite import load_captions

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


class DifferenceCollator:
    """Rows ``{id_a, id_b, difference}`` -> a PC-CLIP batch.

    ``image_lookup(id)`` returns either a precomputed image embedding (1-d) or pixel values
    (3-d); the batch holds ``image_embeds_a/b`` or ``pixel_values_a/b`` accordingly, plus
    the tokenised difference texts. With ``caption_lookup(id)``, it also holds the tokenised
    captions of the a images (``caption_input_ids``, ``caption_attention_mask``) for the CLIP term.
    """

    def __init__(
        self,
        tokenizer,
        max_length: int,
        image_lookup: Callable[[str], torch.Tensor],
        caption_lookup: Callable[[str], str] | None = None,
    ):
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.image_lookup = image_lookup
        self.caption_lookup = caption_lookup

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        return self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")

    def __call__(self, rows: list[Mapping]) -> dict[str, torch.Tensor]:
        images_a = torch.stack([self.image_lookup(row["id_a"]) for row in rows])
        images_b = torch.stack([self.image_lookup(row["id_b"]) for row in rows])
        kind = "image_embeds" if images_a.dim() == 2 else "pixel_values"
        batch = {f"{kind}_a": images_a, f"{kind}_b": images_b, **self.tokenize([row["difference"] for row in rows])}
        if self.caption_lookup is not None:
            captions = self.tokenize([self.caption_lookup(row["id_a"]) for row in rows])
            batch.update({f"caption_{key}": value for key, value in captions.items()})
        return batch


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

"""PC-CLIP finetuning pieces: which parameters train, the pair batches, and the loss call.

Only the text encoder's transformer blocks train (or LoRA adapters on them); the image
tower is frozen, so image embeddings can be computed once and looked up by id.
"""

from collections.abc import Callable, Mapping

import torch

from ..modeling.losses import clip_loss, difference_loss

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
    the tokenised difference texts.
    """

    def __init__(self, tokenizer, max_length: int, image_lookup: Callable[[str], torch.Tensor]):
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.image_lookup = image_lookup

    def __call__(self, rows: list[Mapping]) -> dict[str, torch.Tensor]:
        images_a = torch.stack([self.image_lookup(row["id_a"]) for row in rows])
        images_b = torch.stack([self.image_lookup(row["id_b"]) for row in rows])
        kind = "image_embeds" if images_a.dim() == 2 else "pixel_values"
        tokens = self.tokenizer(
            [row["difference"] for row in rows], padding=True, truncation=True, max_length=self.max_length,
            return_tensors="pt",
        )
        return {f"{kind}_a": images_a, f"{kind}_b": images_b, **tokens}


def _image_features(model, batch: Mapping, side: str) -> torch.Tensor:
    if f"image_embeds_{side}" in batch:
        return batch[f"image_embeds_{side}"]
    with torch.no_grad():
        return model.get_image_features(pixel_values=batch[f"pixel_values_{side}"]).pooler_output


def pcclip_loss(model, batch: Mapping, clip_weight: float = 0.0, clip_batch: Mapping | None = None) -> torch.Tensor:
    """difference_loss on the batch, plus ``clip_weight`` * the CLIP loss of ``clip_batch`` when given."""
    text = model.get_text_features(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).pooler_output
    loss = difference_loss(_image_features(model, batch, "a"), _image_features(model, batch, "b"), text)
    if clip_weight:
        if clip_batch is None:
            raise ValueError("clip_weight > 0 needs an image-caption clip_batch")
        image = model.get_image_features(pixel_values=clip_batch["pixel_values"]).pooler_output
        caption = model.get_text_features(
            input_ids=clip_batch["input_ids"], attention_mask=clip_batch["attention_mask"]
        ).pooler_output
        loss = loss + clip_weight * clip_loss(
            torch.nn.functional.normalize(image, dim=-1), torch.nn.functional.normalize(caption, dim=-1),
            model.logit_scale.exp(),
        )
    return loss

"""PC-CLIP finetuning: what trains, the collator, and the loss with and without cached image embeddings."""

import pytest
import torch
from peft import LoraConfig, get_peft_model

from langclip import LaCLIPModel
from langclip.modeling.losses import difference_loss
from langclip.processing.difference_rows import check_difference_rows
from langclip.processing.collators import DifferenceCollator
from langclip.training.methods import freeze_all_but_text_layers
from langclip.training.objectives import TEXT_LAYER_LORA_TARGETS, precompute_image_embeddings
from train_utils import pcclip_loss

ROWS = [
    {"id_a": "0", "id_b": "1", "difference": "a red circle on the left"},
    {"id_a": "2", "id_b": "0", "difference": "two blue squares"},
    {"id_a": "1", "id_b": "3", "difference": "a small yellow star on top"},
]


@pytest.fixture
def images():
    return torch.randn(4, 3, 32, 32)


def _step(model, batch):
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    pcclip_loss(model, batch).backward()
    optimizer.step()


def test_only_text_layers_change(tiny_config, tokenizer, images):
    model = LaCLIPModel(tiny_config)
    freeze_all_but_text_layers(model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    batch = DifferenceCollator(tokenizer, 16, lambda i: images[int(i)])(ROWS)
    assert set(batch) == {"pixel_values_a", "pixel_values_b", "input_ids", "attention_mask"}
    _step(model, batch)
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert changed and all(k.startswith("text_model.encoder.layers.") for k in changed), changed
    assert any(".self_attn." in k for k in changed) and any(".mlp." in k for k in changed)


def test_lora_trains_adapters_only(tiny_config, tokenizer, images):
    base = LaCLIPModel(tiny_config)
    model = get_peft_model(base, LoraConfig(r=2, target_modules=TEXT_LAYER_LORA_TARGETS, init_lora_weights="gaussian"))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    _step(model, DifferenceCollator(tokenizer, 16, lambda i: images[int(i)])(ROWS))
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert changed and all("lora_" in k and "text_model.encoder.layers." in k for k in changed), changed


def test_cached_image_embeddings_give_the_same_loss(tiny_config, tokenizer, images):
    model = LaCLIPModel(tiny_config).eval()
    embeds = precompute_image_embeddings(model, images, batch_size=3)
    cached = DifferenceCollator(tokenizer, 16, lambda i: embeds[int(i)])(ROWS)
    assert "image_embeds_a" in cached
    pixels = DifferenceCollator(tokenizer, 16, lambda i: images[int(i)])(ROWS)
    torch.testing.assert_close(pcclip_loss(model, cached), pcclip_loss(model, pixels))
    text = model.get_text_features(input_ids=cached["input_ids"], attention_mask=cached["attention_mask"]).pooler_output
    expected = difference_loss(embeds[[0, 2, 1]], embeds[[1, 0, 3]], text)
    torch.testing.assert_close(pcclip_loss(model, cached), expected)


def test_optional_clip_loss_is_added(tiny_config, tokenizer, images):
    model = LaCLIPModel(tiny_config).eval()
    captions = ["a red circle", "blue square", "a star", "two shapes"]
    batch = DifferenceCollator(tokenizer, 16, lambda i: images[int(i)], lambda i: captions[int(i)])(ROWS)
    assert tokenizer.batch_decode(batch["caption_input_ids"], skip_special_tokens=True) == [
        captions[0], captions[2], captions[1]
    ]  # the captions of the a images
    a = [0, 2, 1]
    clip_only = model(
        pixel_values=images[a], input_ids=batch["caption_input_ids"], attention_mask=batch["caption_attention_mask"],
        return_loss=True,
    ).loss
    torch.testing.assert_close(pcclip_loss(model, batch, clip_weight=0.5), pcclip_loss(model, batch) + 0.5 * clip_only)
    no_captions = DifferenceCollator(tokenizer, 16, lambda i: images[int(i)])(ROWS)
    with pytest.raises(ValueError, match="needs the captions of the a images"):
        pcclip_loss(model, no_captions, clip_weight=0.5)


@pytest.mark.parametrize(
    "row, message",
    [
        ({"id_a": "0", "id_b": "9", "difference": "bigger and redder"}, "id_b='9' is not an id"),
        ({"id_a": "1", "id_b": "1", "difference": "bigger and redder"}, "pairs image '1' with itself"),
        ({"id_a": "0", "id_b": "1", "difference": "  "}, "empty difference text"),
        ({"id_a": "0", "difference": "x y"}, "has no 'id_b' column"),
    ],
)
def test_bad_difference_rows_are_named(row, message):
    with pytest.raises(ValueError, match=f"difference row 3.*{message}|difference row 3 {message}"):
        check_difference_rows(ROWS + [row], known_ids=["0", "1", "2", "3"])

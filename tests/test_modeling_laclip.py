"""LaCLIPModel: the forward's text layouts, its losses, errors, and Hub-format checkpoints."""

import pytest
import torch
from transformers import AutoConfig, AutoModel, CLIPModel

from langclip import LaCLIPConfig, LaCLIPModel
from langclip.modeling.activations import QuickGELU
from langclip.modeling.losses import clip_loss, multi_positive_clip_loss

from conftest import tiny_laclip_config

B, T, L = 3, 4, 7


def _inputs(tokenizer, texts_per_image=None):
    shape = (B, L) if texts_per_image is None else (B, texts_per_image, L)
    ids = torch.randint(4, len(tokenizer), shape)
    ids[..., 0], ids[..., -1] = tokenizer.bos_token_id, tokenizer.eos_token_id
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "pixel_values": torch.randn(B, 3, 32, 32)}


def _text_embeds(model, ids):
    features = model.get_text_features(input_ids=ids).pooler_output
    return features / features.norm(dim=-1, keepdim=True)


def test_single_text_loss_equals_transformers_clip_loss(tiny_config, tokenizer):
    model = LaCLIPModel(tiny_config).eval()
    plain = CLIPModel(tiny_config).eval()
    plain.load_state_dict(model.state_dict())
    inputs = _inputs(tokenizer)
    ours, theirs = model(**inputs, return_loss=True), plain(**inputs, return_loss=True)
    torch.testing.assert_close(ours.loss, theirs.loss)
    torch.testing.assert_close(ours.logits_per_image, theirs.logits_per_image)


def test_quick_gelu_matches_its_float64_formula_and_gradient():
    x = torch.linspace(-12, 12, 2001, dtype=torch.float64).requires_grad_()
    reference = x * torch.sigmoid(1.702 * x)
    (reference_grad,) = torch.autograd.grad(reference.sum(), x)
    x32 = x.detach().float().requires_grad_()
    ours = QuickGELU()(x32)
    (ours_grad,) = torch.autograd.grad(ours.sum(), x32)
    torch.testing.assert_close(ours.double(), reference.detach(), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(ours_grad.double(), reference_grad, rtol=1e-6, atol=1e-6)


def test_fused_quick_gelu_trains_as_transformers_clip_does(tiny_config, tokenizer):
    assert tiny_config.vision_config.hidden_act == tiny_config.text_config.hidden_act == "quick_gelu"
    model = LaCLIPModel(tiny_config).train()
    plain = CLIPModel(tiny_config).train()
    plain.load_state_dict(model.state_dict())
    assert {type(layer.mlp.activation_fn) for layer in model.vision_model.encoder.layers} == {QuickGELU}
    inputs = _inputs(tokenizer)
    model(**inputs, return_loss=True).loss.backward()
    plain(**inputs, return_loss=True).loss.backward()
    theirs = dict(plain.named_parameters())
    for name, parameter in model.named_parameters():
        if name != "logit_bias":
            torch.testing.assert_close(parameter.grad, theirs[name].grad, rtol=1e-4, atol=1e-6, msg=name)


def test_multi_text_without_multi_positive_uses_column_zero(tiny_config, tokenizer):
    model = LaCLIPModel(tiny_config).eval()
    inputs = _inputs(tokenizer, T)
    out = model(**inputs, return_loss=True)
    first = {**inputs, "input_ids": inputs["input_ids"][:, 0], "attention_mask": inputs["attention_mask"][:, 0]}
    torch.testing.assert_close(out.loss, model(**first, return_loss=True).loss)


def test_multi_positive_loss_over_all_columns(tokenizer):
    model = LaCLIPModel(tiny_laclip_config(tokenizer, multi_positive=True)).eval()
    inputs = _inputs(tokenizer, T)
    out = model(**inputs, return_loss=True)
    image = model.get_image_features(pixel_values=inputs["pixel_values"]).pooler_output
    image = image / image.norm(dim=-1, keepdim=True)
    texts = torch.stack([_text_embeds(model, inputs["input_ids"][:, j]) for j in range(T)], dim=1)
    expected = multi_positive_clip_loss(image.double(), texts.double(), model.logit_scale.exp().double())
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-5)
    torch.testing.assert_close(out.text_embeds, texts[:, 0])
    assert out.loss.item() != pytest.approx(clip_loss(image, texts[:, 0], model.logit_scale.exp()).item(), rel=1e-3)


def test_clamp_logit_scale(tiny_config):
    model = LaCLIPModel(tiny_config)
    assert model.logit_scale.item() == pytest.approx(2.6592)  # ln(1 / 0.07)
    with torch.no_grad():
        model.logit_scale.fill_(7.0)
    model.clamp_logit_scale_()
    assert model.logit_scale.item() == pytest.approx(torch.log(torch.tensor(100.0)).item())
    with torch.no_grad():
        model.logit_scale.fill_(-1.0)
    model.clamp_logit_scale_()
    assert model.logit_scale.item() == 0.0


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda x: x.update(pixel_values=x["pixel_values"][:2]), "batch sizes differ: 2 images, 3 texts"),
        (lambda x: x.update(input_ids=x["input_ids"][:, None, None]), r"input_ids must be \(batch, length\)"),
        (lambda x: x.update(attention_mask=x["attention_mask"][:, :2]), "attention_mask shape"),
    ],
)
def test_bad_input_is_named(tiny_config, tokenizer, change, message):
    inputs = _inputs(tokenizer, T)
    change(inputs)
    with pytest.raises(ValueError, match=message):
        LaCLIPModel(tiny_config)(**inputs, return_loss=True)


def test_nan_features_are_reported(tiny_config, tokenizer):
    inputs = _inputs(tokenizer)
    inputs["pixel_values"][0] = float("nan")
    with pytest.raises(ValueError, match="image_features contains NaN"):
        LaCLIPModel(tiny_config)(**inputs, return_loss=True)


def test_config_rejects_wrong_types():
    with pytest.raises(Exception, match="multi_positive"):
        LaCLIPConfig(multi_positive="yes")


def test_save_load_round_trip_and_auto_classes(tmp_path, tokenizer):
    model = LaCLIPModel(tiny_laclip_config(tokenizer, multi_positive=True)).eval()
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file() and not list(tmp_path.glob("*.bin"))
    assert AutoConfig.from_pretrained(tmp_path).model_type == "laclip"
    loaded = AutoModel.from_pretrained(tmp_path).eval()
    assert type(loaded) is LaCLIPModel and loaded.config.multi_positive
    for key, value in model.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key


def test_plain_clip_compatibility_both_ways(tmp_path, tiny_config, tokenizer):
    model = LaCLIPModel(tiny_config).eval()
    model.save_pretrained(tmp_path / "laclip")
    plain, info = CLIPModel.from_pretrained(tmp_path / "laclip", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    inputs = _inputs(tokenizer)
    with torch.no_grad():  # equal up to float32 rounding: our QuickGELU is silu(1.702 x) / 1.702, theirs x sigmoid(1.702 x)
        torch.testing.assert_close(plain.eval()(**inputs).text_embeds, model(**inputs).text_embeds, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(plain(**inputs).image_embeds, model(**inputs).image_embeds, rtol=1e-5, atol=1e-6)

    plain.save_pretrained(tmp_path / "clip")  # e.g. an OpenAI or LAION CLIP checkpoint folder
    from_clip, info = LaCLIPModel.from_pretrained(tmp_path / "clip", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert isinstance(from_clip.config, LaCLIPConfig) and not from_clip.config.multi_positive
    with torch.no_grad():
        torch.testing.assert_close(from_clip.eval()(**inputs).logits_per_image, model(**inputs).logits_per_image)


TIMM_VIT = dict(vision_qk_norm=True, vision_pre_layernorm=False)


def test_default_architecture_is_plain_clip_and_the_timm_vit_is_not(tokenizer):
    config = tiny_laclip_config(tokenizer)
    assert config.is_standard_clip and (config.vision_qk_norm, config.vision_pre_layernorm) == (False, True)
    assert type(LaCLIPModel(config).vision_model).__name__ == "CLIPVisionModel"
    timm = LaCLIPModel(tiny_laclip_config(tokenizer, **TIMM_VIT))
    assert not timm.config.is_standard_clip and type(timm.vision_model).__name__ == "ViTVisionModel"
    names = set(timm.state_dict())
    assert "vision_model.encoder.layers.0.self_attn.q_norm.weight" in names
    assert not any("pre_layrnorm" in name for name in names)


def _reference_qk_norm_tower(model, pixels):
    """The vision tower written out in float64 (timm's order): patch embeddings + cls + positions, no pre-norm,
    blocks with a LayerNorm over each head's q and k, LayerNorm over every token, then the class token."""
    sd = {k.removeprefix("vision_model."): v.double() for k, v in model.state_dict().items()
          if k.startswith("vision_model.")}
    config = model.config.vision_config
    eps, heads = config.layer_norm_eps, config.num_attention_heads
    x = torch.nn.functional.conv2d(pixels, sd["embeddings.patch_embedding.weight"], stride=config.patch_size)
    x = x.flatten(2).transpose(1, 2)
    x = torch.cat([sd["embeddings.class_embedding"].expand(len(x), 1, -1), x], 1)
    x = x + sd["embeddings.position_embedding.weight"]
    width = x.shape[-1]
    ln = torch.nn.functional.layer_norm
    for i in range(config.num_hidden_layers):
        p = f"encoder.layers.{i}."
        h = ln(x, (width,), sd[p + "layer_norm1.weight"], sd[p + "layer_norm1.bias"], eps)
        q, k, v = (torch.nn.functional.linear(h, sd[f"{p}self_attn.{n}_proj.weight"], sd[f"{p}self_attn.{n}_proj.bias"])
                   .view(*h.shape[:2], heads, -1) for n in "qkv")
        q = ln(q, (q.shape[-1],), sd[p + "self_attn.q_norm.weight"], sd[p + "self_attn.q_norm.bias"], eps)
        k = ln(k, (k.shape[-1],), sd[p + "self_attn.k_norm.weight"], sd[p + "self_attn.k_norm.bias"], eps)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))
        attn = ((q @ k.transpose(-1, -2)) * q.shape[-1] ** -0.5).softmax(-1) @ v
        attn = attn.transpose(1, 2).reshape(x.shape)
        x = x + torch.nn.functional.linear(attn, sd[p + "self_attn.out_proj.weight"], sd[p + "self_attn.out_proj.bias"])
        h = ln(x, (width,), sd[p + "layer_norm2.weight"], sd[p + "layer_norm2.bias"], eps)
        h = torch.nn.functional.gelu(torch.nn.functional.linear(h, sd[p + "mlp.fc1.weight"], sd[p + "mlp.fc1.bias"]))
        x = x + torch.nn.functional.linear(h, sd[p + "mlp.fc2.weight"], sd[p + "mlp.fc2.bias"])
    return ln(x, (width,), sd["post_layernorm.weight"], sd["post_layernorm.bias"], eps)[:, 0]  # norm, then cls


@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])
def test_qk_norm_tower_matches_a_float64_reference_with_either_attention(tmp_path, tokenizer, attn_implementation):
    config = tiny_laclip_config(tokenizer, **TIMM_VIT)
    config.vision_config.hidden_act, config.vision_config.layer_norm_eps = "gelu", 1e-6
    model = LaCLIPModel(config)
    with torch.no_grad():  # non-trivial norms, so that a missing or misplaced one shows
        for name, parameter in model.vision_model.named_parameters():
            if "norm" in name:
                parameter.add_(torch.randn_like(parameter) * 0.3)
    model.save_pretrained(tmp_path)
    loaded = LaCLIPModel.from_pretrained(tmp_path, attn_implementation=attn_implementation).eval()
    assert loaded.vision_model.config._attn_implementation == attn_implementation
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        pooled = loaded.vision_model(pixel_values=pixels).pooler_output
    torch.testing.assert_close(pooled.double(), _reference_qk_norm_tower(loaded, pixels.double()), rtol=1e-5,
                               atol=1e-5)


def test_plain_clip_model_reports_the_qk_norm_weights_it_drops(tmp_path, tokenizer, caplog):
    """The documented behaviour (README, model card): CLIPModel loads the folder but lists q_norm/k_norm as
    UNEXPECTED and pre_layrnorm as MISSING (freshly initialised), so its image embeddings differ."""
    model = LaCLIPModel(tiny_laclip_config(tokenizer, **TIMM_VIT)).eval()
    model.save_pretrained(tmp_path)
    with caplog.at_level("WARNING"):
        plain = CLIPModel.from_pretrained(tmp_path).eval()
    report = caplog.text
    assert "q_norm" in report and "UNEXPECTED" in report and "pre_layrnorm" in report and "MISSING" in report
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert not torch.allclose(plain.get_image_features(pixel_values=pixels).pooler_output,
                                  model.get_image_features(pixel_values=pixels).pooler_output, atol=1e-3)

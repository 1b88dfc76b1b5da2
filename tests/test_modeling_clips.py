"""CLIPSModel: captioner mask, losses against float64 references, CLIPModel export, save/load, overfitting."""

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModel, CLIPModel

from conftest import tiny_laclip_config
from langclip import CLIPSConfig, CLIPSModel
from langclip.modeling.clips.modeling_clips import captioner_attention_mask
from langclip.modeling.losses import CLIPSFeatures, caption_nll, clips_loss

RELEASED = dict(vision_pooling="mean", vision_pre_layernorm=False, text_attention="bidirectional", text_pooling="last")


def tiny_clips_config(tokenizer, **overrides) -> CLIPSConfig:
    base = tiny_laclip_config(tokenizer)
    return CLIPSConfig(text_config=base.text_config.to_dict(), vision_config=base.vision_config.to_dict(),
                       projection_dim=16, captioner_heads=2, captioner_max_length=24, **overrides)


def batch(tokenizer):
    web = tokenizer(["a red circle", "two blue square shapes", "a star"], padding=True, return_tensors="pt")
    caption = tokenizer(["a photo of a red circle on the left", "two blue square", "a small yellow star on top"],
                        padding=True, return_tensors="pt")
    partial = tokenizer(["a red circle on", "blue square", "small yellow star"], padding=True, return_tensors="pt")
    return {"pixel_values": torch.randn(3, 3, 32, 32), "input_ids": web.input_ids, "attention_mask": web.attention_mask,
            "partial_input_ids": partial.input_ids, "partial_attention_mask": partial.attention_mask,
            "caption_input_ids": caption.input_ids, "caption_attention_mask": caption.attention_mask}


def test_captioner_attention_mask_by_hand():
    allowed = captioner_attention_mask(torch.tensor([[1, 1, 0]]), 2)[0, 0]
    expected = torch.tensor([[1, 1, 0, 0, 0],
                             [1, 1, 0, 0, 0],
                             [1, 1, 0, 0, 0],
                             [1, 1, 0, 1, 0],
                             [1, 1, 0, 1, 1]], dtype=torch.bool)
    assert torch.equal(allowed, expected)


def test_captioner_mask_in_the_decoder(tokenizer):
    captioner = CLIPSModel(tiny_clips_config(tokenizer)).captioner.eval()
    image, web = torch.randn(2, 5, 32), torch.randn(2, 4, 32)
    web_mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    caption = torch.randint(4, len(tokenizer), (2, 6))
    prefix = image.shape[1] + web.shape[1]
    base = captioner(image, web, web_mask, caption)
    for j in range(caption.shape[1]):
        edited = caption.clone()
        edited[:, j] = (edited[:, j] + 1 - 4) % (len(tokenizer) - 4) + 4
        out = captioner(image, web, web_mask, edited)
        torch.testing.assert_close(out[:, : prefix + j], base[:, : prefix + j], rtol=0, atol=1e-6)
        assert (out[:, prefix + j :] - base[:, prefix + j :]).abs().amax() > 1e-4  # the edit is seen from j on
    padded_web = web.clone()
    padded_web[1, 2:] = 100.0
    keep = [i for i in range(base.shape[1]) if i not in (image.shape[1] + 2, image.shape[1] + 3)]  # padded web keys
    torch.testing.assert_close(captioner(image, padded_web, web_mask, caption)[1, keep], base[1, keep], rtol=0, atol=1e-6)
    changed_image = image.clone()
    changed_image[:, 0] += 1.0  # image tokens reach the web tokens (both ways) and every caption position
    out = captioner(changed_image, web, web_mask, caption)
    assert ((out - base).abs().amax(dim=-1) > 1e-5).all()


def reference_clip_loss(image, text, scale):
    logits = scale * image @ text.T
    n = len(image)
    image_to_text = -sum(torch.log_softmax(logits[i], 0)[i] for i in range(n)) / n
    text_to_image = -sum(torch.log_softmax(logits[:, i], 0)[i] for i in range(n)) / n
    return (image_to_text + text_to_image) / 2


def test_losses_against_float64_reference():
    torch.manual_seed(1)
    image, web, partial = (F.normalize(torch.randn(4, 8, dtype=torch.float64), dim=-1) for _ in range(3))
    logits = torch.randn(4, 5, 11, dtype=torch.float64)
    ids = torch.randint(0, 11, (4, 5))
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 1, 0]])
    nll_sum, tokens = caption_nll(logits, ids, mask)
    for row in range(4):
        length = int(mask[row].sum())
        expected = -sum(torch.log_softmax(logits[row, t], 0)[ids[row, t + 1]] for t in range(length - 1))
        torch.testing.assert_close(nll_sum[row], expected)
        assert tokens[row] == length - 1
    unmasked_sum, unmasked_tokens = caption_nll(logits, ids, None)
    torch.testing.assert_close(unmasked_sum[1], -sum(torch.log_softmax(logits[1, t], 0)[ids[1, t + 1]] for t in range(4)))
    assert unmasked_tokens.tolist() == [4] * 4
    scale = torch.tensor(7.0, dtype=torch.float64)
    total, contrastive, caption = clips_loss(CLIPSFeatures(image, web, partial, nll_sum, tokens), scale,
                                             kind="softmax", weights=(0.5, 3.0))
    expected_contrastive = (reference_clip_loss(image, web, scale) + reference_clip_loss(image, partial, scale)) / 2
    torch.testing.assert_close(contrastive, expected_contrastive)
    torch.testing.assert_close(caption, nll_sum.sum() / 10)  # 4 + 2 + 1 + 3 predicted tokens
    torch.testing.assert_close(total, 0.5 * expected_contrastive + 3.0 * nll_sum.sum() / 10)


@pytest.mark.parametrize("overwrite_logits", [False, True])
def test_caption_nll_gradient_against_float64_reference(monkeypatch, overwrite_logits):
    """d nll / d logits = w_row * (softmax - onehot(target)) at predicted positions and 0 elsewhere, across row
    chunks (the chunk is set to 2 rows of 11 so the 4 x 5 rows span 10 chunks), and gradcheck agrees."""
    monkeypatch.setattr("langclip.modeling.losses.CROSS_ENTROPY_CHUNK", 22)
    torch.manual_seed(2)
    leaf = torch.randn(4, 5, 11, dtype=torch.float64, requires_grad=True)
    logits = leaf * 1.0  # an intermediate, as the captioner's logits are: overwrite_logits may write into it
    ids = torch.randint(0, 11, (4, 5))
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 1, 0]])
    weights = torch.tensor([1.0, -2.0, 0.5, 3.0], dtype=torch.float64)
    (caption_nll(logits, ids, mask, overwrite_logits).nll_sum * weights).sum().backward()
    expected = torch.zeros_like(leaf)
    for row in range(4):
        for t in range(int(mask[row].sum()) - 1):
            expected[row, t] = weights[row] * (torch.softmax(leaf[row, t].detach(), 0)
                                               - F.one_hot(ids[row, t + 1], 11))
    torch.testing.assert_close(leaf.grad, expected)
    assert torch.autograd.gradcheck(lambda z: caption_nll(z, ids, mask).nll_sum, (logits.detach().requires_grad_(),))


@pytest.mark.parametrize("overwrite_logits", [False, True])
def test_caption_nll_of_bfloat16_logits_is_the_float32_computation(overwrite_logits):
    """bfloat16 logits (autocast's LM head) give the NLL of their float32 values, in float32, and the float32
    gradient rounded once to bfloat16, as an explicit upcast would, without the float32 copy of the logits."""
    torch.manual_seed(3)
    leaf = torch.randn(3, 6, 40).bfloat16().requires_grad_()
    ids = torch.randint(0, 40, (3, 6))
    mask = torch.tensor([[1] * 6, [1, 1, 1, 1, 0, 0], [1, 1, 0, 0, 0, 0]])
    weights = torch.tensor([0.5, 2.0, -1.0])
    nll = caption_nll(leaf * 1, ids, mask, overwrite_logits).nll_sum
    (nll * weights).sum().backward()
    upcast = leaf.detach().float().requires_grad_()
    expected = caption_nll(upcast, ids, mask).nll_sum
    (expected * weights).sum().backward()
    assert nll.dtype == torch.float32 and leaf.grad.dtype == torch.bfloat16
    torch.testing.assert_close(nll, expected, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(leaf.grad, upcast.grad.bfloat16(), rtol=0, atol=0)


def test_training_mode_reuses_the_caption_logits_for_their_gradient(tokenizer):
    """In training mode the model returns no caption logits and the NLL's backward writes into their memory; the
    gradients equal those of the path that keeps the logits, and a second backward through them is refused."""
    torch.manual_seed(0)
    model = CLIPSModel(tiny_clips_config(tokenizer)).train()
    inputs = batch(tokenizer)
    grads = []
    for keep in (True, None):
        model.zero_grad()
        out = model(**inputs, return_loss=True, return_caption_logits=keep)
        assert (out.caption_logits is None) == (keep is None)
        out.loss.backward(retain_graph=True)
        grads.append({name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and "captioner.lm_head.weight" in grads[1]
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], rtol=1e-5, atol=1e-6)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        out.loss.backward()
    assert model.eval()(**inputs).caption_logits.shape[:2] == inputs["caption_input_ids"].shape


def test_forward_loss_and_padding(tokenizer):
    model = CLIPSModel(tiny_clips_config(tokenizer, caption_loss_weight=1.5, contrastive_loss_weight=0.7)).eval()
    inputs = batch(tokenizer)
    out = model(**inputs, return_loss=True)
    scale = model.logit_scale.exp()
    expected = (reference_clip_loss(out.image_embeds, out.text_embeds, scale)
                + reference_clip_loss(out.image_embeds, out.partial_text_embeds, scale)) / 2
    torch.testing.assert_close(out.contrastive_loss, expected)
    torch.testing.assert_close(out.loss, 0.7 * out.contrastive_loss + 1.5 * out.caption_loss)
    # Padding is ignored: the shortest caption alone, unpadded, gives the same summed NLL.
    length = int(inputs["caption_attention_mask"][1].sum())
    alone = model(**{k: v[1:2] for k, v in inputs.items() if k != "caption_input_ids" and k != "caption_attention_mask"},
                  caption_input_ids=inputs["caption_input_ids"][1:2, :length])
    torch.testing.assert_close(alone.caption_nll_sum[0], out.caption_nll_sum[1], rtol=1e-5, atol=1e-5)
    assert out.caption_tokens.tolist() == (inputs["caption_attention_mask"].sum(1) - 1).tolist()


def test_default_architecture_exports_to_clip_model(tokenizer, tmp_path):
    model = CLIPSModel(tiny_clips_config(tokenizer)).eval()
    assert type(model.vision_model).__name__ == "CLIPVisionModel" and type(model.text_model).__name__ == "CLIPTextModel"
    clip_keys = set(CLIPModel(tiny_laclip_config(tokenizer)).state_dict())
    assert {k for k in model.state_dict() if not k.startswith("captioner.")} == clip_keys
    model.to_clip_model().save_pretrained(tmp_path)
    clip = CLIPModel.from_pretrained(tmp_path).eval()
    inputs = batch(tokenizer)
    with torch.no_grad():  # equal up to float32 rounding: our QuickGELU is silu(1.702 x) / 1.702, theirs x sigmoid(1.702 x)
        torch.testing.assert_close(clip.get_image_features(inputs["pixel_values"]).pooler_output,
                                   model.get_image_features(inputs["pixel_values"]).pooler_output, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(clip.get_text_features(inputs["input_ids"], inputs["attention_mask"]).pooler_output,
                                   model.get_text_features(inputs["input_ids"], inputs["attention_mask"]).pooler_output,
                                   rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="standard architecture"):
        CLIPSModel(tiny_clips_config(tokenizer, **RELEASED)).to_clip_model()


def test_save_and_load_released_architecture(tokenizer, tmp_path):
    model = CLIPSModel(tiny_clips_config(tokenizer, **RELEASED)).eval()
    assert "vision_model.pre_layrnorm.weight" not in model.state_dict()
    model.save_pretrained(tmp_path)
    loaded = AutoModel.from_pretrained(tmp_path).eval()
    assert type(loaded) is CLIPSModel and loaded.config.text_pooling == "last"
    inputs = batch(tokenizer)
    with torch.no_grad():
        first, second = model(**inputs, return_loss=True), loaded(**inputs, return_loss=True)
    torch.testing.assert_close(first.loss, second.loss, rtol=0, atol=0)
    torch.testing.assert_close(first.caption_logits, second.caption_logits, rtol=0, atol=0)


def test_bad_inputs(tokenizer):
    model = CLIPSModel(tiny_clips_config(tokenizer))
    inputs = batch(tokenizer)
    with pytest.raises(ValueError, match="longer than captioner_max_length=24"):
        model(**{**inputs, "caption_input_ids": torch.ones(3, 30, dtype=torch.long), "caption_attention_mask": None})
    with pytest.raises(ValueError, match=r"partial_input_ids must be \(batch=3, length\)"):
        model(**{**inputs, "partial_input_ids": inputs["partial_input_ids"][:2]})
    with pytest.raises(Exception, match="text_pooling must be one of"):
        tiny_clips_config(tokenizer, text_pooling="mean")


def test_captioner_memorises_four_captions(tokenizer):
    """Overfitting: once the caption loss is below 1e-2, greedy decoding reproduces the 4 training captions exactly."""
    torch.manual_seed(0)
    model = CLIPSModel(tiny_clips_config(tokenizer, caption_loss_weight=1.0))
    captions = ["a photo of a red circle on the left", "two blue square shapes on the right",
                "the small yellow star in a picture", "three green triangle drawing with one large shape"]
    web = tokenizer(["a red circle", "blue square", "yellow star", "green triangle"], padding=True,
                    return_tensors="pt")
    target = tokenizer(captions, padding=True, return_tensors="pt")
    pixels = torch.randn(4, 3, 32, 32)
    # Training can sit for a while on a plateau (loss ~ ln 4 / 35 tokens) before the first caption token uses the
    # web caption; the loop runs until the loss is below 1e-2 (seed 0: ~300 steps; other seeds up to ~1600).
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.0)
    for _ in range(2000):
        out = model(input_ids=web.input_ids, attention_mask=web.attention_mask, pixel_values=pixels,
                    caption_input_ids=target.input_ids, caption_attention_mask=target.attention_mask, return_loss=True)
        optimizer.zero_grad()
        out.caption_loss.backward()
        optimizer.step()
        if out.caption_loss.item() < 1e-2:
            break
    assert out.caption_loss.item() < 1e-2
    model.eval()
    generated = model.generate_caption(pixels, web.input_ids, web.attention_mask)
    assert tokenizer.batch_decode(generated, skip_special_tokens=True) == captions
    assert (generated == tokenizer.eos_token_id).sum(1).tolist() == [1, 1, 1, 1]
    sampled = model.generate_caption(pixels, web.input_ids, web.attention_mask, do_sample=True, top_k=1)
    assert torch.equal(sampled, generated)  # top-1 sampling is greedy

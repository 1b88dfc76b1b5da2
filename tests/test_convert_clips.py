"""Released CLIPS checkpoints -> CLIPSModel, checked against an independent OpenCLIP-style forward; the CLIPS tokenizer."""

import math

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from transformers import AutoImageProcessor, AutoModel, AutoTokenizer

from langclip.cli import main as cli_main
from langclip.modeling.clips.convert_clips import clips_config, convert_clips
from langclip.modeling.clips.modeling_clips import clips_text_layout
from langclip.modeling.clips.tokenization_clips import clips_tokenizer

VISION = dict(width=32, layers=2, heads=2, patch=8, grid=2)
TEXT = dict(width=24, layers=2, heads=2, vocab=120, context=10)
DIM = 16
VOCAB = ["[PAD]", "[unused1]", "[unused2]", "[UNK]", "a", "dog", "on", "the", "beach", "red", "circle", "##s", "."]


def released_state_dict() -> dict[str, torch.Tensor]:
    """Random weights in the released CLIPS OpenCLIP layout (no visual.ln_pre, no attn_mask buffer)."""
    g = torch.Generator().manual_seed(0)

    def rand(*shape, scale=0.2):
        return torch.randn(*shape, generator=g) * scale

    def blocks(prefix, width, layers):
        weights = {}
        for i in range(layers):
            p = f"{prefix}transformer.resblocks.{i}."
            weights |= {p + "ln_1.weight": 1 + rand(width), p + "ln_1.bias": rand(width),
                        p + "attn.in_proj_weight": rand(3 * width, width), p + "attn.in_proj_bias": rand(3 * width),
                        p + "attn.out_proj.weight": rand(width, width), p + "attn.out_proj.bias": rand(width),
                        p + "ln_2.weight": 1 + rand(width), p + "ln_2.bias": rand(width),
                        p + "mlp.c_fc.weight": rand(4 * width, width), p + "mlp.c_fc.bias": rand(4 * width),
                        p + "mlp.c_proj.weight": rand(width, 4 * width), p + "mlp.c_proj.bias": rand(width)}
        return weights

    v, t = VISION["width"], TEXT["width"]
    return {
        "visual.conv1.weight": rand(v, 3, VISION["patch"], VISION["patch"]),
        "visual.class_embedding": rand(v),
        "visual.positional_embedding": rand(VISION["grid"] ** 2 + 1, v),
        **blocks("visual.", v, VISION["layers"]),
        "visual.ln_post.weight": 1 + rand(v), "visual.ln_post.bias": rand(v),
        "visual.proj": rand(v, DIM),
        "token_embedding.weight": rand(TEXT["vocab"], t),
        "positional_embedding": rand(TEXT["context"], t),
        **blocks("", t, TEXT["layers"]),
        "ln_final.weight": 1 + rand(t), "ln_final.bias": rand(t),
        "text_projection": rand(t, DIM),
        "logit_scale": torch.tensor(math.log(1 / 0.07)),
    }


def reference_tower(x, sd, prefix, layers, heads, eps, act):
    """OpenCLIP ResidualAttentionBlocks, written out: pre-LN, fused qkv, full (unmasked) attention."""
    width = x.shape[-1]
    for i in range(layers):
        p = f"{prefix}transformer.resblocks.{i}."
        y = F.layer_norm(x, (width,), sd[p + "ln_1.weight"], sd[p + "ln_1.bias"], eps)
        q, k, v = F.linear(y, sd[p + "attn.in_proj_weight"], sd[p + "attn.in_proj_bias"]).chunk(3, dim=-1)
        q, k, v = (z.view(*z.shape[:2], heads, -1).transpose(1, 2) for z in (q, k, v))
        weights = (q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])).softmax(dim=-1)
        attn = (weights @ v).transpose(1, 2).reshape(x.shape)
        x = x + F.linear(attn, sd[p + "attn.out_proj.weight"], sd[p + "attn.out_proj.bias"])
        y = F.layer_norm(x, (width,), sd[p + "ln_2.weight"], sd[p + "ln_2.bias"], eps)
        x = x + F.linear(act(F.linear(y, sd[p + "mlp.c_fc.weight"], sd[p + "mlp.c_fc.bias"])),
                         sd[p + "mlp.c_proj.weight"], sd[p + "mlp.c_proj.bias"])
    return x


def reference_image_features(sd, pixels):
    x = F.conv2d(pixels, sd["visual.conv1.weight"], stride=VISION["patch"]).flatten(2).transpose(1, 2)
    x = torch.cat([sd["visual.class_embedding"].expand(x.shape[0], 1, -1), x], dim=1) + sd["visual.positional_embedding"]
    x = reference_tower(x, sd, "visual.", VISION["layers"], VISION["heads"], 1e-6, F.gelu)  # no ln_pre
    pooled = F.layer_norm(x[:, 1:].mean(dim=1), (x.shape[-1],), sd["visual.ln_post.weight"], sd["visual.ln_post.bias"],
                          1e-6)  # the official vision LayerNorm eps
    return pooled @ sd["visual.proj"]


def reference_text_features(sd, ids):
    x = sd["token_embedding.weight"][ids] + sd["positional_embedding"]
    x = reference_tower(x, sd, "", TEXT["layers"], TEXT["heads"], 1e-6, lambda y: F.gelu(y, approximate="tanh"))
    x = F.layer_norm(x, (x.shape[-1],), sd["ln_final.weight"], sd["ln_final.bias"], 1e-6)
    return x[:, -1] @ sd["text_projection"]


@pytest.fixture
def checkpoint(tmp_path):
    path = tmp_path / "open_clip_model.safetensors"
    save_file(released_state_dict(), str(path))
    (tmp_path / "vocab.txt").write_text("".join(f"{token}\n" for token in VOCAB))
    return path


def test_converted_model_matches_an_independent_forward(checkpoint, tmp_path):
    model = convert_clips(checkpoint, tmp_path / "out", VISION["heads"], TEXT["heads"], str(tmp_path / "vocab.txt")).eval()
    config = model.config
    assert (config.vision_pooling, config.vision_pre_layernorm, config.text_attention, config.text_pooling) == (
        "mean", False, "bidirectional", "last")
    assert config.text_config.layer_norm_eps == 1e-6 and config.text_config.hidden_act == "gelu_pytorch_tanh"
    sd = released_state_dict()
    tokens = AutoTokenizer.from_pretrained(tmp_path / "out")(["a dog on the beach.", "red circles"], padding=True,
                                                            return_tensors="pt")
    ids = clips_text_layout(tokens["input_ids"], tokens["attention_mask"], TEXT["context"], 0, 2, 101)
    pixels = torch.randn(2, 3, 16, 16)
    loaded = AutoModel.from_pretrained(tmp_path / "out").eval()
    with torch.no_grad():
        for candidate in (model, loaded):
            torch.testing.assert_close(candidate.get_image_features(pixels).pooler_output,
                                       reference_image_features(sd, pixels), rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(candidate.get_text_features(ids, torch.ones_like(ids)).pooler_output,
                                       reference_text_features(sd, ids), rtol=1e-4, atol=1e-5)
    processor = AutoImageProcessor.from_pretrained(tmp_path / "out")
    assert processor.do_center_crop is False and list(processor.image_mean) == [0.485, 0.456, 0.406]


def test_clips_tokenizer_errors(tmp_path):
    (tmp_path / "vocab.txt").write_text("a\nb\n")
    with pytest.raises(ValueError, match="vocab.txt: the WordPiece vocabulary has no unknown token '\\[UNK\\]'"):
        clips_tokenizer(str(tmp_path / "vocab.txt"))
    (tmp_path / "vocab.txt").write_text("[PAD]\n[UNK]\n")
    with pytest.raises(ValueError, match=r"no line for the special token ids \[2\]"):
        clips_tokenizer(str(tmp_path / "vocab.txt"))


def test_vit_h_gets_heads_of_80():
    sd = released_state_dict()
    sd["visual.conv1.weight"] = torch.zeros(1280, 3, 14, 14)
    sd["visual.transformer.resblocks.0.mlp.c_fc.weight"] = torch.zeros(5120, 1280)
    config = clips_config(sd, text_heads=2)
    assert config.vision_config.num_attention_heads == 16 and config.vision_config.hidden_size == 1280


def test_cli_convert_from_clips_and_bad_layout(checkpoint, tmp_path, capsys):
    assert cli_main(["convert", "--from", "clips", str(checkpoint), str(tmp_path / "cli"), "--vision-heads", "2",
                     "--text-heads", "2"]) == 0
    assert type(AutoModel.from_pretrained(tmp_path / "cli")).__name__ == "CLIPSModel"
    sd = released_state_dict()
    sd["visual.ln_pre.weight"] = torch.ones(VISION["width"])
    save_file(sd, str(tmp_path / "standard.safetensors"))
    with pytest.raises(ValueError, match="not the CLIPS layout"):
        convert_clips(tmp_path / "standard.safetensors", vision_heads=2, text_heads=2)

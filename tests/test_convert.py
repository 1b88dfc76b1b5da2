"""OpenCLIP -> langclip conversion, checked against an independent float64 OpenCLIP forward."""

import json
import math
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from langclip import LaCLIPModel
from langclip.modeling.laclip.convert_open_clip import convert_open_clip
from langclip.modeling.open_clip import load_state_dict

WIDTH, LAYERS, PATCH, GRID, CTX, VOCAB, EMBED = 128, 2, 8, 4, 12, 60, 24


def _block(prefix, width, g):
    w = lambda *s: torch.randn(*s, generator=g) * 0.1  # noqa: E731
    return {
        f"{prefix}ln_1.weight": 1 + w(width), f"{prefix}ln_1.bias": w(width),
        f"{prefix}attn.in_proj_weight": w(3 * width, width), f"{prefix}attn.in_proj_bias": w(3 * width),
        f"{prefix}attn.out_proj.weight": w(width, width), f"{prefix}attn.out_proj.bias": w(width),
        f"{prefix}ln_2.weight": 1 + w(width), f"{prefix}ln_2.bias": w(width),
        f"{prefix}mlp.c_fc.weight": w(4 * width, width), f"{prefix}mlp.c_fc.bias": w(4 * width),
        f"{prefix}mlp.c_proj.weight": w(width, 4 * width), f"{prefix}mlp.c_proj.bias": w(width),
    }


def open_clip_state_dict(seed=0):
    """A small state dict in OpenCLIP's ViT layout (names and shapes as open_clip writes them)."""
    g = torch.Generator().manual_seed(seed)
    w = lambda *s: torch.randn(*s, generator=g) * 0.1  # noqa: E731
    sd = {
        "visual.class_embedding": w(WIDTH), "visual.positional_embedding": w(GRID * GRID + 1, WIDTH),
        "visual.proj": w(WIDTH, EMBED), "visual.conv1.weight": w(WIDTH, 3, PATCH, PATCH),
        "visual.ln_pre.weight": 1 + w(WIDTH), "visual.ln_pre.bias": w(WIDTH),
        "visual.ln_post.weight": 1 + w(WIDTH), "visual.ln_post.bias": w(WIDTH),
        "token_embedding.weight": w(VOCAB, WIDTH), "positional_embedding": w(CTX, WIDTH),
        "ln_final.weight": 1 + w(WIDTH), "ln_final.bias": w(WIDTH), "text_projection": w(WIDTH, EMBED),
        "logit_scale": torch.tensor(math.log(1 / 0.05)),
        "attn_mask": torch.full((CTX, CTX), float("-inf")).triu(1),
    }
    for i in range(LAYERS):
        sd.update(_block(f"visual.transformer.resblocks.{i}.", WIDTH, g))
        sd.update(_block(f"transformer.resblocks.{i}.", WIDTH, g))
    return sd


def _reference_transformer(x, sd, prefix, heads, mask=None):
    """OpenCLIP's residual attention blocks, written independently in float64."""
    n, length, width = x.shape
    for i in range(LAYERS):
        p = f"{prefix}transformer.resblocks.{i}."
        h = F.layer_norm(x, (width,), sd[p + "ln_1.weight"], sd[p + "ln_1.bias"])
        q, k, v = (h @ sd[p + "attn.in_proj_weight"].T + sd[p + "attn.in_proj_bias"]).chunk(3, dim=-1)
        split = lambda t: t.view(n, length, heads, width // heads).transpose(1, 2)  # noqa: E731
        scores = split(q) @ split(k).transpose(-1, -2) / math.sqrt(width // heads)
        if mask is not None:
            scores = scores + mask
        attn = (scores.softmax(-1) @ split(v)).transpose(1, 2).reshape(n, length, width)
        x = x + attn @ sd[p + "attn.out_proj.weight"].T + sd[p + "attn.out_proj.bias"]
        h = F.layer_norm(x, (width,), sd[p + "ln_2.weight"], sd[p + "ln_2.bias"])
        h = F.gelu(h @ sd[p + "mlp.c_fc.weight"].T + sd[p + "mlp.c_fc.bias"])
        x = x + h @ sd[p + "mlp.c_proj.weight"].T + sd[p + "mlp.c_proj.bias"]
    return x


def reference_embeddings(sd, images, tokens, heads):
    sd = {k: v.double() for k, v in sd.items()}
    x = F.conv2d(images.double(), sd["visual.conv1.weight"], stride=PATCH).flatten(2).transpose(1, 2)
    x = torch.cat([sd["visual.class_embedding"].expand(len(x), 1, -1), x], dim=1) + sd["visual.positional_embedding"]
    x = F.layer_norm(x, (WIDTH,), sd["visual.ln_pre.weight"], sd["visual.ln_pre.bias"])
    x = _reference_transformer(x, sd, "visual.", heads)
    image = F.layer_norm(x[:, 0], (WIDTH,), sd["visual.ln_post.weight"], sd["visual.ln_post.bias"]) @ sd["visual.proj"]
    t = sd["token_embedding.weight"][tokens] + sd["positional_embedding"]
    t = _reference_transformer(t, sd, "", heads, mask=sd["attn_mask"])
    t = F.layer_norm(t, (WIDTH,), sd["ln_final.weight"], sd["ln_final.bias"])
    text = t[torch.arange(len(t)), tokens.argmax(-1)] @ sd["text_projection"]  # pooled at <end_of_text>
    return F.normalize(image, dim=-1), F.normalize(text, dim=-1)


def _tokens():
    tokens = torch.zeros(3, CTX, dtype=torch.long)
    for row, length in enumerate((5, 9, 12)):
        tokens[row, 0] = VOCAB - 2
        tokens[row, 1 : length - 1] = torch.randint(1, VOCAB - 2, (length - 2,))
        tokens[row, length - 1] = VOCAB - 1
    return tokens


@pytest.mark.parametrize("fmt", ["pt", "safetensors"])
def test_converted_model_matches_reference_forward(tmp_path, fmt):
    sd = open_clip_state_dict()
    if fmt == "pt":
        src = tmp_path / "ckpt.pt"
        torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in sd.items()}}, src)
    else:
        src = tmp_path / "ckpt.safetensors"
        save_file(sd, src)
    convert_open_clip(src, tmp_path / "out", vision_heads=4, text_heads=4)
    model = LaCLIPModel.from_pretrained(tmp_path / "out").double().eval()
    cfg = model.config
    assert (cfg.vision_config.image_size, cfg.vision_config.patch_size, cfg.text_config.max_position_embeddings) == (32, 8, 12)
    assert (cfg.vision_config.num_hidden_layers, cfg.text_config.vocab_size, cfg.projection_dim) == (LAYERS, VOCAB, EMBED)
    assert cfg.vision_config.hidden_act == "gelu"
    assert model.logit_scale.item() == pytest.approx(math.log(20))

    images, tokens = torch.randn(2, 3, 32, 32), _tokens()
    ref_image, ref_text = reference_embeddings(sd, images, tokens, heads=4)
    with torch.no_grad():
        image = model.get_image_features(pixel_values=images.double()).pooler_output
        text = model.get_text_features(input_ids=tokens).pooler_output
    torch.testing.assert_close(F.normalize(image, dim=-1), ref_image, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(F.normalize(text, dim=-1), ref_text, rtol=1e-9, atol=1e-9)


def test_head_count_defaults_and_flags(tmp_path):
    save_file(open_clip_state_dict(), tmp_path / "ckpt.safetensors")
    model = convert_open_clip(tmp_path / "ckpt.safetensors", quick_gelu=True)
    assert model.config.vision_config.num_attention_heads == WIDTH // 64
    assert model.config.text_config.hidden_act == "quick_gelu"


def test_cli(tmp_path):
    save_file(open_clip_state_dict(), tmp_path / "ckpt.safetensors")
    out = tmp_path / "converted"
    subprocess.run(
        [sys.executable, "-m", "langclip.cli", "convert", "--from", "open_clip", str(tmp_path / "ckpt.safetensors"),
         str(out), "--vision-heads", "4", "--text-heads", "4"],
        check=True, capture_output=True,
    )
    assert (out / "model.safetensors").is_file() and (out / "preprocessor_config.json").is_file()
    auto_map = json.loads((out / "config.json").read_text())["auto_map"]  # the folder carries its code
    assert auto_map["AutoModelForZeroShotImageClassification"] == "modeling_laclip.LaCLIPModel"
    assert {"modeling_laclip.py", "configuration_laclip.py", "losses.py"} <= {p.name for p in out.iterdir()}


def test_bad_checkpoints_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint file"):
        load_state_dict(tmp_path / "missing.pt")
    save_file({"foo.weight": torch.zeros(2)}, tmp_path / "other.safetensors")
    with pytest.raises(ValueError, match="not an OpenCLIP ViT state dict: missing"):
        convert_open_clip(tmp_path / "other.safetensors")
    sd = open_clip_state_dict()
    sd["visual.extra.weight"] = torch.zeros(1)
    save_file(sd, tmp_path / "extra.safetensors")
    with pytest.raises(ValueError, match="unexpected OpenCLIP weight 'visual.extra.weight'"):
        convert_open_clip(tmp_path / "extra.safetensors", vision_heads=4, text_heads=4)
    save_file(open_clip_state_dict(), tmp_path / "ok.safetensors")
    with pytest.raises(ValueError, match="not divisible by 3 heads"):
        convert_open_clip(tmp_path / "ok.safetensors", vision_heads=3)

"""`langclip convert --from laclip`: LaCLIP's own (SLIP-style CLIP_VITB16) checkpoints, checked against a float64
forward of the official architecture written here from its description (timm ViT with per-head QK-norm, no
pre-norm, patch conv with bias; OpenAI text tower with QuickGELU), independently of langclip's model code; the
safe reading of the official file; the converted folder in the user paths (pipeline, remote code, eval, train)."""

import argparse
import json
import math
import os
import pickle
import shutil
import subprocess
import sys
import textwrap

import datasets
import pytest
import torch
import torch.nn.functional as F
from accelerate.state import AcceleratorState
from transformers import AutoImageProcessor, pipeline

from langclip import LaCLIPModel
from langclip.cli import main as cli_main
from langclip.hub_cards.cards import model_card
from langclip.modeling.laclip.convert_laclip import convert_laclip, laclip_config
from langclip.modeling.open_clip import load_state_dict

from conftest import WITHOUT_LANGCLIP
from test_convert import _block as open_clip_block
from test_eval_cli import FEATURES, NAMES, _rows

VISION = dict(width=128, layers=2, patch=8, grid=3)  # heads: width // 64 = 2
TEXT = dict(width=128, layers=2, context=12, vocab=60)  # heads: 2
DIM = 24
EPS_VISION, EPS_TEXT = 1e-6, 1e-5


def official_state_dict(seed=0, vocab=TEXT["vocab"], context=TEXT["context"]) -> dict[str, torch.Tensor]:
    """Random weights with the names and shapes of LaCLIP's models.py CLIP_VITB16 (timm ViT + OpenAI text tower)."""
    g = torch.Generator().manual_seed(seed)

    def w(*shape, scale=0.1):
        return torch.randn(*shape, generator=g) * scale

    v, t = VISION["width"], TEXT["width"]
    sd = {
        "visual.cls_token": w(1, 1, v), "visual.pos_embed": w(1, VISION["grid"] ** 2 + 1, v),
        "visual.patch_embed.proj.weight": w(v, 3, VISION["patch"], VISION["patch"]),
        "visual.patch_embed.proj.bias": w(v, scale=0.5),  # large: a dropped or misplaced bias shows
        "visual.norm.weight": 1 + w(v), "visual.norm.bias": w(v),
        "image_projection": w(v, DIM),
        "token_embedding.weight": w(vocab, t), "positional_embedding": w(context, t),
        "ln_final.weight": 1 + w(t), "ln_final.bias": w(t), "text_projection": w(t, DIM),
        "logit_scale": torch.tensor(math.log(1 / 0.07)),
    }
    head_dim = v // (v // 64)
    for i in range(VISION["layers"]):
        p = f"visual.blocks.{i}."
        sd |= {p + "norm1.weight": 1 + w(v), p + "norm1.bias": w(v),
               p + "attn.qkv.weight": w(3 * v, v), p + "attn.qkv.bias": w(3 * v),
               p + "attn.q_norm.weight": 1 + w(head_dim, scale=0.3), p + "attn.q_norm.bias": w(head_dim, scale=0.3),
               p + "attn.k_norm.weight": 1 + w(head_dim, scale=0.3), p + "attn.k_norm.bias": w(head_dim, scale=0.3),
               p + "attn.proj.weight": w(v, v), p + "attn.proj.bias": w(v),
               p + "norm2.weight": 1 + w(v), p + "norm2.bias": w(v),
               p + "mlp.fc1.weight": w(4 * v, v), p + "mlp.fc1.bias": w(4 * v),
               p + "mlp.fc2.weight": w(v, 4 * v), p + "mlp.fc2.bias": w(v)}
    for i in range(TEXT["layers"]):  # the text tower is OpenCLIP's: its block fixture
        sd |= open_clip_block(f"transformer.resblocks.{i}.", t, g)
    return sd


def save_official(sd, path, **extra):
    """The official file: DDP names, the epoch, the training flags as an argparse.Namespace, optimizer state."""
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in sd.items()},
                "args": argparse.Namespace(model="CLIP_VITB16", dataset="cc12m", lr=1e-3, wd=0.5, epochs=35,
                                           batch_size=256, output_dir="out", resume="", aug_text=True),
                "best_acc1": 48.4, "optimizer": {"state": {}, "param_groups": [{"lr": 1e-5, "params": [0, 1]}]},
                **extra}, path)
    return path


def _heads(x, heads):
    return x.view(*x.shape[:2], heads, -1).transpose(1, 2)


def reference_image(sd, images):
    """timm VisionTransformer(qk_norm=True, no pre-norm, LayerNorm eps 1e-6, exact GELU), then @ image_projection."""
    sd = {k: v.double() for k, v in sd.items()}
    width, heads = VISION["width"], VISION["width"] // 64
    x = F.conv2d(images.double(), sd["visual.patch_embed.proj.weight"], sd["visual.patch_embed.proj.bias"],
                 stride=VISION["patch"]).flatten(2).transpose(1, 2)
    x = torch.cat([sd["visual.cls_token"].expand(len(x), -1, -1), x], dim=1) + sd["visual.pos_embed"]
    for i in range(VISION["layers"]):
        p = f"visual.blocks.{i}."
        h = F.layer_norm(x, (width,), sd[p + "norm1.weight"], sd[p + "norm1.bias"], EPS_VISION)
        q, k, v = (h @ sd[p + "attn.qkv.weight"].T + sd[p + "attn.qkv.bias"]).chunk(3, dim=-1)
        q, k, v = _heads(q, heads), _heads(k, heads), _heads(v, heads)
        head_dim = q.shape[-1]
        q = F.layer_norm(q, (head_dim,), sd[p + "attn.q_norm.weight"], sd[p + "attn.q_norm.bias"], EPS_VISION)
        k = F.layer_norm(k, (head_dim,), sd[p + "attn.k_norm.weight"], sd[p + "attn.k_norm.bias"], EPS_VISION)
        attn = ((q @ k.transpose(-1, -2)) / math.sqrt(head_dim)).softmax(-1) @ v
        x = x + attn.transpose(1, 2).reshape(x.shape) @ sd[p + "attn.proj.weight"].T + sd[p + "attn.proj.bias"]
        h = F.layer_norm(x, (width,), sd[p + "norm2.weight"], sd[p + "norm2.bias"], EPS_VISION)
        h = F.gelu(h @ sd[p + "mlp.fc1.weight"].T + sd[p + "mlp.fc1.bias"])
        x = x + h @ sd[p + "mlp.fc2.weight"].T + sd[p + "mlp.fc2.bias"]
    x = F.layer_norm(x, (width,), sd["visual.norm.weight"], sd["visual.norm.bias"], EPS_VISION)  # every token
    return x[:, 0] @ sd["image_projection"]  # then the class token (num_classes=0: no head)


def reference_text(sd, tokens):
    """OpenAI's text tower: causal pre-LN blocks with QuickGELU, ln_final, pooled at argmax(id), @ text_projection."""
    sd = {k: v.double() for k, v in sd.items()}
    width, heads, length = TEXT["width"], TEXT["width"] // 64, tokens.shape[1]
    mask = torch.full((length, length), float("-inf"), dtype=torch.float64).triu(1)
    x = sd["token_embedding.weight"][tokens] + sd["positional_embedding"][:length]
    for i in range(TEXT["layers"]):
        p = f"transformer.resblocks.{i}."
        h = F.layer_norm(x, (width,), sd[p + "ln_1.weight"], sd[p + "ln_1.bias"], EPS_TEXT)
        q, k, v = (_heads(z, heads) for z in (h @ sd[p + "attn.in_proj_weight"].T + sd[p + "attn.in_proj_bias"])
                   .chunk(3, dim=-1))
        attn = ((q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1]) + mask).softmax(-1) @ v
        x = x + attn.transpose(1, 2).reshape(x.shape) @ sd[p + "attn.out_proj.weight"].T + sd[p + "attn.out_proj.bias"]
        h = F.layer_norm(x, (width,), sd[p + "ln_2.weight"], sd[p + "ln_2.bias"], EPS_TEXT)
        h = h @ sd[p + "mlp.c_fc.weight"].T + sd[p + "mlp.c_fc.bias"]
        x = x + (h * torch.sigmoid(1.702 * h)) @ sd[p + "mlp.c_proj.weight"].T + sd[p + "mlp.c_proj.bias"]
    x = F.layer_norm(x, (width,), sd["ln_final.weight"], sd["ln_final.bias"], EPS_TEXT)
    return x[torch.arange(len(x)), tokens.argmax(dim=-1)] @ sd["text_projection"]


def _tokens():
    """OpenAI BPE layout: <start_of_text> (vocab - 2) ... <end_of_text> (vocab - 1, the highest id), then zeros."""
    vocab, tokens = TEXT["vocab"], torch.zeros(3, TEXT["context"], dtype=torch.long)
    for row, length in enumerate((4, 8, TEXT["context"])):
        tokens[row, 0], tokens[row, length - 1] = vocab - 2, vocab - 1
        tokens[row, 1: length - 1] = torch.randint(1, vocab - 2, (length - 2,))
    return tokens


def convert_cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "langclip.cli", "convert", "--from", "laclip", *map(str, args)],
                          capture_output=True, text=True, timeout=300)


def test_cli_conversion_matches_the_official_forward(tmp_path):
    sd = official_state_dict()
    src = save_official(sd, tmp_path / "cc12m_laclip.pt")
    with pytest.raises(pickle.UnpicklingError, match="argparse.Namespace"):
        torch.load(src, weights_only=True)  # what the allow-list is for
    result = convert_cli(src, tmp_path / "out")
    assert result.returncode == 0, result.stderr[-3000:]
    model = LaCLIPModel.from_pretrained(tmp_path / "out").eval()
    config = model.config
    assert (config.vision_qk_norm, config.vision_pre_layernorm, config.is_standard_clip) == (True, False, False)
    vision, text = config.vision_config, config.text_config
    assert (vision.hidden_act, vision.layer_norm_eps, vision.num_attention_heads, vision.image_size) == ("gelu", 1e-6, 2, 24)
    assert (text.hidden_act, text.layer_norm_eps, text.num_attention_heads) == ("quick_gelu", 1e-5, 2)
    assert (text.max_position_embeddings, text.vocab_size, text.eos_token_id, config.projection_dim) == (12, 60, 59, DIM)

    images, tokens = torch.randn(4, 3, 24, 24), _tokens()
    ref_image, ref_text = F.normalize(reference_image(sd, images), dim=-1), F.normalize(reference_text(sd, tokens), dim=-1)
    with torch.no_grad():
        out = model(input_ids=tokens, pixel_values=images)
    torch.testing.assert_close(out.image_embeds, ref_image.float(), rtol=0, atol=1e-5)
    torch.testing.assert_close(out.text_embeds, ref_text.float(), rtol=0, atol=1e-5)
    ref_logits = sd["logit_scale"].double().exp() * ref_image @ ref_text.T  # zero-shot logits, images x class texts
    torch.testing.assert_close(out.logits_per_image, ref_logits.float(), rtol=1e-5, atol=1e-4)
    assert torch.equal(out.logits_per_image.argmax(-1), ref_logits.argmax(-1))

    # the patch conv's bias lives in position rows 1..N, not in the class token's row 0
    position = model.vision_model.embeddings.position_embedding.weight.detach()
    torch.testing.assert_close(position[0], sd["visual.pos_embed"][0, 0])
    torch.testing.assert_close(position[1:], sd["visual.pos_embed"][0, 1:] + sd["visual.patch_embed.proj.bias"])

    processor = AutoImageProcessor.from_pretrained(tmp_path / "out")  # the official eval: Resize + CenterCrop, ImageNet
    assert list(processor.image_mean) == [0.485, 0.456, 0.406] and list(processor.image_std) == [0.229, 0.224, 0.225]
    assert processor.do_center_crop and processor.size == {"shortest_edge": 24} and processor.resample == 2  # bilinear
    files = {p.name for p in (tmp_path / "out").iterdir()}
    assert {"model.safetensors", "config.json", "modeling_laclip.py", "vision.py", "preprocessor_config.json"} <= files
    card = (tmp_path / "out" / "README.md").read_text()  # written by convert itself
    assert "Not a plain CLIP architecture** (QK-norm" in card and "no LayerNorm before the vision blocks" in card
    assert "so `transformers.CLIPModel.from_pretrained` loads them too" not in card
    assert "cc12m_laclip.pt (langclip convert --from laclip)" in card and "- laclip" in card  # the source, the tag
    assert card == str(model_card(json.loads((tmp_path / "out" / "config.json").read_text()), "out", method="laclip",
                                  training={"converted_from": "cc12m_laclip.pt (langclip convert --from laclip)"}))


def test_the_card_names_the_method_given(tmp_path):
    result = convert_cli(save_official(official_state_dict(), tmp_path / "cc3m_clip.pt"), tmp_path / "clip", "--method",
                         "clip")
    assert result.returncode == 0, result.stderr[-3000:]
    card = (tmp_path / "clip" / "README.md").read_text()
    assert "- clip\n" in card and "- laclip\n" not in card


class _RunsCode:
    """An object whose unpickling runs code: it opens (creates) the marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def test_a_pickle_that_runs_code_is_refused_and_runs_nothing(tmp_path):
    sd = official_state_dict()
    probe = tmp_path / "probe-marker"
    save_official(sd, tmp_path / "probe.pt", extra=_RunsCode(probe))
    torch.load(tmp_path / "probe.pt", weights_only=False)  # the payload is real: an unsafe load runs it
    assert probe.exists()

    marker = tmp_path / "marker"
    src = save_official(sd, tmp_path / "evil.pt", extra=_RunsCode(marker))
    result = convert_cli(src, tmp_path / "out")
    assert result.returncode != 0 and not marker.exists() and not (tmp_path / "out").exists()
    assert str(src) in result.stderr and "refused for safety" in result.stderr and "open" in result.stderr
    assert "safetensors" in result.stderr  # the fix: re-save the trusted file's weights as safetensors
    with pytest.raises(ValueError, match="refused for safety"):
        load_state_dict(src)
    assert not marker.exists()


def test_layout_mismatches_and_bad_files_are_named(tmp_path):
    from test_convert import open_clip_state_dict

    with pytest.raises(ValueError, match="not a LaCLIP .* use --from open_clip"):
        laclip_config(open_clip_state_dict())
    sd = official_state_dict()
    sd["visual.head.weight"] = torch.zeros(10, VISION["width"])
    with pytest.raises(ValueError, match="unexpected LaCLIP \\(timm ViT\\) weight 'visual.head.weight'"):
        convert_laclip(save_official(sd, tmp_path / "head.pt"))
    with pytest.raises(ValueError, match="not divisible by 3 heads"):
        convert_laclip(save_official(official_state_dict(), tmp_path / "ok.pt"), vision_heads=3)
    result = subprocess.run([sys.executable, "-m", "langclip.cli", "convert", "--from", "open_clip", str(tmp_path / "ok.pt"),
                             str(tmp_path / "out")], capture_output=True, text=True, timeout=300)
    assert result.returncode != 0 and "use --from laclip" in result.stderr


@pytest.fixture(scope="module")
def converted(tmp_path_factory, tokenizer):
    """A converted official file with the tests' word tokenizer (vocabulary and context sized to it)."""
    root = tmp_path_factory.mktemp("laclip_official")
    tokenizer.save_pretrained(root / "tokenizer")
    sd = official_state_dict(seed=1, vocab=len(tokenizer), context=tokenizer.model_max_length)
    src = save_official(sd, root / "redcaps_laclip.pt")
    result = convert_cli(src, root / "model", "--tokenizer", root / "tokenizer")
    assert result.returncode == 0, result.stderr[-3000:]
    return root


def test_converted_folder_in_the_zero_shot_pipeline_and_without_langclip(converted, tokenizer, tmp_path):
    folder = converted / "model"
    text = LaCLIPModel.from_pretrained(folder).config.text_config
    assert (text.bos_token_id, text.eos_token_id) == (tokenizer.bos_token_id, tokenizer.eos_token_id)  # pooled at its EOS
    image = _rows(1)["image"][0]
    classifier = pipeline("zero-shot-image-classification", model=str(folder))
    assert type(classifier.model) is LaCLIPModel and classifier.model.config.vision_qk_norm
    scores = {r["label"]: r["score"] for r in classifier(image, candidate_labels=NAMES)}
    assert sum(scores.values()) == pytest.approx(1.0)

    copy = tmp_path / "copied"
    shutil.copytree(folder, copy)  # the folder alone, in a process that cannot import langclip
    image.save(tmp_path / "image.png")
    code = textwrap.dedent(WITHOUT_LANGCLIP + """
        import torch
        from PIL import Image
        from transformers import AutoModel, pipeline
        classifier = pipeline("zero-shot-image-classification", model=%r, trust_remote_code=True)
        scores = {r["label"]: r["score"] for r in classifier(Image.open(%r), candidate_labels=%r)}
        model = AutoModel.from_pretrained(%r, trust_remote_code=True).eval()
        with torch.no_grad():
            features = model.get_image_features(pixel_values=torch.load(%r, weights_only=True)).pooler_output
        print("RESULT " + json.dumps([type(model).__name__, type(model.vision_model).__name__, scores,
                                      features.tolist()]))
    """ % (str(copy), str(tmp_path / "image.png"), NAMES, str(copy), str(tmp_path / "pixels.pt")))
    pixels = torch.randn(2, 3, 24, 24)
    torch.save(pixels, tmp_path / "pixels.pt")
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf-home"), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-I", "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    model_name, tower_name, remote_scores, remote_features = json.loads(result.stdout.split("RESULT ", 1)[1])
    assert (model_name, tower_name) == ("LaCLIPModel", "ViTVisionModel")
    assert remote_scores == pytest.approx(scores, abs=1e-6)
    with torch.no_grad():
        features = classifier.model.get_image_features(pixel_values=pixels).pooler_output
    torch.testing.assert_close(torch.tensor(remote_features), features, rtol=0, atol=1e-6)


def test_converted_folder_evaluates_and_trains(converted, tmp_path):
    folder = converted / "model"
    datasets.DatasetDict({"test": datasets.Dataset.from_dict(_rows(8), features=FEATURES)}).save_to_disk(
        tmp_path / "data")
    assert cli_main(["eval", "--model", str(folder), "--dataset", str(tmp_path / "data"), "--task", "zero-shot",
                     "--output", str(tmp_path / "eval.json")]) == 0
    record = json.loads((tmp_path / "eval.json").read_text())
    assert record["num_examples"] == 8 and 0 <= record["metrics"]["top1"] <= 1

    datasets.Dataset.from_dict({"image": _rows(4)["image"], "caption": [f"a {name} square" for name in NAMES],
                                "rewrites": [[f"a photo of a {name} shape"] for name in NAMES]}).save_to_disk(
        tmp_path / "train")
    try:
        assert cli_main(["train", "--method", "laclip", "--model-name-or-path", str(folder), "--train-data",
                         str(tmp_path / "train"), "--per-device-batch-size", "4", "--max-steps", "1",
                         "--report-to", "none", "--save-steps", "0", "--num-workers", "0",
                         "--output-dir", str(tmp_path / "run")]) == 0
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)
    trained = LaCLIPModel.from_pretrained(tmp_path / "run")
    assert trained.config.vision_qk_norm and not trained.config.vision_pre_layernorm
    original = LaCLIPModel.from_pretrained(folder)
    assert not torch.equal(trained.vision_model.encoder.layers[0].self_attn.q_norm.weight,
                           original.vision_model.encoder.layers[0].self_attn.q_norm.weight)  # QK-norm trains


def test_full_size_clip_vitb16_is_inferred_from_shapes():
    """The released CLIP_VITB16 sizes (shapes only, on the meta device): ViT-B/16 at 224 px with 12 heads of 64, a
    512-wide text tower with 8 heads, context 77, vocabulary 49408, embedding 512."""
    def meta(*shape):
        return torch.empty(*shape, device="meta")

    sd = {"visual.cls_token": meta(1, 1, 768), "visual.pos_embed": meta(1, 197, 768),
          "visual.patch_embed.proj.weight": meta(768, 3, 16, 16), "visual.norm.weight": meta(768),
          "image_projection": meta(768, 512), "token_embedding.weight": meta(49408, 512),
          "positional_embedding": meta(77, 512), "text_projection": meta(512, 512)}
    for i in range(12):
        sd |= {f"visual.blocks.{i}.mlp.fc1.weight": meta(3072, 768), f"visual.blocks.{i}.attn.q_norm.weight": meta(64),
               f"transformer.resblocks.{i}.mlp.c_fc.weight": meta(2048, 512)}
    config = laclip_config(sd)
    vision, text = config.vision_config, config.text_config
    assert (vision.hidden_size, vision.num_hidden_layers, vision.num_attention_heads, vision.patch_size,
            vision.image_size, vision.intermediate_size) == (768, 12, 12, 16, 224, 3072)
    assert (text.hidden_size, text.num_hidden_layers, text.num_attention_heads, text.max_position_embeddings,
            text.vocab_size, text.eos_token_id) == (512, 12, 8, 77, 49408, 49407)
    assert config.projection_dim == 512 and config.vision_qk_norm and not config.vision_pre_layernorm

"""Methods as combinations of text sampling x objective x parts trained: presets, flags, and the combinations of
issue 19 (CLIPS + LaCLIP rewrites, LaCLIP-MT with the sigmoid loss, PC-CLIP finetuning of plain CLIP and converted
CLIPS checkpoints), each trained briefly on tiny data with a falling loss."""

from pathlib import Path

import datasets
import pytest
import torch
from huggingface_hub import ModelCard
from safetensors.torch import load_file
from test_pcclip_train import DIFFERENCES, write_rows
from test_train import _fresh_accelerator, run  # noqa: F401  (autouse fixture: a fresh Accelerator per test)
from test_train_clips import SYNTHETIC
from train_utils import make_training_files, parse_train_args, read_log
from transformers import AutoTokenizer, CLIPModel

from langclip import CLIPSModel, LaCLIPModel
from langclip.modeling import sigmoid_loss
from langclip.modeling.image_processing import default_image_processor
from langclip.training.methods import PRESETS, Method


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """32 rows (image, caption, rewrites, synthetic_caption), a word tokenizer and the tiny model config."""
    folder = tmp_path_factory.mktemp("compose")
    values = make_training_files(folder)
    data = datasets.load_from_disk(values["train_data"])
    data = data.add_column("synthetic_caption", [SYNTHETIC.format(c.split()[1]) for c in data["caption"]])
    data.save_to_disk(str(folder / "clips_data"))
    write_rows(folder / "differences.jsonl", DIFFERENCES)
    return values


@pytest.fixture(scope="module")
def paths(files):
    folder = Path(files["train_data"]).parent
    return {"clips_data": str(folder / "clips_data"), "differences": str(folder / "differences.jsonl")}


def method_from_flags(*flags) -> Method:
    return Method.from_arguments(*parse_train_args(list(flags)))


def assert_loss_falls(output_dir, window: int = 3) -> list[float]:
    losses = [record["loss"] for record in read_log(output_dir / "train_log.jsonl")]
    first, last = sum(losses[:window]) / window, sum(losses[-window:]) / window
    assert last < first, losses
    return losses


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_are_combinations_of_the_three_options(name):
    flags = ["--method", name] + (["--difference-data", "d.jsonl"] if name == "pcclip" else [])
    method = method_from_flags(*flags)
    assert (method.text_sampling, method.objective.name, method.train_parts) == tuple(PRESETS[name].values())
    assert method.objective.contrastive_loss == "softmax"


def test_flags_change_one_option_of_a_preset():
    method = method_from_flags("--method", "clips", "--text-sampling", "rewrites", "--contrastive-loss", "sigmoid")
    assert (method.text_sampling, method.objective.name, method.objective.contrastive_loss) == (
        "rewrites", "clips", "sigmoid")
    assert method.columns == ("image", "caption", "rewrites", "synthetic_caption")
    assert method.objective.config_overrides["contrastive_loss"] == "sigmoid"
    assert method_from_flags("--method", "laclip", "--train-parts", "text").train_parts == "text"
    assert method_from_flags("--method", "clip", "--lora-r", "4").train_parts == "lora"
    assert method_from_flags("--method", "laclip", "--objective", "multi-positive").objective.config_overrides == {
        "contrastive_loss": "softmax", "multi_positive": True}


@pytest.mark.parametrize("flags, message", [
    (["--objective", "multi-positive", "--text-sampling", "caption"], "multi-positive works with --text-sampling rewrites"),
    (["--method", "pcclip", "--difference-data", "d", "--contrastive-loss", "sigmoid"], "--contrastive-loss only applies"),
    (["--method", "pcclip", "--difference-data", "d", "--text-sampling", "rewrites"], "difference works with --text-sampling caption"),
    (["--train-parts", "lora"], "LoRA needs --lora-r > 0"),
    (["--train-parts", "text", "--lora-r", "2"], "--lora-r > 0 needs --train-parts lora"),
    (["--objective", "sigmoid"], "--objective must be one of"),
])
def test_bad_combinations_are_named(flags, message):
    with pytest.raises(ValueError, match=message):
        method_from_flags(*flags)


def test_clips_with_rewrites_feeds_aug_t_to_the_web_branch_only(files, paths):
    """aug_T draws the web text (text tower and captioner input); partial and full synthetic captions are unchanged."""
    tokenizer = AutoTokenizer.from_pretrained(files["tokenizer_name_or_path"])
    rows = [{**row, "pixel_values": torch.zeros(3, 8, 8)} for row in datasets.load_from_disk(paths["clips_data"])]
    batches = {}
    for sampling in ("caption", "rewrites"):
        method = Method.preset("clips", text_sampling=sampling, partial_tokens=8)
        batches[sampling] = method.objective.collator(tokenizer, 16, None, rows, method.row_options)(rows)
    captions, rewrites = batches["caption"], batches["rewrites"]
    for key in ("partial_input_ids", "caption_input_ids"):
        torch.testing.assert_close(rewrites[key], captions[key])
    web = tokenizer.batch_decode(rewrites["input_ids"], skip_special_tokens=True)
    expected = [{row["caption"], *row["rewrites"]} - {"x"} for row in rows]  # "x" has < 2 words: the caption instead
    assert all(text in options for text, options in zip(web, expected))
    assert sum(text != row["caption"] for text, row in zip(web, rows)) >= len(rows) // 4  # P = 1/2 each


def test_clips_with_laclip_rewrites_trains(files, paths, tmp_path):
    summary = run(files, tmp_path, method="clips", text_sampling="rewrites", train_data=paths["clips_data"],
                  partial_tokens=8, max_steps=10, per_device_batch_size=8, lr=2e-3,
                  model_config=files["model_config"].replace('"projection_dim": 16', '"projection_dim": 16, "captioner_heads": 2'))
    assert summary["bad_steps"] == 0
    assert_loss_falls(tmp_path / "out")
    assert "| text_sampling | rewrites |" in ModelCard.load(tmp_path / "out" / "README.md").text


def test_laclip_mt_with_the_sigmoid_loss_trains_and_loads_in_clip_model(files, tmp_path):
    run(files, tmp_path, method="laclip-mt", contrastive_loss="sigmoid", max_steps=10, per_device_batch_size=8,
        lr=2e-3)
    out = tmp_path / "out"
    assert_loss_falls(out)
    model = LaCLIPModel.from_pretrained(out).eval()
    assert model.config.contrastive_loss == "sigmoid" and model.config.multi_positive
    weights = load_file(str(out / "model.safetensors"))
    assert weights["logit_bias"].item() != -10.0  # learnt, and saved
    torch.testing.assert_close(model.logit_bias, weights["logit_bias"])
    batch = {"pixel_values": torch.randn(4, 3, 32, 32), "input_ids": torch.randint(4, 10, (4, 3, 6))}
    with torch.no_grad():
        output = model(**batch, return_loss=True)
    torch.testing.assert_close(output.loss, sigmoid_loss(output.image_embeds, output.all_text_embeds,
                                                         model.logit_scale.exp(), model.logit_bias))
    clip = CLIPModel.from_pretrained(out).eval()
    with torch.no_grad():
        torch.testing.assert_close(clip.get_image_features(pixel_values=batch["pixel_values"]).pooler_output,
                                   model.get_image_features(pixel_values=batch["pixel_values"]).pooler_output)
    card = ModelCard.load(out / "README.md")
    assert "| contrastive loss | sigmoid (SigLIP" in card.text and "siglip" in card.data.tags


def converted_clips(folder):
    from test_convert_clips import VISION, TEXT, VOCAB, released_state_dict
    from safetensors.torch import save_file

    from langclip.modeling.clips.convert_clips import convert_clips

    save_file(released_state_dict(), str(folder / "open_clip_model.safetensors"))
    (folder / "vocab.txt").write_text("".join(f"{token}\n" for token in VOCAB))
    convert_clips(folder / "open_clip_model.safetensors", folder / "base", VISION["heads"], TEXT["heads"],
                  str(folder / "vocab.txt"))
    return CLIPSModel


def plain_clip(folder, files):
    from conftest import tiny_laclip_config

    tokenizer = AutoTokenizer.from_pretrained(files["tokenizer_name_or_path"])
    config = tiny_laclip_config(tokenizer)
    CLIPModel(CLIPModel.config_class(text_config=config.text_config.to_dict(),
                                     vision_config=config.vision_config.to_dict(), projection_dim=16)).save_pretrained(
        folder / "base")
    tokenizer.save_pretrained(folder / "base")
    return LaCLIPModel


@pytest.mark.parametrize("base", ["plain-clip", "converted-clips"])
def test_pcclip_finetunes_the_text_tower_of_any_checkpoint(files, paths, tmp_path, base):
    model_class = converted_clips(tmp_path) if base == "converted-clips" else plain_clip(tmp_path, files)
    values = {k: v for k, v in files.items() if k not in ("model_config", "tokenizer_name_or_path")}
    run(values, tmp_path, method="pcclip", model_name_or_path=str(tmp_path / "base"),
        difference_data=paths["differences"], max_steps=8, lr=1e-2, precompute_image_embeddings=True)
    out = tmp_path / "out"
    assert_loss_falls(out, window=2)
    tuned, start = model_class.from_pretrained(out), model_class.from_pretrained(tmp_path / "base")
    assert type(tuned) is model_class
    before, after = start.state_dict(), tuned.state_dict()
    changed = {key for key in before if not torch.equal(before[key], after[key])}
    assert changed and all(key.startswith("text_model.encoder.layers.") for key in changed), changed


@pytest.mark.parametrize("name, expected", [
    ("clips_laclip_rewrites", ("rewrites", "clips", "softmax", "all")),
    ("laclip_mt_sigmoid", ("rewrites", "multi-positive", "sigmoid", "all")),
    ("pcclip_converted_clips", ("caption", "difference", "softmax", "text")),
])
def test_combination_configs_parse_to_their_combination(name, expected):
    method = method_from_flags("--config", str(Path(__file__).resolve().parents[1] / "configs" / f"{name}.yaml"))
    assert (method.text_sampling, method.objective.name, method.objective.contrastive_loss,
            method.train_parts) == expected


def test_sigmoid_accumulation_gradient_equals_the_full_batch_gradient(tokenizer):
    """Cached-and-recomputed micro-batches under the sigmoid loss: t and b take their gradient once, all negatives kept."""
    from conftest import tiny_laclip_config
    from test_train import full_batch

    from langclip.training.step import forward_backward

    model = LaCLIPModel(tiny_laclip_config(tokenizer, multi_positive=True, contrastive_loss="sigmoid")).double()
    method = Method.preset("laclip-mt", contrastive_loss="sigmoid")
    batch = full_batch(tokenizer, num_texts=3)
    grads, losses = [], []
    for accum_freq in (1, 4):
        model.zero_grad()
        losses.append(forward_backward(model, batch, method.objective, model, accum_freq))
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    torch.testing.assert_close(losses[0], losses[1], rtol=1e-12, atol=1e-12)
    assert grads[0]["logit_bias"] != 0
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], rtol=1e-9, atol=1e-12, msg=name)
    with torch.no_grad():
        torch.testing.assert_close(losses[0], model(**batch, return_loss=True).loss)


def test_clips_with_the_sigmoid_loss_uses_it_in_both_contrastive_terms(tokenizer):
    from test_modeling_clips import batch, tiny_clips_config

    model = CLIPSModel(tiny_clips_config(tokenizer, contrastive_loss="sigmoid")).eval()
    assert model.logit_bias.item() == -10.0
    with torch.no_grad():
        output = model(**batch(tokenizer), return_loss=True)
        scale = model.logit_scale.exp()
        expected = (sigmoid_loss(output.image_embeds, output.text_embeds, scale, model.logit_bias)
                    + sigmoid_loss(output.image_embeds, output.partial_text_embeds, scale, model.logit_bias)) / 2
    torch.testing.assert_close(output.contrastive_loss, expected)


def test_laclip_mt_texts_per_image_are_the_most_rewrites_of_any_row(tokenizer):
    from PIL import Image

    rewrites = [[], ["a photo of a dog"], ["a dog outside", "one brown dog"], ["a dog"]]  # the first row has none
    rows = datasets.Dataset.from_dict({"id": ["0", "1", "2", "3"], "image": [Image.new("RGB", (40, 40))] * 4,
                                       "caption": ["a dog"] * 4, "rewrites": rewrites})
    processor = default_image_processor(32)
    _, collator = Method.preset("laclip-mt").prepare_data(None, rows, tokenizer, 16, processor, "cpu")
    assert collator.num_texts == 3
    assert collator(list(rows))["input_ids"].shape[:2] == (4, 3)  # shorter rows padded with their caption

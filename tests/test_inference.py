"""Inference as users meet it: N images x M texts, the zero-shot pipeline (after `import langclip`, and with
remote code in a process that cannot import langclip), converted CLIPS checkpoints in `langclip eval`."""

import json
import os
import shutil
import subprocess
import sys
import textwrap

import datasets
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from transformers import AutoConfig, AutoModelForZeroShotImageClassification, AutoProcessor, AutoTokenizer, CLIPModel, pipeline

from langclip import CLIPSConfig, CLIPSModel, LaCLIPModel
from langclip.modeling.auto import save_folder
from langclip.modeling.clips.convert_clips import convert_clips
from langclip.modeling.clips.modeling_clips import clips_text_layout
from langclip.modeling.image_processing import default_image_processor

from conftest import WITHOUT_LANGCLIP, tiny_laclip_config
from test_convert_clips import TEXT, VISION, released_state_dict

LABELS = ["red circle", "blue square", "green star"]
AUTO_MAP = {"AutoConfig": "configuration_laclip.LaCLIPConfig", "AutoModel": "modeling_laclip.LaCLIPModel",
            "AutoModelForZeroShotImageClassification": "modeling_laclip.LaCLIPModel"}


def _images(n: int) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)) for _ in range(n)]


@pytest.fixture(scope="module")
def laclip_dir(tmp_path_factory, tokenizer):
    folder = tmp_path_factory.mktemp("laclip")
    torch.manual_seed(0)
    processor = default_image_processor(32)
    save_folder(LaCLIPModel(tiny_laclip_config(tokenizer)), folder, processor, tokenizer)
    return folder


@pytest.fixture(scope="module")
def clips_dir(tmp_path_factory):
    """A tiny released-architecture CLIPS checkpoint converted from an OpenCLIP-format state dict."""
    from safetensors.torch import save_file

    from test_convert_clips import VOCAB

    root = tmp_path_factory.mktemp("clips")
    save_file(released_state_dict(), str(root / "open_clip.safetensors"))
    vocab = VOCAB + ["blue", "green", "square", "star", "this", "is", "photo", "of", "yellow", "shape"]
    (root / "vocab.txt").write_text("".join(f"{token}\n" for token in vocab))
    convert_clips(root / "open_clip.safetensors", root / "model", VISION["heads"], TEXT["heads"], str(root / "vocab.txt"))
    return root / "model"


def _hand_scores(model, tokenizer, processor, image, labels, template="This is a photo of {}.") -> list[float]:
    """softmax over labels of s * n(f(image)) . n(g(template(label))), from the model's own feature methods."""
    with torch.no_grad():
        pixels = processor(images=[image], return_tensors="pt")["pixel_values"]
        tokens = tokenizer([template.format(label) for label in labels], padding=True, return_tensors="pt")
        image_features = F.normalize(model.get_image_features(pixel_values=pixels).pooler_output, dim=-1)
        text_features = F.normalize(model.get_text_features(**tokens).pooler_output, dim=-1)
        return (model.logit_scale.exp() * image_features @ text_features.T).softmax(dim=-1)[0].tolist()


def test_n_images_by_m_texts_equal_clip_model(tokenizer, tiny_config):
    texts = tokenizer(["a red circle", "two blue squares on the left", "a star"], padding=True, return_tensors="pt")
    pixels = torch.randn(2, 3, 32, 32)
    text = tiny_config.text_config.to_dict()
    vision = tiny_config.vision_config.to_dict()
    for model in (LaCLIPModel(tiny_config), CLIPSModel(CLIPSConfig(text_config=text, vision_config=vision,
                                                                   projection_dim=16))):
        model.eval()
        plain = CLIPModel(tiny_config).eval()
        plain.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("captioner.")})
        with torch.no_grad():
            ours, theirs = model(**texts, pixel_values=pixels), plain(**texts, pixel_values=pixels)
        assert ours.logits_per_image.shape == (2, 3) and ours.logits_per_text.shape == (3, 2)
        torch.testing.assert_close(ours.logits_per_image, theirs.logits_per_image)
        torch.testing.assert_close(ours.logits_per_text, theirs.logits_per_text)
        with pytest.raises(ValueError, match="2 images, 3 texts|batch=2"):
            model(**texts, pixel_values=pixels, return_loss=True)


def test_pipeline_after_import_langclip_equals_hand_softmax(laclip_dir, clips_dir):
    image = _images(1)[0]
    for folder, model_class in ((laclip_dir, LaCLIPModel), (clips_dir, CLIPSModel)):
        classifier = pipeline("zero-shot-image-classification", model=str(folder))
        assert type(classifier.model) is model_class
        scores = {r["label"]: r["score"] for r in classifier(image, candidate_labels=LABELS)}
        model = AutoModelForZeroShotImageClassification.from_pretrained(folder).eval()
        expected = _hand_scores(model, AutoTokenizer.from_pretrained(folder), AutoProcessor.from_pretrained(folder),
                                image, LABELS)
        assert [scores[label] for label in LABELS] == pytest.approx(expected, abs=1e-6)
        assert len(set(expected)) == 3  # not a degenerate uniform answer


REMOTE = WITHOUT_LANGCLIP + """
    from PIL import Image
    from transformers import AutoConfig, AutoModel, AutoProcessor, AutoTokenizer, pipeline
    image = Image.open(sys.argv[2])
    out = {}
    for folder in sys.argv[1].split(","):
        classifier = pipeline("zero-shot-image-classification", model=folder, trust_remote_code=True)
        scores = {r["label"]: r["score"] for r in classifier(image, candidate_labels=%r)}
        # the tokenizer and processor are standard classes: no trust_remote_code needed
        tokenizer, processor = AutoTokenizer.from_pretrained(folder), AutoProcessor.from_pretrained(folder)
        out[folder] = [type(classifier.model).__name__, type(processor).__name__, scores]
    print("RESULT " + json.dumps(out))
""" % (LABELS,)


def test_remote_code_pipeline_without_langclip(laclip_dir, clips_dir, tmp_path):
    image = _images(1)[0]
    image.save(tmp_path / "image.png")
    copies = []
    for folder in (laclip_dir, clips_dir):  # a folder copied anywhere works on its own
        copies.append(tmp_path / folder.parent.name)
        shutil.copytree(folder, copies[-1])
    assert json.loads((copies[0] / "config.json").read_text())["auto_map"] == AUTO_MAP
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf-home"), "HF_HUB_OFFLINE": "1"}
    code = textwrap.dedent(REMOTE).replace("sys.argv[1]", repr(",".join(map(str, copies)))).replace(
        "sys.argv[2]", repr(str(tmp_path / "image.png")))
    result = subprocess.run([sys.executable, "-I", "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.split("RESULT ", 1)[1])
    for copy, folder, name in zip(copies, (laclip_dir, clips_dir), ("LaCLIPModel", "CLIPSModel")):
        model_name, processor_name, scores = out[str(copy)]
        assert (model_name, processor_name) == (name, "CLIPProcessor")
        model = AutoModelForZeroShotImageClassification.from_pretrained(folder).eval()
        expected = _hand_scores(model, AutoTokenizer.from_pretrained(folder), AutoProcessor.from_pretrained(folder),
                                image, LABELS)
        assert [scores[label] for label in LABELS] == pytest.approx(expected, abs=1e-6)


def test_converted_clips_tokenizer_is_a_standard_fast_tokenizer(clips_dir):
    config = json.loads((clips_dir / "tokenizer_config.json").read_text())
    assert "auto_map" not in config and config["tokenizer_class"] in ("PreTrainedTokenizerFast", "TokenizersBackend")
    tokenizer = AutoTokenizer.from_pretrained(clips_dir)
    assert tokenizer.is_fast
    batch = tokenizer(["A dog on the beach.", "red  circles &amp;amp; dog"], padding=True, return_tensors="pt")
    assert batch["input_ids"].tolist() == [[1, 4, 5, 6, 7, 8, 12, 2], [1, 9, 10, 11, 3, 5, 2, 0]]  # & -> [UNK]
    assert batch["attention_mask"][1].tolist() == [1] * 7 + [0]
    assert tokenizer.decode(batch["input_ids"][1], skip_special_tokens=True) == "red circles dog"
    # the text tower completes it to the released layout [1] ids [2] 0 ... 0 [101] of context 10
    layout = clips_text_layout(batch["input_ids"], batch["attention_mask"], 10, 0, 2, 101)
    assert layout.tolist() == [[1, 4, 5, 6, 7, 8, 12, 2, 0, 101], [1, 9, 10, 11, 3, 5, 2, 0, 0, 101]]
    long = tokenizer(["a " * 20], truncation=True, max_length=10, return_tensors="pt")  # cut as the release cuts
    assert clips_text_layout(long["input_ids"], long["attention_mask"], 10, 0, 2, 101).tolist() == [
        [1, 4, 4, 4, 4, 4, 4, 4, 2, 101]]
    assert clips_text_layout(layout, None, 10, 0, 2, 101) is layout  # already complete


def test_converted_clips_features_are_the_release_forward_for_any_padding(clips_dir):
    from test_convert_clips import reference_text_features

    model = AutoModelForZeroShotImageClassification.from_pretrained(clips_dir).eval()
    assert model.config.vision_config.layer_norm_eps == 1e-6 and model.config.text_last_token_id == 101
    tokenizer = AutoTokenizer.from_pretrained(clips_dir)
    texts = ["a dog on the beach.", "red circles"]
    with torch.no_grad():
        padded = model.get_text_features(**tokenizer(texts, padding="max_length", max_length=9,
                                                     return_tensors="pt")).pooler_output
        longest = model.get_text_features(**tokenizer(texts, padding=True, return_tensors="pt")).pooler_output
    tokens = tokenizer(texts, padding=True, return_tensors="pt")
    layout = clips_text_layout(tokens["input_ids"], tokens["attention_mask"], 10, 0, 2, 101)
    torch.testing.assert_close(padded, longest)
    torch.testing.assert_close(longest, reference_text_features(released_state_dict(), layout), rtol=1e-4, atol=1e-5)
    processor = AutoProcessor.from_pretrained(clips_dir).image_processor
    assert processor.resample == 2 and processor.do_center_crop is False  # bilinear squash resize


def test_last_pooling_skips_padding(tokenizer):
    config = CLIPSConfig(text_config=tiny_laclip_config(tokenizer).text_config.to_dict(),
                         vision_config=tiny_laclip_config(tokenizer).vision_config.to_dict(), projection_dim=16,
                         text_attention="bidirectional", text_pooling="last")
    model = CLIPSModel(config).eval()
    short = tokenizer(["a red circle"], return_tensors="pt")
    padded = tokenizer(["a red circle", "two blue squares on the left of a star"], padding=True, return_tensors="pt")
    assert padded["attention_mask"][0].eq(0).any()
    with torch.no_grad():
        alone = model.get_text_features(**short).pooler_output
        batched = model.get_text_features(**padded).pooler_output
    torch.testing.assert_close(batched[:1], alone)


def test_generate_caption_makes_max_new_tokens(tokenizer):
    config = CLIPSConfig(text_config=tiny_laclip_config(tokenizer).text_config.to_dict(),
                         vision_config=tiny_laclip_config(tokenizer).vision_config.to_dict(), projection_dim=16,
                         captioner_max_length=8)
    model = CLIPSModel(config).eval()
    model.config.text_config.eos_token_id = -1  # never ends early: the length is the budget's
    web = tokenizer(["a red circle", "a star"], padding=True, return_tensors="pt")
    pixels = torch.randn(2, 3, 32, 32)
    assert model.generate_caption(pixels, web["input_ids"], web["attention_mask"], max_new_tokens=3).shape == (2, 4)
    assert model.generate_caption(pixels, web["input_ids"], web["attention_mask"]).shape == (2, 8)  # the cap
    assert model.generate_caption(pixels, web["input_ids"], web["attention_mask"], max_new_tokens=50).shape == (2, 8)


def test_converted_clips_eval_round_trip(clips_dir, tmp_path):
    from langclip.cli import main
    from langclip.evaluation.features import encode_images
    from langclip.evaluation.zero_shot import zero_shot_accuracy, zero_shot_classifier

    colours = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255), "yellow": (255, 255, 0)}
    names = list(colours)
    images = [Image.fromarray(np.full((20, 24, 3), colours[names[i % 4]], dtype=np.uint8)) for i in range(12)]
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=names)})
    datasets.DatasetDict({"test": datasets.Dataset.from_dict({"image": images, "label": [i % 4 for i in range(12)]},
                                                             features=features)}).save_to_disk(tmp_path / "data")
    output = tmp_path / "zero-shot.json"
    (tmp_path / "templates.txt").write_text("a {} shape\nthis is {}\n")
    assert main(["eval", "--model", str(clips_dir), "--dataset", str(tmp_path / "data"), "--task", "zero-shot",
                 "--templates", str(tmp_path / "templates.txt"), "--output", str(output)]) == 0
    record = json.loads(output.read_text())
    model = AutoModelForZeroShotImageClassification.from_pretrained(clips_dir).eval()
    processor = AutoProcessor.from_pretrained(clips_dir)
    pixels = processor(images=images, return_tensors="pt")["pixel_values"]
    classifier = zero_shot_classifier(model, AutoTokenizer.from_pretrained(clips_dir), names, ["a {} shape", "this is {}"],
                                      progress=False)
    expected = zero_shot_accuracy(encode_images(model, [pixels], progress=False), classifier,
                                  torch.tensor([i % 4 for i in range(12)]))
    assert record["metrics"] == pytest.approx(expected)
    assert AutoConfig.from_pretrained(clips_dir).model_type == "clips"


def test_converted_clips_finetunes_with_langclip_train(clips_dir, tmp_path):
    from train_utils import make_training_files

    from langclip.training.trainer import train_in_process

    values = make_training_files(tmp_path, rows=8)
    data = datasets.load_from_disk(values["train_data"])
    data.add_column("synthetic_caption", [f"{c}. the shape is small." for c in data["caption"]]).save_to_disk(
        str(tmp_path / "clips_data"))
    summary = train_in_process({"train_data": str(tmp_path / "clips_data"), "method": "clips",
                                "model_name_or_path": str(clips_dir), "partial_tokens": 6, "max_steps": 2,
                                "per_device_batch_size": 4, "report_to": "none", "save_steps": 0,
                                "output_dir": str(tmp_path / "out")})
    assert summary["step"] == 2 and torch.isfinite(torch.tensor(summary["loss"]))
    tuned = AutoModelForZeroShotImageClassification.from_pretrained(tmp_path / "out")
    assert type(tuned) is CLIPSModel and tuned.config.text_last_token_id == 101
    assert AutoTokenizer.from_pretrained(tmp_path / "out").is_fast  # the converted tokenizer, saved again
    assert "auto_map" in json.loads((tmp_path / "out" / "config.json").read_text())

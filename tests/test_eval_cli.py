"""`langclip eval` on a tiny saved model and a dataset made here: its JSON equals the functional API."""

import json

import datasets
import numpy as np
import pytest
import torch
from PIL import Image

from langclip import LaCLIPModel
from langclip.cli import main
from langclip.evaluation.features import encode_images, encode_texts
from langclip.evaluation.few_shot import few_shot_accuracy
from langclip.evaluation.retrieval import retrieval_recall
from langclip.evaluation.run import format_table, load_model
from langclip.evaluation.templates import LACLIP_IMAGENET_TEMPLATES
from langclip.evaluation.zero_shot import zero_shot_accuracy, zero_shot_classifier

from conftest import tiny_laclip_config

COLOURS = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255), "yellow": (255, 255, 0)}
NAMES = list(COLOURS)


def _image(colour: str, row: int) -> Image.Image:
    pixels = np.zeros((40, 48, 3), dtype=np.uint8)  # not the model size: the processor resizes
    pixels[row % 20 : row % 20 + 20, :24] = COLOURS[colour]
    return Image.fromarray(pixels)


def _rows(n: int, offset: int = 0) -> dict:
    labels = [(i + offset) % 4 for i in range(n)]
    return {
        "image": [_image(NAMES[label], i) for i, label in enumerate(labels)],
        "label": labels,
        "captions": [[f"a {NAMES[label]} square", f"{NAMES[label]} shape on the left"] for label in labels],
    }


FEATURES = datasets.Features(
    {"image": datasets.Image(), "label": datasets.ClassLabel(names=NAMES), "captions": [datasets.Value("string")]}
)


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tokenizer):
    root = tmp_path_factory.mktemp("eval")
    torch.manual_seed(0)
    LaCLIPModel(tiny_laclip_config(tokenizer)).save_pretrained(root / "model")
    tokenizer.save_pretrained(root / "model")
    splits = {"train": _rows(16, 1), "validation": _rows(8, 2), "test": _rows(40)}
    datasets.DatasetDict({k: datasets.Dataset.from_dict(v, features=FEATURES) for k, v in splits.items()}).save_to_disk(
        root / "data"
    )
    return root


def _eval(setup, task: str, *extra: str) -> dict:
    output = setup / f"{task}.json"
    args = ["eval", "--debug", "--model", str(setup / "model"), "--dataset", str(setup / "data"), "--task", task]
    assert main([*args, "--batch-size", "16", "--output", str(output), *extra]) == 0
    return json.loads(output.read_text())


def _reference(setup):
    model, tokenizer, processor = load_model(str(setup / "model"), "cpu")
    test = datasets.load_from_disk(str(setup / "data"))["test"]
    pixels = processor(images=[image.convert("RGB") for image in test["image"]], return_tensors="pt")["pixel_values"]
    return model, tokenizer, encode_images(model, [pixels], progress=False), test


def test_zero_shot_and_retrieval_match_the_functional_api(setup, capsys):
    model, tokenizer, images, test = _reference(setup)
    record = _eval(setup, "zero-shot", "--templates", "laclip_imagenet", "--cache-dir", str(setup / "cache"))
    classifier = zero_shot_classifier(model, tokenizer, NAMES, LACLIP_IMAGENET_TEMPLATES, progress=False)
    expected = zero_shot_accuracy(images, classifier, torch.tensor(test["label"]))
    assert record["metrics"] == pytest.approx(expected)
    assert record["dataset"]["split"] == "test" and record["num_examples"] == 40
    assert record["settings"] == {"templates": "laclip_imagenet", "classes": 4}
    assert len(list((setup / "cache").glob("*.safetensors"))) == 2  # the classifier and the image features
    assert format_table(record) in capsys.readouterr().out

    record = _eval(setup, "retrieval", "--caption-column", "captions")
    texts = [text for captions in test["captions"] for text in captions]
    expected = retrieval_recall(images, encode_texts(model, tokenizer, texts, progress=False),
                                torch.arange(40).repeat_interleave(2))
    assert {k: v for k, v in record["metrics"].items() if not k.startswith("mean")} == pytest.approx(expected)
    assert record["metrics"]["mean_R@1"] == pytest.approx(
        (expected["image_to_text_R@1"] + expected["text_to_image_R@1"]) / 2)
    assert record["settings"] == {"texts": 80, "distinct_texts": 8, "distinct_images": 20}  # rows i, i + 20 alike


def test_few_shot_and_linear_probe_run_from_the_cli(setup):
    _, _, images, test = _reference(setup)
    record = _eval(setup, "few-shot", "--n-way", "3", "--n-shot", "2", "--n-query", "3", "--episodes", "7")
    expected = few_shot_accuracy(images, torch.tensor(test["label"]), 3, 2, 3, 7, seed=0)
    assert record["metrics"] == pytest.approx(expected)
    bf16 = _eval(setup, "few-shot", "--n-way", "3", "--n-shot", "2", "--n-query", "3", "--episodes", "7",
                 "--dtype", "bfloat16")  # a bf16 model gets bf16 pixels; features come back as float32
    assert set(bf16["metrics"]) == {"accuracy", "ci95"} and 0 <= bf16["metrics"]["accuracy"] <= 1
    with pytest.warns(UserWarning, match="at the edge of the grid"):  # chance-level features: C = 1e-3 is best
        record = _eval(setup, "linear-probe", "--validation-split", "validation")
    assert set(record["metrics"]) == {"accuracy", "mean_per_class", "validation_accuracy"}
    assert 0 <= record["metrics"]["accuracy"] <= 1 and record["settings"]["C"] > 0
    assert record["settings"]["train_rows"] == 16 and record["settings"]["validation_rows"] == 8


def test_eval_errors_say_what_is_wrong(setup, tmp_path, monkeypatch):
    plain = datasets.Dataset.from_dict({"image": [_image("red", 0)], "label": [0]})  # label is int64, not ClassLabel
    plain.save_to_disk(tmp_path / "plain")
    with pytest.raises(ValueError, match="so it carries no class names: give `classnames` in the manifest \\(or --class-names"):
        _eval(setup, "zero-shot", "--dataset", str(tmp_path / "plain"))
    datasets.Dataset.from_dict({"image": [], "label": [], "captions": []}, features=FEATURES).save_to_disk(
        tmp_path / "empty", num_shards=1
    )
    with pytest.raises(ValueError, match="has no rows: nothing to evaluate"):
        _eval(setup, "zero-shot", "--dataset", str(tmp_path / "empty"))
    with pytest.raises(ValueError, match="has no split 'val'; it has train, validation, test"):
        _eval(setup, "zero-shot", "--split", "val")
    with pytest.raises(ValueError, match="no column 'caption' \\(set `caption_column` in the manifest, --caption-column"):
        _eval(setup, "retrieval")
    with pytest.raises(ValueError, match="single Dataset folder without splits, so split 'train' cannot be chosen"):
        _eval(setup, "linear-probe", "--dataset", str(tmp_path / "plain"), "--validation-split", "validation")
    with pytest.raises(ValueError, match="invalid repo id 'no-namespace'"):
        _eval(setup, "zero-shot", "--push-to-hub", "no-namespace")
    import huggingface_hub.constants

    for variable in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    with pytest.raises(ValueError, match="no Hugging Face token"):  # before any evaluation runs
        _eval(setup, "zero-shot", "--push-to-hub", "me/model", "--dataset", str(tmp_path / "missing"))


def test_class_names_flag_takes_a_long_comma_separated_list(tmp_path):
    from langclip.evaluation.run import class_names_flag

    names = [f"class number {i}" for i in range(40)]  # over 255 characters: no valid file name
    assert class_names_flag(",".join(names)) == names
    (tmp_path / "names.txt").write_text("cat\ndog\n")
    assert class_names_flag(str(tmp_path / "names.txt")) == ["cat", "dog"]

"""The ``pcclip`` training method through `train(...)`: what changes, the checkpoint, accumulation, bad input."""

import json

import pytest
import torch

from langclip import LaCLIPModel
from langclip.training.arguments import DataArguments, ModelArguments, TrainArguments
from langclip.processing.collators import DifferenceCollator
from langclip.training.methods import Method, freeze_all_but_text_layers
from langclip.training.step import forward_backward
from langclip.training.trainer import train
from train_utils import make_training_files, pcclip_loss, read_log
from conftest import tiny_laclip_config

DIFFERENCES = [
    {"id_a": str(i), "id_b": str(j), "difference": f"a {c} circle and not a {d} circle"}
    for i, j, c, d in [(0, 1, "red", "green"), (1, 2, "green", "blue"), (2, 3, "blue", "yellow"), (3, 0, "yellow", "red"),
                       (4, 6, "red", "blue"), (5, 7, "green", "yellow"), (6, 4, "blue", "red"), (7, 5, "yellow", "green")]
]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Image data (ids "0".."15"), a saved base model with its tokenizer, and difference rows."""
    folder = tmp_path_factory.mktemp("pcclip")
    flags = make_training_files(folder, rows=16)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(flags["tokenizer_name_or_path"])
    torch.manual_seed(0)
    LaCLIPModel(tiny_laclip_config(tokenizer)).save_pretrained(str(folder / "base"))
    tokenizer.save_pretrained(str(folder / "base"))
    write_rows(folder / "differences.jsonl", DIFFERENCES)
    return {"folder": folder, "data": flags["train_data"], "base": str(folder / "base"),
            "differences": str(folder / "differences.jsonl")}


def write_rows(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


def run(files, output_dir, model=None, data=None, **train_kwargs):
    model_args = ModelArguments(method="pcclip", model_name_or_path=files["base"], **(model or {}))
    data_args = DataArguments(train_data=files["data"], **{"difference_data": files["differences"], **(data or {})})
    settings = {"per_device_batch_size": 4, "max_steps": 2, "lr": 1e-2, "report_to": "none", "save_steps": 0}
    train_args = TrainArguments(output_dir=str(output_dir), **{**settings, **train_kwargs})
    return train(model_args, data_args, train_args)


def changed_parameters(files, output_dir) -> set[str]:
    base = LaCLIPModel.from_pretrained(files["base"]).state_dict()
    tuned = LaCLIPModel.from_pretrained(str(output_dir)).state_dict()
    assert base.keys() == tuned.keys()
    return {key for key in base if not torch.equal(base[key], tuned[key])}


@pytest.mark.parametrize(
    "model, data, train_kwargs",
    [
        ({}, {}, {}),
        ({}, {"precompute_image_embeddings": True}, {"clip_loss_weight": 0.5}),
    ],
    ids=["pixels", "precomputed+clip-loss"],
)
def test_only_the_text_layers_change_and_the_checkpoint_loads(files, tmp_path, model, data, train_kwargs):
    summary = run(files, tmp_path / "out", model, data, **train_kwargs)
    assert summary["step"] == 2 and summary["loss"] is not None and summary["bad_steps"] == 0
    changed = changed_parameters(files, tmp_path / "out")
    assert changed and all(key.startswith("text_model.encoder.layers.") for key in changed), changed
    assert any(".self_attn." in key for key in changed) and any(".mlp." in key for key in changed)


def test_lora_changes_only_text_layer_linear_weights_after_the_merge(files, tmp_path):
    run(files, tmp_path / "out", {"lora_r": 2}, {"precompute_image_embeddings": True}, lr=0.1)
    changed = changed_parameters(files, tmp_path / "out")
    linear = (".q_proj.weight", ".k_proj.weight", ".v_proj.weight", ".out_proj.weight", ".fc1.weight", ".fc2.weight")
    assert changed and all(key.startswith("text_model.encoder.layers.") and key.endswith(linear) for key in changed)


def test_precomputed_embeddings_give_the_pixels_loss(files, tmp_path):
    run(files, tmp_path / "pixels")
    run(files, tmp_path / "cached", data={"precompute_image_embeddings": True})
    pixels, cached = read_log(tmp_path / "pixels" / "train_log.jsonl"), read_log(tmp_path / "cached" / "train_log.jsonl")
    assert [r["step"] for r in cached] == [1, 2]
    assert cached[0]["loss"] == pytest.approx(pixels[0]["loss"], rel=1e-5)  # the first loss comes before any update


def test_accumulation_gives_the_full_batch_gradient(tokenizer, tiny_config):
    model = LaCLIPModel(tiny_config)
    freeze_all_but_text_layers(model)
    embeddings = torch.randn(8, tiny_config.projection_dim)
    texts = ["a red circle", "two blue squares", "small star", "the large shape on top", "green", "a photo of three",
             "yellow left", "bottom right"]
    rows = [{"id_a": str(i), "id_b": str((i + 1) % 8), "difference": text} for i, text in enumerate(texts)]
    batch = DifferenceCollator(tokenizer, 16, lambda i: embeddings[int(i)])(rows)
    gradients = []
    for accum_freq in (1, 2, 4):
        model.zero_grad()
        loss = forward_backward(model, batch, Method.preset("pcclip").objective, model, accum_freq)
        gradients.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
        torch.testing.assert_close(loss, pcclip_loss(model, batch).detach())
    assert gradients[0] and all(name.startswith("text_model.encoder.layers.") for name in gradients[0])
    for accumulated in gradients[1:]:
        torch.testing.assert_close(accumulated, gradients[0], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize(
    "row, message",
    [
        ({"id_a": "3", "id_b": "99", "difference": "a larger red circle on the left"}, r"id_b='99' is not an id"),
        ({"id_a": "5", "id_b": "5", "difference": "a larger red circle on the left"}, r"pairs image '5' with itself"),
        ({"id_a": "1", "id_b": "2", "difference": " "}, r"\('1', '2'\) has an empty difference text"),
    ],
    ids=["missing-id", "self-pair", "empty-text"],
)
def test_bad_difference_rows_name_file_and_row(files, tmp_path, row, message):
    path = tmp_path / "bad.jsonl"
    write_rows(path, DIFFERENCES + [row])
    with pytest.raises(ValueError, match=rf"bad\.jsonl: difference row 8.*{message}"):
        run(files, tmp_path / "out", data={"difference_data": str(path)})


def test_missing_difference_data_or_columns(files, tmp_path):
    with pytest.raises(ValueError, match="--objective difference \\(--method pcclip\\) needs --difference-data"):
        run(files, tmp_path / "out", data={"difference_data": None})
    path = tmp_path / "cols.jsonl"
    write_rows(path, [{"id_a": "0", "other": "1", "difference": "x"}])
    with pytest.raises(ValueError, match=r"cols\.jsonl: no column\(s\) \['id_b'\]"):
        run(files, tmp_path / "out", data={"difference_data": str(path)})

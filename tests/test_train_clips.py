"""The `clips` training method: accumulation keeps the full-batch gradient, a short run through `train`, bad input."""

import datasets
import pytest
import torch
from test_train import _fresh_accelerator, run  # noqa: F401  (autouse fixture: a fresh Accelerator per test)
from train_utils import as_flags, make_training_files, parse_train_args, read_log

from langclip import CLIPSModel
from langclip.training.methods import Method
from langclip.training.step import forward_backward
from test_modeling_clips import batch as clips_batch
from test_modeling_clips import tiny_clips_config

SYNTHETIC = "a photo of a {} circle on the left. the shape is small. the picture is a drawing with one shape."


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("train_clips")
    values = make_training_files(folder, rows=16)
    data = datasets.load_from_disk(values["train_data"])
    data = data.add_column("synthetic_caption", [SYNTHETIC.format(c.split()[1]) for c in data["caption"]])
    data.save_to_disk(str(folder / "clips_data"))
    return {**values, "train_data": str(folder / "clips_data"), "method": "clips", "partial_tokens": 8,
            "model_config": values["model_config"].replace('"projection_dim": 16',
                                                            '"projection_dim": 16, "captioner_heads": 2')}


def test_accumulation_gradient_equals_the_full_batch_gradient(tokenizer):
    """The captioner term splits over micro-batches like the contrastive one: same loss and gradient."""
    model = CLIPSModel(tiny_clips_config(tokenizer, caption_loss_weight=1.5, contrastive_loss_weight=0.5)).double()
    inputs = {k: v.double() if v.is_floating_point() else v for k, v in clips_batch(tokenizer).items()}
    inputs = {k: torch.cat([v, v.flip(0)]) for k, v in inputs.items()}  # 6 rows
    inputs["pixel_values"] = torch.randn_like(inputs["pixel_values"])
    grads, losses = [], []
    for accum_freq in (1, 3):
        model.zero_grad()
        losses.append(forward_backward(model, inputs, Method.preset("clips").objective, model, accum_freq))
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    expected = model(**inputs, return_loss=True).loss
    torch.testing.assert_close(losses[0], expected.detach(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(losses[1], losses[0], rtol=1e-12, atol=1e-12)
    assert grads[0].keys() == grads[1].keys() and any(n.startswith("captioner.") for n in grads[0])
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], rtol=1e-9, atol=1e-12, msg=name)


@pytest.mark.parametrize("partial_caption", ["subcaption", "none"])
def test_clips_trains_through_train(files, tmp_path, partial_caption):
    summary = run(files, tmp_path, max_steps=3, partial_caption=partial_caption, accum_freq=2,
                  per_device_batch_size=2)
    assert summary["step"] == 3 and torch.isfinite(torch.tensor(summary["loss"]))
    assert len(read_log(tmp_path / "out" / "train_log.jsonl")) == 3
    model = CLIPSModel.from_pretrained(tmp_path / "out")
    assert model.config.model_type == "clips" and model.config.captioner_heads == 2


def test_bad_clips_input(files, tmp_path):
    plain = datasets.load_from_disk(files["train_data"]).remove_columns("synthetic_caption")
    plain.save_to_disk(str(tmp_path / "plain"))
    with pytest.raises(ValueError, match=r"--objective clips with --text-sampling caption needs the column\(s\) 'synthetic_caption'"):
        run(files, tmp_path, max_steps=1, train_data=str(tmp_path / "plain"))
    for k in (0, -1):
        with pytest.raises(ValueError, match=f"--partial-tokens \\(K\\) must be a positive number of tokens, got {k}"):
            parse_train_args(as_flags({**files, "partial_tokens": k}))
    with pytest.raises(ValueError, match="K=2"):  # positive but no room beside <bos> and <eos>
        run(files, tmp_path, max_steps=1, partial_tokens=2)
    with pytest.raises(ValueError, match="--partial-caption must be one of"):
        parse_train_args(as_flags({**files, "partial_caption": "middle"}))

"""The training loop in one process: gradients, schedule, guards, checkpoints, LoRA, compile, precision, CLI."""

import json
import math
import os

import numpy as np
import pytest
import torch
from accelerate.state import AcceleratorState
from datasets import load_from_disk
from conftest import tiny_laclip_config
from huggingface_hub import ModelCard
from hub_server import HubServer
from safetensors.torch import load_file
from train_utils import as_flags, make_training_files, parse_train_args, read_log, training_values
from transformers import CLIPModel

from langclip import LaCLIPModel
from langclip.cli import main as cli_main
from langclip.errors import ConfigError
from langclip.processing.transforms import BadSampleError
from langclip.training.optim import Schedule, parameter_groups
from langclip.training.methods import Method
from langclip.training.step import forward_backward
from langclip.training.trainer import train


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return make_training_files(tmp_path_factory.mktemp("train"))


@pytest.fixture(autouse=True)
def _fresh_accelerator():
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


def run(files, tmp_path, **overrides):
    return train(*parse_train_args(as_flags(training_values(files, **{"output_dir": str(tmp_path / "out"), **overrides}))))


def test_parameter_groups_exclude_biases_norms_and_scalars(tiny_config):
    model = LaCLIPModel(tiny_config)
    decay, no_decay = parameter_groups(model, 0.5)
    names = {id(p): n for n, p in model.named_parameters()}
    assert decay["weight_decay"] == 0.5 and no_decay["weight_decay"] == 0.0
    assert {names[id(p)] for p in no_decay["params"]} == {
        n for n, p in model.named_parameters() if p.ndim < 2
    }
    assert "logit_scale" in {names[id(p)] for p in no_decay["params"]}
    assert all(p.ndim >= 2 for p in decay["params"])
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


def test_learning_rate_warmup_then_cosine():
    learning_rate = Schedule(total_steps=110, lr=1e-3, warmup_steps=10, lr_start=1e-6, lr_end=1e-5)
    assert learning_rate(0) == 1e-6
    assert learning_rate(5) == pytest.approx(1e-6 + (1e-3 - 1e-6) / 2)
    assert learning_rate(10) == pytest.approx(1e-3)
    assert learning_rate(60) == pytest.approx((1e-3 + 1e-5) / 2)
    assert learning_rate(85) == pytest.approx(1e-5 + (1e-3 - 1e-5) * (1 + math.cos(math.pi * 0.75)) / 2)
    assert learning_rate(110) == pytest.approx(1e-5)


def test_learning_rate_decays_once_per_epoch_as_torchs_exponential_lr():
    """PC-CLIP's official schedule: ExponentialLR(gamma=0.9) stepped at each epoch's end, after our warm-up."""
    learning_rate = Schedule(total_steps=50, lr=1e-3, warmup_steps=4, lr_start=1e-6, lr_end=1e-5, decay_per_epoch=0.9,
                             steps_per_epoch=10)
    assert learning_rate(2) == pytest.approx(1e-6 + (1e-3 - 1e-6) / 2)  # warm-up unchanged
    assert [learning_rate(4 + k) for k in (0, 9, 10, 19, 20, 45)] == pytest.approx(
        [1e-3, 1e-3, 9e-4, 9e-4, 8.1e-4, 1e-3 * 0.9**4])
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=1e-3)
    scheduler, torch_rates = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=0.9), []
    for _ in range(5):
        torch_rates += [optimizer.param_groups[0]["lr"]] * 10
        optimizer.step()
        scheduler.step()
    assert [learning_rate(4 + k) for k in range(50)] == pytest.approx(torch_rates)


def test_per_epoch_decay_in_a_training_run_and_refused_without_epochs(files, tmp_path):
    run(files, tmp_path, max_steps=6, logging_steps=1, lr=1e-3, lr_decay_per_epoch=0.5, per_device_batch_size=16)
    log = read_log(tmp_path / "out" / "train_log.jsonl")  # 32 rows, batch 16: 2 steps per epoch
    assert [r["lr"] for r in log] == pytest.approx([1e-3, 1e-3, 5e-4, 5e-4, 2.5e-4, 2.5e-4])
    (tmp_path / "repo" / "data").mkdir(parents=True)  # the same rows as a Hub-style parquet repo, read streamed
    load_from_disk(files["train_data"]).to_parquet(str(tmp_path / "repo" / "data" / "train.parquet"))
    with pytest.raises(ConfigError, match="--lr-decay-per-epoch decays once per epoch"):
        run({**files, "train_data": str(tmp_path / "repo")}, tmp_path / "streamed", max_steps=2,
            lr_decay_per_epoch=0.5, streaming=True)


def full_batch(tokenizer, num_texts=None, size=8):
    torch.manual_seed(1)
    shape = (size, num_texts, 6) if num_texts else (size, 6)
    ids = torch.randint(4, len(tokenizer), shape)
    ids[..., 0], ids[..., -1] = tokenizer.bos_token_id, tokenizer.eos_token_id
    return {"pixel_values": torch.randn(size, 3, 32, 32, dtype=torch.float64), "input_ids": ids,
            "attention_mask": torch.ones_like(ids)}


@pytest.mark.parametrize("method", ["clip", "laclip-mt"])
def test_accumulation_gradient_equals_the_full_batch_gradient(tokenizer, method):
    """Cached-and-recomputed micro-batches keep every negative: same loss and gradient as one full step."""
    config = tiny_laclip_config(tokenizer, multi_positive=method == "laclip-mt")
    model = LaCLIPModel(config).double()
    batch = full_batch(tokenizer, num_texts=3 if method == "laclip-mt" else None)
    grads, losses = [], []
    for accum_freq in (1, 4):
        model.zero_grad()
        losses.append(forward_backward(model, batch, Method.preset(method).objective, model, accum_freq))
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    torch.testing.assert_close(losses[0], losses[1], rtol=1e-12, atol=1e-12)
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], rtol=1e-9, atol=1e-12, msg=name)
    # micro-batch negatives only would give a different (wrong) gradient
    model.zero_grad()
    for micro in [{k: v[i : i + 2] for k, v in batch.items()} for i in range(0, 8, 2)]:
        forward_backward(model, micro, Method.preset(method).objective, model)
    assert not torch.allclose(model.visual_projection.weight.grad, grads[0]["visual_projection.weight"])


def test_non_finite_features_skip_the_step_without_gradients(tokenizer, tiny_config):
    model = LaCLIPModel(tiny_config)
    with torch.no_grad():
        model.visual_projection.weight[0, 0] = float("nan")
    batch = {k: v.float() if k == "pixel_values" else v for k, v in full_batch(tokenizer).items()}
    assert forward_backward(model, batch, Method.preset("clip").objective, model, 2) is None
    assert all(p.grad is None for p in model.parameters())


def test_training_run_logs_checkpoints_and_saves_a_loadable_model(files, tmp_path):
    summary = run(files, tmp_path, method="laclip", max_steps=6, save_steps=2, save_total_limit=2,
                  report_to="tensorboard", logging_steps=1, gradient_checkpointing=True, warmup_steps=2,
                  max_grad_norm=1.0)
    out = tmp_path / "out"
    log = read_log(out / "train_log.jsonl")
    assert [r["step"] for r in log] == [1, 2, 3, 4, 5, 6] and summary["step"] == 6
    assert log[0]["lr"] == pytest.approx(1e-6) and log[2]["lr"] == pytest.approx(5e-4)
    assert all(math.isfinite(r["loss"]) for r in log) and summary["loss"] == pytest.approx(log[-1]["loss"])
    assert sorted(p.name for p in out.iterdir() if "checkpoint" in p.name) == ["checkpoint-4", "checkpoint-6"]  # the last step is always saved
    assert any(name.startswith("events.out.tfevents") for _, _, names in os.walk(out) for name in names)
    clip = CLIPModel.from_pretrained(str(out))
    weights = load_file(str(out / "model.safetensors"))
    torch.testing.assert_close(clip.visual_projection.weight, weights["visual_projection.weight"])
    assert 0 <= clip.logit_scale.item() <= math.log(100)
    assert (out / "tokenizer.json").exists() and (out / "preprocessor_config.json").exists()
    card = ModelCard.load(out / "README.md")
    assert "| method | LaCLIP" in card.text and "| max_steps | 6 |" in card.text


def test_push_to_hub_uploads_the_model_and_card_without_checkpoints(files, tmp_path, monkeypatch):
    import huggingface_hub.constants

    with HubServer() as hub:
        monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", hub.url)
        monkeypatch.setenv("HF_TOKEN", "hf_test_token")
        run(files, tmp_path, method="laclip", max_steps=2, save_steps=1, push_to_hub=True, hub_model_id="me/tiny")
        pushed = hub.repos[("model", "me/tiny")].branches["main"][1]
    assert pushed["model.safetensors"] == (tmp_path / "out" / "model.safetensors").read_bytes()
    assert {"README.md", "tokenizer.json", "preprocessor_config.json", "modeling_laclip.py"} <= set(pushed)
    assert not any(name.startswith("checkpoint-") for name in pushed)
    assert ModelCard(pushed["README.md"].decode()).data.model_name == "me/tiny"


def test_nan_guard_counts_skipped_steps_and_aborts(files, tmp_path):
    run(files, tmp_path, method="clip", max_steps=1)
    model = LaCLIPModel.from_pretrained(str(tmp_path / "out"))
    with torch.no_grad():
        model.text_projection.weight.fill_(float("nan"))
    model.save_pretrained(str(tmp_path / "nan"))
    with pytest.raises(RuntimeError, match="3 steps with non-finite loss or gradients"):
        run(files, tmp_path, method="clip", model_name_or_path=str(tmp_path / "nan"), max_steps=10,
            max_bad_steps=3, output_dir=str(tmp_path / "nan-out"))
    assert [r["loss"] for r in read_log(tmp_path / "nan-out" / "train_log.jsonl")] == [None, None]


def test_lora_trains_only_the_adapters_and_saves_a_merged_model(files, tmp_path):
    run(files, tmp_path, method="clip", max_steps=1, output_dir=str(tmp_path / "base"))
    base = load_file(str(tmp_path / "base" / "model.safetensors"))
    run(files, tmp_path, method="laclip", model_name_or_path=str(tmp_path / "base"), max_steps=3, lora_r=2,
        lr=1e-2, lora_target_modules=["q_proj", "v_proj"])
    tuned = load_file(str(tmp_path / "out" / "model.safetensors"))
    changed = {name for name in base if not torch.equal(base[name], tuned[name])}
    assert changed and all(name.endswith(("q_proj.weight", "v_proj.weight")) for name in changed)


def test_torch_compile_and_bf16_runs_match_eager_fp32(files, tmp_path):
    eager = run(files, tmp_path, method="laclip", max_steps=2, output_dir=str(tmp_path / "eager"))
    AcceleratorState._reset_state(reset_partial_state=True)
    compiled = run(files, tmp_path, method="laclip", max_steps=2, torch_compile=True,
                   torch_compile_backend="aot_eager", output_dir=str(tmp_path / "compiled"))
    assert compiled["loss"] == pytest.approx(eager["loss"], rel=1e-5)
    AcceleratorState._reset_state(reset_partial_state=True)
    bf16 = run(files, tmp_path, method="laclip", max_steps=2, mixed_precision="bf16", output_dir=str(tmp_path / "bf16"))
    assert bf16["loss"] == pytest.approx(eager["loss"], rel=0.05)


def test_corrupt_image_stops_the_run_unless_skipping(files, tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    with open(folder / "metadata.jsonl", "w") as handle:
        for i in range(8):
            name = f"{i}.png"
            if i == 5:
                (folder / name).write_bytes(b"corrupt")
            else:
                from PIL import Image

                Image.fromarray(np.full((36, 36, 3), 30 * i, dtype=np.uint8)).save(folder / name)
            handle.write(json.dumps({"file_name": name, "caption": f"a red circle {i}"}) + "\n")
    with pytest.raises(BadSampleError, match=r"5\.png"):
        run(files, tmp_path, method="clip", train_data=str(folder), max_steps=2)
    AcceleratorState._reset_state(reset_partial_state=True)
    summary = run(files, tmp_path, method="clip", train_data=str(folder), num_epochs=1, skip_bad_samples=True,
                  output_dir=str(tmp_path / "skip"))
    assert summary["skipped_samples"] == 1 and summary["step"] == 2


def test_cli_train_flags_have_help_and_yaml_is_overridden(files, tmp_path, capsys):
    with pytest.raises(SystemExit):
        cli_main(["train", "--help"])
    help_text = capsys.readouterr().out
    for flag in ("--accum-freq", "--lora-r", "--skip-bad-samples", "--resume", "--config", "--push-to-hub"):
        assert flag in help_text
    config = tmp_path / "run.yaml"
    config.write_text("method: clip\nmax_steps: 5\nlr: 1e-3\n" + "".join(
        f"{k}: '{v}'\n" if k == "model_config" else f"{k}: {v}\n" for k, v in files.items()))
    model_args, _, train_args = parse_train_args(["--config", str(config), "--max-steps", "2"])
    assert (model_args.method, train_args.max_steps, train_args.lr) == ("clip", 2, 1e-3)
    assert cli_main(["train", "--config", str(config), "--max-steps", "1", "--output-dir", str(tmp_path / "cli")]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["final_step"] == 1
    config.write_text("learning_rate: 1\n")
    with pytest.raises(ValueError, match="unknown argument 'learning_rate'"):
        parse_train_args(["--config", str(config)])

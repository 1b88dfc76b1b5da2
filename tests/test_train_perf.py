"""The step loop at the hardware's pace: no host syncs between logging steps, fused AdamW that skips bad steps on
the device, DataLoader workers that see every epoch, SDPA attention on every path."""

import os
import sys

import pytest
import torch
from accelerate.state import AcceleratorState
from conftest import tiny_laclip_config
from train_utils import as_flags, make_training_files, parse_train_args, read_log

import langclip.training.data as data
import langclip.training.step as training_step
import langclip.training.trainer as trainer
from langclip import LaCLIPModel
from langclip.training.optim import build_optimizer, parameter_groups

SYNCS = ("item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__")
STEP_CODE = tuple(os.path.join("langclip", part) + os.sep for part in ("training", "modeling"))


@pytest.fixture(autouse=True)
def _fresh_accelerator():
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


def test_step_loop_syncs_with_the_host_only_at_logging_steps(tmp_path, monkeypatch):
    """20 steps, logging every 10: every host sync of the trainer's and model's code is counted by the step it
    happens in (from one forward_backward to the next); steps 1-9 and 11-19 have none, step 10 has one (the log)."""
    files = make_training_files(tmp_path)
    events = []
    for name in SYNCS:
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _original=original, _name=name, **kwargs):
            caller = sys._getframe(1).f_code.co_filename
            if any(part in caller for part in STEP_CODE):
                events.append(("sync", _name, f"{caller}:{sys._getframe(1).f_lineno}"))
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)
    forward_backward = training_step.forward_backward

    def step_started(*args, **kwargs):
        events.append(("step",))
        return forward_backward(*args, **kwargs)

    monkeypatch.setattr(training_step, "forward_backward", step_started)
    values = {**files, "method": "laclip", "output_dir": str(tmp_path / "out"), "max_steps": 20,
              "logging_steps": 10, "num_workers": 0}
    summary = trainer.train(*parse_train_args(as_flags(values)))

    per_step, step = {}, 0
    for event in events:
        if event[0] == "step":
            step += 1
        elif step:
            per_step.setdefault(step, []).append(event[1:])
    assert step == 20 and summary["step"] == 20
    assert {s: calls for s, calls in per_step.items() if s not in (10, 20)} == {}
    assert [name for name, _ in per_step[10]] == ["tolist"]
    log = read_log(tmp_path / "out" / "train_log.jsonl")
    assert [r["step"] for r in log] == list(range(1, 21)) and all(r["loss"] > 0 for r in log)
    assert [("grad_norm" in r) for r in log] == [s in (10, 20) for s in range(1, 21)]
    assert all(r["data_wait_s"] >= 0 for r in log) and summary["loss"] == log[-1]["loss"]


def test_fused_adamw_is_the_default_with_the_same_groups_and_an_opt_out(tokenizer):
    model = LaCLIPModel(tiny_laclip_config(tokenizer))
    fused, plain = build_optimizer(model, 1e-3, 0.1), build_optimizer(model, 1e-3, 0.1, fused=False)
    assert fused.defaults["fused"] and not plain.defaults["fused"]
    for optimizer in (fused, plain):
        assert [(g["weight_decay"], g["params"]) for g in optimizer.param_groups] == [
            (g["weight_decay"], g["params"]) for g in parameter_groups(model, 0.1)]
    assert not parse_train_args(["--no-fused-optimizer"])[2].fused_optimizer
    assert parse_train_args([])[2].fused_optimizer


def test_fused_step_matches_plain_adamw_and_skips_a_bad_step_on_the_device(tokenizer):
    """float64: the fused update equals torch's reference (for-loop) AdamW; with ``bad`` set it changes no weight,
    moment or step count; the plain optimizer skips the same step by reading the flag."""

    class Wrapped:  # the shape of accelerate's AcceleratedOptimizer: .optimizer and .step()
        def __init__(self, optimizer):
            self.optimizer = optimizer

        def step(self):
            self.optimizer.step()

    models = [LaCLIPModel(tiny_laclip_config(tokenizer)).double() for _ in range(2)]
    models[1].load_state_dict(models[0].state_dict())
    initial = models[0].visual_projection.weight.detach().clone()
    optimizers = [build_optimizer(models[0], 1e-2, 0.1), build_optimizer(models[1], 1e-2, 0.1, fused=False)]
    for model in models:
        for parameter in model.parameters():
            parameter.grad = torch.full_like(parameter, 0.5)
    for model, optimizer in zip(models, optimizers):
        training_step.step_unless(Wrapped(optimizer), torch.tensor(False), None)
    for (name, a), b in zip(models[0].named_parameters(), models[1].parameters()):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12, msg=name)
    assert not torch.equal(models[0].visual_projection.weight, initial)
    for model, optimizer in zip(models, optimizers):
        before = {k: v.clone() for k, v in model.state_dict().items()}
        moments = [{k: v.clone() for k, v in s.items()} for s in optimizer.state.values()]
        training_step.step_unless(Wrapped(optimizer), torch.tensor(True), None)
        assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
        assert all(torch.equal(m[k], v) for m, s in zip(moments, optimizer.state.values()) for k, v in s.items())
        assert not hasattr(optimizer, "found_inf")


class EpochEcho:
    epoch = 0

    def __call__(self, rows):
        return [self.epoch] * len(rows)


def test_persistent_workers_see_every_epoch():
    collate = data.SharedEpochCollator(EpochEcho())
    loader = torch.utils.data.DataLoader(list(range(4)), batch_size=2, collate_fn=collate,
                                         **data.loader_kwargs(1, torch.device("cpu")))
    assert loader.persistent_workers and loader.prefetch_factor == 4 and not loader.pin_memory
    seen = []
    for epoch in range(3):
        collate.set_epoch(epoch)
        seen.append([value for batch in loader for value in batch])
    assert seen == [[0] * 4, [1] * 4, [2] * 4]


def test_map_style_batches_go_to_the_device_without_blocking(tmp_path, monkeypatch):
    configs = []

    class Recorded(trainer.Accelerator):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            configs.append(self.dataloader_config)

    monkeypatch.setattr(trainer, "Accelerator", Recorded)
    values = {**make_training_files(tmp_path), "method": "clip", "output_dir": str(tmp_path / "out"), "max_steps": 1}
    assert trainer.train(*parse_train_args(as_flags(values)))["step"] == 1
    assert [config.non_blocking for config in configs] == [True]  # copies of pinned (CUDA) batches overlap the step


def test_default_workers_leave_a_core_to_the_trainer(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    assert data.default_num_workers() == 8
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert data.default_num_workers() == 3
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0}, raising=False)
    assert data.loader_kwargs(None, torch.device("cpu")) == {"num_workers": 0, "pin_memory": False}
    assert data.loader_kwargs(2, torch.device("cuda"))["pin_memory"]


def reference_attention(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
    """softmax(q k^T * scaling + mask) v in the inputs' dtype (transformers' eager path takes its softmax in float32);
    a boolean mask (the captioner's) keeps the True positions."""
    weights = query @ key.transpose(-1, -2) * scaling
    if attention_mask is not None and attention_mask.dtype == torch.bool:
        weights = weights.masked_fill(~attention_mask, float("-inf"))
    elif attention_mask is not None:
        weights = weights + attention_mask
    weights = weights.softmax(dim=-1)
    return (weights @ value).transpose(1, 2).contiguous(), weights


def attention_outputs(model, inputs, implementation: str, monkeypatch):
    """(loss, image embeddings, text embeddings) with every attention layer (towers and captioner) on
    ``implementation`` ("eager" runs `reference_attention`), and the number of SDPA calls they made."""
    from transformers.models.clip import modeling_clip

    model.set_attn_implementation(implementation)
    if hasattr(model, "captioner"):
        model.captioner.config._attn_implementation = implementation
    calls = []
    sdpa = torch.nn.functional.scaled_dot_product_attention
    with monkeypatch.context() as patch:
        patch.setattr(torch.nn.functional, "scaled_dot_product_attention", lambda *a, **k: calls.append(1) or sdpa(*a, **k))
        patch.setattr(modeling_clip, "eager_attention_forward", reference_attention)
        out = model(**inputs, return_loss=True)
    return (out.loss, out.image_embeds, out.text_embeds), len(calls)


@pytest.mark.parametrize("kind", ["laclip", "clips"])
def test_every_attention_layer_runs_sdpa_and_equals_a_float64_reference(tokenizer, kind, monkeypatch):
    """A fresh model attends through SDPA in every layer (vision, text and, for CLIPS, the captioner with its
    boolean mask), and in float64 its loss and embeddings equal those of a plain softmax(q k^T) v attention."""
    from test_modeling_clips import batch, tiny_clips_config

    from langclip import CLIPSModel

    inputs = batch(tokenizer)
    if kind == "laclip":
        model, layers = LaCLIPModel(tiny_laclip_config(tokenizer)), 2 + 2
        inputs = {k: inputs[k] for k in ("pixel_values", "input_ids", "attention_mask")}
    else:
        model = CLIPSModel(tiny_clips_config(tokenizer))
        layers = 2 + 2 * 2 + model.config.captioner_layers  # vision; text tower twice (web, partial); captioner
    assert model.config._attn_implementation == "sdpa"
    model = model.double().eval()
    inputs = {k: v.double() if v.is_floating_point() else v for k, v in inputs.items()}
    fast, sdpa_calls = attention_outputs(model, inputs, "sdpa", monkeypatch)
    reference, eager_calls = attention_outputs(model, inputs, "eager", monkeypatch)
    assert sdpa_calls == layers and eager_calls == 0
    for a, b in zip(fast, reference):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)

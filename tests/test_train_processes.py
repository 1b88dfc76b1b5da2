"""`train.py` as a real process: killed mid-run and resumed, and under `accelerate launch` with 2 CPU processes."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from conftest import free_port
from train_utils import as_flags, make_training_files, read_log

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "TOKENIZERS_PARALLELISM": "false"}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return make_training_files(tmp_path_factory.mktemp("processes"))


def train_command(files, output_dir, **overrides):
    return [sys.executable, str(ROOT / "train.py"), *as_flags({**files, "output_dir": str(output_dir), **overrides})]


def kill_at_checkpoint(command: list[str], run_dir: Path, checkpoint: str, timeout: float) -> None:
    """Start ``command`` and SIGKILL it as soon as ``run_dir / checkpoint`` exists; fails if the run ended first."""
    process = subprocess.Popen(command, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + timeout
    while not (run_dir / checkpoint).exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (run_dir / "model.safetensors").exists(), "the run finished before it could be killed"


def two_processes() -> list[str]:
    """`accelerate launch` of 2 CPU processes (with ``ACCELERATE_USE_CPU=1``; `--cpu` would run one process: several
    CPU processes (gloo) go through torch.distributed.run)."""
    return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
            "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
            "--main_process_port", str(free_port())]


def test_killed_run_resumes_to_the_same_losses_and_weights(files, tmp_path):
    # 8 steps per epoch: the kill and the resume fall inside a later epoch, mid-way through it.
    args = dict(method="laclip", max_steps=40, save_steps=5, save_total_limit=2, warmup_steps=5)
    subprocess.run(train_command(files, tmp_path / "full", **args), env=ENV, check=True, capture_output=True, timeout=600)

    killed = tmp_path / "killed"
    kill_at_checkpoint(train_command(files, killed, **args), killed, "checkpoint-20", timeout=120)
    assert len(read_log(killed / "train_log.jsonl")) < 40

    subprocess.run(train_command(files, killed, resume=True, **args), env=ENV, check=True, capture_output=True, timeout=600)
    full_log, resumed_log = read_log(tmp_path / "full" / "train_log.jsonl"), read_log(killed / "train_log.jsonl")
    assert [r["step"] for r in resumed_log] == list(range(1, 41))
    for full, resumed in zip(full_log, resumed_log):
        assert resumed["loss"] == pytest.approx(full["loss"], rel=1e-5, abs=1e-6), full["step"]
        assert resumed["lr"] == pytest.approx(full["lr"], rel=1e-12)
    full_weights, resumed_weights = load_file(str(tmp_path / "full" / "model.safetensors")), load_file(
        str(killed / "model.safetensors"))
    for name, weight in full_weights.items():
        torch.testing.assert_close(resumed_weights[name], weight, rtol=1e-5, atol=1e-6, msg=name)


def test_two_processes_gather_to_the_single_process_global_batch_loss(files, tmp_path):
    """2 processes x 4 pairs and 1 process x 8 pairs see the same global batch: same loss, same update."""
    args = dict(method="laclip-mt", max_steps=2, seed=3)
    launch = two_processes()
    two = subprocess.run(launch + train_command(files, tmp_path / "two", **args)[1:],
                         env={**ENV, "ACCELERATE_USE_CPU": "1"}, capture_output=True, text=True, timeout=600)
    assert two.returncode == 0, two.stderr[-3000:]
    one = subprocess.run(train_command(files, tmp_path / "one", per_device_batch_size=8, **args), env=ENV,
                         capture_output=True, text=True, timeout=600)
    assert one.returncode == 0, one.stderr[-3000:]
    two_log, one_log = read_log(tmp_path / "two" / "train_log.jsonl"), read_log(tmp_path / "one" / "train_log.jsonl")
    assert len(two_log) == len(one_log) == 2
    for a, b in zip(two_log, one_log):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
    two_weights, one_weights = load_file(str(tmp_path / "two" / "model.safetensors")), load_file(
        str(tmp_path / "one" / "model.safetensors"))
    # k_proj biases have an analytically zero gradient (softmax is shift-invariant); Adam turns
    # its float noise into +-lr steps of either sign, which do not change any output.
    for name, weight in one_weights.items():
        if not name.endswith("k_proj.bias"):
            torch.testing.assert_close(two_weights[name], weight, rtol=1e-4, atol=1e-5, msg=name)


def test_patch_dropout_trains_under_two_processes(files, tmp_path):
    """--patch-dropout with 2 processes: each rank drops its own patches (seeded per process after the model is
    built), the run finishes and the saved config keeps the option."""
    launch = two_processes()
    run = subprocess.run(launch + train_command(files, tmp_path / "run", method="clip", max_steps=2,
                                                patch_dropout=0.5)[1:],
                         env={**ENV, "ACCELERATE_USE_CPU": "1"}, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert [row["step"] for row in read_log(tmp_path / "run" / "train_log.jsonl")] == [1, 2]
    assert json.loads((tmp_path / "run" / "config.json").read_text())["patch_dropout"] == 0.5

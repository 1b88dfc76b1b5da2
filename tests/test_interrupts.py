"""Stopping a run: a signal mid-run leaves a checkpoint at that step and a clean exit, resume continues
bit-identically; a second signal exits at once; one run per output folder."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from langclip.errors import ConfigError
from langclip.signals import StopRequest
from langclip.training.interrupts import LOCK_FILE, RunLock
from conftest import free_port
from test_train_processes import ENV, train_command
from train_utils import make_training_files, read_log

ARGS = dict(method="laclip", max_steps=24, save_steps=0, logging_steps=1, warmup_steps=2)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return make_training_files(tmp_path_factory.mktemp("interrupts"))


def interrupt_after(command, run_dir, steps: int, number: int, env=ENV):
    """Start ``command``, send signal ``number`` once its log has ``steps`` lines; returns (process, stderr)."""
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = run_dir / "train_log.jsonl"
    deadline = time.time() + 300
    while process.poll() is None and time.time() < deadline:
        if log.exists() and len(log.read_text().splitlines()) >= steps:
            break
        time.sleep(0.01)
    assert process.poll() is None, "the run ended before the signal"
    process.send_signal(number)
    _, stderr = process.communicate(timeout=300)
    return process, stderr


def assert_same_run(full_dir, resumed_dir):
    full, resumed = read_log(full_dir / "train_log.jsonl"), read_log(resumed_dir / "train_log.jsonl")
    assert [r["step"] for r in resumed] == [r["step"] for r in full]
    assert [r["loss"] for r in resumed] == [r["loss"] for r in full]  # bit-identical
    full_weights, resumed_weights = (load_file(str(d / "model.safetensors")) for d in (full_dir, resumed_dir))
    for name, weight in full_weights.items():
        assert torch.equal(resumed_weights[name], weight), name


@pytest.mark.parametrize("number", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_mid_run_saves_that_step_and_resume_is_bit_identical(files, tmp_path, number):
    subprocess.run(train_command(files, tmp_path / "full", **ARGS), env=ENV, check=True, capture_output=True,
                   timeout=600)
    stopped = tmp_path / "stopped"
    process, stderr = interrupt_after(train_command(files, stopped, **ARGS), stopped, 3, number)
    assert process.returncode == 128 + number, stderr[-2000:]
    assert "Traceback" not in stderr, stderr[-2000:]
    step = json.loads((stopped / "train_log.jsonl").read_text().splitlines()[-1])["step"]
    assert 3 <= step < ARGS["max_steps"]
    assert [p.name for p in stopped.glob("checkpoint-*")] == [f"checkpoint-{step}"]
    assert f"after step {step}" in stderr and f"checkpoint-{step}" in stderr and "with --resume" in stderr
    assert not (stopped / "model.safetensors").exists() and not (stopped / LOCK_FILE).exists()

    subprocess.run(train_command(files, stopped, resume=True, **ARGS), env=ENV, check=True, capture_output=True,
                   timeout=600)
    assert_same_run(tmp_path / "full", stopped)


def test_two_processes_stop_on_the_same_step(files, tmp_path):
    """SIGTERM to torchrun (as a scheduler sends it) reaches both ranks; they agree on the step and resume matches."""
    args = dict(ARGS, max_steps=16)
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
              str(free_port())]
    env = {**ENV, "ACCELERATE_USE_CPU": "1"}
    subprocess.run(launch + train_command(files, tmp_path / "full", **args)[1:], env=env, check=True,
                   capture_output=True, timeout=600)
    stopped = tmp_path / "stopped"
    process, stderr = interrupt_after(launch + train_command(files, stopped, **args)[1:], stopped, 3,
                                      signal.SIGTERM, env)
    assert process.returncode != 0
    # torchrun's own agent prints a SignalException traceback when it is signalled; the ranks print none
    assert "langclip/" not in stderr and "train.py\", line" not in stderr, stderr[-3000:]
    assert stderr.count("stopped by SIGTERM after step") == 1, stderr[-3000:]  # the main process says it, once
    checkpoints = sorted(stopped.glob("checkpoint-*"))
    assert len(checkpoints) == 1, stderr[-3000:]
    step = int(checkpoints[0].name.split("-")[1])
    assert json.loads((checkpoints[0] / "trainer_state.json").read_text())["step"] == step < args["max_steps"]
    subprocess.run(launch + train_command(files, stopped, resume=True, **args)[1:], env=env, check=True,
                   capture_output=True, timeout=600)
    assert_same_run(tmp_path / "full", stopped)


def test_a_second_signal_exits_at_once():
    with StopRequest() as stop:
        os.kill(os.getpid(), signal.SIGUSR1)
        assert stop.signal == signal.SIGUSR1
        with pytest.raises(SystemExit) as exited:
            os.kill(os.getpid(), signal.SIGUSR1)
            time.sleep(1)  # the handler runs between bytecodes: at the latest here
    assert exited.value.code == 128 + signal.SIGUSR1
    assert signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL  # restored


def test_a_second_run_into_a_held_folder_is_refused(files, tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        out = tmp_path / "run"
        out.mkdir()
        (out / LOCK_FILE).write_text(json.dumps({"host": os.uname().nodename, "pid": holder.pid, "since": "now"}))
        result = subprocess.run(train_command(files, out, **ARGS), env=ENV, capture_output=True, text=True,
                                timeout=600)
        assert result.returncode == 1
        assert f"in use by the run of pid {holder.pid}" in result.stderr and "Traceback" not in result.stderr
        assert json.loads((out / LOCK_FILE).read_text())["pid"] == holder.pid  # the holder's lock is untouched
    finally:
        holder.kill()
        holder.wait()


def test_a_stale_lock_is_taken_over_and_released(tmp_path, capsys):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    (tmp_path / LOCK_FILE).write_text(json.dumps({"host": os.uname().nodename, "pid": gone.pid, "since": "then"}))
    lock = RunLock(str(tmp_path))
    lock.acquire()
    assert f"its run (pid {gone.pid}) is gone" in capsys.readouterr().err
    assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == os.getpid()
    with pytest.raises(ConfigError, match=f"in use by the run of pid {os.getpid()}"):
        RunLock(str(tmp_path)).acquire()
    lock.release()
    assert not (tmp_path / LOCK_FILE).exists()
    other_host = {"host": "elsewhere", "pid": 1, "since": "then"}
    (tmp_path / LOCK_FILE).write_text(json.dumps(other_host))
    with pytest.raises(ConfigError, match="on host elsewhere.*delete the lock file"):
        RunLock(str(tmp_path)).acquire()

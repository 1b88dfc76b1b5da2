"""Stopping a run cleanly: SIGINT, SIGTERM and SIGUSR1 end it after the current optimizer step with a checkpoint,
and one run at a time holds its ``--output-dir``.

Slurm and Kubernetes send SIGTERM (Slurm also ``--signal=USR1@120``) before they preempt a job:
`langclip.signals.StopRequest` notes the first signal, the loop finishes the step (all processes agree on it,
`agreed_stop`), saves a checkpoint and raises `RunInterrupted` (exit status 128 + the signal's number), so that
``--resume`` continues where the run stopped; a second signal exits at once (`SystemExit`, no traceback), the last
complete checkpoint kept. `RunLock` is a lock file in the run folder naming
its holder's host and pid: a second run into the folder is refused; a lock whose process is gone (same host) is
taken over, and says so.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import socket
import sys
import time

import torch
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list

from ..errors import ConfigError, RunInterrupted
from ..signals import StopRequest

LOCK_FILE = "run.lock"


def agreed_stop(stop: StopRequest, accelerator: Accelerator) -> int | None:
    """The signal every process stops on, or None. With several processes, a one-element all-reduce (the largest
    signal number any process saw), so that all stop after the same step."""
    if accelerator.num_processes == 1:
        return stop.signal
    seen = torch.tensor([stop.signal or 0], device=accelerator.device)
    return int(accelerator.reduce(seen, "max").item()) or None


def interrupted(number: int, step: int, checkpoint: str, main_process: bool = True) -> RunInterrupted:
    """The error a run stopped by signal ``number`` raises: the step, the checkpoint and how to resume (the exact
    command for ``langclip train``; printed by the main process only)."""
    argv = sys.argv if sys.argv and os.path.basename(sys.argv[0]) == "langclip" else None
    resume = "rerun the same command with --resume" if argv is None else (
        f"continue with: {shlex.join(argv if '--resume' in argv else [*argv, '--resume'])}")
    return RunInterrupted(f"stopped by {signal.Signals(number).name} after step {step}; checkpoint {checkpoint}; "
                          f"{resume}", exit_code=128 + number, quiet=not main_process)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


class RunLock:
    """``output_dir/run.lock``: {host, pid, since} of the run that writes the folder, created atomically
    (``O_EXCL``). Held by the main process; `acquire` raises a `ConfigError` naming the holder when another live
    run holds it, and takes over (saying so) a lock left on this host by a process that is gone."""

    def __init__(self, output_dir: str):
        self.path = os.path.join(output_dir, LOCK_FILE)
        self.held = False

    def acquire(self) -> None:
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        owner = {"host": socket.gethostname(), "pid": os.getpid(), "since": time.strftime("%Y-%m-%dT%H:%M:%S")}
        for _ in range(2):
            try:
                descriptor = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                holder = self._holder()
                if holder is not None and (holder.get("host") != owner["host"] or _alive(int(holder.get("pid", 0)))):
                    where = "" if holder.get("host") == owner["host"] else f" on host {holder.get('host')}"
                    raise ConfigError(
                        f"--output-dir {os.path.dirname(self.path)} is in use by the run of pid {holder.get('pid')}"
                        f"{where}, started {holder.get('since')} ({self.path}); wait for it to end, or choose another "
                        "--output-dir (if that run is gone, delete the lock file)") from None
                print(f"taking over {self.path}: its run (pid {holder and holder.get('pid')}) is gone", file=sys.stderr)
                os.remove(self.path)
                continue
            with os.fdopen(descriptor, "w") as handle:
                json.dump(owner, handle)
            self.held = True
            return
        raise ConfigError(f"could not take {self.path}: another run took it at the same time")

    def _holder(self) -> dict | None:
        """The lock's owner, or None when the file is unreadable (a run that died while writing it)."""
        try:
            with open(self.path, encoding="utf-8") as handle:
                return json.load(handle)
        except (OSError, ValueError):
            return None

    def release(self) -> None:
        if self.held:
            self.held = False
            try:
                os.remove(self.path)
            except FileNotFoundError:
                pass


@contextlib.contextmanager
def run_folder_lock(accelerator: Accelerator, output_dir: str):
    """Hold `RunLock` of ``output_dir`` for the block (the main process takes it; every process raises its
    `ConfigError` when another run holds it)."""
    lock, refused = RunLock(output_dir), None
    if accelerator.is_main_process:
        try:
            lock.acquire()
        except ConfigError as error:
            refused = str(error)
    if accelerator.num_processes > 1:
        refused = broadcast_object_list([refused])[0]
    if refused:
        raise ConfigError(refused)
    try:
        yield lock
    finally:
        lock.release()

"""Stopping long work at a boundary: the first SIGINT, SIGTERM or SIGUSR1 asks, a second insists.

Training stops after the current optimizer step with a checkpoint (`langclip.training.interrupts`); the generation
jobs stop after the current chunk, every finished chunk kept (`langclip.processing.generation.job`). Slurm and
Kubernetes send SIGTERM (Slurm also ``--signal=USR1@120``) before they preempt a job. Like `langclip.errors`, this
module imports nothing from langclip, so every layer may use it.
"""

from __future__ import annotations

import signal
import sys
import threading

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)


class StopRequest:
    """Within ``with StopRequest(unit) as stop:``, the first of STOP_SIGNALS sets ``stop.signal`` (the loop checks
    it after each ``unit`` of work: a step, a chunk); a second raises ``SystemExit(128 + signal)`` at once. Outside
    the main thread (where Python cannot install handlers) it does nothing. The previous handlers come back on exit."""

    def __init__(self, unit: str = "step"):
        self.unit = unit
        self.signal: int | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            self._previous = {number: signal.signal(number, self._handle) for number in STOP_SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)

    def _handle(self, number: int, frame) -> None:
        if self.signal is not None:
            print(f"\n{signal.Signals(number).name} again: stopping now; this {self.unit} is lost, every finished "
                  "one is kept", file=sys.stderr, flush=True)
            raise SystemExit(128 + number)
        self.signal = number
        print(f"\n{signal.Signals(number).name}: finishing this {self.unit}, then stopping "
              f"({signal.Signals(number).name} again stops at once)", file=sys.stderr, flush=True)

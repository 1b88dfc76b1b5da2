"""What a run reports: per-step records in ``train_log.jsonl``, the progress bar, and accelerate's trackers."""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict

import torch

LOG_FILE = "train_log.jsonl"


class StepLog:
    """Per-step loss, skip flag, logit scale and gradient norm kept on the device until `flush`.

    `flush` (at logging and checkpoint steps) is the step loop's one host sync: it appends one
    record per step to ``train_log.jsonl`` (``loss`` None for a skipped step, ``data_wait_s`` =
    seconds the step waited for its batch, ``grad_norm`` where computed), counts skipped steps
    into ``state["bad_steps"]``, updates the bar and sends the last record, samples/s and the mean
    data wait of the interval to the trackers. It raises once ``--max-bad-steps`` is reached,
    writing the records before that step only.
    """

    def __init__(self, accelerator, train_args, unwrapped, progress, global_batch: int):
        self.accelerator, self.args, self.unwrapped, self.progress = accelerator, train_args, unwrapped, progress
        self.global_batch = global_batch
        self.host, self.device = [], []  # per step: (step, lr, data_wait, has_norm); (loss, bad, logit_scale, norm)
        self.since = time.perf_counter()
        self.last_loss = None

    def add(self, step: int, loss, bad, lr: float, data_wait: float, grad_norm) -> None:
        """Record a step; ``loss`` None: a batch in which every sample was bad (no update, not a bad step)."""
        scale = self.unwrapped.logit_scale.detach().exp().float()
        if loss is None:
            loss, bad = torch.full_like(scale, math.nan), torch.zeros_like(scale)
        norm = loss.new_zeros(()) if grad_norm is None else grad_norm.detach().float().reshape(())
        self.device.append(torch.stack([loss.float(), bad.float(), scale, norm]))
        self.host.append((step, lr, data_wait, grad_norm is not None))
        self.progress.update(1)

    def flush(self, state: dict) -> None:
        values = torch.stack(self.device)
        losses = self.accelerator.reduce(values[:, 0].contiguous(), "mean")
        rows = torch.cat([losses[:, None], values[:, 1:]], dim=1).tolist()
        seconds, steps = time.perf_counter() - self.since, len(rows)
        self.host, host, self.device = [], self.host, []
        records = []
        for (step, lr, data_wait, has_norm), (loss, bad, logit_scale, norm) in zip(host, rows):
            if bad:
                state["bad_steps"] += 1
                self.accelerator.print(f"step {step}: non-finite loss or gradients, step skipped "
                                       f"({state['bad_steps']}/{self.args.max_bad_steps})")
                if state["bad_steps"] >= self.args.max_bad_steps:
                    self.write(records)
                    raise RuntimeError(f"{state['bad_steps']} steps with non-finite loss or gradients; aborting at "
                                       f"step {step} (--max-bad-steps {self.args.max_bad_steps})")
            record = {"step": step, "loss": None if bad or math.isnan(loss) else loss, "lr": lr,
                      "logit_scale": logit_scale, "data_wait_s": data_wait}
            if has_norm:
                record["grad_norm"] = norm if math.isfinite(norm) else None
            records.append(record)
        self.write(records)
        last = records[-1]
        self.last_loss = last["loss"]
        samples_per_second = steps * self.global_batch / seconds
        data_wait = sum(r["data_wait_s"] for r in records) / steps
        self.progress.set_postfix(loss="skipped" if last["loss"] is None else f"{last['loss']:.4f}",
                                  samples_per_s=f"{samples_per_second:.1f}",
                                  data_wait=f"{data_wait / seconds * steps:.0%}")
        if self.accelerator.log_with:
            self.accelerator.log({k: v for k, v in last.items() if k != "step" and v is not None}
                                 | {"samples_per_s": samples_per_second, "data_wait_s": data_wait}, step=last["step"])
        self.since = time.perf_counter()

    def write(self, records: list[dict]) -> None:
        if self.accelerator.is_main_process and records:
            with open(os.path.join(self.args.output_dir, LOG_FILE), "a") as handle:
                handle.writelines(json.dumps(record) + "\n" for record in records)


def tracker_config(*arguments) -> dict:
    """Flat scalar/string hyperparameters for the trackers."""
    values = {k: v for a in arguments for k, v in asdict(a).items()}
    return {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in values.items()}


def start_trackers(accelerator, *arguments) -> None:
    """With ``--report-to``, start accelerate's trackers with the run's hyperparameters (`tracker_config`)."""
    if accelerator.log_with:
        accelerator.init_trackers("langclip", config=tracker_config(*arguments))


def report_skipped(accelerator, state: dict) -> None:
    """Print the bad samples skipped per kind, and the batches in which every sample was bad."""
    kinds = ", ".join(f"{kind} {count}" for kind, count in state["skipped"].items())
    accelerator.print(f"skipped {state['skipped_samples']} bad samples ({kinds}) and "
                      f"{state['skipped_batches']} batches in which every sample was bad")

"""The run folder: checkpoints saved atomically and rotated, ``--resume`` with its checks, the final save.

``output-dir/checkpoint-<step>/`` holds accelerate's state (model, optimizer, RNG), ``trainer_state.json`` (the step,
the skip counts, the run id, the configuration and data fingerprint) and, for streamed data, one
``data_state-<rank>.json`` per process. A fresh run refuses an ``--output-dir`` that holds another run (unless
``--overwrite-output-dir``), every run one that holds other files but no run (a new or empty folder is fine);
rotation deletes only this run's checkpoints, ``--resume`` refuses a different batch size, seed, data or method
(``--resume-ignore-mismatch`` warns instead) and passes over a corrupted latest checkpoint to the previous complete
one.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import uuid
from dataclasses import asdict

from accelerate import Accelerator
from safetensors import SafetensorError

from ..errors import CheckpointError, ConfigError
from ..modeling.auto import save_folder
from ..processing.transforms import SKIP_KINDS
from .arguments import DataArguments, ModelArguments, TrainArguments, check_model_config
from .data import Batches
from .interrupts import LOCK_FILE
from .logging import LOG_FILE
from .methods import Method

CHECKPOINT_PREFIX = "checkpoint-"
STATE_FILE = "trainer_state.json"
# Settings a resumed run must share with the run it continues (--resume-ignore-mismatch overrides).
RESUME_SETTINGS = ("method", "text_sampling", "objective", "contrastive_loss", "train_parts",  # what trains, and how
                   "model_name_or_path", "model_config", "lora_r",  # the model's parameters and optimizer groups
                   "lock_image", "lock_image_unlocked_groups", "lock_text", "lock_text_unlocked_layers",
                   "locked_norms_trainable",  # which parameters the optimizer holds (absent from older states)
                   "per_device_batch_size", "accum_freq", "num_processes", "seed", "data_fingerprint")
DATA_STATE_FILE = "data_state-{rank}.json"


def checkpoints(output_dir: str) -> list[str]:
    """Finished checkpoint folders of ``output_dir``, oldest first."""
    if not os.path.isdir(output_dir):
        return []
    steps = {name: name[len(CHECKPOINT_PREFIX):] for name in os.listdir(output_dir)
             if name.startswith(CHECKPOINT_PREFIX)}
    names = sorted((name for name, step in steps.items() if step.isdigit()), key=lambda name: int(steps[name]))
    return [os.path.join(output_dir, name) for name in names]


def run_files(output_dir: str) -> list[str]:
    """Names in ``output_dir`` that belong to a training run: checkpoints (finished or not), the log, the state."""
    if not os.path.isdir(output_dir):
        return []
    return sorted(name for name in os.listdir(output_dir) if name in (LOG_FILE, STATE_FILE)
                  or name.startswith((CHECKPOINT_PREFIX, f"tmp-{CHECKPOINT_PREFIX}")))


def read_state(checkpoint: str) -> dict:
    with open(os.path.join(checkpoint, STATE_FILE), encoding="utf-8") as handle:
        return json.load(handle)


def validate_run(method: Method, model_args: ModelArguments, data_args: DataArguments,
                 train_args: TrainArguments) -> None:
    """Checks that need no model or data, before anything is built: the data and model are given, the
    --model-config keys exist, --output-dir is none of the run's inputs nor a folder of other files, and a fresh
    run does not write into a folder holding another run."""
    if data_args.train_data is None:
        raise ConfigError("give --train-data (or train_data in the YAML config)")
    if not model_args.model_name_or_path:
        if not model_args.model_config:
            raise ConfigError("give --model-name-or-path or --model-config to build the model")
        check_model_config(model_args.model_config, method.objective.model_class().config_class)
    output = os.path.realpath(train_args.output_dir)
    for flag, path in (("--train-data", data_args.train_data), ("--model-name-or-path", model_args.model_name_or_path),
                       ("--tokenizer-name-or-path", model_args.tokenizer_name_or_path)):
        if isinstance(path, str) and os.path.exists(path) and os.path.realpath(path) == output:
            raise ConfigError(f"--output-dir {train_args.output_dir} is the {flag} folder: the run would write its "
                              "checkpoints and model files among the inputs; choose another --output-dir")
    found = run_files(train_args.output_dir)
    others = sorted(os.listdir(train_args.output_dir)) if os.path.isdir(train_args.output_dir) else []
    if others and not found and LOCK_FILE not in others:
        raise ConfigError(f"--output-dir {train_args.output_dir} is a folder of other files ({', '.join(others[:4])}"
                          f"{', ...' if len(others) > 4 else ''}), not a run folder (no {CHECKPOINT_PREFIX}*, "
                          f"{STATE_FILE} or {LOG_FILE}): the run's files would be mixed into it; give a new or "
                          "empty folder, or the folder of the run to continue")
    if found and not (train_args.resume or train_args.overwrite_output_dir):
        raise ConfigError(f"--output-dir {train_args.output_dir} already holds a run ({', '.join(found[:4])}); "
                          "pass --resume to continue it, --overwrite-output-dir to delete it and start over, "
                          "or choose another --output-dir")


def check_resume(saved: dict, current: dict, checkpoint: str, ignore: bool, accelerator: Accelerator) -> None:
    """Raise a `CheckpointError` naming each of RESUME_SETTINGS that differs between the ``saved`` run
    and this one; with ``ignore``, print a warning instead."""
    differ = [f"{key} is {current.get(key)!r} here but {saved[key]!r} in {checkpoint}"
              for key in RESUME_SETTINGS if key in saved and saved[key] != current.get(key)]
    if not differ:
        return
    if not ignore:
        raise CheckpointError(f"--resume: {'; '.join(differ)}. Resume with the same settings, pass "
                              "--resume-ignore-mismatch to continue anyway, or start a new --output-dir")
    accelerator.print(f"warning: --resume-ignore-mismatch: {'; '.join(differ)}")


def save_checkpoint(accelerator: Accelerator, output_dir: str, state: dict, keep: int,
                    data_state: dict | None = None) -> str:
    """`accelerator.save_state` into a temporary folder, renamed when complete; keeps the last ``keep`` of this run
    (checkpoints of another ``run_id`` are never deleted). ``data_state`` (this process's
    `StreamedBatches.state_dict`) goes to ``data_state-<rank>.json``. Returns the checkpoint's folder."""
    final = os.path.join(output_dir, f"{CHECKPOINT_PREFIX}{state['step']}")
    temporary = os.path.join(output_dir, f"tmp-{CHECKPOINT_PREFIX}{state['step']}")
    if accelerator.is_main_process:
        shutil.rmtree(temporary, ignore_errors=True)
    accelerator.wait_for_everyone()
    try:
        accelerator.save_state(temporary)
        if data_state is not None:
            os.makedirs(temporary, exist_ok=True)
            with open(os.path.join(temporary, DATA_STATE_FILE.format(rank=accelerator.process_index)), "w") as handle:
                json.dump(data_state, handle)
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            with open(os.path.join(temporary, STATE_FILE), "w") as handle:
                json.dump(state, handle)
    except OSError as error:  # a full disk, a quota: the earlier checkpoints stay complete
        shutil.rmtree(temporary, ignore_errors=True)
        done = checkpoints(output_dir)
        raise CheckpointError(f"could not save {final} ({error}); free space, then rerun with --resume to continue "
                              f"from {done[-1] if done else 'the start (no complete checkpoint yet)'}") from error
    if accelerator.is_main_process:
        shutil.rmtree(final, ignore_errors=True)
        os.replace(temporary, final)
        ours = [path for path in checkpoints(output_dir) if _run_id(path) == state["run_id"]]
        for old in ours[:-keep] if keep > 0 else []:
            shutil.rmtree(old)
    accelerator.wait_for_everyone()
    return final


def _run_id(checkpoint: str) -> str | None:
    try:
        return read_state(checkpoint).get("run_id")
    except (OSError, ValueError):
        return None


def clear_run(accelerator: Accelerator, output_dir: str) -> None:
    """``--overwrite-output-dir``: delete the checkpoints, log and state of the run in ``output_dir`` (`run_files`)."""
    if accelerator.is_main_process:
        for name in run_files(output_dir):
            path = os.path.join(output_dir, name)
            shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
            print(f"--overwrite-output-dir: deleted {path}")
    accelerator.wait_for_everyone()


def initial_state(accelerator: Accelerator, arguments: tuple[ModelArguments, DataArguments, TrainArguments],
                  batches: Batches) -> dict:
    """The run's state: a fresh one (step 0, no skips, a new run id), or with --resume the latest readable
    checkpoint's (`resume_state`), whose data position ``batches`` takes; either with this run's ``config`` (the
    arguments, the process count and the data's fingerprint). Creates ``--output-dir``."""
    train_args = arguments[2]
    config = {**{k: v for a in arguments for k, v in asdict(a).items()}, "num_processes": accelerator.num_processes,
              "data_fingerprint": batches.fingerprint}
    state = {"step": 0, "bad_steps": 0, "skipped_samples": 0, "skipped": dict.fromkeys(SKIP_KINDS, 0),
             "skipped_batches": 0, "run_id": uuid.uuid4().hex, "config": config}
    if train_args.resume:
        state.update(resume_state(accelerator, train_args.output_dir, config, train_args.resume_ignore_mismatch))
        state["config"] = config
    data_state = state.pop("data_state", None)
    if state["step"] > 0 and batches.state_dict() is not None:  # streamed data: its position is not the step's
        if data_state is None:
            raise CheckpointError(f"the checkpoint of step {state['step']} in {train_args.output_dir} has no data "
                                  f"state for process {accelerator.process_index}: it was not written by this "
                                  "streamed run")
        batches.load_state_dict(data_state)
    if accelerator.is_main_process:
        os.makedirs(train_args.output_dir, exist_ok=True)
    return state


CORRUPT_CHECKPOINT = (OSError, RuntimeError, ValueError, EOFError, KeyError, pickle.UnpicklingError, SafetensorError)


def resume_state(accelerator: Accelerator, output_dir: str, current: dict, ignore_mismatch: bool = False) -> dict:
    """Load the latest complete checkpoint, newest first, passing over (and naming) corrupted ones; check its
    settings against ``current`` (`check_resume`); trim the loss log to its step. {} when there is none.
    A streamed run's checkpoint also gives this process's data state, under ``data_state``."""
    found, corrupted = checkpoints(output_dir), []
    state = {}
    for checkpoint in reversed(found):
        try:
            saved = read_state(checkpoint)
            check_resume(saved.get("config", {}), current, checkpoint, ignore_mismatch, accelerator)
            accelerator.load_state(checkpoint)
        except CORRUPT_CHECKPOINT as error:
            if isinstance(error, CheckpointError):
                raise
            corrupted.append(f"{checkpoint} ({type(error).__name__}: {error})")
            accelerator.print(f"--resume: {checkpoint} is incomplete or corrupted ({type(error).__name__}: "
                              f"{str(error)[:200]}); falling back to the previous checkpoint")
            continue
        state = saved
        data_path = os.path.join(checkpoint, DATA_STATE_FILE.format(rank=accelerator.process_index))
        if os.path.exists(data_path):  # a streamed run: this process's data state
            with open(data_path) as handle:
                state["data_state"] = json.load(handle)
        break
    if corrupted and not state:
        raise CheckpointError(f"--resume: no readable checkpoint in {output_dir}: {'; '.join(corrupted)}. "
                              "Delete them to restart, or start over with --overwrite-output-dir")
    log_path = os.path.join(output_dir, LOG_FILE)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process and os.path.exists(log_path):
        with open(log_path) as handle:
            kept = [line for line in handle if json.loads(line)["step"] <= state.get("step", 0)]
        with open(log_path, "w") as handle:
            handle.writelines(kept)
    if state:
        accelerator.print(f"resumed from {checkpoint} at step {state['step']}")
    else:
        accelerator.print(f"--resume: no checkpoint in {output_dir}, starting from scratch")
    return state


def save_final(accelerator: Accelerator, model, tokenizer, processor, state: dict,
               arguments: tuple[ModelArguments, DataArguments, TrainArguments], eval_records=()) -> None:
    """`save_pretrained` of the model (LoRA merged), tokenizer and image processor, ``state`` as ``trainer_state.json``,
    and a model card (README.md) that lists the run's ``arguments`` and ``eval_records``; with --push-to-hub, push the
    folder without its checkpoints."""
    from ..hub_cards.cards import model_card
    from ..hub_cards.push import push_model

    model_args, _, train_args = arguments
    training = {k: v for a in arguments for k, v in asdict(a).items()}
    accelerator.wait_for_everyone()
    if not accelerator.is_main_process:
        return
    model = accelerator.unwrap_model(model)
    if model_args.lora_r > 0:
        model = model.merge_and_unload()
    output_dir = train_args.output_dir
    save_folder(model, output_dir, processor, tokenizer)
    with open(os.path.join(output_dir, STATE_FILE), "w") as handle:
        json.dump(state, handle)
    name = train_args.hub_model_id or os.path.basename(os.path.abspath(output_dir))
    shown_elsewhere = ("method", "model_config", "output_dir", "push_to_hub", "hub_model_id", "private", "revision")
    training = {k: v for k, v in training.items() if v is not None and k not in shown_elsewhere}
    start = model_args.model_name_or_path
    hub_start = start if start and not os.path.isdir(start) else None  # the card's base_model is a Hub id
    hub_data = [d for d in [training.get("train_data")] if isinstance(d, str) and not os.path.exists(d)]
    card = model_card(model.config.to_dict(), name, eval_records, base_model=hub_start, datasets=hub_data,
                      training=training, method=model_args.method)
    card.save(os.path.join(output_dir, "README.md"))
    if train_args.push_to_hub:
        url = push_model(output_dir, train_args.hub_model_id, private=train_args.private, revision=train_args.revision)
        print(f"pushed {output_dir} to {url}")

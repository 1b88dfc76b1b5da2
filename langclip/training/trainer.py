"""The training loop on `accelerate.Accelerator` for every method: CLIP, LaCLIP, LaCLIP-MT, CLIPS and PC-CLIP.

`train(model_args, data_args, train_args)` is what ``accelerate launch train.py`` and ``langclip train`` run. Read
top to bottom, one batch goes: `data.build_data` (rows, the method's collator, streamed or map-style batches) ->
`step.TrainStep` (accumulation, forward/backward, the non-finite policy, the optimizer step) -> `logging.StepLog`
-> `checkpoints.save_checkpoint`; the model is built by `model.build_trainable_model` and the run folder is kept
by `checkpoints` (fresh run, ``--resume``, final save, card and push).

A method is a `langclip.training.methods.Method` (text sampling x objective x parts trained, ``--method`` a preset of
them): the columns it needs, how rows become batches and what trains; its `langclip.training.objectives.Objective`
gives the model class, how a batch becomes features, and the loss on those features.
"""

from __future__ import annotations

import json
import time

import torch
from accelerate import Accelerator, DataLoaderConfiguration
from accelerate.utils import TorchDynamoPlugin, set_seed
from tqdm.auto import tqdm

from ..evaluation.suite import evaluate_during_training
from ..processing.transforms import normalize_pixels
from .arguments import (
    DataArguments,
    ModelArguments,
    TrainArguments,
    add_arguments,
    arguments_from_dict,
    arguments_from_namespace,
)
from .checkpoints import clear_run, initial_state, save_checkpoint, save_final, validate_run
from .data import build_data
from ..signals import StopRequest
from .interrupts import agreed_stop, interrupted, run_folder_lock
from .logging import StepLog, report_skipped, start_trackers
from .methods import Method
from .model import build_trainable_model
from .optim import Schedule, build_optimizer, set_learning_rate
from .step import TrainStep, equalize_batch


def build_accelerator(model_args: ModelArguments, train_args: TrainArguments) -> Accelerator:
    """The run's `Accelerator`: precision, tracker, ``torch.compile``; seedable map-style shuffling from --seed, each
    process loading its own batches, pinned batches copied without blocking."""
    return Accelerator(
        cpu=torch.accelerator.current_accelerator() is None,  # so plain torchrun on CPU runs gloo (MULTI_CPU)
        mixed_precision=train_args.mixed_precision,
        log_with=None if train_args.report_to == "none" else train_args.report_to,
        project_dir=train_args.output_dir,
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=train_args.seed,
                                                  dispatch_batches=False, non_blocking=True),
        dynamo_plugin=TorchDynamoPlugin(backend=model_args.torch_compile_backend) if model_args.torch_compile
        else None,
    )


def train(model_args: ModelArguments, data_args: DataArguments, train_args: TrainArguments) -> dict:
    """Train, checkpoint, save the final model (+ tokenizer and image processor) to ``output_dir``; returns a summary
    (the final state and last logged loss)."""
    arguments = (model_args, data_args, train_args)
    method = Method.from_arguments(*arguments)
    if train_args.push_to_hub:  # token, repo and permissions checked before the long job, not after it
        from ..hub_cards.push import check_hub_access

        check_hub_access(train_args.hub_model_id)
    validate_run(method, *arguments)
    accelerator = build_accelerator(model_args, train_args)
    set_seed(train_args.seed)
    with run_folder_lock(accelerator, train_args.output_dir), StopRequest() as stop:
        if train_args.overwrite_output_dir:
            clear_run(accelerator, train_args.output_dir)
        model, tokenizer, processor = build_trainable_model(model_args, method)
        data = build_data(accelerator, method, model, tokenizer, processor, arguments)
        optimizer = build_optimizer(model, train_args.lr, train_args.weight_decay,
                                    (train_args.adam_beta1, train_args.adam_beta2), train_args.adam_eps,
                                    fused=train_args.fused_optimizer, device=accelerator.device)
        model, optimizer = accelerator.prepare(model, optimizer)
        # the same initial model everywhere; from here each process draws its own noise (patch dropout, dropout)
        set_seed(train_args.seed, device_specific=True)
        train_step = TrainStep(accelerator, model, optimizer, method.objective, train_args.accum_freq,
                               train_args.max_grad_norm)
        schedule = Schedule.from_arguments(train_args, data.steps_per_epoch)
        total_steps = schedule.total_steps
        state = initial_state(accelerator, arguments, data)
        start_trackers(accelerator, *arguments)
        progress = tqdm(total=total_steps, initial=state["step"], disable=not accelerator.is_local_main_process,
                        desc=f"train {model_args.method} ({method.description})", unit="step")
        global_batch = train_args.per_device_batch_size * train_args.accum_freq * accelerator.num_processes
        log = StepLog(accelerator, train_args, train_step.unwrapped, progress, global_batch)
        eval_records = None

        model.train()
        waiting = time.perf_counter()
        for batch in data.steps(state["step"], total_steps):
            data_wait = time.perf_counter() - waiting
            batch = equalize_batch(accelerator, batch, state)  # None: every sample was bad, a step without update
            lr = schedule(state["step"])
            set_learning_rate(optimizer, lr)
            step = state["step"] + 1
            logging = step % train_args.logging_steps == 0 or step == total_steps
            saving = step >= total_steps or bool(train_args.save_steps) and step % train_args.save_steps == 0
            if batch is None:
                log.add(step, None, None, lr, data_wait, None)
            else:
                batch = normalize_pixels(batch, processor.image_mean, processor.image_std)  # uint8 -> float, here
                loss, bad, grad_norm = train_step(batch, with_norm=logging)
                log.add(step, loss, bad, lr, data_wait, grad_norm)
            state["step"] = step
            stopping = step < total_steps and agreed_stop(stop, accelerator)  # SIGINT, SIGTERM, SIGUSR1
            if logging or saving or stopping:
                log.flush(state)
            if saving or stopping:
                checkpoint = save_checkpoint(accelerator, train_args.output_dir, state, train_args.save_total_limit,
                                             data.state_dict())
            if stopping:
                progress.close()
                accelerator.end_training()
                raise interrupted(stopping, step, checkpoint, accelerator.is_main_process)
            evaluating = step >= total_steps or bool(train_args.eval_steps) and step % train_args.eval_steps == 0
            if train_args.eval_suite and evaluating:
                eval_records = evaluate_during_training(accelerator, train_step.unwrapped, tokenizer, processor,
                                                        train_args.eval_suite, step, train_args.output_dir,
                                                        train_args.per_device_batch_size)
            waiting = time.perf_counter()
        progress.close()

        save_final(accelerator, model, tokenizer, processor, state, arguments, eval_records or ())
    if data_args.skip_bad_samples:
        report_skipped(accelerator, state)
    accelerator.end_training()
    return {**state, "loss": log.last_loss}


def train_in_process(values: dict) -> dict:
    """`train` on a flat mapping of argument names to values (a YAML config's form), then reset accelerate's
    process state so that another run can follow in the same process (the demo, notebooks)."""
    from accelerate.state import AcceleratorState

    try:
        return train(*arguments_from_dict(values))
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)


def main(args) -> int:
    """`langclip train`: the same flags and YAML config as ``train.py``."""
    summary = train(*arguments_from_namespace(args))
    print(json.dumps({"final_step": summary["step"], "loss": summary["loss"],
                      "skipped_samples": summary["skipped_samples"], "bad_steps": summary["bad_steps"]}))
    return 0


__all__ = ["add_arguments", "main", "train"]

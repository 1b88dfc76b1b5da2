"""The training loop on `accelerate.Accelerator` for every method: CLIP, LaCLIP, LaCLIP-MT, CLIPS and PC-CLIP.

`train(model_args, data_args, train_args)` is what ``accelerate launch train.py`` and
``langclip train`` run. One optimizer step sees a contrastive batch of
``per_device_batch_size * accum_freq * num_processes`` pairs: features of the micro-batches
are cached and recomputed (`forward_backward`), features are gathered across processes
inside the loss, and the step is skipped when the features or gradients are not finite.

A method is a `langclip.training.methods.Method` (text sampling x objective x parts trained,
``--method`` a preset of them): its model class, the columns it needs, how rows become
batches, how a batch becomes features, and the loss on those features.

Runs are safe to rerun: a fresh run refuses an ``--output-dir`` that holds another run
(unless ``--overwrite-output-dir``), checkpoint rotation deletes only this run's checkpoints,
the last step is always checkpointed, ``--resume`` refuses a different batch size, seed, data
or method (``--resume-ignore-mismatch`` warns instead) and passes over a corrupted latest
checkpoint to the previous complete one. Each checkpoint's ``trainer_state.json`` keeps the
configuration, the data fingerprint and the skipped samples per kind.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import time
import warnings
from dataclasses import asdict

import datasets
import torch
from accelerate import Accelerator, DataLoaderConfiguration
from accelerate.utils import TorchDynamoPlugin, set_seed
from torchdata.stateful_dataloader import StatefulDataLoader
from tqdm.auto import tqdm

from ..errors import CheckpointError, ConfigError
from ..evaluation.suite import evaluate_during_training
from ..processing.loading import check_caption_column, is_webdataset, load_image_text_dataset
from ..processing.transforms import normalize_pixels
from .data import DatasetStream, ShardStream, load_shard_stream
from .arguments import (
    DataArguments,
    ModelArguments,
    TrainArguments,
    add_arguments,
    arguments_from_dict,
    arguments_from_namespace,
)
from .methods import Method
from .model import build_trainable_model
from .optim import build_optimizer, learning_rate, set_learning_rate
from .checkpoints import clear_run, initial_state, save_checkpoint, save_final, validate_run
from .logging import StepLog, report_skipped, start_trackers
from .step import TrainStep, equalize_batch

def default_num_workers(cap: int = 8) -> int:
    """DataLoader workers per process: the CPU cores this process may use, shared by the node's processes
    (``LOCAL_WORLD_SIZE``), minus one for the training process; at most ``cap``."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(0, min(cap, cores // int(os.environ.get("LOCAL_WORLD_SIZE", "1")) - 1))


def loader_kwargs(num_workers: int | None, device: torch.device) -> dict:
    """DataLoader settings: ``num_workers`` (None: `default_num_workers`) that stay alive across epochs and
    prefetch 4 batches each; page-locked batches when they go to a CUDA device."""
    workers = default_num_workers() if num_workers is None else num_workers
    return {"num_workers": workers, "pin_memory": device.type == "cuda"} | (
        {"persistent_workers": True, "prefetch_factor": 4} if workers else {})


class SharedEpochCollator:
    """``collator`` with its ``epoch`` in shared memory, so that persistent DataLoader workers see `set_epoch`."""

    def __init__(self, collator):
        self.collator = collator
        self.epoch = multiprocessing.RawValue("q", 0)

    def set_epoch(self, epoch: int) -> None:
        self.epoch.value = epoch

    def __call__(self, rows):
        self.collator.epoch = self.epoch.value
        return self.collator(rows)


class StreamedBatches:
    """This process's batches of a `ShardStream` or `DatasetStream`, pass after pass, resumable to the exact sample.

    Pass k is a `torchdata` `StatefulDataLoader` over ``stream.dataset(k, rank, world_size)``
    (`split_dataset_by_node` gives the process its shards, the loader's workers split them
    again); when it runs out, pass k + 1 starts. The collator's ``epoch`` is the pass, so aug_T
    draws and random crops are keyed by (pass, sample id). `state_dict` is the pass and the
    loader's state after the last batch handed out (JSON); after `load_state_dict` the next batch
    is the one the uninterrupted run would have taken. ``pin_memory`` and ``prefetch_factor`` go to the loader
    (`loader_kwargs`); pinned batches are copied to ``device`` without blocking.
    """

    def __init__(self, stream: ShardStream | DatasetStream, collator, batch_size: int, num_workers: int = 0,
                 rank: int = 0, world_size: int = 1, device=None, pin_memory: bool = False,
                 prefetch_factor: int | None = None):
        self.stream, self.collator, self.batch_size, self.num_workers = stream, collator, batch_size, num_workers
        self.rank, self.world_size, self.device = rank, world_size, device
        self.pin_memory, self.prefetch_factor = pin_memory, prefetch_factor
        self.pass_index, self.loader, self.iterator, self.loader_state = 0, None, None, None

    def _start_pass(self) -> None:
        self.collator.epoch = self.pass_index
        self.loader = StatefulDataLoader(
            self.stream.dataset(self.pass_index, self.rank, self.world_size), batch_size=self.batch_size,
            drop_last=True, num_workers=self.num_workers, collate_fn=self.collator, pin_memory=self.pin_memory,
            prefetch_factor=self.prefetch_factor if self.num_workers else None)
        if self.loader_state is not None:
            self.loader.load_state_dict(self.loader_state)
            self.loader_state = None
        self.iterator = iter(self.loader)

    def take(self, steps: int):
        """The next ``steps`` batches, on ``device``."""
        taken, empty_passes = 0, 0
        while taken < steps:
            if self.iterator is None:
                self._start_pass()
            try:
                batch = next(self.iterator)
            except StopIteration:
                self.pass_index, self.loader, self.iterator = self.pass_index + 1, None, None
                empty_passes += 1
                if empty_passes > 1:
                    raise ValueError(f"process {self.rank} of {self.world_size} got no full batch of "
                                     f"{self.batch_size} samples from a whole pass over its shards of "
                                     f"{self.stream.num_shards}; use more shards or a smaller batch") from None
                continue
            taken, empty_passes = taken + 1, 0
            yield {key: value.to(self.device, non_blocking=self.pin_memory) for key, value in batch.items()}

    def state_dict(self) -> dict:
        loader = self.loader.state_dict() if self.loader is not None else self.loader_state
        return {"pass": self.pass_index, "loader": loader, "world_size": self.world_size,
                "num_workers": self.num_workers}

    def load_state_dict(self, state: dict) -> None:
        if (state["world_size"], state["num_workers"]) != (self.world_size, self.num_workers):
            raise ValueError(f"the checkpoint's data state is for {state['world_size']} processes x "
                             f"{state['num_workers']} workers; resume with those (here: {self.world_size} x "
                             f"{self.num_workers})")
        self.pass_index, self.loader, self.iterator, self.loader_state = state["pass"], None, None, state["loader"]


def split_warning(num_shards: int, world_size: int, num_workers: int) -> str | None:
    """Why ``num_shards`` do not split evenly over processes and their DataLoader workers, or None."""
    if num_shards % world_size:
        return (f"{num_shards} shards do not divide among {world_size} processes: each process reads every shard "
                f"and keeps 1 sample in {world_size} (split_dataset_by_node); use a multiple of {world_size} shards")
    per_process = num_shards // world_size
    if num_workers > 1 and per_process % num_workers:
        return (f"{per_process} shards per process do not divide among {num_workers} DataLoader workers: some "
                f"workers read {per_process // num_workers + 1} shards, others {per_process // num_workers}"
                + (", some none" if per_process < num_workers else ""))
    return None


def train(model_args: ModelArguments, data_args: DataArguments, train_args: TrainArguments) -> dict:
    """Train, checkpoint, save the final model (+ tokenizer and image processor) to ``output_dir``; returns a summary."""
    method = Method.from_arguments(model_args, data_args, train_args)
    if train_args.push_to_hub:  # token, repo and permissions checked before the long job, not after it
        from ..hub_cards.push import check_hub_access

        check_hub_access(train_args.hub_model_id)
    validate_run(method, model_args, data_args, train_args)
    accelerator = Accelerator(
        cpu=torch.accelerator.current_accelerator() is None,  # so plain torchrun on CPU runs gloo (MULTI_CPU)
        mixed_precision=train_args.mixed_precision,
        log_with=None if train_args.report_to == "none" else train_args.report_to,
        project_dir=train_args.output_dir,
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=train_args.seed,
                                                  dispatch_batches=False, non_blocking=True),  # with pinned batches
        dynamo_plugin=TorchDynamoPlugin(backend=model_args.torch_compile_backend) if model_args.torch_compile else None,
    )
    set_seed(train_args.seed)
    if train_args.overwrite_output_dir:
        clear_run(accelerator, train_args.output_dir)

    model, tokenizer, processor = build_trainable_model(model_args, method)

    stream = None
    if is_webdataset(data_args.train_data):
        stream = load_shard_stream(
            data_args.train_data, data_args.caption_column, data_args.rewrites_column, data_args.image_column,
            data_args.skip_bad_samples, seed=train_args.seed, shuffle_buffer=data_args.shuffle_buffer,
            resampled=data_args.dataset_resampled)
        dataset = stream.dataset()
    else:
        if data_args.train_num_samples or data_args.dataset_resampled:
            raise ValueError("--train-num-samples and --dataset-resampled apply to .tar shards; "
                             f"{data_args.train_data} is not a set of shards")
        dataset = load_image_text_dataset(
            data_args.train_data, split=data_args.split, image_column=data_args.image_column,
            caption_column=data_args.caption_column, rewrites_column=data_args.rewrites_column,
            augmented_files=data_args.augmented_files or (), image_root=data_args.image_root,
            streaming=data_args.streaming,
        )
        if isinstance(dataset, datasets.IterableDataset):  # read in passes with a data state, as shards are
            stream = DatasetStream(dataset, seed=train_args.seed, shuffle_buffer=data_args.shuffle_buffer)
    streamed = isinstance(dataset, torch.utils.data.IterableDataset) or not hasattr(dataset, "__len__")
    method.check_columns(dataset.column_names or list(dataset.features or {}), data_args.train_data)
    check_caption_column(dataset, data_args.train_data, allow_missing=data_args.skip_bad_samples)
    max_length = model_args.max_length or model.config.text_config.max_position_embeddings
    dataset, collator = method.prepare_data(model, dataset, tokenizer, max_length, processor, accelerator.device)
    optimizer = build_optimizer(model, train_args.lr, train_args.weight_decay,
                                (train_args.adam_beta1, train_args.adam_beta2), train_args.adam_eps,
                                fused=train_args.fused_optimizer, device=accelerator.device)
    global_batch = train_args.per_device_batch_size * train_args.accum_freq * accelerator.num_processes
    workers = loader_kwargs(data_args.num_workers, accelerator.device)
    if stream is not None:
        warning = split_warning(stream.num_shards, accelerator.num_processes, workers["num_workers"])
        if warning and accelerator.is_main_process:
            warnings.warn(warning, stacklevel=2)
        batches = StreamedBatches(stream, collator, train_args.per_device_batch_size * train_args.accum_freq,
                                  workers["num_workers"], accelerator.process_index, accelerator.num_processes,
                                  accelerator.device, workers["pin_memory"], workers.get("prefetch_factor"))
        model, optimizer = accelerator.prepare(model, optimizer)
    else:
        collate = SharedEpochCollator(collator)
        loader = torch.utils.data.DataLoader(
            dataset, batch_size=train_args.per_device_batch_size * train_args.accum_freq, shuffle=not streamed,
            drop_last=True, collate_fn=collate, **workers,
        )
        model, optimizer, loader = accelerator.prepare(model, optimizer, loader)

    if stream is not None and data_args.train_num_samples:
        steps_per_epoch = data_args.train_num_samples // global_batch
        if steps_per_epoch == 0:
            raise ConfigError(f"--train-num-samples {data_args.train_num_samples} is less than one global batch "
                             f"({global_batch})")
    elif streamed:
        if train_args.max_steps is None:
            raise ConfigError("streamed data has no length: give --max-steps (or, for shards, --train-num-samples)")
        steps_per_epoch = None
    else:
        steps_per_epoch = len(loader)
    if steps_per_epoch == 0:
        raise ConfigError(f"--train-data {data_args.train_data} has fewer rows ({len(dataset)}) than one global batch "
                          f"({train_args.per_device_batch_size * train_args.accum_freq * accelerator.num_processes}); "
                          "lower --per-device-batch-size or --accum-freq")
    if train_args.lr_decay_per_epoch is not None and not steps_per_epoch:
        raise ConfigError("--lr-decay-per-epoch decays once per epoch, and streamed data has no epochs: give "
                          "--train-num-samples (shards) or use the cosine schedule (--lr-end)")
    total_steps = train_args.max_steps or math.ceil(train_args.num_epochs * steps_per_epoch)
    warmup_steps = train_args.warmup_steps + round(train_args.warmup_epochs * (steps_per_epoch or 0))
    train_step = TrainStep(accelerator, model, optimizer, method, train_args.accum_freq, train_args.max_grad_norm)
    unwrapped = train_step.unwrapped

    training = {k: v for a in (model_args, data_args, train_args) for k, v in asdict(a).items()}
    config = {**training, "num_processes": accelerator.num_processes,
              "data_fingerprint": getattr(dataset, "_fingerprint", None) or f"path:{data_args.train_data}"}
    state, data_state = initial_state(accelerator, train_args, config)
    if stream is not None and state["step"] > 0:
        if data_state is None:
            raise CheckpointError(f"the checkpoint of step {state['step']} in {train_args.output_dir} has no data "
                                  f"state for process {accelerator.process_index}: it was not written by this streamed run")
        batches.load_state_dict(data_state)
    start_trackers(accelerator, model_args, data_args, train_args)

    progress = tqdm(total=total_steps, initial=state["step"], disable=not accelerator.is_local_main_process,
                    desc=f"train {model_args.method} ({method.description})", unit="step")
    log = StepLog(accelerator, train_args, unwrapped, progress, global_batch)
    eval_records = None
    epoch = state["step"] // steps_per_epoch if steps_per_epoch else 0
    model.train()
    while state["step"] < total_steps:
        if stream is not None:
            epoch_end = (epoch + 1) * steps_per_epoch if steps_per_epoch else total_steps
            epoch_loader = batches.take(min(epoch_end, total_steps) - state["step"])
        else:
            collate.set_epoch(epoch)
            loader.set_epoch(epoch)
            skip = state["step"] - epoch * steps_per_epoch if steps_per_epoch else 0
            epoch_loader = accelerator.skip_first_batches(loader, skip) if skip else loader
        waiting = time.perf_counter()
        for batch in epoch_loader:
            data_wait = time.perf_counter() - waiting
            batch = equalize_batch(accelerator, batch, state)  # None: every sample was bad, a step without update
            lr = learning_rate(state["step"], total_steps, train_args.lr, warmup_steps, train_args.lr_start,
                               train_args.lr_end, train_args.lr_decay_per_epoch, steps_per_epoch)
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
            if logging or saving:
                log.flush(state)
            if saving:
                save_checkpoint(accelerator, train_args.output_dir, state, train_args.save_total_limit,
                                None if stream is None else batches.state_dict())
            if train_args.eval_suite and (step >= total_steps or (
                    train_args.eval_steps and step % train_args.eval_steps == 0)):
                eval_records = evaluate_during_training(accelerator, unwrapped, tokenizer, processor,
                                                        train_args.eval_suite, step, train_args.output_dir,
                                                        train_args.per_device_batch_size)
            if state["step"] >= total_steps:
                break
            waiting = time.perf_counter()
        epoch += 1
    progress.close()
    summary = {**state, "loss": log.last_loss}
    save_final(accelerator, model, tokenizer, processor, state, (model_args, data_args, train_args),
               eval_records=eval_records or ())
    if data_args.skip_bad_samples:
        report_skipped(accelerator, state)
    accelerator.end_training()
    return summary


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

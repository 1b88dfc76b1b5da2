"""The training loop on `accelerate.Accelerator` for every method: CLIP, LaCLIP, LaCLIP-MT, CLIPS and PC-CLIP.

`train(model_args, data_args, train_args)` is what ``accelerate launch train.py`` and
``langclip train`` run. One optimizer step sees a contrastive batch of
``per_device_batch_size * accum_freq * num_processes`` pairs: features of the micro-batches
are cached and recomputed (`forward_backward`), features are gathered across processes
inside the loss, and the step is skipped when the features or gradients are not finite.

A method is one class of `langclip.training.methods`: its model class, the columns it needs,
how rows become batches, how a batch becomes features, and the loss on those features.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict

import torch
from accelerate import Accelerator, DataLoaderConfiguration
from accelerate.utils import TorchDynamoPlugin, set_seed
from torchdata.stateful_dataloader import StatefulDataLoader
from tqdm.auto import tqdm
from transformers import AutoTokenizer, CLIPImageProcessor

from ..modeling import LaCLIPModel
from ..processing.loading import ShardStream, is_webdataset, load_image_text_dataset, load_shard_stream
from .arguments import (
    DataArguments,
    ModelArguments,
    TrainArguments,
    add_arguments,
    arguments_from_dict,
    arguments_from_namespace,
)
from .methods import METHODS, Method
from .optim import build_optimizer, learning_rate, set_learning_rate

CHECKPOINT_PREFIX = "checkpoint-"
LOG_FILE = "train_log.jsonl"
STATE_FILE = "trainer_state.json"
DATA_STATE_FILE = "data_state-{rank}.json"
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


def split_batch(batch: dict, parts: int) -> list[dict]:
    """``parts`` micro-batches of (about) equal size along dim 0."""
    chunks = {key: value.chunk(parts) for key, value in batch.items()}
    return [{key: value[i] for key, value in chunks.items()} for i in range(len(next(iter(chunks.values()))))]


def forward_backward(
    model,
    batch: dict,
    method: Method,
    logit_scale: Callable[[], torch.Tensor],
    accum_freq: int = 1,
    backward: Callable = torch.Tensor.backward,
    no_sync: Callable = lambda: contextlib.nullcontext(),
    all_finite: Callable[[bool], bool] = bool,
) -> torch.Tensor | None:
    """Gradients of the loss of the whole ``batch``, in ``accum_freq`` micro-batches; returns the loss or None.

    With accum_freq > 1 (OpenCLIP's accum-freq): pass 1 computes every micro-batch's
    features without gradient; pass 2, for each micro-batch j, recomputes its features with
    gradient, substitutes them into the cached ones and back-propagates the loss of the
    whole batch. The sum over j of these gradients is the full-batch gradient; the logit
    scale takes its gradient in the last micro-batch only. Returns None, with no backward,
    when any process's features are not finite (``all_finite`` agrees across processes).
    """
    micro_batches = split_batch(batch, accum_freq)
    if len(micro_batches) == 1:
        features = method.features(model, batch)
        if not all_finite(all(torch.isfinite(f).all() for f in features)):
            return None
        loss = method.loss(*features, logit_scale())
        backward(loss)
        return loss.detach()
    with torch.no_grad():
        cached = [method.features(model, micro) for micro in micro_batches]
    if not all_finite(all(torch.isfinite(f).all() for features in cached for f in features)):
        return None
    last = len(micro_batches) - 1
    for j, micro in enumerate(micro_batches):
        with no_sync() if j < last else contextlib.nullcontext():
            features = method.features(model, micro)
            merged = [torch.cat([features[k] if i == j else cached[i][k] for i in range(len(cached))])
                      for k in range(len(features))]
            scale = logit_scale() if j == last else logit_scale().detach()
            loss = method.loss(*merged, scale)
            backward(loss)
    return loss.detach()


def load_tokenizer(model_args: ModelArguments):
    """The fast tokenizer of ``--tokenizer-name-or-path`` or of the checkpoint."""
    path = model_args.tokenizer_name_or_path or model_args.model_name_or_path
    if path is None:
        raise ValueError("give --model-name-or-path or --tokenizer-name-or-path: training needs a tokenizer")
    tokenizer = AutoTokenizer.from_pretrained(path)
    if not tokenizer.is_fast:
        raise ValueError(f"the tokenizer at {path} is not a fast tokenizer")
    return tokenizer


def load_image_processor(model_args: ModelArguments, image_size: int) -> CLIPImageProcessor:
    """The checkpoint's `CLIPImageProcessor`, or CLIP's mean/std at the model's ``image_size``."""
    if model_args.model_name_or_path:
        try:
            return CLIPImageProcessor.from_pretrained(model_args.model_name_or_path)
        except OSError:
            pass
    return CLIPImageProcessor(size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size},
                              image_mean=CLIP_MEAN, image_std=CLIP_STD)


def build_model(model_args: ModelArguments, method: type[Method], tokenizer) -> LaCLIPModel:
    """From ``--model-name-or-path``, or from ``--model-config`` sizes with the tokenizer's vocabulary and ids."""
    if model_args.model_name_or_path:
        return method.model_class.from_pretrained(model_args.model_name_or_path, **method.config_overrides)
    if not model_args.model_config:
        raise ValueError("give --model-name-or-path or --model-config to build the model")
    kwargs = json.loads(model_args.model_config)
    text = {"vocab_size": len(tokenizer), "pad_token_id": tokenizer.pad_token_id,
            "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
            **kwargs.pop("text_config", {})}
    config = method.model_class.config_class(text_config=text, **{**kwargs, **method.config_overrides})
    return method.model_class(config)


def add_lora(model, model_args: ModelArguments, targets: str | None = None):
    from peft import LoraConfig, get_peft_model

    targets = [targets] if targets else model_args.lora_target_modules
    config = LoraConfig(r=model_args.lora_r, lora_alpha=model_args.lora_alpha, lora_dropout=model_args.lora_dropout,
                        target_modules=targets[0] if len(targets) == 1 else targets)
    return get_peft_model(model, config)


class StreamedBatches:
    """This process's batches of a `ShardStream`, pass after pass, resumable to the exact sample.

    Pass k is a `torchdata` `StatefulDataLoader` over ``stream.dataset(k, rank, world_size)``
    (`split_dataset_by_node` gives the process its shards, the loader's workers split them
    again); when it runs out, pass k + 1 starts. The collator's ``epoch`` is the pass, so aug_T
    draws and random crops are keyed by (pass, sample id). `state_dict` is the pass and the
    loader's state after the last batch handed out (JSON); after `load_state_dict` the next batch
    is the one the uninterrupted run would have taken.
    """

    def __init__(self, stream: ShardStream, collator, batch_size: int, num_workers: int = 0, rank: int = 0,
                 world_size: int = 1, device=None):
        self.stream, self.collator, self.batch_size, self.num_workers = stream, collator, batch_size, num_workers
        self.rank, self.world_size, self.device = rank, world_size, device
        self.pass_index, self.loader, self.iterator, self.loader_state = 0, None, None, None

    def _start_pass(self) -> None:
        self.collator.epoch = self.pass_index
        self.loader = StatefulDataLoader(
            self.stream.dataset(self.pass_index, self.rank, self.world_size), batch_size=self.batch_size,
            drop_last=True, num_workers=self.num_workers, collate_fn=self.collator)
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
                                     f"{len(self.stream.shards)}; use more shards or a smaller batch") from None
                continue
            taken, empty_passes = taken + 1, 0
            yield {key: value.to(self.device) for key, value in batch.items()}

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


def checkpoints(output_dir: str) -> list[str]:
    """Finished checkpoint folders of ``output_dir``, oldest first."""
    if not os.path.isdir(output_dir):
        return []
    names = [n for n in os.listdir(output_dir) if n.startswith(CHECKPOINT_PREFIX) and n[len(CHECKPOINT_PREFIX):].isdigit()]
    return [os.path.join(output_dir, n) for n in sorted(names, key=lambda n: int(n[len(CHECKPOINT_PREFIX):]))]


def save_checkpoint(accelerator: Accelerator, output_dir: str, state: dict, keep: int,
                    data_state: dict | None = None) -> None:
    """`accelerator.save_state` into a temporary folder, renamed when complete; keeps the last ``keep``.

    ``data_state`` (this process's `StreamedBatches.state_dict`) goes to ``data_state-<rank>.json``.
    """
    final = os.path.join(output_dir, f"{CHECKPOINT_PREFIX}{state['step']}")
    temporary = os.path.join(output_dir, f"tmp-{CHECKPOINT_PREFIX}{state['step']}")
    if accelerator.is_main_process:
        shutil.rmtree(temporary, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(temporary)
    if data_state is not None:
        os.makedirs(temporary, exist_ok=True)
        with open(os.path.join(temporary, DATA_STATE_FILE.format(rank=accelerator.process_index)), "w") as handle:
            json.dump(data_state, handle)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        with open(os.path.join(temporary, STATE_FILE), "w") as handle:
            json.dump(state, handle)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(temporary, final)
        for old in checkpoints(output_dir)[:-keep] if keep > 0 else []:
            shutil.rmtree(old)
    accelerator.wait_for_everyone()


def resume_state(accelerator: Accelerator, output_dir: str) -> dict:
    """Load the latest checkpoint and trim the loss log to its step; {} when there is none.

    A streamed run's checkpoint also gives this process's data state, under ``data_state``.
    """
    found = checkpoints(output_dir)
    if not found:
        accelerator.print(f"--resume: no checkpoint in {output_dir}, starting from scratch")
        return {}
    accelerator.load_state(found[-1])
    with open(os.path.join(found[-1], STATE_FILE)) as handle:
        state = json.load(handle)
    data_path = os.path.join(found[-1], DATA_STATE_FILE.format(rank=accelerator.process_index))
    if os.path.exists(data_path):
        with open(data_path) as handle:
            state["data_state"] = json.load(handle)
    log_path = os.path.join(output_dir, LOG_FILE)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process and os.path.exists(log_path):
        with open(log_path) as handle:
            kept = [line for line in handle if json.loads(line)["step"] <= state["step"]]
        with open(log_path, "w") as handle:
            handle.writelines(kept)
    accelerator.print(f"resumed from {found[-1]} at step {state['step']}")
    return state


def tracker_config(*arguments) -> dict:
    """Flat scalar/string hyperparameters for the trackers."""
    values = {k: v for a in arguments for k, v in asdict(a).items()}
    return {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in values.items()}


def train(model_args: ModelArguments, data_args: DataArguments, train_args: TrainArguments) -> dict:
    """Train, checkpoint, save the final model (+ tokenizer and image processor) to ``output_dir``; returns a summary."""
    method_class = METHODS[model_args.method]
    accelerator = Accelerator(
        cpu=torch.accelerator.current_accelerator() is None,  # so plain torchrun on CPU runs gloo (MULTI_CPU)
        mixed_precision=train_args.mixed_precision,
        log_with=None if train_args.report_to == "none" else train_args.report_to,
        project_dir=train_args.output_dir,
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=train_args.seed,
                                                  dispatch_batches=False),
        dynamo_plugin=TorchDynamoPlugin(backend=model_args.torch_compile_backend) if model_args.torch_compile else None,
    )
    set_seed(train_args.seed)
    if data_args.train_data is None:
        raise ValueError("give --train-data (or train_data in the YAML config)")

    tokenizer = load_tokenizer(model_args)
    model = build_model(model_args, method_class, tokenizer)
    method = method_class.from_arguments(model, model_args, data_args, train_args)
    processor = load_image_processor(model_args, model.config.vision_config.image_size)
    if model_args.gradient_checkpointing:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    if model_args.lora_r > 0:
        model = add_lora(model, model_args, method.lora_targets)
    else:
        method.freeze(model)

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
    streamed = isinstance(dataset, torch.utils.data.IterableDataset) or not hasattr(dataset, "__len__")
    method.check_columns(dataset.column_names or list(dataset.features or {}), data_args.train_data)
    max_length = model_args.max_length or model.config.text_config.max_position_embeddings
    dataset, collator = method.prepare_data(model, dataset, tokenizer, max_length, processor, accelerator.device)
    optimizer = build_optimizer(model, train_args.lr, train_args.weight_decay,
                                (train_args.adam_beta1, train_args.adam_beta2), train_args.adam_eps)
    global_batch = train_args.per_device_batch_size * train_args.accum_freq * accelerator.num_processes
    if stream is not None:
        warning = split_warning(len(stream.shards), accelerator.num_processes, data_args.num_workers)
        if warning and accelerator.is_main_process:
            warnings.warn(warning, stacklevel=2)
        batches = StreamedBatches(stream, collator, train_args.per_device_batch_size * train_args.accum_freq,
                                  data_args.num_workers, accelerator.process_index, accelerator.num_processes,
                                  accelerator.device)
        model, optimizer = accelerator.prepare(model, optimizer)
    else:
        loader = torch.utils.data.DataLoader(
            dataset, batch_size=train_args.per_device_batch_size * train_args.accum_freq, shuffle=not streamed,
            drop_last=True, num_workers=data_args.num_workers, collate_fn=collator,
        )
        model, optimizer, loader = accelerator.prepare(model, optimizer, loader)

    if stream is not None and data_args.train_num_samples:
        steps_per_epoch = data_args.train_num_samples // global_batch
        if steps_per_epoch == 0:
            raise ValueError(f"--train-num-samples {data_args.train_num_samples} is less than one global batch "
                             f"({global_batch})")
    elif streamed:
        if train_args.max_steps is None:
            raise ValueError("streamed data has no length: give --max-steps (or, for shards, --train-num-samples)")
        steps_per_epoch = None
    else:
        steps_per_epoch = len(loader)
    if steps_per_epoch == 0:
        raise ValueError(f"{data_args.train_data} has fewer rows than one global batch")
    total_steps = train_args.max_steps or math.ceil(train_args.num_epochs * steps_per_epoch)
    warmup_steps = train_args.warmup_steps + round(train_args.warmup_epochs * (steps_per_epoch or 0))
    unwrapped = accelerator.unwrap_model(model)

    state = {"step": 0, "bad_steps": 0, "skipped_samples": 0}
    if train_args.resume:
        state.update(resume_state(accelerator, train_args.output_dir))
    data_state = state.pop("data_state", None)
    if stream is not None and state["step"] > 0:
        if data_state is None:
            raise ValueError(f"the checkpoint of step {state['step']} in {train_args.output_dir} has no data state "
                             f"for process {accelerator.process_index}: it was not written by this streamed run")
        batches.load_state_dict(data_state)
    if accelerator.is_main_process:
        os.makedirs(train_args.output_dir, exist_ok=True)
    if accelerator.log_with:
        accelerator.init_trackers("langclip", config=tracker_config(model_args, data_args, train_args))

    def all_finite(ok: bool) -> bool:
        return bool(accelerator.gather(torch.tensor([ok], device=accelerator.device)).all())

    progress = tqdm(total=total_steps, initial=state["step"], disable=not accelerator.is_local_main_process,
                    desc=f"train {model_args.method}", unit="step")
    loss = None
    epoch = state["step"] // steps_per_epoch if steps_per_epoch else 0
    while state["step"] < total_steps:
        if stream is not None:
            epoch_end = (epoch + 1) * steps_per_epoch if steps_per_epoch else total_steps
            epoch_loader = batches.take(min(epoch_end, total_steps) - state["step"])
        else:
            collator.epoch = epoch
            loader.set_epoch(epoch)
            skip = state["step"] - epoch * steps_per_epoch if steps_per_epoch else 0
            epoch_loader = accelerator.skip_first_batches(loader, skip) if skip else loader
        for batch in epoch_loader:
            started = time.perf_counter()
            batch = equalize_batch(accelerator, batch, state)
            set_learning_rate(optimizer, learning_rate(state["step"], total_steps, train_args.lr, warmup_steps,
                                                       train_args.lr_start, train_args.lr_end))
            model.train()
            loss = forward_backward(model, batch, method, lambda: unwrapped.logit_scale.exp(), train_args.accum_freq,
                                    accelerator.backward, lambda: accelerator.no_sync(model), all_finite)
            grad_norm = None
            if loss is not None:
                grad_norm = accelerator.clip_grad_norm_(model.parameters(), train_args.max_grad_norm or math.inf)
            if loss is not None and torch.isfinite(grad_norm):
                optimizer.step()
            else:
                state["bad_steps"] += 1
                accelerator.print(f"step {state['step']}: non-finite features or gradients, step skipped "
                                  f"({state['bad_steps']}/{train_args.max_bad_steps})")
                if state["bad_steps"] >= train_args.max_bad_steps:
                    raise RuntimeError(f"{state['bad_steps']} steps with non-finite loss or gradients; aborting")
            optimizer.zero_grad(set_to_none=True)
            unwrapped.clamp_logit_scale_()
            state["step"] += 1
            log_step(accelerator, train_args, state, loss, optimizer, unwrapped, progress,
                     global_batch / (time.perf_counter() - started))
            if train_args.save_steps and state["step"] % train_args.save_steps == 0 and state["step"] < total_steps:
                save_checkpoint(accelerator, train_args.output_dir, state, train_args.save_total_limit,
                                None if stream is None else batches.state_dict())
            if state["step"] >= total_steps:
                break
        epoch += 1
    progress.close()
    summary = {**state, "loss": None if loss is None else accelerator.reduce(loss, "mean").item()}
    save_final(accelerator, model, tokenizer, processor, model_args, train_args, state,
               training={k: v for a in (model_args, data_args, train_args) for k, v in asdict(a).items()})
    if data_args.skip_bad_samples:
        accelerator.print(f"skipped {state['skipped_samples']} unreadable samples")
    accelerator.end_training()
    return summary


def equalize_batch(accelerator: Accelerator, batch: dict, state: dict) -> dict:
    """Count skipped samples; with several processes, cut every local batch to the smallest (the gather needs equal sizes)."""
    skipped = batch.pop("num_skipped", None)
    if skipped is None:
        return batch
    state["skipped_samples"] += int(accelerator.gather(skipped.reshape(1).to(accelerator.device)).sum())
    sizes = accelerator.gather(torch.tensor([batch["pixel_values"].shape[0]], device=accelerator.device))
    return {key: value[: int(sizes.min())] for key, value in batch.items()}


def log_step(accelerator, train_args, state, loss, optimizer, unwrapped, progress, samples_per_second) -> None:
    """Append the step to ``train_log.jsonl``, update the bar, and send metrics to the trackers."""
    global_loss = None if loss is None else accelerator.reduce(loss, "mean").item()
    record = {"step": state["step"], "loss": global_loss, "lr": optimizer.param_groups[0]["lr"],
              "logit_scale": unwrapped.logit_scale.exp().item()}
    if accelerator.is_main_process:
        with open(os.path.join(train_args.output_dir, LOG_FILE), "a") as handle:
            handle.write(json.dumps(record) + "\n")
    progress.update(1)
    progress.set_postfix(loss=f"{global_loss:.4f}" if global_loss is not None else "skipped",
                         samples_per_s=f"{samples_per_second:.1f}")
    if accelerator.log_with and state["step"] % train_args.logging_steps == 0:
        accelerator.log({k: v for k, v in record.items() if k != "step" and v is not None}
                        | {"samples_per_s": samples_per_second}, step=state["step"])


def train_in_process(values: dict) -> dict:
    """`train` on a flat mapping of argument names to values (a YAML config's form), then reset accelerate's
    process state so that another run can follow in the same process (the demo, notebooks)."""
    from accelerate.state import AcceleratorState

    try:
        return train(*arguments_from_dict(values))
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)


def save_final(accelerator, model, tokenizer, processor, model_args, train_args, state, training: dict) -> None:
    """`save_pretrained` of the model (LoRA merged), tokenizer and image processor, and a model card
    (README.md) that lists ``training``; with --push-to-hub, push the folder without its checkpoints."""
    from ..hub_cards.cards import model_card
    from ..hub_cards.push import push_model

    accelerator.wait_for_everyone()
    if not accelerator.is_main_process:
        return
    model = accelerator.unwrap_model(model)
    if model_args.lora_r > 0:
        model = model.merge_and_unload()
    output_dir = train_args.output_dir
    model.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    processor.save_pretrained(output_dir)
    with open(os.path.join(output_dir, STATE_FILE), "w") as handle:
        json.dump(state, handle)
    name = train_args.hub_model_id or os.path.basename(os.path.abspath(output_dir))
    shown_elsewhere = ("method", "model_config", "output_dir", "push_to_hub", "hub_model_id")
    training = {k: v for k, v in training.items() if v is not None and k not in shown_elsewhere}
    start = model_args.model_name_or_path
    hub_start = start if start and not os.path.isdir(start) else None  # the card's base_model is a Hub id
    card = model_card(model.config.to_dict(), name, base_model=hub_start, training=training, method=model_args.method)
    card.save(os.path.join(output_dir, "README.md"))
    if train_args.push_to_hub:
        url = push_model(output_dir, train_args.hub_model_id, ignore_patterns=[
            f"{CHECKPOINT_PREFIX}*", f"tmp-{CHECKPOINT_PREFIX}*", "runs/*"])
        print(f"pushed {output_dir} to {url}")


def main(args) -> int:
    """`langclip train`: the same flags and YAML config as ``train.py``."""
    summary = train(*arguments_from_namespace(args))
    print(json.dumps({"final_step": summary["step"], "loss": summary["loss"],
                      "skipped_samples": summary["skipped_samples"], "bad_steps": summary["bad_steps"]}))
    return 0


__all__ = ["METHODS", "Method", "add_arguments", "forward_backward", "main", "train"]

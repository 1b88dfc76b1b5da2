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
import multiprocessing
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict

import torch
from accelerate import Accelerator, DataLoaderConfiguration
from accelerate.utils import TorchDynamoPlugin, set_seed
from tqdm.auto import tqdm
from transformers import AutoTokenizer, CLIPImageProcessor

from ..modeling import LaCLIPModel
from ..modeling.losses import without_finite_check
from ..processing.loading import load_image_text_dataset
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
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


def split_batch(batch: dict, parts: int) -> list[dict]:
    """``parts`` micro-batches of (about) equal size along dim 0."""
    chunks = {key: value.chunk(parts) for key, value in batch.items()}
    return [{key: value[i] for key, value in chunks.items()} for i in range(len(next(iter(chunks.values()))))]


def finite(tensors) -> torch.Tensor:
    """Device bool: every element of every tensor is finite (no host sync)."""
    return torch.stack([torch.isfinite(t).all() for t in tensors]).all()


def forward_backward(
    model,
    batch: dict,
    method: Method,
    logit_scale: Callable[[], torch.Tensor],
    accum_freq: int = 1,
    backward: Callable = torch.Tensor.backward,
    no_sync: Callable = lambda: contextlib.nullcontext(),
    all_finite: Callable[[torch.Tensor], bool] | None = bool,
) -> torch.Tensor | None:
    """Gradients of the loss of the whole ``batch``, in ``accum_freq`` micro-batches; returns the loss or None.

    With accum_freq > 1 (OpenCLIP's accum-freq): pass 1 computes every micro-batch's
    features without gradient; pass 2, for each micro-batch j, recomputes its features with
    gradient, substitutes them into the cached ones and back-propagates the loss of the
    whole batch. The sum over j of these gradients is the full-batch gradient; the logit
    scale takes its gradient in the last micro-batch only. Returns None, with no backward,
    when any process's features are not finite (``all_finite`` of a device bool agrees across
    processes); ``all_finite=None`` skips that check and its host sync (the trainer guards
    the update on the loss instead).
    """
    micro_batches = split_batch(batch, accum_freq)
    if len(micro_batches) == 1:
        features = method.features(model, batch)
        if all_finite is not None and not all_finite(finite(features)):
            return None
        loss = method.loss(*features, logit_scale())
        backward(loss)
        return loss.detach()
    with torch.no_grad():
        cached = [method.features(model, micro) for micro in micro_batches]
    if all_finite is not None and not all_finite(finite([f for features in cached for f in features])):
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


def checkpoints(output_dir: str) -> list[str]:
    """Finished checkpoint folders of ``output_dir``, oldest first."""
    if not os.path.isdir(output_dir):
        return []
    names = [n for n in os.listdir(output_dir) if n.startswith(CHECKPOINT_PREFIX) and n[len(CHECKPOINT_PREFIX):].isdigit()]
    return [os.path.join(output_dir, n) for n in sorted(names, key=lambda n: int(n[len(CHECKPOINT_PREFIX):]))]


def save_checkpoint(accelerator: Accelerator, output_dir: str, state: dict, keep: int) -> None:
    """`accelerator.save_state` into a temporary folder, renamed when complete; keeps the last ``keep``."""
    final = os.path.join(output_dir, f"{CHECKPOINT_PREFIX}{state['step']}")
    temporary = os.path.join(output_dir, f"tmp-{CHECKPOINT_PREFIX}{state['step']}")
    if accelerator.is_main_process:
        shutil.rmtree(temporary, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(temporary)
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
    """Load the latest checkpoint and trim the loss log to its step; {} when there is none."""
    found = checkpoints(output_dir)
    if not found:
        accelerator.print(f"--resume: no checkpoint in {output_dir}, starting from scratch")
        return {}
    accelerator.load_state(found[-1])
    with open(os.path.join(found[-1], STATE_FILE)) as handle:
        state = json.load(handle)
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
    collate = SharedEpochCollator(collator)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=train_args.per_device_batch_size * train_args.accum_freq, shuffle=not streamed,
        drop_last=True, collate_fn=collate, **loader_kwargs(data_args.num_workers, accelerator.device),
    )
    optimizer = build_optimizer(model, train_args.lr, train_args.weight_decay,
                                (train_args.adam_beta1, train_args.adam_beta2), train_args.adam_eps,
                                fused=train_args.fused_optimizer, device=accelerator.device)
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)

    if streamed and train_args.max_steps is None:
        raise ValueError("streamed data has no length: give --max-steps")
    steps_per_epoch = None if streamed else len(loader)
    if steps_per_epoch == 0:
        raise ValueError(f"{data_args.train_data} has fewer rows than one global batch")
    total_steps = train_args.max_steps or math.ceil(train_args.num_epochs * steps_per_epoch)
    warmup_steps = train_args.warmup_steps + round(train_args.warmup_epochs * (steps_per_epoch or 0))
    unwrapped = accelerator.unwrap_model(model)

    state = {"step": 0, "bad_steps": 0, "skipped_samples": 0}
    if train_args.resume:
        state.update(resume_state(accelerator, train_args.output_dir))
    if accelerator.is_main_process:
        os.makedirs(train_args.output_dir, exist_ok=True)
    if accelerator.log_with:
        accelerator.init_trackers("langclip", config=tracker_config(model_args, data_args, train_args))

    global_batch = train_args.per_device_batch_size * train_args.accum_freq * accelerator.num_processes
    progress = tqdm(total=total_steps, initial=state["step"], disable=not accelerator.is_local_main_process,
                    desc=f"train {model_args.method}", unit="step")
    log = StepLog(accelerator, train_args, unwrapped, progress, global_batch)
    epoch = state["step"] // steps_per_epoch if steps_per_epoch else 0
    model.train()
    while state["step"] < total_steps:
        collate.set_epoch(epoch)
        loader.set_epoch(epoch)
        skip = state["step"] - epoch * steps_per_epoch if steps_per_epoch else 0
        epoch_loader = accelerator.skip_first_batches(loader, skip) if skip else loader
        waiting = time.perf_counter()
        for batch in epoch_loader:
            data_wait = time.perf_counter() - waiting
            batch = equalize_batch(accelerator, batch, state)
            lr = learning_rate(state["step"], total_steps, train_args.lr, warmup_steps, train_args.lr_start,
                               train_args.lr_end)
            set_learning_rate(optimizer, lr)
            step = state["step"] + 1
            logging = step % train_args.logging_steps == 0 or step == total_steps
            saving = bool(train_args.save_steps) and step % train_args.save_steps == 0 and step < total_steps
            loss, bad, grad_norm = train_step(accelerator, model, unwrapped, optimizer, method, batch,
                                              train_args.accum_freq, train_args.max_grad_norm, with_norm=logging)
            state["step"] = step
            log.add(step, loss, bad, lr, data_wait, grad_norm)
            if logging or saving:
                log.flush(state)
            if saving:
                save_checkpoint(accelerator, train_args.output_dir, state, train_args.save_total_limit)
            if state["step"] >= total_steps:
                break
            waiting = time.perf_counter()
        epoch += 1
    progress.close()
    summary = {**state, "loss": log.last_loss}
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


def train_step(accelerator: Accelerator, model, unwrapped, optimizer, method: Method, batch: dict, accum_freq: int = 1,
               max_grad_norm: float | None = None, with_norm: bool = False):
    """One optimizer step on ``batch`` with no host sync: gradients (`forward_backward`), the gradient norm
    (and clipping to ``max_grad_norm``) only when clipping or ``with_norm``, the update unless the loss or norm
    is not finite (`step_unless`), the logit-scale clamp. Returns (loss, bad, grad_norm or None), on the device."""
    with without_finite_check():
        loss = forward_backward(model, batch, method, lambda: unwrapped.logit_scale.exp(), accum_freq,
                                accelerator.backward, lambda: accelerator.no_sync(model), all_finite=None)
    grad_norm = None
    if max_grad_norm or with_norm:
        grad_norm = accelerator.clip_grad_norm_(model.parameters(), max_grad_norm or math.inf)
    bad = not_finite(accelerator, loss, grad_norm)
    step_unless(optimizer, bad, accelerator.scaler)
    optimizer.zero_grad(set_to_none=True)
    unwrapped.clamp_logit_scale_()
    return loss, bad, grad_norm


def not_finite(accelerator: Accelerator, loss: torch.Tensor, grad_norm: torch.Tensor | None) -> torch.Tensor:
    """Device bool: the loss, or the gradient norm where computed, is not finite on some process (no host sync;
    with several processes a one-element all-reduce, so that all skip the same steps)."""
    bad = ~torch.isfinite(loss)
    if grad_norm is not None:
        bad = bad | ~torch.isfinite(grad_norm)
    if accelerator.num_processes > 1:
        bad = accelerator.reduce(bad.float(), "sum") > 0
    return bad


def step_unless(optimizer, bad: torch.Tensor, scaler) -> None:
    """``optimizer.step()`` unless ``bad``: a fused AdamW skips on the device through ``found_inf`` (no host sync);
    under fp16 the GradScaler skips non-finite gradients itself; any other optimizer reads ``bad`` (a host sync)."""
    inner = optimizer.optimizer
    if scaler is not None:
        optimizer.step()
    elif getattr(inner, "_step_supports_amp_scaling", False):
        inner.found_inf = bad.float()
        optimizer.step()
        del inner.found_inf
    elif not bad.item():
        optimizer.step()


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
        norm = loss.new_zeros(()) if grad_norm is None else grad_norm.detach().float().reshape(())
        self.device.append(torch.stack([loss.float(), bad.float(), self.unwrapped.logit_scale.detach().exp().float(),
                                        norm]))
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
            records.append({"step": step, "loss": None if bad else loss, "lr": lr, "logit_scale": logit_scale,
                            "data_wait_s": data_wait} | ({"grad_norm": norm if math.isfinite(norm) else None}
                                                         if has_norm else {}))
        self.write(records)
        last = records[-1]
        self.last_loss = last["loss"]
        samples_per_second = steps * self.global_batch / seconds
        data_wait = sum(r["data_wait_s"] for r in records) / steps
        self.progress.set_postfix(loss="skipped" if last["loss"] is None else f"{last['loss']:.4f}",
                                  samples_per_s=f"{samples_per_second:.1f}", data_wait=f"{data_wait / seconds * steps:.0%}")
        if self.accelerator.log_with:
            self.accelerator.log({k: v for k, v in last.items() if k != "step" and v is not None}
                                 | {"samples_per_s": samples_per_second, "data_wait_s": data_wait}, step=last["step"])
        self.since = time.perf_counter()

    def write(self, records: list[dict]) -> None:
        if self.accelerator.is_main_process and records:
            with open(os.path.join(self.args.output_dir, LOG_FILE), "a") as handle:
                handle.writelines(json.dumps(record) + "\n" for record in records)


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

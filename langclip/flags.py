"""Which flags of `langclip train` and `langclip eval` apply to what: the one table, and its check.

A flag is *given* when its value differs from its default (on the command line or in the YAML config). Given where
it does not apply, it is a `ConfigError` naming the flag, what it applies to and what this run is instead; where
harmless (a speed knob, a column name, a push option of a run that pushes nothing), a one-line warning on stderr.
Each command describes its run as *facts* (the flags' values and what they resolve to: the objective, the kind of
``--train-data``, the eval tasks) and calls `check_flags`. A flag in no table applies to every run of its command;
``tests/test_flag_applicability.py`` keeps the list of those, so a new flag is placed on purpose.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import MISSING, dataclass, fields
from types import SimpleNamespace

from .errors import ConfigError


@dataclass(frozen=True)
class Needs:
    """When a flag applies: ``test`` on the run's facts; ``what`` says when, ``found`` what this run is instead."""

    test: Callable[[SimpleNamespace], bool]
    what: str
    found: Callable[[SimpleNamespace], str]


ERROR, WARNING = "error", "warning"


def objective_is(*names: str) -> Callable[[SimpleNamespace], bool]:
    return lambda run: run.objective in names


def _objective(run) -> str:
    return f"this run's objective is {run.objective} (--method {run.method})"


INPUTS = {"csv": "a LaCLIP CSV", "shards": "tar shards", "dataset": "a save_to_disk Dataset folder (one split)",
          "dataset-dict": "a save_to_disk DatasetDict folder", "load-dataset": "a Hub dataset or data folder"}
"""The kinds of ``--train-data`` (`langclip.processing.loading.input_kind`)."""


def input_is(*kinds: str) -> Callable[[SimpleNamespace], bool]:
    """The input is one of ``kinds``, or not known yet (no --train-data, which is refused later)."""
    return lambda run: run.input is None or run.input in kinds


def _input(run) -> str:
    return f"--train-data {run.train_data} is {INPUTS[run.input]}"


def _tasks(run) -> str:
    return f"this run's tasks are {', '.join(sorted(run.tasks)) or 'none'}"


def _mode(run) -> str:
    return {"suite": f"this run is --suite {run.suite}", "dataset": f"this run is --dataset {run.dataset}",
            "compare": "--compare runs no model"}[run.mode]


SCRATCH = Needs(lambda run: not run.model_name_or_path, "to a model trained from scratch",
                lambda run: f"--model-name-or-path {run.model_name_or_path} loads a model with its own config")
CONTRASTIVE = Needs(objective_is("clip", "multi-positive", "clips"), "to the clip, multi-positive and clips "
                    "objectives", _objective)
IMAGE_TRAINS = Needs(CONTRASTIVE.test, "to an objective that trains the image tower (not difference: PC-CLIP's "
                     "image tower is frozen)", _objective)
MULTI_POSITIVE = Needs(objective_is("multi-positive"), "to --objective multi-positive (--method laclip-mt)",
                       _objective)
CLIPS = Needs(objective_is("clips"), "to --objective clips (--method clips)", _objective)
DIFFERENCE = Needs(objective_is("difference"), "to --objective difference (--method pcclip)", _objective)
REWRITES = Needs(lambda run: run.text_sampling == "rewrites", "with --text-sampling rewrites",
                 lambda run: f"this run's text sampling is {run.text_sampling} (--method {run.method})")
CAPTIONS = Needs(lambda run: run.objective != "difference" or bool(run.clip_loss_weight),
                 "to a method that reads captions (--objective difference only with --clip-loss-weight)", _objective)
LORA = Needs(lambda run: run.train_parts == "lora", "to --train-parts lora (--lora-r > 0)",
             lambda run: f"this run trains {run.train_parts}")
NOT_LORA = Needs(lambda run: run.train_parts != "lora", "to --train-parts all or text (peft already freezes every "
                 "base weight of --train-parts lora)", lambda run: "this run trains lora")
LOCK_IMAGE = Needs(lambda run: run.lock_image, "with --lock-image", lambda run: "the image tower is not locked")
LOCK_TEXT = Needs(lambda run: run.lock_text, "with --lock-text", lambda run: "the text tower is not locked")
LOCKED = Needs(lambda run: run.lock_image or run.lock_text, "with --lock-image or --lock-text",
               lambda run: "no tower is locked")
COMPILED = Needs(lambda run: run.torch_compile, "with --torch-compile", lambda run: "this run is not compiled")
CSV = Needs(input_is("csv"), "to a LaCLIP .csv --train-data", _input)
SPLITS = Needs(input_is("dataset-dict", "load-dataset"), "to data with splits (a Hub dataset, a data folder, a "
               "DatasetDict folder)", _input)
STREAMABLE = Needs(input_is("load-dataset"), "to a Hub dataset or a data folder (a save_to_disk folder or a CSV is "
                   "read from disk as it is used, shards always stream)", _input)
SHARDS = Needs(input_is("shards"), "to .tar shards", _input)
STREAMED = Needs(lambda run: input_is("shards")(run) or run.streaming and STREAMABLE.test(run),
                 "to shards and --streaming (other data is shuffled whole every epoch)", _input)
RESUME = Needs(lambda run: run.resume, "with --resume", lambda run: "this is a fresh run")
EPOCHS = Needs(lambda run: run.max_steps is None, "without --max-steps",
               lambda run: f"--max-steps {run.max_steps} sets the length")
EVAL_SUITE = Needs(lambda run: run.eval_suite, "with --eval-suite", lambda run: "this run evaluates nothing")
PUSH = Needs(lambda run: run.push_to_hub, "with --push-to-hub", lambda run: "this run pushes nothing")

TRAIN_FLAGS: dict[str, tuple[Needs, str]] = {
    "model_config": (SCRATCH, ERROR),
    "num_texts": (MULTI_POSITIVE, ERROR),
    "contrastive_loss": (CONTRASTIVE, ERROR),
    "patch_dropout": (IMAGE_TRAINS, ERROR),
    "lora_alpha": (LORA, ERROR),
    "lora_dropout": (LORA, ERROR),
    "lora_target_modules": (LORA, ERROR),
    "lock_image": (NOT_LORA, ERROR),
    "lock_text": (NOT_LORA, ERROR),
    "lock_image_unlocked_groups": (LOCK_IMAGE, ERROR),
    "lock_text_unlocked_layers": (LOCK_TEXT, ERROR),
    "locked_norms_trainable": (LOCKED, ERROR),
    "torch_compile_backend": (COMPILED, WARNING),
    "augmented_files": (CSV, ERROR),
    "image_root": (CSV, WARNING),
    "split": (SPLITS, ERROR),
    "streaming": (STREAMABLE, WARNING),
    "train_num_samples": (SHARDS, ERROR),
    "dataset_resampled": (SHARDS, ERROR),
    "shuffle_buffer": (STREAMED, WARNING),
    "caption_column": (CAPTIONS, WARNING),
    "rewrites_column": (REWRITES, WARNING),
    "difference_data": (DIFFERENCE, ERROR),
    "precompute_image_embeddings": (DIFFERENCE, WARNING),
    "clip_loss_weight": (DIFFERENCE, ERROR),
    "synthetic_caption_column": (CLIPS, WARNING),
    "partial_caption": (CLIPS, ERROR),
    "partial_tokens": (CLIPS, ERROR),
    "num_epochs": (EPOCHS, WARNING),
    "resume_ignore_mismatch": (RESUME, ERROR),
    "eval_steps": (EVAL_SUITE, WARNING),
    "private": (PUSH, WARNING),
    "revision": (PUSH, WARNING),
}
"""`langclip train`: field name -> (when it applies, error or warning)."""


def task_in(*tasks: str) -> Callable[[SimpleNamespace], bool]:
    return lambda run: bool(run.tasks & set(tasks))


def _single_task(*tasks: str) -> Needs:
    """A single-task flag (`--dataset`) that only ``tasks`` read; a suite takes these from its manifest."""
    return Needs(lambda run: run.mode == "dataset" and bool(run.tasks & set(tasks)),
                 f"to a single --dataset task {' or '.join(tasks)} (a suite's manifest sets it per dataset)",
                 lambda run: _mode(run) + ("" if run.mode != "dataset" else f", --task {run.task}"))


MODEL_RUN = Needs(lambda run: run.mode != "compare", "to a run that evaluates a model", _mode)
SUITE = Needs(lambda run: run.mode == "suite", "to --suite", _mode)
SINGLE = Needs(lambda run: run.mode == "dataset", "to a single --dataset task", _mode)
FEW_SHOT = Needs(task_in("few-shot"), "to the few-shot task", _tasks)
LINEAR_PROBE = Needs(task_in("linear-probe"), "to the linear-probe task", _tasks)
SEEDED = Needs(task_in("few-shot", "linear-probe"), "to the few-shot and linear-probe tasks", _tasks)
EVAL_PUSH = Needs(lambda run: run.push_to_hub and run.mode != "compare", "with --push-to-hub (of --suite or "
                  "--dataset results)", lambda run: "this run pushes nothing")
ALPHA = Needs(lambda run: run.mode == "dataset" and run.task == "zero-shot" and bool(run.comparative),
              "with --comparative", lambda run: "this run has no comparative prompting")
HELD_OUT = Needs(lambda run: run.mode == "dataset" and run.task == "linear-probe" and not run.validation_split,
                 "to a single --dataset linear-probe task without --validation-split",
                 lambda run: _mode(run) + (f", --validation-split {run.validation_split} chooses C"
                                           if run.validation_split else ""))

EVAL_FLAGS: dict[str, tuple[Needs, str]] = {
    "model": (MODEL_RUN, WARNING),
    "cache_dir": (MODEL_RUN, WARNING),
    "batch_size": (MODEL_RUN, WARNING),
    "num_workers": (MODEL_RUN, WARNING),
    "dtype": (MODEL_RUN, WARNING),
    "streaming": (MODEL_RUN, WARNING),
    "device": (MODEL_RUN, WARNING),
    "push_to_hub": (MODEL_RUN, ERROR),
    "revision": (EVAL_PUSH, WARNING),
    "dataset_path": (SUITE, ERROR),
    "datasets": (SUITE, ERROR),
    "output": (SINGLE, ERROR),
    "dataset_config": (SINGLE, ERROR),
    "dataset_name": (SINGLE, ERROR),
    "split": (SINGLE, ERROR),
    "task": (SINGLE, ERROR),
    "image_column": (SINGLE, ERROR),
    "metric": (_single_task("zero-shot"), ERROR),
    "templates": (_single_task("zero-shot"), ERROR),
    "comparative": (_single_task("zero-shot"), ERROR),
    "alpha": (ALPHA, ERROR),
    "label_column": (_single_task("zero-shot", "few-shot", "linear-probe"), ERROR),
    "class_names": (_single_task("zero-shot", "few-shot", "linear-probe"), ERROR),
    "caption_column": (_single_task("retrieval"), ERROR),
    "caption_separator": (_single_task("retrieval"), ERROR),
    "id_column": (_single_task("difference-classification"), ERROR),
    "differences": (_single_task("difference-classification"), ERROR),
    "train_split": (_single_task("linear-probe"), ERROR),
    "validation_split": (_single_task("linear-probe"), ERROR),
    "validation_fraction": (HELD_OUT, ERROR),
    "probe_cs": (LINEAR_PROBE, ERROR),
    "n_way": (FEW_SHOT, WARNING),
    "n_shot": (FEW_SHOT, WARNING),
    "n_query": (FEW_SHOT, WARNING),
    "episodes": (FEW_SHOT, WARNING),
    "seed": (SEEDED, WARNING),
}
"""`langclip eval`: argument dest -> (when it applies, error or warning)."""


def flag_name(name: str) -> str:
    return "--" + name.replace("_", "-")


def given_fields(*arguments) -> set[str]:
    """The fields of the dataclass instances ``arguments`` whose values differ from their defaults."""
    def default(spec):
        return spec.default if spec.default is not MISSING else spec.default_factory()

    return {spec.name for instance in arguments for spec in fields(instance)
            if getattr(instance, spec.name) != default(spec)}


def check_flags(table: dict[str, tuple[Needs, str]], given, run: SimpleNamespace) -> None:
    """A `ConfigError` for the first of ``given`` (flag names) that does not apply to ``run`` and that ``table``
    marks an error; else one ``warning:`` line on stderr (main process only) for each such harmless flag."""
    misplaced = [(flag_name(name), *table[name]) for name in sorted(given)
                 if name in table and not table[name][0].test(run)]
    for flag, needs, severity in sorted(misplaced, key=lambda row: row[2] != ERROR):
        message = f"{flag} only applies {needs.what}; {needs.found(run)}"
        if severity == ERROR:
            raise ConfigError(f"{message}: leave {flag} out, or change the run it belongs to")
        if os.environ.get("RANK", "0") == "0":
            print(f"warning: {message}: {flag} is ignored", file=sys.stderr)

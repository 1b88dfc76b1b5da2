"""Every train and eval flag, given where it does not apply, is an error or a warning naming it, never silence.

`langclip.flags` holds the table; `MISPLACED` gives, for each of its rows, a run where that flag does not apply. Each
runs the CLI in-process: an error row exits 1 with one ``error: --flag only applies ...`` line and no traceback; a
warning row prints ``warning: --flag ...`` (its run then stops at a later error, so nothing trains). The walk tests
check that every flag of the two parsers is in a table or in `ALWAYS` (applies to every run of its command).
"""

from __future__ import annotations

import argparse
from dataclasses import fields

import pytest
from accelerate.state import AcceleratorState

from langclip.cli import main as cli
from langclip.evaluation.arguments import add_arguments as add_eval_arguments
from langclip.flags import ERROR, EVAL_FLAGS, TRAIN_FLAGS, flag_name
from langclip.training.arguments import DATACLASSES
from train_utils import as_flags, make_training_files

ALWAYS = {
    "train": {"config", "method", "text_sampling", "objective", "train_parts", "model_name_or_path",
              "tokenizer_name_or_path", "max_length", "gradient_checkpointing", "torch_compile", "lora_r",
              "train_data", "image_column", "skip_bad_samples", "num_workers", "output_dir", "seed",
              "per_device_batch_size", "accum_freq", "max_steps", "lr", "lr_start", "lr_end", "lr_decay_per_epoch",
              "warmup_steps", "warmup_epochs", "weight_decay", "adam_beta1", "adam_beta2", "adam_eps",
              "max_grad_norm", "mixed_precision", "max_bad_steps", "fused_optimizer", "save_steps",
              "save_total_limit", "resume", "overwrite_output_dir", "logging_steps", "report_to", "eval_suite",
              "push_to_hub", "hub_model_id"},
    "eval": {"help", "suite", "dataset", "compare", "output_dir"},
}
"""Flags that apply to every run of their command."""

PCCLIP = {"method": "pcclip"}
LORA = {"lora_r": 4}
MISPLACED = {
    "train": {  # base: --method clip on a save_to_disk Dataset folder, --max-steps 1
        "model_config": {"model_name_or_path": "some/checkpoint"},
        "num_texts": {"num_texts": 2},
        "contrastive_loss": {**PCCLIP, "contrastive_loss": "sigmoid"},
        "patch_dropout": {**PCCLIP, "patch_dropout": 0.5},
        "lora_alpha": {"lora_alpha": 8},
        "lora_dropout": {"lora_dropout": 0.1},
        "lora_target_modules": {"lora_target_modules": ["k_proj"]},
        "lock_image": {**LORA, "lock_image": True},
        "lock_text": {**LORA, "lock_text": True},
        "lock_image_unlocked_groups": {"lock_image_unlocked_groups": 1},
        "lock_text_unlocked_layers": {"lock_text_unlocked_layers": 1},
        "locked_norms_trainable": {"locked_norms_trainable": True},
        "torch_compile_backend": {"torch_compile_backend": "eager"},
        "augmented_files": {"augmented_files": ["rewrites.txt"]},
        "image_root": {"image_root": "images"},
        "split": {"split": "validation"},
        "streaming": {"streaming": True},
        "train_num_samples": {"train_num_samples": 100},
        "dataset_resampled": {"dataset_resampled": True},
        "shuffle_buffer": {"shuffle_buffer": 10},
        "caption_column": {**PCCLIP, "caption_column": "text"},
        "rewrites_column": {"rewrites_column": "texts"},
        "difference_data": {"difference_data": "differences.jsonl"},
        "precompute_image_embeddings": {"precompute_image_embeddings": True},
        "clip_loss_weight": {"clip_loss_weight": 0.5},
        "synthetic_caption_column": {"synthetic_caption_column": "long"},
        "partial_caption": {"partial_caption": "block"},
        "partial_tokens": {"partial_tokens": 8},
        "num_epochs": {"num_epochs": 2},
        "resume_ignore_mismatch": {"resume_ignore_mismatch": True},
        "eval_steps": {"eval_steps": 5},
        "private": {"private": True},
        "revision": {"revision": "dev"},
    },
    "eval": {  # argv after `langclip eval`
        **{name: ["--compare", "runs", f"--{name.replace('_', '-')}", value] for name, value in (
            ("model", "m"), ("cache_dir", "cache"), ("batch_size", "8"), ("num_workers", "2"), ("dtype", "float16"),
            ("device", "cpu"), ("push_to_hub", "me/model"), ("output", "out.json"), ("dataset_config", "c"),
            ("dataset_name", "n"), ("split", "validation"), ("task", "retrieval"), ("image_column", "png"))},
        "streaming": ["--compare", "runs", "--streaming"],
        "revision": ["--dataset", "data", "--revision", "dev"],
        "dataset_path": ["--dataset", "data", "--dataset-path", "cifar10=folder"],
        "datasets": ["--dataset", "data", "--datasets", "cifar10"],
        **{name: ["--dataset", "data", "--task", "retrieval", f"--{name.replace('_', '-')}", value]
           for name, value in (("metric", "mean_per_class"), ("templates", "simple"), ("comparative", "diffs.csv"),
                               ("label_column", "cls"), ("class_names", "a,b"))},
        "alpha": ["--dataset", "data", "--alpha", "0.5"],
        **{name: ["--dataset", "data", f"--{name.replace('_', '-')}", value] for name, value in (
            ("caption_column", "captions"), ("caption_separator", ";"), ("id_column", "key"),
            ("differences", "d.jsonl"), ("train_split", "fit"), ("validation_split", "val"), ("probe_cs", "1.0"),
            ("n_way", "3"), ("n_shot", "1"), ("n_query", "2"), ("episodes", "10"), ("seed", "1"))},
        "validation_fraction": ["--dataset", "data", "--task", "linear-probe", "--validation-split", "val",
                                "--validation-fraction", "0.5"],
    },
}
TABLES = {"train": TRAIN_FLAGS, "eval": EVAL_FLAGS}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("flags")
    return root, make_training_files(root, rows=8)


def train_argv(root, files, overrides: dict, severity: str) -> list[str]:
    values = {**files, "method": "clip", "max_steps": 1, "output_dir": str(root / "out"), **overrides}
    if severity != ERROR:  # stop the run at validate_run ("give --model-name-or-path or --model-config")
        values.pop("model_config")
    return ["train", *as_flags(values)]


ROWS = [(command, name) for command, table in TABLES.items() for name in table]


@pytest.mark.parametrize("command, name", ROWS, ids=[f"{c}-{n}" for c, n in ROWS])
def test_a_misplaced_flag_is_an_error_or_a_warning(files, capsys, command, name):
    root, base = files
    severity = TABLES[command][name][1]
    if command == "train":
        argv = train_argv(root, base, MISPLACED["train"][name], severity)
    else:
        argv = ["eval", *MISPLACED["eval"][name]]
    try:
        rc = cli([str(arg) for arg in argv])
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)
    err = capsys.readouterr().err
    flag = flag_name(name)
    assert rc == 1 and "Traceback" not in err, err
    if severity == ERROR:
        assert f"error: {flag} only applies" in err, err
    else:
        assert f"warning: {flag} only applies" in err and f"{flag} is ignored" in err, err


@pytest.mark.parametrize("command", TABLES)
def test_every_misplaced_case_is_a_row_and_every_row_has_a_case(command):
    assert set(MISPLACED[command]) == set(TABLES[command])


def parser_flags(command: str) -> set[str]:
    if command == "train":
        return {"config"} | {spec.name for dtype in DATACLASSES for spec in fields(dtype)}
    parser = argparse.ArgumentParser()
    add_eval_arguments(parser)
    return {action.dest for action in parser._actions}


@pytest.mark.parametrize("command", TABLES)
def test_every_flag_is_in_the_table_or_always_applies(command):
    flags = parser_flags(command)
    unplaced = flags - set(TABLES[command]) - ALWAYS[command]
    assert not unplaced, f"langclip {command}: add {sorted(unplaced)} to langclip.flags or to ALWAYS"
    assert not set(TABLES[command]) & ALWAYS[command]
    assert set(TABLES[command]) | ALWAYS[command] <= flags, "the table or ALWAYS names a flag the parser lacks"


def test_a_flag_that_applies_is_silent(files, capsys):
    """The same flags where they apply raise nothing about applicability (the run stops at the missing model)."""
    root, base = files
    values = {**base, "method": "laclip-mt", "num_texts": 2, "lock_image": True, "lock_image_unlocked_groups": 1,
              "output_dir": str(root / "out"), "max_steps": 1}
    values.pop("model_config")
    assert cli(["train", *as_flags(values)]) == 1
    err = capsys.readouterr().err
    assert "only applies" not in err and "give --model-name-or-path or --model-config" in err, err

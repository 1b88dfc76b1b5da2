"""A checkpoint in the on-disk format of the trainer before its split into data/step/checkpoints/logging modules
(commit ef97aab) still loads and resumes: the file names and state keys below are frozen from a run of that code.

Each test writes one checkpoint, checks its layout against the frozen one, replaces its ``trainer_state.json`` with
a record written field by field in the old format (the accelerate files are accelerate's own), resumes with
``--resume`` and checks that the run continues from that step and keeps that record's run id and counts.
"""

import json
import os

import pytest
from accelerate.state import AcceleratorState
from test_streaming import make_shards
from train_utils import make_training_files, read_log

from langclip.training.trainer import train_in_process

# `ls checkpoint-1` of a run at ef97aab: accelerate's model, optimizer and RNG files, then langclip's state.
MAP_STYLE_FILES = ["model.safetensors", "optimizer.bin", "random_states_0.pkl", "trainer_state.json"]
STREAMED_FILES = ["data_state-0.json", *MAP_STYLE_FILES]
STATE_KEYS = ["bad_steps", "config", "run_id", "skipped", "skipped_batches", "skipped_samples", "step"]
SKIP_KEYS = ["bad_caption", "decode_error", "decompression_bomb", "truncated"]
DATA_STATE_KEYS = ["loader", "num_workers", "pass", "world_size"]
# The config keys --resume compares (RESUME_SETTINGS at ef97aab).
RESUME_KEYS = ("method", "text_sampling", "objective", "contrastive_loss", "train_parts", "model_name_or_path",
               "model_config", "lora_r", "per_device_batch_size", "accum_freq", "num_processes", "seed",
               "data_fingerprint")
OLD_RUN_ID = "0123456789abcdef0123456789abcdef"


@pytest.fixture(autouse=True)
def _fresh_accelerator():
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


def old_format_state(saved: dict, step: int) -> dict:
    """``trainer_state.json`` as the pre-split trainer wrote it, with the compared settings of ``saved``."""
    return {"step": step, "bad_steps": 0, "skipped_samples": 3,
            "skipped": {"decode_error": 1, "decompression_bomb": 0, "truncated": 2, "bad_caption": 0},
            "skipped_batches": 0, "run_id": OLD_RUN_ID,
            "config": {key: saved["config"][key] for key in RESUME_KEYS}}


def check_layout_then_resume(values: dict, files: list[str]) -> dict:
    output = values["output_dir"]
    assert train_in_process({**values, "max_steps": 1, "save_steps": 1})["step"] == 1
    checkpoint = os.path.join(output, "checkpoint-1")
    assert sorted(os.listdir(checkpoint)) == files
    with open(os.path.join(checkpoint, "trainer_state.json")) as handle:
        saved = json.load(handle)
    assert sorted(saved) == STATE_KEYS and sorted(saved["skipped"]) == SKIP_KEYS
    assert set(RESUME_KEYS) <= set(saved["config"])
    with open(os.path.join(checkpoint, "trainer_state.json"), "w") as handle:
        json.dump(old_format_state(saved, 1), handle)

    summary = train_in_process({**values, "max_steps": 2, "save_steps": 1, "resume": True})
    assert summary["step"] == 2 and summary["run_id"] == OLD_RUN_ID and summary["skipped_samples"] == 3
    assert summary["skipped"]["truncated"] == 2
    assert [record["step"] for record in read_log(os.path.join(output, "train_log.jsonl"))] == [1, 2]
    assert sorted(os.listdir(os.path.join(output, "checkpoint-2"))) == files
    return summary


def test_map_style_checkpoint_of_the_old_format_resumes(tmp_path):
    values = {**make_training_files(tmp_path, rows=8), "output_dir": str(tmp_path / "out"), "num_workers": 0}
    check_layout_then_resume(values, MAP_STYLE_FILES)


def test_streamed_checkpoint_of_the_old_format_resumes_with_its_data_state(tmp_path):
    files = make_training_files(tmp_path, rows=1)
    values = {**files, "train_data": str(make_shards(tmp_path / "shards", num_shards=2, per_shard=4)),
              "output_dir": str(tmp_path / "out"), "num_workers": 0}
    check_layout_then_resume(values, STREAMED_FILES)
    with open(tmp_path / "out" / "checkpoint-1" / "data_state-0.json") as handle:
        data_state = json.load(handle)
    assert sorted(data_state) == DATA_STATE_KEYS
    assert (data_state["pass"], data_state["world_size"], data_state["num_workers"]) == (0, 1, 0)

"""Streamed shards in real processes: a run killed after a checkpoint and resumed ends with bit-identical
weights; 2 CPU processes under plain `torchrun` (gloo) match 1 process with the same global batch.

Slow (a minute or more on 2 cores): ``python -m pytest -m slow tests/test_streaming_processes.py``.
"""

import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from conftest import free_port
from test_streaming import make_shards
from test_train_processes import ENV, ROOT, kill_at_checkpoint
from train_utils import TINY_MODEL_CONFIG, WORDS, as_flags, read_log

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    from langclip.testing import train_word_tokenizer

    folder = tmp_path_factory.mktemp("tokenizer")
    train_word_tokenizer([WORDS], max_length=16).save_pretrained(str(folder))
    return folder


def command(shards, tokenizer_dir, output_dir, **values):
    flags = {"train_data": str(shards), "tokenizer_name_or_path": str(tokenizer_dir), "model_config": TINY_MODEL_CONFIG,
             "report_to": "none", "output_dir": str(output_dir), **values}
    return [str(ROOT / "train.py"), *as_flags(flags)]


def assert_killed_run_resumes_bit_identically(data, tokenizer_dir, tmp_path, args: dict) -> None:
    """Train ``args`` (16 steps, a checkpoint every 4) on ``data`` to the end; train it again, kill it once
    checkpoint-8 is written (it holds the data state), resume it: the same losses and weights, bit for bit."""
    subprocess.run([sys.executable, *command(data, tokenizer_dir, tmp_path / "full", **args)], env=ENV, check=True,
                   capture_output=True, timeout=600)
    killed = tmp_path / "killed"
    kill_at_checkpoint([sys.executable, *command(data, tokenizer_dir, killed, **args)], killed, "checkpoint-8",
                       timeout=300)
    assert (killed / "checkpoint-8" / "data_state-0.json").exists()
    subprocess.run([sys.executable, *command(data, tokenizer_dir, killed, resume=True, **args)], env=ENV, check=True,
                   capture_output=True, timeout=600)
    full_log, resumed_log = read_log(tmp_path / "full" / "train_log.jsonl"), read_log(killed / "train_log.jsonl")
    assert [r["step"] for r in resumed_log] == list(range(1, 17))
    assert [r["loss"] for r in resumed_log] == [r["loss"] for r in full_log]
    full, resumed = load_file(str(tmp_path / "full" / "model.safetensors")), load_file(str(killed / "model.safetensors"))
    for name, weight in full.items():
        assert torch.equal(resumed[name], weight), name


def test_killed_streamed_run_resumes_to_bit_identical_weights(tmp_path, tokenizer_dir):
    shards = make_shards(tmp_path / "shards", num_shards=4, per_shard=6)
    # 2 workers x 2 shards x 6 samples: 6 batches of 4 a pass; checkpoints at 4 (in pass 0), 8 and 12 (in pass 1).
    assert_killed_run_resumes_bit_identically(shards, tokenizer_dir, tmp_path, dict(
        method="laclip", max_steps=16, save_steps=4, save_total_limit=1, per_device_batch_size=4, num_workers=2,
        shuffle_buffer=4, seed=5))


def test_two_torchrun_processes_match_one_process_with_the_same_global_batch(tmp_path, tokenizer_dir):
    """2 shards of 4: each step is a pass; with 2 processes each reads one shard (4 pairs), with 1 process both (8)."""
    shards = make_shards(tmp_path / "shards", num_shards=2, per_shard=4)
    # adam_eps 1e-3: an update is ~lr * g / (|g| + eps), so an analytically zero gradient's float noise (1e-9)
    # moves its weight by ~1e-9 instead of Adam's +-lr; every weight then compares the two runs' gradients.
    args = dict(method="laclip", max_steps=2, seed=3, shuffle_buffer=4, adam_eps=1e-3)
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
              "--master_port", str(free_port())]
    two = subprocess.run(launch + command(shards, tokenizer_dir, tmp_path / "two", per_device_batch_size=4, **args),
                         env=ENV, capture_output=True, text=True, timeout=600)
    assert two.returncode == 0, two.stderr[-3000:]
    one = subprocess.run([sys.executable, *command(shards, tokenizer_dir, tmp_path / "one", per_device_batch_size=8,
                                                   **args)], env=ENV, capture_output=True, text=True, timeout=600)
    assert one.returncode == 0, one.stderr[-3000:]
    two_log, one_log = read_log(tmp_path / "two" / "train_log.jsonl"), read_log(tmp_path / "one" / "train_log.jsonl")
    assert len(two_log) == len(one_log) == 2
    for a, b in zip(two_log, one_log):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
    two_weights = load_file(str(tmp_path / "two" / "model.safetensors"))
    one_weights = load_file(str(tmp_path / "one" / "model.safetensors"))
    for name, weight in one_weights.items():
        torch.testing.assert_close(two_weights[name], weight, rtol=1e-5, atol=1e-6, msg=name)


def test_killed_run_on_a_streamed_hub_style_dataset_resumes_to_bit_identical_weights(tmp_path, tokenizer_dir):
    """`--streaming` over a folder laid out as a Hub dataset repo (parquet under data/): killed after a checkpoint,
    resumed."""
    import datasets
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    data = datasets.Dataset.from_dict({
        "image": [Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)) for _ in range(24)],
        "caption": [f"caption {i}" for i in range(24)],
        "rewrites": [[f"rewrite one {i}", f"rewrite two {i}"] for i in range(24)]})
    (tmp_path / "repo" / "data").mkdir(parents=True)
    data.to_parquet(str(tmp_path / "repo" / "data" / "train-00000-of-00001.parquet"))  # a Hub dataset repo's layout
    assert_killed_run_resumes_bit_identically(tmp_path / "repo", tokenizer_dir, tmp_path, dict(
        method="laclip", max_steps=16, save_steps=4, save_total_limit=1, per_device_batch_size=4, num_workers=2,
        seed=5, streaming=True))

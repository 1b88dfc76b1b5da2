"""The CLIPS part of benchmarks/reproduce_mini.py (benchmarks/reproduce_clips.py), tiny: two runs through the trainer, evaluation, a recaption, the printed table."""

import json

import reproduce_clips
from accelerate.state import AcceleratorState
from train_utils import TINY_MODEL_CONFIG

from langclip.demo import world as demo_world
from langclip.testing import train_word_tokenizer


def test_demo_clips_run(tmp_path, capsys):
    train_set, test_set = demo_world.make_world(16, seed=0), demo_world.make_world(8, seed=1)
    train_word_tokenizer(demo_world.world_vocabulary(), max_length=32).save_pretrained(str(tmp_path / "tokenizer"))
    settings = {"model_config": TINY_MODEL_CONFIG, "per_device_batch_size": 8, "max_steps": 2, "warmup_steps": 50,
                "save_steps": 0, "report_to": "none"}
    try:
        results = reproduce_clips.run(str(tmp_path), train_set, test_set, str(tmp_path / "tokenizer"), settings, seed=0)
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)
    assert set(results) == {"clips-subcaption", "clips-full", "recaption"}
    for name in ("subcaption", "full"):
        assert set(results[f"clips-{name}"]) == {"zero-shot", "zero-shot (synonyms)", "image->text R@1", "text->image R@1"}
        assert all(0.0 <= v <= 1.0 for v in results[f"clips-{name}"].values())
        assert (tmp_path / "clips" / name / "model.safetensors").is_file()
        log = (tmp_path / "clips" / name / "train_log.jsonl").read_text().splitlines()
        assert len(log) == 2
    assert results["recaption"]["synthetic_caption"] == test_set[0]["synthetic_caption"]
    assert isinstance(results["recaption"]["generated"], str)
    assert json.loads((tmp_path / "clips" / "eval_results.json").read_text()) == results
    printed = capsys.readouterr().out
    assert "| clips-subcaption |" in printed and "| clips-full |" in printed
    assert f"true:      {test_set[0]['synthetic_caption']}" in printed

"""The PC-CLIP part of benchmarks/reproduce_mini.py (benchmarks/reproduce_pcclip.py) at a tiny size: its base, the finetuned checkpoint, the metrics it returns and prints."""

import json

import reproduce_pcclip
import torch

from langclip import LaCLIPModel
from langclip.demo import world as demo_world
from langclip.testing import train_word_tokenizer

TINY = {
    "model_config": json.dumps({
        "text_config": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
                        "max_position_embeddings": 32},
        "vision_config": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
                          "image_size": 64, "patch_size": 16},
        "projection_dim": 16,
    }),
    "per_device_batch_size": 16,
    "max_steps": 2,
}


def test_difference_pairs_carry_the_ground_truth():
    world = demo_world.make_world(12, seed=3)
    pairs = reproduce_pcclip.difference_pairs(world, 10, seed=0)
    row = {image_id: i for i, image_id in enumerate(world["id"])}
    assert len(pairs) == 10
    for pair in pairs:
        a, b = (world[row[pair[side]]] for side in ("id_a", "id_b"))
        assert pair["id_a"] != pair["id_b"]
        assert pair["difference"] == demo_world.describe_difference(a, b)
        assert any(a[name] != b[name] for name in reproduce_pcclip.ATTRIBUTES)


def test_run_trains_a_base_finetunes_and_reports(tmp_path, capsys):
    train_set, test_set = demo_world.make_world(32, seed=0), demo_world.make_world(16, seed=1000)
    tokenizer = train_word_tokenizer(demo_world.world_vocabulary(), max_length=32)
    tokenizer.save_pretrained(str(tmp_path / "tokenizer"))
    # finetune overrides FINETUNE and max_steps (2 steps, not 3); the batch is cut to the 128 pairs there are
    results = reproduce_pcclip.run(str(tmp_path), train_set, test_set, str(tmp_path / "tokenizer"), TINY, seed=0,
                              max_steps=3, finetune={"max_steps": 2, "per_device_batch_size": 512})

    assert set(results) == {"base", "pcclip"}
    for values in results.values():
        assert set(values) == {"difference_accuracy", "difference_accuracy_stderr", "size_spearman", "size_kendall",
                               "count_spearman", "count_kendall", "zero_shot_top1", "zero_shot_top1_comparative"}
        assert 0 <= values["difference_accuracy"] <= 1 and values["difference_accuracy_stderr"] >= 0
        assert all(-1 <= values[k] <= 1 for k in ("size_spearman", "size_kendall", "count_spearman", "count_kendall"))
    assert json.loads((tmp_path / "pcclip" / "results.json").read_text()) == results
    assert "| model | difference_accuracy |" in capsys.readouterr().out

    base = LaCLIPModel.from_pretrained(str(tmp_path / "pcclip" / "base")).state_dict()
    tuned = LaCLIPModel.from_pretrained(str(tmp_path / "pcclip" / "model")).state_dict()
    changed = {key for key in base if not torch.equal(base[key], tuned[key])}
    assert changed and all(key.startswith("text_model.encoder.layers.") for key in changed)
    assert len((tmp_path / "pcclip" / "model" / "train_log.jsonl").read_text().splitlines()) == 2
    assert len((tmp_path / "pcclip" / "differences.jsonl").read_text().splitlines()) == 4 * 32

"""`langclip demo` end to end at a tiny size: every output it promises is written and readable."""

import json

from accelerate.state import AcceleratorState
from datasets import load_from_disk
from transformers import CLIPModel

from langclip.cli import main as cli_main

TINY = """model_config:
  text_config: {hidden_size: 32, intermediate_size: 64, num_hidden_layers: 1, num_attention_heads: 2, max_position_embeddings: 32}
  vision_config: {hidden_size: 32, intermediate_size: 64, num_hidden_layers: 1, num_attention_heads: 2, image_size: 64, patch_size: 16}
  projection_dim: 16
per_device_batch_size: 16
"""


def test_demo_writes_checkpoints_card_results_and_plot(tmp_path, capsys):
    (tmp_path / "tiny.yaml").write_text(TINY)
    out = tmp_path / "demo"
    try:
        assert cli_main(["demo", "--output-dir", str(out), "--config", str(tmp_path / "tiny.yaml"),
                         "--train-images", "48", "--test-images", "24", "--max-steps", "3",
                         "--corpus-steps", "2", "--lm-steps", "3", "--num-rewrites", "2"]) == 0
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)
    printed = capsys.readouterr().out
    assert "accepted; of the attributes their captions state" in printed
    rewrites = load_from_disk(str(out / "rewrites"))  # the real rewriting job's output
    assert len(rewrites) == 48 and all(len(r) == 2 for r in rewrites["rewrite_status"])
    assert (out / "rewrites" / "rewrite_summary.json").exists()
    assert "| model | zero-shot | zero-shot (synonyms) | image->text R@1 | text->image R@1 |" in printed
    found = json.loads((out / "eval_results.json").read_text())
    results, faithful = found["results"], found["rewrites"]
    assert set(results) == {"clip", "laclip", "laclip-mt"}
    assert all(0 <= v <= 1 for values in results.values() for v in values.values())
    assert faithful["requested"] == 96 and 0 <= faithful["kept"] <= 1
    assert (out / "demo.png").read_bytes().startswith(b"\x89PNG")
    card = (out / "laclip" / "README.md").read_text()
    assert "model-index" in card and f"{results['laclip']['zero-shot']:.4f}" in card
    for method in ("clip", "laclip", "laclip-mt"):
        assert CLIPModel.from_pretrained(str(out / method)).config.projection_dim == 16
        assert len((out / method / "train_log.jsonl").read_text().splitlines()) == 3


def test_demo_table_does_not_depend_on_the_number_of_jobs(tmp_path):
    """--jobs 2 trains in two spawned processes with in-process loading; --jobs 1 one after another with a loading
    worker: the same computation, so the same results."""
    (tmp_path / "tiny.yaml").write_text(TINY)
    results = {}
    for jobs in ("1", "2"):
        out = tmp_path / f"jobs{jobs}"
        try:
            assert cli_main(["demo", "--output-dir", str(out), "--config", str(tmp_path / "tiny.yaml"),
                             "--train-images", "48", "--test-images", "24", "--max-steps", "3", "--corpus-steps", "2",
                             "--lm-steps", "3", "--num-rewrites", "2", "--methods", "clip", "laclip",
                             "--jobs", jobs]) == 0
        finally:
            AcceleratorState._reset_state(reset_partial_state=True)
        results[jobs] = json.loads((out / "eval_results.json").read_text())
        assert (f"training ({jobs} at once)") in results[jobs]["seconds"]
    assert results["1"]["results"] == results["2"]["results"]

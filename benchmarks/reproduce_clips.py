"""The CLIPS part of `benchmarks/reproduce_mini.py`: partial vs full synthetic captions on the shapes world, and a recaption.

`run` trains CLIPS twice with the real trainer on the demo world's web captions and
synthetic captions: the text encoder sees a sub-caption of K tokens (``partial_caption:
subcaption``) or the whole synthetic caption (``none``), the switch of the CLIPS paper.
It evaluates zero-shot classification and retrieval with `langclip.evaluation`, prints
a table and the recaption that the sub-caption model generates for a test image next to
its true synthetic caption, and writes ``<output_dir>/clips/{subcaption,full}/`` and
``<output_dir>/clips/eval_results.json``.
"""

from __future__ import annotations

import json
import os

from transformers import AutoTokenizer

from langclip.demo.evaluate import evaluate, headline, markdown_table, save_test_set
from langclip.modeling import CLIPSModel
from langclip.modeling.image_processing import load_image_processor
from langclip.processing.transforms import ImageTransform
from langclip.training.trainer import train_in_process

PARTIAL_TOKENS = 16  # K: half the demo's 32-token text context (the paper: 32 of 80)
CAPTIONER = {"captioner_layers": 1, "captioner_width": 64, "captioner_heads": 4, "captioner_max_length": 64}
RUNS = {"subcaption": "subcaption", "full": "none"}  # run name -> --partial-caption
# Per run, so that both runs and their evaluation stay within ~90 s on 2 CPU cores: more, smaller steps than the
# demo's CLIP runs learn more in that time.
MAX_STEPS, BATCH_SIZE = 120, 64


def recaption(model, tokenizer, transform, row: dict) -> str:
    """The captioner's greedy recaption of ``row``'s image given its web caption."""
    web = tokenizer([row["caption"]], return_tensors="pt", truncation=True,
                    max_length=model.config.text_config.max_position_embeddings)
    ids = model.generate_caption(transform(row["image"])[None], web["input_ids"], web["attention_mask"])
    return tokenizer.decode(ids[0], skip_special_tokens=True)


def run(output_dir: str, train_set, test_set, tokenizer_dir: str, settings: dict, seed: int) -> dict:
    """Train CLIPS with sub-caption and with full synthetic captions; evaluate, recaption, print; returns the metrics."""
    part_dir = os.path.join(output_dir, "clips")
    data_dir = os.path.join(part_dir, "data")
    train_set.select_columns(["id", "image", "caption", "synthetic_caption"]).save_to_disk(data_dir)
    model_config = {**json.loads(settings["model_config"]), **CAPTIONER}
    steps = min(settings["max_steps"], MAX_STEPS)
    results = {}
    for name, strategy in RUNS.items():
        run_dir = os.path.join(part_dir, name)
        values = {**settings, "method": "clips", "train_data": data_dir, "tokenizer_name_or_path": tokenizer_dir,
                  "output_dir": run_dir, "model_config": json.dumps(model_config), "partial_caption": strategy,
                  "partial_tokens": PARTIAL_TOKENS, "seed": seed, "max_steps": steps,
                  "per_device_batch_size": min(settings["per_device_batch_size"], BATCH_SIZE),
                  "warmup_steps": min(settings.get("warmup_steps", 0), steps // 5)}
        train_in_process({**values, "overwrite_output_dir": True})  # a rerun of the demo replaces its runs
    test_dir, templates = save_test_set(test_set, part_dir)
    for name in RUNS:
        results[f"clips-{name}"] = headline(evaluate(os.path.join(part_dir, name), test_dir, templates))
    tokenizer = AutoTokenizer.from_pretrained(os.path.join(part_dir, "subcaption"))
    processor = load_image_processor(os.path.join(part_dir, "subcaption"))
    transform = ImageTransform.from_image_processor(processor)
    subcaption_model = CLIPSModel.from_pretrained(os.path.join(part_dir, "subcaption")).eval()
    row = test_set[0]
    results["recaption"] = {"web_caption": row["caption"], "generated": recaption(subcaption_model, tokenizer,
                                                                                   transform, row),
                            "synthetic_caption": row["synthetic_caption"]}
    with open(os.path.join(part_dir, "eval_results.json"), "w") as handle:
        json.dump(results, handle, indent=2)

    print(f"\nCLIPS, text encoder on a {PARTIAL_TOKENS}-token sub-caption vs the full synthetic caption")
    print(markdown_table({f"clips-{name}": results[f"clips-{name}"] for name in RUNS}))
    print(f"\nrecaption of test image 0 (web caption: {row['caption']!r})\n"
          f"  generated: {results['recaption']['generated']}\n  true:      {row['synthetic_caption']}")
    return results

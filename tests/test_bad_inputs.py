"""Every bad input is one clear error: `langclip <command>` exits non-zero, prints no traceback, and names the offender.

`CASES` is the table: one row per bad input (the command, the input it is given, and a fragment
of the message, which names the file, row, column or key). Rows run the CLI in-process
(`langclip.cli.main` with capsys); `test_real_entry_points_print_no_traceback` runs a few as
processes. The run-safety behaviours (refusing a run folder, resume checks, falling back from a
corrupted checkpoint, --skip-bad-samples counts) have their own tests below.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from accelerate.state import AcceleratorState
from PIL import Image

from langclip.cli import main as cli
from langclip.testing import train_word_tokenizer
from train_utils import TINY_MODEL_CONFIG, as_flags, make_training_files, read_log

ROOT = Path(__file__).resolve().parents[1]


def png(seed: int = 0, size: int = 40) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """Every bad input of the table, written once; plus good training files and one finished run to resume."""
    root = tmp_path_factory.mktemp("bad")
    files = make_training_files(root, rows=16)
    write = lambda name, data: (root / name).write_bytes(data if isinstance(data, bytes) else data.encode())  # noqa: E731
    write("resume_false.yaml", 'resume: "false"\n')
    write("lr_list.yaml", "lr: [1]\n")
    write("typo.yaml", "per_device_batchsize: 4\n")
    write("steps_string.yaml", "max_steps: ten\n")
    write("a_file", "not a folder")
    write("latin1.csv", "relpath,caption\na.png,a red circle\nb.png,caf\xe9 au lait\n".encode("latin-1"))
    write("header_only.csv", "relpath,caption\n")
    write("empty.txt", "")
    write("latin1.txt", "a dog\nun caf\xe9\n".encode("latin-1"))
    write("broken_coco.json", '{"annotations": [{"image_id": 1, "caption": "a dog"},\n')
    write("not_coco.json", '{"images": []}')
    torch.save({"state_dict": {"w": torch.zeros(1)}, "optimizer": io.BytesIO()}, root / "pickled_object.pt")
    write("junk.pt", "not a checkpoint")
    write("captions.txt", "a red circle\na blue square\nthe green triangle\n")
    (root / "config_only").mkdir()
    write("config_only/config.json", '{"model_type": "laclip"}')
    from test_convert import open_clip_state_dict
    from safetensors.torch import save_file
    save_file(open_clip_state_dict(), str(root / "open_clip.safetensors"))
    for name, captions in (("none_caption", ["a red circle", None, "a blue circle"]), ("int_caption", [1, 2, 3])):
        datasets.Dataset.from_dict({"image": [Image.new("RGB", (8, 8))] * 3, "caption": captions}).save_to_disk(
            str(root / name))
    datasets.Dataset.from_dict({"image": [Image.new("RGB", (8, 8))] * 16, "caption": ["a red circle"] * 16}).save_to_disk(
        str(root / "other_data"))
    datasets.Dataset.from_dict({"image": [Image.new("RGB", (8, 8))] * 4, "caption": ["a red circle"] * 4,
                                "rewrites": ["a photo of a red circle"] * 4}).save_to_disk(str(root / "string_rewrites"))
    datasets.Dataset.from_dict({"image": [], "caption": []}, features=datasets.Features(
        {"image": datasets.Image(), "caption": datasets.Value("string")})).save_to_disk(str(root / "empty_data"), num_shards=1)
    folder = root / "bad_metadata"
    folder.mkdir()
    write("bad_metadata/0.png", png())
    write("bad_metadata/metadata.jsonl", '{"file_name": "0.png", "caption": "a red circle"}\n{"file_name": "1.png",\n')
    images = root / "eval_images"
    images.mkdir()
    write("eval_images/good.png", png())
    write("eval_images/broken.png", b"\x89PNG broken")
    datasets.Dataset.from_dict({"image": [str(images / "good.png"), str(images / "broken.png")], "label": [0, 1]},
                               features=datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(
                                   names=["red", "blue"])})).save_to_disk(str(root / "eval_data"))
    datasets.Dataset.from_dict({"image": [str(images / "good.png")] * 3 + [str(images / "broken.png")],
                                "caption": ["a red circle"] * 4}).save_to_disk(str(root / "broken_image_data"))
    (root / "not_a_run").mkdir()
    write("not_a_run/notes.txt", "my notes")
    write("no_header.csv", "eval_images/good.png,a red circle\neval_images/good.png,a blue circle\n")
    write("no_header_rows.csv", "0,a red circle\n1,a blue circle\n")
    train_word_tokenizer([" ".join(f"w{i}" for i in range(80))]).save_pretrained(str(root / "big_tokenizer"))
    datasets.Dataset.from_dict({"image": [str(images / "good.png"), str(images / "broken.png")], "label": [0, 1]},
                               features=datasets.Features({"image": datasets.Image(), "label": datasets.Value("int64")})
                               ).save_to_disk(str(root / "eval_unnamed"))
    cli(["train", *as_flags({**files, "method": "clip", "max_steps": 2, "output_dir": str(root / "run")})])
    AcceleratorState._reset_state(reset_partial_state=True)
    return root, files


def train(files, root, **overrides):
    return ["train", *as_flags({**files, "method": "clip", "max_steps": 1, "output_dir": str(root / "out"),
                                **overrides})]


def tiny_config(**text_config) -> str:
    """The tiny --model-config with ``text_config`` values changed."""
    config = json.loads(TINY_MODEL_CONFIG)
    return json.dumps({**config, "text_config": {**config["text_config"], **text_config}})


def from_checkpoint(files, root, checkpoint):
    """`train` argv starting from --model-name-or-path ``checkpoint`` instead of --model-config."""
    return train({k: v for k, v in files.items() if k != "model_config"}, root, model_name_or_path=checkpoint)


def run_eval(root, *extra):
    return ["eval", "--model", str(root / "run"), "--dataset", str(root / "eval_data"), *extra]


# (case, argv builder (root, files) -> argv, message fragment naming the offender and the fix)
CASES = [
    # configs and flags
    ("yaml-string-boolean", lambda r, f: train(f, r, config=r / "resume_false.yaml"),
     "resume must be true or false (a YAML boolean, without quotes), got 'false'"),
    ("yaml-wrong-type", lambda r, f: train(f, r, config=r / "lr_list.yaml"), "lr must be a number, got [1]"),
    ("yaml-not-a-number", lambda r, f: train(f, r, config=r / "steps_string.yaml"),
     "max_steps must be an integer or null, got 'ten'"),
    ("yaml-unknown-key", lambda r, f: train(f, r, config=r / "typo.yaml"),
     "unknown argument 'per_device_batchsize' (did you mean 'per_device_batch_size'?)"),
    ("yaml-missing-file", lambda r, f: train(f, r, config=r / "nope.yaml"), "nope.yaml: no such file"),
    ("model-config-unknown-key", lambda r, f: train(f, r, model_config='{"projection_dimm": 16}'),
     "unknown key 'projection_dimm' for LaCLIPConfig (did you mean 'projection_dim'?)"),
    ("model-config-unknown-nested-key", lambda r, f: train(f, r, model_config='{"text_config": {"hiden_size": 8}}'),
     "unknown key 'text_config.hiden_size' for CLIPTextConfig (did you mean 'hidden_size'?)"),
    ("model-config-invalid-json", lambda r, f: train(f, r, model_config="{projection_dim: 16}"),
     "--model-config is not valid JSON"),
    ("model-config-not-an-object", lambda r, f: train(f, r, model_config="[16]"), "must be a JSON object"),
    ("max-steps-zero", lambda r, f: train(f, r, max_steps=0), "--max-steps must be a positive number of steps, got 0"),
    ("max-steps-negative", lambda r, f: train(f, r, max_steps=-3), "--max-steps must be a positive number of steps"),
    ("output-dir-is-a-file", lambda r, f: train(f, r, output_dir=r / "a_file"), "a_file is a file, not a folder"),
    ("lr-decay-above-one", lambda r, f: train(f, r, lr_decay_per_epoch=2), "--lr-decay-per-epoch must be in (0, 1], got 2"),
    ("unknown-method", lambda r, f: train(f, r, method="laclipp"), "got 'laclipp' (did you mean 'laclip'?)"),
    ("model-config-rejected-value", lambda r, f: train(f, r, model_config=tiny_config(num_attention_heads=3)),
     "--model-config (YAML key model_config): text_config: StrictDataclassClassValidationError"),
    ("model-config-wrong-type", lambda r, f: train(f, r, model_config=json.dumps(
        {**json.loads(TINY_MODEL_CONFIG), "projection_dim": "x"})), "Validation error for field 'projection_dim'"),
    ("max-length-over-context", lambda r, f: train(f, r, max_length=64),
     "--max-length 64 is longer than the text tower's context of 16 tokens"),
    ("model-path-mistyped", lambda r, f: from_checkpoint(f, r, r / "no_such_model"),
     "no_such_model' does not exist locally and is not a valid Hub id"),
    ("model-path-not-a-checkpoint", lambda r, f: from_checkpoint(f, r, r / "eval_images"),
     "eval_images: cannot load it from this local path (Error no file named model.safetensors"),
    ("tokenizer-path-mistyped", lambda r, f: train(f, r, tokenizer_name_or_path="./tokenizr"),
     "--tokenizer-name-or-path './tokenizr' does not exist locally and is not a valid Hub id"),
    ("tokenizer-over-vocabulary", lambda r, f: from_checkpoint({**f, "tokenizer_name_or_path": r / "big_tokenizer"},
                                                               r, r / "run"),
     "--tokenizer-name-or-path: the tokenizer has"),
    ("batch-larger-than-data", lambda r, f: train(f, r, per_device_batch_size=64),
     "fewer rows (16) than one global batch (64)"),
    # runs and checkpoints
    ("fresh-run-into-a-run", lambda r, f: train(f, r, output_dir=r / "run"), "already holds a run"),
    ("resume-and-overwrite", lambda r, f: train(f, r, output_dir=r / "run", resume=True, overwrite_output_dir=True),
     "give one of them"),
    ("ignore-mismatch-without-resume", lambda r, f: train(f, r, resume_ignore_mismatch=True),
     "--resume-ignore-mismatch only applies with --resume"),
    ("resume-other-batch-size", lambda r, f: train(f, r, output_dir=r / "run", resume=True, max_steps=3,
                                                   per_device_batch_size=8),
     "per_device_batch_size is 8 here but 4 in"),
    ("resume-other-seed", lambda r, f: train(f, r, output_dir=r / "run", resume=True, max_steps=3, seed=7),
     "seed is 7 here but 0 in"),
    ("resume-other-method", lambda r, f: train(f, r, output_dir=r / "run", resume=True, max_steps=3, method="laclip"),
     "method is 'laclip' here but 'clip' in"),
    ("resume-other-model", lambda r, f: train(f, r, output_dir=r / "run", resume=True, max_steps=3,
                                              model_config=json.dumps({**json.loads(TINY_MODEL_CONFIG), "projection_dim": 8})),
     "model_config is"),  # was: "checkpoint-2 is incomplete or corrupted ... Delete them"
    ("resume-other-train-parts", lambda r, f: train(f, r, output_dir=r / "run", resume=True, max_steps=3,
                                                    train_parts="text"), "train_parts is 'text' here but None in"),
    ("resume-other-data", lambda r, f: train(f, r, output_dir=r / "run", resume=True, max_steps=3,
                                             train_data=r / "other_data"),
     "data_fingerprint is"),
    # data
    ("csv-not-utf8", lambda r, f: train(f, r, train_data=r / "latin1.csv"), "latin1.csv is not UTF-8: line 3"),
    ("csv-empty", lambda r, f: train(f, r, train_data=r / "header_only.csv"), "header_only.csv has no rows"),
    ("dataset-empty", lambda r, f: train(f, r, train_data=r / "empty_data"), "empty_data (split 'train') has no rows"),
    ("caption-none", lambda r, f: train(f, r, train_data=r / "none_caption"),
     "column 'caption', row 1 (id '1') is None"),
    ("caption-int", lambda r, f: train(f, r, train_data=r / "int_caption"), "column 'caption' holds int64 values"),
    ("caption-column-missing", lambda r, f: train(f, r, caption_column="text"),
     "the caption column 'text' is not in the dataset"),
    ("metadata-jsonl-line", lambda r, f: train(f, r, train_data=r / "bad_metadata"),
     "metadata.jsonl, line 2: not valid JSON"),
    ("image-broken-in-a-worker", lambda r, f: train(f, r, train_data=r / "broken_image_data", num_workers=1),
     "cannot read image row '3'"),  # one line, not the worker's re-raised traceback
    ("max-grad-norm-negative", lambda r, f: train(f, r, max_grad_norm=-1), "--max-grad-norm must be > 0, got -1"),
    ("lr-negative", lambda r, f: train(f, r, lr=-1), "--lr must be > 0, got -1"),
    ("num-texts-zero", lambda r, f: train(f, r, method="laclip-mt", num_texts=0), "--num-texts must be >= 1, got 0"),
    ("rewrites-one-string", lambda r, f: train(f, r, train_data=r / "string_rewrites", method="laclip"),
     "the rewrites column must hold a list of strings per row"),  # was: trained as CLIP, silently
    ("output-dir-of-other-files", lambda r, f: train(f, r, output_dir=r / "not_a_run"),
     "not_a_run is a folder of other files (notes.txt), not a run folder"),
    ("output-dir-of-other-files-resume", lambda r, f: train(f, r, output_dir=r / "not_a_run", resume=True),
     "not_a_run is a folder of other files"),
    ("csv-without-header", lambda r, f: train(f, r, train_data=r / "no_header.csv"),
     "no_header.csv: line 1 ('eval_images/good.png,a red circle') is an image row, not a header"),
    ("output-dir-is-the-data", lambda r, f: train(f, r, output_dir=f["train_data"]),
     "is the --train-data folder: the run would write its checkpoints and model files among the inputs"),
    ("train-data-missing", lambda r, f: train(f, r, train_data=r / "no_such_data"), "no_such_data"),
    # eval
    ("eval-split-without-splits", lambda r, f: run_eval(r, "--split", "validation"),
     "eval_data is a single Dataset folder without splits, so split 'validation' cannot be chosen"),
    ("eval-corrupt-image", lambda r, f: run_eval(r), "cannot read image row 1"),
    ("eval-no-class-names-before-images", lambda r, f: ["eval", "--model", str(r / "run"), "--dataset",
                                                        str(r / "eval_unnamed")],
     "the label column 'label' is Value, so it carries no class names"),  # not "cannot read image row 1"
    ("eval-batch-size-zero", lambda r, f: run_eval(r, "--batch-size", "0"), "--batch-size must be >= 1, got 0"),
    ("eval-model-mistyped", lambda r, f: ["eval", "--model", str(r / "no_such_run"), "--dataset", str(r / "eval_data")],
     "no_such_run' does not exist locally and is not a valid Hub id"),
    # rewrite and meta-pairs
    ("rewrite-empty-file", lambda r, f: ["rewrite", str(r / "empty.txt"), "--method", "eda",
                                         "--output-dir", str(r / "rw")], "empty.txt is empty"),
    ("rewrite-not-utf8", lambda r, f: ["rewrite", str(r / "latin1.txt"), "--method", "eda",
                                       "--output-dir", str(r / "rw")], "latin1.txt is not UTF-8: line 2"),
    ("rewrite-no-rewrites", lambda r, f: ["rewrite", str(r / "latin1.csv"), "--method", "eda", "--num-rewrites", "0",
                                          "--output-dir", str(r / "rw")], "--num-rewrites must be >= 1, got 0"),
    ("rewrite-chunk-size-zero", lambda r, f: ["rewrite", str(r / "captions.txt"), "--method", "eda", "--chunk-size", "0",
                                              "--output-dir", str(r / "rw")],
     "must be positive, got 0 and 64 (ValueError; run with --debug for the traceback)"),  # any error is one line
    ("rewrite-csv-without-header", lambda r, f: ["rewrite", str(r / "no_header_rows.csv"), "--method", "eda",
                                                 "--output-dir", str(r / "rw")],
     "no_header_rows.csv: its first line, read as the header, names no column 'caption'"),
    ("rewrite-llm-no-model", lambda r, f: ["rewrite", str(r / "captions.txt"), "--method", "llm",
                                           "--output-dir", str(r / "rw")], "--method llm needs --model"),
    ("differences-no-pairs", lambda r, f: ["differences", str(r / "captions.txt"), "--model", "m", "--num-pairs", "0",
                                           "--output-dir", str(r / "df")], "--num-pairs must be >= 1, got 0"),
    ("differences-template-field", lambda r, f: ["differences", str(r / "captions.txt"), "--model", "m", "--template",
                                                 "A: {caption_a} B: {caption_c}", "--output-dir", str(r / "df")],
     "--template must name {caption_a} and {caption_b} and no other field; it has ['caption_a', 'caption_c']"),
    ("meta-pairs-malformed-coco", lambda r, f: ["meta-pairs", "--coco", str(r / "broken_coco.json"),
                                                "--output", str(r / "pool.jsonl")],
     "broken_coco.json: not valid JSON at line 2"),
    ("meta-pairs-not-coco", lambda r, f: ["meta-pairs", "--coco", str(r / "not_coco.json"),
                                          "--output", str(r / "pool.jsonl")], "not_coco.json: not a COCO captions file"),
    # demo
    ("demo-no-threads", lambda r, f: ["demo", "--threads", "0", "--output-dir", str(r / "demo")],
     "--threads must be >= 1, got 0"),
    ("demo-no-jobs", lambda r, f: ["demo", "--jobs", "0", "--output-dir", str(r / "demo")], "--jobs must be >= 1, got 0"),
    ("demo-no-steps", lambda r, f: ["demo", "--max-steps", "0", "--output-dir", str(r / "demo")],
     "--max-steps must be >= 1, got 0"),
    ("push-no-weights", lambda r, f: ["push", str(r / "config_only"), "me/model"], "config_only has no weights"),
    # push
    ("push-not-a-checkpoint", lambda r, f: ["push", str(r / "eval_images"), "me/model"], "has no config.json"),
    ("push-bad-repo-id", lambda r, f: ["push", str(r / "run"), "no-namespace"], "invalid repo id 'no-namespace'"),
    # convert
    ("convert-pickled-object", lambda r, f: ["convert", "--from", "open_clip", str(r / "pickled_object.pt"),
                                             str(r / "conv")], "pickled_object.pt: refused for safety"),
    ("convert-zero-heads", lambda r, f: ["convert", "--from", "open_clip", str(r / "open_clip.safetensors"),
                                         str(r / "conv"), "--vision-heads", "0"], "--vision-heads must be >= 1, got 0"),
    ("convert-junk", lambda r, f: ["convert", "--from", "open_clip", str(r / "junk.pt"), str(r / "conv")],
     "junk.pt is not a readable PyTorch checkpoint"),
    ("convert-tokenizer-over-vocabulary", lambda r, f: ["convert", "--from", "open_clip", str(r / "open_clip.safetensors"),
                                                        str(r / "conv"), "--tokenizer", str(r / "big_tokenizer")],
     "--tokenizer: the tokenizer has"),
    ("convert-tokenizer-mistyped", lambda r, f: ["convert", "--from", "open_clip", str(r / "open_clip.safetensors"),
                                                 str(r / "conv"), "--tokenizer", str(r / "no_tokenizer")],
     "no_tokenizer' does not exist locally and is not a valid Hub id"),
    ("convert-missing", lambda r, f: ["convert", "--from", "open_clip", str(r / "none.pt"), str(r / "conv")],
     "no checkpoint file at"),
]


@pytest.mark.parametrize("case, argv, fragment", CASES, ids=[case for case, _, _ in CASES])
def test_bad_input_is_one_clear_error(inputs, capsys, case, argv, fragment):
    root, files = inputs
    try:
        rc = cli([str(arg) for arg in argv(root, files)])
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)
    err = capsys.readouterr().err
    assert rc == 1
    message = err[err.index("error: "):]
    assert "Traceback" not in err and fragment in message, message
    assert "weights_only=False" not in err


def test_debug_shows_the_traceback(inputs, capsys):
    root, files = inputs
    with pytest.raises(ValueError, match="--max-steps must be a positive number"):
        cli(["--debug", *train(files, root, max_steps=0)])
    with pytest.raises(ValueError, match="refused for safety"):
        cli(["convert", "--from", "open_clip", str(root / "pickled_object.pt"), str(root / "conv"), "--debug"])


def test_real_entry_point_prints_no_traceback(inputs):
    """``train.py`` as a process (the same `langclip.cli.main` as the `langclip` script)."""
    root, files = inputs
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    argv = [sys.executable, str(ROOT / "train.py"), *train(files, root, max_steps=-3)[1:]]
    done = subprocess.run([str(a) for a in argv], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert "langclip train: error: --max-steps must be a positive number of steps, got -3" in done.stderr


# ---- run safety -------------------------------------------------------------------------------


def train_in_process(files, **values):
    try:
        return cli(train(files, Path("."), **values))
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)


def test_overwrite_replaces_the_old_run_and_resume_ignore_mismatch_warns(inputs, tmp_path, capsys):
    _, files = inputs
    out = tmp_path / "run"
    assert train_in_process(files, output_dir=out, max_steps=3, save_steps=1, save_total_limit=0) == 0
    assert sorted(p.name for p in out.glob("checkpoint-*")) == [f"checkpoint-{i}" for i in (1, 2, 3)]
    assert train_in_process(files, output_dir=out, max_steps=2, overwrite_output_dir=True) == 0
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2"]  # the last step is always saved
    assert [r["step"] for r in read_log(out / "train_log.jsonl")] == [1, 2]
    capsys.readouterr()
    assert train_in_process(files, output_dir=out, max_steps=3, resume=True, seed=5, resume_ignore_mismatch=True) == 0
    printed = capsys.readouterr().out
    assert "warning: --resume-ignore-mismatch: seed is 5 here but 0 in" in printed and "at step 2" in printed
    assert [r["step"] for r in read_log(out / "train_log.jsonl")] == [1, 2, 3]
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["step"] == 3 and state["config"]["seed"] == 5 and state["config"]["data_fingerprint"]


def test_full_disk_and_corrupted_latest_checkpoint_resume_from_the_last_complete_one(inputs, tmp_path, capsys,
                                                                                      monkeypatch):
    """A save that fails (disk full) leaves the earlier checkpoints complete and says how to continue; a
    corrupted latest checkpoint is passed over; both resumes redo the lost steps with the same losses."""
    from accelerate import Accelerator

    _, files = inputs
    out = tmp_path / "run"
    save_state = Accelerator.save_state

    def disk_full_at_step_4(self, folder, **kwargs):
        if folder.endswith("checkpoint-4"):
            Path(folder).mkdir()
            (Path(folder) / "model.safetensors").write_bytes(b"partial")
            raise OSError(28, "No space left on device")
        return save_state(self, folder, **kwargs)

    monkeypatch.setattr(Accelerator, "save_state", disk_full_at_step_4)
    assert train_in_process(files, output_dir=out, max_steps=4, save_steps=2, method="laclip") == 1
    err = capsys.readouterr().err
    assert "No space left on device" in err and "rerun with --resume to continue from" in err and "checkpoint-2" in err
    assert sorted(p.name for p in out.iterdir() if "checkpoint" in p.name) == ["checkpoint-2"]
    full_log = read_log(out / "train_log.jsonl")
    monkeypatch.setattr(Accelerator, "save_state", save_state)
    for round in range(2):
        assert train_in_process(files, output_dir=out, max_steps=4, save_steps=2, method="laclip", resume=True) == 0
        printed = capsys.readouterr().out
        assert "checkpoint-2 at step 2" in printed
        assert ("checkpoint-4 is incomplete or corrupted" in printed) == (round == 1)
        resumed_log = read_log(out / "train_log.jsonl")
        assert [r["step"] for r in resumed_log] == [1, 2, 3, 4]
        for a, b in zip(full_log, resumed_log):
            assert b["loss"] == pytest.approx(a["loss"], rel=1e-5), a["step"]
        weights = out / "checkpoint-4" / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # corrupt the latest for the next round
    for name in ("model.safetensors", "optimizer.bin"):
        (out / "checkpoint-2" / name).write_bytes(b"")
    assert train_in_process(files, output_dir=out, max_steps=5, save_steps=2, method="laclip", resume=True) == 1
    assert "no readable checkpoint in" in capsys.readouterr().err


def test_resume_catches_an_image_replaced_in_place(inputs, tmp_path, capsys):
    """The data fingerprint covers the size and modification time of the image files a CSV names: --resume
    continues over unchanged files and refuses once one image is replaced in place (same path, same rows)."""
    _, files = inputs
    (tmp_path / "images").mkdir()
    for i in range(4):
        (tmp_path / "images" / f"{i}.png").write_bytes(png(i))
    (tmp_path / "data.csv").write_text("relpath,caption\n" + "".join(f"images/{i}.png,a red circle\n" for i in range(4)))
    run = dict(train_data=tmp_path / "data.csv", output_dir=tmp_path / "run", save_steps=1)
    assert train_in_process(files, max_steps=1, **run) == 0
    assert train_in_process(files, max_steps=2, resume=True, **run) == 0
    (tmp_path / "images" / "2.png").write_bytes(png(9, size=48))
    capsys.readouterr()
    assert train_in_process(files, max_steps=3, resume=True, **run) == 1
    err = capsys.readouterr().err
    assert "data_fingerprint is" in err and "Traceback" not in err, err


def test_skip_bad_samples_counts_each_kind_and_skips_all_bad_batches(inputs, tmp_path, capsys, monkeypatch):
    """One sample of each bad kind among 4 good ones: one epoch of 2 batches counts each kind once and trains
    on the rest; on the bad samples alone, the batch has no sample left and is skipped (a step without update)."""
    _, files = inputs
    broken = png(2)
    bad = [(b"not an image", "a red circle"), (png(3, size=60), "a blue circle"),
           (broken[: len(broken) // 2], "a red circle"), (png(1), None)]
    good = [(png(i), "a green circle") for i in range(4, 8)]
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1700)  # 40x40 (1600 px) passes; 60x60 is over twice the limit
    for name, rows, steps in (("mixed", bad + good, 2), ("all_bad", bad, 1)):
        folder = tmp_path / name
        datasets.Dataset.from_dict(
            {"image": [{"bytes": b, "path": None} for b, _ in rows], "caption": [c for _, c in rows]},
            features=datasets.Features({"image": datasets.Image(), "caption": datasets.Value("string")}),
        ).save_to_disk(str(folder))
        out = tmp_path / f"out_{name}"
        assert train_in_process(files, output_dir=out, train_data=folder, max_steps=steps, skip_bad_samples=True) == 0
        state = json.loads((out / "trainer_state.json").read_text())
        assert state["skipped"] == {"decode_error": 1, "decompression_bomb": 1, "truncated": 1, "bad_caption": 1}
        assert state["skipped_samples"] == 4 and state["bad_steps"] == 0 and state["step"] == steps
        assert "skipped 4 bad samples (decode_error 1, decompression_bomb 1, truncated 1, bad_caption 1)" in (
            capsys.readouterr().out)
    assert state["skipped_batches"] == 1 and [r["loss"] for r in read_log(out / "train_log.jsonl")] == [None]


def test_tiny_model_config_is_valid():
    """The shared tiny config passes the --model-config key check (so the rows above fail for their own reason)."""
    from langclip import LaCLIPConfig
    from langclip.training.arguments import check_model_config

    check_model_config(TINY_MODEL_CONFIG, LaCLIPConfig)


def test_collators_name_bad_texts_and_count_them_when_skipping(tokenizer):
    """A None caption or synthetic caption (CLIPS) names its row and column; with skipping it is counted as bad_caption."""
    from langclip.processing.collators import CLIPSCollator, ContrastiveCollator
    from langclip.processing.text import PartialCaption
    from langclip.processing.transforms import SKIP_KINDS, BadSampleError

    pixels = torch.zeros(3, 8, 8)
    rows = [{"id": str(i), "pixel_values": pixels, "caption": f"a red circle {i}", "synthetic_caption": "a red circle."}
            for i in range(3)]
    rows[1]["synthetic_caption"], rows[2]["caption"] = None, 7
    with pytest.raises(BadSampleError, match="row '2': column 'caption' must be a non-empty string, got 7"):
        ContrastiveCollator(tokenizer, 16)(rows)
    with pytest.raises(BadSampleError, match="row '1': column 'synthetic_caption' must be a non-empty string, got None"):
        CLIPSCollator(tokenizer, 16, PartialCaption(tokenizer, "truncate", 6))(rows)
    batch = CLIPSCollator(tokenizer, 16, PartialCaption(tokenizer, "truncate", 6), skip_bad_samples=True)(rows)
    assert batch["pixel_values"].shape[0] == 1
    assert dict(zip(SKIP_KINDS, batch["num_skipped"].tolist())) == {
        "decode_error": 0, "decompression_bomb": 0, "truncated": 0, "bad_caption": 2}

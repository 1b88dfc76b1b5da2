"""The rewrite job: inputs, bad-input errors, fallbacks, the real pipeline, determinism, shards, resume."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import free_port
from datasets import Dataset, DatasetDict, load_from_disk
from transformers import pipeline

from langclip.cli import main as cli
from langclip.processing.generation.backends import TextGenerator
from langclip.processing.generation.job import ChunkedMapJob, check_same_ids, resolve_shard
from langclip.processing.generation.filters import STATUSES
from langclip.processing.generation.prompts import PromptBuilder
from langclip.processing.generation.meta_pairs import load_pool
from langclip.processing.generation.rewrite import Rewriter, llm_proposer, summarize
from langclip.processing.loading import check_captions, load_captions
from langclip.demo.tiny_lm import build_tiny_causal_lm, train_tiny_causal_lm

from conftest import CAPTIONS

REPO = Path(__file__).resolve().parents[1]


def rewrite_args(input_path, out, lm, *extra):
    return [
        "rewrite", str(input_path), "--debug", "--model", lm, "--output-dir", str(out), "--device", "cpu",
        "--max-new-tokens", "8", "--batch-size", "8", "--chunk-size", "8", *extra,
    ]


def rows(out):
    return load_from_disk(str(out)).to_dict()


# ---- inputs and bad input ---------------------------------------------------------------


def test_load_captions_every_form(tmp_path, captions_file):
    text = load_captions(str(captions_file))
    assert text["caption"] == CAPTIONS[:24] and text["id"] == [str(i) for i in range(24)]

    csv = tmp_path / "cc3m.csv"
    csv.write_text("relpath,caption\nimg/0.jpg,a red dog\nimg/1.jpg,\"two cats, asleep\"\n")
    data = load_captions(str(csv))
    assert data["relpath"] == ["img/0.jpg", "img/1.jpg"] and data["caption"] == ["a red dog", "two cats, asleep"]

    jsonl = tmp_path / "caps.jsonl"
    jsonl.write_text('{"key": "x9", "text": "a boat"}\n{"key": "y7", "text": "a bus"}\n')
    data = load_captions(str(jsonl), caption_column="text", id_column="key")
    assert data["key"] == ["x9", "y7"] and data.column_names == ["key", "text"]

    Dataset.from_dict({"caption": ["a", "b"], "id": ["p", "q"]}).save_to_disk(str(tmp_path / "folder"))
    assert load_captions(str(tmp_path / "folder"))["id"] == ["p", "q"]
    DatasetDict({"val": Dataset.from_dict({"caption": ["c"]})}).save_to_disk(str(tmp_path / "dict"))
    assert load_captions(str(tmp_path / "dict"), split="val")["id"] == ["0"]
    with pytest.raises(ValueError, match=r"no split 'train'; it has val"):
        load_captions(str(tmp_path / "dict"))
    (tmp_path / "x.xml").write_text("<a/>")
    with pytest.raises(ValueError, match=r"unknown caption file type '\.xml'"):
        load_captions(str(tmp_path / "x.xml"))


@pytest.mark.parametrize(
    "data, message",
    [
        ({"text": ["a dog"], "id": ["0"]}, r"no column 'caption' in the input \(columns: \['text', 'id'\]\)"),
        ({"caption": ["a dog", None], "id": ["0", "1"]}, r"column 'caption', row 1 \(id '1'\): expected a non-empty string, got None"),
        ({"caption": [3, 4], "id": ["0", "1"]}, r"row 0 \(id '0'\): .* got 3"),
        ({"caption": [["a dog"]], "id": ["0"]}, r"row 0 \(id '0'\): .* got \['a dog'\]"),
        ({"caption": ["a dog", "  "], "id": ["0", "1"]}, r"row 1 \(id '1'\)"),
        ({"caption": [], "id": []}, "the input dataset is empty"),
        ({"caption": ["a", "b"], "id": ["0", "0"]}, r"column 'id', row 1: id '0' is repeated"),
    ],
)
def test_bad_captions_name_column_and_row(data, message):
    dataset = Dataset.from_dict(data) if data["id"] else Dataset.from_dict({"caption": [], "id": []})
    with pytest.raises(ValueError, match=message):
        check_captions(dataset)


def test_bad_input_through_the_cli(tmp_path, tiny_lm_dir):
    path = tmp_path / "caps.jsonl"
    path.write_text('{"caption": "a dog"}\n{"caption": null}\n')
    with pytest.raises(ValueError, match=r"row 1 \(id '1'\)"):
        cli([*rewrite_args(path, tmp_path / "out", tiny_lm_dir), "--debug"])  # --debug: the error itself


@pytest.fixture(scope="module")
def generator(tiny_lm_dir):
    return TextGenerator(pipeline("text-generation", model=tiny_lm_dir, device="cpu"), batch_size=4, max_new_tokens=6)


def test_caption_longer_than_the_context_names_the_row(generator):
    builder = PromptBuilder({"chatgpt": load_pool("chatgpt")})
    rewriter = Rewriter(llm_proposer(builder, generator), ["chatgpt"])
    long_caption = " ".join(f"word{i}" for i in range(1200))
    with pytest.raises(ValueError, match=r"caption id 'b', source 'chatgpt': the prompt is \d+ tokens; .* context of 1024"):
        rewriter({"caption": ["a dog", long_caption], "id": ["a", "b"]})


def test_pool_smaller_than_examples_per_prompt_through_the_cli(tmp_path, captions_file, tiny_lm_dir):
    pool = tmp_path / "two.jsonl"
    pool.write_text('{"input": "a b", "output": "c d"}\n{"input": "e f", "output": "g h"}\n')
    with pytest.raises(ValueError, match="pool 'two' has 2 pairs but each prompt needs 3"):
        cli([*rewrite_args(captions_file, tmp_path / "out", tiny_lm_dir, "--sources", str(pool)), "--debug"])  # --debug: the error itself


# ---- the rewriter: fallbacks and columns --------------------------------------------------


def test_rewriter_falls_back_to_the_original_by_reason():
    scripted = {("0", "s1"): "A dog sleeps on a rug.", ("0", "s2"): "", ("1", "s1"): "cat", ("1", "s2"): "a cat on a mat"}

    def propose(captions, ids, requests):
        assert requests == [(0, "s1", 0), (0, "s2", 0), (1, "s1", 0), (1, "s2", 0)]
        return [(scripted[ids[row], source], ()) for row, source, _ in requests]

    out = Rewriter(propose, ["s1", "s2"])({"caption": ["a dog on a rug", "a cat on a mat"], "id": [0, 1]})
    assert out == {
        "rewrites": [["A dog sleeps on a rug.", "a dog on a rug"], ["a cat on a mat", "a cat on a mat"]],
        "rewrite_sources": [["s1", "s2"], ["s1", "s2"]],
        "rewrite_status": [["ok", "empty"], ["too_short", "echo_query"]],
        "pending": [False, False],
    }


def test_job_through_the_real_pipeline(tmp_path, captions_file, tiny_lm_dir, capsys):
    out = tmp_path / "out"
    args = rewrite_args(captions_file, out, tiny_lm_dir, "--sources", "chatgpt", "human", "--num-rewrites", "2", "--text-files")
    assert cli(args) == 0
    data = rows(out)
    assert data["id"] == [str(i) for i in range(24)] and data["caption"] == CAPTIONS[:24]
    for caption, rewrites, sources, statuses in zip(data["caption"], data["rewrites"], data["rewrite_sources"], data["rewrite_status"]):
        assert sources == ["chatgpt", "chatgpt", "human", "human"]
        assert set(statuses) <= set(STATUSES) and len(rewrites) == 4
        assert all(text == caption for text, status in zip(rewrites, statuses) if status != "ok")
        assert all(text != caption and len(text.split()) >= 2 for text, status in zip(rewrites, statuses) if status == "ok")
    summary = json.loads((out / "rewrite_summary.json").read_text())
    assert summary == {**summarize(load_from_disk(str(out))), "config": summary["config"], "job": summary["job"]}
    assert summary["rows"] == 24 and summary["rewrites"] == 96
    assert summary["ok"] + sum(summary["fallbacks"].values()) == 96
    printed = capsys.readouterr().out
    assert f"24 captions, 96 rewrites, {summary['ok']} ok" in printed
    for position, name in enumerate(["chatgpt_0", "chatgpt_1", "human_0", "human_1"]):
        lines = (out / "texts" / f"{name}.txt").read_text().splitlines()
        assert lines == [" ".join(r[position].split()) for r in data["rewrites"]]
    assert "caption-rewriting" in (out / "README.md").read_text() and not (out / "work").exists()
    assert cli(args) == 0 and "already holds this job's output" in capsys.readouterr().out


def test_same_seed_same_rewrites_other_seed_other_rewrites(tmp_path, captions_file, tiny_lm_dir):
    base = rewrite_args(captions_file, tmp_path / "a", tiny_lm_dir, "--sources", "bard")
    cli(base)
    cli(rewrite_args(captions_file, tmp_path / "b", tiny_lm_dir, "--sources", "bard"))
    cli(rewrite_args(captions_file, tmp_path / "c", tiny_lm_dir, "--sources", "bard", "--seed", "1"))
    assert rows(tmp_path / "a") == rows(tmp_path / "b")
    assert rows(tmp_path / "a")["rewrites"] != rows(tmp_path / "c")["rewrites"] or (
        rows(tmp_path / "a")["rewrite_status"] != rows(tmp_path / "c")["rewrite_status"]
    )


# ---- shards, merge, resume ----------------------------------------------------------------


def test_shards_merge_to_the_unsharded_output(tmp_path, captions_file, tiny_lm_dir, capsys):
    cli(rewrite_args(captions_file, tmp_path / "whole", tiny_lm_dir))
    sharded = rewrite_args(captions_file, tmp_path / "sharded", tiny_lm_dir, "--num-shards", "3")
    cli([*sharded, "--shard-index", "2"])
    cli([*sharded, "--shard-index", "0"])
    assert "shards [1] are not" in capsys.readouterr().out and not (tmp_path / "sharded" / "state.json").exists()
    cli([*sharded, "--shard-index", "1"])
    merged = rows(tmp_path / "sharded")
    assert merged["id"] == [str(i) for i in range(24)]
    assert merged == rows(tmp_path / "whole")  # chunk-aligned shards: the same prompts and the same samples


def test_restart_with_other_settings_is_refused(tmp_path, captions_file, tiny_lm_dir):
    args = rewrite_args(captions_file, tmp_path / "out", tiny_lm_dir, "--num-shards", "2")
    cli([*args, "--shard-index", "0"])
    with pytest.raises(ValueError, match=r"different settings or input \(seed: 0 -> 9\).*--restart"):
        cli([*[*args, "--shard-index", "1", "--seed", "9"], "--debug"])  # --debug: the error itself


def test_merge_checks_ids():
    data = Dataset.from_dict({"id": ["a", "b", "c"]})
    check_same_ids(data, Dataset.from_dict({"id": ["a", "b", "c"]}))
    cases = {
        ("a", "b"): r"missing \['c'\]",
        ("a", "b", "b", "c"): r"duplicated \['b'\]",
        ("a", "b", "z"): r"missing \['c'\], duplicated \[\], unknown \['z'\]",
        ("a", "c", "b"): "rows out of order",
    }
    for ids, message in cases.items():
        with pytest.raises(ValueError, match=message):
            check_same_ids(data, Dataset.from_dict({"id": list(ids)}))


def test_chunks_cover_each_row_once_and_merge_needs_all(tmp_path):
    job = ChunkedMapJob(lambda batch: {"n": [len(c) for c in batch["caption"]]}, tmp_path, {}, chunk_size=3, num_shards=4)
    spans = [(begin, end) for shard in range(4) for begin, end, _ in job.chunks(10, shard)]
    assert [i for begin, end in spans for i in range(begin, end)] == list(range(10))
    assert [job.shard_bounds(10, s) for s in range(4)] == [(0, 3), (3, 6), (6, 8), (8, 10)]
    data = Dataset.from_dict({"id": [str(i) for i in range(10)], "caption": ["x" * i for i in range(10)]})
    job.run(data, 1)
    with pytest.raises(RuntimeError, match=r"unfinished chunks \(shard 0: 1 chunks, shard 2: 1 chunks, shard 3: 1 chunks\)"):
        job.merge(data)
    for shard in (0, 2, 3):
        job.run(data, shard)
    assert job.merge(data)["n"] == list(range(10))


def test_resolve_shard():
    assert resolve_shard() == (1, 0)
    assert resolve_shard(4, 3) == (4, 3)
    with pytest.raises(ValueError, match=r"--shard-index 4 is not in \[0, 4\)"):
        resolve_shard(4, 4)
    with pytest.raises(ValueError, match="give both"):
        resolve_shard(4, None)


def test_resume_after_kill(tmp_path, tiny_lm_dir):
    """Kill the job after its first chunk; the restart redoes only the rest and matches an uninterrupted run."""
    path = tmp_path / "captions.txt"
    path.write_text("\n".join(CAPTIONS[:40]) + "\n")
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}

    def command(out):
        args = rewrite_args(path, out, tiny_lm_dir, "--chunk-size", "4", "--max-new-tokens", "24")
        return [sys.executable, "-m", "langclip.cli", *args]

    killed = tmp_path / "killed"
    proc = subprocess.Popen(command(killed), cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    chunk_dirs = lambda: [p for p in (killed / "work").glob("shard-*/chunk-*") if not p.name.endswith(".tmp")]  # noqa: E731
    deadline = time.monotonic() + 120
    while not chunk_dirs() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len(chunk_dirs())
    assert 1 <= done < 10, f"the kill should land mid-run, but {done} of 10 chunks were done"

    restart = subprocess.run(command(killed), cwd=REPO, env=env, capture_output=True, text=True, check=True,
                             timeout=600)
    assert f"resuming shard 0: {done} of 10 chunks already done" in restart.stdout
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as OMP_NUM_THREADS=1 in the subprocesses, so that the numbers match exactly
    try:
        cli(command(tmp_path / "clean")[3:])
    finally:
        torch.set_num_threads(threads)
    resumed = rows(killed)
    assert resumed["id"] == [str(i) for i in range(40)]
    assert resumed == rows(tmp_path / "clean")


def test_one_shard_per_launched_process(tmp_path, captions_file):
    """Two processes under a launcher (torchrun; `accelerate launch` sets the same variables) split the
    rows; EDA is seeded per (seed, id, k), so the merge equals a one-process run."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    args = ["rewrite", str(captions_file), "--method", "eda", "--chunk-size", "5", "--output-dir"]
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
              "--master_port", str(free_port()), "-m", "langclip.cli"]
    result = subprocess.run([*launch, *args, str(tmp_path / "two")], cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "shard 1/2" in result.stderr and "shard 2/2" in result.stderr
    cli([*args, str(tmp_path / "one")])
    assert rows(tmp_path / "two") == rows(tmp_path / "one")


# ---- baselines, hub, tiny LM ---------------------------------------------------------------


def test_eda_and_backtranslation_methods(tmp_path, captions_file, tiny_lm_dir):
    cli(["rewrite", str(captions_file), "--method", "eda", "--output-dir", str(tmp_path / "eda"), "--num-rewrites", "3"])
    eda = rows(tmp_path / "eda")
    assert all(sources == ["eda"] * 3 for sources in eda["rewrite_sources"])
    assert sum(status == "ok" for statuses in eda["rewrite_status"] for status in statuses) > 24
    cli(rewrite_args(captions_file, tmp_path / "bt", tiny_lm_dir, "--method", "backtranslation", "--language", "German"))
    bt = rows(tmp_path / "bt")
    assert all(sources == ["backtranslation"] for sources in bt["rewrite_sources"]) and len(bt["id"]) == 24


def test_push_to_hub_pushes_dataset_and_card(tmp_path, captions_file, monkeypatch, capsys):
    calls = []
    monkeypatch.setattr("langclip.processing.generation.rewrite.push_dataset",
                        lambda folder, repo, **kw: calls.append(("pushed", folder, repo, kw)) or "url")
    monkeypatch.setattr("langclip.processing.generation.rewrite.check_hub_access",
                        lambda repo, repo_type: calls.append(("checked", repo, repo_type, (tmp_path / "o").exists())))
    cli(["rewrite", str(captions_file), "--method", "eda", "--output-dir", str(tmp_path / "o"), "--push-to-hub",
         "me/caps", "--private", "--hub-revision", "v1"])
    assert calls.pop(0) == ("checked", "me/caps", "dataset", False)  # before the job wrote anything
    # the one dataset push (hub_cards.push.push_dataset): the output folder, its 24 rows and its card
    assert calls == [("pushed", tmp_path / "o", "me/caps", {"private": True, "revision": "v1"})]
    assert len(load_from_disk(str(tmp_path / "o"))) == 24
    assert "caption-rewriting" in (tmp_path / "o" / "README.md").read_text()
    assert "--hub-revision is deprecated; use --revision" in capsys.readouterr().err


def test_tiny_lm_trains(tmp_path):
    texts = [f"{a} => {b}" for a, b in zip(CAPTIONS, CAPTIONS[1:])]
    model_dir = build_tiny_causal_lm(texts, tmp_path, vocab_size=300, hidden_size=32)
    losses = train_tiny_causal_lm(model_dir, texts, steps=15, batch_size=8)
    assert len(losses) == 15 and sum(losses[-3:]) / 3 < 0.8 * losses[0]
    with pytest.raises(ValueError, match="give steps, seconds or both"):
        train_tiny_causal_lm(model_dir, texts, steps=None)

"""The `langclip differences` job: pairs, filtering, the real pipeline, determinism, shards, resume, bad input."""

import json
from pathlib import Path

import pytest
from datasets import Dataset, load_from_disk
from huggingface_hub import DatasetCard

from conftest import CAPTIONS
from langclip.cli import main as cli
from langclip.processing.generation.backends import row_seed
from langclip.processing.generation.differences import DifferenceWriter, pair_dataset, summarize
from langclip.processing.generation.filters import clean_difference

LONG = "it shows three large red boats on the grass instead of two small blue cars by the sea."


@pytest.fixture
def captions_file(tmp_path):
    path = tmp_path / "captions.jsonl"
    rows = [{"caption": caption, "label": i % 3, "key": f"img{i}"} for i, caption in enumerate(CAPTIONS[:12])]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def job_args(input_path, out, lm, *extra):
    return [
        "differences", str(input_path), "--debug", "--model", lm, "--output-dir", str(out), "--device", "cpu", "--id-column",
        "key", "--max-new-tokens", "3", "--batch-size", "4", "--chunk-size", "4", "--min-chars", "1", *extra,
    ]


def output(out):
    return load_from_disk(str(out)).to_dict(), json.loads((Path(out) / "difference_summary.json").read_text())


def test_pair_dataset_pairs_within_and_across_classes():
    captions = Dataset.from_dict({"caption": [f"c{i}" for i in range(9)], "id": list("abcdefghi"), "y": [0, 1, 2] * 3})
    label = dict(zip(captions["id"], captions["y"]))
    within = pair_dataset(captions, 15, "within-class", "y", seed=1)  # of 3 * 3 * 2 = 18
    assert within["pair"] == [str(i) for i in range(15)]
    assert all(label[a] == label[b] and a != b for a, b in zip(within["id_a"], within["id_b"]))
    assert [f"c{'abcdefghi'.index(a)}" for a in within["id_a"]] == within["caption_a"]
    across = pair_dataset(captions, 20, "across-class", "y", seed=1)
    assert all(label[a] != label[b] for a, b in zip(across["id_a"], across["id_b"]))
    assert pair_dataset(captions, 20, seed=1).to_dict() == pair_dataset(captions, 20, seed=1).to_dict()


def test_writer_filters_and_counts_by_reason():
    scripted = [f" {LONG} Note: I hope this helps.", "```python\nprint(1)\n```" + LONG, "smaller.", "caf\u00e9 " + LONG,
                None]

    def generate(prompts, names, seeds):
        assert prompts[0].startswith("Image A shows: a red dog\nImage B shows: a blue car\n")
        assert names == ["pair ('0', '1')", "pair ('1', '2')", "pair ('2', '3')", "pair ('3', '0')", "pair ('0', '2')"]
        assert seeds == [row_seed(7, "difference", str(i)) for i in range(5)]
        return scripted

    batch = {"pair": [str(i) for i in range(5)], "id_a": list("01230"), "id_b": list("12302"),
             "caption_a": ["a red dog"] * 5, "caption_b": ["a blue car"] * 5}
    columns = DifferenceWriter(generate, seed=7)(batch)
    assert columns == {
        "difference": [LONG, None, None, None, None],
        "difference_status": ["ok", "code_or_markup", "too_short", "non_ascii", "pending"],
        "pending": [False, False, False, False, True],
    }
    assert summarize(Dataset.from_dict(columns)) == {
        "pairs": 5, "kept": 1, "rejected": {"code_or_markup": 1, "non_ascii": 1, "pending": 1, "too_short": 1}
    }


def test_job_through_the_real_pipeline(tmp_path, captions_file, tiny_lm_dir, capsys):
    out = tmp_path / "out"
    assert cli(job_args(captions_file, out, tiny_lm_dir, "--pairing", "within-class", "--label-column", "label",
                        "--num-pairs", "10")) == 0
    rows, summary = output(out)
    assert list(rows) == ["id_a", "id_b", "difference"]
    assert summary["pairs"] == 10 and summary["kept"] + sum(summary["rejected"].values()) == 10
    assert len(rows["id_a"]) == summary["kept"]
    label = {f"img{i}": i % 3 for i in range(12)}
    for a, b, text in zip(rows["id_a"], rows["id_b"], rows["difference"]):
        assert a != b and label[a] == label[b]
        assert clean_difference(text, 1) == (text, "ok")
    printed = capsys.readouterr().out
    assert "10 pairs, " in printed and "saved to" in printed
    card = DatasetCard.load(out / "README.md")  # the one dataset-card producer, hub_cards.cards.dataset_card
    assert "pc-clip" in card.data.tags and card.data.differences["rows"] == summary["kept"]
    assert card.data.differences["per_source"] == {"llm": 10} and card.data.differences["generation"]["pairing"] == "within-class"
    assert card.data.differences["reasons"] == summary["rejected"] and "| pairing | within-class |" in card.text
    assert not (out / "work").exists()
    assert cli(job_args(captions_file, out, tiny_lm_dir, "--pairing", "within-class", "--label-column", "label",
                        "--num-pairs", "10")) == 0
    assert "already holds this job's output" in capsys.readouterr().out


def test_same_seed_same_output_other_seed_other_pairs(tmp_path, captions_file, tiny_lm_dir):
    runs = {}
    for name, seed in (("a", "0"), ("b", "0"), ("c", "1")):
        cli(job_args(captions_file, tmp_path / name, tiny_lm_dir, "--seed", seed, "--min-chars", "0"))
        runs[name] = output(tmp_path / name)
    assert runs["a"][0] == runs["b"][0] and runs["a"][1] == runs["b"][1]
    assert runs["a"][0]["id_a"] != runs["c"][0]["id_a"] or runs["a"][0]["id_b"] != runs["c"][0]["id_b"]


def test_shards_and_chunk_resume_give_the_uninterrupted_output(tmp_path, captions_file, tiny_lm_dir, capsys):
    chunk = ["--chunk-size", "3"]  # shards [0, 6) and [6, 12) cut into the unsharded run's chunks
    cli(job_args(captions_file, tmp_path / "whole", tiny_lm_dir, *chunk, "--num-shards", "1", "--shard-index", "0"))
    out, work = tmp_path / "sharded", tmp_path / "work"
    sharded = job_args(captions_file, out, tiny_lm_dir, *chunk, "--num-shards", "2", "--work-dir", str(work))
    cli(sharded + ["--shard-index", "1"])
    assert "shards [0] are not" in capsys.readouterr().out and not out.exists()
    assert len(list(work.glob("shard-00001-of-00002/chunk-*"))) == 2
    cli(sharded + ["--shard-index", "0"])  # finishes shard 0, finds shard 1 done, merges
    assert output(out) == output(tmp_path / "whole")
    assert not work.exists()


def test_an_interrupted_chunk_is_redone_and_finished_ones_are_kept(tmp_path, captions_file, tiny_lm_dir, capsys):
    out, work = tmp_path / "out", tmp_path / "work"
    args = job_args(captions_file, out, tiny_lm_dir, "--chunk-size", "3", "--num-shards", "2", "--work-dir", str(work))
    cli(args + ["--shard-index", "0"])
    finished = sorted(work.glob("shard-00000-of-00002/chunk-*"))
    kept, lost = finished
    kept_mtime = kept.stat().st_mtime_ns
    lost.rename(lost.with_name(lost.name + ".tmp"))  # as if killed while saving the chunk
    cli(args + ["--shard-index", "0"])
    assert "resuming shard 0: 1 of 2 chunks already done" in capsys.readouterr().out
    assert kept.stat().st_mtime_ns == kept_mtime and lost.exists()
    cli(args + ["--shard-index", "1"])
    cli(job_args(captions_file, tmp_path / "whole", tiny_lm_dir, "--chunk-size", "3"))
    assert output(out) == output(tmp_path / "whole")


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--caption-column", "text"], r"no column 'text' in the input \(columns: \['caption', 'label', 'key'\]\)"),
        (["--pairing", "within-class"], r"pairing 'within-class' needs a label column: --label-column None"),
        (["--pairing", "across-class", "--label-column", "class"], r"--label-column 'class' is not in the input"),
    ],
)
def test_bad_input_gets_a_clear_error(tmp_path, captions_file, tiny_lm_dir, extra, message):
    with pytest.raises(ValueError, match=message):
        cli([*job_args(captions_file, tmp_path / "out", tiny_lm_dir, *extra), "--debug"])  # --debug: the error itself


def test_restart_with_other_settings_is_refused(tmp_path, captions_file, tiny_lm_dir):
    args = job_args(captions_file, tmp_path / "out", tiny_lm_dir, "--num-shards", "2", "--work-dir", str(tmp_path / "w"))
    cli(args + ["--shard-index", "0"])
    # the seed draws other pairs, so the job's input changes too
    with pytest.raises(ValueError, match=r"different settings or input \(seed: 0 -> 5; input: the content of rows 0-11 "
                                         r"changed \(1 of 1 blocks of 10000 rows differ\)\).*--restart"):
        cli([*args + ["--shard-index", "1", "--seed", "5"], "--debug"])  # --debug: the error itself


def test_push_to_hub_pushes_the_folder_as_a_dataset(tmp_path, captions_file, tiny_lm_dir, monkeypatch):
    calls = []
    monkeypatch.setattr(
        "langclip.processing.generation.differences.push_dataset", lambda folder, repo, **kw: calls.append((folder, repo, kw)) or "url"
    )
    monkeypatch.setattr("langclip.processing.generation.differences.check_hub_access",
                        lambda repo, repo_type: calls.append(("checked", repo, repo_type, (tmp_path / "out").exists())))
    out = tmp_path / "out"
    cli(job_args(captions_file, out, tiny_lm_dir, "--push-to-hub", "me/diffs", "--private"))
    assert calls == [("checked", "me/diffs", "dataset", False),  # before the job wrote anything
                     (out, "me/diffs", {"private": True, "revision": None})]

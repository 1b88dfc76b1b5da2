"""The endpoint backend against a loopback OpenAI-compatible server, and the fingerprinted resume of the job."""

import json
from types import SimpleNamespace
from pathlib import Path

import datasets
import pytest
from datasets import load_from_disk
from openai_server import OpenAIServer, pipeline_generate
from transformers import pipeline

from conftest import CAPTIONS
from langclip.cli import main as cli
from langclip.errors import ConfigError
from langclip.processing.generation.backends import EndpointGenerator, completion_text, row_seed
from langclip.processing.generation.prompts import PromptBuilder
from langclip.processing.generation.meta_pairs import load_pool


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """As on a cluster with a local vLLM and no Hub access."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def scripted(prompts, seeds, settings):
    """A server-side 'model' whose text depends only on the request's seed and prompt."""
    return [f" {p.rsplit(chr(10), 1)[-1].removesuffix(' =>').strip()} seen by model {s % 997}\nnext" for p, s in zip(prompts, seeds)]


def endpoint_args(input_path, out, server, *extra):
    return [
        "rewrite", str(input_path), "--backend", "endpoint", "--base-url", server.base_url, "--model", "tiny",
        "--output-dir", str(out), "--sources", "chatgpt", "--chunk-size", "4", "--batch-size", "2",
        "--max-retries", "1", "--timeout", "10", *extra,
    ]


def rows(out):
    return load_from_disk(str(out)).to_dict()


def test_completions_and_chat_through_the_tiny_lm(tiny_lm_dir):
    pipe = pipeline("text-generation", model=tiny_lm_dir, device="cpu")
    pipe.tokenizer.padding_side = "left"
    prompts = ["a red dog on the grass =>", "two blue boats by the sea =>"]
    with OpenAIServer(pipeline_generate(pipe), max_requests=8, lifetime=120) as server:
        for chat in (False, True):
            generator = EndpointGenerator(server.base_url, "tiny", chat=chat, concurrency=2, max_new_tokens=6)
            texts = generator(prompts, seeds=[11, 12])
            generator.close()
            settings = {"max_tokens": 6, "temperature": 0.9, "top_p": 0.95}
            for prompt, seed, text in zip(prompts, (11, 12), texts):  # what the server did for the request, redone
                assert text == pipeline_generate(pipe)([prompt], [seed], settings)[0]
        completion = next(r for r in server.requests if r.get("seed") == 11 and "prompt" in r)
        chat = next(r for r in server.requests if r.get("seed") == 11 and "messages" in r)
    assert completion == {"model": "tiny", "prompt": prompts[0], "max_tokens": 6, "temperature": 0.9, "top_p": 0.95,
                          "seed": 11}
    assert chat["messages"] == [{"role": "user", "content": prompts[0]}] and "prompt" not in chat


def test_429_and_503_are_retried_then_succeed():
    with OpenAIServer(scripted, statuses=[429, 503], max_requests=5, lifetime=60) as server:
        generator = EndpointGenerator(server.base_url, "tiny", max_retries=2)
        assert generator(["a cat =>"], seeds=[5]) == [" a cat seen by model 5\nnext"]
        assert len(server.requests) == 3 and generator.failures == 0
        generator.close()
    with OpenAIServer(scripted, statuses=[429, 429], max_requests=5, lifetime=60) as server:
        generator = EndpointGenerator(server.base_url, "tiny", max_retries=1)
        assert generator(["a cat =>"], seeds=[5]) == [None]  # still 429 after its one retry: the row goes pending
        assert len(server.requests) == 2 and generator.failures == 1 and "429" in generator.last_error
        generator.close()


def test_request_rate_limit_spaces_requests():
    with OpenAIServer(scripted, max_requests=10, lifetime=60) as server:
        generator = EndpointGenerator(server.base_url, "tiny", concurrency=8, requests_per_second=20)
        start = generator._loop.time()
        generator([f"p{i} =>" for i in range(6)], seeds=range(6))
        assert generator._loop.time() - start >= 5 / 20  # six starts, 50 ms apart
        generator.close()


def test_server_killed_mid_job_then_resumed_with_every_id_once(tmp_path, captions_file, capsys):
    with OpenAIServer(scripted, lifetime=120) as healthy:  # the uninterrupted run
        assert cli(endpoint_args(captions_file, tmp_path / "clean", healthy)) == 0
    out = tmp_path / "out"
    with OpenAIServer(scripted, die_after=10, lifetime=120) as dying:
        assert cli(endpoint_args(captions_file, out, dying, "--max-retries", "0", "--concurrency", "3")) == 1
    printed = capsys.readouterr().err  # an incomplete job fails, so that `rewrite ... && train ...` stops
    pending = 24 - dying.answered
    assert dying.answered == 10 and f"error: {pending} captions pending in all (requests that failed): not merged" in printed
    assert not (out / "rewrite_summary.json").exists()
    # resumed against a new server, with another chunk size and concurrency: only pending rows are asked for
    with OpenAIServer(scripted, lifetime=120) as revived:
        assert cli(endpoint_args(captions_file, out, revived, "--chunk-size", "5", "--concurrency", "7")) == 0
    assert len(revived.requests) == pending
    asked = [r["prompt"].rsplit("\n", 1)[-1].removesuffix(" =>") for r in dying.requests[:10] + revived.requests]
    assert sorted(asked) == sorted(CAPTIONS[:24])  # every caption answered exactly once over both runs
    assert rows(out) == rows(tmp_path / "clean")
    assert rows(out)["id"] == [str(i) for i in range(24)]


def test_a_refused_request_stops_the_job_at_once(tmp_path, captions_file, capsys):
    with OpenAIServer(scripted, statuses=[401] * 100, lifetime=60) as server:
        assert cli(endpoint_args(captions_file, tmp_path / "o", server, "--concurrency", "2")) == 1
    error = capsys.readouterr().err
    assert f"the endpoint {server.base_url} refused the request (AuthenticationError" in error and "Traceback" not in error
    assert len(server.requests) <= 4  # the first answers stop it: no retries, no other chunk


def test_answers_without_text_leave_their_rows_pending(tmp_path, captions_file, capsys):
    with OpenAIServer(lambda prompts, seeds, settings: [None] * len(prompts), lifetime=60) as server:
        assert cli(endpoint_args(captions_file, tmp_path / "o", server)) == 1
    error = capsys.readouterr().err
    assert "requests failed (last: an answer without a completion text" in error
    assert "24 captions pending in all" in error and "Traceback" not in error


@pytest.mark.parametrize("response, chat, text", [
    (SimpleNamespace(choices=[SimpleNamespace(text=" ok")]), False, " ok"),
    (SimpleNamespace(choices=[SimpleNamespace(message=SimpleNamespace(content=None))]), True, ""),
    (SimpleNamespace(choices=[SimpleNamespace(text=None)]), False, None),
    (SimpleNamespace(choices=[]), False, None),
    (SimpleNamespace(choices=None), True, None),
    ("<html>busy</html>", False, None),  # a body that is not JSON reaches the client as a string
])
def test_completion_text_reads_only_real_completions(response, chat, text):
    assert completion_text(response, chat) == text


def test_same_seed_same_prompts_whatever_the_concurrency(tmp_path, captions_file):
    runs = {}
    for name, extra in {"c1": ["--concurrency", "1"], "c8": ["--concurrency", "8", "--chunk-size", "7"],
                        "seed1": ["--seed", "1"]}.items():
        with OpenAIServer(scripted, lifetime=120) as server:
            cli(endpoint_args(captions_file, tmp_path / name, server, *extra))
        runs[name] = (sorted((r["prompt"], r["seed"]) for r in server.requests), rows(tmp_path / name))
    assert runs["c1"] == runs["c8"]
    builder = PromptBuilder({"chatgpt": load_pool("chatgpt")}, seed=0)
    assert runs["c1"][0] == sorted((builder(c, str(i), "chatgpt")[0], row_seed(0, str(i), "chatgpt", 0))
                                   for i, c in enumerate(CAPTIONS[:24]))
    assert runs["seed1"][0] != runs["c1"][0]


def test_api_key_from_the_environment_is_sent_and_never_printed(tmp_path, captions_file, capsys, monkeypatch):
    monkeypatch.setenv("MY_KEY", "sk-secret-123")
    with OpenAIServer(scripted, lifetime=60) as server:
        cli(endpoint_args(captions_file, tmp_path / "o", server, "--api-key-env", "MY_KEY"))
    assert server.authorizations and set(server.authorizations) == {"Bearer sk-secret-123"}
    captured = capsys.readouterr()
    assert "sk-secret" not in captured.out + captured.err
    assert cli(endpoint_args(captions_file, tmp_path / "p", server, "--api-key-env", "NOT_SET")) == 1
    assert "error: --api-key-env NOT_SET: that environment variable is not set" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="--api-key-env NOT_SET: that environment variable is not set"):
        cli([*endpoint_args(captions_file, tmp_path / "p", server, "--api-key-env", "NOT_SET"), "--debug"])


# ---- fingerprinted resume (EDA: deterministic per (seed, id, k), no model) ----------------------


def eda_args(input_path, out, *extra):
    return ["rewrite", str(input_path), "--method", "eda", "--output-dir", str(out), "--chunk-size", "4", *extra]


def test_parquet_and_byte_order_marked_text_inputs_read_as_their_captions(tmp_path):
    captions = ["a red dog on the grass", "two blue cars by the sea", "a cat"]
    datasets.Dataset.from_dict({"caption": captions}).to_parquet(str(tmp_path / "caps.parquet"))
    (tmp_path / "caps.txt").write_bytes(("\ufeff" + "\n".join(captions) + "\n").encode())  # as Windows editors save
    for name in ("caps.parquet", "caps.txt"):
        assert cli(eda_args(tmp_path / name, tmp_path / name.replace(".", "_"))) == 0
        assert rows(tmp_path / name.replace(".", "_"))["caption"] == captions


def test_resume_with_edited_input_names_the_change(tmp_path, captions_file):
    out, work = tmp_path / "out", tmp_path / "work"
    sharded = eda_args(captions_file, out, "--num-shards", "2", "--work-dir", str(work))
    cli([*sharded, "--shard-index", "0"])
    captions_file.write_text("\n".join(CAPTIONS[:23] + ["an edited caption"]) + "\n")
    with pytest.raises(ValueError, match=r"different settings or input \(input: the content of rows 0-23 changed "
                                         r"\(1 of 1 blocks of 10000 rows differ\)\).*--restart"):
        cli([*[*sharded, "--shard-index", "1"], "--debug"])  # --debug: the error itself
    captions_file.write_text("\n".join(CAPTIONS[:25]) + "\n")
    with pytest.raises(ValueError, match=r"input: 24 rows -> 25 rows"):
        cli([*[*sharded, "--shard-index", "1"], "--debug"])  # --debug: the error itself
    assert cli([*sharded, "--shard-index", "1", "--restart"]) == 0  # starts over: shard 0 must run again
    assert not out.exists() and cli([*sharded, "--shard-index", "0"]) == 0
    assert rows(out)["caption"] == CAPTIONS[:25]


def test_finished_output_with_edited_input_or_other_seed_is_refused_until_restart(tmp_path, captions_file):
    out = tmp_path / "out"
    cli(eda_args(captions_file, out, "--text-files"))
    with pytest.raises(ValueError, match=r"holds the output of a job with different settings or input \(seed: 0 -> 1\)"):
        cli([*eda_args(captions_file, out, "--seed", "1"), "--debug"])  # --debug: the error itself
    captions_file.write_text("\n".join(["an edited caption"] + CAPTIONS[1:24]) + "\n")
    with pytest.raises(ValueError, match=r"input: the content of rows 0-23 changed"):
        cli([*eda_args(captions_file, out, "--text-files"), "--debug"])  # --debug: the error itself
    assert cli(eda_args(captions_file, out, "--text-files", "--restart")) == 0
    lines = (out / "texts" / "eda.txt").read_text().splitlines()
    assert len(lines) == 24 and rows(out)["caption"][0] == "an edited caption"  # the text files follow the new input


def test_changed_chunk_size_resumes_to_the_same_output(tmp_path, captions_file):
    out, work = tmp_path / "out", tmp_path / "work"
    cli(eda_args(captions_file, tmp_path / "whole"))
    sharded = ["--num-shards", "2", "--work-dir", str(work)]
    cli(eda_args(captions_file, out, *sharded, "--shard-index", "0"))
    saved = sorted(p.name for p in work.glob("shard-00000-of-00002/chunk-*"))
    (work / "shard-00000-of-00002" / saved[-1]).rename(work / "shard-00000-of-00002" / (saved[-1] + ".tmp"))  # lost
    cli(eda_args(captions_file, out, *sharded, "--shard-index", "1", "--chunk-size", "5"))
    cli(eda_args(captions_file, out, *sharded, "--shard-index", "0", "--chunk-size", "3"))  # redoes the lost rows
    assert rows(out) == rows(tmp_path / "whole")
    summary = json.loads((Path(out) / "rewrite_summary.json").read_text())
    assert summary["job"]["config"]["seed"] == 0 and summary["job"]["input"]["rows"] == 24


def test_edited_meta_pair_pool_is_a_change(tmp_path, captions_file):
    pool = tmp_path / "mine.jsonl"
    pairs = [("a dog runs", "a brown dog runs fast"), ("a red car", "a shiny red car parks"), ("two cats", "two cats nap")]
    write = lambda items: pool.write_text("".join(json.dumps({"input": a, "output": b}) + "\n" for a, b in items))  # noqa: E731
    write(pairs)
    with OpenAIServer(scripted, lifetime=120) as server:
        args = [*endpoint_args(captions_file, tmp_path / "out", server), "--sources", str(pool), "--num-shards", "2"]
        cli([*args, "--shard-index", "0"])
        write(pairs[:2] + [("two cats", "two sleepy cats")])
        with pytest.raises(ValueError, match=r"source_fingerprints: \{'.*mine.jsonl': '\w+'\} -> \{'.*mine.jsonl': '\w+'\}"):
            cli([*[*args, "--shard-index", "1"], "--debug"])  # --debug: the error itself


def test_sigint_stops_the_job_at_a_chunk_and_the_rerun_completes(tmp_path, captions_file):
    """Ctrl-C during `langclip rewrite`: the chunk in flight finishes, every finished row is kept, one line says how to
    continue (no traceback, status 130); rerunning the command asks only for the rows not saved."""
    import os
    import signal
    import subprocess
    import sys
    import time

    def slow(prompts, seeds, settings):
        time.sleep(0.15)
        return scripted(prompts, seeds, settings)

    with OpenAIServer(scripted, lifetime=120) as healthy:
        assert cli(endpoint_args(captions_file, tmp_path / "clean", healthy)) == 0
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    with OpenAIServer(slow, lifetime=120) as server:
        process = subprocess.Popen([sys.executable, "-m", "langclip.cli", *endpoint_args(captions_file, out, server,
                                                                                           "--concurrency", "1")],
                                   env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 120
        while len(server.requests) < 6 and process.poll() is None and time.time() < deadline:
            time.sleep(0.01)  # inside the second chunk of 4
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=120)
        first_run = len(server.requests)
    assert process.returncode == 130, stderr[-2000:]
    assert "Traceback" not in stderr, stderr[-2000:]
    assert "stopped by SIGINT: 8 of 24 captions of shard 0 are saved" in stderr and "rerun the same command" in stderr
    assert first_run == 8  # the second chunk finished; no third chunk was started
    with OpenAIServer(scripted, lifetime=120) as revived:
        assert cli(endpoint_args(captions_file, out, revived)) == 0
    assert len(revived.requests) == 24 - 8
    assert rows(out) == rows(tmp_path / "clean")

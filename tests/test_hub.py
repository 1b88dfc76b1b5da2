"""Model and dataset cards, and the push -> download round trip through a loopback Hub.

The round trip runs the real `huggingface_hub` client in subprocesses pointed at the test
server by HF_ENDPOINT (read at import time), with a fake HF_TOKEN. The download side runs
isolated (`python -I`) with langclip blocked, so it loads the pushed remote code.
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from huggingface_hub import DatasetCard, EvalResult, ModelCard, metadata_eval_result, metadata_load

from langclip import LaCLIPModel
from langclip.evaluation.manifest import TASKS
from langclip.hub_cards.cards import DatasetCardFields, dataset_card, model_card
from langclip.hub_cards.records import TASKS as CARD_TASKS
from langclip.hub_cards.records import eval_results, merge_eval_results
from langclip.hub_cards.push import check_hub_access, check_repo_id, hub_token, push_dataset, push_folder, push_model
from langclip.hub_cards.push import update_eval_results

from conftest import WITHOUT_LANGCLIP, tiny_laclip_config
from hub_server import HubServer

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "hf_test_secret_token_123"
ZERO_SHOT = {
    "task": "zero-shot",
    "dataset": {"id": "shapes/colours", "name": "Colours", "split": "test"},
    "metrics": {"top1": 0.5, "top5": 1.0},
}
RETRIEVAL = {
    "task": "retrieval",
    "dataset": {"id": "shapes/captions", "split": "test"},
    "metrics": {"image_to_text_R@1": 0.25, "text_to_image_R@1": 0.125},
}


def _config(tokenizer) -> dict:
    return tiny_laclip_config(tokenizer, multi_positive=True).to_dict()


def test_model_card_parses_back_with_eval_results(tokenizer, tmp_path):
    card = model_card(
        _config(tokenizer),
        "me/laclip-tiny",
        [ZERO_SHOT, RETRIEVAL],
        base_model="openai/clip-vit-base-patch16",
        datasets=["me/cc3m-rewrites"],
        training={"learning_rate": 0.001, "epochs": 35},
    )
    card.save(tmp_path / "README.md")
    metadata = metadata_load(tmp_path / "README.md")
    assert metadata["library_name"] == "transformers"
    assert metadata["pipeline_tag"] == "zero-shot-image-classification"
    assert metadata["base_model"] == "openai/clip-vit-base-patch16"
    assert metadata["datasets"] == ["me/cc3m-rewrites"]
    assert {"langclip", "laclip-mt"} <= set(metadata["tags"])
    loaded = ModelCard.load(tmp_path / "README.md")
    assert loaded.data.eval_results == eval_results([ZERO_SHOT, RETRIEVAL])
    by_metric = {r.metric_type: r for r in loaded.data.eval_results}
    assert len(by_metric) == 4 and by_metric["top1"].metric_value == 0.5
    assert by_metric["top1"].task_type == "zero-shot-image-classification"
    assert by_metric["top1"].dataset_type == "shapes/colours" and by_metric["top1"].dataset_split == "test"
    assert by_metric["text_to_image_R@1"].dataset_name == "shapes/captions"  # no name given: the id
    for text in ("LaCLIP-MT", "| learning_rate | 0.001 |", "patch 8, 32 px", "Intended use and limitations",
                 "fan2023laclip", "liu2024clips", "sam2025pcclip"):
        assert text in loaded.text


def test_eval_records_are_checked():
    assert set(TASKS) == set(CARD_TASKS)  # every `langclip eval` task has a model-index entry
    with pytest.raises(ValueError, match="task must be one of"):
        eval_results([{**ZERO_SHOT, "task": "zero_shot"}])
    with pytest.raises(ValueError, match="dataset.split is missing"):
        eval_results([{**ZERO_SHOT, "dataset": {"id": "x"}}])


def test_merge_eval_results_replaces_the_same_metric():
    old = eval_results([ZERO_SHOT, RETRIEVAL])
    new = eval_results([{**ZERO_SHOT, "metrics": {"top1": 0.75}}])
    merged = merge_eval_results(old, new)
    assert len(merged) == len(old)
    assert [r.metric_value for r in merged if r.metric_type == "top1"] == [0.75]
    other_split = eval_results([{**ZERO_SHOT, "dataset": {**ZERO_SHOT["dataset"], "split": "val"}}])
    assert len(merge_eval_results(old, other_split)) == len(old) + 2
    assert all(isinstance(r, EvalResult) for r in merged)


def test_dataset_card_parses_back(tmp_path):
    prompt = "write image captions differently,\n\na dog => a brown dog runs\n\nquery =>"
    card = dataset_card(DatasetCardFields(
        "CC3M rewrites",
        ["pixparse/cc3m-wds"],
        "meta-llama/Llama-2-7b-hf",
        prompt,
        rewrites_per_source={"chatgpt": 100, "coco": 98},
        fallbacks={"coco": 2},
        num_rows=100,
        generation={"temperature": 0.9, "top_p": 0.95},
    ))
    card.save(tmp_path / "README.md")
    metadata = metadata_load(tmp_path / "README.md")
    assert metadata["source_datasets"] == ["pixparse/cc3m-wds"]
    assert metadata["rewrites"]["llm"] == "meta-llama/Llama-2-7b-hf"
    assert metadata["rewrites"]["per_source"] == {"chatgpt": 100, "coco": 98}
    assert metadata["rewrites"]["fallbacks"] == {"chatgpt": 0, "coco": 2}
    loaded = DatasetCard.load(tmp_path / "README.md")
    assert prompt in loaded.text and "| coco | 98 | 2 |" in loaded.text and "| temperature | 0.9 |" in loaded.text
    with pytest.raises(ValueError, match="without rewrites: bard"):
        dataset_card(DatasetCardFields("x", [], "llm", "p", {"chatgpt": 1}, {"bard": 1}, 1))


def test_bad_push_input_gets_clear_errors(tmp_path, monkeypatch):
    import huggingface_hub.constants

    for variable in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    with pytest.raises(ValueError, match="no Hugging Face token: set HF_TOKEN"):
        hub_token()
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")
    with pytest.raises(ValueError, match="no Hugging Face token"):
        push_folder(tmp_path / "model", "me/model")
    (tmp_path / "model" / "weights.bin").write_bytes(b"")
    for bad in ("bad name!", "no-namespace", "a/b/c", "me/-dash-"):
        with pytest.raises(ValueError, match=f"invalid repo id '{bad}'"):
            check_repo_id(bad)
    with pytest.raises(ValueError, match=r"pickle files \(weights.bin\).*safetensors only"):
        push_folder(tmp_path / "model", "me/model", token="hf_x")
    with pytest.raises(ValueError, match="has no config.json"):
        push_model(tmp_path, "me/model", token="hf_x")


def _run(code: str, env: dict, isolated: bool = False, cwd: Path = ROOT) -> str:
    command = [sys.executable, *(["-I"] if isolated else []), "-c", textwrap.dedent(code)]
    result = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert TOKEN not in result.stdout + result.stderr  # the token is never printed or logged
    return result.stdout


DOWNLOAD = WITHOUT_LANGCLIP + """
    import torch
    from huggingface_hub import ModelCard, hf_hub_download
    from transformers import AutoModel, CLIPModel
    pixels = torch.load(sys.argv[1], weights_only=True)
    out = {}
    for name, model in [
        ("auto", AutoModel.from_pretrained("me/laclip-tiny", revision="v1", trust_remote_code=True)),
        ("clip", CLIPModel.from_pretrained("me/laclip-tiny", revision="v1")),
    ]:
        out[name] = [type(model).__name__, model.get_image_features(pixel_values=pixels).pooler_output.tolist()]
    card = ModelCard.load(hf_hub_download("me/laclip-tiny", "README.md", revision="v1"))
    out["results"] = {r.metric_type: r.metric_value for r in card.data.eval_results}
    print(json.dumps(out))
"""


def test_push_then_download_round_trip_with_remote_code(tokenizer, tmp_path):
    model = LaCLIPModel(tiny_laclip_config(tokenizer)).eval()
    model.save_pretrained(tmp_path / "ckpt")
    tokenizer.save_pretrained(tmp_path / "ckpt")
    (tmp_path / "zero-shot.json").write_text(json.dumps(ZERO_SHOT))
    pixels = torch.randn(2, 3, 32, 32)
    torch.save(pixels, tmp_path / "pixels.pt")
    with torch.no_grad():
        expected = model.get_image_features(pixel_values=pixels).pooler_output

    with HubServer() as hub:
        env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_TOKEN": TOKEN, "HF_HOME": str(tmp_path / "hf-home")}
        env.pop("HF_HUB_OFFLINE", None)
        push = f"""
            from langclip.cli import main
            main(["push", "{tmp_path / 'ckpt'}", "me/laclip-tiny", "--private", "--revision", "v1",
                  "--eval-results", "{tmp_path / 'zero-shot.json'}", "--base-model", "openai/clip-vit-base-patch32"])
        """
        assert "pushed" in _run(push, env)
        repo = hub.repos[("model", "me/laclip-tiny")]
        assert repo.private and hub.tokens == {TOKEN}
        assert hub.commits("me/laclip-tiny") == 1  # folder, card and remote code in one commit
        files = repo.branches["v1"][1]
        assert repo.branches["main"][1] == {}  # pushed to the revision only
        assert {"model.safetensors", "tokenizer.json", "README.md", "modeling_laclip.py", "configuration_laclip.py",
                "losses.py"} <= set(files)
        assert json.loads(files["config.json"])["auto_map"] == {
            "AutoConfig": "configuration_laclip.LaCLIPConfig",
            "AutoModel": "modeling_laclip.LaCLIPModel",
            "AutoModelForZeroShotImageClassification": "modeling_laclip.LaCLIPModel",
        }

        update = """
            from langclip.hub_cards.push import update_eval_results
            record = {"task": "zero-shot", "dataset": {"id": "shapes/colours", "name": "Colours", "split": "test"},
                      "metrics": {"top1": 0.75}}
            update_eval_results("me/laclip-tiny", [record], revision="v1")
        """
        _run(update, env)
        assert hub.commits("me/laclip-tiny") == 2

        downloaded = json.loads(_run(DOWNLOAD.replace("sys.argv[1]", repr(str(tmp_path / "pixels.pt"))), env,
                                     isolated=True, cwd=tmp_path))
    assert downloaded["auto"][0] == "LaCLIPModel" and downloaded["clip"][0] == "CLIPModel"
    for name in ("auto", "clip"):
        torch.testing.assert_close(torch.tensor(downloaded[name][1]), expected)
    assert downloaded["results"] == {"top1": 0.75, "top5": 1.0}  # updated in place, the rest kept


def test_push_dataset_folder_with_its_card(tmp_path, monkeypatch):
    import huggingface_hub.constants

    from langclip.cli import main

    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train.jsonl").write_text('{"caption": "a dog", "rewrites": ["a brown dog"]}\n')
    info = {"pretty_name": "Rewrites", "source_datasets": ["me/captions"], "llm": "tiny-llama", "prompt": "p =>",
            "rewrites_per_source": {"coco": 1}, "fallbacks": {"coco": 0}, "num_rows": 1}
    (tmp_path / "info.json").write_text(json.dumps(info))
    with HubServer() as hub:
        monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", hub.url)
        monkeypatch.setenv("HF_TOKEN", TOKEN)
        main(["push", str(tmp_path / "data"), "me/rewrites", "--repo-type", "dataset", "--card-info",
              str(tmp_path / "info.json")])
        files = hub.repos[("dataset", "me/rewrites")].branches["main"][1]
    assert files["train.jsonl"] == (tmp_path / "data" / "train.jsonl").read_bytes()
    card = DatasetCard(files["README.md"].decode())
    assert card.data.rewrites["per_source"] == {"coco": 1} and card.data.source_datasets == ["me/captions"]
    (tmp_path / "bad.json").write_text(json.dumps({**info, "temperature": 0.9}))
    with pytest.raises(ValueError, match="bad.json: .*unexpected keyword argument 'temperature'"):
        main(["push", "--debug", str(tmp_path / "data"), "me/rewrites", "--repo-type", "dataset", "--card-info",
              str(tmp_path / "bad.json")])


def test_push_dataset_sends_a_saved_dataset_as_parquet_with_its_card_and_files(tmp_path, monkeypatch):
    import huggingface_hub.constants
    import pyarrow.parquet as pq
    from datasets import Dataset

    folder = tmp_path / "rewrites"
    Dataset.from_dict({"caption": ["a dog", "a cat"], "rewrites": [["a brown dog"], ["a grey cat"]]}).save_to_disk(
        str(folder))
    (folder / "README.md").write_text("---\npretty_name: Rewrites\n---\n# Rewrites\n")
    (folder / "rewrite_summary.json").write_text('{"rows": 2}')
    with HubServer() as hub:
        monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", hub.url)
        monkeypatch.setenv("HF_TOKEN", TOKEN)
        push_dataset(folder, "me/rewrites", private=True)
        files = hub.repos[("dataset", "me/rewrites")].branches["main"][1]
    assert set(files) == {"README.md", "rewrite_summary.json", "data/train-00000-of-00001.parquet"}
    (tmp_path / "train.parquet").write_bytes(files["data/train-00000-of-00001.parquet"])
    assert pq.read_table(tmp_path / "train.parquet").to_pydict() == {
        "caption": ["a dog", "a cat"], "rewrites": [["a brown dog"], ["a grey cat"]]}
    assert files["README.md"] == (folder / "README.md").read_bytes()


def test_pushed_card_names_the_repo_keeps_metadata_and_shows_results(tokenizer, tmp_path, monkeypatch):
    import huggingface_hub.constants

    folder = tmp_path / "laclip-local-name"
    LaCLIPModel(tiny_laclip_config(tokenizer)).save_pretrained(folder)
    card = model_card(_config(tokenizer), "laclip-local-name", base_model="openai/clip-vit-base-patch32",
                      datasets=["me/cc3m-rewrites"], training={"lr": 0.001})
    card.save(folder / "README.md")  # as `langclip train` writes it, before any eval
    (folder / "train_log.jsonl").write_text('{"step": 1, "path": "/home/me/data"}\n')
    (folder / "runs" / "run1").mkdir(parents=True)
    (folder / "runs" / "run1" / "events.out.tfevents.1.host").write_bytes(b"/home/me")
    few_shot = {"task": "few-shot", "dataset": {"id": str(tmp_path / "data" / "my-pets"), "split": "test"},
                "metrics": {"accuracy": 0.8, "ci95": 0.02}}
    with HubServer() as hub:
        monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", hub.url)
        push_model(folder, "me/laclip-tiny", [ZERO_SHOT, few_shot], token=TOKEN)
        files = hub.repos[("model", "me/laclip-tiny")].branches["main"][1]
    assert not any(name.startswith(("train_log", "runs/")) for name in files)  # logs hold local paths
    text = files["README.md"].decode()
    (tmp_path / "README.md").write_text(text)
    metadata = metadata_load(tmp_path / "README.md")
    assert metadata["base_model"] == "openai/clip-vit-base-patch32" and metadata["datasets"] == ["me/cc3m-rewrites"]
    assert metadata["model-index"][0]["name"] == "me/laclip-tiny"
    convention = metadata_eval_result(  # huggingface_hub's own spelling of one result
        model_pretty_name="me/laclip-tiny", task_pretty_name="Zero-shot image classification",
        task_id="zero-shot-image-classification", metrics_pretty_name="zero-shot top1", metrics_id="top1",
        metrics_value=0.5, dataset_pretty_name="Colours", dataset_id="shapes/colours", dataset_split="test",
    )["model-index"][0]["results"][0]
    convention["metrics"][0].pop("verified")  # False by default, omitted by ModelCardData
    assert {**convention, "metrics": convention["metrics"]} in [
        {**r, "metrics": [m]} for r in metadata["model-index"][0]["results"] for m in r["metrics"]]
    loaded = ModelCard(text)
    assert {(r.metric_type, r.dataset_type) for r in loaded.data.eval_results} == {
        ("top1", "shapes/colours"), ("top5", "shapes/colours"), ("accuracy", "my-pets")}  # no ci95, no local path
    assert 'from_pretrained("me/laclip-tiny"' in text and "laclip-local-name" not in text
    assert "Not evaluated yet" not in text and "| 0.8000 | 95% interval ±0.0200 |" in text
    assert "| lr | 0.001 |" in text  # the training setup survives the rebuild


def test_early_hub_check_private_and_revision(tokenizer, tmp_path, monkeypatch):
    import huggingface_hub.constants

    with HubServer(orgs=("lab",), accepted={TOKEN}) as hub:
        monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", hub.url)
        with pytest.raises(ValueError, match="rejected the token"):
            check_hub_access("me/model", token="hf_wrong")
        with pytest.raises(ValueError, match="me cannot create other/model: .* under lab, me only"):
            check_hub_access("other/model", token=TOKEN)
        assert check_hub_access("lab/model", token=TOKEN) == TOKEN
        hub.role = "read"
        with pytest.raises(ValueError, match="read-only"):
            check_hub_access("me/model", token=TOKEN)
        assert not any(method == "POST" for method, _ in hub.requests)  # nothing was created or uploaded

        hub.role = "write"  # `langclip train --push-to-hub --private --revision`: checked first, pushed at the end
        from langclip.training.trainer import train_in_process

        monkeypatch.setenv("HF_TOKEN", "hf_wrong")
        with pytest.raises(ValueError, match="rejected the token"):
            train_in_process({"train_data": str(tmp_path / "never-read"), "push_to_hub": True,
                              "hub_model_id": "me/tiny", "output_dir": str(tmp_path / "out")})
        assert not (tmp_path / "out").exists()  # failed before any work
    folder = tmp_path / "ckpt"
    LaCLIPModel(tiny_laclip_config(tokenizer)).save_pretrained(folder)
    with HubServer() as hub:
        monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", hub.url)
        monkeypatch.setenv("HF_TOKEN", TOKEN)
        from langclip.cli import main

        main(["push", str(folder), "me/tiny", "--private", "--revision", "dev"])
        repo = hub.repos[("model", "me/tiny")]
        assert repo.private and "model.safetensors" in repo.branches["dev"][1] and repo.branches["main"][1] == {}


def test_unreachable_hub_is_named(tmp_path, monkeypatch):
    import huggingface_hub.constants

    from conftest import free_port

    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", f"http://127.0.0.1:{free_port()}")
    for call in (lambda: check_hub_access("me/model", token=TOKEN),
                 lambda: update_eval_results("me/model", [ZERO_SHOT], token=TOKEN)):
        with pytest.raises(ConnectionError, match="cannot reach the Hugging Face Hub at http://127.0.0.1"):
            call()

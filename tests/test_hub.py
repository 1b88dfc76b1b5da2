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
from huggingface_hub import DatasetCard, EvalResult, ModelCard, metadata_load

from langclip import LaCLIPModel
from langclip.hub_cards.cards import dataset_card
from langclip.evaluation.run import TASKS
from langclip.hub_cards.cards import TASKS as CARD_TASKS
from langclip.hub_cards.cards import eval_results, merge_eval_results, model_card
from langclip.hub_cards.push import check_repo_id, hub_token, push_folder, push_model

from conftest import tiny_laclip_config
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
    card = dataset_card(
        "CC3M rewrites",
        ["pixparse/cc3m-wds"],
        "meta-llama/Llama-2-7b-hf",
        prompt,
        rewrites_per_source={"chatgpt": 100, "coco": 98},
        fallbacks={"coco": 2},
        num_rows=100,
        generation={"temperature": 0.9, "top_p": 0.95},
    )
    card.save(tmp_path / "README.md")
    metadata = metadata_load(tmp_path / "README.md")
    assert metadata["source_datasets"] == ["pixparse/cc3m-wds"]
    assert metadata["rewrites"]["llm"] == "meta-llama/Llama-2-7b-hf"
    assert metadata["rewrites"]["per_source"] == {"chatgpt": 100, "coco": 98}
    assert metadata["rewrites"]["fallbacks"] == {"chatgpt": 0, "coco": 2}
    loaded = DatasetCard.load(tmp_path / "README.md")
    assert prompt in loaded.text and "| coco | 98 | 2 |" in loaded.text and "| temperature | 0.9 |" in loaded.text
    with pytest.raises(ValueError, match="without rewrites: bard"):
        dataset_card("x", [], "llm", "p", {"chatgpt": 1}, {"bard": 1}, 1)


def test_bad_push_input_gets_clear_errors(tmp_path, monkeypatch):
    import huggingface_hub.constants

    for variable in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    with pytest.raises(ValueError, match="no Hugging Face token: set HF_TOKEN"):
        hub_token()
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "weights.bin").write_bytes(b"")
    with pytest.raises(ValueError, match="no Hugging Face token"):
        push_folder(tmp_path / "model", "me/model")
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


DOWNLOAD = """
    import json, sys
    sys.modules["langclip"] = None  # langclip cannot be imported here
    try:
        import langclip
        raise SystemExit("langclip should not be importable")
    except ImportError:
        pass
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

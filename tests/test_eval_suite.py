"""`langclip eval --suite` on a tiny suite in the shipped manifests' format, made here: one zero-shot top-1
dataset (a saved DatasetDict, also few-shot), one mean-per-class dataset and one retrieval dataset (both
webdataset shards as in the clip-benchmark repos: webp/cls/txt members)."""

import io
import json
import warnings

import datasets
import numpy as np
import pytest
import torch
import yaml
from PIL import Image

import langclip.evaluation.features as features_module
from langclip import LaCLIPModel
from langclip.cli import main
from langclip.evaluation.differences import CLASS_PROMPT, comparative_class_embeddings, difference_classification
from langclip.evaluation.features import FeatureStore, encode_dataset, encode_images, encode_texts
from langclip.evaluation.linear_probe import linear_probe
from langclip.evaluation.run import load_model
from langclip.evaluation.manifest import DatasetSpec, EvalOptions, load_suite, shipped_suites
from langclip.evaluation.suite import run_task
from langclip.evaluation.templates import LACLIP_IMAGENET_TEMPLATES
from langclip.evaluation.zero_shot import zero_shot_accuracy, zero_shot_classifier
from langclip.hub_cards.records import load_eval_records
from langclip.testing import write_tar

from conftest import tiny_laclip_config

COLOURS = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255), "yellow": (255, 255, 0)}
NAMES = list(COLOURS)


def _image(colour: str, row: int) -> Image.Image:
    pixels = np.zeros((40, 48, 3), dtype=np.uint8)
    pixels[row % 20 : row % 20 + 20, :24] = COLOURS[colour]
    return Image.fromarray(pixels)


def _webp(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="webp", lossless=True)
    return buffer.getvalue()


def write_shards(folder, samples: list[dict]) -> None:
    """clip-benchmark layout: ``<folder>/test/0.tar`` with ``<key>.webp`` and ``<key>.cls`` / ``<key>.txt``."""
    (folder / "test").mkdir(parents=True)
    write_tar(folder / "test" / "0.tar", [(f"s{index:07d}.{extension}", data) for index, sample in enumerate(samples)
                                          for extension, data in sample.items()])


CLASSIFICATION = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=NAMES)})
# class 0 has 9 images, the others 3: mean-per-class accuracy weighs each class alike
IMBALANCED = [0] * 9 + [1, 2, 3] * 3
# rows 3 and 10 (in different batches of 7) and rows 0 and 12 are the same image; several captions repeat
RETRIEVAL = [("red", 0, "a red square\nred shape on the left"), ("green", 1, "a green square"),
             ("blue", 2, "a blue square\nblue shape"), ("yellow", 3, "a yellow square"),
             ("red", 4, "a red square"), ("green", 5, "green shape on the left"), ("blue", 6, "a blue square"),
             ("yellow", 7, "yellow shape"), ("red", 8, "red shape"), ("green", 9, "a green square"),
             ("yellow", 3, "a yellow square\nyellow shape on the left"), ("blue", 11, "blue"),
             ("red", 0, "a red square")]


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tokenizer):
    root = tmp_path_factory.mktemp("suite")
    torch.manual_seed(5)  # a random model that gets some classes right, so mean-per-class differs from top-1
    LaCLIPModel(tiny_laclip_config(tokenizer)).save_pretrained(root / "model")
    tokenizer.save_pretrained(root / "model")
    splits = {split: {"image": [_image(NAMES[i % 4], i + offset) for i in range(n)], "label": [i % 4 for i in range(n)]}
              for split, n, offset in (("train", 16, 1), ("test", 24, 0))}
    datasets.DatasetDict({k: datasets.Dataset.from_dict(v, features=CLASSIFICATION) for k, v in splits.items()}
                         ).save_to_disk(root / "shapes")
    write_shards(root / "colours", [{"webp": _webp(_image(NAMES[label], i)), "cls": str(label).encode()}
                                    for i, label in enumerate(IMBALANCED)])
    write_shards(root / "captions", [{"webp": _webp(_image(colour, row)), "txt": text.encode()}
                                     for colour, row, text in RETRIEVAL])
    manifest = {
        "name": "tiny",
        "description": "three tiny datasets",
        "defaults": {"split": "test", "templates": list(LACLIP_IMAGENET_TEMPLATES)},
        "datasets": {
            "shapes": {"name": "Shapes", "path": "shapes", "image_column": "image", "tasks": ["zero-shot", "few-shot"]},
            "colours": {"name": "Colours", "path": "colours", "image_column": ["webp", "png", "jpg"],
                        "label_column": "cls", "metric": "mean_per_class", "classnames": NAMES},
            "captions": {"name": "Captions", "path": "captions", "image_column": ["webp", "png", "jpg"],
                         "tasks": ["retrieval"], "caption_column": "txt", "caption_separator": "\n"},
            "cub": {"name": "CUB", "path": None, "note": "no public copy"},
        },
    }
    (root / "tiny.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False), encoding="utf-8")
    return root


def _run_suite(setup, output, *extra):
    flags = ["eval", "--model", str(setup / "model"), "--suite", str(setup / "tiny.yaml"), "--output-dir", str(output),
             "--n-way", "3", "--n-shot", "2", "--n-query", "2", "--episodes", "5", "--device", "cpu", *extra]
    with pytest.warns(UserWarning, match="'cub' is skipped: no path \\(no public copy\\): add it with --dataset-path"):
        assert main(flags) == 0
    return json.loads((output / "results.json").read_text())


def test_suite_writes_json_table_plot_and_reuses_cached_features(setup, tmp_path, capsys, monkeypatch):
    calls = []

    def counting(*args, **kwargs):
        calls.append(kwargs.get("description"))
        return encode_dataset(*args, **kwargs)

    monkeypatch.setattr(features_module, "encode_dataset", counting)
    combined = _run_suite(setup, tmp_path / "run1", "--batch-size", "7")
    # one pass per dataset split: few-shot reused the zero-shot features of Shapes
    assert sorted(calls) == ["Captions test", "Colours test", "Shapes test"]
    records = combined["results"]
    assert [(r["key"], r["task"], r["main_metric"]) for r in records] == [
        ("shapes", "zero-shot", "top1"), ("shapes", "few-shot", "accuracy"),
        ("colours", "zero-shot", "mean_per_class"), ("captions", "retrieval", "mean_R@1")]
    assert combined["skipped"] == {"cub": "no path (no public copy): add it with --dataset-path cub=FOLDER"}
    assert combined["average"] == pytest.approx(sum(r["score"] for r in records) / 4)
    for record in records:
        assert record["score"] == record["metrics"][record["main_metric"]]
        assert json.loads((tmp_path / "run1" / f"{record['key']}__{record['task']}.json").read_text()) == record
    assert (tmp_path / "run1" / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # the table: header, separator, a row per dataset x task, the average; printed as written
    table = (tmp_path / "run1" / "results.md").read_text().split("\n\n")[1].strip()
    lines = table.splitlines()
    assert lines[0].startswith("| dataset | task | split | score | top1 | top5 | mean_per_class |")
    assert len(lines) == 2 + 4 + 1 and lines[-1].startswith(f"| **average** (4) | | | {combined['average']:.4f} |")
    assert lines[4].startswith(f"| Colours | zero-shot | test | {records[2]['score']:.4f} (mean_per_class) |")
    assert table in capsys.readouterr().out
    assert "Not run: cub" in (tmp_path / "run1" / "results.md").read_text()

    # mean-per-class with the manifest's class names, against the functional API on the same images
    model, tokenizer, processor = load_model(str(setup / "model"), "cpu")
    images = [_image(NAMES[label], i).convert("RGB") for i, label in enumerate(IMBALANCED)]
    features = encode_images(model, [processor(images=images, return_tensors="pt")["pixel_values"]], progress=False)
    classifier = zero_shot_classifier(model, tokenizer, NAMES, LACLIP_IMAGENET_TEMPLATES, progress=False)
    assert records[2]["metrics"] == pytest.approx(zero_shot_accuracy(features, classifier, torch.tensor(IMBALANCED)),
                                                  abs=1e-6)
    assert records[2]["metrics"]["mean_per_class"] != records[2]["metrics"]["top1"]

    # a second run with the same cache folder encodes nothing and gives the same results
    calls.clear()
    again = _run_suite(setup, tmp_path / "run2", "--batch-size", "5", "--cache-dir", str(tmp_path / "run1" / "cache"))
    assert calls == []
    strip = lambda rs: [{k: v for k, v in r.items() if k != "seconds"} for r in rs]  # noqa: E731
    assert strip(again["results"]) == strip(records)

    # `langclip push --eval-results results.json` reads the combined file
    assert [r["task"] for r in load_eval_records([tmp_path / "run1" / "results.json"])] == [r["task"] for r in records]

    # --compare tables two runs side by side
    assert main(["eval", "--compare", str(tmp_path / "run1"), str(tmp_path / "run2"), "--output-dir",
                 str(tmp_path / "cmp")]) == 0
    compared = (tmp_path / "cmp" / "compare.md").read_text().splitlines()
    assert compared[0] == f"| dataset (task) | metric | {setup / 'model'} | {setup / 'model'} ({tmp_path / 'run2'}) |"
    assert compared[2] == f"| Shapes (zero-shot) | top1 | {records[0]['score']:.4f} | {records[0]['score']:.4f} |"
    assert len(compared) == 2 + 4 + 1 and (tmp_path / "cmp" / "compare.png").stat().st_size > 0


def test_retrieval_with_ties_is_the_same_at_batch_sizes_1_7_and_64_with_workers_and_streamed(setup):
    model, tokenizer, processor = load_model(str(setup / "model"), "cpu")
    spec = load_suite(str(setup / "tiny.yaml"), only=["captions"]).datasets[0]
    results = []
    for batch_size, workers, streaming in ((1, 0, False), (7, 0, False), (64, 0, False), (7, 2, False), (5, 0, True)):
        options = EvalOptions(batch_size=batch_size, num_workers=workers, streaming=streaming, progress=False)
        store = FeatureStore(model, processor, options)
        record = run_task(model, tokenizer, spec, "retrieval", store, options, "tiny")
        found = next(iter(store.memory.values()))
        assert torch.equal(found.full[3], found.full[10]) and torch.equal(found.full[0], found.full[12])
        assert record["settings"] == {"texts": 16, "distinct_texts": 11, "distinct_images": 11}
        results.append(record["metrics"])
    # exactly, not approximately; also with 2 decoding workers, and streamed
    assert results[0] == results[1] == results[2] == results[3] == results[4]
    # the 6 captions of rows 0, 3, 10 and 12 have a copy of their image among the wrong ones, which ties with
    # it: ties count against the model, so none of them is a text->image R@1 hit
    assert results[0]["text_to_image_R@1"] <= 10 / 16


def test_suite_errors_name_the_file_dataset_and_key(setup, tmp_path):
    def manifest(**entry):
        path = tmp_path / "bad.yaml"
        path.write_text(yaml.safe_dump({"datasets": {"d": {"path": str(setup / "shapes"), **entry}}}))
        return str(path)

    with pytest.raises(ValueError, match=r"bad.yaml, dataset 'd': unknown key\(s\) label; known keys: "):
        load_suite(manifest(label="cls"))
    with pytest.raises(ValueError, match="dataset 'd': tasks must be a non-empty list of zero-shot, retrieval"):
        load_suite(manifest(tasks=["zero_shot"]))
    with pytest.raises(ValueError, match="dataset 'd': metric must be one of top1, mean_per_class"):
        load_suite(manifest(metric="top-1"))
    with pytest.raises(ValueError, match="template 'a photo' must contain"):
        load_suite(manifest(templates=["a photo"]))
    with pytest.raises(ValueError, match="no dataset\\(s\\) nope; it has d"):
        load_suite(manifest(), {"nope": "x"})
    with pytest.raises(ValueError, match="neither a shipped suite \\(laclip, quick, retrieval\\) nor a file"):
        load_suite("missing")

    model, tokenizer, processor = load_model(str(setup / "model"), "cpu")
    options = EvalOptions(progress=False)

    def run(task="zero-shot", **entry):
        spec = DatasetSpec(key="d", tasks=[task], **entry)
        return run_task(model, tokenizer, spec, task, FeatureStore(model, processor, options), options, "tiny")

    strings = datasets.Dataset.from_dict({"image": [_image("red", 0), _image("blue", 1)], "label": ["red", "pink"]})
    strings.save_to_disk(tmp_path / "strings")
    with pytest.raises(ValueError, match="label column 'label' is Value, so it carries no class names: give `classn"):
        run(path=str(tmp_path / "strings"), split="train")
    with pytest.raises(ValueError, match="dataset 'd', split 'train', row 1: label 'pink' is not one of the 4 class"):
        run(path=str(tmp_path / "strings"), split="train", classnames=NAMES, templates=["a {}"])
    datasets.Dataset.from_dict({"image": [], "label": []}, features=CLASSIFICATION).save_to_disk(tmp_path / "empty",
                                                                                      num_shards=1)
    with pytest.raises(ValueError, match="has no rows: nothing to evaluate"):
        run(path=str(tmp_path / "empty"), split="test")
    with pytest.raises(ValueError, match="no column 'cls' \\(set `label_column` in the manifest, --label-column"):
        run(path=str(setup / "shapes"), label_column="cls")


def test_pcclip_tasks_from_the_cli(setup, tmp_path):
    model, tokenizer, processor = load_model(str(setup / "model"), "cpu")
    test = datasets.load_from_disk(str(setup / "shapes"))["test"]
    pixels = processor(images=[image.convert("RGB") for image in test["image"]], return_tensors="pt")["pixel_values"]
    images = encode_images(model, [pixels], progress=False)

    # difference classification: `langclip differences` rows joined to the images by id
    with_ids = test.add_column("id", [f"img{i}" for i in range(len(test))])
    with_ids.save_to_disk(tmp_path / "images")
    rows = [{"id_a": "img0", "id_b": "img1", "difference": "a red square on the left"},
            {"id_a": "img2", "id_b": "img5", "difference": "the first is blue"},
            {"id_a": "img7", "id_b": "img3", "difference": "a yellow shape"}]
    (tmp_path / "diffs.jsonl").write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    output = tmp_path / "difference.json"
    assert main(["eval", "--model", str(setup / "model"), "--dataset", str(tmp_path / "images"),
                 "--task", "difference-classification", "--differences", str(tmp_path / "diffs.jsonl"),
                 "--output", str(output)]) == 0
    texts = encode_texts(model, tokenizer, [row["difference"] for row in rows], progress=False)
    expected = difference_classification(images[[0, 2, 7]], images[[1, 5, 3]], texts)
    record = json.loads(output.read_text())
    assert record["metrics"]["accuracy"] == pytest.approx(expected) and record["settings"]["pairs"] == 3
    (tmp_path / "unknown.jsonl").write_text(json.dumps({"id_a": "img0", "id_b": "nope", "difference": "x"}) + "\n")
    with pytest.raises(ValueError, match="unknown.jsonl, row 0: image id 'nope' is not in dataset"):
        main(["eval", "--debug", "--model", str(setup / "model"), "--dataset", str(tmp_path / "images"),
              "--task", "difference-classification", "--differences", str(tmp_path / "unknown.jsonl")])

    # comparative prompting: class differences by name, the paper's class prompt, alpha
    (tmp_path / "classes.csv").write_text("class_a,class_b,difference\nred,green,a red square\nblue,green,blue\n")
    assert main(["eval", "--model", str(setup / "model"), "--dataset", str(setup / "shapes"), "--task", "zero-shot",
                 "--comparative", str(tmp_path / "classes.csv"), "--alpha", "0.5", "--output", str(output)]) == 0
    plain = zero_shot_classifier(model, tokenizer, NAMES, [CLASS_PROMPT], progress=False)
    differences = encode_texts(model, tokenizer, ["a red square", "blue"], progress=False)
    refined = comparative_class_embeddings(plain, [(0, 1, differences[0]), (2, 1, differences[1])], alpha=0.5)
    record = json.loads(output.read_text())
    labels = torch.tensor(test["label"])
    assert record["metrics"] == pytest.approx(zero_shot_accuracy(images, refined, labels), abs=1e-6)
    assert record["settings"]["top1_without_comparative"] == pytest.approx(
        zero_shot_accuracy(images, plain, labels)["top1"], abs=1e-6)
    assert record["settings"]["differences"] == 2 and record["settings"]["alpha"] == 0.5


def test_linear_probe_warns_when_c_is_at_the_grid_edge():
    rng = np.random.default_rng(0)

    def split(n0, n1):  # separable; 4:1 imbalance in train, so C = 1e-3 only learns the intercept
        return np.concatenate([rng.normal(-1, 0.3, (n0, 2)), rng.normal(1, 0.3, (n1, 2))]), np.array([0] * n0 + [1] * n1)

    train, validation, test = split(40, 10), split(10, 10), split(10, 10)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = linear_probe(train, validation, test, cs=(1e-3, 1.0, 1e3), progress=False)
    assert result["C"] == 1.0 and not result["C_at_grid_edge"] and result["mean_per_class"] == 1.0
    with pytest.warns(UserWarning, match="the chosen C=1 is at the edge of the grid \\[1.0, 1000.0\\]"):
        result = linear_probe(train, validation, test, cs=(1.0, 1e3), progress=False)
    assert result["C_at_grid_edge"]


def test_shipped_manifests_load_and_follow_the_protocol():
    assert shipped_suites() == ["laclip", "quick", "retrieval"]
    with pytest.warns(UserWarning, match="'cub' is skipped"):
        laclip = load_suite("laclip")
    assert len(laclip.datasets) == 15 and set(laclip.skipped) == {"cub"}
    assert {d.key for d in laclip.datasets if d.metric == "mean_per_class"} == {"aircraft", "pets", "caltech101",
                                                                                "flowers"}
    sizes = {d.key: len(d.classnames) for d in laclip.datasets}
    assert sizes == {"food101": 101, "cifar10": 10, "cifar100": 100, "sun397": 397, "cars": 196, "aircraft": 100,
                     "dtd": 47, "pets": 37, "caltech101": 102, "flowers": 102, "stl10": 10, "eurosat": 10,
                     "resisc45": 45, "gtsrb": 43, "imagenet1k": 1000}
    assert all(d.path.startswith("clip-benchmark/wds_") for d in laclip.datasets)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # with a local copy, CUB runs
        chosen = load_suite("laclip", {"cub": "/data/cub"}, only=["cub", "cifar10"]).datasets
    assert [(d.key, d.path, d.classnames) for d in chosen][0] == ("cifar10", "clip-benchmark/wds_cifar10", [
        "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"])
    assert (chosen[1].key, chosen[1].path, chosen[1].templates) == ("cub", "/data/cub", ["a photo of a {}, a type of bird."])
    retrieval = load_suite("retrieval")
    assert [(d.path, d.caption_separator, d.tasks) for d in retrieval.datasets] == [
        ("clip-benchmark/wds_mscoco_captions", "\n", ["retrieval"]), ("clip-benchmark/wds_flickr30k", "\n", ["retrieval"])]
    assert [d.key for d in load_suite("quick").datasets] == ["cifar10", "dtd", "pets", "flickr30k"]


def test_training_evaluates_the_suite_and_puts_the_final_results_in_the_card(tmp_path):
    from huggingface_hub import ModelCard

    from langclip.training.trainer import train_in_process
    from train_utils import make_training_files

    values = make_training_files(tmp_path)
    datasets.DatasetDict({"test": datasets.Dataset.from_dict(
        {"image": [_image(NAMES[i % 4], i) for i in range(8)], "label": [i % 4 for i in range(8)]},
        features=CLASSIFICATION)}).save_to_disk(tmp_path / "eval_data")
    (tmp_path / "eval.yaml").write_text(yaml.safe_dump({"name": "mini", "datasets": {"shapes": {
        "name": "Shapes", "path": str(tmp_path / "eval_data"), "templates": ["a photo of a {}."]}}}))
    output = tmp_path / "run"
    train_in_process({**values, "method": "clip", "max_steps": 4, "output_dir": str(output),
                      "eval_suite": str(tmp_path / "eval.yaml"), "eval_steps": 3})
    assert sorted(p.name for p in (output / "eval").iterdir()) == ["step-3", "step-4"]  # every 3 steps and the end
    final = json.loads((output / "eval" / "step-4" / "results.json").read_text())
    assert final["suite"] == "mini" and [r["key"] for r in final["results"]] == ["shapes"]
    card = ModelCard.load(output / "README.md")
    index = {(r.dataset_name, r.metric_type): r.metric_value for r in card.data.eval_results}
    assert index[("Shapes", "top1")] == final["results"][0]["metrics"]["top1"]

"""Every accepted input format becomes image/caption/id(/rewrites) records; bad input names itself."""

import io
import json

import datasets
import numpy as np
import pytest
import torch
from PIL import Image

from langclip.processing.loading import load_image_text_dataset
from langclip.processing.transforms import BadSampleError, ImageTransform, decode_image
from langclip.processing.collators import ContrastiveCollator
from langclip.processing.text import TextAugmenter
from langclip.testing import write_tar

MEAN, STD = [0.5, 0.5, 0.5], [0.25, 0.25, 0.25]


def png_bytes(value: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((10, 12, 3), value, dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def write_images(folder, count):
    folder.mkdir(exist_ok=True)
    for i in range(count):
        (folder / f"{i}.png").write_bytes(png_bytes(20 * i))


def test_imagefolder_with_metadata_and_column_mapping(tmp_path):
    write_images(tmp_path, 3)
    with open(tmp_path / "metadata.jsonl", "w") as handle:
        for i in range(3):
            handle.write(json.dumps({"file_name": f"{i}.png", "text": f"caption number {i}"}) + "\n")
    dataset = load_image_text_dataset(str(tmp_path), caption_column="text")
    assert sorted(dataset["caption"]) == [f"caption number {i}" for i in range(3)]
    assert sorted(dataset["id"]) == ["0", "1", "2"]
    row = next(r for r in dataset if r["caption"] == "caption number 2")
    assert np.asarray(decode_image(row["image"]))[0, 0, 0] == 40
    with pytest.raises(ValueError, match="caption column 'caption' is not in the dataset"):
        load_image_text_dataset(str(tmp_path))


def test_saved_dataset_folder_keeps_ids_and_rewrites(tmp_path):
    images = [Image.fromarray(np.full((4, 4, 3), v, dtype=np.uint8)) for v in (0, 255)]
    saved = datasets.Dataset.from_dict(
        {"img": images, "caption": ["a b", "c d"], "id": ["x", "y"], "rewrites": [["r1 r1"], ["r2 r2"]]},
        features=datasets.Features({"img": datasets.Image(), "caption": datasets.Value("string"),
                                    "id": datasets.Value("string"),
                                    "rewrites": datasets.List(datasets.Value("string"))}),
    )
    saved.save_to_disk(str(tmp_path / "ds"))
    dataset = load_image_text_dataset(str(tmp_path / "ds"), image_column="img")
    assert dataset["id"] == ["x", "y"] and dataset["rewrites"] == [["r1 r1"], ["r2 r2"]]
    assert not dataset.features["image"].decode


def test_laclip_csv_with_augmented_files(tmp_path):
    write_images(tmp_path / "imgs", 3)
    (tmp_path / "data.csv").write_text("relpath,caption\n" + "".join(f"imgs/{i}.png,web caption {i}\n" for i in range(3)))
    for source in ("chatgpt", "coco"):
        (tmp_path / f"{source}.txt").write_text("".join(f"{source} rewrite {i}\n" for i in range(3)))
    files = [str(tmp_path / "chatgpt.txt"), str(tmp_path / "coco.txt")]
    dataset = load_image_text_dataset(str(tmp_path / "data.csv"), augmented_files=files)
    assert dataset[1]["caption"] == "web caption 1"
    assert dataset[1]["rewrites"] == ["chatgpt rewrite 1", "coco rewrite 1"]
    assert dataset[1]["rewrite_sources"] == ["chatgpt", "coco"]
    assert np.asarray(decode_image(dataset[2]["image"]))[0, 0, 0] == 40
    (tmp_path / "coco.txt").write_text("only one line\n")
    with pytest.raises(ValueError, match=r"coco\.txt has 1 lines but .*data\.csv has 3 rows"):
        load_image_text_dataset(str(tmp_path / "data.csv"), augmented_files=files)
    (tmp_path / "bad.csv").write_text("relpath,caption\nimgs/0.png\n")
    with pytest.raises(ValueError, match=r"bad\.csv, line 2"):
        load_image_text_dataset(str(tmp_path / "bad.csv"))


def make_shards(folder):
    folder.mkdir()
    write_tar(folder / "00000.tar", [("s/000.png", png_bytes(0)), ("s/000.txt", b"first caption"),
                                       ("s/001.png", png_bytes(50)), ("s/001.json", b'{"caption": "second caption"}')])
    write_tar(folder / "00001.tar", [("002.jpg", b"corrupt"), ("002.txt", b"third caption"),
                                       ("003.png", png_bytes(90)), ("003.txt", b"fourth caption")])


def test_webdataset_shards_stream_in_order(tmp_path):
    make_shards(tmp_path / "shards")
    dataset = load_image_text_dataset(str(tmp_path / "shards"))
    assert isinstance(dataset, datasets.IterableDataset)
    rows = list(dataset)
    assert [r["id"] for r in rows] == ["s/000", "s/001", "002", "003"]
    assert [r["caption"] for r in rows] == ["first caption", "second caption", "third caption", "fourth caption"]
    assert np.asarray(decode_image(rows[1]["image"]))[0, 0, 0] == 50
    with pytest.raises(BadSampleError, match=r"00001\.tar/002\.jpg"):
        decode_image(rows[2]["image"], where="row '002'")


def test_webdataset_sample_without_caption_names_shard_and_key(tmp_path):
    (tmp_path / "s").mkdir()
    write_tar(tmp_path / "s" / "0.tar", [("k1.png", png_bytes(0))])
    with pytest.raises(ValueError, match=r"0\.tar: sample 'k1' has no caption"):
        list(load_image_text_dataset(str(tmp_path / "s")))


def test_dataloader_workers_skip_and_count_the_corrupt_image(tmp_path, tokenizer):
    make_shards(tmp_path / "shards")
    dataset = load_image_text_dataset(str(tmp_path / "shards"))
    collator = ContrastiveCollator(tokenizer, 16, augmenter=TextAugmenter(0), skip_bad_samples=True,
                                   image_transform=ImageTransform(8, MEAN, STD, train=True))
    loader = torch.utils.data.DataLoader(dataset, batch_size=2, num_workers=2, collate_fn=collator)
    batches = list(loader)
    assert sum(b["num_skipped"].sum().item() for b in batches) == 1
    assert sum(b["pixel_values"].shape[0] for b in batches) == 3

"""Web-scale data on tiny shards made here: rewrites from shards and sidecars, column checks, shard and block
shuffles, resampling, --train-num-samples, exact resume of the stream, truncated shards counted."""

import io
import json
import subprocess
import sys
import tarfile

import numpy as np
import pytest
from PIL import Image

from langclip.processing.collators import ContrastiveCollator
from langclip.processing.loading import load_image_text_dataset
from langclip.processing.shards import ShardError, shard_captions, sidecar_path, write_sidecars
from langclip.processing.transforms import SKIP_KINDS, ImageTransform
from langclip.testing import write_tar
from langclip.training.data import StreamedBatches, load_shard_stream, split_warning
from langclip.training.methods import Method
from train_utils import TINY_MODEL_CONFIG, WORDS, read_log

MEAN, STD = [0.5, 0.5, 0.5], [0.25, 0.25, 0.25]


def png_bytes(value: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((12, 12, 3), value % 256, dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def make_shards(folder, num_shards=4, per_shard=6, fields=lambda key: {"rewrites": [f"rewrite one of {key}",
                                                                                  f"rewrite two of {key}"]}):
    """``num_shards`` img2dataset-style shards of ``per_shard`` samples: ``<key>.png`` + ``<key>.json``
    (caption "caption of <key>" plus ``fields(key)``); keys are ``SSSSSIIII``."""
    folder.mkdir(exist_ok=True)
    for shard in range(num_shards):
        members = []
        for i in range(per_shard):
            key = f"{shard:05d}{i:04d}"
            record = {"caption": f"caption of {key}", **fields(key)}
            members += [(f"{key}.png", png_bytes(shard * per_shard + i)), (f"{key}.json", json.dumps(record).encode())]
        write_tar(folder / f"{shard:05d}.tar", members)
    return folder


def ids(dataset):
    return [row["id"] for row in dataset]


def method_collator(name: str, tokenizer, **options):
    """The collator of the ``name`` preset (no image transform: the tests read its texts)."""
    method = Method.preset(name, **options)
    return method.objective.collator(tokenizer, 16, None, None, method.row_options)


def test_laclip_on_shards_draws_the_rewrites_at_the_uniform_rate(tmp_path, tokenizer):
    stream = load_shard_stream(str(make_shards(tmp_path / "s", per_shard=30)), seed=0)
    collator = method_collator("laclip", tokenizer, seed=0)
    counts = {"caption": 0, "rewrite one": 0, "rewrite two": 0}
    for pass_index in range(3):  # 360 draws; each source has probability 1/3
        collator.epoch = pass_index
        for row in stream.dataset(pass_index):
            text = collator.texts_for(row)[0]
            assert text.endswith(row["id"])
            counts[next(source for source in counts if text.startswith(source))] += 1
    assert sum(counts.values()) == 360
    for source, count in counts.items():
        assert 120 - 3 * 9 <= count <= 120 + 3 * 9, (source, counts)  # 3 sigma of Binomial(360, 1/3)
    clip = method_collator("clip", tokenizer, seed=0)
    assert all(clip.texts_for(row)[0] == row["caption"] for row in stream.dataset(0))


def test_sidecar_rewrites_join_by_sample_key(tmp_path):
    folder = make_shards(tmp_path / "s", num_shards=2, per_shard=3, fields=lambda key: {})
    captions = shard_captions(str(folder))
    assert captions["id"][:4] == ["000000000", "000000001", "000000002", "000010000"]
    assert captions["caption"][4] == "caption of 000010001"
    rewritten = captions.map(lambda row: {"rewrites": [f"new {row['id']}"], "rewrite_sources": ["llm"]})
    paths = write_sidecars(rewritten.shuffle(seed=0))  # the join is by key, not by row order
    assert paths == [sidecar_path(str(folder / "00000.tar")), sidecar_path(str(folder / "00001.tar"))]
    assert paths[0].endswith("00000.rewrites.parquet")
    rows = list(load_image_text_dataset(str(folder)))
    assert [row["rewrites"] for row in rows] == [[f"new {row['id']}"] for row in rows]
    assert all(row["rewrite_sources"] == ["llm"] for row in rows) and len(rows) == 6
    rewritten.filter(lambda row: row["id"] != "000010002").select_columns(["id", "rewrites"]).to_parquet(paths[1])
    with pytest.raises(ValueError, match=r"00001\.rewrites\.parquet has no row for sample '000010002'"):
        list(load_image_text_dataset(str(folder)))


@pytest.mark.parametrize("method", ["clip", "laclip", "laclip-mt", "clips"])
def test_each_method_checks_its_columns_on_shards(tmp_path, method):
    plain = load_shard_stream(str(make_shards(tmp_path / "plain", 2, 2, fields=lambda key: {}))).dataset()
    named = load_shard_stream(
        str(make_shards(tmp_path / "named", 2, 2, fields=lambda key: {"llm_rewrites": ["r r"], "recap": "long"})),
        rewrites_column="llm_rewrites").dataset()
    assert named.column_names == ["image", "caption", "id", "rewrites", "recap"]
    instance = Method.preset(method, synthetic_column="recap") if method == "clips" else Method.preset(method)
    instance.check_columns(named.column_names, "named")
    needed = {"clip": None, "laclip": "rewrites", "laclip-mt": "rewrites", "clips": "recap"}[method]
    if needed is None:
        instance.check_columns(plain.column_names, "plain")
    else:
        with pytest.raises(ValueError, match=rf"needs the column\(s\) '{needed}', which plain"):
            instance.check_columns(plain.column_names, "plain")


def test_shard_order_and_block_shuffle_follow_the_seed(tmp_path):
    folder = str(make_shards(tmp_path / "s", num_shards=4, per_shard=6))
    stream = load_shard_stream(folder, seed=1, shuffle_buffer=4)
    first = ids(stream.dataset(0))
    assert sorted(first) == sorted(ids(stream.dataset())) and len(set(first)) == 24  # a permutation of one pass
    assert first == ids(load_shard_stream(folder, seed=1, shuffle_buffer=4).dataset(0))  # same seed, same order
    assert first != ids(load_shard_stream(folder, seed=2, shuffle_buffer=4).dataset(0))
    assert first != ids(stream.dataset(1))  # a new order every pass
    assert [stream.order(k) for k in range(3)] != [sorted(stream.shards)] * 3
    blocks = [first[i:i + 4] for i in range(0, 24, 4)]
    assert any(block != sorted(block) for block in blocks)  # samples shuffled within their block
    unshuffled = ids(load_shard_stream(folder, seed=1, shuffle_buffer=0).dataset(0))
    assert [sorted(block) for block in blocks] == [sorted(unshuffled[i:i + 4]) for i in range(0, 24, 4)]


def test_resampled_passes_draw_shards_with_replacement(tmp_path):
    stream = load_shard_stream(str(make_shards(tmp_path / "s", num_shards=4, per_shard=2)), resampled=True)
    orders = [stream.order(k) for k in range(6)]
    assert all(len(order) == 4 and set(order) <= set(stream.shards) for order in orders)
    assert any(len(set(order)) < 4 for order in orders)
    assert orders == [stream.order(k) for k in range(6)]
    rows = ids(stream.dataset(next(k for k, order in enumerate(orders) if len(set(order)) < 4)))
    assert len(rows) == 8 and len(set(rows)) < 8  # a shard drawn twice yields its samples twice


def batch_ids(batch):
    return batch["input_ids"].tolist(), batch["pixel_values"].sum(dim=(1, 2, 3)).tolist()


@pytest.mark.parametrize("num_workers", [0, 2])
def test_stream_resumes_from_its_state_to_the_same_batches(tmp_path, tokenizer, num_workers):
    stream = load_shard_stream(str(make_shards(tmp_path / "s", num_shards=4, per_shard=6)), seed=3, shuffle_buffer=4)

    def batches():
        collator = ContrastiveCollator(tokenizer, 16, augmenter=method_collator("laclip", tokenizer)
                                       .augmenter, image_transform=ImageTransform(8, MEAN, STD, train=True))
        return StreamedBatches(stream, collator, batch_size=4, loader={"num_workers": num_workers})

    full = [batch_ids(b) for b in batches().take(15)]  # 6 batches a pass: the resume falls inside pass 1
    first = batches()
    head = [batch_ids(b) for b in first.take(8)]
    state = json.loads(json.dumps(first.state_dict()))
    assert state["pass"] == 1
    resumed = batches()
    resumed.load_state_dict(state)
    assert head + [batch_ids(b) for b in resumed.take(7)] == full
    assert full[:6] != full[6:12]  # passes differ


def test_a_stream_left_half_read_exits_quietly(tmp_path):
    folder = make_shards(tmp_path / "s", num_shards=2, per_shard=6)
    script = ("import sys\nfrom langclip.training.data import load_shard_stream\n"
              "from langclip.training.data import StreamedBatches\n"
              "batches = StreamedBatches(load_shard_stream(sys.argv[1]), lambda rows: {}, 4).take(10)\n"
              "next(batches)\n")  # the shard generator is still open when the interpreter shuts down
    result = subprocess.run([sys.executable, "-c", script, str(folder)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "Exception ignored" not in result.stderr, result.stderr


def test_uneven_shards_warn():
    assert split_warning(8, 2, 4) is None
    assert "3 shards do not divide among 2 processes" in split_warning(3, 2, 0)
    assert "3 shards per process do not divide among 2 DataLoader workers" in split_warning(6, 2, 2)


def member_ends(shard) -> list[tuple[int, int]]:
    """(data offset, end of the 512-byte-padded data) of each member of a tar file."""
    with tarfile.open(shard) as tar:
        return [(m.offset_data, m.offset_data + -(-m.size // 512) * 512) for m in tar.getmembers()]


def test_truncated_shard_is_named_and_its_lost_samples_counted(tmp_path, tokenizer):
    folder = make_shards(tmp_path / "s", num_shards=2, per_shard=6)
    shard = folder / "00001.tar"
    members = member_ends(shard)  # png, json of sample 0, png, json of sample 1, ...
    shard.write_bytes(shard.read_bytes()[: members[4][0] + 10])  # inside sample 2's image: tarfile raises
    with pytest.raises(ShardError, match=r"00001\.tar is truncated or corrupt: unreadable after 2 samples .*; "
                                         r"1 samples lost; pass --skip-bad-samples"):
        list(load_shard_stream(str(folder)).dataset())
    (folder / "00001_stats.json").write_text(json.dumps({"successes": 6}))  # img2dataset's count: 4 lost
    rows = list(load_shard_stream(str(folder), skip_bad_samples=True).dataset())
    assert [row["lost_samples"] for row in rows] == [None] * 8 + [4]
    collator = ContrastiveCollator(tokenizer, 16, image_transform=ImageTransform(8, MEAN, STD), skip_bad_samples=True)
    batch = collator(rows[5:])
    truncated = SKIP_KINDS.index("truncated")
    assert batch["num_skipped"].tolist() == [4 if kind == truncated else 0 for kind in range(len(SKIP_KINDS))]
    assert batch["pixel_values"].shape[0] == 3

    shard = folder / "00000.tar"
    shard.write_bytes(shard.read_bytes()[: member_ends(shard)[5][1]])  # cut between files, after 3 samples
    assert len(list(load_shard_stream(str(folder / "00000.tar")).dataset())) == 3  # unseen without a count
    (folder / "00000_stats.json").write_text(json.dumps({"successes": 6}))
    with pytest.raises(ShardError, match=r"00000\.tar is truncated or corrupt: ends after 3 of 6 samples; 3 samples"):
        list(load_shard_stream(str(folder)).dataset())


def train_on_shards(tmp_path, folder, **values):
    from langclip.testing import train_word_tokenizer
    from langclip.training.trainer import train_in_process

    train_word_tokenizer([WORDS], max_length=16).save_pretrained(str(tmp_path / "tokenizer"))
    return train_in_process({"train_data": str(folder), "tokenizer_name_or_path": str(tmp_path / "tokenizer"),
                             "model_config": TINY_MODEL_CONFIG, "per_device_batch_size": 4, "report_to": "none",
                             "save_steps": 0, "output_dir": str(tmp_path / "out"), **values})


def test_train_num_samples_sets_the_epoch_of_a_resampled_stream(tmp_path):
    folder = make_shards(tmp_path / "s", num_shards=2, per_shard=6)
    summary = train_on_shards(tmp_path, folder, method="laclip", train_num_samples=10, num_epochs=2,
                              dataset_resampled=True)
    assert summary["step"] == 4 and [r["step"] for r in read_log(tmp_path / "out" / "train_log.jsonl")] == [1, 2, 3, 4]


def test_streamed_training_loads_with_the_trainers_worker_settings(tmp_path, monkeypatch):
    import langclip.training.data as data

    loaders = []

    class Recorded(data.StatefulDataLoader):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            loaders.append(self)

    monkeypatch.setattr(data, "StatefulDataLoader", Recorded)
    folder = make_shards(tmp_path / "s", num_shards=2, per_shard=4)
    assert train_on_shards(tmp_path, folder, method="laclip", max_steps=2, num_workers=1)["step"] == 2
    assert loaders and all(loader.num_workers == 1 and loader.prefetch_factor == 4 for loader in loaders)
    assert not any(loader.pin_memory for loader in loaders)  # page-locked only for a CUDA device


def test_train_on_shards_without_rewrites_stops_before_the_first_step(tmp_path):
    folder = make_shards(tmp_path / "s", num_shards=2, per_shard=4, fields=lambda key: {"llm": ["x y"]})
    with pytest.raises(ValueError, match=r"--objective multi-positive with --text-sampling rewrites needs the column\(s\) 'rewrites'"):
        train_on_shards(tmp_path, folder, method="laclip-mt", max_steps=1)
    assert not (tmp_path / "out" / "train_log.jsonl").exists()
    assert train_on_shards(tmp_path, folder, method="laclip-mt", max_steps=1, rewrites_column="llm")["step"] == 1


def test_langclip_rewrite_over_shards_writes_sidecars_that_training_joins(tmp_path):
    from langclip.cli import main as cli

    folder = make_shards(tmp_path / "s", num_shards=2, per_shard=3, fields=lambda key: {})
    assert cli(["rewrite", str(folder), "--method", "eda", "--num-rewrites", "2", "--output-dir",
                str(tmp_path / "out")]) == 0
    rows = list(load_image_text_dataset(str(folder)))
    assert (folder / "00001.rewrites.parquet").exists() and len(rows) == 6
    assert all(len(row["rewrites"]) == 2 and row["rewrite_sources"] == ["eda", "eda"] for row in rows)
    assert all(row["caption"] == f"caption of {row['id']}" for row in rows)


def test_resume_catches_a_shard_replaced_in_place(tmp_path):
    """The data fingerprint covers each local shard's size and modification time: --resume continues over the same
    shards and refuses once one shard is rewritten in place (same path, same keys, other and longer image bytes)."""
    folder = make_shards(tmp_path / "s", num_shards=2, per_shard=4)
    assert train_on_shards(tmp_path, folder, method="laclip", max_steps=1, save_steps=1)["step"] == 1
    assert train_on_shards(tmp_path, folder, method="laclip", max_steps=2, save_steps=1, resume=True)["step"] == 2
    members = [(f"0000100{i:02d}.png", png_bytes(200 + i) * 2) for i in range(4)]
    members += [(f"0000100{i:02d}.json", json.dumps({"caption": "c", "rewrites": ["r"]}).encode()) for i in range(4)]
    write_tar(folder / "00001.tar", sorted(members))
    with pytest.raises(ValueError, match="data_fingerprint"):
        train_on_shards(tmp_path, folder, method="laclip", max_steps=3, save_steps=1, resume=True)

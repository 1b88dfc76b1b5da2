"""Patch dropout (FLIP / OpenCLIP's PatchDropout): what is kept, the randomness, eval mode, checkpoints, training."""

import json

import pytest
import torch
from accelerate.state import AcceleratorState
from conftest import tiny_laclip_config
from huggingface_hub.errors import StrictDataclassClassValidationError
from test_modeling_clips import tiny_clips_config
from train_utils import as_flags, make_training_files, parse_train_args
from transformers import CLIPModel

from langclip import LaCLIPModel
from langclip.errors import ConfigError
from langclip.modeling import CLIPSModel
from langclip.modeling.vision import PatchDropout, set_patch_dropout
from langclip.training.trainer import train

NUM_PATCHES = 16  # 32 px images, patch 8


@pytest.fixture(autouse=True)
def _fresh_accelerator():
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


def tokens(batch: int = 3, num_patches: int = NUM_PATCHES, width: int = 4) -> torch.Tensor:
    """(batch, 1 + N, width) embeddings whose every token is distinct: token t of image b is b * 1000 + t."""
    ids = torch.arange(batch)[:, None] * 1000 + torch.arange(1 + num_patches)[None]
    return ids[..., None].float().expand(-1, -1, width).clone()


def kept_ids(dropped: torch.Tensor) -> torch.Tensor:
    return dropped[..., 0].long() % 1000


@pytest.mark.parametrize("prob, kept", [(0.5, 8), (0.75, 4), (0.3, 11), (0.99, 1)])
def test_keeps_the_class_token_and_the_stated_fraction_of_distinct_patches_in_order(prob, kept):
    dropout = PatchDropout(prob).train()
    out = kept_ids(dropout(tokens()))
    assert out.shape == (3, 1 + kept)  # round((1 - P) * N) patches, at least one
    assert (out[:, 0] == 0).all()  # the class token, first
    patches = out[:, 1:]
    assert ((patches >= 1) & (patches <= NUM_PATCHES)).all()
    assert (patches[:, 1:] > patches[:, :-1]).all()  # distinct, in their spatial order


def test_dropped_patches_follow_the_global_seed_and_differ_per_image():
    dropout = PatchDropout(0.5).train()
    draws = {}
    for seed in (0, 0, 1):
        torch.manual_seed(seed)
        draws.setdefault(seed, []).append(kept_ids(dropout(tokens(batch=8))))
    assert torch.equal(draws[0][0], draws[0][1])  # the seed controls it
    assert not torch.equal(draws[0][0], draws[1][0])  # and another seed draws other patches
    assert len({tuple(row.tolist()) for row in draws[0][0]}) > 1  # each image its own draw


def test_off_in_eval_mode_and_at_zero():
    assert torch.equal(PatchDropout(0.5).eval()(tokens()), tokens())
    assert torch.equal(PatchDropout(0.0).train()(tokens()), tokens())
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        PatchDropout(1.0)


@pytest.mark.parametrize("options", [{}, {"vision_qk_norm": True, "vision_pre_layernorm": False}])
def test_laclip_eval_output_equals_the_model_without_dropout(tokenizer, options):
    plain = LaCLIPModel(tiny_laclip_config(tokenizer, **options))
    dropped = LaCLIPModel(tiny_laclip_config(tokenizer, patch_dropout=0.5, **options))
    dropped.load_state_dict(plain.state_dict())
    assert set(dropped.state_dict()) == set(plain.state_dict())  # no new weights
    pixels = torch.randn(3, 3, 32, 32)
    plain.eval(), dropped.eval()
    with torch.no_grad():
        assert torch.equal(dropped.get_image_features(pixel_values=pixels).pooler_output,
                           plain.get_image_features(pixel_values=pixels).pooler_output)
        dropped.train()
        trained = dropped.vision_model(pixels)
    assert trained.last_hidden_state.shape[1] == 1 + 8
    # the training forward is the tower's on the kept tokens: same weights, the kept embeddings given directly
    torch.manual_seed(3)
    with torch.no_grad():
        out = dropped.vision_model(pixels).last_hidden_state
        torch.manual_seed(3)
        kept = dropped.vision_model.embeddings.patch_dropout(plain.vision_model.embeddings(pixels))
        expected = plain.vision_model.encoder(plain.vision_model.pre_layrnorm(kept)).last_hidden_state
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)


def test_standard_tower_stays_a_clip_vision_model_and_loads_in_clip_model(tokenizer, tmp_path):
    model = LaCLIPModel(tiny_laclip_config(tokenizer, patch_dropout=0.5))
    assert type(model.vision_model).__name__ == "CLIPVisionModel"  # patch dropout reaches the plain tower too
    model.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["patch_dropout"] == 0.5
    clip = CLIPModel.from_pretrained(tmp_path).eval()
    model.eval()
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(clip.get_image_features(pixel_values=pixels).pooler_output,
                                   model.get_image_features(pixel_values=pixels).pooler_output)


def test_checkpoint_round_trip_and_deterministic_eval(tokenizer, tmp_path):
    model = LaCLIPModel(tiny_laclip_config(tokenizer, patch_dropout=0.75, vision_qk_norm=True))
    model.save_pretrained(tmp_path)
    loaded = LaCLIPModel.from_pretrained(tmp_path)
    assert loaded.config.patch_dropout == 0.75 and loaded.vision_model.embeddings.patch_dropout.prob == 0.75
    assert not loaded.training  # from_pretrained returns eval mode: no patch dropped
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        first = loaded.get_image_features(pixel_values=pixels).pooler_output
        torch.manual_seed(123)
        second = loaded.get_image_features(pixel_values=pixels).pooler_output
        torch.testing.assert_close(first, model.eval().get_image_features(pixel_values=pixels).pooler_output)
    assert torch.equal(first, second)
    with pytest.raises(StrictDataclassClassValidationError, match=r"patch_dropout must be in \[0, 1\)"):
        tiny_laclip_config(tokenizer, patch_dropout=1.0)
    with pytest.raises(StrictDataclassClassValidationError, match="patch_dropout"):
        tiny_laclip_config(tokenizer, patch_dropout=-0.1)


def test_clips_mean_pooling_uses_the_kept_patches_and_the_captioner_sees_them(tokenizer):
    model = CLIPSModel(tiny_clips_config(tokenizer, vision_pooling="mean", patch_dropout=0.5)).train()
    pixels = torch.randn(2, 3, 32, 32)
    torch.manual_seed(1)
    out = model.vision_model(pixels)
    assert out.last_hidden_state.shape[1] == 1 + 8
    torch.testing.assert_close(out.pooler_output, model.vision_model.post_layernorm(out.last_hidden_state[:, 1:].mean(1)))
    ids = torch.tensor([[tokenizer.bos_token_id, 5, 6, tokenizer.eos_token_id]] * 2)
    output = model(input_ids=ids, pixel_values=pixels, caption_input_ids=ids, return_loss=True)
    output.loss.backward()  # the captioner's prefix is the 8 kept patches, not 16
    assert model.vision_model.embeddings.patch_embedding.weight.grad is not None


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_gradients_under_gradient_checkpointing_equal_the_plain_ones(tokenizer, attention):
    def gradients(checkpointing: bool):
        torch.manual_seed(0)
        config = tiny_laclip_config(tokenizer, patch_dropout=0.5)
        config._attn_implementation = attention
        model = LaCLIPModel(config).train()
        if checkpointing:
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        torch.manual_seed(7)
        pixels = torch.randn(4, 3, 32, 32)
        ids = torch.randint(4, len(tokenizer), (4, 6))
        model(input_ids=ids, pixel_values=pixels, return_loss=True).loss.backward()
        return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}

    plain, checkpointed = gradients(False), gradients(True)
    assert plain.keys() == checkpointed.keys()
    for name in plain:
        torch.testing.assert_close(checkpointed[name], plain[name], msg=name)


def test_set_patch_dropout_changes_the_rate_and_zero_installs_nothing(tokenizer):
    model = LaCLIPModel(tiny_laclip_config(tokenizer))
    assert not hasattr(model.vision_model.embeddings, "patch_dropout")
    set_patch_dropout(model.vision_model, 0.25)
    set_patch_dropout(model.vision_model, 0.5)
    model.train()
    assert model.vision_model(torch.randn(1, 3, 32, 32)).last_hidden_state.shape[1] == 1 + 8  # one hook, rate 0.5


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return make_training_files(tmp_path_factory.mktemp("patch_dropout"), rows=16)


def test_langclip_train_with_patch_dropout_saves_it_in_config_and_card(files, tmp_path):
    from langclip.cli import main as cli_main

    out = tmp_path / "out"
    values = {**files, "output_dir": str(out), "max_steps": 2, "logging_steps": 1, "num_workers": 0}
    status = cli_main(["train", *as_flags(values), "--method", "laclip", "--patch-dropout", "0.5"])
    assert status in (None, 0)
    assert json.loads((out / "config.json").read_text())["patch_dropout"] == 0.5
    assert "| patch_dropout | 0.5 |" in (out / "README.md").read_text()
    assert LaCLIPModel.from_pretrained(out).vision_model.embeddings.patch_dropout.prob == 0.5


def test_patch_dropout_flag_is_checked(files, tmp_path):
    values = {**files, "output_dir": str(tmp_path / "out"), "max_steps": 1}
    with pytest.raises(ConfigError, match=r"--patch-dropout must be in \[0, 1\)"):
        train(*parse_train_args(as_flags({**values, "patch_dropout": 1.0})))
    with pytest.raises(ConfigError, match="difference"):
        train(*parse_train_args(as_flags({**values, "patch_dropout": 0.5, "method": "pcclip",
                                          "difference_data": str(tmp_path / "d.jsonl")})))

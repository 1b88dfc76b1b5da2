"""Locked towers (OpenCLIP's --lock-image / --lock-text): the layer groups, what trains, errors, no autograd graph."""

import pytest
import torch
from accelerate.state import AcceleratorState
from conftest import tiny_laclip_config
from safetensors.torch import load_file
from test_modeling_clips import tiny_clips_config
from train_utils import as_flags, make_training_files, parse_train_args, training_values

from langclip import LaCLIPModel
from langclip.errors import ConfigError
from langclip.modeling import CLIPSModel
from langclip.training.methods import Method, TowerLock, layer_groups
from langclip.training.trainer import train


@pytest.fixture(autouse=True)
def _fresh_accelerator():
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return make_training_files(tmp_path_factory.mktemp("locked"), rows=16)


def run(files, tmp_path, name, **overrides):
    values = training_values(files, **{"output_dir": str(tmp_path / name), "max_steps": 2, "lr": 1e-2,
                                       "weight_decay": 0.1, "num_workers": 0, **overrides})
    train(*parse_train_args(as_flags(values)))
    return load_file(str(tmp_path / name / "model.safetensors"))


def changed(before: dict, after: dict) -> set[str]:
    return {name for name in before if not torch.equal(before[name], after[name])}


def test_layer_groups_are_openclips(tokenizer):
    model = LaCLIPModel(tiny_laclip_config(tokenizer))  # 2 blocks per tower: 4 groups
    image, text = layer_groups(model, "image"), layer_groups(model, "text")
    vision = model.vision_model
    assert image == [[vision.embeddings, vision.pre_layrnorm], [vision.encoder.layers[0]],
                     [vision.encoder.layers[1], vision.post_layernorm], [model.visual_projection]]
    assert text == [[model.text_model.embeddings], [model.text_model.encoder.layers[0]],
                    [model.text_model.encoder.layers[1], model.text_model.final_layer_norm], [model.text_projection]]


def test_locked_image_tower_is_bit_identical_after_training_and_the_rest_changes(files, tmp_path):
    start = run(files, tmp_path, "start", method="clip", max_steps=1)
    folder = str(tmp_path / "start")
    full = run(files, tmp_path, "full", method="laclip", model_name_or_path=folder, lock_image=True)
    image = {name for name in start if name.startswith(("vision_model.", "visual_projection."))}
    assert changed(start, full) == set(start) - image  # text tower and logit scale train, the image tower not at all
    # the last 2 groups (last block + post_layernorm, projection) unlocked: they change, the rest stays
    partial = run(files, tmp_path, "partial", method="laclip", model_name_or_path=folder, lock_image=True,
                  lock_image_unlocked_groups=2)
    unlocked = {name for name in image if name.startswith(("vision_model.encoder.layers.1.",
                                                           "vision_model.post_layernorm.", "visual_projection."))}
    assert changed(start, partial) & image == unlocked


def test_locked_text_tower_with_unlocked_layers_through_laclip_mt(files, tmp_path):
    start = run(files, tmp_path, "start", method="clip", max_steps=1)
    tuned = run(files, tmp_path, "mt", method="laclip-mt", model_name_or_path=str(tmp_path / "start"),
                lock_text=True, lock_text_unlocked_layers=1)
    text = {name for name in start if name.startswith(("text_model.", "text_projection."))}
    assert changed(start, tuned) & text == {"text_projection.weight"}
    assert changed(start, tuned) - text  # the image tower trains


def test_locked_norms_can_stay_trainable_and_locks_never_unfreeze(tokenizer):
    model = LaCLIPModel(tiny_laclip_config(tokenizer, vision_qk_norm=True))
    Method.preset("clip", lock=TowerLock(image=True, norms_trainable=True)).freeze(model)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad and name.startswith("vision_model.")}
    assert trainable and all("norm" in name or "layrnorm" in name for name in trainable)
    assert any(".q_norm." in name for name in trainable)
    # pcclip trains the text blocks only: a lock with trainable norms does not give the image norms back
    model = LaCLIPModel(tiny_laclip_config(tokenizer))
    Method.preset("pcclip", lock=TowerLock(image=True, text=True, text_unlocked_groups=2,
                                           norms_trainable=True)).freeze(model)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(name.startswith("text_model.encoder.layers.") for name in trainable)
    assert any(name.startswith("text_model.encoder.layers.1.") and "mlp" in name for name in trainable)
    assert not any(name.startswith("text_model.encoder.layers.0.") and "mlp" in name for name in trainable)


def test_a_locked_tower_records_no_autograd_graph(tokenizer):
    model = LaCLIPModel(tiny_laclip_config(tokenizer)).train()
    Method.preset("clip", lock=TowerLock(image=True)).freeze(model)
    ids = torch.randint(4, len(tokenizer), (2, 6))
    output = model(input_ids=ids, pixel_values=torch.randn(2, 3, 32, 32), return_loss=True)
    assert output.image_embeds.grad_fn is None  # nothing of the image tower is kept for the backward
    assert output.text_embeds.grad_fn is not None
    output.loss.backward()
    assert all(p.grad is None for p in model.vision_model.parameters())


@pytest.mark.parametrize("unlocked", [0, 1])
def test_locks_compose_with_clips(tokenizer, unlocked):
    model = CLIPSModel(tiny_clips_config(tokenizer, vision_pooling="mean")).train()
    Method.preset("clips", lock=TowerLock(image=True, image_unlocked_groups=unlocked)).freeze(model)
    ids = torch.tensor([[tokenizer.bos_token_id, 5, 6, tokenizer.eos_token_id]] * 2)
    model(input_ids=ids, pixel_values=torch.randn(2, 3, 32, 32), partial_input_ids=ids, caption_input_ids=ids,
          return_loss=True).loss.backward()
    assert all(p.grad is None for p in model.vision_model.parameters())
    assert (model.visual_projection.weight.grad is not None) == bool(unlocked)
    assert model.captioner.image_projection.weight.grad is not None  # the captioner is no tower: it trains


def test_lock_flags_are_checked(files, tmp_path):
    with pytest.raises(ConfigError, match="needs --lock-image"):
        TowerLock(image_unlocked_groups=1)
    with pytest.raises(ConfigError, match="needs --lock-text"):
        TowerLock(text_unlocked_groups=1)
    with pytest.raises(ConfigError, match=">= 0"):
        TowerLock(image=True, image_unlocked_groups=-1)
    with pytest.raises(ConfigError, match="--locked-norms-trainable needs"):
        TowerLock(norms_trainable=True)
    with pytest.raises(ConfigError, match="lora"):
        Method.preset("clip", train_parts="lora", lock=TowerLock(image=True))
    with pytest.raises(ConfigError, match="4 layer groups"):
        run(files, tmp_path, "bad", method="clip", lock_image=True, lock_image_unlocked_groups=5)
    with pytest.raises(ConfigError, match="nothing would train"):
        Method.preset("pcclip", lock=TowerLock(text=True)).freeze(LaCLIPModel(tiny_laclip_config(
            make_tokenizer(files))))


def make_tokenizer(files):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(files["tokenizer_name_or_path"])


def test_method_description_names_the_locks():
    method = Method.preset("clip", lock=TowerLock(image=True, image_unlocked_groups=1))
    assert method.description == "caption / clip (softmax) / all, image locked but its last 1 groups"
    assert Method.preset("clip").description == "caption / clip (softmax) / all"

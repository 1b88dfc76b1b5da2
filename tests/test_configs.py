"""The YAML runs parse and hold the papers' hyperparameters (docs/design.md); the demo YAML equals the embedded
demo run."""

import json
from pathlib import Path

import pytest

from langclip.training.arguments import load_yaml_config
from langclip.demo.run import DEMO_CONFIG
from train_utils import parse_train_args

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
PAPER_RUNS = {"cc3m_vitb16": (8192, 16), "cc12m_vitb16": (8192, 16), "redcaps_vitb16": (8192, 16),
              "laion400m_vitb32": (32768, 32)}


@pytest.mark.parametrize("name", sorted(PAPER_RUNS))
def test_paper_configs_follow_the_design(name):
    model_args, data_args, train_args = parse_train_args(["--config", str(CONFIGS / f"{name}.yaml")])
    global_batch, patch = PAPER_RUNS[name]
    assert train_args.per_device_batch_size * train_args.accum_freq * 8 == global_batch
    assert (train_args.adam_beta1, train_args.adam_beta2, train_args.adam_eps) == (0.9, 0.98, 1e-8)
    assert (train_args.lr_start, train_args.lr_end) == (1e-6, 1e-5)
    model_config = json.loads(model_args.model_config)
    assert model_config["vision_config"]["patch_size"] == patch
    assert model_config["vision_config"]["hidden_size"] == 768 and model_config["vision_config"]["image_size"] == 224
    assert model_args.method == "laclip" and data_args.train_data
    if name == "cc12m_vitb16":
        assert (train_args.lr, train_args.weight_decay, train_args.warmup_epochs, train_args.num_epochs) == (
            1e-3, 0.5, 1.0, 35.0)


def test_demo_yaml_is_the_embedded_demo_run():
    assert load_yaml_config(str(CONFIGS / "demo.yaml")) == {
        **DEMO_CONFIG, "model_config": json.dumps(json.loads(DEMO_CONFIG["model_config"]))}


def test_laion_config_trains_laclip_on_shards_with_an_epoch_of_samples():
    _, data_args, train_args = parse_train_args(["--config", str(CONFIGS / "laion400m_vitb32.yaml")])
    assert data_args.train_data.endswith(".tar") and data_args.rewrites_column == "rewrites"
    assert (data_args.train_num_samples, train_args.num_epochs, train_args.max_steps) == (400_000_000, 32, None)

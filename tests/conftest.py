"""Shared fixtures: tiny models and tokenizers built in the test, never downloaded."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import pytest
import torch

from langclip import LaCLIPConfig
from langclip.testing import train_word_tokenizer

if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)  # one thread per xdist worker: tiny ops spin-wait badly on oversubscribed cores
sys.path.append(str(Path(__file__).resolve().parents[1] / "benchmarks"))  # reproduce_mini's parts (test_reproduce_*)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now, so that launchers running side by side (xdist) never share 29500."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


WORDS = (
    "a photo of the red green blue yellow circle square triangle star small large one two three "
    "on left right top bottom picture image shape shapes drawing with and in"
)


@pytest.fixture(scope="session")
def tokenizer():
    return train_word_tokenizer([WORDS], max_length=16)


def tiny_laclip_config(tokenizer, **overrides) -> LaCLIPConfig:
    """A 2-layer, 32-wide CLIP on 32 px images whose text tower matches ``tokenizer``."""
    text = dict(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=16,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    vision = dict(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=32, patch_size=8
    )
    return LaCLIPConfig(text_config=text, vision_config=vision, projection_dim=16, **overrides)


@pytest.fixture
def tiny_config(tokenizer):
    return tiny_laclip_config(tokenizer)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# The first lines of a script run in a fresh interpreter that must work without langclip (remote code, Hub
# downloads); indented as the scripts that follow it, which are dedented whole.
WITHOUT_LANGCLIP = """
    import json, sys
    sys.modules["langclip"] = None  # langclip cannot be imported here
    try:
        import langclip
        raise SystemExit("langclip should not be importable")
    except ImportError:
        pass
"""

CAPTIONS = [
    f"{count} {color} {thing} {place}"
    for count in ("a", "two", "three")
    for color in ("red", "green", "blue", "small")
    for thing in ("dog", "car", "boat")
    for place in ("on the grass", "by the sea")
]


@pytest.fixture
def captions_file(tmp_path):
    """The first 24 captions, one per line (the rewrite jobs' input)."""
    path = tmp_path / "captions.txt"
    path.write_text("\n".join(CAPTIONS[:24]) + "\n")
    return path


@pytest.fixture(scope="session")
def tiny_lm_dir(tmp_path_factory):
    """A random byte-level Llama (langclip.demo.tiny_lm) saved with its tokenizer."""
    from langclip.processing.generation.meta_pairs import SHIPPED_POOLS, load_pool
    from langclip.demo.tiny_lm import build_tiny_causal_lm

    texts = [f"{a} => {b}" for a, b in zip(CAPTIONS, CAPTIONS[1:])]
    texts += [f"{a} => {b}" for name in SHIPPED_POOLS for a, b in load_pool(name).items]  # short prompts in tokens
    return build_tiny_causal_lm(texts, tmp_path_factory.mktemp("tiny_lm"), vocab_size=1024, hidden_size=32)

"""Every code block of README.md, so that the README cannot drift from the code.

Python blocks run, in order, on tiny checkpoints made here: the README's placeholder paths
are substituted (`PATHS`) and the names the prose leaves to the reader (``image``, ``pixels``,
...) are defined first (`_namespace`). Shell blocks name GPU runs and real LLMs that cannot
run here; each command in them is parsed by the real parser (`langclip`'s, ``train.py``'s
with its ``--config`` file read, the Makefile's targets), so a renamed or removed flag fails.
"""

import re
import shlex
from pathlib import Path

import pytest
import torch
from PIL import Image

from langclip import CLIPSConfig, CLIPSModel, LaCLIPModel
from langclip.cli import build_parser
from langclip.modeling.auto import save_folder
from langclip.modeling.image_processing import default_image_processor

from conftest import tiny_laclip_config
from train_utils import parse_train_args

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"^```(python|bash)\n(.*?)^```", re.MULTILINE | re.DOTALL)
BLOCKS = BLOCK.findall((ROOT / "README.md").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, tokenizer):
    """README path -> tiny checkpoint folder (weights, tokenizer + image processor, remote code)."""
    root = tmp_path_factory.mktemp("readme")
    config = tiny_laclip_config(tokenizer)
    processor = default_image_processor(32)
    clips = CLIPSConfig(text_config=config.text_config.to_dict(), vision_config=config.vision_config.to_dict(),
                        projection_dim=16, captioner_max_length=8)
    folders = {}
    for name, model in (("laclip", LaCLIPModel(config)), ("clips", CLIPSModel(clips))):
        save_folder(model, root / name, processor, tokenizer)
        folders[name] = str(root / name)
    return {"path/or/hub-id": folders["laclip"], "out/clips": folders["clips"], "out/pcclip": folders["laclip"]}


def _namespace(tokenizer) -> dict:
    """What the README's Python blocks take as given: an image, a batch for CLIPS, image features of pairs."""
    web = tokenizer(["a red circle", "two blue squares"], padding=True, return_tensors="pt")
    partial = tokenizer(["a red", "two blue"], padding=True, return_tensors="pt")
    caption = tokenizer(["a red circle on the left", "two blue squares on top"], padding=True, return_tensors="pt")
    return {"image": Image.new("RGB", (40, 48), (200, 30, 30)), "pixels": torch.randn(2, 3, 32, 32),
            "web_ids": web["input_ids"], "web_mask": web["attention_mask"], "partial_ids": partial["input_ids"],
            "caption_ids": caption["input_ids"], "image_a": torch.randn(4, 16), "image_b": torch.randn(4, 16)}


def test_readme_has_the_blocks_we_run():
    kinds = [kind for kind, _ in BLOCKS]
    assert kinds.count("python") >= 4 and kinds.count("bash") >= 4
    assert any("pipeline(\"zero-shot-image-classification\"" in code for _, code in BLOCKS)
    assert any("trust_remote_code=True" in code for _, code in BLOCKS)


@pytest.mark.parametrize("index", [i for i, (kind, _) in enumerate(BLOCKS) if kind == "python"])
def test_python_block_runs(index, checkpoints, tokenizer):
    code = BLOCKS[index][1]
    for placeholder, folder in checkpoints.items():
        code = code.replace(f'"{placeholder}"', repr(folder))
    assert not re.search(r'from_pretrained\("(?!openai/)', code), f"block {index}: a path the test does not substitute"
    exec(compile(code, f"README.md block {index}", "exec"), _namespace(tokenizer))


def _commands(code: str) -> list[list[str]]:
    """The commands of a shell block: continuation lines joined, comments dropped, split like the shell."""
    text = re.sub(r"\\\n\s*", " ", code)
    return [shlex.split(line, comments=True) for line in text.splitlines() if shlex.split(line, comments=True)]


# Commands of other programs (serving engines the README shows how to start): not ours to parse.
EXTERNAL = ("vllm", "docker")


def _check_command(words: list[str]) -> None:
    if words[0] in EXTERNAL:
        return
    if words[0] == "make":
        targets = re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), flags=re.MULTILINE)
        assert set(words[1:]) <= set(targets), f"Makefile has no target {words[1:]}"
        return
    if words[:2] == ["accelerate", "launch"] or words[0] in ("torchrun", "srun"):
        rest = words[2:] if words[0] == "accelerate" else words[1:]
        if "train.py" in rest:
            argv = rest[rest.index("train.py") + 1:]
            config = argv[argv.index("--config") + 1] if "--config" in argv else None
            if config:
                argv[argv.index("--config") + 1] = str(ROOT / config)
            parse_train_args(argv)
            return
        words = ["langclip", *rest[rest.index("langclip.cli") + 1:]]
    assert words[0] == "langclip", f"unknown command {words[0]!r}"
    build_parser(words[1:]).parse_args(words[1:])


@pytest.mark.parametrize("index", [i for i, (kind, _) in enumerate(BLOCKS) if kind == "bash"])
def test_shell_block_parses(index):
    commands = _commands(BLOCKS[index][1])
    assert commands
    for words in commands:
        _check_command(words)

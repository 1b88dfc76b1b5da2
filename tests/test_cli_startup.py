"""`langclip --help` and `langclip <command> --help` answer before torch, transformers or the model code is
imported; `import langclip` still registers the model types with the Auto classes."""

import re
import subprocess
import sys

import pytest

from langclip.cli import COMMANDS

STACK = {"torch", "transformers", "datasets", "accelerate"}


def imported_modules(*args: str) -> set[str]:
    result = subprocess.run([sys.executable, "-X", "importtime", *args], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return {match.group(1).split(".")[0] for match in re.finditer(r"\|\s+([\w.]+)\s*$", result.stderr, re.M)}


def test_help_imports_no_model_code():
    modules = imported_modules("-m", "langclip.cli", "--help")
    assert "langclip" in modules
    assert not STACK & modules


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_command_help_imports_no_model_code(command):
    """Each command's flags come from a module that imports none of the stack; its run module is not imported."""
    modules = imported_modules("-m", "langclip.cli", command, "--help")
    assert "langclip" in modules
    assert not STACK & modules, f"langclip {command} --help imports {sorted(STACK & modules)}"


def test_import_langclip_registers_the_auto_classes():
    code = ("import langclip; from transformers import AutoConfig; "
            "print(type(AutoConfig.for_model('laclip')).__name__, langclip.CLIPSModel.__name__)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.stdout.split() == ["LaCLIPConfig", "CLIPSModel"], result.stderr[-2000:]

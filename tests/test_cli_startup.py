"""`langclip --help` answers before torch, transformers or the model code is imported; `import langclip` still
registers the model types with the Auto classes."""

import re
import subprocess
import sys


def imported_modules(*args: str) -> set[str]:
    result = subprocess.run([sys.executable, "-X", "importtime", *args], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return {match.group(1).split(".")[0] for match in re.finditer(r"\|\s+([\w.]+)\s*$", result.stderr, re.M)}


def test_help_imports_no_model_code():
    modules = imported_modules("-m", "langclip.cli", "--help")
    assert "langclip" in modules
    assert not {"torch", "transformers", "datasets", "accelerate"} & modules


def test_import_langclip_registers_the_auto_classes():
    code = ("import langclip; from transformers import AutoConfig; "
            "print(type(AutoConfig.for_model('laclip')).__name__, langclip.CLIPSModel.__name__)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.stdout.split() == ["LaCLIPConfig", "CLIPSModel"], result.stderr[-2000:]

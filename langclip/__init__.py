"""langclip: train and evaluate CLIP with text written by language models.

>>> from langclip import LaCLIPModel
>>> model = LaCLIPModel.from_pretrained("path/or/hub-id")

Importing langclip registers its model types with the `transformers` Auto classes (`langclip.modeling.auto`), so
that ``AutoModel`` and ``pipeline("zero-shot-image-classification", model=folder)`` load its checkpoints. The
public names are resolved on first use (PEP 562). In the ``langclip`` command's own process (the console script, or
``python -m langclip.cli``) nothing more is imported here: the command imports what it runs, and ``langclip --help``
answers before torch is loaded.
"""

from __future__ import annotations

import importlib
import os
import sys

__version__ = "0.1.0"

_PUBLIC = ("CLIPSConfig", "CLIPSModel", "LaCLIPConfig", "LaCLIPModel", "clip_loss", "multi_positive_clip_loss")
__all__ = [*_PUBLIC, "__version__"]


def __getattr__(name: str):
    if name in _PUBLIC:
        return getattr(importlib.import_module("langclip.modeling"), name)
    raise AttributeError(f"module 'langclip' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


def _in_the_cli() -> bool:
    """True in the process of the ``langclip`` command: its console script, or ``python -m langclip.cli``."""
    argv = getattr(sys, "orig_argv", [])
    module = argv[argv.index("-m") + 1] if "-m" in argv[:-1] else None
    return module == "langclip.cli" or os.path.basename(sys.argv[0] if sys.argv else "") == "langclip"


if not _in_the_cli():
    from . import modeling  # noqa: F401  (registers the model types with the Auto classes)

"""Names of a package resolved on first use (PEP 562), so that importing a package imports none of its modules.

    __getattr__, __dir__ = lazy_names(__name__, {"model_card": "cards", ...}, globals())
"""

from __future__ import annotations

import importlib


def lazy_names(package: str, modules: dict[str, str], namespace: dict):
    """(``__getattr__``, ``__dir__``) of ``package``: each name of ``modules`` comes from ``package.<its module>``."""

    def __getattr__(name: str):
        if name in modules:
            return getattr(importlib.import_module(f"{package}.{modules[name]}"), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(modules))

    return __getattr__, __dir__

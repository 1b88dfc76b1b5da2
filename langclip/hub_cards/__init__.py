"""The Hub side: eval records and the model-index (`records`), the method list (`methods`), model and dataset
cards (`cards`), pushing folders to the Hub (`push`) and the `langclip push` command (`command`).

The names below are resolved on first use (PEP 562), so that importing one module of the package (the method
list, the push flags of `langclip <command> --help`) does not import `push`, which imports the models."""

from __future__ import annotations

from ..lazy import lazy_names

_MODULES = {
    "DatasetCardFields": "cards",
    "ModelCardFields": "cards",
    "dataset_card": "cards",
    "eval_results": "records",
    "load_eval_records": "records",
    "model_card": "cards",
    "push_folder": "push",
    "push_model": "push",
    "update_eval_results": "push",
}
__all__ = list(_MODULES)

__getattr__, __dir__ = lazy_names(__name__, _MODULES, globals())

"""The Hub side: eval records and the model-index (`records`), the method list (`methods`), model and dataset
cards (`cards`), pushing folders to the Hub (`push`) and the `langclip push` command (`command`)."""

from .cards import DatasetCardFields, ModelCardFields, dataset_card, model_card
from .push import push_folder, push_model, update_eval_results
from .records import eval_results, load_eval_records

__all__ = [
    "DatasetCardFields",
    "ModelCardFields",
    "dataset_card",
    "eval_results",
    "load_eval_records",
    "model_card",
    "push_folder",
    "push_model",
    "update_eval_results",
]

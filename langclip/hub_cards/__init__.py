"""Model and dataset cards, and pushing folders to the Hub (`langclip push`)."""

from .dataset_card import dataset_card
from .model_card import eval_results, load_eval_records, model_card
from .push import push_folder, push_model, update_eval_results

__all__ = [
    "dataset_card",
    "eval_results",
    "load_eval_records",
    "model_card",
    "push_folder",
    "push_model",
    "update_eval_results",
]

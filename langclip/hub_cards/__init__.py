"""Model and dataset cards (`cards`), and pushing folders to the Hub (`push`, `langclip push`)."""

from .cards import dataset_card, eval_results, load_eval_records, model_card
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

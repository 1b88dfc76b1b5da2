"""Evaluation on frozen, L2-normalised embeddings.

`zero_shot` (classifiers from class names x templates, top-k), `retrieval` (Recall@K both
ways), `few_shot` (prototypes over episodes), `linear_probe` (logistic regression; imported
from its module, as it loads scikit-learn), `differences` (PC-CLIP), `metrics` (the same
metrics as `evaluate` modules), suites of datasets x tasks: `manifest` (the YAML files, shipped in `suites/`),
`features` (encoding and the feature cache), `suite` (the tasks, run per dataset) and `report` (results files and
tables), and `run` (the `langclip eval` command).
"""

from .features import encode_images, encode_texts
from .few_shot import few_shot_accuracy
from .retrieval import recall_at_k, retrieval_recall
from .templates import LACLIP_IMAGENET_TEMPLATES, OPENAI_IMAGENET_TEMPLATES, load_templates
from .zero_shot import topk_accuracy, zero_shot_accuracy, zero_shot_classifier

__all__ = [
    "LACLIP_IMAGENET_TEMPLATES",
    "OPENAI_IMAGENET_TEMPLATES",
    "encode_images",
    "encode_texts",
    "few_shot_accuracy",
    "load_templates",
    "recall_at_k",
    "retrieval_recall",
    "topk_accuracy",
    "zero_shot_accuracy",
    "zero_shot_classifier",
]

"""Evaluation on frozen, L2-normalised embeddings.

`zero_shot` (classifiers from class names x templates, top-k), `retrieval` (Recall@K both
ways), `few_shot` (prototypes over episodes), `linear_probe` (logistic regression; imported
from its module, as it loads scikit-learn), `differences` (PC-CLIP), `metrics` (the same
metrics as `evaluate` modules), suites of datasets x tasks: `manifest` (the YAML files, shipped in `suites/`),
`features` (encoding and the feature cache), `suite` (the tasks, run per dataset) and `report` (results files and
tables), `run` (the `langclip eval` command) and `arguments` (its flags).

The names below are resolved on first use (PEP 562): importing one module of the package (the flags of
`langclip eval --help`) imports no torch.
"""

from __future__ import annotations

from ..lazy import lazy_names

_MODULES = {
    "LACLIP_IMAGENET_TEMPLATES": "templates",
    "OPENAI_IMAGENET_TEMPLATES": "templates",
    "encode_images": "features",
    "encode_texts": "features",
    "few_shot_accuracy": "few_shot",
    "load_templates": "templates",
    "recall_at_k": "retrieval",
    "retrieval_recall": "retrieval",
    "topk_accuracy": "zero_shot",
    "zero_shot_accuracy": "zero_shot",
    "zero_shot_classifier": "zero_shot",
}
__all__ = list(_MODULES)

__getattr__, __dir__ = lazy_names(__name__, _MODULES, globals())

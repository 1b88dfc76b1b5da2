"""Top-k zero-shot classification accuracy as an `evaluate` metric.

    metric = evaluate.load("path/to/zero_shot_accuracy")
    metric.compute(predictions=scores, references=labels, topk=[1, 5])   # {"top1": ..., "top5": ...}
"""

import datasets
import evaluate
import torch
from langclip.evaluation.zero_shot import topk_accuracy

_DESCRIPTION = """
Top-k accuracy of class scores (for zero-shot CLIP: cosine similarity of the image to each
class embedding). The true class is in the top k when fewer than k other classes score at
least as high, so ties count against the model.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `list` of `float`): one score per class for every example.
    references (`list` of `int`): the true class index of every example.
    topk (`list` of `int`, defaults to `[1, 5]`): the k values to report.
Returns:
    `dict`: `top{k}` accuracy in [0, 1] for every k.
"""

_CITATION = """
@inproceedings{radford2021clip,
  title={Learning Transferable Visual Models From Natural Language Supervision},
  author={Radford, Alec and others},
  booktitle={ICML},
  year={2021}
}
"""


class ZeroShotAccuracy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Sequence(datasets.Value("float32")), "references": datasets.Value("int64")}
            ),
        )

    def _compute(self, predictions, references, topk=(1, 5)):
        return topk_accuracy(torch.tensor(predictions), torch.tensor(references), topk)

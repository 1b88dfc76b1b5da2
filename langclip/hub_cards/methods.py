"""The training methods langclip knows: one entry per ``--method`` preset, with its name, what it does and its paper.

This is the one list: model cards read it, `training.methods.PRESETS` has the same keys and the README's preset
table lists the same methods (both checked by tests/test_method_list.py). It sits in `hub_cards`, below
`training`, so that a card can be written without importing the trainer.
"""

from __future__ import annotations

from dataclasses import dataclass

LACLIP_BIBTEX = """\
@inproceedings{fan2023laclip,
  title={Improving CLIP Training with Language Rewrites},
  author={Fan, Lijie and Krishnan, Dilip and Isola, Phillip and Katabi, Dina and Tian, Yonglong},
  booktitle={Advances in Neural Information Processing Systems},
  year={2023}
}"""

CLIPS_BIBTEX = """\
@article{liu2024clips,
  title={CLIPS: An Enhanced CLIP Framework for Learning with Synthetic Captions},
  author={Liu, Yanqing and Li, Xianhang and Wang, Zeyu and Zhao, Bingchen and Xie, Cihang},
  journal={arXiv preprint arXiv:2411.16828},
  year={2024}
}"""

PCCLIP_BIBTEX = """\
@article{sam2025pcclip,
  title={Finetuning CLIP to Reason about Pairwise Differences},
  author={Sam, Dylan and Willmott, Devin and Semedo, Joao D. and Kolter, J. Zico},
  journal={Transactions on Machine Learning Research},
  year={2025}
}"""


@dataclass(frozen=True)
class MethodInfo:
    """A method as cards and docs present it: ``title`` (e.g. "LaCLIP"), a one-paragraph ``summary``, the
    ``paper`` it comes from (a URL) and its ``bibtex`` (None for plain CLIP, which the cards do not cite)."""

    title: str
    summary: str
    paper: str
    bibtex: str | None = None


METHODS = {
    "clip": MethodInfo(
        "CLIP", "Contrastive image-text pre-training on the original captions.", "https://arxiv.org/abs/2103.00020"
    ),
    "laclip": MethodInfo(
        "LaCLIP",
        "Every caption is rewritten several times by an LLM through in-context learning; each training "
        "step pairs the image with a text drawn uniformly from the original caption and its rewrites.",
        "https://arxiv.org/abs/2305.20088",
        LACLIP_BIBTEX,
    ),
    "laclip-mt": MethodInfo(
        "LaCLIP-MT",
        "LaCLIP's rewritten captions with the multi-text loss: the image is contrasted against all of "
        "its texts, each against the same-index texts of the other images.",
        "https://arxiv.org/abs/2305.20088",
        LACLIP_BIBTEX,
    ),
    "clips": MethodInfo(
        "CLIPS",
        "The text encoder sees a partial synthetic caption, and an autoregressive captioner conditioned "
        "on the image and the web caption predicts the full synthetic caption.",
        "https://arxiv.org/abs/2411.16828",
        CLIPS_BIBTEX,
    ),
    "pcclip": MethodInfo(
        "PC-CLIP",
        "CLIP fine-tuned so that differences of image embeddings align with LLM-written descriptions "
        "of how two images differ.",
        "https://arxiv.org/abs/2409.09721",
        PCCLIP_BIBTEX,
    ),
}
"""``--method`` name -> `MethodInfo`, in the order the README and ``--help`` list them."""

# every paper the methods come from, once each: the cards' citation block
CITATIONS = "\n\n".join(dict.fromkeys(info.bibtex for info in METHODS.values() if info.bibtex))

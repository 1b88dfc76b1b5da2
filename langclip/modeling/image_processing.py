"""The image processor of a checkpoint: built at a model's size (`default_image_processor`) or loaded from a folder
(`load_image_processor`).

Both return the PIL backend (`CLIPImageProcessorPil`): the same pixels with or without torchvision, and no
"CLIPImageProcessor requires torchvision ... falling back" warning, which transformers prints when the
`CLIPImageProcessor` name is imported without torchvision. Saved folders still name ``CLIPImageProcessor`` in
``preprocessor_config.json``, so plain transformers loads them with either backend.

A module of its own (not `auto`) because converters, training, evaluation and the demo need it without the
Auto-class registration and remote code.
"""

from __future__ import annotations

from pathlib import Path

from transformers import CLIPImageProcessorPil
from transformers.image_utils import PILImageResampling

CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]  # OpenAI CLIP's normalization (LaCLIP, OpenCLIP)
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
IMAGENET_MEAN = [0.485, 0.456, 0.406]  # CLIPS's and LaCLIP's own CC3M/CC12M/RedCaps models' normalization
IMAGENET_STD = [0.229, 0.224, 0.225]


def default_image_processor(image_size: int, mean=CLIP_MEAN, std=CLIP_STD, resample=PILImageResampling.BICUBIC,
                            crop: bool = True) -> CLIPImageProcessorPil:
    """Resize then normalize ``(pixel / 255 - mean) / std`` to ``image_size`` x ``image_size`` pixels.

    ``crop``: resize the shortest side to ``image_size`` and centre-crop (CLIP); else squash both sides to
    ``image_size`` (CLIPS, with bilinear ``resample``).
    """
    square = {"height": image_size, "width": image_size}
    return CLIPImageProcessorPil(size={"shortest_edge": image_size} if crop else square, crop_size=square,
                                 do_center_crop=crop, resample=resample, image_mean=list(mean), image_std=list(std))


def load_image_processor(path: str | Path) -> CLIPImageProcessorPil:
    """The image processor saved in ``path`` (a folder or Hub id), PIL backend; OSError when there is none."""
    return CLIPImageProcessorPil.from_pretrained(path)

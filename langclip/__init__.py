"""langclip: train and evaluate CLIP with text written by language models.

>>> from langclip import LaCLIPModel
>>> model = LaCLIPModel.from_pretrained("path/or/hub-id")
"""

from .modeling import CLIPSConfig, CLIPSModel, LaCLIPConfig, LaCLIPModel, clip_loss, multi_positive_clip_loss

__version__ = "0.1.0"

__all__ = ["CLIPSConfig", "CLIPSModel", "LaCLIPConfig", "LaCLIPModel", "clip_loss", "multi_positive_clip_loss", "__version__"]

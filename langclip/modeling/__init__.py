"""Models, configurations and losses. Importing this registers the model types with the Auto classes."""

from transformers import AutoConfig, AutoModel

from .configuration_laclip import LaCLIPConfig
from .losses import clip_loss, difference_loss, gather_features, multi_positive_clip_loss
from .modeling_laclip import LaCLIPModel

AutoConfig.register(LaCLIPConfig.model_type, LaCLIPConfig, exist_ok=True)
AutoModel.register(LaCLIPConfig, LaCLIPModel, exist_ok=True)

__all__ = ["LaCLIPConfig", "LaCLIPModel", "clip_loss", "difference_loss", "gather_features", "multi_positive_clip_loss"]

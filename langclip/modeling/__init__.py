"""Models, configurations and losses. Importing this registers the model types with the Auto classes."""

from transformers import AutoConfig, AutoModel

from .configuration_clips import CLIPSConfig
from .configuration_laclip import LaCLIPConfig
from .losses import clip_loss, difference_loss, gather_features, multi_positive_clip_loss
from .modeling_clips import CLIPSModel, clips_loss
from .modeling_laclip import LaCLIPModel

AutoConfig.register(LaCLIPConfig.model_type, LaCLIPConfig, exist_ok=True)
AutoModel.register(LaCLIPConfig, LaCLIPModel, exist_ok=True)
AutoConfig.register(CLIPSConfig.model_type, CLIPSConfig, exist_ok=True)
AutoModel.register(CLIPSConfig, CLIPSModel, exist_ok=True)

__all__ = ["CLIPSConfig", "CLIPSModel", "LaCLIPConfig", "LaCLIPModel", "clips_loss", "clip_loss", "difference_loss", "gather_features", "multi_positive_clip_loss"]

"""Models, configurations and losses. Importing this registers the model types with the Auto classes (`auto`)."""

from . import auto  # noqa: F401  (registers the model types)
from .clips.configuration_clips import CLIPSConfig
from .clips.modeling_clips import CLIPSModel
from .laclip.configuration_laclip import LaCLIPConfig
from .laclip.modeling_laclip import LaCLIPModel
from .losses import (
    LossContext,
    clip_loss,
    clips_loss,
    contrastive_loss,
    difference_loss,
    gather_features,
    multi_positive_clip_loss,
    pcclip_loss,
    sigmoid_loss,
)

__all__ = [
    "CLIPSConfig", "CLIPSModel", "LaCLIPConfig", "LaCLIPModel", "LossContext", "clip_loss", "clips_loss",
    "contrastive_loss", "difference_loss", "gather_features", "multi_positive_clip_loss", "pcclip_loss", "sigmoid_loss",
]

"""Registration of langclip's model types with the `transformers` Auto classes.

Importing `langclip` (or `langclip.modeling`) runs this, so that ``AutoConfig``/``AutoModel``
load a langclip checkpoint folder by its ``model_type``.
"""

from transformers import AutoConfig, AutoModel

from .clips.configuration_clips import CLIPSConfig
from .clips.modeling_clips import CLIPSModel
from .laclip.configuration_laclip import LaCLIPConfig
from .laclip.modeling_laclip import LaCLIPModel

for config_class, model_class in ((LaCLIPConfig, LaCLIPModel), (CLIPSConfig, CLIPSModel)):
    AutoConfig.register(config_class.model_type, config_class, exist_ok=True)
    AutoModel.register(config_class, model_class, exist_ok=True)

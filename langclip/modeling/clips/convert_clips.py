"""Convert the released CLIPS checkpoints (OpenCLIP format; ViT-L-14-CLIPS-224/336, ViT-H-14-CLIPS-224) to `CLIPSModel`.

The weight names are OpenCLIP's (see `langclip.modeling.open_clip`), read with the same
helpers; what differs is the architecture (docs/design.md, "CLIPS released architecture"):
the vision tower has no ``visual.ln_pre`` and is pooled by the mean of its patch tokens
before ``ln_post``; the text tower is bidirectional (no ``attn_mask``), pooled at the last
position of the layout ``[1] ids [2] 0 ... 0 [101]`` after ``ln_final``, with tanh-approximate
GELU; both towers use LayerNorm eps 1e-6 (the official ``norm_layer``); ``text_projection``
is a (width, dim) matrix applied as ``x @ W``. Sizes, heads (width // 64, but 16 for ViT-H's
1280, or given) and the context length (80) are read from the tensor shapes. Images are
squash-resized bilinearly (the official pipeline) to the model size, ImageNet mean/std.

The written folder holds the weights, the image processor, the tokenizer (a standard
`PreTrainedTokenizerFast` from ``vocab.txt``, see `clips_tokenizer`) with a `CLIPProcessor`,
and the remote code (`write_remote_code`). The released files hold the contrastive towers
only; captioner weights, if a file has them (``text_decoder.*``), are not converted, and the
converted captioner is freshly initialised.

    langclip convert --from clips open_clip_pytorch_model.bin out/clips-vit-l-14 --tokenizer vocab.txt
"""

from __future__ import annotations

from pathlib import Path

import torch

from ...errors import CheckpointError
from ..auto import check_tokenizer_fits, save_folder
from ..image_processing import IMAGENET_MEAN, IMAGENET_STD, default_image_processor
from ..open_clip import load_open_clip_weights, load_state_dict, open_clip_config
from .configuration_clips import CLIPSConfig
from .modeling_clips import CLIPSModel
from .tokenization_clips import clips_tokenizer

RELEASED_ARCHITECTURE = dict(vision_pooling="mean", vision_pre_layernorm=False, text_attention="bidirectional",
                             text_pooling="last", text_last_token_id=101)
RELEASED_VISION = dict(layer_norm_eps=1e-6)
RELEASED_TEXT = dict(hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6, bos_token_id=1, eos_token_id=2,
                     pad_token_id=0)
CAPTIONER_PREFIX = "text_decoder."
VISION_HEAD_WIDTH = {1280: 80}  # ViT-H-14: 16 heads of 80 (OpenCLIP's ViT-H-14 config); other widths: heads of 64


def clips_config(state_dict: dict[str, torch.Tensor], vision_heads: int | None = None,
                 text_heads: int | None = None) -> CLIPSConfig:
    """`CLIPSConfig` of the released architecture with the sizes of ``state_dict``."""
    width = state_dict["visual.conv1.weight"].shape[0] if "visual.conv1.weight" in state_dict else None
    vision_heads = vision_heads or (width // VISION_HEAD_WIDTH[width] if width in VISION_HEAD_WIDTH else None)
    base = open_clip_config(state_dict, vision_heads, text_heads)
    return CLIPSConfig(text_config={**base.text_config.to_dict(), **RELEASED_TEXT},
                       vision_config={**base.vision_config.to_dict(), **RELEASED_VISION}, projection_dim=base.projection_dim,
                       **RELEASED_ARCHITECTURE)


def convert_clips(src: str | Path, dst: str | Path | None = None, vision_heads: int | None = None,
                  text_heads: int | None = None, vocab_file: str | None = None) -> CLIPSModel:
    """Load a released CLIPS checkpoint file as a `CLIPSModel`; save it (and the tokenizer of ``vocab_file``) to ``dst``."""
    state_dict = load_state_dict(src)
    if "visual.ln_pre.weight" in state_dict:
        raise CheckpointError(f"{src} has visual.ln_pre: not the CLIPS layout (use --from open_clip)")
    towers = {k: v for k, v in state_dict.items() if not k.startswith(CAPTIONER_PREFIX)}
    config = clips_config(towers, vision_heads, text_heads)
    tokenizer = None
    if vocab_file:
        tokenizer = clips_tokenizer(vocab_file, context_length=config.text_config.max_position_embeddings)
        check_tokenizer_fits(tokenizer, config.text_config, "--tokenizer")
    model = CLIPSModel(config)
    load_open_clip_weights(model, towers, untouched=("captioner.",))
    if len(towers) < len(state_dict):
        print(f"{len(state_dict) - len(towers)} captioner weights ({CAPTIONER_PREFIX}*) not converted")
    if dst is not None:
        save_folder(model, dst, _image_processor(model.config), tokenizer)
    return model


def _image_processor(config: CLIPSConfig):
    """CLIPS preprocessing: bilinear squash resize to the model size (no crop), ImageNet mean/std."""
    from transformers.image_utils import PILImageResampling

    return default_image_processor(config.vision_config.image_size, IMAGENET_MEAN, IMAGENET_STD,
                                   resample=PILImageResampling.BILINEAR, crop=False)

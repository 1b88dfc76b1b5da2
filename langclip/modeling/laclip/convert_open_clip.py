"""`langclip convert`: released checkpoints to langclip folders; the command, and the OpenCLIP-format converter.

``--from`` names the layout of the file, hence which released models it serves:

- ``open_clip``: OpenCLIP ViT state dicts: LaCLIP's 4 released LAION-400M models (ViT-B/32, ViT-B/16), and any
  other OpenCLIP ViT (-> `LaCLIPModel`, plain CLIP architecture);
- ``laclip``: LaCLIP's own SLIP-style ``CLIP_VITB16`` files: its 6 released CC3M/CC12M/RedCaps ViT-B/16 models
  (timm ViT with QK-norm, `langclip.modeling.laclip.convert_laclip`);
- ``clips``: the released CLIPS ViT-L/H-14 OpenCLIP checkpoints (-> `CLIPSModel`, `langclip.modeling.clips.convert_clips`).

The weight renaming of the OpenCLIP layout is shared with the CLIPS converter (`langclip.modeling.open_clip`).

    langclip convert --from open_clip laclip-laion400m-b32.pt out/laclip-b32
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..auto import save_folder
from ..image_processing import default_image_processor
from ..open_clip import load_open_clip_weights, load_state_dict, open_clip_config
from .configuration_laclip import LaCLIPConfig
from .modeling_laclip import LaCLIPModel


def convert_open_clip(
    src: str | Path,
    dst: str | Path | None = None,
    vision_heads: int | None = None,
    text_heads: int | None = None,
    quick_gelu: bool = False,
    tokenizer: str | None = None,
) -> LaCLIPModel:
    """Load an OpenCLIP checkpoint file as a `LaCLIPModel`; save it to ``dst`` when given, with its image
    processor, the ``tokenizer`` (folder or Hub id) joined to it by a `CLIPProcessor`, and its remote code."""
    state_dict = load_state_dict(src)
    model = LaCLIPModel(open_clip_config(state_dict, vision_heads, text_heads, quick_gelu))
    load_open_clip_weights(model, state_dict)
    if dst is not None:
        from transformers import AutoTokenizer

        save_folder(model, dst, _image_processor(model.config), AutoTokenizer.from_pretrained(tokenizer) if tokenizer
                    else None)
    return model


def _image_processor(config: LaCLIPConfig):
    """OpenAI/OpenCLIP preprocessing: resize shortest side, centre crop, OpenAI mean/std."""
    return default_image_processor(config.vision_config.image_size)


FORMATS = ("open_clip", "laclip", "clips")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--from", dest="source_format", choices=FORMATS, required=True,
                        help="Layout of SRC, and so which released models it serves. open_clip: an OpenCLIP ViT state "
                             "dict (LaCLIP's 4 released LAION-400M ViT-B/32 and ViT-B/16 models; -> LaCLIPModel); "
                             "laclip: LaCLIP's own timm/SLIP-style CLIP_VITB16 file (its 6 released CC3M/CC12M/RedCaps "
                             "ViT-B/16 models; -> LaCLIPModel with QK-norm, ImageNet normalisation); "
                             "clips: the released CLIPS ViT-L/H-14 OpenCLIP checkpoints (-> CLIPSModel).")
    parser.add_argument("src", help="Checkpoint file: .safetensors, or .pt/.bin (read with weights_only=True; "
                                    "an argparse.Namespace of training flags is allowed, any other object refused).")
    parser.add_argument("dst", help="Output folder for config.json, model.safetensors, the image processor and the remote code.")
    parser.add_argument("--vision-heads", type=int, default=None,
                        help="Attention heads of the vision tower (default: width // 64).")
    parser.add_argument("--text-heads", type=int, default=None,
                        help="Attention heads of the text tower (default: width // 64).")
    parser.add_argument("--quick-gelu", action="store_true",
                        help="--from open_clip only: use QuickGELU (OpenAI-trained weights) instead of exact GELU "
                             "(--from laclip and clips know their activations).")
    parser.add_argument("--tokenizer", default=None,
                        help="Tokenizer folder or Hub id to save beside the weights (e.g. openai/clip-vit-base-patch32; "
                             "openai/clip-vit-base-patch16 for --from laclip); "
                             "with --from clips, the WordPiece vocab.txt of the CLIPS tokenizer.")


def main(args: argparse.Namespace) -> int:
    if args.source_format == "clips":
        from ..clips.convert_clips import convert_clips

        convert_clips(args.src, args.dst, args.vision_heads, args.text_heads, args.tokenizer)
    elif args.source_format == "laclip":
        from .convert_laclip import convert_laclip

        convert_laclip(args.src, args.dst, args.vision_heads, args.text_heads, args.tokenizer)
    else:
        convert_open_clip(args.src, args.dst, args.vision_heads, args.text_heads, args.quick_gelu, args.tokenizer)
    print(f"saved {args.dst}")
    return 0


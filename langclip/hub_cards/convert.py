"""`langclip convert`: a released checkpoint file -> a checkpoint folder like every other, model card included.

``--from`` names the layout of the file, hence which released models it serves:

- ``open_clip``: OpenCLIP ViT state dicts: LaCLIP's 4 released LAION-400M models (ViT-B/32, ViT-B/16), and any
  other OpenCLIP ViT (-> `LaCLIPModel`, plain CLIP architecture; `langclip.modeling.laclip.convert_open_clip`);
- ``laclip``: LaCLIP's own SLIP-style ``CLIP_VITB16`` files: its 6 released CC3M/CC12M/RedCaps ViT-B/16 models
  (timm ViT with QK-norm, `langclip.modeling.laclip.convert_laclip`);
- ``clips``: the released CLIPS ViT-L/H-14 OpenCLIP checkpoints (-> `CLIPSModel`, `langclip.modeling.clips.convert_clips`).

The converters live in `langclip.modeling` (a checkpoint folder needs nothing above it); the command sits in
`hub_cards` because it also writes the folder's model card.

    langclip convert --from laclip laclip_cc12m.pt out/laclip-cc12m --tokenizer openai/clip-vit-base-patch16
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .cards import model_card
from .methods import METHODS

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
    parser.add_argument("dst", help="Output folder for config.json, model.safetensors, the tokenizer, the image processor, "
                                    "the remote code and the model card (README.md).")
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
    parser.add_argument("--method", choices=list(METHODS), default=None,
                        help="The method the released model was trained with, for its card: e.g. clip for the CLIP "
                             "baselines LaCLIP released beside its models (default: laclip for --from open_clip and "
                             "laclip, clips for --from clips).")


def main(args: argparse.Namespace) -> int:
    if args.source_format == "clips":
        from ..modeling.clips.convert_clips import convert_clips

        model = convert_clips(args.src, args.dst, args.vision_heads, args.text_heads, args.tokenizer)
    elif args.source_format == "laclip":
        from ..modeling.laclip.convert_laclip import convert_laclip

        model = convert_laclip(args.src, args.dst, args.vision_heads, args.text_heads, args.tokenizer)
    else:
        from ..modeling.laclip.convert_open_clip import convert_open_clip

        model = convert_open_clip(args.src, args.dst, args.vision_heads, args.text_heads, args.quick_gelu,
                                  args.tokenizer)
    card = model_card(model.config.to_dict(), Path(args.dst).name, method=args.method,
                      training={"converted_from": f"{Path(args.src).name} (langclip convert --from {args.source_format})"})
    card.save(str(Path(args.dst) / "README.md"))
    print(f"saved {args.dst} (model card: {Path(args.dst) / 'README.md'})")
    return 0

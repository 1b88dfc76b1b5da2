"""The benchmark models: their sizes (`Towers`), their `LaCLIPConfig` / `CLIPSConfig`, and the analytic FLOPs of a
training step of each method.

FLOPs count 2 per multiply-add of every linear layer (q, k, v, out: 4 d^2 per token; the 4x MLP: 8 d^2), attention's
QK^T and AV (2 n^2 d per layer), the patch embedding, the projections, the captioner's LM head and the logits. A part
that trains costs 3x its forward (the forward, and the backward's two products); a frozen tower costs 1x. Embedding
lookups, norms, activations, softmax and the optimizer count 0, so the optimizer's (memory-bound) time is outside
the model: methods that train more parameters pay it on top.
"""

from __future__ import annotations

from dataclasses import dataclass

from langclip import CLIPSConfig, LaCLIPConfig

CLIP_VOCABULARY = 49408  # the embedding table of CLIP's BPE; the benchmarks' word tokenizer uses the first ids


def encoder_flops(tokens: int, width: int, layers: int) -> float:
    """Forward FLOPs of ``layers`` pre-LN transformer blocks (4x MLP) over one sequence of ``tokens``."""
    return layers * (2 * tokens * 12 * width**2 + 2 * 2 * tokens**2 * width)


@dataclass(frozen=True)
class Towers:
    """A two-tower model's sizes; ``captioner_layers`` are CLIPS' (its width is the text tower's)."""

    vision_width: int
    vision_layers: int
    vision_heads: int
    image_size: int
    patch: int
    text_width: int
    text_layers: int
    text_heads: int
    context: int
    projection: int
    captioner_layers: int = 2
    captioner_context: int = 96

    @property
    def patches(self) -> int:
        return (self.image_size // self.patch) ** 2

    def config(self, tokenizer, **options) -> LaCLIPConfig:
        """The model's `LaCLIPConfig`, special tokens from ``tokenizer``, ``options`` (e.g. ``patch_dropout``) added."""
        return LaCLIPConfig(**self._towers(tokenizer), **options)

    def clips_config(self, tokenizer, **options) -> CLIPSConfig:
        return CLIPSConfig(**self._towers(tokenizer), captioner_layers=self.captioner_layers,
                           captioner_heads=self.text_heads, captioner_max_length=self.captioner_context, **options)

    def _towers(self, tokenizer) -> dict:
        text = dict(hidden_size=self.text_width, intermediate_size=4 * self.text_width,
                    num_hidden_layers=self.text_layers, num_attention_heads=self.text_heads,
                    vocab_size=max(len(tokenizer), CLIP_VOCABULARY), max_position_embeddings=self.context,
                    pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                    eos_token_id=tokenizer.eos_token_id)
        vision = dict(hidden_size=self.vision_width, intermediate_size=4 * self.vision_width,
                      num_hidden_layers=self.vision_layers, num_attention_heads=self.vision_heads,
                      image_size=self.image_size, patch_size=self.patch)
        return dict(text_config=text, vision_config=vision, projection_dim=self.projection)

    def kept_patches(self, patch_dropout: float = 0.0) -> int:
        return round((1 - patch_dropout) * self.patches)  # as `PatchDropout` keeps them

    def image_flops(self, patch_dropout: float = 0.0) -> float:
        """Forward FLOPs of one image: patch embedding (of every patch), the blocks over the class token and the kept
        patches, the projection."""
        embedding = 2 * self.patches * 3 * self.patch**2 * self.vision_width
        blocks = encoder_flops(1 + self.kept_patches(patch_dropout), self.vision_width, self.vision_layers)
        return embedding + blocks + 2 * self.vision_width * self.projection

    def text_flops(self, length: int) -> float:
        """Forward FLOPs of one text of ``length`` tokens, with the projection."""
        return encoder_flops(length, self.text_width, self.text_layers) + 2 * self.text_width * self.projection

    def captioner_flops(self, web_length: int, caption_length: int, patch_dropout: float = 0.0) -> float:
        """Forward FLOPs of CLIPS' captioner for one row: image and web-token projections, the blocks over
        [kept patches; web tokens; caption], the LM head at every caption position."""
        width, patches = self.text_width, self.kept_patches(patch_dropout)
        projections = 2 * patches * self.vision_width * width + 2 * web_length * self.text_width * width
        blocks = encoder_flops(patches + web_length + caption_length, width, self.captioner_layers)
        return projections + blocks + 2 * caption_length * width * CLIP_VOCABULARY

    def logits_flops(self, images: int, texts: int) -> float:
        return 2 * images * texts * self.projection

    def step_flops(self, method: str, batch: int, text_length: int, *, num_texts: int = 1, partial_length: int = 0,
                   caption_length: int = 0, patch_dropout: float = 0.0, image_trains: bool = True) -> float:
        """FLOPs of one training step of ``method`` (a ``--method`` preset) on ``batch`` rows; ``image_trains``
        False: a locked image tower (1x its forward). ``pcclip``: the frozen image tower encodes both images of a
        pair, the text tower trains on the difference text."""
        image = (3 if image_trains else 1) * self.image_flops(patch_dropout)
        if method in ("clip", "laclip"):
            return batch * (image + 3 * self.text_flops(text_length)) + 3 * self.logits_flops(batch, batch)
        if method == "laclip-mt":
            texts = num_texts * batch
            return (batch * image + 3 * texts * self.text_flops(text_length)
                    + 3 * (self.logits_flops(batch, texts) + self.logits_flops(batch, batch)))
        if method == "clips":
            per_row = (self.text_flops(text_length) + self.text_flops(partial_length)
                       + self.captioner_flops(text_length, caption_length, patch_dropout))
            return batch * (image + 3 * per_row) + 3 * 2 * self.logits_flops(batch, batch)
        if method == "pcclip":
            return batch * (2 * self.image_flops() + 3 * self.text_flops(text_length))
        raise ValueError(f"no FLOP count for method {method!r}")


# issue 20's model: both towers 4 layers x 256 (19.3M parameters), 96 px images, patch 16, context 32
SMALL = Towers(vision_width=256, vision_layers=4, vision_heads=4, image_size=96, patch=16, text_width=256,
               text_layers=4, text_heads=4, context=32, projection=256)
# the papers' ViT-B/16 at 224 px with CLIP's 12 x 512 text tower (149.6M parameters)
VIT_B16 = Towers(vision_width=768, vision_layers=12, vision_heads=12, image_size=224, patch=16, text_width=512,
                 text_layers=12, text_heads=8, context=77, projection=512)

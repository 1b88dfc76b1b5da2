"""CLIPS: CLIP trained on partial synthetic captions, with a captioner (Liu et al., arXiv 2411.16828).

The text encoder sees the web caption and a partial synthetic caption; a decoder, conditioned
on the image and the web caption, predicts the full synthetic caption. With the default
`CLIPSConfig` the towers are `transformers.CLIPVisionModel` / `CLIPTextModel` themselves,
so the contrastive weights export to a plain `CLIPModel` (`to_clip_model`); the released
CLIPS architecture swaps in `ViTVisionModel` (`langclip.modeling.vision`, shared with LaCLIP) / `CLIPSTextModel`,
which override only the pooling, the pre-LayerNorm and the text attention mask.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import CLIPConfig, CLIPModel, CLIPTextConfig, CLIPTextModel
from transformers import initialization as init
from transformers.masking_utils import create_bidirectional_mask, create_causal_mask
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.models.clip.modeling_clip import CLIPEncoder, CLIPOutput
from transformers.utils.generic import merge_with_config_defaults
from transformers.utils.output_capturing import capture_outputs

from .configuration_clips import CLIPSConfig
from ..activations import fuse_quick_gelu
from ..contrastive import LogitParametersMixin
from ..losses import CLIPSFeatures, caption_nll, clips_loss
from ..vision import ViTVisionModel, set_patch_dropout


def clips_text_layout(input_ids: torch.Tensor, attention_mask: torch.Tensor | None, context_length: int,
                      pad_token_id: int, eos_token_id: int, last_token_id: int) -> torch.Tensor:
    """(B, L) right-padded ``[bos] ids [eos]`` -> (B, context_length) ``[bos] ids [eos] pad ... pad [last]``.

    Positions with ``attention_mask`` 0 become ``pad_token_id``; a row with more than
    ``context_length - 1`` real tokens is cut to ``context_length - 2`` and ended with EOS (as the
    released tokenizer cuts). Input already in the layout (L = context_length, last column
    ``last_token_id``) is returned as is.
    """
    batch, length = input_ids.shape
    if length == context_length and bool(input_ids[:, -1].eq(last_token_id).all()):
        return input_ids
    keep = min(length, context_length - 1)
    body = input_ids[:, :keep].clone()
    if attention_mask is not None:
        body = body.masked_fill(attention_mask[:, :keep] == 0, pad_token_id)
    real = attention_mask.sum(dim=-1) if attention_mask is not None else torch.full((batch,), length)
    overflow = real.to(body.device) > context_length - 1
    if bool(overflow.any()):
        body[overflow, context_length - 2] = eos_token_id
    tail = torch.full((batch, context_length - keep), pad_token_id, dtype=body.dtype, device=body.device)
    tail[:, -1] = last_token_id
    return torch.cat([body, tail], dim=1)


class CLIPSTextModel(CLIPTextModel):
    """`CLIPTextModel` with ``"causal"`` or ``"bidirectional"`` attention and ``"eos"`` or ``"last"`` pooling.

    Bidirectional attention masks only the padding given in ``attention_mask``. ``"last"``
    pools the last real position of each row (the last 1 of ``attention_mask``). With
    ``last_token_id`` (the released layout) inputs are first completed by `clips_text_layout`
    and attended in full, as the released models attend to all positions.
    """

    def __init__(self, config, attention: str = "causal", pooling: str = "eos", last_token_id: int | None = None):
        super().__init__(config)
        self.attention = attention
        self.pooling = pooling
        self.last_token_id = last_token_id

    @merge_with_config_defaults
    @capture_outputs(tie_last_hidden_states=False)
    def forward(self, input_ids=None, attention_mask=None, position_ids=None, **kwargs) -> BaseModelOutputWithPooling:
        if input_ids is None:
            raise ValueError("You have to specify input_ids")
        input_ids = input_ids.view(-1, input_ids.shape[-1])
        if self.last_token_id is not None:
            input_ids = clips_text_layout(input_ids, attention_mask, self.config.max_position_embeddings,
                                          self.config.pad_token_id, self.eos_token_id, self.last_token_id)
            attention_mask = None
        hidden_states = self.embeddings(input_ids=input_ids, position_ids=position_ids)
        causal = self.attention == "causal"
        make_mask = create_causal_mask if causal else create_bidirectional_mask
        mask = make_mask(config=self.config, inputs_embeds=hidden_states, attention_mask=attention_mask,
                         past_key_values=None)
        kwargs.pop("is_causal", None)
        hidden_states = self.encoder(inputs_embeds=hidden_states, attention_mask=mask, is_causal=causal,
                                     **kwargs).last_hidden_state
        hidden_states = self.final_layer_norm(hidden_states)
        if self.pooling == "last":
            if attention_mask is None:
                last = torch.full((hidden_states.shape[0],), hidden_states.shape[1] - 1, device=hidden_states.device)
            else:  # the last real position of each row, wherever the padding is
                positions = torch.arange(attention_mask.shape[-1], device=hidden_states.device)
                last = (attention_mask.bool() * positions).argmax(dim=-1)
            pooled = hidden_states[torch.arange(hidden_states.shape[0], device=hidden_states.device), last]
        else:
            first_eos = (input_ids == self.eos_token_id).int().argmax(dim=-1)
            pooled = hidden_states[torch.arange(hidden_states.shape[0], device=hidden_states.device), first_eos]
        return BaseModelOutputWithPooling(last_hidden_state=hidden_states, pooler_output=pooled)


def captioner_attention_mask(prefix_mask: torch.Tensor, caption_length: int) -> torch.Tensor:
    """Boolean (B, 1, N, N) mask, True = may attend, over [prefix (image + web tokens); caption].

    Every position attends to the unpadded prefix tokens (``prefix_mask``, (B, M), 1 = real);
    caption position i also attends to caption positions <= i; prefix positions never see
    the caption.
    """
    batch, prefix_length = prefix_mask.shape
    length = prefix_length + caption_length
    allowed = torch.zeros(batch, length, length, dtype=torch.bool, device=prefix_mask.device)
    allowed[:, :, :prefix_length] = prefix_mask.bool()[:, None, :]
    allowed[:, prefix_length:, prefix_length:] = torch.ones(
        caption_length, caption_length, dtype=torch.bool, device=prefix_mask.device).tril()
    return allowed[:, None]


class CLIPSCaptioner(nn.Module):
    """Transformer decoder over [projected image tokens; projected web-caption states; caption tokens].

    Image and web tokens attend to each other both ways; caption tokens attend causally to
    the caption and to all image and web tokens (`captioner_attention_mask`). Its blocks are
    `CLIPEncoderLayer`s sized by ``captioner_{width,heads,layers}``.
    """

    def __init__(self, config: CLIPSConfig):
        super().__init__()
        text = config.text_config
        width = config.captioner_width or text.hidden_size
        self.config = CLIPTextConfig(
            vocab_size=text.vocab_size, hidden_size=width, intermediate_size=4 * width,
            num_hidden_layers=config.captioner_layers, num_attention_heads=config.captioner_heads,
            max_position_embeddings=config.captioner_max_length, hidden_act=text.hidden_act,
            layer_norm_eps=text.layer_norm_eps, attention_dropout=0.0, pad_token_id=text.pad_token_id,
            bos_token_id=text.bos_token_id, eos_token_id=text.eos_token_id,
        )
        self.config._attn_implementation = "sdpa"  # takes the boolean `captioner_attention_mask`
        self.image_projection = nn.Linear(config.vision_config.hidden_size, width)
        self.web_projection = nn.Linear(text.hidden_size, width)
        self.token_embedding = nn.Embedding(text.vocab_size, width)
        self.position_embedding = nn.Embedding(config.captioner_max_length, width)
        self.encoder = CLIPEncoder(self.config)
        self.final_layer_norm = nn.LayerNorm(width, eps=text.layer_norm_eps)
        self.lm_head = nn.Linear(width, text.vocab_size, bias=False)

    def forward(self, image_tokens: torch.Tensor, web_tokens: torch.Tensor, web_mask: torch.Tensor | None,
                caption_ids: torch.Tensor) -> torch.Tensor:
        """Hidden states (B, P + W + C, width) of every position (image P, web W, caption C)."""
        if caption_ids.shape[1] > self.config.max_position_embeddings:
            raise ValueError(f"caption of {caption_ids.shape[1]} tokens is longer than captioner_max_length="
                             f"{self.config.max_position_embeddings}")
        image = self.image_projection(image_tokens)
        web = self.web_projection(web_tokens)
        positions = torch.arange(caption_ids.shape[1], device=caption_ids.device)
        caption = self.token_embedding(caption_ids) + self.position_embedding(positions)
        hidden_states = torch.cat([image, web, caption], dim=1)
        image_mask = torch.ones(image.shape[:2], dtype=torch.long, device=image.device)
        web_mask = torch.ones(web.shape[:2], dtype=torch.long, device=web.device) if web_mask is None else web_mask
        mask = captioner_attention_mask(torch.cat([image_mask, web_mask], dim=1), caption_ids.shape[1])
        return self.final_layer_norm(self.encoder(hidden_states, attention_mask=mask).last_hidden_state)

    def logits(self, image_tokens, web_tokens, web_mask, caption_ids) -> torch.Tensor:
        """Next-token logits (B, C, vocab) at the caption positions."""
        hidden_states = self(image_tokens, web_tokens, web_mask, caption_ids)
        return self.lm_head(hidden_states[:, -caption_ids.shape[1]:])


@dataclass
class CLIPSOutput(CLIPOutput):
    """`CLIPOutput` of B images with their web captions (``text_embeds`` (B, D), ``logits_per_image`` (B, B)), plus:

    partial_text_embeds: (B, D), the partial synthetic captions, normalised;
    caption_logits: (B, L, V), the captioner's next-token logits over the synthetic caption (None with
        ``return_caption_logits`` False, the training-mode default: the NLL's backward then writes its gradient into
        the logits' memory);
    caption_nll_sum: (B,), each row's summed next-token NLL; caption_tokens: (B,), its predicted tokens;
    contrastive_loss, caption_loss: () the two terms of ``loss`` (`clips_loss`).
    """

    partial_text_embeds: torch.FloatTensor | None = None
    caption_logits: torch.FloatTensor | None = None
    caption_nll_sum: torch.FloatTensor | None = None
    caption_tokens: torch.LongTensor | None = None
    contrastive_loss: torch.FloatTensor | None = None
    caption_loss: torch.FloatTensor | None = None


class CLIPSModel(LogitParametersMixin, CLIPModel):
    """`CLIPModel` with a captioner; ``forward`` takes the web caption, the partial and the full synthetic caption.

    Inputs: ``pixel_values`` (N images); ``input_ids``/``attention_mask`` (web caption, one per image; or, for
    inference without ``return_loss`` and the synthetic captions, any M texts: ``logits_per_image`` is then (N, M));
    ``partial_input_ids``/``partial_attention_mask`` (partial synthetic caption, optional);
    ``caption_input_ids``/``caption_attention_mask`` (full synthetic caption, framed by BOS/EOS, optional).
    ``logits_per_image`` and ``text_embeds`` refer to the web caption. ``return_caption_logits`` (default: not in
    training mode) returns the (B, L, V) captioner logits; without them the caption NLL's backward reuses their
    memory for the gradient, which spares a step over CLIP's 49,408-token vocabulary a third (B, L, V) tensor.
    """

    config_class = CLIPSConfig

    def __init__(self, config: CLIPSConfig):
        super().__init__(config)
        if (config.vision_pooling, config.vision_pre_layernorm) != ("cls", True):
            self.vision_model = ViTVisionModel._from_config(
                config.vision_config, pooling=config.vision_pooling, pre_layernorm=config.vision_pre_layernorm)
        if (config.text_attention, config.text_pooling, config.text_last_token_id) != ("causal", "eos", None):
            self.text_model = CLIPSTextModel._from_config(
                config.text_config, attention=config.text_attention, pooling=config.text_pooling,
                last_token_id=config.text_last_token_id)
        set_patch_dropout(self.vision_model, config.patch_dropout)  # the captioner sees the kept patches only
        self.captioner = CLIPSCaptioner(config)
        fuse_quick_gelu(self)
        self.add_logit_bias()
        self.post_init()

    @torch.no_grad()
    def _init_weights(self, module):
        """CLIP's initialisation; the captioner's embeddings as CLIP's text embeddings, its projections and head ~ N(0, 1/width)."""
        super()._init_weights(module)
        captioner = getattr(self, "captioner", None)  # absent while CLIPModel.__init__ runs
        if captioner is None:
            return
        if module is captioner.token_embedding:
            init.normal_(module.weight, std=0.02)
        elif module is captioner.position_embedding:
            init.normal_(module.weight, std=0.01)
        elif module in (captioner.image_projection, captioner.web_projection, captioner.lm_head):
            init.normal_(module.weight, std=captioner.config.hidden_size**-0.5)

    def _web_mask(self, attention_mask: torch.Tensor | None) -> torch.Tensor | None:
        """The web tokens' padding mask for the captioner: none in the released layout (every position attended)."""
        return None if self.config.text_last_token_id is not None else attention_mask

    def captioner_inputs(self, image_states: torch.Tensor, web_states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(image patch tokens after the vision tower's post-LayerNorm, web-caption token states)."""
        return self.vision_model.post_layernorm(image_states[:, 1:]), web_states

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        partial_input_ids: torch.LongTensor | None = None,
        partial_attention_mask: torch.Tensor | None = None,
        caption_input_ids: torch.LongTensor | None = None,
        caption_attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        return_loss: bool | None = None,
        return_caption_logits: bool | None = None,
        interpolate_pos_encoding: bool = False,
        **kwargs,
    ) -> CLIPSOutput:
        if input_ids is None or pixel_values is None:
            raise ValueError("CLIPSModel.forward needs both input_ids (web caption) and pixel_values")
        paired = return_loss or partial_input_ids is not None or caption_input_ids is not None
        for name, ids in (("input_ids", input_ids), ("partial_input_ids", partial_input_ids),
                          ("caption_input_ids", caption_input_ids)):
            if ids is not None and (ids.dim() != 2 or (paired and ids.shape[0] != pixel_values.shape[0])):
                raise ValueError(
                    f"{name} must be (batch={pixel_values.shape[0]}, length), got {tuple(ids.shape)}: return_loss and "
                    "the partial/full synthetic captions pair text i with image i (only plain input_ids, without "
                    "return_loss, may hold any number M of texts)")
        vision = self.get_image_features(pixel_values=pixel_values, interpolate_pos_encoding=interpolate_pos_encoding)
        text = self.get_text_features(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids)
        image_embeds = F.normalize(vision.pooler_output, dim=-1)
        text_embeds = F.normalize(text.pooler_output, dim=-1)
        partial_embeds = None
        if partial_input_ids is not None:
            partial = self.get_text_features(input_ids=partial_input_ids, attention_mask=partial_attention_mask)
            partial_embeds = F.normalize(partial.pooler_output, dim=-1)
        logits = nll_sum = tokens = None
        if caption_input_ids is not None:
            image_tokens, web_tokens = self.captioner_inputs(vision.last_hidden_state, text.last_hidden_state)
            logits = self.captioner.logits(image_tokens, web_tokens, self._web_mask(attention_mask), caption_input_ids)
            keep_logits = not self.training if return_caption_logits is None else return_caption_logits
            nll_sum, tokens = caption_nll(logits, caption_input_ids, caption_attention_mask,
                                          overwrite_logits=not keep_logits)
            logits = logits if keep_logits else None

        logit_scale = self.logit_scale.exp()
        logits_per_text = logit_scale * text_embeds @ image_embeds.T
        loss = contrastive = caption = None
        if return_loss:
            loss, contrastive, caption = clips_loss(
                CLIPSFeatures(image_embeds, text_embeds, partial_embeds, nll_sum, tokens), **self.loss_parameters(),
                kind=self.config.contrastive_loss,
                weights=(self.config.contrastive_loss_weight, self.config.caption_loss_weight),
                context=self.loss_context())
        return CLIPSOutput(
            loss=loss, logits_per_image=logits_per_text.T, logits_per_text=logits_per_text, text_embeds=text_embeds,
            image_embeds=image_embeds, text_model_output=text, vision_model_output=vision,
            partial_text_embeds=partial_embeds, caption_logits=logits, caption_nll_sum=nll_sum,
            caption_tokens=tokens, contrastive_loss=contrastive, caption_loss=caption,
        )

    @torch.no_grad()
    def generate_caption(
        self,
        pixel_values: torch.FloatTensor,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        max_new_tokens: int | None = None,
        do_sample: bool = False,
        temperature: float = 1.0,
        top_k: int = 0,
        generator: torch.Generator | None = None,
    ) -> torch.LongTensor:
        """Recaption images from their web captions: (B, 1 + T) ids, BOS first, each row ended by EOS then padding.

        T <= ``max_new_tokens`` new tokens (default and upper bound: ``captioner_max_length - 1``).

        Greedy by default; ``do_sample`` samples from softmax(logits / temperature), within
        the ``top_k`` best tokens when top_k > 0. No KV cache: every step re-runs the decoder
        over the prefix and the caption so far (the towers run once); fine for captions of
        up to ``captioner_max_length`` tokens.
        """
        text_config = self.config.text_config
        vision = self.get_image_features(pixel_values=pixel_values)
        web = self.get_text_features(input_ids=input_ids, attention_mask=attention_mask)
        image_tokens, web_tokens = self.captioner_inputs(vision.last_hidden_state, web.last_hidden_state)
        longest = self.config.captioner_max_length - 1  # BOS takes one of the captioner's positions
        steps = min(max_new_tokens or longest, longest)
        web_mask = self._web_mask(attention_mask)
        ids = torch.full((input_ids.shape[0], 1), text_config.bos_token_id, dtype=torch.long, device=input_ids.device)
        done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        for _ in range(steps):
            logits = self.captioner.logits(image_tokens, web_tokens, web_mask, ids)[:, -1].float()
            if do_sample:
                logits = logits / temperature
                if top_k > 0:
                    kth = logits.topk(min(top_k, logits.shape[-1])).values[:, -1:]
                    logits = logits.masked_fill(logits < kth, float("-inf"))
                next_ids = torch.multinomial(logits.softmax(dim=-1), 1, generator=generator).squeeze(1)
            else:
                next_ids = logits.argmax(dim=-1)
            next_ids = next_ids.masked_fill(done, text_config.pad_token_id)
            ids = torch.cat([ids, next_ids[:, None]], dim=1)
            done |= next_ids == text_config.eos_token_id
            if done.all():
                break
        return ids

    def to_clip_model(self) -> CLIPModel:
        """The contrastive towers as a plain `transformers.CLIPModel` (standard architecture only)."""
        if not self.config.is_standard_clip:
            raise ValueError("only the standard architecture (cls pooling, pre-LayerNorm, causal text, EOS pooling) "
                             "exports to CLIPModel")
        config = CLIPConfig(text_config=self.config.text_config.to_dict(),
                            vision_config=self.config.vision_config.to_dict(),
                            projection_dim=self.config.projection_dim,
                            logit_scale_init_value=self.config.logit_scale_init_value)
        model = CLIPModel(config)
        state_dict = {k: v for k, v in self.state_dict().items() if not k.startswith("captioner.")}
        model.load_state_dict(state_dict)
        return model

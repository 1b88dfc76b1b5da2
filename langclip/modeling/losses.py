"""Every training loss, on features, in OpenCLIP's local-loss form.

- `clip_loss`, `multi_positive_clip_loss`: CLIP's softmax InfoNCE, one or T texts per image (LaCLIP-MT);
- `sigmoid_loss`: SigLIP's pairwise sigmoid loss; `contrastive_loss` picks one of these by its explicit ``kind``;
- `caption_nll`, `clips_loss`: CLIPS' captioner NLL and its contrastive + captioner total;
- `difference_loss`, `pcclip_loss`: PC-CLIP's pairwise-difference loss and its optional CLIP term.

Every function takes this process's features and a `LossContext`: this process's ``rank`` among
``world_size`` processes, and whether to check the features are finite. With ``world_size`` > 1 the softmax
losses all-gather features *with gradient* (`_AllGather`), each process scores its local rows against the
global batch, and its labels are offset by ``rank * local_batch``. The mean of the per-process losses (what
DDP's gradient averaging optimises) is then the loss of the global batch. The sigmoid loss gathers nothing:
text blocks travel round the ring of processes (`_NeighbourExchange`), so no process holds the global logit
matrix. Callers build the context once (`LossContext.current` reads an initialised `torch.distributed`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.distributed as dist
import torch.nn.functional as F

from ..choices import CONTRASTIVE_LOSSES

SIGMOID_LOGIT_SCALE_INIT = math.log(10.0)
"""SigLIP's initial log t; its initial b is -10 (`config.logit_bias_init_value`)."""
IGNORE_INDEX = -100


@dataclass(frozen=True)
class LossContext:
    """Where a loss runs and what it checks.

    ``rank`` / ``world_size``: this process's place among the processes whose features make the global batch
    (default: one process). ``check_finite``: raise on NaN or infinite features (a host sync); the trainer's
    step passes False and skips non-finite steps on the device instead.
    """

    rank: int = 0
    world_size: int = 1
    check_finite: bool = True

    def __post_init__(self):
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank must be in [0, world_size={self.world_size}), got {self.rank}")

    @classmethod
    def current(cls, check_finite: bool = True) -> LossContext:
        """This process's rank and world size in the initialised `torch.distributed` group; one process without."""
        if dist.is_available() and dist.is_initialized():
            return cls(dist.get_rank(), dist.get_world_size(), check_finite)
        return cls(check_finite=check_finite)


class _AllGather(torch.autograd.Function):
    """all_gather along dim 0 whose backward sums every process's gradient and keeps this process's slice.

    Written out because `torch.distributed.nn.functional.all_gather` returns wrong input
    gradients on gloo when the incoming gradients are not contiguous (the (B, T, D) text
    features of LaCLIP-MT).
    """

    @staticmethod
    def forward(ctx, features: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
        ctx.rank, ctx.world_size = rank, world_size
        gathered = [torch.empty_like(features) for _ in range(world_size)]
        dist.all_gather(gathered, features.contiguous())
        return torch.cat(gathered)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        grad = grad.contiguous()
        dist.all_reduce(grad)
        return grad.chunk(ctx.world_size)[ctx.rank], None, None


def gather_features(features: torch.Tensor, context: LossContext) -> torch.Tensor:
    """Concatenate ``features`` of the ``context.world_size`` processes along dim 0, keeping the autograd graph."""
    if context.world_size == 1:
        return features
    return _AllGather.apply(features, context.rank, context.world_size)


def _check_features(name: str, features: torch.Tensor, dims: int, context: LossContext) -> None:
    if features.dim() != dims:
        raise ValueError(f"{name} must have {dims} dimensions, got shape {tuple(features.shape)}")
    if context.check_finite and not torch.isfinite(features).all():
        raise ValueError(f"{name} contains NaN or infinite values")


def _check_batch(image_features: torch.Tensor, text_features: torch.Tensor) -> None:
    if image_features.shape[0] != text_features.shape[0]:
        raise ValueError(
            f"image and text batch sizes differ: {image_features.shape[0]} images, {text_features.shape[0]} texts"
        )
    if image_features.shape[-1] != text_features.shape[-1]:
        raise ValueError(
            f"image and text feature sizes differ: {image_features.shape[-1]} vs {text_features.shape[-1]}"
        )


def local_labels(local_batch: int, rank: int, device: torch.device | None = None) -> torch.Tensor:
    """Positions of this process's positives in the global batch: ``rank * local_batch + arange(local_batch)``."""
    return torch.arange(local_batch, device=device) + rank * local_batch


def clip_loss(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    logit_scale: torch.Tensor,
    context: LossContext = LossContext(),
) -> torch.Tensor:
    """Symmetric InfoNCE of CLIP.

    With normalised features x (images, local B x D), y (texts), global batches X, Y,
    s = ``logit_scale`` (already exponentiated) and labels l_i = rank * B + i:

        L = 1/2 [ CE(s * x @ Y^T, l) + CE(s * y @ X^T, l) ]

    where CE is the mean cross-entropy over the B local rows.
    """
    _check_features("image_features", image_features, 2, context)
    _check_features("text_features", text_features, 2, context)
    _check_batch(image_features, text_features)
    all_image = gather_features(image_features, context)
    all_text = gather_features(text_features, context)
    labels = local_labels(image_features.shape[0], context.rank, image_features.device)
    logits_per_image = logit_scale * image_features @ all_text.T
    logits_per_text = logit_scale * text_features @ all_image.T
    return (F.cross_entropy(logits_per_image, labels) + F.cross_entropy(logits_per_text, labels)) / 2


def multi_positive_clip_loss(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    logit_scale: torch.Tensor,
    context: LossContext = LossContext(),
) -> torch.Tensor:
    """LaCLIP-MT loss with T = M + 1 texts per image.

    ``text_features`` is (B, T, D); column 0 holds the text that aug_T sampled. With
    y_j the j-th texts of the global batch (T, ... ) and the notation of `clip_loss`:

        L_I* = 1/(M+1) * sum_{j=0..M} CE(s * x @ Y_j^T, l)     (negatives: j-th texts of other images)
        L_T  = CE(s * y_0 @ X^T, l)                            (ordinary text->image loss on aug_T's text)
        L    = (L_I* + L_T) / 2

    The paper writes the normaliser of L_I* as 1/M over the M+1 terms j = 0..M; we
    average, i.e. divide by M+1, so that L reduces to `clip_loss` when all texts agree.
    """
    _check_features("image_features", image_features, 2, context)
    _check_features("text_features", text_features, 3, context)
    _check_batch(image_features, text_features)
    all_image = gather_features(image_features, context)
    all_text = gather_features(text_features, context)
    labels = local_labels(image_features.shape[0], context.rank, image_features.device)
    # (T, B_local, B_global): image i against the j-th text of every image.
    logits_per_image = logit_scale * torch.einsum("bd,ntd->tbn", image_features, all_text)
    num_texts = text_features.shape[1]
    loss_image = F.cross_entropy(
        logits_per_image.reshape(-1, logits_per_image.shape[-1]), labels.repeat(num_texts)
    )
    logits_per_text = logit_scale * text_features[:, 0] @ all_image.T
    loss_text = F.cross_entropy(logits_per_text, labels)
    return (loss_image + loss_text) / 2


class _NeighbourExchange(torch.autograd.Function):
    """Send ``features`` to rank + 1, receive rank - 1's; the backward sends the gradient back the other way."""

    @staticmethod
    def _shift(tensor: torch.Tensor, to: int, source: int) -> torch.Tensor:
        received = torch.empty_like(tensor)
        operations = [dist.P2POp(dist.isend, tensor, to), dist.P2POp(dist.irecv, received, source)]
        requests = dist.batch_isend_irecv(operations)
        for request in requests:
            request.wait()
        return received

    @staticmethod
    def forward(ctx, features: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
        ctx.rank, ctx.world_size = rank, world_size
        return _NeighbourExchange._shift(features.contiguous(), (rank + 1) % world_size, (rank - 1) % world_size)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        rank, world_size = ctx.rank, ctx.world_size
        grad = _NeighbourExchange._shift(grad.contiguous(), (rank - 1) % world_size, (rank + 1) % world_size)
        return grad, None, None


def _sigmoid_block(image_features, text_features, logit_scale, logit_bias, positives: bool) -> torch.Tensor:
    """Sum of -log sigmoid(z * (t * x_i.y_kj + b)) over images i (B), texts k (B'), j (T);
    z = +1 iff i == k and ``positives``."""
    logits = logit_scale * torch.einsum("id,kjd->ikj", image_features, text_features) + logit_bias
    signs = -torch.ones(logits.shape[:2], dtype=logits.dtype, device=logits.device)
    if positives:
        signs.diagonal().fill_(1.0)
    return -F.logsigmoid(signs[:, :, None] * logits).sum()


def sigmoid_loss(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    logit_scale: torch.Tensor,
    logit_bias: torch.Tensor,
    context: LossContext = LossContext(),
) -> torch.Tensor:
    """SigLIP's pairwise sigmoid loss (Zhai et al., 2023), single- or multi-positive.

    With normalised images x_i (local B x D), texts y_kj (global batch, T texts per image;
    ``text_features`` (B, D) is T = 1, (B, T, D) makes every text of an image a positive),
    t = ``logit_scale`` (already exponentiated), b = ``logit_bias``:

        L = 1/B * sum_i sum_k sum_j -log sigmoid(z_ik * (t * x_i . y_kj + b)),   z_ik = +1 if i == k else -1

    summed over texts, averaged over this process's images. Across P processes each
    process scores its images against its own texts, then P - 1 times against the texts
    of rank - 1, rank - 2, ... passed round the ring (negatives only): logits are never
    larger than (B, B, T), and the mean of the per-process losses is the global-batch loss
    with the global-batch gradient (the exchange's backward returns each block's gradient).
    """
    _check_features("image_features", image_features, 2, context)
    if text_features.dim() == 2:
        _check_features("text_features", text_features, 2, context)
        text_features = text_features[:, None]
    else:
        _check_features("text_features", text_features, 3, context)
    _check_batch(image_features, text_features)
    loss = _sigmoid_block(image_features, text_features, logit_scale, logit_bias, positives=True)
    for _ in range(context.world_size - 1):
        text_features = _NeighbourExchange.apply(text_features, context.rank, context.world_size)
        loss = loss + _sigmoid_block(image_features, text_features, logit_scale, logit_bias, positives=False)
    return loss / image_features.shape[0]


def contrastive_loss(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    logit_scale: torch.Tensor,
    logit_bias: torch.Tensor | None = None,
    *,
    kind: str,
    multi_positive: bool = False,
    context: LossContext = LossContext(),
) -> torch.Tensor:
    """The contrastive loss of ``kind`` (`CONTRASTIVE_LOSSES`) on one text per image, (B, D), or, with
    ``multi_positive``, T texts per image, (B, T, D), every one a positive.

    ``"softmax"``: `clip_loss` or `multi_positive_clip_loss` (no ``logit_bias``);
    ``"sigmoid"``: `sigmoid_loss`, which needs ``logit_bias``.
    """
    if kind not in CONTRASTIVE_LOSSES:
        raise ValueError(f"kind must be one of {CONTRASTIVE_LOSSES}, got {kind!r}")
    if (logit_bias is None) != (kind == "softmax"):
        raise ValueError(f"the {kind} loss {'takes no' if kind == 'softmax' else 'needs a'} logit_bias")
    texts_dims = 3 if multi_positive else 2
    if text_features.dim() != texts_dims:
        raise ValueError(f"text_features must have {texts_dims} dimensions with multi_positive={multi_positive}, "
                         f"got shape {tuple(text_features.shape)}")
    if kind == "sigmoid":
        return sigmoid_loss(image_features, text_features, logit_scale, logit_bias, context)
    softmax_loss = multi_positive_clip_loss if multi_positive else clip_loss
    return softmax_loss(image_features, text_features, logit_scale, context)


class CaptionNLL(NamedTuple):
    """Per-row next-token NLL of a captioner: ``nll_sum`` (B,), summed over each row's predicted tokens, and
    ``tokens`` (B,), their number."""

    nll_sum: torch.Tensor
    tokens: torch.Tensor


CROSS_ENTROPY_CHUNK = 2**22
"""Elements of the row chunks in which `_TokenCrossEntropy` works: 16 MiB in float32, under glibc's 32 MiB
ceiling for serving an allocation from the heap, so each chunk's temporaries reuse memory instead of faulting in
fresh pages."""


class _TokenCrossEntropy(torch.autograd.Function):
    """Per-row cross-entropy of (R, V) logits z against (R,) targets t, without keeping a log-softmax copy of z.

    nll_r = -log_softmax(z_r)[t_r], and d nll_r / d z_r = softmax(z_r) - onehot(t_r); rows whose target is
    ``IGNORE_INDEX`` give 0 and no gradient. Both passes run over row chunks of `CROSS_ENTROPY_CHUNK` elements
    with the fused (log-)softmax kernels, in at least float32 (bfloat16 z is read as it is, without a float32 copy);
    it keeps z only and writes the gradient once, rounded to z's dtype, into z's own memory with
    ``overwrite_logits`` (z is then spent: a second backward through it raises autograd's in-place error).
    ``F.cross_entropy`` instead keeps the log-softmax (a second (R, V) tensor), and its backward zero-fills a third
    and reads two: at CLIP's 49,408-token vocabulary that traffic, and the page faults of the fresh tensors, were a
    fifth of the CLIPS step on CPU.
    """

    @staticmethod
    def forward(ctx, logits: torch.Tensor, targets: torch.Tensor, overwrite_logits: bool) -> torch.Tensor:
        rows = max(1, CROSS_ENTROPY_CHUNK // logits.shape[1])
        dtype = torch.promote_types(logits.dtype, torch.float32)
        valid = targets != IGNORE_INDEX
        picked = targets.clamp(min=0)[:, None]
        log_probs = torch.cat([F.log_softmax(chunk, dim=1, dtype=dtype).gather(1, index)
                               for chunk, index in zip(logits.split(rows), picked.split(rows))]).squeeze(1)
        ctx.save_for_backward(logits, picked, valid)
        ctx.rows, ctx.overwrite_logits = rows, overwrite_logits
        return torch.where(valid, -log_probs, 0.0)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_nll: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        logits, picked, valid = ctx.saved_tensors
        scale = (grad_nll * valid)[:, None]  # (R, 1), in at least float32
        grad = logits if ctx.overwrite_logits else torch.empty_like(logits)
        for logits_chunk, grad_chunk, scale_chunk, index in zip(
                logits.split(ctx.rows), grad.split(ctx.rows), scale.split(ctx.rows), picked.split(ctx.rows)):
            probs = torch.softmax(logits_chunk, dim=1, dtype=scale.dtype)
            torch.mul(probs, scale_chunk, out=grad_chunk)  # each value rounded once to the logits' dtype
            grad_chunk.scatter_(1, index, ((probs.gather(1, index) - 1) * scale_chunk).to(grad.dtype))
        return grad, None, None


def caption_nll(logits: torch.Tensor, caption_ids: torch.Tensor, caption_mask: torch.Tensor | None,
                overwrite_logits: bool = False) -> CaptionNLL:
    """Next-token cross-entropy of (B, C, V) ``logits``: logits[:, t] predicts caption_ids[:, t + 1], positions
    where ``caption_mask`` (B, C) is 0 ignored; computed in at least float32.

    The (B * C, V) rows go to `_TokenCrossEntropy` as they lie in memory, the last position's target ignored:
    slicing off that position, or moving V to dim 1, would copy the logits. ``overwrite_logits``: the backward
    writes its gradient into ``logits`` (for callers that do not hand the logits on)."""
    targets = F.pad(caption_ids[:, 1:], (0, 1), value=IGNORE_INDEX)
    if caption_mask is not None:
        targets = targets.masked_fill(F.pad(caption_mask[:, 1:], (0, 1)) == 0, IGNORE_INDEX)
    nll = _TokenCrossEntropy.apply(logits.flatten(0, 1), targets.flatten(), overwrite_logits)
    return CaptionNLL(nll.view(targets.shape).sum(dim=1), (targets != IGNORE_INDEX).sum(dim=1))


class CLIPSFeatures(NamedTuple):
    """What the CLIPS loss scores, per row: normalised ``image``, ``web`` caption and ``partial`` synthetic caption
    embeddings (B, D), and the captioner's `CaptionNLL` of the full synthetic caption, ``caption_nll_sum`` and
    ``caption_tokens`` (B,). ``partial`` and the caption terms may be None (not computed)."""

    image: torch.Tensor
    web: torch.Tensor
    partial: torch.Tensor | None = None
    caption_nll_sum: torch.Tensor | None = None
    caption_tokens: torch.Tensor | None = None


class CLIPSLoss(NamedTuple):
    """`clips_loss`: ``total`` = w_c * ``contrastive`` + w_cap * ``caption`` (``caption`` None without captions)."""

    total: torch.Tensor
    contrastive: torch.Tensor
    caption: torch.Tensor | None


def clips_loss(
    features: CLIPSFeatures,
    logit_scale: torch.Tensor,
    logit_bias: torch.Tensor | None = None,
    *,
    kind: str,
    weights: tuple[float, float] = (1.0, 2.0),
    context: LossContext = LossContext(),
) -> CLIPSLoss:
    """CLIPS' loss (Liu et al., arXiv 2411.16828), with (w_c, w_cap) = ``weights``:

        contrastive = 1/2 [ L(img, web) + L(img, partial) ]             (L(img, web) without partial)
        caption     = sum of next-token NLL / number of caption tokens  (per process)
        total       = w_c * contrastive + w_cap * caption               (w_c * contrastive without captions)

    L is `contrastive_loss` of ``kind`` (the sigmoid kind needs ``logit_bias``).
    """
    contrastive_weight, caption_weight = weights

    def contrastive_term(text_features: torch.Tensor) -> torch.Tensor:
        return contrastive_loss(features.image, text_features, logit_scale, logit_bias, kind=kind, context=context)

    contrastive = contrastive_term(features.web)
    if features.partial is not None:
        contrastive = (contrastive + contrastive_term(features.partial)) / 2
    if features.caption_nll_sum is None:
        return CLIPSLoss(contrastive_weight * contrastive, contrastive, None)
    caption = features.caption_nll_sum.sum() / features.caption_tokens.sum().clamp(min=1)
    return CLIPSLoss(contrastive_weight * contrastive + caption_weight * caption, contrastive, caption)


def difference_loss(
    image_features_a: torch.Tensor,
    image_features_b: torch.Tensor,
    difference_text_features: torch.Tensor,
    temperature: float = 1.0,
    context: LossContext = LossContext(),
) -> torch.Tensor:
    """PC-CLIP's pairwise-difference loss (Sam et al., TMLR 2025).

    With n(.) the L2 normalisation, a_k = n(n(f(x_a)) - n(f(x_b))) for each pair k and
    t_k = n(g(d_k)) the embedding of "how x_a differs from x_b":

        L = 1/2 [ CE(t @ A^T / tau, l) + CE(a @ T^T / tau, l) ],   tau = 1, fixed

    i.e. `clip_loss` on (a, t) with the logit scale fixed to 1 / tau. Inputs need not be
    normalised. A pair of identical embeddings has no difference direction and is an error.
    """
    _check_features("image_features_a", image_features_a, 2, context)
    _check_features("image_features_b", image_features_b, 2, context)
    if image_features_a.shape != image_features_b.shape:
        raise ValueError(
            f"pair feature shapes differ: {tuple(image_features_a.shape)} vs {tuple(image_features_b.shape)}"
        )
    delta = F.normalize(image_features_a, dim=-1) - F.normalize(image_features_b, dim=-1)
    same = delta.norm(dim=-1) < 1e-6
    if same.any():
        raise ValueError(f"pairs {same.nonzero().flatten().tolist()} compare an image with itself (zero difference)")
    scale = torch.tensor(1.0 / temperature, dtype=delta.dtype, device=delta.device)
    return clip_loss(F.normalize(delta, dim=-1), F.normalize(difference_text_features, dim=-1), scale, context)


def pcclip_loss(
    image_features_a: torch.Tensor,
    image_features_b: torch.Tensor,
    difference_text_features: torch.Tensor,
    caption_features: torch.Tensor | None = None,
    logit_scale: torch.Tensor | None = None,
    clip_weight: float = 0.0,
    context: LossContext = LossContext(),
) -> torch.Tensor:
    """PC-CLIP's training loss: with f_a, f_b the pair's image features, g(d) the difference texts' and g(c_a)
    the a images' captions' (all unnormalised), s = ``logit_scale``:

        L = difference_loss(f_a, f_b, g(d)) + clip_weight * clip_loss(n(f_a), n(g(c_a)), s)

    The CLIP term (only when ``clip_weight`` > 0) needs ``caption_features`` and ``logit_scale``.
    """
    loss = difference_loss(image_features_a, image_features_b, difference_text_features, context=context)
    if not clip_weight:
        return loss
    if caption_features is None or logit_scale is None:
        raise ValueError("clip_weight > 0 needs the captions of the a images in the batch (caption_input_ids) "
                         "and the logit scale")
    image, captions = F.normalize(image_features_a, dim=-1), F.normalize(caption_features, dim=-1)
    return loss + clip_weight * clip_loss(image, captions, logit_scale, context)

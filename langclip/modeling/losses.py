"""Contrastive losses on L2-normalised features, in OpenCLIP's local-loss form.

Every function takes this process's features. When a `torch.distributed` process group
with more than one member is initialised, features are all-gathered *with gradient*
(`_AllGather`), each process scores its local rows
against the global batch, and its labels are offset by ``rank * local_batch``. The mean
of the per-process losses (what DDP's gradient averaging optimises) is then the loss of
the global batch. Without a process group the functions run as a single process.
The sigmoid loss gathers nothing: text blocks travel round the ring of processes
(`_NeighbourExchange`), so no process holds the global logit matrix.
"""

from __future__ import annotations

import contextlib
import contextvars
import math

import torch
import torch.distributed as dist
import torch.nn.functional as F
from transformers import initialization as init


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class _AllGather(torch.autograd.Function):
    """all_gather along dim 0 whose backward sums every process's gradient and keeps this process's slice.

    Written out because `torch.distributed.nn.functional.all_gather` returns wrong input
    gradients on gloo when the incoming gradients are not contiguous (the (B, T, D) text
    features of LaCLIP-MT).
    """

    @staticmethod
    def forward(ctx, features: torch.Tensor) -> torch.Tensor:
        gathered = [torch.empty_like(features) for _ in range(dist.get_world_size())]
        dist.all_gather(gathered, features.contiguous())
        return torch.cat(gathered)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous()
        dist.all_reduce(grad)
        return grad.chunk(dist.get_world_size())[dist.get_rank()]


def gather_features(features: torch.Tensor) -> torch.Tensor:
    """Concatenate ``features`` of every process along dim 0, keeping the autograd graph."""
    _, world_size = _world()
    if world_size == 1:
        return features
    return _AllGather.apply(features)


_CHECK_FINITE = contextvars.ContextVar("langclip_losses_check_finite", default=True)


@contextlib.contextmanager
def without_finite_check():
    """Inside, the losses skip their finiteness check of the features (a host sync); the trainer's step uses it
    and skips non-finite steps on the device instead."""
    token = _CHECK_FINITE.set(False)
    try:
        yield
    finally:
        _CHECK_FINITE.reset(token)


def _check_features(name: str, features: torch.Tensor, dims: int) -> None:
    if features.dim() != dims:
        raise ValueError(f"{name} must have {dims} dimensions, got shape {tuple(features.shape)}")
    if _CHECK_FINITE.get() and not torch.isfinite(features).all():
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
) -> torch.Tensor:
    """Symmetric InfoNCE of CLIP.

    With normalised features x (images, local B x D), y (texts), global batches X, Y,
    s = ``logit_scale`` (already exponentiated) and labels l_i = rank * B + i:

        L = 1/2 [ CE(s * x @ Y^T, l) + CE(s * y @ X^T, l) ]

    where CE is the mean cross-entropy over the B local rows.
    """
    _check_features("image_features", image_features, 2)
    _check_features("text_features", text_features, 2)
    _check_batch(image_features, text_features)
    rank, _ = _world()
    all_image = gather_features(image_features)
    all_text = gather_features(text_features)
    labels = local_labels(image_features.shape[0], rank, image_features.device)
    logits_per_image = logit_scale * image_features @ all_text.T
    logits_per_text = logit_scale * text_features @ all_image.T
    return (F.cross_entropy(logits_per_image, labels) + F.cross_entropy(logits_per_text, labels)) / 2


def multi_positive_clip_loss(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    logit_scale: torch.Tensor,
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
    _check_features("image_features", image_features, 2)
    _check_features("text_features", text_features, 3)
    _check_batch(image_features, text_features)
    rank, _ = _world()
    all_image = gather_features(image_features)
    all_text = gather_features(text_features)
    labels = local_labels(image_features.shape[0], rank, image_features.device)
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
        requests = dist.batch_isend_irecv([dist.P2POp(dist.isend, tensor, to), dist.P2POp(dist.irecv, received, source)])
        for request in requests:
            request.wait()
        return received

    @staticmethod
    def forward(ctx, features: torch.Tensor) -> torch.Tensor:
        rank, world_size = _world()
        return _NeighbourExchange._shift(features.contiguous(), (rank + 1) % world_size, (rank - 1) % world_size)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        rank, world_size = _world()
        return _NeighbourExchange._shift(grad.contiguous(), (rank - 1) % world_size, (rank + 1) % world_size)


def _sigmoid_block(image_features, text_features, logit_scale, logit_bias, positives: bool) -> torch.Tensor:
    """Sum of -log sigmoid(z * (t * x_i.y_kj + b)) over images i (B), texts k (B'), j (T); z = +1 iff i == k and ``positives``."""
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
    _check_features("image_features", image_features, 2)
    if text_features.dim() == 2:
        _check_features("text_features", text_features, 2)
        text_features = text_features[:, None]
    else:
        _check_features("text_features", text_features, 3)
    _check_batch(image_features, text_features)
    loss = _sigmoid_block(image_features, text_features, logit_scale, logit_bias, positives=True)
    _, world_size = _world()
    for _ in range(world_size - 1):
        text_features = _NeighbourExchange.apply(text_features)
        loss = loss + _sigmoid_block(image_features, text_features, logit_scale, logit_bias, positives=False)
    return loss / image_features.shape[0]


CONTRASTIVE_LOSSES = ("softmax", "sigmoid")
SIGMOID_LOGIT_SCALE_INIT = math.log(10.0)
"""SigLIP's initial log t; its initial b is -10 (`config.logit_bias_init_value`)."""


def contrastive_loss(image_features, text_features, logit_scale, logit_bias=None) -> torch.Tensor:
    """`sigmoid_loss` when a ``logit_bias`` is given, else `clip_loss` ((B, D) texts) or `multi_positive_clip_loss` ((B, T, D))."""
    if logit_bias is not None:
        return sigmoid_loss(image_features, text_features, logit_scale, logit_bias)
    if text_features.dim() == 3:
        return multi_positive_clip_loss(image_features, text_features, logit_scale)
    return clip_loss(image_features, text_features, logit_scale)


class LogitParametersMixin:
    """The learnable loss scalars of a `CLIPModel` subclass: log temperature (CLIP's ``logit_scale``) and,
    when ``config.contrastive_loss == "sigmoid"``, SigLIP's bias ``logit_bias`` (init ``config.logit_bias_init_value``).

    Call `add_logit_bias` in ``__init__`` before ``post_init``. Checkpoints keep the bias as
    ``logit_bias``; `transformers.CLIPModel` loads them and ignores it.
    """

    def add_logit_bias(self) -> None:
        self.logit_bias = None
        if self.config.contrastive_loss == "sigmoid":
            self.logit_bias = torch.nn.Parameter(torch.tensor(float(self.config.logit_bias_init_value)))

    def _init_weights(self, module):
        super()._init_weights(module)
        if module is self and getattr(self, "logit_bias", None) is not None:
            init.constant_(self.logit_bias, self.config.logit_bias_init_value)

    def loss_parameters(self) -> dict[str, torch.Tensor]:
        """``{"logit_scale": exp(logit_scale)}``, plus ``"logit_bias"`` under the sigmoid loss: `contrastive_loss`'s keywords."""
        parameters = {"logit_scale": self.logit_scale.exp()}
        if getattr(self, "logit_bias", None) is not None:
            parameters["logit_bias"] = self.logit_bias
        return parameters

    @torch.no_grad()
    def clamp_logit_scale_(self) -> None:
        """Clamp the log temperature to [0, config.logit_scale_max]; call after every optimizer step."""
        self.logit_scale.clamp_(0, self.config.logit_scale_max)


def difference_loss(
    image_features_a: torch.Tensor,
    image_features_b: torch.Tensor,
    difference_text_features: torch.Tensor,
    temperature: float = 1.0,
) -> torch.Tensor:
    """PC-CLIP's pairwise-difference loss (Sam et al., TMLR 2025).

    With n(.) the L2 normalisation, a_k = n(n(f(x_a)) - n(f(x_b))) for each pair k and
    t_k = n(g(d_k)) the embedding of "how x_a differs from x_b":

        L = 1/2 [ CE(t @ A^T / tau, l) + CE(a @ T^T / tau, l) ],   tau = 1, fixed

    i.e. `clip_loss` on (a, t) with the logit scale fixed to 1 / tau. Inputs need not be
    normalised. A pair of identical embeddings has no difference direction and is an error.
    """
    _check_features("image_features_a", image_features_a, 2)
    _check_features("image_features_b", image_features_b, 2)
    if image_features_a.shape != image_features_b.shape:
        raise ValueError(
            f"pair feature shapes differ: {tuple(image_features_a.shape)} vs {tuple(image_features_b.shape)}"
        )
    delta = F.normalize(image_features_a, dim=-1) - F.normalize(image_features_b, dim=-1)
    same = delta.norm(dim=-1) < 1e-6
    if same.any():
        raise ValueError(f"pairs {same.nonzero().flatten().tolist()} compare an image with itself (zero difference)")
    scale = torch.tensor(1.0 / temperature, dtype=delta.dtype, device=delta.device)
    return clip_loss(F.normalize(delta, dim=-1), F.normalize(difference_text_features, dim=-1), scale)

"""The losses' explicit arguments: the contrastive ``kind``, ``multi_positive``, the `LossContext` (rank, world size,
finite check), and the CLIPS and PC-CLIP compositions on features."""

import pytest
import torch
import torch.nn.functional as F

from langclip.modeling.losses import (
    CLIPSFeatures,
    LossContext,
    clip_loss,
    clips_loss,
    contrastive_loss,
    difference_loss,
    multi_positive_clip_loss,
    pcclip_loss,
    sigmoid_loss,
)


def _normalized(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=g, dtype=torch.float64), dim=-1)


SCALE = torch.tensor(8.0, dtype=torch.float64)
BIAS = torch.tensor(-3.0, dtype=torch.float64)


@pytest.mark.parametrize("multi_positive", [False, True])
def test_kind_picks_the_loss_not_the_bias_or_the_shape(multi_positive):
    img = _normalized(5, 4, seed=1)
    txt = _normalized(5, 3, 4, seed=2) if multi_positive else _normalized(5, 4, seed=2)
    softmax = multi_positive_clip_loss if multi_positive else clip_loss
    got = contrastive_loss(img, txt, SCALE, kind="softmax", multi_positive=multi_positive)
    assert got.item() == pytest.approx(softmax(img, txt, SCALE).item(), rel=1e-12)
    got = contrastive_loss(img, txt, SCALE, BIAS, kind="sigmoid", multi_positive=multi_positive)
    assert got.item() == pytest.approx(sigmoid_loss(img, txt, SCALE, BIAS).item(), rel=1e-12)


def test_kind_and_its_inputs_must_agree():
    img, txt = _normalized(3, 4, seed=3), _normalized(3, 4, seed=4)
    with pytest.raises(ValueError, match="kind must be one of"):
        contrastive_loss(img, txt, SCALE, kind="hinge")
    with pytest.raises(ValueError, match="the softmax loss takes no logit_bias"):
        contrastive_loss(img, txt, SCALE, BIAS, kind="softmax")
    with pytest.raises(ValueError, match="the sigmoid loss needs a logit_bias"):
        contrastive_loss(img, txt, SCALE, kind="sigmoid")
    with pytest.raises(ValueError, match="text_features must have 2 dimensions with multi_positive=False"):
        contrastive_loss(img, txt[:, None], SCALE, BIAS, kind="sigmoid")
    with pytest.raises(ValueError, match="text_features must have 3 dimensions with multi_positive=True"):
        contrastive_loss(img, txt, SCALE, kind="softmax", multi_positive=True)


def test_loss_context_is_explicit():
    assert LossContext.current() == LossContext(rank=0, world_size=1, check_finite=True)
    assert LossContext.current(check_finite=False).check_finite is False
    with pytest.raises(ValueError, match=r"rank must be in \[0, world_size=2\), got 2"):
        LossContext(rank=2, world_size=2)


@pytest.mark.parametrize("loss", [
    lambda img, txt, context: clip_loss(img, txt, SCALE, context),
    lambda img, txt, context: sigmoid_loss(img, txt, SCALE, BIAS, context),
    lambda img, txt, context: difference_loss(img, txt.flip(0), txt, context=context),
])
def test_check_finite_false_lets_non_finite_features_through(loss):
    img, txt = _normalized(3, 4, seed=5), _normalized(3, 4, seed=6)
    img[0, 0] = float("nan")
    with pytest.raises(ValueError, match="contains NaN or infinite values"):
        loss(img, txt, LossContext())
    assert torch.isnan(loss(img, txt, LossContext(check_finite=False)))


def test_clips_loss_parts_and_kind():
    img, web, partial = (_normalized(4, 6, seed=s) for s in (7, 8, 9))
    nll_sum, tokens = torch.tensor([3.0, 1.0, 2.0, 4.0], dtype=torch.float64), torch.tensor([3, 1, 2, 2])
    out = clips_loss(CLIPSFeatures(img, web, partial, nll_sum, tokens), SCALE, BIAS, kind="sigmoid", weights=(0.5, 2.0))
    contrastive = (sigmoid_loss(img, web, SCALE, BIAS) + sigmoid_loss(img, partial, SCALE, BIAS)) / 2
    torch.testing.assert_close(out.contrastive, contrastive)
    torch.testing.assert_close(out.caption, nll_sum.sum() / 8)
    torch.testing.assert_close(out.total, 0.5 * contrastive + 2.0 * nll_sum.sum() / 8)
    web_only = clips_loss(CLIPSFeatures(img, web), SCALE, kind="softmax", weights=(0.5, 2.0))
    assert web_only.caption is None
    torch.testing.assert_close(web_only.total, 0.5 * clip_loss(img, web, SCALE))


def test_pcclip_loss_adds_the_weighted_clip_term():
    g = torch.Generator().manual_seed(10)
    fa, fb, text, captions = (torch.randn(4, 5, generator=g, dtype=torch.float64) * 2 for _ in range(4))
    torch.testing.assert_close(pcclip_loss(fa, fb, text), difference_loss(fa, fb, text))
    expected = difference_loss(fa, fb, text) + 0.25 * clip_loss(F.normalize(fa, dim=-1), F.normalize(captions, dim=-1),
                                                                SCALE)
    torch.testing.assert_close(pcclip_loss(fa, fb, text, captions, SCALE, clip_weight=0.25), expected)
    with pytest.raises(ValueError, match="needs the captions of the a images"):
        pcclip_loss(fa, fb, text, logit_scale=SCALE, clip_weight=0.25)

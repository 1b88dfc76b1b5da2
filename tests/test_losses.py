"""The contrastive losses against float64 references computed by hand."""

import math
import os

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from conftest import free_port

from langclip.modeling import losses
from langclip.modeling.losses import clip_loss, multi_positive_clip_loss


def _normalized(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=g, dtype=torch.float64)
    return x / x.norm(dim=-1, keepdim=True)


def _ce(logits: np.ndarray, labels: np.ndarray) -> float:
    """Mean cross-entropy, written out: -log(exp(z_y) / sum_k exp(z_k))."""
    rows = [-(row[y] - math.log(sum(math.exp(z) for z in row))) for row, y in zip(logits, labels)]
    return sum(rows) / len(rows)


def _reference_clip_loss(img, txt, scale):
    img, txt = img.detach().numpy(), txt.detach().numpy()
    labels = np.arange(len(img))
    return (_ce(scale * img @ txt.T, labels) + _ce(scale * txt @ img.T, labels)) / 2


def test_clip_loss_matches_hand_computation():
    img, txt = _normalized(4, 8, seed=1), _normalized(4, 8, seed=2)
    got = clip_loss(img, txt, torch.tensor(14.0, dtype=torch.float64))
    assert got.item() == pytest.approx(_reference_clip_loss(img, txt, 14.0), rel=1e-12)


def test_clip_loss_is_log_batch_when_features_carry_no_signal():
    img, txt = torch.ones(5, 3, dtype=torch.float64), torch.ones(5, 3, dtype=torch.float64)
    assert clip_loss(img, txt, torch.tensor(3.0)).item() == pytest.approx(math.log(5))


def test_multi_positive_loss_matches_hand_computation():
    b, t, d, scale = 3, 4, 6, 7.5
    img, txt = _normalized(b, d, seed=3), _normalized(b, t, d, seed=4)
    labels = np.arange(b)
    x, y = img.numpy(), txt.numpy()
    loss_image = sum(_ce(scale * x @ y[:, j].T, labels) for j in range(t)) / t  # divided by M+1 = T
    loss_text = _ce(scale * y[:, 0] @ x.T, labels)
    got = multi_positive_clip_loss(img, txt, torch.tensor(scale, dtype=torch.float64))
    assert got.item() == pytest.approx((loss_image + loss_text) / 2, rel=1e-12)


def test_multi_positive_reduces_to_clip_loss_when_texts_agree():
    img, txt = _normalized(5, 8, seed=5), _normalized(5, 8, seed=6)
    scale = torch.tensor(10.0, dtype=torch.float64)
    repeated = txt[:, None].expand(5, 3, 8)
    assert multi_positive_clip_loss(img, repeated, scale).item() == pytest.approx(clip_loss(img, txt, scale).item())


def test_gradcheck():
    img = _normalized(3, 4, seed=7).requires_grad_()
    txt = _normalized(3, 2, 4, seed=8).requires_grad_()
    scale = torch.tensor(5.0, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(clip_loss, (img, txt[:, 0].detach().clone().requires_grad_(), scale))
    assert torch.autograd.gradcheck(multi_positive_clip_loss, (img, txt, scale))


@pytest.mark.parametrize("loss_fn, text_shape", [(clip_loss, (8, 6)), (multi_positive_clip_loss, (8, 3, 6))])
def test_simulated_two_rank_gather_equals_global_batch(monkeypatch, loss_fn, text_shape):
    """Each rank scores its half against the gathered batch with labels offset by rank * B."""
    img, txt = _normalized(8, 6, seed=9), _normalized(*text_shape, seed=10)
    scale = torch.tensor(12.0, dtype=torch.float64)
    global_img, global_txt = img.clone().requires_grad_(), txt.clone().requires_grad_()
    global_loss = loss_fn(global_img, global_txt, scale)
    global_loss.backward()

    sim_img, sim_txt = img.clone().requires_grad_(), txt.clone().requires_grad_()
    # The simulated all_gather returns the global tensor that the local slice was cut from.
    monkeypatch.setattr(losses, "gather_features", lambda local: local._base)
    rank_losses = []
    for rank in range(2):
        monkeypatch.setattr(losses, "_world", lambda rank=rank: (rank, 2))
        rank_losses.append(loss_fn(sim_img[rank * 4 : (rank + 1) * 4], sim_txt[rank * 4 : (rank + 1) * 4], scale))
    mean_loss = sum(rank_losses) / 2
    mean_loss.backward()
    assert mean_loss.item() == pytest.approx(global_loss.item(), rel=1e-12)
    torch.testing.assert_close(sim_img.grad, global_img.grad)
    torch.testing.assert_close(sim_txt.grad, global_txt.grad)


def _two_process_worker(rank, port, img, txt, out):
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    local_img = img[rank * 3 : (rank + 1) * 3].clone().requires_grad_()
    local_txt = txt[rank * 3 : (rank + 1) * 3].clone().requires_grad_()
    loss = clip_loss(local_img, local_txt, torch.tensor(9.0, dtype=torch.float64))
    loss.backward()
    out[rank] = (loss.detach(), local_img.grad, local_txt.grad)
    dist.destroy_process_group()


def test_real_two_process_gather_with_gradient():
    """Under gloo, mean rank loss = global loss and local grads / world_size = global grads (DDP averages)."""
    img, txt = _normalized(6, 4, seed=11), _normalized(6, 4, seed=12)
    manager = mp.Manager()
    out = manager.dict()
    mp.spawn(_two_process_worker, args=(free_port(), img, txt, out), nprocs=2, join=True)
    g_img, g_txt = img.clone().requires_grad_(), txt.clone().requires_grad_()
    global_loss = clip_loss(g_img, g_txt, torch.tensor(9.0, dtype=torch.float64))
    global_loss.backward()
    assert ((out[0][0] + out[1][0]) / 2).item() == pytest.approx(global_loss.item(), rel=1e-12)
    torch.testing.assert_close(torch.cat([out[0][1], out[1][1]]) / 2, g_img.grad)
    torch.testing.assert_close(torch.cat([out[0][2], out[1][2]]) / 2, g_txt.grad)


@pytest.mark.parametrize(
    "img, txt, message",
    [
        (torch.randn(4, 8), torch.randn(3, 8), "batch sizes differ: 4 images, 3 texts"),
        (torch.randn(4, 8), torch.randn(4, 6), "feature sizes differ"),
        (torch.randn(4, 8), torch.randn(4, 2, 8), "text_features must have 2 dimensions"),
        (torch.full((2, 3), float("nan")), torch.randn(2, 3), "image_features contains NaN"),
    ],
)
def test_bad_input_is_named(img, txt, message):
    with pytest.raises(ValueError, match=message):
        clip_loss(img, txt, torch.tensor(1.0))


def test_multi_positive_bad_input_is_named():
    with pytest.raises(ValueError, match="text_features must have 3 dimensions"):
        multi_positive_clip_loss(torch.randn(2, 3), torch.randn(2, 3), torch.tensor(1.0))
    with pytest.raises(ValueError, match="text_features contains NaN"):
        multi_positive_clip_loss(torch.randn(2, 3), torch.full((2, 2, 3), float("inf")), torch.tensor(1.0))


def test_difference_loss_matches_hand_computation():
    from langclip.modeling.losses import difference_loss

    g = torch.Generator().manual_seed(13)
    fa, fb, text = (torch.randn(4, 5, generator=g, dtype=torch.float64) * 3 for _ in range(3))
    n = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)  # noqa: E731
    a = n(n(fa.numpy()) - n(fb.numpy()))
    t = n(text.numpy())
    labels = np.arange(4)
    expected = (_ce(t @ a.T, labels) + _ce(a @ t.T, labels)) / 2  # tau = 1: no scale
    assert difference_loss(fa, fb, text).item() == pytest.approx(expected, rel=1e-12)
    assert torch.autograd.gradcheck(difference_loss, (fa.requires_grad_(), fb.requires_grad_(), text.requires_grad_()))


def test_difference_loss_rejects_a_pair_of_an_image_with_itself():
    from langclip.modeling.losses import difference_loss

    fa = torch.randn(3, 4)
    fb = torch.randn(3, 4)
    fb[1] = fa[1] * 2  # same direction: the same image up to scale
    with pytest.raises(ValueError, match=r"pairs \[1\] compare an image with itself"):
        difference_loss(fa, fb, torch.randn(3, 4))

"""The contrastive losses against float64 references computed by hand."""

import math
import os

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from conftest import free_port

from langclip.modeling import losses
from langclip.modeling.losses import LossContext, clip_loss, multi_positive_clip_loss, sigmoid_loss


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
    monkeypatch.setattr(losses, "gather_features", lambda local, context: local._base)
    rank_losses = []
    for rank in range(2):
        context = LossContext(rank=rank, world_size=2)
        rank_losses.append(loss_fn(sim_img[rank * 4 : (rank + 1) * 4], sim_txt[rank * 4 : (rank + 1) * 4], scale,
                                   context))
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
    loss = clip_loss(local_img, local_txt, torch.tensor(9.0, dtype=torch.float64), LossContext.current())
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


def _reference_sigmoid_loss(img, txt, t, b):
    """Written out: 1/B sum_i sum_k sum_j log(1 + exp(-z_ik (t x_i.y_kj + b))), z = +1 iff i == k."""
    x, y = img.detach().numpy(), txt.detach().numpy()
    y = y[:, None] if y.ndim == 2 else y
    total = 0.0
    for i in range(len(x)):
        for k in range(len(y)):
            for j in range(y.shape[1]):
                z = 1.0 if i == k else -1.0
                total += math.log1p(math.exp(-z * (t * float(x[i] @ y[k, j]) + b)))
    return total / len(x)


@pytest.mark.parametrize("text_shape", [(5, 6), (5, 3, 6)], ids=["single-positive", "multi-positive"])
def test_sigmoid_loss_matches_hand_computation(text_shape):
    img, txt = _normalized(5, 6, seed=13), _normalized(*text_shape, seed=14)
    t, b = torch.tensor(10.0, dtype=torch.float64), torch.tensor(-4.0, dtype=torch.float64)
    assert sigmoid_loss(img, txt, t, b).item() == pytest.approx(_reference_sigmoid_loss(img, txt, 10.0, -4.0), rel=1e-12)


def test_sigmoid_multi_positive_makes_every_text_of_an_image_a_positive():
    """T identical texts per image: T times the single-text loss (each copy is a positive of its own image only)."""
    img, txt = _normalized(4, 6, seed=15), _normalized(4, 6, seed=16)
    t, b = torch.tensor(7.0, dtype=torch.float64), torch.tensor(-2.0, dtype=torch.float64)
    repeated = txt[:, None].expand(4, 3, 6)
    assert sigmoid_loss(img, repeated, t, b).item() == pytest.approx(3 * sigmoid_loss(img, txt, t, b).item(), rel=1e-12)


def test_sigmoid_gradcheck():
    img, txt = _normalized(3, 4, seed=17).requires_grad_(), _normalized(3, 2, 4, seed=18).requires_grad_()
    t = torch.tensor(5.0, dtype=torch.float64, requires_grad=True)
    b = torch.tensor(-1.0, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(sigmoid_loss, (img, txt, t, b))
    assert torch.autograd.gradcheck(sigmoid_loss, (img, txt[:, 0].detach().clone().requires_grad_(), t, b))


def test_sigmoid_bad_input_is_named():
    t, b = torch.tensor(1.0), torch.tensor(0.0)
    with pytest.raises(ValueError, match="batch sizes differ: 4 images, 3 texts"):
        sigmoid_loss(torch.randn(4, 8), torch.randn(3, 2, 8), t, b)
    with pytest.raises(ValueError, match="text_features must have 3 dimensions"):
        sigmoid_loss(torch.randn(4, 8), torch.randn(4, 2, 2, 8), t, b)
    with pytest.raises(ValueError, match="image_features contains NaN"):
        sigmoid_loss(torch.full((2, 3), float("nan")), torch.randn(2, 3), t, b)


def _sigmoid_worker(rank, world_size, port, img, texts, out):
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    blocks = []
    block = losses._sigmoid_block
    losses._sigmoid_block = lambda x, y, *rest, **kw: blocks.append(tuple(y.shape)) or block(x, y, *rest, **kw)
    local = len(img) // world_size
    results = []
    for txt in texts:
        local_img = img[rank * local : (rank + 1) * local].clone().requires_grad_()
        local_txt = txt[rank * local : (rank + 1) * local].clone().requires_grad_()
        t = torch.tensor(10.0, dtype=torch.float64, requires_grad=True)
        b = torch.tensor(-2.0, dtype=torch.float64, requires_grad=True)
        loss = sigmoid_loss(local_img, local_txt, t, b, LossContext(rank, world_size))
        loss.backward()
        results.append((loss.detach(), local_img.grad, local_txt.grad, t.grad, b.grad))
    out[rank] = (results, blocks)
    dist.destroy_process_group()


@pytest.mark.parametrize("world_size", [2, 3])
def test_sigmoid_ring_exchange_equals_the_global_batch(world_size):
    """Under gloo: mean rank loss = global loss, local grads / P = global grads (1e-6), single- and multi-positive;
    every logit block is local x local (no global logit matrix)."""
    batch = 6
    img = _normalized(batch, 5, seed=19)
    texts = [_normalized(batch, 5, seed=20), _normalized(batch, 3, 5, seed=21)]
    out = mp.Manager().dict()
    mp.spawn(_sigmoid_worker, args=(world_size, free_port(), img, texts, out), nprocs=world_size, join=True)
    for form, txt in enumerate(texts):
        g_img, g_txt = img.clone().requires_grad_(), txt.clone().requires_grad_()
        t = torch.tensor(10.0, dtype=torch.float64, requires_grad=True)
        b = torch.tensor(-2.0, dtype=torch.float64, requires_grad=True)
        global_loss = sigmoid_loss(g_img, g_txt, t, b)
        global_loss.backward()
        ranks = [out[rank][0][form] for rank in range(world_size)]
        mean = lambda k: sum(r[k] for r in ranks) / world_size  # noqa: E731
        torch.testing.assert_close(mean(0), global_loss.detach(), rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(torch.cat([r[1] for r in ranks]) / world_size, g_img.grad, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(torch.cat([r[2] for r in ranks]) / world_size, g_txt.grad, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(mean(3), t.grad, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(mean(4), b.grad, rtol=1e-6, atol=1e-6)
    for rank in range(world_size):
        assert {shape[0] for shape in out[rank][1]} == {batch // world_size}
        assert len(out[rank][1]) == 2 * world_size  # own block + P - 1 received, per form

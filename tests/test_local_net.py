"""Γ (rovr.models.local.LocalNet): shapes, exact compositing, gradients, a tiny overfit."""

from __future__ import annotations

import pytest
import torch

from rovr.models.local import LocalNet, LocalNetConfig

SMALL = LocalNetConfig(base_channels=8, depth=3)


def _inputs(B: int, k: int, H: int, W: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    target = torch.rand(B, 3, H, W, generator=g)
    mask = (torch.rand(B, 1, H, W, generator=g) < 0.3).float()
    cond = torch.rand(B, k, 3, H, W, generator=g)
    cond_masks = (torch.rand(B, k, 1, H, W, generator=g) < 0.3).float()
    return target, mask, cond, cond_masks


@pytest.mark.parametrize(("k", "H", "W"), [(1, 45, 61), (2, 64, 64), (3, 17, 9), (2, 3, 5)])
def test_shape_range_and_known_pixels_kept_exactly(k: int, H: int, W: int) -> None:
    torch.manual_seed(0)
    net = LocalNet(SMALL, k)
    target, mask, cond, cond_masks = _inputs(2, k, H, W)
    with torch.no_grad():
        out = net(target, mask, cond, cond_masks)
    assert out.shape == (2, 3, H, W)
    assert out.dtype == torch.float32
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    known = (mask == 0).expand_as(out)
    assert torch.equal(out[known], target[known])
    # the holes are filled with the prediction, not the corrupted content
    assert not torch.equal(out[~known], target[~known])


def test_bool_masks_equal_float_masks() -> None:
    torch.manual_seed(0)
    net = LocalNet(SMALL, 2)
    target, mask, cond, cond_masks = _inputs(2, 2, 32, 40)
    a = net(target, mask, cond, cond_masks)
    b = net(target, mask.bool(), cond, cond_masks.bool())
    assert torch.equal(a, b)


def test_hole_contents_do_not_matter() -> None:
    """Whatever the holes of the target and of the conditioning frames hold, x̂ is the same."""
    torch.manual_seed(0)
    net = LocalNet(SMALL, 2)
    target, mask, cond, cond_masks = _inputs(2, 2, 24, 24)
    junk_t = torch.where(mask.bool(), torch.rand_like(target), target)
    junk_c = torch.where(cond_masks.bool(), torch.rand_like(cond), cond)
    assert torch.equal(net(target, mask, cond, cond_masks), net(junk_t, mask, junk_c, cond_masks))
    # but the visible content of a conditioning frame does matter
    other = torch.where(cond_masks.bool(), cond, torch.rand_like(cond))
    assert not torch.allclose(net(target, mask, cond, cond_masks), net(target, mask, other, cond_masks))


def test_default_config_runs_at_64() -> None:
    torch.manual_seed(0)
    net = LocalNet(LocalNetConfig(), 2)
    out = net(*_inputs(1, 2, 64, 64))
    assert out.shape == (1, 3, 64, 64)


def test_gradients_reach_every_parameter() -> None:
    torch.manual_seed(0)
    net = LocalNet(SMALL, 2)
    target, mask, cond, cond_masks = _inputs(2, 2, 40, 40)
    cond.requires_grad_(True)
    gt = torch.rand_like(target)
    loss = ((net(target, mask, cond, cond_masks) - gt) ** 2).mean()
    loss.backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert float(p.grad.abs().sum()) > 0, name
    assert cond.grad is not None and float(cond.grad.abs().sum()) > 0


def test_wrong_k_or_shapes_raise() -> None:
    net = LocalNet(SMALL, 2)
    target, mask, cond, cond_masks = _inputs(1, 3, 16, 16)
    with pytest.raises(ValueError, match="k=2"):
        net(target, mask, cond, cond_masks)
    with pytest.raises(ValueError, match="k >= 1"):
        LocalNet(SMALL, 0)


def test_overfits_one_batch() -> None:
    """A few dozen Adam steps on one batch lower the hole MSE a lot (the holes are copies of cond[0])."""
    torch.manual_seed(0)
    net = LocalNet(LocalNetConfig(base_channels=8, depth=2), 2)
    target, mask, cond, cond_masks = _inputs(4, 2, 24, 24, seed=1)
    cond_masks.zero_()
    gt = torch.where(mask.bool(), cond[:, 0], target)  # the hole content is visible in cond[0]
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        loss = ((net(target, mask, cond, cond_masks) - gt) ** 2).sum() / (3 * mask.sum())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.3 * losses[0], losses[::8]


def test_untrained_net_copies_what_the_conditioning_frames_show() -> None:
    """The copy prior: a fresh Γ fills a hole pixel with the mean of the frames that observe it."""
    torch.manual_seed(0)
    net = LocalNet(LocalNetConfig(base_channels=8, depth=2), k=2).eval()
    h = w = 16
    target = torch.rand(1, 3, h, w)
    tmask = torch.zeros(1, 1, h, w)
    tmask[..., 4:12, 4:12] = 1
    cond = torch.rand(1, 2, 3, h, w)
    cmask = torch.zeros(1, 2, 1, h, w)
    cmask[:, 0, :, 4:8] = 1  # frame 0 hides rows 4-7: only frame 1 shows them
    with torch.no_grad():
        out = net(target, tmask, cond, cmask)
    both = (cond[0, 0] + cond[0, 1]) / 2
    assert torch.allclose(out[0, :, 8:12, 4:12], both[:, 8:12, 4:12], atol=0.05)
    assert torch.allclose(out[0, :, 4:8, 4:12], cond[0, 1, :, 4:8, 4:12], atol=0.05)
    assert torch.equal(out[..., :4, :], target[..., :4, :])

"""PSNR and SSIM (rovr.metrics.image) against skimage.metrics, with and without a hole mask."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from rovr.metrics.image import psnr, ssim, ssim_map

SK = {"gaussian_weights": True, "sigma": 1.5, "use_sample_covariance": False, "data_range": 1.0}


def _pair(B: int, H: int, W: int, noise: float = 0.1, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    # smooth-ish images so SSIM is far from 0 and 1
    x = torch.nn.functional.avg_pool2d(torch.rand(B, 3, H + 2, W + 2, generator=g), 3, stride=1)
    y = (x + noise * torch.randn(B, 3, H, W, generator=g)).clamp(0, 1)
    return x, y


def _np(t: torch.Tensor) -> np.ndarray:
    return t.permute(1, 2, 0).double().numpy()  # (3, H, W) → (H, W, 3)


def _mask(B: int, H: int, W: int, seed: int = 1) -> torch.Tensor:
    """Rectangular holes, one touching the border, as the corruption makes."""
    m = torch.zeros(B, 1, H, W, dtype=torch.bool)
    m[:, :, 2 : H // 2, 3 : W // 3] = True
    m[:, :, H - 6 :, W - 9 :] = True
    m[1:, :, H // 2 :, : W // 2] = True
    return m


@pytest.mark.parametrize(("H", "W"), [(45, 61), (64, 64), (11, 13)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_psnr_ssim_match_skimage(H: int, W: int, dtype: torch.dtype) -> None:
    x, y = _pair(3, H, W)
    x, y = x.to(dtype), y.to(dtype)
    p, s = psnr(x, y), ssim(x, y)
    assert p.shape == s.shape == (3,)
    for b in range(3):
        a, c = _np(x[b]), _np(y[b])
        assert float(p[b]) == pytest.approx(peak_signal_noise_ratio(a, c, data_range=1.0), abs=1e-4)
        ref = structural_similarity(a, c, channel_axis=2, **SK)
        assert float(s[b]) == pytest.approx(ref, abs=1e-4)
        assert 0.05 < ref < 0.95  # the case is not trivial


def test_ssim_map_matches_skimage_full_map() -> None:
    x, y = _pair(2, 45, 61, seed=3)
    m = ssim_map(x, y)
    assert m.shape == (2, 1, 45, 61)
    for b in range(2):
        _, full = structural_similarity(_np(x[b]), _np(y[b]), channel_axis=2, full=True, **SK)
        np.testing.assert_allclose(m[b, 0].double().numpy(), full.mean(axis=2), atol=1e-4)


@pytest.mark.parametrize("dim", [2, 3])
def test_symmetric_pad_is_numpy_symmetric(dim: int) -> None:
    """Half-sample symmetric padding along one dimension, as numpy's (and scipy.ndimage's 'reflect')."""
    from rovr.metrics.image import _symmetric_pad

    v = torch.arange(2 * 3 * 7 * 9, dtype=torch.float32).view(2, 3, 7, 9)
    widths = [(0, 0)] * 4
    widths[dim] = (5, 5)
    np.testing.assert_array_equal(
        _symmetric_pad(v, 5, dim).numpy(), np.pad(v.numpy(), widths, mode="symmetric")
    )


def test_masked_metrics_restrict_to_holes() -> None:
    x, y = _pair(2, 45, 61, seed=4)
    mask = _mask(2, 45, 61)
    p, s = psnr(x, y, mask), ssim(x, y, mask)
    for b in range(2):
        a, c = _np(x[b]), _np(y[b])
        hole = mask[b, 0].numpy()
        assert float(p[b]) == pytest.approx(
            peak_signal_noise_ratio(a[hole], c[hole], data_range=1.0), abs=1e-4
        )
        _, full = structural_similarity(a, c, channel_axis=2, full=True, **SK)
        assert float(s[b]) == pytest.approx(full.mean(axis=2)[hole].mean(), abs=1e-4)
    # only hole pixels count: changing y outside the holes changes nothing
    y2 = torch.where(mask, y, torch.rand_like(y))
    assert torch.equal(psnr(x, y2, mask), p)
    assert not torch.allclose(psnr(x, y2), psnr(x, y))


def test_identical_images_and_empty_mask() -> None:
    x, _ = _pair(2, 16, 16)
    assert torch.isinf(psnr(x, x)).all()
    torch.testing.assert_close(ssim(x, x), torch.ones(2))
    empty = torch.zeros(2, 1, 16, 16)
    assert torch.isnan(psnr(x, x.flip(-1), empty)).all()
    assert torch.isnan(ssim(x, x.flip(-1), empty)).all()


def test_psnr_worse_with_more_noise_and_hand_value() -> None:
    x = torch.zeros(1, 3, 8, 8)
    y = torch.full((1, 3, 8, 8), 0.1)  # MSE = 0.01 → 20 dB
    assert float(psnr(x, y)) == pytest.approx(20.0, abs=1e-4)
    a, b = _pair(2, 32, 32, noise=0.05)
    _, c = _pair(2, 32, 32, noise=0.2)
    assert (psnr(a, b) > psnr(a, c)).all()
    assert (ssim(a, b) > ssim(a, c)).all()


def test_ssim_is_differentiable() -> None:
    x, y = _pair(2, 20, 24)
    x.requires_grad_(True)
    (1 - ssim(x, y)).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and float(x.grad.abs().sum()) > 0


def test_bad_shapes_raise() -> None:
    x, y = _pair(1, 10, 20)
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim(x, y)
    with pytest.raises(ValueError, match="mask"):
        psnr(x, y, torch.ones(1, 3, 10, 20))
    with pytest.raises(ValueError, match="one shape"):
        psnr(x, y[..., :-1])
    assert math.isfinite(float(psnr(x, y)))

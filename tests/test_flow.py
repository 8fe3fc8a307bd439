"""Flow backends and flow recovery (paper Eq. 3)."""

from __future__ import annotations

import math
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch

from rovr.config import MetricConfig
from rovr.errors import ConfigError
from rovr.metrics.flow import (
    DISFlow,
    FlowBackend,
    RAFTFlow,
    build_flow,
    flow_recovery,
    flow_recovery_batch,
    flow_recovery_video,
    raft_weights_cache_path,
    recovery_shares,
    reference_flows,
)

# ----------------------------------------------------------------------------- flow recovery: hand calculations


def _zeros(pairs: int = 2, h: int = 3, w: int = 4) -> torch.Tensor:
    return torch.zeros(pairs, 2, h, w)


def test_recovery_hand_calculation() -> None:
    f_orig = _zeros()
    f_bar = _zeros()
    f_bar[0, :, 1, 2] = torch.tensor([3.0, 4.0])  # ||F(X̄) - F(X)|| = 5
    f_hat = _zeros()
    f_hat[1, 1, 0, 0] = 1.0  # ||F(X̂) - F(X)|| = 1
    assert flow_recovery(f_hat, f_bar, f_orig) == pytest.approx(1 - 1 / 5, abs=1e-12)
    assert flow_recovery(f_orig.clone(), f_bar, f_orig) == 1.0  # original flow recovered
    assert flow_recovery(f_bar.clone(), f_bar, f_orig) == pytest.approx(
        0.0, abs=1e-12
    )  # no better than corrupted
    worse = f_orig + 1.5 * (f_bar - f_orig)
    assert flow_recovery(worse, f_bar, f_orig) == pytest.approx(-0.5, abs=1e-12)  # negative = worse


def test_recovery_is_one_norm_over_all_pairs_not_a_mean_of_ratios() -> None:
    f_orig = _zeros(pairs=2, h=1, w=1)
    f_bar = _zeros(pairs=2, h=1, w=1)
    f_hat = _zeros(pairs=2, h=1, w=1)
    f_bar[0, 0] = 1.0  # pair 0: corrupted error 1, reconstruction error 1 (ratio 1)
    f_hat[0, 1] = 1.0
    f_bar[1, 0] = 10.0  # pair 1: corrupted error 10, reconstructed exactly (ratio 0)
    expected = 1 - 1 / math.sqrt(1 + 100)  # a per-pair mean would give 0.5
    assert flow_recovery(f_hat, f_bar, f_orig) == pytest.approx(expected, abs=1e-12)


def test_recovery_clipping_and_degenerate_denominator() -> None:
    f_orig = torch.randn(2, 2, 5, 5, dtype=torch.float64)
    f_bar = f_orig + torch.randn(2, 2, 5, 5, dtype=torch.float64)
    far = f_orig + 3 * (f_bar - f_orig)  # raw score -2
    assert flow_recovery(far, f_bar, f_orig) == -1.0  # clipped at `lower`
    assert flow_recovery(far, f_bar, f_orig, lower=-math.inf) == pytest.approx(-2.0, abs=1e-9)
    # the corrupted flow already equals the original
    assert flow_recovery(f_orig.clone(), f_orig.clone(), f_orig) == 1.0
    assert flow_recovery(f_bar, f_orig.clone(), f_orig) == -1.0
    assert flow_recovery(f_bar, f_orig.clone(), f_orig, lower=-5.0) == -5.0


def test_recovery_batch_matches_single() -> None:
    g = torch.Generator().manual_seed(0)
    f_orig, f_bar, f_hat = (torch.randn(3, 4, 2, 6, 7, generator=g) for _ in range(3))
    f_hat[1] = f_orig[1]
    f_bar[2] = f_orig[2]
    f_hat[2] = f_orig[2]
    batch = flow_recovery_batch(f_hat, f_bar, f_orig, lower=-math.inf)
    assert batch.shape == (3,) and batch.dtype == torch.float64
    for b in range(3):
        assert float(batch[b]) == pytest.approx(flow_recovery(f_hat[b], f_bar[b], f_orig[b], lower=-math.inf))
    assert float(batch[1]) == 1.0 and float(batch[2]) == 1.0


def test_recovery_shares_by_hand() -> None:
    """3 frames, flow errors n = 9 (frames 0→1) and 16 (1→2): num = 5, den = 10, O = 0.5. Frame t's
    error c_t = ½ (n_{t−1} + n_t) = 4.5, 12.5, 8; share 1/3 − c_t / (num · den)."""
    shares = recovery_shares(torch.tensor([[9.0, 16.0]]), torch.tensor([10.0]))
    want = torch.tensor([[1 / 3 - 0.09, 1 / 3 - 0.25, 1 / 3 - 0.16]], dtype=torch.float64)
    torch.testing.assert_close(shares, want)
    assert float(shares.sum()) == pytest.approx(0.5)
    # clipped at -1 (raw 1 − 50/10 = −4, c = 450, 1250, 800): the split (1/3 − c/500) scaled by −1/−4,
    # so the worst frame still gets the least; degenerate (den 0, num 0 -> O = 1): uniform O / T
    both = recovery_shares(torch.tensor([[900.0, 1600.0], [0.0, 0.0]]), torch.tensor([10.0, 0.0]))
    clipped = [(1 / 3 - 0.9) / 4, (1 / 3 - 2.5) / 4, (1 / 3 - 1.6) / 4]
    torch.testing.assert_close(both, torch.tensor([clipped, [1 / 3] * 3], dtype=torch.float64))
    assert float(both[0].sum()) == pytest.approx(-1.0)


def test_recovery_shares_sum_to_recovery() -> None:
    g = torch.Generator().manual_seed(1)
    f_orig, f_bar = torch.randn(4, 6, 2, 5, 5, generator=g), torch.randn(4, 6, 2, 5, 5, generator=g)
    f_hat = f_orig + 0.3 * torch.randn(4, 6, 2, 5, 5, generator=g)
    f_hat[1, 2] = f_orig[1, 2] + 5.0  # one bad flow: its two frames get the lowest shares
    sq = (f_hat.double() - f_orig.double()).flatten(2).pow(2).sum(2)
    den = (f_bar.double() - f_orig.double()).flatten(1).norm(dim=1)
    shares = recovery_shares(sq, den)
    assert shares.shape == (4, 7)
    torch.testing.assert_close(shares.sum(1), flow_recovery_batch(f_hat, f_bar, f_orig))
    assert set(shares[1].argsort()[:2].tolist()) == {2, 3}


def test_recovery_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="one shape"):
        flow_recovery_batch(
            torch.zeros(1, 2, 2, 3, 3), torch.zeros(1, 2, 2, 3, 3), torch.zeros(1, 2, 2, 3, 4)
        )
    with pytest.raises(ValueError, match="T-1, 2, H, W"):
        flow_recovery(torch.zeros(2, 3, 3), torch.zeros(2, 3, 3), torch.zeros(2, 3, 3))


# ----------------------------------------------------------------------------- DIS


def _textured_video(shifts: list[tuple[int, int]], size: int = 48, seed: int = 0) -> torch.Tensor:
    """Smooth random texture, each next frame rolled by (dy, dx) pixels: content moves right/down."""
    import cv2

    rng = np.random.default_rng(seed)
    img = cv2.GaussianBlur(rng.random((size, size, 3)).astype(np.float32), (0, 0), 1.5)
    img = (img - img.min()) / (img.max() - img.min())
    frames = [img]
    for dy, dx in shifts:
        frames.append(np.roll(frames[-1], (dy, dx), axis=(0, 1)))
    return torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).contiguous()  # (T, 3, H, W)


@pytest.mark.parametrize("preset", ["medium", "ultrafast"])
def test_dis_recovers_a_known_translation(preset: str) -> None:
    video = _textured_video([(0, 2), (-1, 0)])
    backend = DISFlow(preset)
    assert isinstance(backend, FlowBackend)
    flow = backend.flow(video)
    assert flow.shape == (2, 2, 48, 48) and flow.dtype == torch.float32
    inner = flow[:, :, 6:-6, 6:-6]  # away from the wrapped border
    med = inner.flatten(2).median(dim=2).values  # (pairs, 2)
    torch.testing.assert_close(med, torch.tensor([[2.0, 0.0], [0.0, -1.0]]), atol=0.1, rtol=0)
    assert (inner[0, 0] - 2).abs().mean() < 0.2


def test_dis_is_a_pure_function_of_its_input() -> None:
    video = _textured_video([(0, 2), (1, 1)], size=40)
    other = _textured_video([(2, 0), (0, -1)], size=40, seed=1)
    backend = DISFlow()
    first = backend.flow(video)
    backend.flow(other)
    assert torch.equal(backend.flow(video), first)
    assert torch.equal(backend.flow(video[1:]), first[1:])  # a pair's flow does not depend on earlier pairs


def test_dis_rejects_bad_frames() -> None:
    with pytest.raises(ValueError, match="T>=2"):
        DISFlow().flow(torch.rand(1, 3, 16, 16))
    with pytest.raises(ValueError, match="dtype"):
        DISFlow().flow(torch.zeros(2, 3, 16, 16, dtype=torch.uint8))


class _Counting:
    """A FlowBackend wrapper that counts calls (to check that reference flows are reused)."""

    def __init__(self, inner: FlowBackend) -> None:
        self.inner, self.name, self.calls = inner, inner.name, 0

    def flow(self, frames: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.inner.flow(frames)


def test_flow_recovery_video_end_to_end_and_precomputed_flows() -> None:
    x = _textured_video([(0, 2), (1, 1), (0, -2)], size=40)
    x_bar = x.clone()
    x_bar[:, :, 10:26, 8:30] = 0.5  # a grey hole in every frame
    backend = _Counting(DISFlow())
    assert flow_recovery_video(x, x_bar, x, backend) == 1.0
    assert flow_recovery_video(x_bar, x_bar, x, backend) == pytest.approx(0.0, abs=1e-12)
    x_hat = x.clone()
    x_hat[:, :, 10:18, 8:30] = 0.5  # half of the hole restored
    full = flow_recovery_video(x_hat, x_bar, x, backend)
    assert 0.0 < full < 1.0
    ref = reference_flows(x_bar, x, backend)
    backend.calls = 0
    fast = flow_recovery_video(x_hat, None, None, backend, f_orig=ref.f_orig, f_bar=ref.f_bar)
    assert backend.calls == 1  # only F(X̂) is computed per episode
    assert fast == full
    with pytest.raises(ValueError, match="original video"):
        flow_recovery_video(x_hat, x_bar, None, backend)


def test_build_flow_names_and_unknown_backend() -> None:
    assert build_flow(MetricConfig(flow="dis"), "cpu").name == "dis"
    assert build_flow(MetricConfig(flow="dis-ultrafast"), "cpu").name == "dis-ultrafast"
    with pytest.raises(ConfigError, match="metric.flow"):
        build_flow(MetricConfig(flow="farneback"), "cpu")


# ----------------------------------------------------------------------------- RAFT (random weights, mechanics only)


def _random_raft_state() -> dict[str, torch.Tensor]:
    from torchvision.models.optical_flow import raft_small

    torch.manual_seed(0)
    return raft_small(weights=None).state_dict()


def test_raft_from_explicit_path_pads_and_crops(tmp_path: Path) -> None:
    state = _random_raft_state()
    path = tmp_path / "raft.pth"
    torch.save(state, path)
    backend = build_flow(MetricConfig(flow="raft", raft_weights=str(path)), "cpu", download=False)
    assert isinstance(backend, RAFTFlow) and backend.name == "raft-small"
    loaded = backend.model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state.items())  # the given weights, not random ones
    backend.num_flow_updates = 2  # mechanics only
    flow = backend.flow(torch.rand(3, 3, 36, 44))  # H, W not multiples of 8 and below RAFT's minimum side
    assert flow.shape == (2, 2, 36, 44) and flow.dtype == torch.float32
    assert bool(torch.isfinite(flow).all())


def test_raft_from_torch_home_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    cached = raft_weights_cache_path()
    assert cached.parent == tmp_path / "hub" / "checkpoints"
    assert cached.name.startswith("raft_small_C_T_V2")
    cached.parent.mkdir(parents=True)
    torch.save(_random_raft_state(), cached)
    backend = build_flow(MetricConfig(flow="raft"), "cpu", download=False)
    assert isinstance(backend, RAFTFlow)


def test_raft_missing_weights_is_a_config_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(ConfigError) as err:
        build_flow(MetricConfig(flow="raft"), "cpu", download=False)
    msg = str(err.value)
    assert "\n" not in msg and str(raft_weights_cache_path()) in msg and "metric.raft_weights" in msg

    def offline(*args: object, **kwargs: object) -> None:
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(ConfigError, match="downloading failed"):
        build_flow(MetricConfig(flow="raft"), "cpu")
    with pytest.raises(ConfigError, match="does not exist"):
        build_flow(MetricConfig(flow="raft", raft_weights=str(tmp_path / "nope.pth")), "cpu")


def test_raft_foreign_weights_are_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "other.pth"
    torch.save(torch.nn.Linear(2, 2).state_dict(), path)
    with pytest.raises(ConfigError, match="do not match"):
        build_flow(MetricConfig(flow="raft", raft_weights=str(path)), "cpu")
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="cannot be read"):
        build_flow(MetricConfig(flow="raft", raft_weights=str(junk)), "cpu")

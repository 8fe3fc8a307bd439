"""Optical-flow backends and the flow-recovery score of the paper (§6.3, Eq. 3).

Two backends share one interface (:class:`FlowBackend`): OpenCV's DIS (default, no weights, CPU)
and torchvision's RAFT-small (the paper's choice, §8: "a pre-trained RAFT network included in
PyTorch"), whose weights must exist locally or be downloadable — never silently random.

Flow recovery (Eq. 3)::

    O = 1 - ||F(X̂) - F(X)|| / ||F(X̄) - F(X)||

is computed on the flow *fields* of all consecutive frame pairs, with ``||.||`` the L2 (Frobenius)
norm over every pair, component and pixel. ``X`` is the original video, ``X̄`` the corrupted one
and ``X̂`` the reconstruction. 1 = the original flow is recovered exactly, 0 = no better than the
corrupted video, negative = worse than the corrupted video.
"""

from __future__ import annotations

import logging
import os
import urllib.error
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple, Protocol, runtime_checkable

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from rovr.config import MetricConfig
from rovr.errors import ConfigError

if TYPE_CHECKING:
    from torchvision.models.optical_flow import Raft_Small_Weights

log = logging.getLogger(__name__)

__all__ = [
    "check_flow_weights",
    "DISFlow",
    "FlowBackend",
    "RAFTFlow",
    "ReferenceFlows",
    "build_flow",
    "flow_recovery",
    "flow_recovery_batch",
    "flow_recovery_video",
    "load_raft_state",
    "raft_weights_cache_path",
    "recovery_shares",
    "reference_flows",
]


def _check_frames(frames: torch.Tensor) -> None:
    """Raise ValueError unless ``frames`` is a float video (T, 3, H, W) with T >= 2."""
    if frames.ndim != 4 or frames.shape[1] != 3 or frames.shape[0] < 2:
        raise ValueError(
            f"flow needs float frames (T>=2, 3, H, W) in [0, 1]; got shape {tuple(frames.shape)}"
        )
    if not frames.is_floating_point():
        raise ValueError(f"flow needs float frames in [0, 1]; got dtype {frames.dtype}")


@runtime_checkable
class FlowBackend(Protocol):
    """Dense optical flow of consecutive frames: ``flow(frames (T,3,H,W) in [0,1]) -> (T-1,2,H,W)``.

    ``out[t]`` is the flow from frame t to frame t+1 in pixels, channel 0 = x (right), 1 = y (down),
    float32, on the device of ``frames``. ``name`` is recorded in ``report.json``.
    """

    name: str

    def flow(self, frames: torch.Tensor) -> torch.Tensor: ...


# ----------------------------------------------------------------------------- DIS (OpenCV)

_DIS_PRESETS = {
    "medium": cv2.DISOpticalFlow_PRESET_MEDIUM,
    "ultrafast": cv2.DISOpticalFlow_PRESET_ULTRAFAST,
}


class DISFlow:
    """OpenCV Dense Inverse Search flow on 8-bit grayscale frames; no weights.

    A DIS object's result depends on its previous ``calc`` calls (OpenCV 5 reuses internal buffers),
    so each pair gets a fresh one (~6 µs): ``flow`` is then a pure function of its input.
    """

    def __init__(self, preset: str = "medium") -> None:
        if preset not in _DIS_PRESETS:
            raise ConfigError(f"DIS preset '{preset}' is unknown; use one of {sorted(_DIS_PRESETS)}")
        self.preset = preset
        self.name = "dis" if preset == "medium" else f"dis-{preset}"

    @staticmethod
    def _gray_u8(frames: torch.Tensor) -> np.ndarray:
        """(T, 3, H, W) float in [0, 1] -> (T, H, W) uint8 luma (ITU-R BT.601 weights, as OpenCV)."""
        w = torch.tensor([0.299, 0.587, 0.114], dtype=torch.float32)
        rgb = frames.detach().to("cpu", torch.float32).clamp(0.0, 1.0)
        gray = torch.einsum("tchw,c->thw", rgb, w)  # (T, H, W)
        return (gray * 255.0).round().to(torch.uint8).numpy()

    def flow(self, frames: torch.Tensor) -> torch.Tensor:
        _check_frames(frames)
        gray = self._gray_u8(frames)  # (T, H, W) uint8
        out = np.empty((gray.shape[0] - 1, 2, gray.shape[1], gray.shape[2]), dtype=np.float32)
        for t in range(gray.shape[0] - 1):
            dis = cv2.DISOpticalFlow.create(_DIS_PRESETS[self.preset])
            f = np.asarray(dis.calc(gray[t], gray[t + 1], np.zeros((*gray.shape[1:], 2), np.float32)))
            out[t] = f.transpose(2, 0, 1)  # (H, W, 2): dx, dy -> (2, H, W)
        return torch.from_numpy(out).to(frames.device)


# ----------------------------------------------------------------------------- RAFT (torchvision)


def _raft_weights_enum() -> Raft_Small_Weights:
    from torchvision.models.optical_flow import Raft_Small_Weights

    return Raft_Small_Weights.C_T_V2


def raft_weights_cache_path() -> Path:
    """Where torchvision keeps RAFT-small C_T_V2 weights: ``torch.hub.get_dir()/checkpoints/<file>``.

    Honours ``TORCH_HOME`` at call time.
    """
    url: str = _raft_weights_enum().url
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a ``.safetensors`` file or a ``.pth`` state dict (loaded with ``weights_only``)."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a corrupt or foreign file: say which one, in one line
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ConfigError(f"RAFT weights file '{path}' cannot be read ({first}); replace it") from None
    if not isinstance(state, dict):
        raise ConfigError(f"RAFT weights file '{path}' holds a {type(state).__name__}, not a state dict")
    return state


def load_raft_state(explicit: str | Path = "", download: bool = True) -> tuple[dict[str, torch.Tensor], str]:
    """Find RAFT-small weights; return (state dict, where they came from).

    Looks at, in order: ``explicit`` (``metric.raft_weights``; when given it must exist), the torch hub
    cache (:func:`raft_weights_cache_path`), then downloads torchvision's C_T_V2 weights into that cache
    when ``download`` and a network exist. Anything else raises a one-line :class:`ConfigError`.
    """
    if str(explicit):
        p = Path(explicit).expanduser()
        if not p.is_file():
            raise ConfigError(
                f"config value 'metric.raft_weights' points to '{p}', which does not exist; "
                "give the path of a RAFT-small state dict (.pth or .safetensors) or leave it empty"
            )
        return _read_state_dict(p), str(p)
    cached = raft_weights_cache_path()
    if cached.is_file():
        return _read_state_dict(cached), str(cached)
    url: str = _raft_weights_enum().url
    how = (
        f"put torchvision's raft_small C_T_V2 weights at '{cached}' (from {url}), "
        "set metric.raft_weights=PATH, or use metric.flow=dis (no weights needed)"
    )
    if not download:
        raise ConfigError(
            f"RAFT-small weights not found: metric.raft_weights is empty and '{cached}' is missing; {how}"
        )
    try:
        state = torch.hub.load_state_dict_from_url(url, progress=False, check_hash=True, map_location="cpu")
    except (urllib.error.URLError, OSError, RuntimeError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ConfigError(
            f"RAFT-small weights not found: metric.raft_weights is empty, '{cached}' is missing "
            f"and downloading failed ({reason}); {how}"
        ) from None
    return state, url


def check_flow_weights(cfg: MetricConfig) -> None:
    """Refuse, before a command trains or writes anything, a ``metric.flow=raft`` whose weights cannot
    be found (or fetched): PPG and evaluation would refuse them only after the earlier stages' work."""
    if cfg.flow == "raft":
        load_raft_state(cfg.raft_weights, download=True)


class RAFTFlow:
    """torchvision RAFT-small flow. Frames are padded (edge replication) to a multiple of 8 and at
    least the correlation pyramid's minimum side (128 for RAFT-small), then cropped back.

    Build with :meth:`from_config` (finds weights); the constructor takes a ready state dict and does
    no file I/O.
    """

    name = "raft-small"

    def __init__(
        self,
        state_dict: dict[str, torch.Tensor],
        device: str | torch.device = "cpu",
        num_flow_updates: int = 12,
        pairs_per_batch: int = 8,
    ) -> None:
        from torchvision.models.optical_flow import raft_small

        model = raft_small(weights=None)
        try:
            model.load_state_dict(state_dict, strict=True)
        except RuntimeError as e:
            first = str(e).splitlines()[0]
            raise ConfigError(f"RAFT weights do not match torchvision's raft_small ({first})") from None
        self.model = model.eval().requires_grad_(False).to(device)
        self.device = torch.device(device)
        self.num_flow_updates = num_flow_updates
        self.pairs_per_batch = pairs_per_batch
        levels: int = model.corr_block.num_levels
        self.min_side = 8 * 2 * 2 ** (levels - 1)  # torchvision's CorrBlock requirement

    @classmethod
    def from_config(
        cls, cfg: MetricConfig, device: str | torch.device = "cpu", download: bool = True
    ) -> RAFTFlow:
        """RAFT-small with weights found by :func:`load_raft_state` from ``cfg.raft_weights``."""
        state, source = load_raft_state(cfg.raft_weights, download=download)
        log.info("RAFT-small weights from %s", source)
        return cls(state, device=device)

    def _pad(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) -> (N, 3, H', W'), H' >= H a multiple of 8 and >= min_side (bottom/right)."""
        h, w = x.shape[-2:]
        hp = max(-(-h // 8) * 8, self.min_side)
        wp = max(-(-w // 8) * 8, self.min_side)
        if (hp, wp) == (h, w):
            return x
        return F.pad(x, (0, wp - w, 0, hp - h), mode="replicate")

    @torch.inference_mode()
    def flow(self, frames: torch.Tensor) -> torch.Tensor:
        _check_frames(frames)
        h, w = frames.shape[-2:]
        x = self._pad(
            frames.to(self.device, torch.float32).clamp(0.0, 1.0) * 2.0 - 1.0
        )  # [-1, 1] as torchvision
        out = []
        for s in range(0, x.shape[0] - 1, self.pairs_per_batch):
            e = min(s + self.pairs_per_batch, x.shape[0] - 1)
            preds = self.model(x[s:e], x[s + 1 : e + 1], num_flow_updates=self.num_flow_updates)
            out.append(preds[-1][..., :h, :w])  # (n, 2, H, W), the last refinement
        return torch.cat(out).float().to(frames.device)


def build_flow(cfg: MetricConfig, device: str | torch.device = "cpu", download: bool = True) -> FlowBackend:
    """The flow backend named by ``cfg.flow``: 'dis' (DIS medium), 'dis-ultrafast', or 'raft'.

    ``download=False`` forbids fetching RAFT weights (a missing file is then a ConfigError at once).
    """
    if cfg.flow in ("dis", "dis-medium"):
        return DISFlow("medium")
    if cfg.flow == "dis-ultrafast":
        return DISFlow("ultrafast")
    if cfg.flow in ("raft", "raft-small"):
        return RAFTFlow.from_config(cfg, device=device, download=download)
    raise ConfigError(
        f"config value 'metric.flow' must be 'dis', 'dis-ultrafast' or 'raft' (got '{cfg.flow}')"
    )


# ----------------------------------------------------------------------------- flow recovery (Eq. 3)


def flow_recovery_batch(
    f_hat: torch.Tensor, f_bar: torch.Tensor, f_orig: torch.Tensor, eps: float = 1e-6, lower: float = -1.0
) -> torch.Tensor:
    """Flow recovery (Eq. 3) of a batch: flows (B, T-1, 2, H, W) each -> (B,) float64.

    ``O_b = 1 - ||f_hat_b - f_orig_b|| / ||f_bar_b - f_orig_b||`` (L2 norm over pairs, components and
    pixels). 1 = the original flow is recovered, 0 = no better than the corrupted video, negative =
    worse. Degenerate denominator (``<= eps``: the corrupted flow already equals the original): the
    score is 1.0 when the numerator is also ``<= eps``, else ``lower``. Every score is clipped below
    at ``lower`` (default -1, i.e. twice the corrupted error) so one bad episode cannot dominate a
    reward; pass ``lower=-inf`` for the raw ratio.
    """
    if not (f_hat.shape == f_bar.shape == f_orig.shape) or f_hat.ndim != 5 or f_hat.shape[2] != 2:
        raise ValueError(
            "flow_recovery_batch needs three flows of one shape (B, T-1, 2, H, W); got "
            f"{tuple(f_hat.shape)}, {tuple(f_bar.shape)}, {tuple(f_orig.shape)}"
        )
    ref = f_orig.double()
    num = (f_hat.double() - ref).flatten(1).norm(dim=1)  # (B,)
    den = (f_bar.double() - ref).flatten(1).norm(dim=1)  # (B,)
    return recovery_score(num, den, eps, lower)


def recovery_score(
    num: torch.Tensor, den: torch.Tensor, eps: float = 1e-6, lower: float = -1.0
) -> torch.Tensor:
    """Eq. 3 from its two norms: O = 1 − num / den, with the conventions of :func:`flow_recovery_batch`.

    num = ‖F(X̂) − F(X)‖, den = ‖F(X̄) − F(X)‖ (any matching shapes, float64 advised).
    """
    score = 1.0 - num / den.clamp_min(eps)
    score = torch.where((den <= eps) & (num <= eps), torch.ones_like(score), score)
    return score.clamp_min(lower)


def recovery_shares(
    pair_sq: torch.Tensor, den: torch.Tensor, eps: float = 1e-6, lower: float = -1.0
) -> torch.Tensor:
    """Eq. 3's O split over the frames: pair_sq (B, T−1) = n_s = ‖F(X̂)_s − F(X)_s‖² of each consecutive
    pair s = (s, s+1), den (B,) = ‖F(X̄) − F(X)‖ -> (B, T) float64, each row summing to O.

    Frame t gets half of each of its two flows' squared errors, c_t = ½ (n_{t−1} + n_t) (one flow at
    either end), so Σ_t c_t = num² with num = ‖F(X̂) − F(X)‖ = √(Σ_s n_s), and its share is
    o_t = 1/T − c_t / (num · den): Σ_t o_t = 1 − num / den = O. A frame whose flows match the original's
    is paid 1/T; one that carries most of the error, less. Where O is clipped at ``lower`` (see
    :func:`recovery_score`) the split is scaled to sum to the clipped O (a worse frame still gets
    less); where the denominator is degenerate, the share is uniform, O / T.
    """
    b, t = pair_sq.shape[0], pair_sq.shape[1] + 1
    sq, d = pair_sq.double(), den.double()
    zero = sq.new_zeros(b, 1)
    c = 0.5 * (torch.cat([zero, sq], dim=1) + torch.cat([sq, zero], dim=1))  # (B, T)
    num = sq.sum(1).sqrt()
    score = recovery_score(num, d, eps, lower)  # (B,)
    raw = 1.0 - num / d.clamp_min(eps)
    split = 1.0 / t - c / (num * d.clamp_min(eps)).clamp_min(1e-300)[:, None]  # sums to raw
    clipped = raw < score
    split = (
        split * torch.where(clipped, score / torch.where(clipped, raw, torch.ones_like(raw)), 1.0)[:, None]
    )
    exact = (d > eps) & (~clipped | (raw != 0))
    return torch.where(exact[:, None], split, (score / t)[:, None].expand(b, t))


def pair_flows(backend: FlowBackend, src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """Flow from ``src[i]`` to ``dst[i]`` for N frame pairs (N, 3, H, W) each -> (N, 2, H, W).

    Each pair is a two-frame video for ``backend.flow``, so the flow of a pair is the one the same
    frames get inside a whole video (DIS starts every pair afresh; RAFT sees each pair alone too).
    """
    if src.shape != dst.shape or src.ndim != 4:
        raise ValueError(
            f"pair_flows needs two (N, 3, H, W) stacks; got {tuple(src.shape)}, {tuple(dst.shape)}"
        )
    if src.shape[0] == 0:
        return src.new_zeros((0, 2, *src.shape[-2:]))
    return torch.cat([backend.flow(torch.stack([a, b])) for a, b in zip(src, dst)])


def flow_recovery(
    f_hat: torch.Tensor, f_bar: torch.Tensor, f_orig: torch.Tensor, eps: float = 1e-6, lower: float = -1.0
) -> float:
    """Flow recovery (Eq. 3) of one video from its flows (T-1, 2, H, W): see :func:`flow_recovery_batch`.

    1 = original flow recovered, 0 = no better than corrupted, negative = worse (clipped at ``lower``).
    """
    if f_hat.ndim != 4:
        raise ValueError(f"flow_recovery needs flows (T-1, 2, H, W); got shape {tuple(f_hat.shape)}")
    return float(flow_recovery_batch(f_hat[None], f_bar[None], f_orig[None], eps=eps, lower=lower)[0])


class ReferenceFlows(NamedTuple):
    """Flows of the original and the corrupted video, computed once per clip and reused every episode."""

    f_orig: torch.Tensor  # (T-1, 2, H, W) F(X)
    f_bar: torch.Tensor  # (T-1, 2, H, W) F(X̄)


def reference_flows(x_bar: torch.Tensor, x: torch.Tensor, backend: FlowBackend) -> ReferenceFlows:
    """F(X) and F(X̄) for videos (T, 3, H, W) in [0, 1], to pass to :func:`flow_recovery_video`."""
    return ReferenceFlows(f_orig=backend.flow(x), f_bar=backend.flow(x_bar))


def flow_recovery_video(
    x_hat: torch.Tensor,
    x_bar: torch.Tensor | None,
    x: torch.Tensor | None,
    backend: FlowBackend,
    *,
    f_orig: torch.Tensor | None = None,
    f_bar: torch.Tensor | None = None,
    eps: float = 1e-6,
    lower: float = -1.0,
) -> float:
    """Flow recovery (Eq. 3) of a reconstructed video X̂ (T, 3, H, W) in [0, 1].

    ``x_bar`` (corrupted X̄) and ``x`` (original X) are used only for flows not given precomputed: with
    ``f_orig``/``f_bar`` from :func:`reference_flows` an episode costs one flow pass (over X̂).
    1 = original flow recovered, 0 = no better than corrupted, negative = worse (clipped at ``lower``).
    """
    if f_orig is None:
        if x is None:
            raise ValueError("flow_recovery_video needs the original video x or its flow f_orig")
        f_orig = backend.flow(x)
    if f_bar is None:
        if x_bar is None:
            raise ValueError("flow_recovery_video needs the corrupted video x_bar or its flow f_bar")
        f_bar = backend.flow(x_bar)
    f_hat = backend.flow(x_hat)
    return flow_recovery(f_hat, f_bar.to(f_hat.device), f_orig.to(f_hat.device), eps=eps, lower=lower)

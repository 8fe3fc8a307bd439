"""The corruption (paper §4) and its exact oracle.

Masks: each frame gets ``K`` rectangles (paper: 4), one in each of ``K`` fixed regions drawn at random
from ``R`` regions laid out as a grid (default 4 of 6). A rectangle spans more than half of its
region in each dimension, so any rectangles that share a region intersect; a pair ``(i, j)`` then
reveals all of ``t``'s holes iff no region holds a hole in ``t``, ``i`` and ``j`` at once. With
4 of 6 that leaves only a few valid pairs per target, spread over the whole video; masks are
redrawn until every target has between ``min_valid_pairs`` and ``max_valid_pairs`` of them.

The oracle never uses that bookkeeping: it is computed from the mask pixels alone
(:func:`coverage`), so it is exact for any masks, object masks of real videos included.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from functools import cached_property

import cv2
import numpy as np

from rovr.config import CorruptionConfig
from rovr.errors import DataError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Corrupted:
    """A corrupted clip: ``original`` and ``frames`` uint8 (T, H, W, 3), ``masks`` bool (T, H, W);
    ``video`` and ``start`` say where it was cut from, when it was cut from a source ("" otherwise)."""

    original: np.ndarray
    frames: np.ndarray
    masks: np.ndarray
    video: str = ""
    start: int = 0

    @cached_property
    def oracle(self) -> Oracle:
        return Oracle(self.masks)


# ----------------------------------------------------------------------------- oracle


def hole_counts(masks: np.ndarray) -> np.ndarray:
    """``n[t, i, j]`` = number of pixels that are holes in frames t, i and j at once. (T, T, T) int64."""
    t_, h, w = masks.shape
    m = masks.reshape(t_, h * w).astype(np.float32)  # (T, P)
    # Exact in float32 for up to 2**24 pixels per frame (4096 x 4096).
    if h * w > 2**24:
        raise DataError(f"frames of {h}x{w} are too large for the oracle; resize below 4096x4096")
    counts = np.empty((t_, t_, t_), dtype=np.int64)
    for t in range(t_):
        mt = m * m[t]  # (T, P): holes of t that are also holes of i
        counts[t] = np.rint(mt @ m.T).astype(np.int64)  # (T, T): ... and of j
    return counts


def coverage(masks: np.ndarray) -> np.ndarray:
    """Exact oracle: ``coverage[t, i, j]`` = fraction of t's hole pixels visible in frame i or j.

    A hole pixel p of t is visible in the pair iff it is not a hole of both i and j, so
    ``coverage[t, i, j] = 1 − |M_t ∩ M_i ∩ M_j| / |M_t|`` (1 when t has no hole). Entries with
    ``i == t`` or ``j == t`` are set to 0: the target cannot condition on itself.
    Returns float64 (T, T, T); ``coverage[t, i, i]`` is the coverage of frame i alone.
    """
    if masks.ndim != 3 or masks.dtype != np.bool_:
        raise ValueError(f"masks must be bool (T, H, W), got {masks.dtype} {masks.shape}")
    return _coverage_from_counts(hole_counts(masks))


def _coverage_from_counts(counts: np.ndarray) -> np.ndarray:
    area = np.diagonal(np.diagonal(counts, axis1=1, axis2=2))  # |M_t|, (T,)
    with np.errstate(divide="ignore", invalid="ignore"):
        cov = np.where(area[:, None, None] > 0, 1.0 - counts / np.maximum(area, 1)[:, None, None], 1.0)
    idx = np.arange(counts.shape[0])
    cov[idx, idx, :] = 0.0
    cov[idx, :, idx] = 0.0
    return cov


def pairs(num_frames: int, t: int) -> np.ndarray:
    """All unordered pairs (i, j), i < j, of frames other than t, in lexicographic order. (P, 2)."""
    others = [i for i in range(num_frames) if i != t]
    return np.array([(a, b) for n, a in enumerate(others) for b in others[n + 1 :]], dtype=np.int64)


class Oracle:
    """Valid, best and worst conditioning pairs of every target, from the mask pixels (§4)."""

    def __init__(self, masks: np.ndarray) -> None:
        if masks.ndim != 3 or masks.dtype != np.bool_:
            raise ValueError(f"masks must be bool (T, H, W), got {masks.dtype} {masks.shape}")
        self.masks = masks
        self.num_frames = masks.shape[0]
        self._exact = hole_counts(masks)  # (T, T, T) triple-hole pixel counts
        self.coverage = _coverage_from_counts(self._exact)  # (T, T, T)

    def pair_coverage(self, t: int) -> tuple[np.ndarray, np.ndarray]:
        """(pairs (P, 2), coverage (P,)) of all pairs for target t."""
        p = pairs(self.num_frames, t)
        return p, self.coverage[t, p[:, 0], p[:, 1]]

    def valid_pairs(self, t: int) -> np.ndarray:
        """Pairs that reveal every hole pixel of t (integer-exact, no float tolerance). (V, 2)."""
        p = pairs(self.num_frames, t)
        return p[self._exact[t, p[:, 0], p[:, 1]] == 0]

    def valid_matrix(self) -> np.ndarray:
        """bool (T, T, T): ``valid[t, i, j]`` for i, j != t, i != j (symmetric in i, j)."""
        v = self._exact == 0
        idx = np.arange(self.num_frames)
        v[idx, idx, :] = False
        v[idx, :, idx] = False
        v[:, idx, idx] = False
        return v

    def _ranked(self, t: int, best: bool) -> np.ndarray:
        p, cov = self.pair_coverage(t)
        dist = np.abs(p[:, 0] - t) + np.abs(p[:, 1] - t)
        # Best: highest coverage, then nearest frames. Worst: lowest coverage, then farthest.
        order = np.lexsort((dist, -cov)) if best else np.lexsort((-dist, cov))
        return p[order]

    def best_pair(self, t: int) -> tuple[int, int]:
        """Highest coverage; ties broken by the smaller temporal distance |i − t| + |j − t|."""
        a, b = self._ranked(t, best=True)[0]
        return int(a), int(b)

    def worst_pair(self, t: int) -> tuple[int, int]:
        """Lowest coverage; ties broken by the larger temporal distance."""
        a, b = self._ranked(t, best=False)[0]
        return int(a), int(b)

    def num_valid(self) -> np.ndarray:
        """Number of valid pairs per target. (T,) int."""
        return np.array([len(self.valid_pairs(t)) for t in range(self.num_frames)])


# ----------------------------------------------------------------------------- masks


def region_grid(num_regions: int, height: int, width: int) -> list[tuple[int, int, int, int]]:
    """Split the frame into ``num_regions`` cells (rows x cols, cols >= rows): (y0, x0, y1, x1) each."""
    rows = int(math.floor(math.sqrt(num_regions)))
    while num_regions % rows:
        rows -= 1
    cols = num_regions // rows
    if width < height:
        rows, cols = cols, rows
    ys = np.linspace(0, height, rows + 1).round().astype(int)
    xs = np.linspace(0, width, cols + 1).round().astype(int)
    return [(ys[r], xs[c], ys[r + 1], xs[c + 1]) for r in range(rows) for c in range(cols)]


def _draw_masks(
    cfg: CorruptionConfig, num_frames: int, h: int, w: int, rng: np.random.Generator
) -> np.ndarray:
    """One draw of rectangle masks, bool (T, H, W); hole area within [min_area, max_area]."""
    regions = region_grid(cfg.regions, h, w)
    masks = np.zeros((num_frames, h, w), dtype=bool)
    # Rectangle sides as fractions of the region's sides, > 1/2 so that rectangles sharing a
    # region always intersect; scaled so the K rectangles cover the requested hole area.
    region_frac = cfg.rects / cfg.regions
    for t in range(num_frames):
        target = rng.uniform(cfg.min_area, cfg.max_area) / region_frac  # fraction of each region
        side = float(np.clip(math.sqrt(target), 0.51, 1.0))
        for r in rng.choice(cfg.regions, size=cfg.rects, replace=False):
            y0, x0, y1, x1 = regions[r]
            rh, rw = y1 - y0, x1 - x0
            aspect = rng.uniform(0.8, 1.25)
            fh = float(np.clip(side * aspect, 0.51, 1.0))
            fw = float(np.clip(side * side / fh, 0.51, 1.0))
            bh, bw = max(1, math.ceil(fh * rh)), max(1, math.ceil(fw * rw))
            oy = y0 + int(rng.integers(0, rh - bh + 1))
            ox = x0 + int(rng.integers(0, rw - bw + 1))
            masks[t, oy : oy + bh, ox : ox + bw] = True
    return masks


def rectangle_masks(cfg: CorruptionConfig, num_frames: int, height: int, width: int, seed: int) -> np.ndarray:
    """Rectangle masks (paper §4) meeting the valid-pair bounds for every target. bool (T, H, W).

    Redraws (deterministically from ``seed``) until each target has between ``min_valid_pairs``
    and ``max_valid_pairs`` valid pairs by the exact oracle; the last draw is kept, with a
    warning, if ``max_tries`` draws fail (e.g. for very short clips).
    """
    rng = np.random.default_rng(seed)
    masks = _draw_masks(cfg, num_frames, height, width, rng)
    for attempt in range(cfg.max_tries):
        if attempt:
            masks = _draw_masks(cfg, num_frames, height, width, rng)
        nv = Oracle(masks).num_valid()
        if nv.min() >= cfg.min_valid_pairs and nv.max() <= cfg.max_valid_pairs:
            return masks
    log.warning(
        "no mask draw met %d-%d valid pairs per target for T=%d in %d tries; using the last one",
        cfg.min_valid_pairs,
        cfg.max_valid_pairs,
        num_frames,
        cfg.max_tries,
    )
    return masks


def degrade(frames: np.ndarray, cfg: CorruptionConfig, rng: np.random.Generator) -> np.ndarray:
    """Whole-frame degradations of paper §8 (blur, brightness shift, Gaussian noise). uint8 (T, H, W, 3)."""
    if cfg.blur_sigma == 0 and cfg.brightness == 0 and cfg.noise_std == 0:
        return frames
    x = frames.astype(np.float32) / 255.0
    if cfg.blur_sigma > 0:
        x = np.stack([cv2.GaussianBlur(f, (0, 0), cfg.blur_sigma) for f in x])
    if cfg.brightness > 0:
        x = x + rng.uniform(-cfg.brightness, cfg.brightness, size=(x.shape[0], 1, 1, 1)).astype(np.float32)
    if cfg.noise_std > 0:
        x = x + rng.normal(0.0, cfg.noise_std, size=x.shape).astype(np.float32)
    return (np.clip(x, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def apply_masks(frames: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Blank hole pixels (set to 0). frames uint8 (T, H, W, 3), masks bool (T, H, W)."""
    out = frames.copy()
    out[masks] = 0
    return out


def corrupt(
    frames: np.ndarray, cfg: CorruptionConfig, seed: int, masks: np.ndarray | None = None
) -> Corrupted:
    """Corrupt a clip: rectangle masks (or the given ``masks``), then the §8 degradations, then holes.

    ``frames`` uint8 (T, H, W, 3). Deterministic in ``seed``.
    """
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 (T, H, W, 3), got {frames.dtype} {frames.shape}")
    t_, h, w, _ = frames.shape
    if masks is None:
        masks = rectangle_masks(cfg, t_, h, w, seed)
    elif masks.shape != (t_, h, w):
        raise DataError(f"masks of shape {masks.shape} do not match frames {frames.shape[:3]}")
    rng = np.random.default_rng([seed, 1])
    degraded = degrade(frames, cfg, rng)
    return Corrupted(original=frames, frames=apply_masks(degraded, masks), masks=masks)

"""The corruption and its oracle (paper §4) against brute force."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from rovr.config import CorruptionConfig
from rovr.data.corruption import Oracle, corrupt, coverage, pairs, rectangle_masks, region_grid
from rovr.errors import DataError


def brute_coverage(masks: np.ndarray) -> np.ndarray:
    t_ = masks.shape[0]
    cov = np.zeros((t_, t_, t_))
    for t, i, j in itertools.product(range(t_), repeat=3):
        if t in (i, j):
            continue
        holes = np.argwhere(masks[t])
        if len(holes) == 0:
            cov[t, i, j] = 1.0
            continue
        seen = sum(1 for y, x in holes if not (masks[i, y, x] and masks[j, y, x]))
        cov[t, i, j] = seen / len(holes)
    return cov


@settings(max_examples=60, deadline=None)
@given(arrays(np.bool_, st.tuples(st.integers(3, 6), st.integers(1, 6), st.integers(1, 6))))
def test_coverage_equals_brute_force(masks: np.ndarray) -> None:
    np.testing.assert_allclose(coverage(masks), brute_coverage(masks), atol=1e-12)


@settings(max_examples=40, deadline=None)
@given(arrays(np.bool_, st.tuples(st.integers(3, 6), st.integers(1, 5), st.integers(1, 5))))
def test_oracle_valid_best_worst_match_brute_force(masks: np.ndarray) -> None:
    oracle = Oracle(masks)
    cov = brute_coverage(masks)
    t_ = masks.shape[0]
    for t in range(t_):
        cand = [(i, j) for i in range(t_) for j in range(i + 1, t_) if t not in (i, j)]
        valid = {p for p in cand if cov[t, p[0], p[1]] == 1.0}
        assert {tuple(map(int, p)) for p in oracle.valid_pairs(t)} == valid
        best = max(cov[t, i, j] for i, j in cand)
        worst = min(cov[t, i, j] for i, j in cand)
        bi, bj = oracle.best_pair(t)
        wi, wj = oracle.worst_pair(t)
        assert cov[t, bi, bj] == best and cov[t, wi, wj] == worst
        dist = [abs(i - t) + abs(j - t) for i, j in cand if cov[t, i, j] == best]
        assert abs(bi - t) + abs(bj - t) == min(dist)
        assert t not in (bi, bj, wi, wj)


def test_pairs_enumeration() -> None:
    p = pairs(20, 7)
    assert len(p) == 171 and 7 not in p and (p[:, 0] < p[:, 1]).all()
    assert len({tuple(x) for x in p}) == 171


def test_coverage_hand_example() -> None:
    m = np.zeros((3, 1, 4), dtype=bool)
    m[0, 0, :] = True  # target: 4 holes
    m[1, 0, :2] = True  # frame 1 hides pixels 0-1
    m[2, 0, 1:3] = True  # frame 2 hides pixels 1-2
    cov = coverage(m)
    assert cov[0, 1, 2] == pytest.approx(0.75)  # pixel 1 hidden in both
    assert cov[0, 1, 1] == pytest.approx(0.5)  # frame 1 alone
    assert cov[0, 0, 1] == 0.0  # the target cannot condition on itself
    assert cov[1, 0, 2] == pytest.approx(0.5)  # of frame 1's holes {0,1}, pixel 1 hidden in 0 and 2


@pytest.mark.parametrize("seed", range(25))
def test_generator_guarantees(seed: int) -> None:
    cfg = CorruptionConfig()
    masks = rectangle_masks(cfg, 20, 64, 64, seed)
    nv = Oracle(masks).num_valid()
    assert nv.min() >= 1 and nv.max() <= 16
    area = masks.mean(axis=(1, 2))
    assert (area > 0.12).all() and (area < 0.40).all()


def test_valid_pairs_are_spread_over_the_video() -> None:
    """Valid pairs are not clustered next to the target: their distance matches random pairs'."""
    cfg = CorruptionConfig()
    d_valid, d_all = [], []
    for seed in range(20):
        oracle = Oracle(rectangle_masks(cfg, 20, 48, 48, seed))
        for t in range(20):
            v = oracle.valid_pairs(t)
            d_valid.extend(np.abs(v - t).min(axis=1))
            d_all.extend(np.abs(pairs(20, t) - t).min(axis=1))
    assert abs(np.mean(d_valid) - np.mean(d_all)) < 1.0
    assert np.mean(np.array(d_valid) == 1) < 0.5  # most valid pairs do not include a neighbour


def test_determinism_and_seed_dependence() -> None:
    cfg = CorruptionConfig()
    frames = np.random.default_rng(0).integers(0, 256, (20, 32, 32, 3), dtype=np.uint8)
    a, b, c = corrupt(frames, cfg, 3), corrupt(frames, cfg, 3), corrupt(frames, cfg, 4)
    assert np.array_equal(a.masks, b.masks) and np.array_equal(a.frames, b.frames)
    assert not np.array_equal(a.masks, c.masks)
    assert (a.frames[a.masks] == 0).all()
    assert np.array_equal(a.frames[~a.masks], frames[~a.masks])
    assert np.array_equal(a.original, frames)


def test_degradations_change_the_whole_frame() -> None:
    cfg = CorruptionConfig(noise_std=0.05, brightness=0.1, blur_sigma=1.0)
    frames = np.random.default_rng(0).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    c = corrupt(frames, cfg, 0, masks=np.zeros((5, 32, 32), dtype=bool))
    assert not np.array_equal(c.frames, frames)


def test_given_masks_of_wrong_shape_is_a_data_error() -> None:
    frames = np.zeros((5, 8, 8, 3), dtype=np.uint8)
    with pytest.raises(DataError, match="do not match"):
        corrupt(frames, CorruptionConfig(), 0, masks=np.zeros((4, 8, 8), dtype=bool))


def test_region_grid_tiles_the_frame() -> None:
    cells = region_grid(6, 60, 90)
    area = sum((y1 - y0) * (x1 - x0) for y0, x0, y1, x1 in cells)
    assert len(cells) == 6 and area == 60 * 90


def test_oracle_on_real_object_masks(real_dir) -> None:  # type: ignore[no-untyped-def]
    """Arbitrary (object) masks: the oracle still equals brute force."""
    from rovr.video.io import read_masks

    masks = read_masks(real_dir / "schoolgirls_mask", num_frames=80, height=240, width=432)
    small = masks[:8, ::8, ::8].copy()  # 8 frames at 30 x 54
    assert small.any()
    np.testing.assert_allclose(Oracle(small).coverage, brute_coverage(small), atol=1e-12)

"""rovr.fill.copy_fill: hole pixels from other frames, aligned per hole region; what none shows in-painted
(or Γ's fill)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

import rovr.fill as fill_module
from rovr.fill import (
    GUARD,
    MAX_ERROR,
    UNSEEN_RADIUS,
    _shows,
    _view,
    copy_fill,
    default_search,
    luma,
    match_region,
    parabola_vertex,
)


def texture(h: int, w: int, seed: int, sigma: float = 1.5) -> np.ndarray:
    """uint8 (h, w, 3) smooth random texture: well defined under translation at every scale."""
    noise = np.random.default_rng(seed).normal(0, 1, (h, w, 3)).astype(np.float32)
    smooth = cv2.GaussianBlur(noise, (0, 0), sigma)
    return np.clip(128 + 60 * smooth / smooth.std(), 0, 255).astype(np.uint8)


def shifted(img: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """out(p) = img(p + d) (the content moved by −d), edges replicated."""
    h, w = img.shape[:2]
    m = np.float32([[1, 0, dx], [0, 1, dy]])
    return cv2.warpAffine(
        img, m, (w, h), flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE
    )


def box(h: int, w: int, y: int, x: int, bh: int, bw: int) -> np.ndarray:
    m = np.zeros((h, w), bool)
    m[y : y + bh, x : x + bw] = True
    return m


GREY = 128


def with_gamma_fill(frame: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The frame as restore hands it over: holes hold Γ's (here a flat grey) fill."""
    out = frame.copy()
    out[mask] = GREY
    return out


def test_each_hole_region_gets_its_own_translation() -> None:
    """Left and right halves move differently (two objects): each hole is copied exactly from the reference."""
    h, w = 80, 120
    ref = texture(h, w, 0)
    truth = ref.copy()
    truth[:, :60] = shifted(ref, 3, -5)[:, :60]
    truth[:, 60:] = shifted(ref, -4, 6)[:, 60:]
    mask = box(h, w, 30, 15, 14, 16) | box(h, w, 25, 85, 16, 14)
    out, stats = copy_fill(with_gamma_fill(truth, mask), mask, [ref], [np.zeros((h, w), bool)])
    np.testing.assert_array_equal(out, truth)  # holes exact, everything else untouched
    assert stats.hole == stats.copied == mask.sum()


def test_luma_is_bt601_by_hand() -> None:
    """Y = 0.299 R + 0.587 G + 0.114 B, from uint8 or float, as float32."""
    rgb = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255], [10, 20, 30]]], np.uint8)
    y = luma(rgb)
    assert y.dtype == np.float32 and y.shape == (1, 4)
    expect = [0.299 * 255, 0.587 * 255, 0.114 * 255, 0.299 * 10 + 0.587 * 20 + 0.114 * 30]
    np.testing.assert_allclose(y[0], expect, atol=1e-3)
    np.testing.assert_array_equal(luma(rgb.astype(np.float32)), y)


def test_match_region_on_luma_and_on_colour_agree() -> None:
    """The placement found on the luma is the colour one's; E is per channel in both (here 0: exact)."""
    h, w, S = 80, 90, 10
    ref = texture(h, w, 3)
    truth = shifted(ref, 4, -7)
    padded = cv2.copyMakeBorder(ref.astype(np.float32), S, S, S, S, cv2.BORDER_REFLECT)
    y0, x0 = 20, 25
    tmpl = truth[y0 : y0 + 30, x0 : x0 + 34].astype(np.float32)
    weight = np.ones((30, 34), np.float32)
    colour = match_region(padded, tmpl, weight, y0, x0, S)
    grey = match_region(luma(padded), luma(tmpl), weight, y0, x0, S)
    assert colour[:2] == grey[:2] == (4, -7)
    assert colour[2] == pytest.approx(0.0, abs=1e-3) and grey[2] == pytest.approx(0.0, abs=1e-3)


def test_parabola_vertex_by_hand() -> None:
    """E(x) = (x − 0.3)² + 2 at −1, 0, 1 is 3.69, 2.09, 2.49: vertex 0.3; clipped to ±½; no minimum: 0."""
    assert parabola_vertex(3.69, 2.09, 2.49) == pytest.approx(0.3)
    assert parabola_vertex(2.49, 2.09, 3.69) == pytest.approx(-0.3)
    assert parabola_vertex(10.0, 1.0, 1.0) == 0.5  # vertex at 0.5 exactly
    assert parabola_vertex(100.0, 1.0, 0.0) == 0.5  # beyond: clipped
    assert parabola_vertex(1.0, 1.0, 1.0) == 0.0 and parabola_vertex(0.0, 1.0, 0.0) == 0.0


def test_fractional_motion_is_placed_below_the_pixel(monkeypatch: pytest.MonkeyPatch) -> None:
    """Content moved by (1.4, −2.3) px: the copy sampled at the refined offset is much closer to the
    truth than the whole-pixel copy (SUBPIXEL off), and pixels outside the hole stay untouched."""
    h, w = 64, 80
    ref = texture(h, w, 5, sigma=2.5)
    move = np.float32([[1, 0, -2.3], [0, 1, 1.4]])  # truth(p) = ref(p + (1.4, −2.3)) in (y, x)
    truth = cv2.warpAffine(
        ref, move, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REFLECT
    )
    mask = box(h, w, 20, 30, 16, 18)
    target = with_gamma_fill(truth, mask)
    errors = {}
    for sub in (True, False):
        monkeypatch.setattr(fill_module, "SUBPIXEL", sub)
        out, stats = copy_fill(target, mask, [ref], [np.zeros((h, w), bool)])
        assert stats.copied == mask.sum()
        np.testing.assert_array_equal(out[~mask], target[~mask])
        errors[sub] = float(np.abs(out[mask].astype(float) - truth[mask]).mean())
    assert errors[True] < 0.5 * errors[False]


def test_a_large_motion_is_found_coarse_to_fine() -> None:
    """|d| = 30 px with S = 40 (coarse factor 4): still the exact translation."""
    h, w = 160, 200
    ref = texture(h, w, 1, sigma=2.5)
    truth = shifted(ref, -22, 30)
    mask = box(h, w, 60, 80, 24, 30)
    target = with_gamma_fill(truth, mask)
    S = 40
    padded = cv2.copyMakeBorder(ref.astype(np.float32), S, S, S, S, cv2.BORDER_REFLECT)
    y0, x0 = 60 - 8, 80 - 8
    tmpl = target[y0 : y0 + 40, x0 : x0 + 46].astype(np.float32)
    weight = np.ones((40, 46), np.float32)
    weight[8:32, 8:38] = 0.5
    dy, dx, err = match_region(padded, tmpl, weight, y0, x0, S)
    assert (dy, dx) == (-22, 30)
    out, stats = copy_fill(target, mask, [ref], [np.zeros((h, w), bool)], search=S)
    np.testing.assert_array_equal(out, truth)
    assert stats.copied == mask.sum()


@pytest.mark.parametrize("unseen", ["gamma", "telea"])
def test_pixels_the_frame_does_not_show_are_gammas_or_inpainted(unseen: str) -> None:
    """What the offered frame hides keeps Γ's fill (unseen="gamma") or is in-painted from around it,
    copied pixels included, as OpenCV's Telea does on the frame after copying (unseen="telea")."""
    h, w = 64, 64
    ref = texture(h, w, 2)
    truth = shifted(ref, 2, 3)
    mask = box(h, w, 20, 20, 16, 16)
    # the reference's own hole covers the left part of where the target's hole maps to (p + d)
    ref_hole = box(h, w, 22, 23, 16, 6)
    ref_seen = ref.copy()
    ref_seen[ref_hole] = 0  # what the reference shows there is not content (restore puts Γ's fill there)
    out, stats = copy_fill(with_gamma_fill(truth, mask), mask, [ref_seen], [ref_hole], unseen=unseen)
    hidden = shifted(cv2.dilate(ref_hole.astype(np.uint8), np.ones((2 * GUARD + 1,) * 2, np.uint8)), 2, 3) > 0
    hidden &= mask
    assert hidden.any() and (mask & ~hidden).any()
    np.testing.assert_array_equal(out[mask & ~hidden], truth[mask & ~hidden])
    np.testing.assert_array_equal(out[~mask], truth[~mask])
    assert stats.copied == (mask & ~hidden).sum()
    if unseen == "gamma":
        assert (out[hidden] == GREY).all() and stats.inpainted == 0  # Γ's fill stays
    else:
        copied = with_gamma_fill(truth, mask)
        copied[mask & ~hidden] = truth[mask & ~hidden]
        expect = cv2.inpaint(copied, hidden.astype(np.uint8), UNSEEN_RADIUS, cv2.INPAINT_TELEA)
        np.testing.assert_array_equal(out[hidden], expect[hidden])
        assert not (out[hidden] == GREY).all() and stats.inpainted == hidden.sum()
        # closer to the truth than Γ's flat fill: the texture around it continues in
        err = np.abs(out[hidden].astype(int) - truth[hidden]).mean()
        assert err < np.abs(GREY - truth[hidden].astype(int)).mean()


@pytest.mark.parametrize("blend", [0.0, None])
def test_the_second_frame_fills_what_the_best_one_does_not_show(
    blend: float | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With BLEND = 0 the best frame gives what it shows and the other the rest; by default the two
    match about as well (noise ±6 levels), so where both show the hole they are averaged."""
    if blend is not None:
        monkeypatch.setattr(fill_module, "BLEND", blend)
    h, w = 64, 64
    truth = texture(h, w, 3)
    mask = box(h, w, 24, 24, 14, 14)
    exact = truth.copy()
    exact_hole = box(h, w, 24, 24, 14, 5)  # the best match lacks the hole's left columns
    noisy = np.clip(truth.astype(int) + np.random.default_rng(4).integers(-6, 7, truth.shape), 0, 255).astype(
        np.uint8
    )
    out, stats = copy_fill(
        with_gamma_fill(truth, mask), mask, [noisy, exact], [np.zeros((h, w), bool), exact_hole]
    )
    hidden = cv2.dilate(exact_hole.astype(np.uint8), np.ones((2 * GUARD + 1,) * 2, np.uint8)) > 0
    both = truth if blend == 0.0 else np.rint((noisy.astype(np.float32) + truth) / 2).astype(np.uint8)
    np.testing.assert_array_equal(out[mask & ~hidden], both[mask & ~hidden])  # exact frame, or the mean
    np.testing.assert_array_equal(out[mask & hidden], noisy[mask & hidden])  # the rest from the noisy one
    assert stats.copied == mask.sum()


def test_only_frames_that_match_about_as_well_are_averaged(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two copies of the truth with independent noise (σ = 8) average to about σ/√2; a third one
    with σ = 30, usable (ring error under MAX_ERROR) but matching 3.5× worse, is not mixed in."""
    h, w = 64, 64
    truth = texture(h, w, 6)
    mask = box(h, w, 20, 20, 16, 16)
    rng = np.random.default_rng(7)
    a, b = (np.clip(truth + rng.normal(0, 8, truth.shape), 0, 255).astype(np.uint8) for _ in range(2))
    other = np.clip(truth + rng.normal(0, 30, truth.shape), 0, 255).astype(np.uint8)
    none = np.zeros((h, w), bool)
    target = with_gamma_fill(truth, mask)
    errors = {}
    for blend in (0.0, fill_module.BLEND):
        monkeypatch.setattr(fill_module, "BLEND", blend)
        out, _ = copy_fill(target, mask, [a, b, other], [none, none, none])
        errors[blend] = float(np.abs(out[mask].astype(float) - truth[mask]).mean())
    assert errors[fill_module.BLEND] < 0.8 * errors[0.0]
    mean_ab = np.rint((a.astype(np.float32) + b) / 2).astype(np.uint8)
    assert np.abs(out[mask].astype(int) - mean_ab[mask]).max() <= 1  # the two alone, not `other`


def test_a_later_tier_gives_only_what_the_earlier_one_does_not_show() -> None:
    """The same two frames as above in two tiers, the noisy one first: it gives every pixel it shows,
    although the exact frame matches better; the exact one only fills the noisy one's own hole. With
    nothing left after the first tier, a second-tier frame is never used."""
    h, w = 64, 64
    truth = texture(h, w, 3)
    mask = box(h, w, 24, 24, 14, 14)
    noisy = np.clip(truth.astype(int) + np.random.default_rng(4).integers(-6, 7, truth.shape), 0, 255).astype(
        np.uint8
    )
    noisy_hole = box(h, w, 24, 24, 14, 5)
    none = np.zeros((h, w), bool)
    noisy_filled = noisy.copy()
    noisy_filled[noisy_hole] = 0  # its own Γ fill, unlike the target's
    target = with_gamma_fill(truth, mask)
    out, stats = copy_fill(target, mask, [noisy_filled, truth], [noisy_hole, none], tiers=(1, 1))
    hidden = cv2.dilate(noisy_hole.astype(np.uint8), np.ones((2 * GUARD + 1,) * 2, np.uint8)) > 0
    np.testing.assert_array_equal(out[mask & ~hidden], noisy[mask & ~hidden])  # first tier first
    np.testing.assert_array_equal(out[mask & hidden], truth[mask & hidden])  # second tier: the rest
    assert stats.copied == mask.sum()
    # one tier: ranked together, the exact frame wins everywhere
    together, _ = copy_fill(target, mask, [noisy_filled, truth], [noisy_hole, none])
    np.testing.assert_array_equal(together, truth)
    # the first tier shows everything: an (unmatchable) second-tier frame is never looked at
    first, _ = copy_fill(target, mask, [noisy, np.zeros((h, w, 3), np.uint8)], [none, none], tiers=(1, 1))
    np.testing.assert_array_equal(first[mask], noisy[mask])
    with pytest.raises(ValueError, match="do not split"):
        copy_fill(target, mask, [noisy, truth], [none, none], tiers=(1,))


def test_a_frame_that_does_not_match_gives_nothing() -> None:
    h, w = 64, 64
    truth, unrelated = texture(h, w, 5), texture(h, w, 6)
    mask = box(h, w, 20, 20, 12, 12)
    target = with_gamma_fill(truth, mask)
    out, stats = copy_fill(target, mask, [unrelated], [np.zeros((h, w), bool)], unseen="gamma")
    np.testing.assert_array_equal(out, target)
    assert stats.copied == 0 and stats.hole == mask.sum()
    # the same frame is copied when the limit is lifted: the refusal is the error limit's doing
    _, lifted = copy_fill(target, mask, [unrelated], [np.zeros((h, w), bool)], max_error=float("inf"))
    assert lifted.copied == mask.sum() and MAX_ERROR < float("inf")


def test_no_hole_or_no_frame() -> None:
    """No hole: nothing changes. No frame: nothing is copied; the hole is in-painted, or keeps Γ's fill."""
    frame = texture(32, 48, 7)
    none = np.zeros((32, 48), bool)
    out, stats = copy_fill(frame, none, [frame], [none])
    np.testing.assert_array_equal(out, frame)
    assert (stats.hole, stats.copied, stats.inpainted) == (0, 0, 0)
    mask = box(32, 48, 5, 5, 6, 6)
    out, stats = copy_fill(frame, mask, [], [], unseen="gamma")
    np.testing.assert_array_equal(out, frame)
    assert (stats.hole, stats.copied, stats.inpainted) == (36, 0, 0)
    out, stats = copy_fill(frame, mask, [], [])
    np.testing.assert_array_equal(out[~mask], frame[~mask])
    assert (stats.hole, stats.copied, stats.inpainted) == (36, 0, 36)
    with pytest.raises(ValueError, match="unseen must be one of telea, gamma"):
        copy_fill(frame, mask, [], [], unseen="blur")


def test_a_frame_that_is_all_hole_takes_other_frames_pixels_unmoved() -> None:
    """No known pixel to check a placement against, or to in-paint from: each pixel comes unmoved
    from the first frame that shows it (the second frame fills the first one's hole, grown by
    GUARD), and where none does Γ's fill stays; nothing is in-painted."""
    h, w = 40, 50
    first, second = texture(h, w, 9), texture(h, w, 3)
    mask = np.ones((h, w), bool)
    target = with_gamma_fill(first, mask)
    hole_first, hole_both = box(h, w, 10, 10, 12, 20), box(h, w, 30, 40, 6, 6)
    out, stats = copy_fill(target, mask, [first, second], [hole_first | hole_both, hole_both])
    guard = np.ones((2 * GUARD + 1, 2 * GUARD + 1), np.uint8)
    grown_first = cv2.dilate((hole_first | hole_both).astype(np.uint8), guard) > 0
    grown_both = cv2.dilate(hole_both.astype(np.uint8), guard) > 0
    np.testing.assert_array_equal(out[~grown_first], first[~grown_first])
    from_second = grown_first & ~grown_both
    np.testing.assert_array_equal(out[from_second], second[from_second])
    np.testing.assert_array_equal(out[grown_both], target[grown_both])
    shown = int((~grown_both).sum())
    assert (stats.hole, stats.copied, stats.unaligned, stats.inpainted) == (h * w, shown, shown, 0)


def test_holes_at_the_border_are_copied_from_inside_the_frame() -> None:
    """A hole touching the edge, motion toward it: pixels that would come from outside the frame stay Γ's."""
    h, w = 48, 64
    ref = texture(h, w, 8)
    truth = shifted(ref, 0, -4)  # truth(p) = ref(p - 4 px in x): the first 4 columns have no source
    mask = box(h, w, 10, 0, 12, 10)
    out, stats = copy_fill(
        with_gamma_fill(truth, mask), mask, [ref], [np.zeros((h, w), bool)], unseen="gamma"
    )
    inside = mask.copy()
    inside[:, :4] = False
    np.testing.assert_array_equal(out[inside], truth[inside])
    assert (out[mask & ~inside] == GREY).all()
    assert stats.copied == inside.sum()


@pytest.mark.parametrize(("h", "w", "expect"), [(64, 64, 8), (360, 640, 32), (1080, 1920, 96)])
def test_default_search_grows_with_the_frame(h: int, w: int, expect: int) -> None:
    assert default_search(h, w) == expect


def test_views_outside_the_frame_equal_padding_the_whole_frame() -> None:
    """copy_fill crops each frame around a region instead of padding whole frames: the crop, however far
    outside (mirrored again and again when the frame is small), equals OpenCV's BORDER_REFLECT padding
    of the whole frame, and where a frame may give pixels equals its whole mask grown by GUARD, with
    nothing outside the frame."""
    rng = np.random.default_rng(0)
    P = 100
    kernel = np.ones((2 * GUARD + 1, 2 * GUARD + 1), np.uint8)
    for _ in range(2000):
        H, W = (int(v) for v in rng.integers(1, 30, 2))
        img = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
        mask = rng.random((H, W)) < 0.1
        y, x = (int(v) for v in rng.integers(-40, 40, 2))
        h, w = (int(v) for v in rng.integers(1, 50, 2))
        padded = cv2.copyMakeBorder(img, P, P, P, P, cv2.BORDER_REFLECT)
        np.testing.assert_array_equal(_view(img, y, x, h, w), padded[P + y : P + y + h, P + x : P + x + w])
        shows = cv2.copyMakeBorder(
            (cv2.dilate(mask.astype(np.uint8), kernel) == 0).astype(np.uint8),
            P,
            P,
            P,
            P,
            cv2.BORDER_CONSTANT,
            value=0,
        )
        np.testing.assert_array_equal(
            _shows(mask, y, x, h, w), shows[P + y : P + y + h, P + x : P + x + w] > 0
        )

"""Figures, video and HTML of the evaluation report."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from rovr.config import CorruptionConfig
from rovr.data.corruption import Corrupted, corrupt
from rovr.evaluate import build_report
from rovr.report import (
    GREEN,
    HEAT_CHOSEN,
    HEAT_EMPTY,
    HEAT_TARGET,
    RED,
    chosen_views,
    coverage_overlay,
    curve_series,
    fig1_masked,
    fig3_heatmaps,
    fig6_grid,
    heatmap_image,
    learning_curves,
    side_by_side_frames,
    side_by_side_video,
    write_html,
)
from rovr.video.io import probe

T = 6


@pytest.fixture(scope="module")
def clip() -> Corrupted:
    frames = np.random.default_rng(0).integers(0, 256, (T, 24, 24, 3), dtype=np.uint8)
    return corrupt(frames, CorruptionConfig(min_valid_pairs=0), seed=1)


def _read_rgb(path: Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert img is not None, path
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def _no_temp_files(folder: Path) -> None:
    assert not [p.name for p in folder.iterdir() if p.name.startswith(".")]


def test_overlay_colours_by_hand() -> None:
    frame = np.full((4, 4, 3), 100, dtype=np.uint8)
    target = np.zeros((4, 4), dtype=bool)
    target[0, 0] = target[0, 1] = target[1, 1] = True
    chosen = np.zeros((2, 4, 4), dtype=bool)
    chosen[0, 0, 0] = chosen[0, 0, 1] = True  # frame A hides (0,0) and (0,1)
    chosen[1, 0, 0] = True  # frame B hides only (0,0)
    out = coverage_overlay(frame, target, chosen, alpha=0.5)
    blend = lambda colour: np.round(0.5 * 100 + 0.5 * colour).astype(np.uint8)  # noqa: E731
    np.testing.assert_array_equal(out[0, 0], blend(RED))  # hidden in every chosen frame
    np.testing.assert_array_equal(out[0, 1], blend(GREEN))  # visible in frame B
    np.testing.assert_array_equal(out[1, 1], blend(GREEN))  # visible in both
    assert out[0, 0, 0] > out[0, 0, 1] and out[0, 1, 1] > out[0, 1, 0]
    keep = ~target
    np.testing.assert_array_equal(out[keep], frame[keep])  # pixels that are not holes are untouched


def test_heatmap_image_cells() -> None:
    choices = np.array([[1, 2], [0, 2], [0, 1], [1, 2]])
    img = heatmap_image(choices)
    assert img.shape == (4, 4, 3)
    for t in range(4):
        np.testing.assert_allclose(img[t, t], HEAT_TARGET)
        for f in range(4):
            if f != t:
                expected = HEAT_CHOSEN if f in choices[t] else HEAT_EMPTY
                np.testing.assert_allclose(img[t, f], expected)


def test_figures_are_written(tmp_path: Path, clip: Corrupted) -> None:
    choices = {
        "sequential": np.array([[1, 2], [0, 2], [0, 1], [1, 2], [2, 3], [3, 4]]),
        "oracle_best": np.array([clip.oracle.best_pair(t) for t in range(T)]),
    }
    heat = _read_rgb(fig3_heatmaps(choices, tmp_path / "fig3.png"))
    yellow = np.round(np.array(HEAT_TARGET) * 255)
    assert (np.abs(heat.astype(int) - yellow).max(axis=2) <= 3).sum() > 100  # the yellow diagonal is drawn
    rec = torch.rand(T, 3, 24, 24)
    fig6 = fig6_grid(clip, choices["oracle_best"], rec, [0, 3], tmp_path / "fig6.png")
    fig1 = fig1_masked(clip, [0, 5], tmp_path / "fig1.png")
    for path in (fig6, fig1):
        assert _read_rgb(path).shape[2] == 3
    _no_temp_files(tmp_path)
    with pytest.raises(ValueError, match="uint8"):
        fig6_grid(clip, choices["sequential"], rec.numpy(), [0], tmp_path / "bad.png")


def test_fig6_shows_a_frame_repaired_earlier_as_gamma_got_it(clip: Corrupted) -> None:
    """In the paper's MDP a chosen frame before the target was given to Γ as its repair, no holes."""
    video = np.full_like(clip.frames, 7)
    frames, holes, repaired = chosen_views(clip, video, [1, 4], 3, "current")
    assert repaired == [True, False]
    assert (frames[0] == 7).all() and not holes[0].any()
    assert np.array_equal(frames[1], clip.frames[4]) and np.array_equal(holes[1], clip.masks[4])
    frames, holes, repaired = chosen_views(clip, video, [1, 4], 3, "observed")
    assert repaired == [False, False] and np.array_equal(holes, clip.masks[[1, 4]])
    assert np.array_equal(frames[0], clip.frames[1])


def test_learning_curves(tmp_path: Path) -> None:
    records = [
        {"stage": "pretrain-local", "step": 1, "time": 0.0, "local/loss": 0.5, "local/lr": 0.1},
        {"stage": "pretrain-local", "step": 2, "time": 1.0, "local/loss": 0.4, "local/lr": 0.1},
        {"stage": "imitation", "step": 1, "time": 2.0, "imitation/loss": 0.7},
        # imitation's one-off held-out evaluation: not a curve, and not on PPG's iteration axis
        {
            "stage": "imitation",
            "step": 400,
            "heldout/imitation_perceptual_loss": 0.06,
            "heldout/imitation_coverage": 0.9,
        },
        {
            "stage": "ppg",
            "step": 1,
            "time": 3.0,
            "charts/episodic_return": 0.1,
            "charts/flow_recovery": 0.2,
            "charts/perceptual_loss": 0.3,
            "losses/approx_kl": 0.01,
        },
    ]
    series = curve_series(records)
    assert series["local net Γ loss"] == {"pretrain-local: local/loss": ([1.0, 2.0], [0.5, 0.4])}
    assert series["imitation loss"] == {"imitation: imitation/loss": ([1.0], [0.7])}
    assert list(series["return"]) == ["ppg: charts/episodic_return"]
    assert list(series["flow recovery O (Eq. 3)"]) == ["ppg: charts/flow_recovery"]
    assert list(series["perceptual loss L_P"]) == ["ppg: charts/perceptual_loss"]
    restart = [{"stage": "ppg", "step": 1, "time": 4.0, "charts/episodic_return": 0.2}]  # the next PPG run
    two = curve_series(records + restart)["return"]
    assert two == {
        "ppg: charts/episodic_return": ([1.0], [0.1]),
        "ppg: charts/episodic_return [2]": ([1.0], [0.2]),
    }
    named = [  # rows that name their policy: the ablations of one run folder, each its own series
        {"stage": "ppg", "policy": name, "step": step, "charts/episodic_return": r}
        for name, step, r in (
            ("rovr_flow_warm", 1, 0.1),
            ("rovr_flow_warm", 2, 0.2),
            ("rovr_flow_cold", 1, 0.3),
        )
    ]
    assert curve_series(named)["return"] == {
        "rovr_flow_warm: charts/episodic_return": ([1.0, 2.0], [0.1, 0.2]),
        "rovr_flow_cold: charts/episodic_return": ([1.0], [0.3]),
    }
    assert learning_curves(records, tmp_path / "curves.png") == tmp_path / "curves.png"
    assert learning_curves([], tmp_path / "none.png") is None and not (tmp_path / "none.png").exists()


def test_side_by_side_upscales_small_frames(tmp_path: Path, clip: Corrupted) -> None:
    small = np.random.default_rng(1).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    frames = side_by_side_frames([("a", small), ("b", small)])
    assert frames.shape == (2, 18 + 3 * 64, 2 * 3 * 64 + 2, 3)
    np.testing.assert_array_equal(
        frames[1, 18:21, 3:6], np.broadcast_to(small[1, 0, 1], (3, 3, 3))
    )  # nearest
    path = side_by_side_video(clip, {"policy": clip.original}, clip.original, tmp_path / "v.mp4", fps=4)
    info = probe(path)
    assert info.frames == T and info.width == 3 * (24 * 8) + 2 * 2
    _no_temp_files(tmp_path)


def test_html_report(tmp_path: Path, clip: Corrupted) -> None:
    t2 = [
        {
            "policy": "imitation",
            "perceptual_loss": 0.2,
            "perceptual_loss_std": 0.01,
            "flow_recovery": 0.5,
            "flow_recovery_std": 0.1,
            "psnr": 20.0,
            "psnr_std": 1.0,
            "ssim": 0.6,
            "ssim_std": 0.0,
            "gap_closed": 0.25,
            "gap_closed_std": 0.05,
            "coverage": 0.9,
            "coverage_std": 0.0,
            "valid_rate": 0.5,
            "valid_rate_std": 0.0,
            "seeds": 3,
        }
    ]
    t1 = [
        {
            "policy": "best",
            "loss_mean": 0.1,
            "loss_std": 0.02,
            "n_frames": 12,
            "ci95": 0.01,
            "hole_psnr": 21.0,
            "hole_ssim": 0.7,
        }
    ]
    report = build_report(
        {"perceptual": "ssim", "flow": "raft-small"},
        t1,
        t2,
        {"eval": 1.0},
        {"policies": {"missing": ["rovr_flow_cold"]}},
    )
    fig = fig3_heatmaps(
        {"imitation": np.array([[1, 2], [0, 2], [0, 1], [1, 2], [2, 3], [3, 4]])},
        tmp_path / "fig3_heatmaps.png",
    )
    video = side_by_side_video(clip, {}, clip.original, tmp_path / "videos" / "before_after.mp4")
    path = write_html(
        tmp_path, report, {"fig3": fig}, {"before_after": video}, {"k": 2, "eval": {"seeds": 3}}
    )
    page = path.read_text()
    assert path == tmp_path / "report.html"
    for text in (
        "Table 1",
        "Table 2",
        "0.1000 ± 0.0200",
        "0.2500 ± 0.0500",
        "imitation",
        "rovr_flow_cold",
        "ssim",
        "raft-small",
        "weight-free fallback",
        "data:image/png;base64,",
        "<video",
        "src='videos/before_after.mp4'",
        "seeds: 3",
    ):
        assert text in page, text
    assert "<script" not in page and "<link" not in page and "http" not in page  # self-contained
    lpips = dict(report, metric={"perceptual": "lpips-vgg", "flow": "dis"})
    assert "weight-free fallback" not in write_html(tmp_path, lpips, {}, {}, {}).read_text()
    _no_temp_files(tmp_path)


def test_summary_names_the_best_policy_that_does_not_peek() -> None:
    """oracle_copy ranks pairs against the original: the summary's "uses neither the oracle nor the
    original" line must not name it (it did)."""
    from rovr.report import _summary_html

    rows = [
        {"policy": name, "perceptual_loss": loss, "gap_closed": 0.5}
        for name, loss in (
            ("brute_force", 0.04),
            ("oracle_copy", 0.05),
            ("oracle_best", 0.055),
            ("imitation", 0.06),
        )
    ]
    line = next(li for li in _summary_html({"table2": rows}).split("<li>") if "Lowest" in li)
    assert "imitation (0.0600" in line

"""Evaluation (Tables 1 and 2, report.json) on tiny synthetic clips with an untrained small Γ."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from rovr.conditioning import make_baseline
from rovr.config import CorruptionConfig, DataConfig, EvalConfig, MetricConfig, RunConfig, read_run_config
from rovr.data.corruption import Corrupted, corrupt
from rovr.errors import RovrError
from rovr.evaluate import (
    TABLE1_POLICIES,
    TABLE2_BASELINES,
    TABLE2_METRICS,
    build_report,
    combine_seed_reports,
    copy_from_frames,
    data_line,
    evaluate_run,
    gap_closed,
    markdown_table1,
    markdown_table2,
    pool_table1_rows,
    run_policy,
    summarize,
    table1,
    table1_peers,
    table2,
    telea_inpaint,
    validate_report,
    write_report_json,
)
from rovr.metrics.flow import build_flow
from rovr.metrics.perceptual import build_perceptual
from rovr.models.local import LocalNet, LocalNetConfig
from rovr.reconstruct import Episodes, reconstruct

T, S, CELL = 6, 24, 8
T_975_DF3 = 3.182446305284263  # Student t table: 97.5 % quantile, 3 degrees of freedom


def make_clips(seed: int, n: int = 2) -> list[Corrupted]:
    rng = np.random.default_rng(seed)
    cfg = CorruptionConfig(min_valid_pairs=0)
    return [
        corrupt(rng.integers(0, 256, (T, S, S, 3), dtype=np.uint8), cfg, seed=100 * seed + i)
        for i in range(n)
    ]


@pytest.fixture(scope="module")
def net() -> LocalNet:
    torch.manual_seed(0)
    return LocalNet(LocalNetConfig(base_channels=8, depth=2), k=2).eval()


@pytest.fixture(scope="module")
def perceptual():  # type: ignore[no-untyped-def]
    return build_perceptual(MetricConfig(perceptual="ssim"))


@pytest.fixture(scope="module")
def clips_by_seed() -> dict[int, list[Corrupted]]:
    return {0: make_clips(0), 1: make_clips(1)}


@pytest.fixture(scope="module")
def t2(clips_by_seed, net, perceptual):  # type: ignore[no-untyped-def]
    choosers = {name: (lambda seed, name=name: make_baseline(name, seed)) for name in TABLE2_BASELINES}
    return table2(
        clips_by_seed, choosers, net, perceptual, build_flow(MetricConfig(flow="dis")), k=2, cell=CELL
    )


# ----------------------------------------------------------------------------- statistics


def test_summarize_by_hand() -> None:
    s = summarize([1.0, 2.0, 3.0, 4.0, math.nan])  # NaN is ignored
    std = math.sqrt(((1.5**2) * 2 + (0.5**2) * 2) / 3)
    assert (s.mean, s.n) == (2.5, 4)
    assert s.std == pytest.approx(std)
    assert s.ci95 == pytest.approx(T_975_DF3 * std / 2)
    one = summarize([7.0])
    assert (one.mean, one.std, one.n) == (7.0, 0.0, 1) and math.isnan(one.ci95)
    assert summarize([]).n == 0


def test_gap_closed_formula() -> None:
    assert gap_closed(0.5, 0.4, 0.3) == pytest.approx(0.5)
    assert gap_closed(0.5, 0.5, 0.3) == 0.0
    assert gap_closed(0.5, 0.3, 0.3) == 1.0
    assert gap_closed(0.5, 0.6, 0.3) == pytest.approx(-0.5)
    assert math.isnan(gap_closed(0.4, 0.4, 0.4))


def test_pooled_rows_equal_the_summary_of_all_frames() -> None:
    values = np.random.default_rng(3).normal(size=23)
    parts = [values[:5], values[5:14], values[14:]]
    rows = []
    for part in parts:
        s = summarize(part)
        rows.append(
            {
                "policy": "best",
                "loss_mean": s.mean,
                "loss_std": s.std,
                "n_frames": s.n,
                "hole_psnr": float(part.size),
                "hole_ssim": 1.0,
            }
        )
    pooled, whole = pool_table1_rows(rows), summarize(values)
    assert pooled["n_frames"] == whole.n
    assert pooled["loss_mean"] == pytest.approx(whole.mean)
    assert pooled["loss_std"] == pytest.approx(whole.std)
    assert pooled["ci95"] == pytest.approx(whole.ci95)
    assert pooled["hole_psnr"] == pytest.approx(sum(p.size**2 for p in parts) / values.size)  # frame-weighted


# ----------------------------------------------------------------------------- Table 1


def test_table1_rows_are_the_reconstruction_loop(clips_by_seed, net, perceptual) -> None:  # type: ignore[no-untyped-def]
    clips = clips_by_seed[0]
    rows = table1(clips, net, perceptual, k=2, seed=0, brute_force=True, cell=CELL)
    assert [r["policy"] for r in rows] == list(TABLE1_POLICIES)
    best = rows[0]
    rec = reconstruct(Episodes(clips, net, perceptual, k=2, cell=CELL), make_baseline("oracle_best"))
    assert best["n_frames"] == len(clips) * T
    assert best["loss_mean"] == pytest.approx(rec.loss.mean())
    assert best["loss_std"] == pytest.approx(rec.loss.std(ddof=1))
    assert best["ci95"] > 0 and all(np.isfinite(r["hole_psnr"]) and -1 <= r["hole_ssim"] <= 1 for r in rows)
    assert [r["policy"] for r in table1(clips, net, perceptual, brute_force=False, cell=CELL)] == [
        "best",
        "random",
        "worst",
    ]


@pytest.mark.parametrize("condition_on", ["observed", "current"])
def test_brute_force_is_lowest_on_every_frame(clips_by_seed, net, perceptual, condition_on) -> None:  # type: ignore[no-untyped-def]
    """On observed pixels every frame's state is the same whatever was chosen before, so brute force
    is the best on every frame. On the current video it is the best pair for the state it reached
    (greedy): lowest on the first frame, where every chooser is in the same state, not on later ones."""
    clips = clips_by_seed[0]
    runs = {
        n: run_policy(
            clips, make_baseline(n, 0), net, perceptual, cell=CELL, batch_size=1, condition_on=condition_on
        )
        for n in ("brute_force", "oracle_best", "oracle_worst", "random", "sequential", "stride")
    }
    frames = slice(None) if condition_on == "observed" else slice(0, 1)
    for name, run in runs.items():
        assert run.loss.shape == (len(clips), T)
        assert np.all(runs["brute_force"].loss[:, frames] <= run.loss[:, frames] + 1e-5), name


def test_brute_force_with_gamma_splitting_its_batches_picks_the_same_pairs(
    clips_by_seed, net, perceptual, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    """Γ splits brute force's no-grad CPU batches (CPU_BATCH_PIXELS); the pairs it picks, and their
    losses, are those of one pass over all pairs."""
    import rovr.models.local as local
    from rovr.conditioning import BruteForce

    clips = clips_by_seed[0]
    H, W = clips[0].original.shape[1:3]
    whole = run_policy(clips, BruteForce(), net, perceptual, cell=CELL, batch_size=2)
    monkeypatch.setattr(local, "CPU_BATCH_PIXELS", 5 * H * W)  # 5 pairs a pass
    parts = run_policy(clips, BruteForce(), net, perceptual, cell=CELL, batch_size=2)
    assert np.array_equal(parts.choices, whole.choices)
    np.testing.assert_allclose(parts.loss, whole.loss, atol=1e-6)


def test_copy_from_frames_by_hand() -> None:
    frames = np.zeros((3, 1, 3, 3), dtype=np.uint8)
    frames[1], frames[2] = 10, 20
    masks = np.zeros((3, 1, 3), dtype=bool)
    masks[0] = [[True, True, True]]  # every pixel of the target is a hole
    masks[1] = [[False, True, True]]  # frame 1 sees pixel 0
    masks[2] = [[True, False, True]]  # frame 2 sees pixel 1; pixel 2 is hidden in both
    clip = Corrupted(original=frames.copy(), frames=frames, masks=masks)
    out = copy_from_frames(clip, np.array([[1, 2], [0, 2], [0, 1]]))
    assert out[0, 0, :, 0].tolist() == [10, 20, 0]  # from frame 1, else frame 2, else left as it was
    assert out[1, 0, :, 0].tolist() == [10, 20, 10]  # pixel 1 from frame 2; pixel 2 hidden in 0 and 2
    assert out[2, 0, :, 0].tolist() == [10, 20, 20]  # pixel 0 from frame 1; pixel 2 hidden in 0 and 1
    np.testing.assert_array_equal(out[~masks], frames[~masks])  # known pixels are never touched


def test_telea_fills_holes_and_keeps_known_pixels() -> None:
    frames = np.full((3, 16, 16, 3), 120, dtype=np.uint8)
    masks = np.zeros((3, 16, 16), dtype=bool)
    masks[:, 5:9, 6:10] = True
    frames[masks] = 0
    clip = Corrupted(original=np.full_like(frames, 120), frames=frames, masks=masks)
    out = telea_inpaint(clip)
    np.testing.assert_array_equal(out[~masks], frames[~masks])
    assert np.abs(out[masks].astype(int) - 120).max() <= 2  # a flat image is filled flat


def test_peers_rows(clips_by_seed, perceptual) -> None:  # type: ignore[no-untyped-def]
    rows = table1_peers(clips_by_seed[0], perceptual)
    assert [r["policy"] for r in rows] == ["cv2_inpaint", "copy_best_pair"]
    for r in rows:
        assert r["n_frames"] == 2 * T and r["loss_mean"] > 0 and np.isfinite(r["hole_psnr"])


# ----------------------------------------------------------------------------- Table 2


def test_table2_gap_closed_by_construction(t2) -> None:  # type: ignore[no-untyped-def]
    rows = {r["policy"]: r for r in t2.rows}
    assert list(rows) == list(TABLE2_BASELINES)
    assert rows["random"]["gap_closed"] == 0.0 and rows["random"]["gap_closed_std"] == 0.0
    assert rows["brute_force"]["gap_closed"] == 1.0 and rows["brute_force"]["gap_closed_std"] == 0.0
    for seeds in t2.per_seed.values():  # per seed too, not only on average
        assert len(seeds) == 2
    assert [m["gap_closed"] for m in t2.per_seed["random"]] == [0.0, 0.0]
    assert [m["gap_closed"] for m in t2.per_seed["brute_force"]] == [1.0, 1.0]
    for row in t2.rows:
        assert row["seeds"] == 2 and row["clips"] == 2
        for metric in TABLE2_METRICS:
            per_seed = [m[metric] for m in t2.per_seed[row["policy"]]]
            assert row[metric] == pytest.approx(np.mean(per_seed))
            assert row[f"{metric}_std"] == pytest.approx(np.std(per_seed, ddof=1))
        assert row["perceptual_loss"] >= rows["brute_force"]["perceptual_loss"] - 1e-6


def test_table2_coverage_valid_rate_and_details(t2, clips_by_seed) -> None:  # type: ignore[no-untyped-def]
    first = clips_by_seed[0]
    runs = t2.runs
    for name, run in runs.items():
        assert run.choices.shape == (2, T, 2) and run.coverage.shape == (2, T)
        # the coverage the loop reports is the oracle's coverage of the chosen pair
        for b, clip in enumerate(first):
            for t in range(T):
                i, j = run.choices[b, t]
                assert run.coverage[b, t] == pytest.approx(clip.oracle.coverage[t, i, j])
        # no policy's chosen pair covers more of a target's holes than the oracle's best pair
        assert np.all(runs["oracle_best"].coverage >= run.coverage - 1e-6), name
        seed0 = t2.per_seed[name][0]
        assert seed0["valid_rate"] == pytest.approx(np.mean(run.coverage == 1.0))
        assert seed0["coverage"] == pytest.approx(run.coverage.mean())
        assert t2.samples[name].shape == (T, S, S, 3) and t2.samples[name].dtype == np.uint8
    assert t2.sample_clip is first[0]
    np.testing.assert_array_equal(t2.choices["sequential"][0, 3], [1, 2])  # t−2, t−1


def test_table2_without_reference_rows_has_no_gap(clips_by_seed, net, perceptual) -> None:  # type: ignore[no-untyped-def]
    res = table2(
        {0: clips_by_seed[0][:1]},
        {"sequential": lambda s: make_baseline("sequential", s)},
        net,
        perceptual,
        None,
        cell=CELL,
    )
    (row,) = res.rows
    assert math.isnan(row["gap_closed"]) and math.isnan(row["flow_recovery"]) and row["seeds"] == 1
    report = build_report({"perceptual": "ssim", "flow": "none"}, [], res.rows, {})
    assert report["table2"][0]["gap_closed"] is None  # NaN is written as JSON null


# ----------------------------------------------------------------------------- report.json, Markdown


def _check_contract(report: dict) -> None:  # type: ignore[type-arg]
    """The report.json contract of DESIGN.md, spelled out independently of validate_report."""
    assert set(report) >= {"metric", "table1", "table2", "timing"}
    assert isinstance(report["metric"]["perceptual"], str) and isinstance(report["metric"]["flow"], str)
    for row in report["table1"]:
        assert row["policy"] in ("best", "random", "worst", "brute_force")
        assert isinstance(row["loss_mean"], float) and isinstance(row["loss_std"], float)
        assert isinstance(row["n_frames"], int)
    for row in report["table2"]:
        assert isinstance(row["policy"], str) and isinstance(row["seeds"], int)
        for key in ("perceptual_loss", "flow_recovery", "psnr", "ssim", "gap_closed"):
            assert row[key] is None or isinstance(row[key], float), key
            assert f"{key}_std" in row
    assert all(isinstance(v, float) for v in report["timing"].values())


def test_write_report_json_contract(tmp_path: Path, t2, clips_by_seed, net, perceptual) -> None:  # type: ignore[no-untyped-def]
    rows1 = table1(clips_by_seed[0], net, perceptual, cell=CELL, runs=t2.runs)
    path = tmp_path / "report.json"
    written = write_report_json(
        path,
        {"perceptual": "ssim", "flow": "dis"},
        rows1,
        t2.rows,
        {"eval": 1},
        {"table1_peers": [], "datasets": {"clips": np.int64(2)}},
    )
    on_disk = json.loads(path.read_text())
    assert on_disk == written
    _check_contract(on_disk)
    assert on_disk["datasets"]["clips"] == 2 and on_disk["timing"] == {"eval": 1.0}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]  # atomic: no temp file left
    with pytest.raises(ValueError, match="overwrite"):
        build_report(on_disk["metric"], rows1, t2.rows, {}, {"table2": []})
    broken = dict(on_disk, table1=[{"policy": "best", "loss_std": 0.1, "n_frames": 3}])
    with pytest.raises(ValueError, match="loss_mean"):
        validate_report(broken)
    with pytest.raises(ValueError, match="policy"):
        validate_report(dict(on_disk, table1=[dict(on_disk["table1"][0], policy="oracle")]))


def test_markdown_tables(t2) -> None:  # type: ignore[no-untyped-def]
    md = markdown_table2(t2.rows)
    lines = md.strip().splitlines()
    assert len(lines) == len(t2.rows) + 2
    row = next(r for r in t2.rows if r["policy"] == "stride")
    line = next(x for x in lines if x.startswith("| stride"))
    assert f"{row['perceptual_loss']:.4f} ± {row['perceptual_loss_std']:.4f}" in line
    one = [dict(row, seeds=1)]
    assert "±" not in markdown_table2(one).splitlines()[2]  # a single seed has no spread to show
    t1 = markdown_table1(
        [
            {
                "policy": "best",
                "loss_mean": 0.25,
                "loss_std": 0.5,
                "n_frames": 7,
                "ci95": None,
                "hole_psnr": 20.0,
                "hole_ssim": 0.5,
            }
        ]
    )
    assert "| best | 0.2500 ± 0.5000 | — | 7 | 20.00 | 0.5000 |" in t1


def test_combine_seed_reports(tmp_path: Path) -> None:
    def report(loss: float, gap: float) -> dict:  # type: ignore[type-arg]
        t2row = {
            "policy": "imitation",
            "perceptual_loss": loss,
            "flow_recovery": 0.5,
            "psnr": 20.0,
            "ssim": 0.5,
            "gap_closed": gap,
            "coverage": 0.9,
            "valid_rate": 0.5,
            "seeds": 1,
        }
        t1row = {
            "policy": "best",
            "loss_mean": loss,
            "loss_std": 0.0,
            "n_frames": 4,
            "hole_psnr": 20.0,
            "hole_ssim": 0.5,
        }
        return build_report({"perceptual": "ssim", "flow": "dis"}, [t1row], [t2row], {"eval": 2.0})

    combined = combine_seed_reports([report(0.2, 0.1), report(0.4, 0.3)], tmp_path)
    (row,) = combined["table2"]
    assert row["perceptual_loss"] == pytest.approx(0.3) and row["gap_closed"] == pytest.approx(0.2)
    assert row["perceptual_loss_std"] == pytest.approx(np.std([0.2, 0.4], ddof=1)) and row["seeds"] == 2
    assert combined["table1"][0]["n_frames"] == 8 and combined["timing"] == {"eval": 4.0}
    assert json.loads((tmp_path / "report.json").read_text()) == combined
    assert (tmp_path / "report.md").is_file() and (tmp_path / "report.html").is_file()
    assert "datasets" not in combined and "seed_reports" not in combined

    # runs of two training seeds evaluated on the same clips (rovr reproduce): the 4 frames count once
    reports, folders = [], []
    for i, (loss, spread) in enumerate(((0.2, 0.02), (0.4, 0.04))):
        r = report(loss, 0.1)
        r["table1"][0]["loss_std"] = spread
        r["datasets"] = {"source": "videos (test split)", "clips": 1, "frames": 4, "seeds": [0]}
        r["policies"] = {"local": {"imitation": "local_imitation.safetensors"}}  # each run's own file
        folders.append(tmp_path / f"seed_{i}" / "eval")
        folders[-1].mkdir(parents=True)
        reports.append(r)
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(folders[0] / "fig3_heatmaps.png")
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(folders[0] / "fig6_imitation.png")
    out = tmp_path / "combined"
    combined = combine_seed_reports(reports, out, folders)
    (t1,) = combined["table1"]
    values = np.concatenate([m + s * np.array([-1.5, -0.5, 0.5, 1.5]) / np.std([-1.5, -0.5, 0.5, 1.5], ddof=1)
                             for m, s in ((0.2, 0.02), (0.4, 0.04))])  # fmt: skip
    assert t1["loss_mean"] == pytest.approx(values.mean()) and t1["loss_std"] == pytest.approx(
        values.std(ddof=1)
    )
    assert t1["n_frames"] == 4
    assert t1["ci95"] == pytest.approx(3.182446305 * values.std(ddof=1) / 2)  # t(0.975, 3) · std / √4
    assert combined["datasets"] == reports[0]["datasets"]
    assert combined["seed_reports"] == ["../seed_0/eval/report.html", "../seed_1/eval/report.html"]
    page = (out / "report.html").read_text()
    assert page.count("<img") == 2 and "Fig. 3" in page and "href='../seed_1/eval/report.html'" in page
    assert "Mean ± std over 2 training seeds" in page
    md = (out / "report.md").read_text()
    assert "over 2 training seeds" in md and "| training seeds |" in md
    assert md.count("weight-free fallback") == 1 and "Data: videos (test split): 1 clip of 4 frames" in md
    assert "`imitation` runs with the Γ trained alongside it during PPG" in md  # said for every run
    assert combined["policies"]["local"] == {"imitation": "local_imitation.safetensors"}
    # runs whose rows used different Γs: their means mix them, and the report says so
    reports[1]["policies"] = {"local": {}}
    mixed = combine_seed_reports(reports, tmp_path / "mixed", folders)
    assert "local" not in mixed["policies"]
    assert "the means here mix them" in (tmp_path / "mixed" / "report.md").read_text()
    assert "the means here mix them" in (tmp_path / "mixed" / "report.html").read_text()


# ----------------------------------------------------------------------------- rovr evaluate


def _tiny_run(root: Path) -> RunConfig:
    from rovr.train.common import prepare_run, save_model

    cfg = RunConfig(
        data=DataConfig(num_videos=4, frames=T, size=16, max_clips_per_video=1, test_fraction=0.25),
        corruption=CorruptionConfig(min_valid_pairs=0),
        metric=MetricConfig(perceptual="ssim", flow="dis"),
        local=LocalNetConfig(base_channels=8, depth=2),
        eval=EvalConfig(seeds=1, max_clips=1),
    )
    run = prepare_run(cfg, root)
    torch.manual_seed(0)
    save_model(run.local, LocalNet(cfg.local, cfg.k), cfg)
    return cfg


def test_evaluate_run_end_to_end(tmp_path: Path) -> None:
    run = tmp_path / "run"
    _tiny_run(run)
    out = tmp_path / "eval"
    ev = evaluate_run(run, out, seeds=2)
    report = json.loads((out / "report.json").read_text())
    _check_contract(report)
    assert report == ev.report
    assert report["metric"] == {"perceptual": "ssim", "flow": "dis"}
    assert [r["policy"] for r in report["table1"]] == list(TABLE1_POLICIES)
    assert [r["policy"] for r in report["table2"]] == list(TABLE2_BASELINES)
    assert all(r["seeds"] == 2 for r in report["table2"])
    assert report["policies"]["missing"] == [
        "rovr_flow_warm",
        "rovr_flow_cold",
        "rovr_noflow_warm",
        "imitation",
    ]
    assert report["datasets"]["clips"] == 1 and "test split" in report["datasets"]["source"]
    assert [r["policy"] for r in report["table1_peers"]] == ["cv2_inpaint", "copy_best_pair"]
    for name in (
        "report.md",
        "report.html",
        "fig3_heatmaps.png",
        "fig1_masked.png",
        "before_after.mp4",
        "fig6_sequential.png",
        "fig6_oracle_best.png",
    ):
        assert (out / name).is_file(), name
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # no temp files left
    assert "imitation" in (out / "report.md").read_text()  # the missing policies are named
    assert ev.files["report_html"] == out / "report.html" and ev.files["fig1"] == out / "fig1_masked.png"

    # interrupted while its outputs are written: the earlier report is left whole, not mixed
    before = {p.name: (p.stat().st_ino, p.read_bytes()) for p in out.iterdir()}

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    with pytest.MonkeyPatch.context() as m:
        m.setattr("rovr.report.write_html", interrupted)
        with pytest.raises(KeyboardInterrupt):
            evaluate_run(run, out, seeds=1)
    assert {p.name: (p.stat().st_ino, p.read_bytes()) for p in out.iterdir()} == before  # not even rewritten


def test_evaluate_cli_no_progress_drops_only_the_row_lines(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from rovr.cli import main

    _tiny_run(tmp_path / "run")
    for flag, rows in (((), 4), (("--no-progress",), 0)):
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="rovr"):
            args = ["evaluate", "--checkpoint", str(tmp_path / "run"), "--out", str(tmp_path / "eval")]
            assert main([*args, "--no-brute-force", "--max-clips", "1", *flag]) == 0
        lines = [r.getMessage() for r in caplog.records]
        assert sum(line.startswith("table 2: ") for line in lines) >= rows, (flag, lines)
        if flag:
            assert not any(line.startswith("table 2: ") for line in lines), lines
            assert any(line.startswith("evaluation written to") for line in lines), lines


def test_evaluate_run_with_choosers_of_ones_own(tmp_path: Path) -> None:
    """A researcher's chooser is a row like any other: one that picks what `sequential` picks scores
    exactly its numbers, as an object and as a function of the seed; a taken name is refused first."""
    from rovr.conditioning import Sequential

    class Mine(Sequential):
        name = "mine"

    _tiny_run(tmp_path / "run")
    with pytest.raises(RovrError, match="chooser name 'nearest' is a row of the table already"):
        evaluate_run(tmp_path / "run", tmp_path / "eval", choosers={"nearest": Mine()})
    with pytest.raises(RovrError, match="chooser 'x' is neither a Chooser"):
        evaluate_run(tmp_path / "run", tmp_path / "eval", choosers={"x": 3})  # type: ignore[dict-item]
    assert not (tmp_path / "eval").exists()
    ev = evaluate_run(
        tmp_path / "run",
        tmp_path / "eval",
        seeds=2,
        brute_force=False,
        choosers={"mine": Mine(), "mine_seeded": lambda seed: Mine()},
    )
    rows = {r["policy"]: r for r in ev.report["table2"]}
    for name in ("mine", "mine_seeded"):
        for key in ("perceptual_loss", "flow_recovery", "psnr", "coverage"):
            assert rows[name][key] == pytest.approx(rows["sequential"][key]), (name, key)
    assert (tmp_path / "eval" / "fig6_mine.png").is_file()


class _Rule:
    """A chooser returning ``frames(t, n)`` for every episode, as the type ``kind`` (test helper)."""

    name = "rule"

    def __init__(self, frames: Callable[[int, int], Any], kind: str = "tensor") -> None:
        self.frames, self.kind = frames, kind

    def reset(self, episodes: Any) -> None:
        pass

    def choose(self, episodes: Any) -> Any:
        rows = [self.frames(episodes.t, episodes.num_frames)] * episodes.batch_size
        if self.kind == "float":
            return torch.tensor(rows, dtype=torch.float32) + 0.7
        if self.kind == "numpy":
            return np.array(rows)
        return rows if self.kind == "list" else torch.tensor(rows)


def _near(t: int, n: int) -> list[int]:
    return sorted([t - 1, t + 1] if 0 < t < n - 1 else ([1, 2] if t == 0 else [n - 3, n - 2]))


def _no_seed() -> _Rule:
    return _Rule(_near)


@pytest.mark.parametrize(
    ("chooser", "message"),
    [
        (_Rule(_near, "float"), "chooser 'mine' at target 0: conditioning frames must be integer frame indices, got float32"),
        (_Rule(lambda t, n: [t, (t + 1) % n]), "chooser 'mine' at target 0: the target frame 0 cannot condition on itself"),
        (_Rule(lambda t, n: [1, 1]), "chooser 'mine' at target 0: conditioning frames must be distinct"),
        (_Rule(lambda t, n: [1, 2, 3]), r"chooser 'mine' at target 0: expected conditioning frames of shape \(1, 2\)"),
        (_Rule(lambda t, n: 1 / 0), "chooser 'mine' at target 0: ZeroDivisionError"),
        (_Rule, "chooser 'mine' is the class _Rule, not a chooser object; pass _Rule\\(\\)"),
        (_no_seed, "chooser 'mine': calling it with the corruption seed failed \\(TypeError"),
        (lambda seed: None, "chooser 'mine' \\(called with seed 0\\) returned None is not a Chooser"),
        ([_Rule(_near)], "choosers must map row names to choosers"),
    ],
)  # fmt: skip
def test_a_broken_chooser_is_one_line_before_any_work(tmp_path: Path, chooser: Any, message: str) -> None:
    """A researcher's mistake is said in one line naming the row, before Table 2 (brute force included)
    runs and before the output folder is made."""
    _tiny_run(tmp_path / "run")
    rows = chooser if isinstance(chooser, list) else {"mine": chooser}
    started = time.perf_counter()
    with pytest.raises(RovrError, match=message) as err:
        evaluate_run(tmp_path / "run", tmp_path / "eval", choosers=rows)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "eval").exists() and time.perf_counter() - started < 60


@pytest.mark.parametrize("kind", ["numpy", "list"])
def test_frames_as_numpy_or_lists_and_in_any_order(tmp_path: Path, kind: str) -> None:
    """Integer frames in a NumPy array or nested lists are fine; a pair is a set (Γ sees it ascending)."""
    _tiny_run(tmp_path / "run")
    rows = {"mine": _Rule(_near, kind), "reversed": _Rule(lambda t, n: _near(t, n)[::-1])}
    ev = evaluate_run(tmp_path / "run", tmp_path / "eval", brute_force=False, choosers=rows)
    table = {r["policy"]: r for r in ev.report["table2"]}
    for name in rows:
        assert table[name]["perceptual_loss"] == pytest.approx(table["nearest"]["perceptual_loss"]), name


def test_the_readme_chooser_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """README "Your own conditioning rule", as printed, on a tiny run and video in place of runs/demo."""
    from rovr.video.io import write_video

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    code = readme.split("## Your own conditioning rule", 1)[1].split("```python", 1)[1].split("```", 1)[0]
    cfg = _tiny_run(tmp_path / "runs" / "demo")
    frames = np.random.default_rng(0).integers(0, 256, (T, 16, 16, 3), dtype=np.uint8)
    write_video(tmp_path / "clip.mp4", frames, fps=8)
    (tmp_path / "clip_masks").mkdir()
    hole = np.zeros((16, 16), np.uint8)
    hole[4:9, 5:10] = 255
    for i in range(T):
        Image.fromarray(hole).save(tmp_path / "clip_masks" / f"{i:05d}.png")
    assert cfg.eval.max_clips == 1  # the tiny run keeps its evaluation short
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {})
    report = json.loads((tmp_path / "runs" / "demo" / "eval_mine" / "report.json").read_text())
    assert "previous_and_fifth" in [r["policy"] for r in report["table2"]]
    assert (tmp_path / "clip_repaired.mp4").is_file()


def test_a_test_split_that_now_holds_a_trained_video_is_refused(tmp_path: Path) -> None:
    """Videos removed from (or added to) the data folder after training move the hash split: evaluating
    the run's "test split" would then score a video it trained on."""
    import dataclasses

    from rovr.checkpoint import atomic_write_json
    from rovr.data.clips import video_splits
    from rovr.video.io import write_video

    data = tmp_path / "videos"
    rng = np.random.default_rng(0)
    for name in ("a", "b", "c", "d"):
        write_video(data / f"{name}.mp4", rng.integers(0, 256, (T, 16, 16, 3), dtype=np.uint8), fps=8)
    cfg = _tiny_run(tmp_path / "run")
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, source=str(data), val_fraction=0.0))
    then = video_splits(cfg.data)
    atomic_write_json(tmp_path / "run" / "splits.json", then)  # as Γ's stage records it
    (data / then["test"][0]).unlink()  # the held-out video is gone: another takes its place
    now = video_splits(cfg.data)
    assert now["test"] and now["test"][0] in then["train"]
    with pytest.raises(RovrError, match=f"test split now holds {now['test'][0]}, which the run trained on"):
        evaluate_run(tmp_path / "run", tmp_path / "eval", cfg=cfg)
    assert not (tmp_path / "eval").exists()
    (data / then["test"][0]).symlink_to(data / now["test"][0])  # back as it was: evaluated again
    evaluate_run(tmp_path / "run", tmp_path / "eval", cfg=cfg, brute_force=False, max_clips=1)


def test_data_line_names_the_videos_and_says_how_many_it_leaves_out() -> None:
    data = {"source": "x", "clips": 12, "frames": 20, "width": 64, "height": 64, "seeds": [0]}
    assert data_line({"datasets": data}) == "Data: x: 12 clips of 20 frames, 64×64, corruption seeds [0]."
    names = [f"v{i}" for i in range(10)]
    line = data_line({"datasets": {**data, "videos": names}})
    assert line.startswith("Data: x: 12 clips of 10 videos (v0, v1, v2, v3, v4, v5, v6, v7 and 2 more) of 20")
    assert data_line({"datasets": {**data, "videos": ["a"]}}).startswith(
        "Data: x: 12 clips of 1 video (a) of"
    )
    assert data_line({}) == ""
    assert data_line({"datasets": data, "config": {"condition_on": "observed"}}).endswith(
        "seeds [0]. Γ and the policies saw only the observed pixels of every frame, repaired or not "
        "(`condition_on: observed`)."
    )
    assert "`condition_on: current`" in data_line({"datasets": data, "config": {"condition_on": "current"}})
    assert "`condition_on: observed`" in data_line(
        {"datasets": data, "config": {"seed": 0}}
    )  # recorded before it


def test_an_out_that_is_a_file_is_refused_before_the_data_is_read(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from rovr.video.io import write_video

    _tiny_run(tmp_path / "run")
    write_video(tmp_path / "videos" / "a.mp4", np.zeros((T, 16, 16, 3), np.uint8), fps=8)
    (tmp_path / "eval").write_text("mine")
    with (
        caplog.at_level(logging.INFO),
        pytest.raises(RovrError, match="is a file; choose a folder with --out"),
    ):
        evaluate_run(tmp_path / "run", tmp_path / "eval", data=tmp_path / "videos")
    assert not any("found" in r.getMessage() for r in caplog.records)  # nothing said about the data first
    assert (tmp_path / "eval").read_text() == "mine"


def test_evaluate_run_on_a_user_folder_uses_every_video(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rovr.video.io import write_video

    run = tmp_path / "run"
    _tiny_run(run)
    data = tmp_path / "videos"
    rng = np.random.default_rng(0)
    for name in ("a", "b", "c"):
        write_video(data / f"{name}.mp4", rng.integers(0, 256, (T, 16, 16, 3), dtype=np.uint8), fps=8)
    monkeypatch.chdir(tmp_path)  # relative paths are stored whole: the report is read from anywhere
    ev = evaluate_run("run", "eval", data="videos", max_clips=0, brute_force=False)
    assert ev.report["datasets"]["clips"] == 3
    assert ev.report["datasets"]["source"] == f"{data.resolve()} (all videos)"
    assert ev.report["run"] == str(run.resolve())
    md = (tmp_path / "eval" / "report.md").read_text()
    assert ev.report["datasets"]["videos"] == ["a.mp4", "b.mp4", "c.mp4"]  # which videos were scored
    assert ev.report["datasets"]["clip_starts"] == [["a.mp4", 0], ["b.mp4", 0], ["c.mp4", 0]]
    assert (
        f"Data: {data.resolve()} (all videos): 3 clips of 3 videos (a.mp4, b.mp4, c.mp4) of {T} frames" in md
    )
    assert "first corruption seed's masks" in md and "Gap closed needs the brute-force row" in md
    assert "brute_force" not in [r["policy"] for r in ev.report["table2"]]
    assert ev.report["table2"][0]["gap_closed"] is None  # no brute-force row: no gap to close


def test_evaluate_run_errors(tmp_path: Path) -> None:
    with pytest.raises(RovrError, match="does not exist"):
        evaluate_run(tmp_path / "nothing", tmp_path / "eval")
    (tmp_path / "empty").mkdir()
    with pytest.raises(RovrError, match="rovr pretrain-local") as err:
        evaluate_run(tmp_path / "empty", tmp_path / "eval")
    assert "\n" not in str(err.value)
    _tiny_run(tmp_path / "run")
    with pytest.raises(RovrError, match="missing_folder"):
        evaluate_run(tmp_path / "run", tmp_path / "eval", data=tmp_path / "missing_folder")
    # a folder with the user's own report.md is not replaced; nor is --out put inside the data
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "report.md").write_text("my notes")
    with pytest.raises(RovrError, match="did not write"):
        evaluate_run(tmp_path / "run", mine)
    assert [p.name for p in mine.iterdir()] == ["report.md"]
    data = tmp_path / "videos"
    data.mkdir()
    with pytest.raises(RovrError, match="inside the data folder"):
        evaluate_run(tmp_path / "run", data / "eval", data=data)
    assert list(data.iterdir()) == []
    cfg = read_run_config(tmp_path / "run" / "config.yaml")  # a test split without videos
    cfg.data.test_fraction = 0
    with pytest.raises(
        RovrError, match="test split of .* holds no videos .*data.test_fraction=0.*--data DIR"
    ):
        evaluate_run(tmp_path / "run", tmp_path / "eval", cfg=cfg)
    (tmp_path / "run" / "config.yaml").write_text("")  # emptied by hand: not the defaults' shape error
    with pytest.raises(RovrError, match=r"config.yaml' is empty; put back the settings"):
        evaluate_run(tmp_path / "run", tmp_path / "eval")


def test_evaluate_run_with_a_learned_policy(tmp_path: Path) -> None:
    from rovr.models.policy import build_actor
    from rovr.train.common import RunDir, save_model

    cfg = _tiny_run(tmp_path / "run")
    torch.manual_seed(0)
    save_model(RunDir(tmp_path / "run").policy("imitation"), build_actor(cfg.policy, cfg.data.frames), cfg)
    ev = evaluate_run(tmp_path / "run", tmp_path / "eval", brute_force=False)
    assert [r["policy"] for r in ev.report["table2"]][0] == "imitation"
    assert "imitation" not in ev.report["policies"]["missing"]
    assert (tmp_path / "eval" / "fig6_imitation.png").is_file()


def test_evaluate_run_uses_the_gamma_trained_alongside_a_policy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With local_<policy>.safetensors (PPG with ppg.train_local) that policy's rows use it, the others
    and Table 1 stage 1's Γ; the report says so."""
    from rovr.models.policy import build_actor
    from rovr.train.common import RunDir, save_model

    cfg = _tiny_run(tmp_path / "run")
    run = RunDir(tmp_path / "run")
    torch.manual_seed(0)
    actor = build_actor(cfg.policy, cfg.data.frames)
    for name in ("imitation", "rovr_flow_warm"):  # the same weights: only Γ can tell the rows apart
        save_model(run.policy(name), actor, cfg)

    def losses(out: str) -> tuple[dict[str, float], dict[str, Any]]:
        report = evaluate_run(run.root, tmp_path / out, brute_force=False).report
        return {r["policy"]: r["perceptual_loss"] for r in report["table2"]}, report

    plain, report = losses("plain")
    assert plain["rovr_flow_warm"] == plain["imitation"] and report["policies"]["local"] == {}
    assert "local" not in report  # no --local
    torch.manual_seed(1)
    save_model(run.tuned_local("rovr_flow_warm"), LocalNet(cfg.local, cfg.k), cfg, stage="ppg")
    tuned, report = losses("tuned")
    assert tuned["imitation"] == plain["imitation"] and tuned["rovr_flow_warm"] != plain["rovr_flow_warm"]
    # the same-Γ control: imitation's choices with the tuned Γ, beside the PPG row (same weights here)
    assert tuned["imitation_tuned_local"] == tuned["rovr_flow_warm"]
    assert [r["policy"] for r in report["table2"]][:3] == [
        "rovr_flow_warm",
        "imitation",
        "imitation_tuned_local",
    ]
    assert report["policies"]["local"] == {
        "rovr_flow_warm": "local_rovr_flow_warm.safetensors",
        "imitation_tuned_local": "local_rovr_flow_warm.safetensors",
    }
    md = (tmp_path / "tuned" / "report.md").read_text()
    assert "`rovr_flow_warm` runs with the Γ trained alongside it during PPG (`local_rovr_flow_warm" in md
    assert (
        "`imitation_tuned_local` is the imitation policy run with `rovr_flow_warm`'s Γ "
        "(`local_rovr_flow_warm.safetensors`): the same-Γ control" in md
    )
    assert md.count("Table 1 and every other row use stage 1's Γ") == 1
    assert "the same-Γ control" in (tmp_path / "tuned" / "report.html").read_text()
    assert not (tmp_path / "tuned" / "fig6_imitation_tuned_local.png").exists()
    with pytest.raises(RovrError, match="'imitation_tuned_local' is a row of the table already"):
        evaluate_run(
            run.root, tmp_path / "mine", choosers={"imitation_tuned_local": make_baseline("nearest", 0)}
        )
    # --local: one Γ under every row (the same-Γ control); both rows are the tuned-Γ one again
    control = evaluate_run(
        run.root, tmp_path / "control", brute_force=False, local="local_rovr_flow_warm.safetensors"
    ).report
    rows = {r["policy"]: r["perceptual_loss"] for r in control["table2"]}
    assert rows["imitation"] == rows["rovr_flow_warm"] == tuned["rovr_flow_warm"]
    assert control["policies"]["local"] == {} and control["local"].endswith(
        "local_rovr_flow_warm.safetensors"
    )
    assert "(`--local`)" in (tmp_path / "control" / "report.md").read_text()
    # the run's file wins over a file of that name in the working directory, and is stored whole
    monkeypatch.chdir(tmp_path)
    save_model(tmp_path / "local_rovr_flow_warm.safetensors", LocalNet(cfg.local, cfg.k), cfg, stage="x")
    again = evaluate_run(
        run.root, tmp_path / "again", brute_force=False, local="local_rovr_flow_warm.safetensors"
    ).report
    assert again["table2"] == control["table2"]
    assert again["local"] == str((run.root / "local_rovr_flow_warm.safetensors").resolve())
    with pytest.raises(RovrError, match="--local 'nope.safetensors' is neither") as err:
        evaluate_run(run.root, tmp_path / "bad", local="nope.safetensors")
    assert "\n" not in str(err.value)


def test_a_policy_trained_from_a_since_retrained_checkpoint_is_said(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from rovr.checkpoint import fingerprint
    from rovr.models.policy import build_actor
    from rovr.train.common import RunDir, save_model

    cfg = _tiny_run(tmp_path / "run")
    run = RunDir(tmp_path / "run")
    actor = build_actor(cfg.policy, cfg.data.frames)
    save_model(run.policy("imitation"), actor, cfg, trained_from={"local": fingerprint(run.local)})
    observed = dataclasses.replace(cfg, condition_on="observed")  # and in the other MDP
    save_model(
        run.policy("rovr_flow_warm"), actor, observed, trained_from={"imitation": "not what it is now"}
    )
    import fcntl

    held = os.open(run.root, os.O_RDONLY)
    fcntl.flock(held, fcntl.LOCK_EX)  # as a `rovr train` still running there holds it
    try:
        with caplog.at_level(logging.WARNING, logger="rovr"):
            evaluate_run(run.root, tmp_path / "eval", brute_force=False)
    finally:
        os.close(held)
    assert "is being trained by another rovr command; this report evaluates the checkpoints" in caplog.text
    said = [r.getMessage() for r in caplog.records if "retrained since" in r.getMessage()]
    assert said == [
        "rovr_flow_warm was trained from another imitation than the run holds now (retrained since); its "
        "rows (and those with its Γ) mix old and new work: retrain it with `rovr train-policy --restart`"
    ]
    said = [r.getMessage() for r in caplog.records if "MDP" in r.getMessage()]
    assert said == [
        "rovr_flow_warm was trained with condition_on=observed and is evaluated with condition_on=current "
        "(the run's config.yaml): its rows measure it in an MDP it was not trained in"
    ]


def test_evaluate_run_skips_an_unreadable_policy(tmp_path: Path) -> None:
    _tiny_run(tmp_path / "run")
    (tmp_path / "run" / "policy_rovr_flow_warm.safetensors").write_bytes(b"not a checkpoint")
    ev = evaluate_run(tmp_path / "run", tmp_path / "eval", brute_force=False)
    assert list(ev.report["policies"]["unusable"]) == ["rovr_flow_warm"]
    assert "rovr_flow_warm" not in ev.report["policies"]["missing"]
    assert "rovr_flow_warm" not in [r["policy"] for r in ev.report["table2"]]
    assert "Skipped `rovr_flow_warm`" in (tmp_path / "eval" / "report.md").read_text()


def test_a_new_report_replaces_the_earlier_ones_files(tmp_path: Path) -> None:
    """A policy gone from the run: its Fig. 6 grid of the earlier report in --out goes too (it stayed,
    beside a report without that policy); files rovr did not write stay."""
    from rovr.models.policy import build_actor
    from rovr.train.common import RunDir, save_model

    cfg = _tiny_run(tmp_path / "run")
    for name in ("imitation", "rovr_flow_warm"):
        save_model(RunDir(tmp_path / "run").policy(name), build_actor(cfg.policy, cfg.data.frames), cfg)
    evaluate_run(tmp_path / "run", tmp_path / "eval", brute_force=False)
    assert (tmp_path / "eval" / "fig6_rovr_flow_warm.png").is_file()
    (tmp_path / "eval" / "notes.txt").write_text("mine")
    (tmp_path / "run" / "policy_rovr_flow_warm.safetensors").unlink()
    ev = evaluate_run(tmp_path / "run", tmp_path / "eval", brute_force=False)
    assert "rovr_flow_warm" in ev.report["policies"]["missing"]
    assert not (tmp_path / "eval" / "fig6_rovr_flow_warm.png").exists()
    assert (tmp_path / "eval" / "fig6_imitation.png").is_file()
    assert (tmp_path / "eval" / "notes.txt").read_text() == "mine"


def test_copy_pair_costs_by_hand() -> None:
    """Target 0 of a 3-frame clip: its 2 hole pixels; frame 1 shows one, frame 2 the other, neither both."""
    from rovr.conditioning import CopyOracle, copy_pair_costs

    T, H, W = 4, 2, 3
    original = np.zeros((T, H, W, 3), np.uint8)
    original[0] = 100
    original[1] = 120  # frame 1 differs by 20 everywhere
    original[2] = 100  # frame 2 equals the target
    original[3] = 100
    masks = np.zeros((T, H, W), bool)
    masks[0, 0, :2] = True  # target holes at (0, 0) and (0, 1)
    masks[1, 0, 1] = True  # frame 1 shows (0, 0) only
    masks[2, 0, 0] = True  # frame 2 shows (0, 1) only
    masks[3, 0, :2] = True  # frame 3 shows neither
    frames = original.copy()
    frames[masks] = 0
    clip = Corrupted(original=original, frames=frames, masks=masks)
    net = LocalNet(LocalNetConfig(base_channels=8, depth=1, align=False), 2)
    ep = Episodes([clip], net, None, k=2, cell=8)
    cost = copy_pair_costs(ep)[0].double()
    d1 = 3 * (20 / 255) ** 2  # squared error (3 channels) of copying frame 1's pixel
    mu = 100 / 255  # mean colour of the target's visible pixels: the fill where no frame shows a hole
    fill = 3 * (mu - 100 / 255) ** 2  # = 0 here
    assert cost[1, 2].item() == pytest.approx((d1 + 0.0) / 2)  # (0,0) from frame 1, (0,1) from frame 2
    assert cost[2, 3].item() == pytest.approx((fill + 0.0) / 2)  # (0,0) from nobody, (0,1) from frame 2
    assert cost[1, 3].item() == pytest.approx((d1 + fill) / 2)
    assert (
        torch.equal(cost, cost.T) and bool(torch.isinf(cost[0]).all()) and bool(torch.isinf(cost[:, 0]).all())
    )
    assert CopyOracle().choose(ep).tolist() == [[2, 3]]  # cheaper than the pair that shows both holes
    masks[0] = False  # a target without holes: any pair costs 0, never a frame with itself
    clip0 = Corrupted(original=original, frames=original.copy(), masks=masks)
    cost0 = copy_pair_costs(Episodes([clip0], net, None, k=2, cell=8))[0]
    assert bool(torch.isinf(cost0.diagonal()).all()) and float(cost0[1, 2]) == 0.0
    pair = CopyOracle().choose(Episodes([clip0], net, None, k=2, cell=8))[0]
    assert pair[0] != pair[1] and 0 not in pair.tolist()


def test_reproduce_table2_names_seeds_and_combines_parallel_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Seed folders are named by their training seed, so parallel `--seeds 1 --set seed=S` processes into
    one --out write different folders, and each combines every seed evaluated with its settings; a rerun
    trains and evaluates nothing again; a seed of other settings is left out."""
    from rovr import pipeline
    from test_ppg import tiny_config

    out = tmp_path / "t2"
    extra = ("eval.brute_force=false", "eval.max_clips=1", "eval.seeds=1", "ppg.iterations=1", "ppg.n_pi=1")
    first = pipeline.reproduce_table2(tiny_config(*extra), out, seeds=1, progress=False)
    assert first["training_seeds"] == 1 and (out / "seed_0" / "eval" / "report.json").is_file()
    with pytest.raises(
        RovrError, match=r"holds the runs of `rovr reproduce` \(1\): pass one of them, e.g. '.*seed_0'"
    ):
        evaluate_run(out, tmp_path / "e")  # the top folder (it said: train Γ first)
    second = pipeline.reproduce_table2(tiny_config(*extra, "seed=1"), out, seeds=1, progress=False)
    assert second["training_seeds"] == 2 and sorted(second["runs"]) == [
        str(out / "seed_0"),
        str(out / "seed_1"),
    ]
    assert json.loads((out / "report.json").read_text())["training_seeds"] == 2
    # the combined page shows the first seed's figures and links each seed's own report
    assert second["seed_reports"] == ["seed_0/eval/report.html", "seed_1/eval/report.html"]
    assert (
        second["datasets"]["clips"] == 1 and second["table1"][0]["n_frames"] == first["table1"][0]["n_frames"]
    )
    page = (out / "report.html").read_text()
    assert "Fig. 3" in page and "Fig. 6" in page and "href='seed_1/eval/report.html'" in page

    # `rovr evaluate --checkpoint OUT`: every seed's run evaluated again into --out, their own eval
    # folders untouched; the same settings give each seed's own rows, and Table 2 is over the seeds
    from rovr import cli

    own = [(out / f"seed_{s}" / "eval" / "report.json").stat().st_mtime_ns for s in (0, 1)]
    ev = tmp_path / "ev"
    args = ["--max-clips", "1", "--seeds", "1", "--no-brute-force", "--no-progress"]
    assert cli.main(["evaluate", "--checkpoint", str(out), "--out", str(ev), *args]) == 0
    again_ev = json.loads((ev / "report.json").read_text())
    assert again_ev["training_seeds"] == 2 and again_ev["runs"] == [str(out / "seed_0"), str(out / "seed_1")]
    for s in (0, 1):
        mine = json.loads((ev / f"seed_{s}" / "report.json").read_text())["table2"]
        theirs = json.loads((out / f"seed_{s}" / "eval" / "report.json").read_text())["table2"]
        assert [r["perceptual_loss"] for r in mine] == pytest.approx([r["perceptual_loss"] for r in theirs])
    assert [(out / f"seed_{s}" / "eval" / "report.json").stat().st_mtime_ns for s in (0, 1)] == own
    capsys.readouterr()
    assert cli.main(["evaluate", "--checkpoint", str(out), "--out", str(out), *args]) != 0
    err = capsys.readouterr().err.strip()
    assert re.fullmatch(
        r"rovr: error: --out '.*' is the reproduce folder itself .*choose a folder for the report, e.g. '.*'",
        err,
    )

    def no_evaluation(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("an unchanged seed was evaluated again")

    monkeypatch.setattr("rovr.evaluate.evaluate_run", no_evaluation)
    again = pipeline.reproduce_table2(tiny_config(*extra), out, seeds=2, progress=False)
    assert again["table2"] == second["table2"]
    # a seed folder evaluated with other settings is not averaged in
    report = json.loads((out / "seed_1" / "eval" / "report.json").read_text())
    report["config"]["ppg"]["lr"] = 1.0
    (out / "seed_1" / "eval" / "report.json").write_text(json.dumps(report))
    monkeypatch.undo()
    alone = pipeline.reproduce_table2(tiny_config(*extra), out, seeds=1, progress=False)
    assert alone["training_seeds"] == 1


def test_a_policy_on_episodes_of_another_cell_is_one_clear_line() -> None:
    """Episodes default to cell=32; the demo's policy reads 16-px cells: say what to pass, not a shape."""
    from rovr.conditioning import PolicyChooser
    from rovr.models.policy import PolicyConfig, build_actor

    clip = corrupt(np.full((6, 32, 32, 3), 100, np.uint8), CorruptionConfig(min_valid_pairs=0), seed=0)
    net = LocalNet(LocalNetConfig(base_channels=8, depth=1), 2)
    chooser = PolicyChooser(build_actor(PolicyConfig(cell=16, channels=8, hidden=16), 6), "imitation")
    with pytest.raises(
        RovrError, match=r"cells of 16 px .* cell=32; build them with Episodes\(\.\.\., cell="
    ):
        reconstruct(Episodes([clip], net, None, k=2), chooser)
    assert reconstruct(Episodes([clip], net, None, k=2, cell=16), chooser).video.shape[1] == 6


def test_rule_baselines_pick_these_frames_by_hand() -> None:
    """sequential: t−1, t−2 (the start takes later frames); nearest: t−1, t+1 (the ends the two nearest)."""
    from types import SimpleNamespace

    def picks(name: str, t: int, n: int = 6) -> list[int]:
        episodes = SimpleNamespace(t=t, num_frames=n, k=2, batch_size=1, device=torch.device("cpu"))
        return make_baseline(name).choose(episodes)[0].tolist()  # type: ignore[arg-type]

    assert [picks("sequential", t) for t in (0, 1, 3, 5)] == [[1, 2], [0, 2], [1, 2], [3, 4]]
    assert [picks("nearest", t) for t in (0, 1, 3, 5)] == [[1, 2], [0, 2], [2, 4], [3, 4]]

"""The `rovr` command, run as a user would: subprocesses, exit codes, one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ENV = {**os.environ, "PYTHONWARNINGS": "default", "OMP_NUM_THREADS": "1"}


def rovr(*args: str, cwd: Path | None = None, timeout: int = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rovr.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=ENV,
        timeout=timeout,
    )


def assert_one_line_error(res: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert res.returncode != 0
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("rovr: error:")]
    assert len(errors) == 1, res.stderr
    assert "Traceback" not in res.stderr
    for n in needles:
        assert n in errors[0], errors[0]


def test_help_lists_every_command() -> None:
    res = rovr("--help")
    assert res.returncode == 0
    for cmd in (
        "demo",
        "train",
        "pretrain-local",
        "imitate",
        "train-policy",
        "evaluate",
        "restore",
        "reproduce",
    ):
        assert cmd in res.stdout


@pytest.mark.slow
def test_quick_demo_writes_the_report(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    res = rovr("demo", "--quick", "--out", str(out), "--no-progress", "--eval-data", str(tmp_path / "none"))
    # the extra --eval-data folder does not exist: the demo must say so in one line, after the main report
    assert_one_line_error(res, "does not exist")
    for name in ("report.html", "report.json", "report.md", "config.yaml", "local.safetensors",
                 "policy_imitation.safetensors", "policy_rovr_flow_warm.safetensors", "fig3_heatmaps.png",
                 "before_after.mp4"):  # fmt: skip
        assert (out / name).is_file(), name
    report = json.loads((out / "report.json").read_text())
    assert set(report["metric"]) == {"perceptual", "flow"}
    assert {r["policy"] for r in report["table1"]} >= {"best", "random", "worst", "brute_force"}
    names = {r["policy"] for r in report["table2"]}
    assert names >= {
        "rovr_flow_warm",
        "imitation",
        "sequential",
        "random",
        "stride",
        "oracle_best",
        "brute_force",
    }
    for row in report["table2"]:
        for key in ("perceptual_loss", "flow_recovery", "psnr", "ssim", "gap_closed", "seeds"):
            assert key in row
    assert "Table 2" in res.stdout and report["timing"]
    # a second run reuses the finished stages
    again = rovr("demo", "--quick", "--out", str(out), "--no-progress", "--eval-data", str(out / "none"))
    assert "already done" in again.stderr


def test_config_errors_are_one_line(tmp_path: Path) -> None:
    assert_one_line_error(
        rovr("pretrain-local", "--set", "data.frames=2", "--out", str(tmp_path)), "data.frames"
    )
    assert_one_line_error(rovr("pretrain-local", "--set", "bogus.key=1", "--out", str(tmp_path)), "bogus")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed")
    assert_one_line_error(rovr("train", "--config", str(bad), "--out", str(tmp_path)), "bad.yaml")
    assert_one_line_error(rovr("train", "--config", str(tmp_path / "missing.yaml")), "missing.yaml")


def test_missing_stage_names_the_command_to_run(tmp_path: Path) -> None:
    res = rovr(
        "train-policy", "--out", str(tmp_path / "run"), "--set", "data.num_videos=3", "--set", "data.size=32"
    )
    assert_one_line_error(res, "rovr pretrain-local")
    assert_one_line_error(
        rovr("evaluate", "--checkpoint", str(tmp_path / "nope"), "--out", str(tmp_path / "e")), "nope"
    )


def test_unwritable_output_is_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    res = rovr("pretrain-local", "--out", str(blocker / "run"), "--set", "data.num_videos=3")
    assert_one_line_error(res, str(blocker))

"""The `rovr` command, run as a user would: subprocesses, exit codes, one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from rovr.video.io import write_video

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


def test_python_dash_m_rovr_is_the_rovr_command() -> None:
    res = subprocess.run(
        [sys.executable, "-m", "rovr", "--help"], capture_output=True, text=True, env=ENV, timeout=120
    )
    assert res.returncode == 0 and res.stdout.startswith("usage: rovr ")


def test_torchrun_ranks_other_than_0_say_only_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every rank printed its own notices (the VGG fallback, the data) beside rank 0's."""
    import argparse
    import logging

    from rovr.cli import _run

    seen: list[int] = []
    args = argparse.Namespace(
        verbose=False, command="x", handler=lambda a: seen.append(logging.getLogger("rovr").level)
    )
    before = logging.getLogger("rovr").level
    for rank, level in (("1", logging.ERROR), ("0", before)):
        monkeypatch.setenv("RANK", rank)
        assert _run(args) == 0 and seen[-1] == level
        assert logging.getLogger("rovr").level == before  # as it was


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
    res = rovr("demo", "--quick", "--out", str(out), "--no-progress", "--no-eval-data")
    assert res.returncode == 0, res.stderr
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
    # a second run reuses the finished stages; with other time budgets (free keys) it keeps the
    # config.yaml the stages were trained with
    saved = (out / "config.yaml").read_text()
    again = rovr(
        "demo", "--quick", "--out", str(out), "--no-progress", "--no-eval-data", "--set", "ppg.max_minutes=9"
    )
    assert again.returncode == 0 and "already done" in again.stderr
    assert (out / "config.yaml").read_text() == saved


def test_bad_data_is_refused_before_anything_is_written_or_loaded(tmp_path: Path) -> None:
    """A --data / --eval-data folder that is missing or holds no videos, or an --out that cannot be
    made, is one line before any run folder, notice or training — not after minutes of work."""
    empty = tmp_path / "empty"
    empty.mkdir()
    blocker = tmp_path / "file"
    blocker.write_text("x")
    cases = [
        (("train", "--data", str(empty), "--out", str(tmp_path / "t")), "holds no videos"),
        (("pretrain-local", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "t")), "does not exist"),
        (("demo", "--quick", "--eval-data", str(empty), "--out", str(tmp_path / "t")), "holds no videos"),
        (("demo", "--quick", "--eval-data", str(empty), "--no-eval-data", "--out", str(tmp_path / "t")), "contradict"),
        (("demo", "--quick", "--out", str(blocker / "t")), str(blocker)),
        (("reproduce", "table2", "--eval-data", str(tmp_path / "nope"), "--out", str(tmp_path / "t")), "does not exist"),
    ]  # fmt: skip
    if not torch.cuda.is_available():  # a GPU the machine lacks: before config.yaml, Fig. 1 or a stage
        cases += [((*cmd, "--device", "cuda", "--out", str(tmp_path / "t")), "no CUDA GPU")
                  for cmd in (("train",), ("imitate",), ("reproduce", "table2"), ("demo", "--quick"))]  # fmt: skip
    for args, needle in cases:
        res = rovr(*args, "--no-progress")
        assert_one_line_error(res, needle)
        # nothing else was said (no weight notice, no data statistics) and no run folder was left
        assert len([ln for ln in res.stderr.splitlines() if ln.strip()]) == 1, (args, res.stderr)
        assert res.stdout == "", (args, res.stdout)
        assert not (tmp_path / "t").exists(), args


def test_data_too_small_for_a_split_is_refused_before_the_run_folder(tmp_path: Path) -> None:
    """One video: no validation video for Γ's stage. It was refused by the stage, after the run
    folder's config.yaml and splits.json had been written."""
    data = tmp_path / "one"
    write_video(data / "clip.mp4", np.zeros((12, 32, 32, 3), np.uint8), 8.0)
    res = rovr("pretrain-local", "--data", str(data), "--out", str(tmp_path / "t"), "--no-progress",
               "--set", "data.frames=6", "--set", "data.size=32")  # fmt: skip
    assert_one_line_error(res, f"no val clips in '{data}' (1 video of at least data.frames=6 frames")
    assert not (tmp_path / "t").exists()


def test_an_out_inside_the_evaluation_data_is_refused_before_training(tmp_path: Path) -> None:
    """`rovr demo` / `rovr reproduce` with --out inside their --eval-data folder: refused up front (the
    demo wrote its first report there, and reproduce trained every stage, before saying so)."""
    data = tmp_path / "data"
    data.mkdir()
    frames = (np.random.default_rng(0).random((12, 32, 32, 3)) * 255).astype(np.uint8)
    write_video(data / "clip.mp4", frames, 8.0)
    for cmd in (("demo", "--quick"), ("reproduce", "table2")):
        res = rovr(*cmd, "--eval-data", str(data), "--out", str(data / "run"), "--no-progress")
        assert_one_line_error(res, "lies inside the data folder")
        assert res.stdout == "" and not (data / "run").exists(), cmd


def test_evaluate_checks_data_and_out_before_the_work(tmp_path: Path) -> None:
    """`rovr evaluate` refuses a data folder without videos before its notices, and an --out that is
    a file before evaluating anything (it used to find out only when writing the report)."""
    run = tmp_path / "run"
    quick = ("--set", "data.num_videos=3", "--set", "data.size=32", "--set", "data.frames=8",
             "--set", "local.base_channels=8", "--set", "local.depth=2", "--set", "pretrain.steps=1",
             "--set", "pretrain.batch_size=2")  # fmt: skip
    assert rovr("pretrain-local", "--out", str(run), "--no-progress", *quick).returncode == 0
    empty = tmp_path / "empty"
    empty.mkdir()
    res = rovr("evaluate", "--checkpoint", str(run), "--data", str(empty), "--out", str(tmp_path / "e"))
    assert_one_line_error(res, "holds no videos")
    assert len([ln for ln in res.stderr.splitlines() if ln.strip()]) == 1, res.stderr
    blocker = tmp_path / "file"
    blocker.write_text("x")
    res = rovr("evaluate", "--checkpoint", str(run), "--out", str(blocker), "--no-brute-force")
    assert_one_line_error(res, "is a file")
    assert "Table" not in res.stdout
    assert not (tmp_path / "e").exists()


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
    for stage in ("train-policy", "imitate"):
        res = rovr(
            stage, "--out", str(tmp_path / "run"), "--set", "data.num_videos=3", "--set", "data.size=32"
        )
        assert_one_line_error(res, "rovr pretrain-local")
        assert not (tmp_path / "run").exists()  # refused before the run folder was made
    assert_one_line_error(
        rovr("evaluate", "--checkpoint", str(tmp_path / "nope"), "--out", str(tmp_path / "e")), "nope"
    )


def test_unwritable_output_is_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    res = rovr("pretrain-local", "--out", str(blocker / "run"), "--set", "data.num_videos=3")
    assert_one_line_error(res, str(blocker))


def test_reproduce_evaluates_each_run_with_one_corruption_seed_unless_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The demo config's eval.seeds=3 is the demo's; reproduce's ± is over training seeds, so each run
    is evaluated once unless --set eval.seeds=N asks for more (and its report's config says which)."""
    from rovr import cli, pipeline

    seen: list[int] = []

    def fake(cfg, out, **kwargs):  # type: ignore[no-untyped-def]
        seen.append(cfg.eval.seeds)
        return {"table2": []}

    monkeypatch.setattr(pipeline, "reproduce_table2", fake)
    assert cli.main(["reproduce", "table2", "--out", str(tmp_path / "t"), "--no-progress"]) == 0
    assert cli.main(["reproduce", "table2", "--out", str(tmp_path / "t"), "--set", "eval.seeds=2"]) == 0
    assert seen == [1, 2]


def test_the_shipped_configs_by_name_from_any_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`--config configs/paper.yaml` works in the repository only; `--config paper` anywhere."""
    import argparse

    from rovr import cli
    from rovr.errors import ConfigError

    monkeypatch.chdir(tmp_path)
    args = argparse.Namespace(config="paper", overrides=[], data=None, device=None)
    assert cli._config(args).data.size == 256
    args.config = "configs/paper.yaml"
    with pytest.raises(ConfigError, match="or `demo` / `paper` for the shipped ones"):
        cli._config(args)

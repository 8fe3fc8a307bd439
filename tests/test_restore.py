"""rovr.restore and `rovr restore`: windows, size/fps/pixels kept, static masks, bad input, interrupts.

The trained run is a tiny untrained one (Γ and an imitation policy saved with their config): restore
must behave the same whatever the weights. The CLI runs as a subprocess.
"""

from __future__ import annotations

import inspect
import json
import logging
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
import torch

from media import sound_of, write_video_with_sound
from rovr import restore as restore_module
from rovr.cli import main
from rovr.config import DataConfig, RunConfig, save_config
from rovr.errors import RovrError
from rovr.models.local import LocalNet, LocalNetConfig
from rovr.models.policy import PolicyConfig, build_actor
from rovr.restore import SHORT_FRACTION, plan_windows, restore_video, working_size
from rovr.train.common import RunDir, save_model
from rovr.video import io

T = 8  # the tiny run's clip length


def tiny_config(base_channels: int = 8) -> RunConfig:
    return RunConfig(
        data=DataConfig(frames=T, size=32),
        local=LocalNetConfig(base_channels=base_channels, depth=2),
        policy=PolicyConfig(cell=16, channels=8, hidden=32),
    )


def make_run(root: Path) -> Path:
    """A run folder as `rovr train` leaves it: config.yaml, local.safetensors, the imitation and PPG policies
    (restore must pick imitation by default: on real footage it is the better one)."""
    torch.manual_seed(0)
    cfg, run = tiny_config(), RunDir(root)
    root.mkdir(parents=True)
    save_config(cfg, run.config)
    save_model(run.local, LocalNet(cfg.local, cfg.k), cfg)
    save_model(run.policy("imitation"), build_actor(cfg.policy, cfg.data.frames), cfg)
    save_model(run.policy("rovr_flow_warm"), build_actor(cfg.policy, cfg.data.frames), cfg)
    return root


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_run(tmp_path_factory.mktemp("runs") / "tiny")


def indexed_video(n: int, h: int, w: int) -> np.ndarray:
    """uint8 (n, h, w, 3): frame i is flat in a colour of its own (consecutive frames differ in every channel)."""
    i = np.arange(n)
    colours = np.stack([20 + 9 * i % 216, 230 - 37 * i % 200, 40 + 53 * i % 190], axis=1).astype(np.uint8)
    return np.broadcast_to(colours[:, None, None, :], (n, h, w, 3)).copy()


def frame_order(video: Path, reference: Path, holes: np.ndarray) -> list[int]:
    """For each frame of ``video``: the index of the ``reference`` frame whose known pixels match best."""
    out, ref = io.read_video(video).astype(float), io.read_video(reference).astype(float)
    order = []
    for j in range(len(out)):
        known = ~holes[j]
        dist = [np.abs(out[j][known] - r[known]).mean() for r in ref]
        order.append(int(np.argmin(dist)))
    return order


def moving_box_masks(n: int, h: int, w: int) -> np.ndarray:
    """bool (n, h, w): a box of about a quarter of each side moving right (frames 0 and 3 have none)."""
    m = np.zeros((n, h, w), bool)
    bh, bw = max(2, h // 4), max(2, w // 4)
    for i in range(n):
        if i in (0, 3):
            continue
        x = (i * 3) % (w - bw)
        m[i, h // 3 : h // 3 + bh, x : x + bw] = True
    return m


def write_masks(folder: Path, masks: np.ndarray) -> Path:
    folder.mkdir(parents=True)
    for i, m in enumerate(masks):
        io.write_png(folder / f"{i:05d}.png", m)
    return folder


def noise_video_with_box_masks(folder: Path, n: int, h: int, w: int, seed: int) -> tuple[Path, Path]:
    """A random-noise mp4 of n frames (24 fps) and a folder of moving-box masks: (video, masks)."""
    video = folder / "in.mp4"
    io.write_video(video, np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8), fps=24)
    return video, write_masks(folder / "masks", moving_box_masks(n, h, w))


#: The CLI in a child process with one torch thread, as every test here runs (see conftest.py).
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def rovr(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rovr.cli", *map(str, args)],
        cwd=cwd,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )


def codec_error(frames: np.ndarray, fps: float, folder: Path) -> np.ndarray:
    """Mean abs error (T, H, W) of encoding ``frames`` unchanged: the most a restore may add outside holes."""
    io.write_video(folder / "reencoded.mp4", frames, fps=fps)
    back = io.read_video(folder / "reencoded.mp4").astype(np.int16)
    return np.abs(back - frames.astype(np.int16)).mean(axis=-1)


def contents(*folders: Path) -> dict[Path, bytes]:
    """Every file below ``folders`` and its bytes."""
    return {p: p.read_bytes() for f in folders for p in sorted(f.rglob("*")) if p.is_file()}


def files_in(folder: Path) -> list[str]:
    """Every name in ``folder`` (hidden temp files included); [] if it does not exist."""
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


# ----------------------------------------------------------------------------- windows


@pytest.mark.parametrize("length", [1, 2, 3, 5, 8, 20])
def test_windows_partition_the_video_in_order(length: int) -> None:
    for n in range(1, 70):
        plan = plan_windows(n, length)
        assert len(plan) == math.ceil(n / length)
        written = [i for w in plan for i in range(w.write_from, w.write_to)]
        assert written == list(range(n))  # every frame once, in order
        for w in plan:
            assert w.stop - w.start == min(n, length)
            assert 0 <= w.start <= w.write_from < w.write_to <= w.stop <= n


def test_windows_share_the_overlap() -> None:
    # 21 frames, T = 20: two windows 0..19 and 1..20, the overlap split in the middle
    a, b = plan_windows(21, 20)
    assert (a.start, a.stop, b.start, b.stop) == (0, 20, 1, 21)
    assert a.write_to == b.write_from == 10


@pytest.mark.parametrize(("h", "w", "size", "expect"), [(240, 432, 64, (64, 116)), (37, 45, 32, (32, 38))])
def test_working_size_scales_the_short_side(h: int, w: int, size: int, expect: tuple[int, int]) -> None:
    assert working_size(h, w, size) == expect


@pytest.mark.parametrize(("h", "w"), [(240, 432), (37, 45), (9, 7), (20, 20)])
def test_every_hole_pixel_is_a_hole_at_the_working_size(h: int, w: int) -> None:
    work = working_size(h, w, 32)
    for y, x in [(0, 0), (h - 1, w - 1), (h // 2, w // 3), (h // 3, w - 1)]:
        mask = np.zeros((h, w), bool)
        mask[y, x] = True  # one pixel
        _, small = restore_module._shrink(np.zeros((h, w, 3), np.uint8), mask, work)
        assert small.shape == work and small.any()
    _, small = restore_module._shrink(np.zeros((h, w, 3), np.uint8), np.zeros((h, w), bool), work)
    assert not small.any()


# ----------------------------------------------------------------------------- the real clip (CLI)


def test_cli_restores_real_clip_keeping_size_fps_and_known_pixels(
    real_dir: Path, run_dir: Path, tmp_path: Path
) -> None:
    video, masks = real_dir / "schoolgirls.mp4", real_dir / "schoolgirls_mask"
    out, report = tmp_path / "out" / "restored.mp4", tmp_path / "report.json"
    r = rovr(
        "restore", video, "--masks", masks, "-o", out, "--checkpoint", run_dir, "--report", report,
        "--no-progress", cwd=tmp_path,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    assert "% of hole pixels copied at full size" in r.stdout  # --fill copy is the default
    info, src = io.probe(out), io.probe(video)
    assert (info.width, info.height, info.frames) == (432, 240, 80) == (src.width, src.height, src.frames)
    assert info.fps == pytest.approx(24.0) and info.fps == pytest.approx(src.fps)

    before, after = io.read_video(video).astype(np.int16), io.read_video(out).astype(np.int16)
    holes = io.read_masks(masks, 80, 240, 432)
    assert holes.any(axis=(1, 2)).all()
    near = np.stack([cv2.dilate(m.astype(np.uint8), np.ones((9, 9), np.uint8)) > 0 for m in holes])
    diff = np.abs(after - before).mean(axis=-1)  # (T, H, W)
    codec = codec_error(before.astype(np.uint8), 24, tmp_path)  # known pixels: the codec's error only
    assert diff[~near].mean() <= 1.1 * codec[~near].mean() + 0.2
    assert np.percentile(diff[~near], 99) <= 1.1 * np.percentile(codec[~near], 99) + 1
    assert diff[holes].mean() > 10  # the holes were repainted (the object is gone)

    rep = json.loads(report.read_text())
    assert rep["frames"] == 80 and rep["policy"] == "imitation" and rep["fill"] == "copy"
    cond = rep["conditioning"]
    assert len(cond) == 80
    for t, frames in enumerate(cond):
        assert len(frames) == 2 and len(set(frames)) == 2 and t not in frames
        assert all(0 <= c < 80 and abs(c - t) < T for c in frames)  # within t's window

    # -o FOLDER: lossless PNG frames, so every known pixel is exactly the decoded input's
    folder = tmp_path / "frames"
    args = ["restore", str(video), "--masks", str(masks), "-o", str(folder), "--checkpoint", str(run_dir)]
    assert main([*args, "--no-progress"]) == 0
    png = io.read_video(folder).astype(np.int16)
    assert png.shape == before.shape and np.array_equal(png[~holes], before[~holes])
    assert np.abs(png - before).mean(axis=-1)[holes].mean() > 10  # the holes were repainted


# ----------------------------------------------------------------------------- synthetic videos


@pytest.mark.parametrize(
    ("n", "h", "w", "batch"),
    [
        (23, 37, 45, None),
        (23, 37, 45, 2),
        (41, 24, 32, 1),
        (5, 24, 32, None),
        (3, 24, 32, None),
        (8, 40, 40, None),
    ],
)
def test_every_frame_written_once_in_order(
    run_dir: Path, tmp_path: Path, n: int, h: int, w: int, batch: int | None
) -> None:
    """Lengths not a multiple of T, shorter than T and equal to T; odd sizes; windows one or more at a time.
    A video shorter than T is one window, where the paper's actor cannot choose."""
    frames, holes = indexed_video(n, h, w), moving_box_masks(n, h, w)
    video, report = tmp_path / "in.mp4", tmp_path / "r.json"
    out = tmp_path / "new" / "deeper" / "out.mp4"  # missing folders are created
    io.write_video(video, frames, fps=30)
    masks = write_masks(tmp_path / "masks", holes)
    calls: list[int] = []
    res = restore_video(video, masks, out, run_dir, report=report, on_frames=calls.append, batch=batch)
    assert calls[0] == 0 and res.frames == sum(calls) == n and res.windows == math.ceil(n / T)
    info = io.probe(out)
    assert (info.frames, info.width, info.height) == (n, w, h) and info.fps == pytest.approx(30.0)
    assert frame_order(out, video, holes) == list(range(n))
    cond = json.loads(report.read_text())["conditioning"]
    assert len(cond) == n
    for t in range(n):
        if holes[t].any():
            assert len(cond[t]) == 2 and t not in cond[t] and all(0 <= c < n for c in cond[t])
        else:
            assert cond[t] == []
    assert res.policy == ("imitation" if n >= T else "oracle_best")  # the paper's actor is tied to T


@pytest.mark.parametrize("n", [3, 4, 5, 7])
def test_a_pointer_policy_chooses_in_a_video_shorter_than_t(tmp_path: Path, n: int) -> None:
    """The pointer policy is length-agnostic: in a video of n < T frames it chooses the frames (pairs
    of other frames of the video) down to SHORT_FRACTION · T; below that the masks' oracle does."""
    cfg = tiny_config()
    cfg.policy.kind = "pointer"
    run = RunDir(tmp_path / "run")
    run.root.mkdir()
    save_config(cfg, run.config)
    torch.manual_seed(0)
    save_model(run.local, LocalNet(cfg.local, cfg.k), cfg)
    save_model(run.policy("imitation"), build_actor(cfg.policy, cfg.data.frames), cfg)
    video, masks = noise_video_with_box_masks(tmp_path, n, 24, 32, seed=n)
    report = tmp_path / "r.json"
    res = restore_video(video, masks, tmp_path / "out", run.root, report=report)
    assert res.policy == ("imitation" if n >= SHORT_FRACTION * T else "oracle_best")
    holes = moving_box_masks(n, 24, 32)
    for t, chosen in enumerate(json.loads(report.read_text())["conditioning"]):
        assert (len(chosen) == 2 and t not in chosen and all(0 <= c < n for c in chosen)) or not holes[
            t
        ].any()


@pytest.mark.parametrize(("start", "count"), [(5, 12), (0, 4), (13, None)])
def test_a_part_of_the_video_is_restored_alone(
    run_dir: Path, tmp_path: Path, start: int, count: int | None
) -> None:
    """--start/--frames: the output is exactly those input frames (known pixels, PNG: lossless), each
    with its own mask (a hole only in input frame 7 changes only that frame); the report counts in
    the input's frame numbers, and no frame outside the part is decoded or copied from."""
    n, h, w = 25, 24, 32
    frames = indexed_video(n, h, w)
    holes = np.zeros((n, h, w), bool)
    holes[7, 8:16, 10:20] = True
    io.write_frames(tmp_path / "in", frames)
    masks = write_masks(tmp_path / "masks", holes)
    out, report = tmp_path / "out", tmp_path / "r.json"
    res = restore_video(tmp_path / "in", masks, out, run_dir, report=report, start=start, frames=count)
    m = n - start if count is None else count
    part = slice(start, start + m)
    written = io.read_video(out)
    assert res.frames == m and written.shape == (m, h, w, 3)
    assert np.array_equal(written[~holes[part]], frames[part][~holes[part]])
    changed = [k for k in range(m) if not np.array_equal(written[k], frames[start + k])]
    assert changed == ([7 - start] if start <= 7 < start + m else [])
    r = json.loads(report.read_text())
    assert r["start"] == start and r["frames"] == m and r["windows"][0][0] == start
    assert r["windows"][-1][1] == start + m
    for t, cond in enumerate(r["conditioning"]):
        assert (
            cond == [] if t != 7 - start else (len(cond) == 2 and all(start <= c < start + m for c in cond))
        )


def test_a_part_keeps_the_sound_of_its_stretch(run_dir: Path, tmp_path: Path) -> None:
    """--start 12 --frames 6 of a 2-s video at 12 fps: the output's sound is 0.5 s long, from 1 s in."""
    n, h, w = 24, 32, 48
    video = tmp_path / "in.mp4"
    write_video_with_sound(video, indexed_video(n, h, w), fps=12)
    holes = moving_box_masks(n, h, w)
    masks = write_masks(tmp_path / "masks", holes)
    res = restore_video(video, masks, tmp_path / "out.mp4", run_dir, start=12, frames=6)
    assert res.audio == "aac re-encoded as AAC" and io.probe(tmp_path / "out.mp4").frames == 6
    assert frame_order(tmp_path / "out.mp4", video, holes[12:18]) == list(range(12, 18))  # mp4: seeked
    _, begin, sound = sound_of(tmp_path / "out.mp4")
    assert begin == pytest.approx(0.0, abs=0.05)
    assert abs(len(sound) - 44100 // 2) <= 2048  # the encoder's frame of padding at most


def test_the_sound_goes_along(run_dir: Path, tmp_path: Path) -> None:
    """The input's audio track is in the output (AAC copied); --no-audio leaves it out."""
    n, h, w = 24, 32, 48
    video = tmp_path / "in.mp4"
    wave = write_video_with_sound(video, indexed_video(n, h, w), fps=12)
    masks = write_masks(tmp_path / "masks", moving_box_masks(n, h, w))
    out, report = tmp_path / "out.mp4", tmp_path / "r.json"
    res = restore_video(video, masks, out, run_dir, report=report)
    assert res.audio == "aac copied" and json.loads(report.read_text())["audio"] == "aac copied"
    codec, _, sound = sound_of(out)
    assert codec == "aac" and abs(len(sound) - len(wave)) <= 2048
    assert io.probe(out).frames == n

    r = rovr(
        "restore", video, "--masks", masks, "-o", tmp_path / "mute.mp4", "--checkpoint", run_dir,
        "--no-audio", "--no-progress", cwd=tmp_path,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "audio" not in r.stdout
    with av.open(str(tmp_path / "mute.mp4")) as c:
        assert not c.streams.audio and len(c.streams.video) == 1


def test_batching_windows_changes_nothing(
    run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The frames restore hands to the encoder (not the decoded H.264, whose encoder can turn a
    one-level input difference into a larger one) agree up to float rounding of batched convolutions."""
    n, h, w = 30, 32, 48
    video, masks = noise_video_with_box_masks(tmp_path, n, h, w, seed=1)
    monkeypatch.setattr(restore_module, "VideoWriter", CapturingWriter)
    outs = []
    for batch in (1, 4):
        out, report = tmp_path / f"o{batch}.mp4", tmp_path / f"r{batch}.json"
        res = restore_video(video, masks, out, run_dir, report=report, batch=batch)
        assert res.batch == batch and res.windows == 4
        frames = np.stack(CapturingWriter.frames).astype(int)
        outs.append((frames, json.loads(report.read_text())["conditioning"]))
    assert outs[0][1] == outs[1][1]
    assert outs[0][0].shape == (n, h, w, 3)
    assert np.abs(outs[0][0] - outs[1][0]).max() <= 2  # float rounding of batched convolutions at most


def test_a_policy_restores_with_the_gamma_trained_alongside_it(
    run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A PPG run with ppg.train_local leaves local_<policy>.safetensors: restoring with that policy
    uses it, and so does another policy of the run (the report's imitation_tuned_local: a tuned Γ has
    had more training); --local picks any Γ, stage 1's included."""
    video, masks = noise_video_with_box_masks(tmp_path, 12, 32, 48, seed=2)
    monkeypatch.setattr(restore_module, "VideoWriter", CapturingWriter)
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)

    def restored(policy: str, local: str | None = None) -> np.ndarray:
        restore_video(
            str(video), str(masks), str(tmp_path / "out.mp4"), str(run), policy=policy, local=local,
            report=tmp_path / "r.json",
        )  # fmt: skip
        return np.stack(CapturingWriter.frames)

    before = {p: restored(p) for p in ("imitation", "rovr_flow_warm")}
    torch.manual_seed(1)
    cfg = tiny_config()
    save_model(RunDir(run).tuned_local("rovr_flow_warm"), LocalNet(cfg.local, cfg.k), cfg, stage="ppg")
    tuned_path = str(RunDir(run).tuned_local("rovr_flow_warm").resolve())
    tuned = restored("rovr_flow_warm")
    assert not np.array_equal(tuned, before["rovr_flow_warm"])
    assert json.loads((tmp_path / "r.json").read_text())["local"] == tuned_path
    with_tuned = restored("imitation")  # by default with the tuned Γ too
    assert not np.array_equal(with_tuned, before["imitation"])
    assert json.loads((tmp_path / "r.json").read_text())["local"] == tuned_path
    assert np.array_equal(restored("imitation", local="local_rovr_flow_warm.safetensors"), with_tuned)
    # --local: any Γ under any policy, stage 1's included
    assert np.array_equal(restored("imitation", local="local.safetensors"), before["imitation"])
    assert json.loads((tmp_path / "r.json").read_text())["local"] == str(RunDir(run).local.resolve())
    assert np.array_equal(restored("rovr_flow_warm", local=str(RunDir(run).local)), before["rovr_flow_warm"])
    # a run folder without stage 1's Γ: a Γ named with --local is enough
    (run / "local.safetensors").rename(tmp_path / "gamma.safetensors")
    assert np.array_equal(
        restored("imitation", local=str(tmp_path / "gamma.safetensors")), before["imitation"]
    )
    (tmp_path / "gamma.safetensors").rename(run / "local.safetensors")
    with pytest.raises(RovrError, match="is Table 2's same-Γ control: pass --policy imitation"):
        restored("imitation_tuned_local")
    for wrong, why in (
        ("policy_imitation.safetensors", "is a policy checkpoint, not a Γ"),
        ("config.yaml", "is not a checkpoint (.safetensors), not a Γ"),
    ):
        with pytest.raises(RovrError, match=re.escape(f"--local '{wrong}' {why}; pass local.safetensors")):
            restored("imitation", local=wrong)
    with pytest.raises(RovrError, match="--local 'nope.safetensors' is neither a file"):
        restored("imitation", local="nope.safetensors")


class CapturingWriter:
    """Stands in for VideoWriter: keeps the frames restore writes, before any encoding."""

    frames: list[np.ndarray] = []

    audio = None

    def __init__(
        self,
        path: Path,
        fps: float,
        width: int,
        height: int,
        audio_from: Path | None = None,
        audio_span: tuple[float, float] | None = None,
    ) -> None:
        self.shape = (height, width, 3)
        CapturingWriter.frames = []

    def __enter__(self) -> CapturingWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def write(self, frame: np.ndarray) -> None:
        assert frame.shape == self.shape and frame.dtype == np.uint8
        CapturingWriter.frames.append(frame.copy())


def test_static_mask_changes_only_the_grown_holes(
    run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One mask image for every frame, grown by --dilate 3; the frames written (before encoding)
    equal the decoded input exactly outside the grown hole, and differ inside it."""
    n, h, w = 12, 47, 63
    y, x = np.mgrid[0:h, 0:w]
    texture = (30 * np.sin(x / 4.0) * np.cos(y / 5.0))[None, :, :, None]
    frames = np.clip(indexed_video(n, h, w) + texture, 0, 255).astype(np.uint8)
    hole = np.zeros((h, w), bool)
    hole[16:30, 20:40] = True
    video, mask = tmp_path / "in.mp4", tmp_path / "mask.png"
    io.write_video(video, frames, fps=25)
    io.write_png(mask, hole)
    monkeypatch.setattr(restore_module, "VideoWriter", CapturingWriter)
    res = restore_video(video, mask, tmp_path / "out.mp4", run_dir, dilate=3)
    assert res.frames == n and len(res.choices) == n  # the frames each was rebuilt from, report or not
    assert all(len(c) == 2 and all(0 <= i < n for i in c) for c in res.choices)
    before, after = io.read_video(video).astype(int), np.stack(CapturingWriter.frames).astype(int)
    assert after.shape == before.shape
    grown = cv2.dilate(hole.astype(np.uint8), np.ones((7, 7), np.uint8)) > 0
    assert np.array_equal(after[:, ~grown], before[:, ~grown])
    diff = np.abs(after - before).mean(axis=-1)
    # the grown ring is repainted too (in-painted from around it, so close to what was there)
    assert diff[:, hole].mean() > 5 and diff[:, grown & ~hole].mean() > 2


def test_boxes_are_holes_in_every_frame(run_dir: Path, tmp_path: Path) -> None:
    """--box X,Y,W,H: the same output as a mask image of the boxes' union, alone and added to a mask
    folder; only the boxes' pixels change; the report records them."""
    n, h, w = 12, 32, 48
    video, masks = noise_video_with_box_masks(tmp_path, n, h, w, seed=5)
    boxes = ["3,4,10,6", "30, 20, 18, 12"]  # the second touches the right and bottom edges
    union = np.zeros((h, w), bool)
    union[4:10, 3:13] = True
    union[20:32, 30:48] = True
    io.write_png(tmp_path / "union.png", union)
    report = tmp_path / "r.json"
    restore_video(video, None, tmp_path / "by_box", run_dir, boxes=boxes, report=report)
    restore_video(video, tmp_path / "union.png", tmp_path / "by_image", run_dir)
    by_box, by_image = io.read_video(tmp_path / "by_box"), io.read_video(tmp_path / "by_image")
    assert np.array_equal(by_box, by_image)
    before = io.read_video(video)
    assert np.array_equal(by_box[:, ~union], before[:, ~union])
    assert np.abs(by_box[:, union].astype(int) - before[:, union]).mean() > 5
    assert json.loads(report.read_text())["boxes"] == [[3, 4, 10, 6], [30, 20, 18, 12]]
    assert json.loads(report.read_text())["masks"] is None
    # with a mask folder: each frame's holes are its mask and the boxes
    both = write_masks(tmp_path / "both", moving_box_masks(n, h, w) | union)
    restore_video(video, masks, tmp_path / "masks_and_box", run_dir, boxes=[(3, 4, 10, 6), (30, 20, 18, 12)])
    restore_video(video, both, tmp_path / "by_folder", run_dir)
    assert np.array_equal(io.read_video(tmp_path / "masks_and_box"), io.read_video(tmp_path / "by_folder"))


def test_a_gamma_that_repairs_known_pixels_still_changes_only_the_holes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A run trained with local.repair_known: restore says, in one warning, that it repairs the holes
    only, and every pixel outside them is the input's (Γ's known-pixel residual is not applied)."""
    cfg = tiny_config()
    cfg.local.repair_known = True
    run = RunDir(tmp_path / "run")
    run.root.mkdir()
    save_config(cfg, run.config)
    torch.manual_seed(0)
    net = LocalNet(cfg.local, cfg.k)
    assert net.head_known is not None and net.head_known.bias is not None
    with torch.no_grad():
        net.head_known.bias.fill_(0.3)  # would brighten every known pixel if it were applied
    save_model(run.local, net, cfg)
    n, h, w = 10, 32, 40
    video, masks = noise_video_with_box_masks(tmp_path, n, h, w, seed=1)
    with caplog.at_level(logging.WARNING, logger="rovr.restore"):
        restore_video(video, masks, tmp_path / "out", run.root, policy="sequential")
    assert [r.getMessage() for r in caplog.records if "repair_known" in r.getMessage()], caplog.text
    holes = moving_box_masks(n, h, w)
    before, after = io.read_video(video), io.read_video(tmp_path / "out")
    assert np.array_equal(after[~holes], before[~holes])


def panning_texture(n: int, h: int, w: int, step: int = 2) -> np.ndarray:
    """uint8 (n, h, w, 3): a detailed texture the camera pans across, ``step`` pixels a frame."""
    big = np.random.default_rng(9).normal(0, 1, (h, w + step * n, 3)).astype(np.float32)
    big = np.clip(128 + 70 * cv2.GaussianBlur(big, (0, 0), 1.2) / 0.25, 0, 255).astype(np.uint8)
    return np.stack([big[:, step * i : step * i + w] for i in range(n)])


@pytest.mark.parametrize("fill", ["copy", "gamma"])
def test_fill_copy_brings_back_full_resolution_detail(
    run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fill: str
) -> None:
    """A 96x128 pan (Γ works at 32x42), conditioned on the previous frames: --fill copy takes the holes
    from them at full size (exact), --fill gamma writes Γ's upsampled output; both leave every known
    pixel as read."""
    n, h, w = 12, 96, 128
    frames = panning_texture(n, h, w)
    holes = np.zeros((n, h, w), bool)
    holes[0::2, 30:60, 20:50] = True  # the hole jumps between two places: t-1 shows all of t's
    holes[1::2, 40:70, 75:110] = True
    video, report = tmp_path / "in", tmp_path / "r.json"
    io.write_frames(video, frames)
    masks = write_masks(tmp_path / "masks", holes)
    monkeypatch.setattr(restore_module, "VideoWriter", CapturingWriter)
    res = restore_video(
        video, masks, tmp_path / "o.mp4", run_dir, policy="sequential", report=report, fill=fill
    )
    out = np.stack(CapturingWriter.frames)
    assert np.array_equal(out[~holes], frames[~holes])
    err = np.abs(out[holes].astype(int) - frames[holes].astype(int)).mean()
    rep = json.loads(report.read_text())
    assert rep["fill"] == res.fill == fill and res.hole_pixels == holes.sum()
    if fill == "copy":
        assert err == 0 and res.copied == 1.0 == rep["copied"]  # every hole pixel, exactly
    else:
        assert err > 20 and res.copied == 0 == rep["copied"]  # Γ (untrained here) at 32x42 cannot


def test_a_chooser_object_of_ones_own(run_dir: Path, tmp_path: Path) -> None:
    """restore_video(policy=<a Chooser>) runs it as it runs a named one: a copy of `nearest` under
    another name writes the same frames and choices; something else is one clear line."""
    from rovr.conditioning import Nearest
    from rovr.errors import RovrError

    class Mine(Nearest):
        name = "mine"

    n, h, w = 12, 48, 64
    video = tmp_path / "in"
    io.write_frames(video, panning_texture(n, h, w))
    masks = write_masks(tmp_path / "masks", moving_box_masks(n, h, w))
    results = {}
    for policy in ("nearest", Mine()):
        name = policy if isinstance(policy, str) else policy.name
        res = restore_video(
            video, masks, tmp_path / name, run_dir, policy=policy, report=tmp_path / f"{name}.json"
        )
        rep = json.loads((tmp_path / f"{name}.json").read_text())
        assert res.policy == rep["policy"] == name
        results[name] = (io.read_video(tmp_path / name), rep["conditioning"])
    assert np.array_equal(results["mine"][0], results["nearest"][0])
    assert results["mine"][1] == results["nearest"][1]
    # what is not a chooser, and the oracles that would peek under the holes, are refused up front
    from rovr.conditioning import CopyOracle

    class Peeking(Nearest):
        name = "peeking"
        saw_more: list[bool] = []

        def choose(self, episodes):  # type: ignore[no-untyped-def]
            # the "original" of a video to restore holds no more than what is observed
            self.saw_more.append(not torch.equal(episodes.original, episodes.corrupted))
            return super().choose(episodes)

    for bad, message in (
        (3, "policy 3 is not a Chooser"),
        (Mine, "policy is the class Mine, not a chooser object; pass Mine()"),
        (CopyOracle(), "policy 'oracle_copy' scores frames against the original video"),
    ):
        with pytest.raises(RovrError, match=re.escape(message)):
            restore_video(video, masks, tmp_path / "x", run_dir, policy=bad)  # type: ignore[arg-type]
        assert not (tmp_path / "x").exists()
    restore_video(video, masks, tmp_path / "peek", run_dir, policy=Peeking())
    assert Peeking.saw_more and not any(Peeking.saw_more)


def test_copy_from_other_frames_fills_what_the_chosen_ones_hide(
    run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hole stays in one place for four frames, so t-1 and t-2 (sequential) often hide it too;
    with --copy-from 2 the nearest other frames fill every hole pixel exactly (no farther frames)."""
    n, h, w = 12, 96, 128
    frames = panning_texture(n, h, w)
    holes = np.zeros((n, h, w), bool)
    for i in range(n):
        if (i // 4) % 2:
            holes[i, 40:70, 75:110] = True
        else:
            holes[i, 30:60, 20:50] = True
    io.write_frames(tmp_path / "in", frames)
    masks = write_masks(tmp_path / "masks", holes)
    monkeypatch.setattr(restore_module, "VideoWriter", CapturingWriter)
    chosen = restore_video(
        tmp_path / "in", masks, tmp_path / "o.mp4", run_dir, policy="sequential", copy_from=0, copy_reach=0
    )
    assert 0.2 < chosen.copied < 0.6
    more = restore_video(
        tmp_path / "in", masks, tmp_path / "o.mp4", run_dir, policy="sequential", copy_from=2, copy_reach=0
    )
    out = np.stack(CapturingWriter.frames)
    assert more.copied == 1.0 and np.array_equal(out, frames)


@pytest.mark.parametrize("batch", [1, None])
def test_frames_farther_than_the_window_fill_what_it_hides(
    run_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    batch: int | None,
) -> None:
    """Object removal with a static camera: the hole drifts 2 px a frame, so the background under a
    20 px wide hole is seen again only 12 frames away (T = 8): with --copy-reach 0 much stays Γ's,
    with --copy-reach 16 every hole pixel is the background, exactly, whether windows run one at a time
    or together (the writer waits for the frames it copies from)."""
    n, h, w = 40, 96, 128
    frames = np.repeat(panning_texture(1, h, w), n, axis=0)
    holes = np.zeros((n, h, w), bool)
    for i in range(n):
        holes[i, 30:60, 10 + 2 * i : 30 + 2 * i] = True
    io.write_frames(tmp_path / "in", frames)
    masks = write_masks(tmp_path / "masks", holes)
    monkeypatch.setattr(restore_module, "VideoWriter", CapturingWriter)
    near = restore_video(
        tmp_path / "in", masks, tmp_path / "o.mp4", run_dir, policy="sequential", batch=batch, copy_reach=0
    )
    assert near.copied < 0.7
    near_out = np.stack(CapturingWriter.frames)
    far = restore_video(
        tmp_path / "in", masks, tmp_path / "o.mp4", run_dir, policy="sequential", batch=batch, copy_reach=16
    )
    out = np.stack(CapturingWriter.frames)
    assert far.copied == 1.0 and np.array_equal(out, frames)
    # frames too large for REACH_BYTES: the reach is lowered (here to 0 frames), and the log says so
    monkeypatch.setattr(restore_module, "REACH_BYTES", 2 * 4 * h * w - 1)
    with caplog.at_level(logging.WARNING, logger="rovr.restore"):
        capped = restore_video(
            tmp_path / "in",
            masks,
            tmp_path / "o.mp4",
            run_dir,
            policy="sequential",
            batch=batch,
            copy_reach=16,
            report=tmp_path / "r.json",
        )
    assert capped.copied == near.copied and np.array_equal(np.stack(CapturingWriter.frames), near_out)
    rep = json.loads((tmp_path / "r.json").read_text())
    assert (rep["copy_from"], rep["copy_reach"], capped.copy_reach, far.copy_reach) == (6, 0, 0, 16)
    assert "copying from at most 0 frames away (not 16)" in caplog.text


def test_frames_filled_in_parallel_are_the_same_frames(
    run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--fill copy fills several frames at once (one per CPU); the output does not depend on how many."""
    n, h, w = 30, 64, 80
    frames = panning_texture(n, h, w)
    holes = np.zeros((n, h, w), bool)
    for i in range(n):
        holes[i, 10 + i : 30 + i, 20:50] = True
    io.write_frames(tmp_path / "in", frames)
    masks = write_masks(tmp_path / "masks", holes)
    monkeypatch.setattr(restore_module, "VideoWriter", CapturingWriter)
    outs = []
    for threads in (1, 3):
        monkeypatch.setattr(restore_module, "copy_threads", lambda t=threads: t)
        res = restore_video(tmp_path / "in", masks, tmp_path / "o.mp4", run_dir, batch=1)
        assert res.frames == n and res.copied > 0.3
        outs.append(np.stack(CapturingWriter.frames))
    assert np.array_equal(outs[0], outs[1])


def test_unseen_pixels_are_inpainted_or_gammas(
    run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A static camera and a hole that never moves: no frame shows it. --unseen telea (default) fills it
    from around it at full size, closer to the truth than Γ's upsampled output (--unseen gamma); known
    pixels are untouched either way, and the report says what was done."""
    n, h, w = 12, 96, 128
    y, x = np.mgrid[0:h, 0:w]
    smooth = (128 + 60 * np.sin(x / 9.0) * np.cos(y / 11.0)).astype(np.uint8)
    frames = np.repeat(np.repeat(smooth[None, :, :, None], 3, axis=3), n, axis=0)  # in-painting can work
    hole = np.zeros((h, w), bool)
    hole[40:52, 50:66] = True
    io.write_frames(tmp_path / "in", frames)
    io.write_png(tmp_path / "m.png", hole)
    monkeypatch.setattr(restore_module, "VideoWriter", CapturingWriter)
    outs, errs = {}, {}
    for unseen in ("telea", "gamma"):
        report = tmp_path / f"{unseen}.json"
        res = restore_video(
            tmp_path / "in", tmp_path / "m.png", tmp_path / "o.mp4", run_dir, unseen=unseen, report=report
        )
        out = np.stack(CapturingWriter.frames)
        assert np.array_equal(out[:, ~hole], frames[:, ~hole]) and res.copied == 0
        rep = json.loads(report.read_text())
        assert rep["unseen"] == res.unseen == unseen
        assert rep["inpainted"] == res.inpainted == (1.0 if unseen == "telea" else 0.0)
        outs[unseen], errs[unseen] = out, np.abs(out[:, hole].astype(int) - frames[:, hole]).mean()
    assert errs["telea"] < errs["gamma"] / 2  # Γ is untrained here; in-painting a smooth field is easy


def test_copy_sources_by_hand() -> None:
    assert (restore_module.DENSE_REACH, restore_module.FAR_STRIDE) == (8, 4)  # the cases below assume them
    # every frame within 8, then the multiples of 4, nearest first (ties: the earlier frame first)
    assert restore_module.far_frames(20, 60, 20) == [
        *(19, 21, 18, 22, 17, 23, 16, 24, 15, 25, 14, 26, 13, 27, 12, 28),
        *(8, 32, 4, 36, 0, 40),
    ]
    assert restore_module.far_frames(21, 60, 20) == [
        *(20, 22, 19, 23, 18, 24, 17, 25, 16, 26, 15, 27, 14, 28, 13, 29),
        *(12, 32, 8, 36, 4, 40),
    ]  # consecutive targets share the grid frames (0 is 21 away from 21; 12 is 9 away, no longer dense)
    assert restore_module.far_frames(3, 6, 30) == [2, 4, 1, 5, 0]  # inside the video only
    assert restore_module.far_frames(10, 40, 0) == []
    # chosen first, then the nearest others (ties: earlier first); far: the rest, nearest first
    near, far = restore_module.copy_sources(10, 40, [9, 8], 2, 8)
    assert near == [9, 8, 11, 12] and far == [7, 13, 6, 14, 5, 15, 4, 16, 3, 17, 2, 18]
    assert restore_module.copy_sources(0, 40, [1, 2], 2, 3) == ([1, 2, 3, 4], [])  # the video's start
    assert restore_module.copy_sources(5, 10, [4, 6], 1, 0) == ([4, 6, 3], [])  # beyond ±copy_from
    assert restore_module.copy_sources(9, 10, [8, 7], 3, 30) == ([8, 7, 6, 5, 4], [3, 2, 1, 0])


def test_cli_copy_defaults_are_the_library_defaults() -> None:
    from rovr.cli import build_parser

    args = build_parser().parse_args(["restore", "v.mp4", "--masks", "m", "-o", "o.mp4"])
    assert args.copy_from == restore_module.COPY_FROM and args.fill == "copy"
    assert args.copy_reach == restore_module.COPY_REACH and args.unseen == "telea"
    assert inspect.signature(restore_video).parameters["unseen"].default == args.unseen


def test_a_video_at_the_working_size_keeps_gammas_fill(
    run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At Γ's own size (32x40 for the tiny run) there is no upsampling blur to undo: copy = gamma."""
    n, h, w = 10, 32, 40
    assert working_size(h, w, tiny_config().data.size) == (h, w)
    holes = np.zeros((n, h, w), bool)
    holes[0::2, 4:14, 4:14] = True
    holes[1::2, 16:28, 22:36] = True
    io.write_frames(tmp_path / "in", panning_texture(n, h, w))
    masks = write_masks(tmp_path / "masks", holes)
    monkeypatch.setattr(restore_module, "VideoWriter", CapturingWriter)
    outs = []
    for fill in ("copy", "gamma"):
        res = restore_video(
            tmp_path / "in", masks, tmp_path / "o.mp4", run_dir, policy="sequential", fill=fill
        )
        assert res.fill == "gamma" and res.copied == 0
        outs.append(np.stack(CapturingWriter.frames))
    assert np.array_equal(outs[0], outs[1])


def test_unknown_fill_or_copy_from_is_one_line(run_dir: Path, tmp_path: Path) -> None:
    video, masks = noise_video_with_box_masks(tmp_path, 8, 24, 32, seed=0)
    with pytest.raises(RovrError, match="--fill must be one of copy, gamma"):
        restore_video(video, masks, tmp_path / "o.mp4", run_dir, fill="sharp")
    with pytest.raises(RovrError, match="--copy-from must be >= 0 frames"):
        restore_video(video, masks, tmp_path / "o.mp4", run_dir, copy_from=-1)
    with pytest.raises(RovrError, match="--copy-reach must be >= 0 frames"):
        restore_video(video, masks, tmp_path / "o.mp4", run_dir, copy_reach=-1)
    with pytest.raises(RovrError, match="--unseen must be one of telea, gamma"):
        restore_video(video, masks, tmp_path / "o.mp4", run_dir, unseen="blur")
    assert not (tmp_path / "o.mp4").exists()


def test_frame_folder_without_holes_is_copied(
    run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A DAVIS-style folder of frames and an empty mask: every frame is written as read, Γ never runs."""
    n, h, w = 11, 30, 40
    rng = np.random.default_rng(2)
    frames = rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8)
    io.write_frames(tmp_path / "frames", frames)
    io.write_png(tmp_path / "empty.png", np.zeros((h, w), bool))

    def no_gamma(*args: object, **kwargs: object) -> None:
        raise AssertionError("Γ ran on a video without holes")

    monkeypatch.setattr(restore_module, "_restore_windows", no_gamma)
    monkeypatch.setattr(restore_module, "VideoWriter", CapturingWriter)
    report = tmp_path / "r.json"
    res = restore_video(
        tmp_path / "frames", tmp_path / "empty.png", tmp_path / "o.mp4", run_dir, report=report
    )
    assert res.frames == n and np.array_equal(np.stack(CapturingWriter.frames), frames)
    assert json.loads(report.read_text())["conditioning"] == [[]] * n


def test_a_frame_that_is_all_hole_is_copied_from_its_neighbours(
    run_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A frame masked everywhere has no known pixel to align others on: with a still camera its
    pixels come back exactly from the nearby frames (before: Γ's low-resolution guess), with one
    warning, and the report and summary count them."""
    n, h, w = 12, 40, 48
    still = np.repeat(panning_texture(1, h, w), n, axis=0)
    holes = moving_box_masks(n, h, w)
    holes[4] = True
    io.write_frames(tmp_path / "in", still)
    masks = write_masks(tmp_path / "masks", holes)
    with caplog.at_level(logging.WARNING, logger="rovr"):
        res = restore_video(tmp_path / "in", masks, tmp_path / "out", run_dir, report=tmp_path / "r.json")
    out = io.read_video(tmp_path / "out")
    assert np.array_equal(out[4], still[4])
    assert res.whole_hole_frames == 1 and res.unaligned_pixels == h * w and res.gamma == 0.0
    assert json.loads((tmp_path / "r.json").read_text())["whole_hole_frames"] == 1
    said = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(said) == 1 and "1 of 12 frames are hole everywhere" in said[0], said


def test_a_dilation_past_the_frame_is_the_whole_frame(run_dir: Path, tmp_path: Path) -> None:
    """--dilate larger than the frame grows every hole to the whole frame, without allocating a kernel
    of the size asked for (10^6 px: 4 TB); the frames without holes are copied into them."""
    n, h, w = 6, 24, 32
    io.write_video(tmp_path / "in.mp4", indexed_video(n, h, w), fps=24)
    holes = moving_box_masks(n, h, w)
    with_holes = int(holes.any(axis=(1, 2)).sum())
    assert 0 < with_holes < n
    masks = write_masks(tmp_path / "masks", holes)
    res = restore_video(tmp_path / "in.mp4", masks, tmp_path / "o.mp4", run_dir, dilate=10**6)
    assert res.whole_hole_frames == with_holes and res.hole_pixels == with_holes * h * w
    assert res.unaligned_pixels == res.hole_pixels  # all of it from the frames without holes


def test_copy_from_is_capped_by_the_video_and_by_memory(
    run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """--copy-from 1000000 holds no more frames than the video has, nor (beyond the default 6) more than REACH_BYTES allows."""
    n, h, w = 12, 24, 32
    io.write_video(tmp_path / "in.mp4", indexed_video(n, h, w), fps=24)
    masks = write_masks(tmp_path / "masks", moving_box_masks(n, h, w))
    report = tmp_path / "r.json"
    restore_video(tmp_path / "in.mp4", masks, tmp_path / "o.mp4", run_dir, copy_from=10**6, report=report)
    assert json.loads(report.read_text())["copy_from"] == n - 1
    monkeypatch.setattr(restore_module, "REACH_BYTES", 2 * restore_module.FRAME_BYTES * h * w * 10)
    with caplog.at_level(logging.WARNING, logger="rovr"):
        restore_video(tmp_path / "in.mp4", masks, tmp_path / "o.mp4", run_dir, copy_from=10**6, report=report)
    assert json.loads(report.read_text())["copy_from"] == 10 - 2  # k = 2 chosen frames held besides
    assert any("ranking the 8 nearest frames" in r.getMessage() for r in caplog.records), caplog.text


def test_masks_without_holes_are_said(
    run_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    n, h, w = 5, 24, 32
    io.write_video(tmp_path / "in.mp4", indexed_video(n, h, w), fps=24)
    io.write_png(tmp_path / "none.png", np.zeros((h, w), bool))
    with caplog.at_level(logging.WARNING, logger="rovr"):
        restore_video(tmp_path / "in.mp4", tmp_path / "none.png", tmp_path / "o.mp4", run_dir)
    assert any("mark no hole" in r.getMessage() for r in caplog.records), caplog.text


def test_threads_cap_torch_while_restoring_only(run_dir: Path, tmp_path: Path) -> None:
    """threads=1 (--threads 1, for a busy machine): Γ runs on one torch thread, and the process's
    setting is put back afterwards; a huge number is capped at the CPUs."""
    n, h, w = 6, 24, 32
    io.write_video(tmp_path / "in.mp4", indexed_video(n, h, w), fps=24)
    masks = write_masks(tmp_path / "masks", moving_box_masks(n, h, w))
    before = torch.get_num_threads()

    def threads_seen(threads: int) -> set[int]:
        seen: list[int] = []
        restore_video(
            tmp_path / "in.mp4",
            masks,
            tmp_path / "o.mp4",
            run_dir,
            threads=threads,
            on_frames=lambda k: seen.append(torch.get_num_threads()),
        )
        assert torch.get_num_threads() == before
        return set(seen[1:])

    assert threads_seen(1) == {1}
    # thousands of threads are not started (they failed to): at most one per CPU
    assert max(threads_seen(100_000)) <= (os.cpu_count() or 1)


@pytest.mark.parametrize(("fill", "reach", "lag"), [("gamma", 0, 0), ("copy", 0, 8), ("copy", 20, 20)])
def test_frames_are_held_only_until_written(
    run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fill: str, reach: int, lag: int
) -> None:
    """Memory is bounded: no more than batch x T frames are ever read ahead of the writer, plus, when
    copying, the frames a frame may copy from (those of its window and up to --copy-reach away)."""
    n, h, w, batch = 70, 24, 32, 2
    video = tmp_path / "in.mp4"
    io.write_video(video, indexed_video(n, h, w), fps=24)
    masks = write_masks(tmp_path / "masks", moving_box_masks(n, h, w))
    reads: list[int] = []
    ahead: list[int] = []

    def counting_frames(path: Path, start: int = 0, count: int | None = None) -> Iterator[np.ndarray]:
        for frame in io.iter_frames(path, start, count):
            reads.append(1)
            yield frame

    class CountingWriter(CapturingWriter):
        def write(self, frame: np.ndarray) -> None:
            ahead.append(len(reads) - len(CapturingWriter.frames))
            super().write(frame)

    monkeypatch.setattr(restore_module, "iter_frames", counting_frames)
    monkeypatch.setattr(restore_module, "VideoWriter", CountingWriter)
    res = restore_video(video, masks, tmp_path / "o.mp4", run_dir, batch=batch, fill=fill, copy_reach=reach)
    assert res.frames == len(CapturingWriter.frames) == len(reads) == n
    assert 0 < max(ahead) <= batch * T + lag


def test_frames_out_are_lossless_pngs(run_dir: Path, tmp_path: Path) -> None:
    """-o FOLDER writes PNG frames: every known pixel is exactly the input's (no codec); a second run
    replaces the previous frame folder whole; an interrupted run leaves it
    as it was and no temporary folder."""
    n, h, w = 20, 48, 64
    frames = panning_texture(n, h, w)
    holes = moving_box_masks(n, h, w)
    io.write_frames(tmp_path / "in", frames)
    masks = write_masks(tmp_path / "masks", holes)
    out = tmp_path / "outputs" / "repaired"
    res = restore_video(tmp_path / "in", masks, out, run_dir, report=tmp_path / "r.json")
    written = io.read_video(out)
    names = sorted(p.name for p in out.iterdir())
    assert res.frames == n and names == [io.FRAMES_MARKER] + [f"{i:05d}.png" for i in range(n)]
    assert np.array_equal(written[~holes], frames[~holes])
    # a pan: the copy is exact, and PNG keeps it exact, so the holes hold the clean content too
    assert res.copied == 1.0 and np.array_equal(written, frames)
    assert json.loads((tmp_path / "r.json").read_text())["output"] == str(out) and res.audio is None
    # again with --fill gamma: the folder is replaced, not mixed
    again = restore_video(tmp_path / "in", masks, out, run_dir, fill="gamma", report=tmp_path / "r.json")
    assert (
        again.frames == n
        and len(list(out.iterdir())) == n + 1
        and not np.array_equal(io.read_video(out), written)
    )
    assert json.loads((tmp_path / "r.json").read_text())["fill"] == "gamma"  # an earlier report is replaced
    before = io.read_video(out)

    def interrupt(done: int) -> None:
        if done:  # after the first frame is written (0: the work begins)
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        restore_video(tmp_path / "in", masks, out, run_dir, on_frames=interrupt)
    assert np.array_equal(io.read_video(out), before)
    assert sorted(p.name for p in out.parent.iterdir()) == ["repaired"]  # no temporary folder left


def test_interrupt_leaves_no_output_and_no_temp_file(run_dir: Path, tmp_path: Path) -> None:
    n, h, w = 20, 24, 32
    video = tmp_path / "in.mp4"
    io.write_video(video, indexed_video(n, h, w), fps=24)
    masks = write_masks(tmp_path / "masks", moving_box_masks(n, h, w))
    out_dir = tmp_path / "out"
    out_dir.mkdir()

    def interrupt(done: int) -> None:
        if done:  # after the first frame is written (0: the work begins)
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        restore_video(
            video, masks, out_dir / "o.mp4", run_dir, report=out_dir / "r.json", on_frames=interrupt
        )
    assert files_in(out_dir) == []


@pytest.mark.parametrize(
    ("sig", "code", "said"),
    [
        (signal.SIGINT, 130, "rovr: interrupted"),
        (signal.SIGTERM, 143, "rovr: stopped by SIGTERM"),
        (signal.SIGHUP, 129, "rovr: stopped by SIGHUP"),  # 128 + the signal, as shells report it
    ],
)
def test_ctrl_c_on_the_cli_leaves_nothing(
    run_dir: Path, tmp_path: Path, sig: signal.Signals, code: int, said: str
) -> None:
    """Ctrl-C, or SIGTERM (a scheduler, `timeout`), midway: one line, no output, no temporary file."""
    n, h, w = 400, 64, 64
    video = tmp_path / "in.mp4"
    io.write_video(video, indexed_video(n, h, w) // 2 + 60, fps=24)
    masks = tmp_path / "mask.png"
    io.write_png(masks, moving_box_masks(2, h, w)[1])
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    cmd = [sys.executable, "-m", "rovr.cli", "restore", str(video), "--masks", str(masks)]
    cmd += ["-o", str(out_dir / "o.mp4"), "--checkpoint", str(run_dir), "--no-progress"]
    proc = subprocess.Popen(  # SIGINT as at a terminal: a test run started in the background
        cmd,  # without job control (`cmd &` in a script) hands its children SIGINT ignored
        cwd=tmp_path,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.time() + 120
    while not files_in(out_dir) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)  # the encoder's temp file appears when restoring starts
    time.sleep(0.2)  # well into the streaming loop
    assert proc.poll() is None, "restore finished before it could be interrupted"
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith(said)
    assert files_in(out_dir) == []


# ----------------------------------------------------------------------------- bad input (CLI)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 10-frame 40x32 video with its mask folder, a wrong-count folder, a wrong-size mask, odd runs."""
    d = tmp_path_factory.mktemp("inputs")
    n, h, w = 10, 32, 40
    io.write_video(d / "v.mp4", indexed_video(n, h, w), fps=24)
    write_masks(d / "masks", moving_box_masks(n, h, w))
    write_masks(d / "three", moving_box_masks(3, h, w))
    io.write_png(d / "small.png", np.ones((16, 16), bool))
    (d / "junk.mp4").write_bytes(b"not a video at all" * 100)
    (d / "afile").write_text("x")
    (d / "notes").mkdir()
    (d / "notes" / "keep.txt").write_text("not a frame")
    # a folder of the user's own PNGs named like frames (no .rovr-frames marker): never replaced
    write_masks(d / "pictures", moving_box_masks(2, h, w))
    io.write_video(
        d / "m.mp4", np.repeat(moving_box_masks(n, h, w)[..., None], 3, -1).astype(np.uint8) * 255, fps=24
    )
    (d / "other.json").write_text('{"an": "unrelated file"}')
    # config.yaml says base_channels=8, local.safetensors was made with 16
    other = make_run(d / "other")
    save_model(RunDir(other).local, LocalNet(LocalNetConfig(base_channels=16, depth=2)), tiny_config(16))
    # config.yaml says T=10, the checkpoints were made with T=8
    mixed = make_run(d / "mixed")
    cfg10 = tiny_config()
    cfg10.data.frames = 10
    save_config(cfg10, RunDir(mixed).config)
    # a run folder whose stage 1 never ran: a config and nothing else
    (d / "nogamma").mkdir()
    save_config(tiny_config(), RunDir(d / "nogamma").config)
    return d


def _std(*extra: str) -> list[str]:
    """`rovr restore` of the good video and masks into the default output, plus ``extra``."""
    return ["restore", "{d}/v.mp4", "--masks", "{d}/masks", "-o", "{o}", *extra]


BAD = {
    "missing video": ["restore", "{d}/nope.mp4", "--masks", "{d}/masks", "-o", "{o}"],
    "unreadable video": ["restore", "{d}/junk.mp4", "--masks", "{d}/masks", "-o", "{o}"],
    "missing masks": ["restore", "{d}/v.mp4", "--masks", "{d}/nomasks", "-o", "{o}"],
    "wrong mask count": ["restore", "{d}/v.mp4", "--masks", "{d}/three", "-o", "{o}"],
    "mask size": ["restore", "{d}/v.mp4", "--masks", "{d}/small.png", "-o", "{o}"],
    "no checkpoint": _std("--checkpoint", "{d}/none"),
    "not a run": _std("--checkpoint", "{d}/masks"),
    "other config": _std("--checkpoint", "{d}/other"),
    "checkpoints of another T": _std("--checkpoint", "{d}/mixed"),
    "run without Γ": _std("--checkpoint", "{d}/nogamma"),
    "unknown policy": _std("--policy", "nonsense"),
    "policy that needs the original": _std("--policy", "oracle_copy"),
    "brute force": _std("--policy", "brute_force"),
    "output under a file": ["restore", "{d}/v.mp4", "--masks", "{d}/masks", "-o", "{d}/afile/o.mp4"],
    "output is a folder": ["restore", "{d}/v.mp4", "--masks", "{d}/masks", "-o", "{d}/dir.mp4"],
    "output not mp4": ["restore", "{d}/v.mp4", "--masks", "{d}/masks", "-o", "{od}/o.avi"],
    "output folder with other files": ["restore", "{d}/v.mp4", "--masks", "{d}/masks", "-o", "{d}/notes"],
    "output is the input": ["restore", "{d}/v.mp4", "--masks", "{d}/masks", "-o", "{d}/v.mp4"],
    "negative dilation": _std("--dilate", "-2"),
    "negative copy-from": _std("--copy-from", "-1"),
    "range past the end": _std("--start", "8"),
    "range past the video": _std("--start", "12"),
    "range reaching past the end": _std("--start", "5", "--frames", "6"),
    "output is the masks": ["restore", "{d}/v.mp4", "--masks", "{d}/masks", "-o", "{d}/masks"],
    "output folder of the user's images": _std("-o", "{d}/pictures"),
    "output inside the run": _std("-o", "{r}/o.mp4"),
    "report over a mask": _std("--report", "{d}/masks/00001.png"),
    "report over the masks video": ["restore", "{d}/v.mp4", "--masks", "{d}/m.mp4", "-o", "{o}"]
    + ["--report", "{d}/m.mp4"],
    "report in the run folder": _std("--report", "{r}/config.yaml"),
    "report inside the frame output": ["restore", "{d}/v.mp4", "--masks", "{d}/masks", "-o", "{od}/frames"]
    + ["--report", "{od}/frames/r.json"],
    "report over another file": _std("--report", "{d}/afile"),
    "report over another json": _std("--report", "{d}/other.json"),
    "negative threads": _std("--threads", "-1"),
    "range too short": _std("--frames", "2"),
    "negative start": _std("--start", "-1"),
    "negative copy-reach": _std("--copy-reach", "-1"),
    "no masks and no box": ["restore", "{d}/v.mp4", "-o", "{o}"],
    "malformed box": ["restore", "{d}/v.mp4", "--box", "1,2,3", "-o", "{o}"],
    "empty box": _std("--box", "4,4,0,5"),
    "box past the frame": ["restore", "{d}/v.mp4", "--box", "30,20,11,4", "-o", "{o}"],
    "box left of the frame": ["restore", "{d}/v.mp4", "--box", "-5,3,10,10", "-o", "{o}"],
}


def bad_args(case: str, inputs: Path, run_dir: Path, out_dir: Path) -> list[str]:
    args = [a.format(d=inputs, o=out_dir / "o.mp4", od=out_dir, r=run_dir) for a in BAD[case]]
    (inputs / "dir.mp4").mkdir(exist_ok=True)
    return args + ([] if "--checkpoint" in args else ["--checkpoint", str(run_dir)]) + ["--no-progress"]


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_is_one_line_and_leaves_nothing(
    case: str, inputs: Path, run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """In process (fast): ``main`` returns 2 after one ``rovr: error:`` line; no file is left or touched."""
    out_dir = tmp_path / "out"
    args = bad_args(case, inputs, run_dir, out_dir)
    before = contents(inputs, run_dir)
    assert main(args) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rovr: error:"), err
    assert files_in(out_dir) == []
    assert (
        contents(inputs, run_dir) == before
    )  # every input, mask and file of the run untouched, nothing added


@pytest.mark.parametrize("case", ["output not mp4", "range past the end", "unknown policy"])
def test_bad_input_with_the_progress_bar_on_is_still_one_line(
    case: str, inputs: Path, run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The progress bar opens with the first restored frames, so a refused input prints no bar."""
    args = [a for a in bad_args(case, inputs, run_dir, tmp_path / "out") if a != "--no-progress"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith("rovr: error:"), err


def test_a_negative_box_gets_the_box_message(
    inputs: Path, run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """argparse reads "-5,3,10,10" as an option ("expected one argument"); the box's own check says why."""
    assert main(bad_args("box left of the frame", inputs, run_dir, tmp_path / "out")) == 2
    assert "--box '-5,3,10,10' is not X,Y,W,H in whole pixels (left, top >= 0" in capsys.readouterr().err


def test_range_error_names_what_was_passed(
    inputs: Path, run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--start alone past the end: the message quotes --start, not a --frames the user never gave."""
    assert main(bad_args("range past the end", inputs, run_dir, tmp_path / "out")) == 2
    err = capsys.readouterr().err
    assert "--start 8 leaves 2 frame(s) of" in err and "--frames" not in err, err
    assert main(bad_args("range too short", inputs, run_dir, tmp_path / "out")) == 2
    assert "--start 0 --frames 2 leaves 2 frame(s) of" in capsys.readouterr().err
    assert main(bad_args("range past the video", inputs, run_dir, tmp_path / "out")) == 2
    assert "--start 12 is outside" in capsys.readouterr().err
    assert main(bad_args("range reaching past the end", inputs, run_dir, tmp_path / "out")) == 2
    assert "--start 5 --frames 6 reaches past" in capsys.readouterr().err


@pytest.mark.parametrize("case", ["other config", "output is the input", "run without Γ"])
def test_bad_input_in_a_real_process(case: str, inputs: Path, run_dir: Path, tmp_path: Path) -> None:
    out_dir = tmp_path / "out"
    r = rovr(*bad_args(case, inputs, run_dir, out_dir), cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rovr: error:"), r.stderr
    assert files_in(out_dir) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_unwritable_output_folder(inputs: Path, run_dir: Path, tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    r = rovr(
        "restore", inputs / "v.mp4", "--masks", inputs / "masks", "-o", locked / "o.mp4",
        "--checkpoint", run_dir, "--no-progress", cwd=tmp_path,
    )  # fmt: skip
    assert r.returncode == 2 and r.stderr.startswith("rovr: error:") and len(r.stderr.splitlines()) == 1
    assert files_in(locked) == []

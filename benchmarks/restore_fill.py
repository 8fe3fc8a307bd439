"""Quality of `rovr restore` at the input's resolution: ``--fill copy`` against ``--fill gamma``.

    .venv/bin/python benchmarks/restore_fill.py [--checkpoint runs/demo] [--data ../shared/data/real]
        [--max-error E] [--far-stride S] [--policy NAME]

Holes are cut into clean real clips, so the truth under them is known: the mask folder of one clip
on the other clip of the same size (dogs_jump's masks on schoolgirls and back, first 66 frames),
and on the 640x360 clips (parkour, skating) the paper's rectangle masks (the corruption config of
the run, drawn per T-frame chunk at Γ's working size and scaled up, as `rovr evaluate` draws them).
Each clip is restored five times by :func:`rovr.restore.restore_video` (the same windows, policy
and Γ; only the fill differs): ``--fill gamma``; with ``--unseen gamma`` (what no frame shows keeps
Γ's fill) ``--copy-from 0 --copy-reach 0`` (only the frames the policy chose), ``--copy-reach 0``
(those and the default ``--copy-from`` nearest other frames) and the default reach (then frames up
to ``--copy-reach`` away); and the default (``--unseen telea``: what no frame shows in-painted at
full size). Each is compared with the clean frames over the hole pixels: PSNR and SSIM
(:mod:`rovr.metrics.image`, the SSIM map averaged over hole pixels), mean over frames with holes.
Both outputs pass through the same H.264 encoding. Prints a Markdown table (for BENCHMARKS.md);
``--figure PNG`` also writes frame 45 of parkour at half size: holes, gamma, copy (default), the
original. ``--removal-figure PNG`` restores schoolgirls with its own masks (object removal, no truth
to score) with ``--fill gamma`` and the default and writes frames 20 and 60 at half size: the
original, ``--fill gamma``, the default.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np
import torch

from rovr import fill as fill_module
from rovr import restore as restore_module
from rovr.config import RunConfig
from rovr.data.corruption import rectangle_masks
from rovr.metrics.image import psnr, ssim
from rovr.restore import COPY_FROM, COPY_REACH, load_run, restore_video, working_size
from rovr.video import io


def chunked_rectangles(cfg_run: RunConfig, n: int, height: int, width: int, seed: int) -> np.ndarray:
    """bool (n, H, W): the run's rectangle masks per T-frame chunk at the working size, scaled up."""
    wh, ww = working_size(height, width, cfg_run.data.size)
    T = cfg_run.data.frames
    out = []
    for c, start in enumerate(range(0, n, T)):
        small = rectangle_masks(cfg_run.corruption, T, wh, ww, seed=seed + c)[: n - start]
        out += [
            cv2.resize(m.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST) > 0
            for m in small
        ]
    return np.stack(out)


def hole_scores(out: np.ndarray, clean: np.ndarray, masks: np.ndarray) -> tuple[float, float]:
    """Mean over frames with holes of the hole PSNR (dB) and hole SSIM."""
    p, s = [], []
    for o, c, m in zip(out, clean, masks):
        if not m.any():
            continue
        x = torch.from_numpy(o).permute(2, 0, 1)[None].float() / 255
        y = torch.from_numpy(c).permute(2, 0, 1)[None].float() / 255
        mk = torch.from_numpy(m)[None, None]
        p.append(float(psnr(x, y, mk)))
        s.append(float(ssim(x, y, mk)))
    return float(np.mean(p)), float(np.mean(s))


def temporal_error(out: np.ndarray, clean: np.ndarray, masks: np.ndarray) -> float:
    """Flicker in the holes: mean over pixels that are holes in two consecutive frames of
    |(o_t − o_t−1) − (x_t − x_t−1)| (output o, truth x; 8-bit levels, averaged over channels)."""
    both = masks[1:] & masks[:-1]
    d = (out[1:].astype(np.int16) - out[:-1]) - (clean[1:].astype(np.int16) - clean[:-1])
    return float(np.abs(d).mean(axis=-1)[both].mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default="runs/demo", help="trained run (default runs/demo)")
    ap.add_argument("--data", default="../shared/data/real", help="folder with the real clips")
    ap.add_argument("--seed", type=int, default=0, help="seed of the rectangle masks (default 0)")
    ap.add_argument(
        "--max-error",
        type=float,
        default=fill_module.MAX_ERROR,
        help=f"ring-error limit of the copy (default rovr.fill.MAX_ERROR = {fill_module.MAX_ERROR:g}; inf = none)",
    )
    ap.add_argument(
        "--far-stride",
        type=int,
        default=restore_module.FAR_STRIDE,
        help=f"grid of the far frames beyond {restore_module.DENSE_REACH} (default rovr.restore.FAR_STRIDE = {restore_module.FAR_STRIDE})",
    )
    ap.add_argument(
        "--policy",
        help="conditioning policy of the run or a baseline by name (default: what `rovr restore` picks)",
    )
    ap.add_argument("--figure", help="write a PNG of parkour's frame 45: holes | gamma | copy | original")
    ap.add_argument(
        "--removal-figure",
        help="write a PNG of schoolgirls with its own masks: original | --fill gamma | default (frames 20, 60)",
    )
    args = ap.parse_args()
    fill_module.MAX_ERROR = args.max_error
    if args.far_stride < 1:
        ap.error("--far-stride must be >= 1")
    restore_module.FAR_STRIDE = args.far_stride
    data, run = Path(args.data), Path(args.checkpoint)
    cfg, _ = load_run(run)
    cases = []
    for clip, mask_clip in (("schoolgirls", "dogs_jump"), ("dogs_jump", "schoolgirls")):
        frames = io.read_video(data / f"{clip}.mp4", 0, 66)
        masks = io.read_masks(data / f"{mask_clip}_mask", 80 if mask_clip == "schoolgirls" else 66, 240, 432)
        cases.append((f"{clip} + {mask_clip}'s masks", frames, masks[:66]))
    for clip in ("parkour", "skating"):
        frames = io.read_video(data / f"{clip}.mp4")
        h, w = frames.shape[1:3]
        cases.append((f"{clip} + rectangles", frames, chunked_rectangles(cfg, len(frames), h, w, args.seed)))

    rows: list[str] = []
    flicker_rows: list[str] = []
    with tempfile.TemporaryDirectory(prefix="restore_fill_") as tmp:
        root = Path(tmp)
        for name, frames, masks in cases:
            src, mdir = root / "in", root / "masks"
            for d in (src, mdir):
                if d.exists():
                    for f in d.iterdir():
                        f.unlink()
            io.write_frames(src, frames)
            mdir.mkdir(exist_ok=True)
            for i, m in enumerate(masks):
                io.write_png(mdir / f"{i:05d}.png", m)
            cells, flicker = [], []
            panels = (
                [np.where(masks[45][..., None], 0, frames[45]).astype(np.uint8)] if len(frames) > 45 else []
            )
            for fill, copy_from, reach, unseen in (
                ("gamma", 0, 0, "gamma"),
                ("copy", 0, 0, "gamma"),
                ("copy", COPY_FROM, 0, "gamma"),
                ("copy", COPY_FROM, COPY_REACH, "gamma"),
                ("copy", COPY_FROM, COPY_REACH, "telea"),
            ):
                out = root / f"{fill}{copy_from}_{reach}_{unseen}.mp4"
                res = restore_video(
                    src,
                    mdir,
                    out,
                    run,
                    fill=fill,
                    copy_from=copy_from,
                    copy_reach=reach,
                    unseen=unseen,
                    audio=False,
                    policy=args.policy,
                )
                restored = io.read_video(out)
                p, s = hole_scores(restored, frames, masks)
                if panels and (fill == "gamma" or unseen == "telea"):
                    panels.append(restored[45])
                cells.append((p, s, res.seconds, res.copied))
                flicker.append(f"{temporal_error(restored, frames, masks):.2f}")
                print(
                    f"  {name} {fill} {copy_from} {reach} {unseen}: {p:.2f} dB {s:.4f} ({res.seconds:.1f} s)",
                    file=sys.stderr,
                )
            if args.figure and name.startswith("parkour"):
                row = np.concatenate([*panels, frames[45]], axis=1)
                io.write_png(
                    args.figure,
                    cv2.resize(row, (row.shape[1] // 2, row.shape[0] // 2), interpolation=cv2.INTER_AREA),
                )
            (pg, sg, tg, _), *copies = cells
            h, w = frames.shape[1:3]
            flicker_rows.append(f"| {name} | {' | '.join(flicker)} |")
            rows.append(
                f"| {name} | {w}x{h}, {len(frames)} | {100 * masks.mean():.1f} % | {pg:.2f} / {sg:.3f} | "
                + " | ".join(f"{p:.2f} / {s:.3f} ({100 * c:.0f} %)" for p, s, _, c in copies)
                + f" | {' / '.join(f'{t:.1f}' for t in [tg] + [c[2] for c in copies])} |"
            )
    if args.removal_figure:
        with tempfile.TemporaryDirectory(prefix="restore_fill_") as tmp:
            girls, outs = data / "schoolgirls.mp4", []
            for fill in ("gamma", "copy"):
                out = Path(tmp) / f"{fill}.mp4"
                restore_video(
                    girls, data / "schoolgirls_mask", out, run, fill=fill, audio=False, policy=args.policy
                )
                outs.append(io.read_video(out))
            original = io.read_video(girls)
            grid = np.concatenate(
                [np.concatenate([original[i], *(o[i] for o in outs)], axis=1) for i in (20, 60)]
            )
            io.write_png(
                args.removal_figure,
                cv2.resize(grid, (grid.shape[1] // 2, grid.shape[0] // 2), interpolation=cv2.INTER_AREA),
            )
    print(
        f"Checkpoint {run}, policy {res.policy}, copy limit {args.max_error:g}, far stride {args.far_stride}; {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs\n"
    )
    print(
        "| clip + holes | size, frames | hole area | gamma: hole PSNR dB / SSIM "
        "| --unseen gamma: copy, chosen frames only (copied) "
        f"| chosen + {COPY_FROM} nearest (copied) | and up to {COPY_REACH} frames away (copied) "
        "| default: the rest in-painted (copied) | s: gamma / chosen / nearest / far / default |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    print("\n".join(rows))
    print(
        "\nTemporal error in the holes (temporal_error; lower = less flicker), the same five restores:\n\n"
        "| clip + holes | gamma | chosen | nearest | far | default |\n| --- | --- | --- | --- | --- | --- |"
    )
    print("\n".join(flicker_rows))


if __name__ == "__main__":
    main()

"""Frames that are hole everywhere (a dropped frame): `rovr restore`'s default against Γ's fill.

A clip of a real video (the first FRAMES frames of schoolgirls, resized to 160x120) with its own
object masks, and frames 5-7 masked everywhere; restored with a trained run's default fill, where
a frame with no known pixel takes each pixel unmoved from the nearest frames that show it
(`rovr.fill.copy_fill`), and with ``--fill gamma``, Γ's upsampled output — what such frames got
before. Prints the PSNR of each frame against the original and the mean over the all-hole frames
and over the others.

Run: ``.venv/bin/python benchmarks/whole_hole_frames.py [--run runs/demo]`` (seconds).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import cv2
import numpy as np

from rovr.restore import restore_video
from rovr.video import io

FRAMES, SIZE, DROPPED = 24, (160, 120), (5, 6, 7)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean())
    return 10 * np.log10(255**2 / mse)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default="runs/demo", help="trained run (default runs/demo)")
    ap.add_argument("--data", default="../shared/data/real", help="folder with schoolgirls.mp4 and its masks")
    args = ap.parse_args()
    data = Path(args.data)
    video = io.read_video(data / "schoolgirls.mp4", 0, FRAMES)
    frames = np.stack([cv2.resize(f, SIZE, interpolation=cv2.INTER_AREA) for f in video])
    mask_files = io.list_images(data / "schoolgirls_mask")[:FRAMES]
    masks = np.stack(
        [cv2.resize(cv2.imread(str(p), 0), SIZE, interpolation=cv2.INTER_NEAREST) > 0 for p in mask_files]
    )
    masks[list(DROPPED)] = True
    with tempfile.TemporaryDirectory(prefix="whole_hole_") as tmp:
        root = Path(tmp)
        io.write_frames(root / "in", frames)
        (root / "masks").mkdir()
        for i, m in enumerate(masks):
            io.write_png(root / "masks" / f"{i:05d}.png", m)
        rows = {}
        for fill in ("copy", "gamma"):
            res = restore_video(
                root / "in", root / "masks", root / fill, Path(args.run), fill=fill, audio=False
            )
            out = io.read_video(root / fill)
            rows[fill] = [psnr(out[i], frames[i]) for i in range(FRAMES)]
            print(f"{fill}: {res.whole_hole_frames} frames hole everywhere, policy {res.policy}")
    others = [i for i in range(FRAMES) if i not in DROPPED]
    print(
        "\n| fill | " + " | ".join(f"frame {i}" for i in range(3, 10)) + " | all-hole frames | the others |"
    )
    print("| --- " * 10 + "|")
    for fill, vals in rows.items():
        cells = " | ".join(f"{vals[i]:.2f}" for i in range(3, 10))
        print(
            f"| {fill} | {cells} | {np.mean([vals[i] for i in DROPPED]):.2f} | "
            f"{np.mean([vals[i] for i in others]):.2f} |"
        )


if __name__ == "__main__":
    main()

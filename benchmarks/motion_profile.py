"""How much a clip changes with temporal distance: mean |x_t − x_{t+d}| over all clips, per d.

Usage: .venv/bin/python benchmarks/motion_profile.py --run runs/demo [--data ../shared/data/real]

The clips are those an evaluation of the run would use (its test split, or every clip of ``--data``),
at the run's size, pixels in [0, 1]. A profile that grows fast with d means distant frames are poor
stand-ins for the target; compare the synthetic default with real footage.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from rovr.config import load_config
from rovr.evaluate import evaluation_clips

DISTANCES = (1, 2, 4, 8, 16)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--run", required=True, help="run folder (for its config)")
    parser.add_argument("--data", help="folder of videos (default: the run's test split)")
    args = parser.parse_args()
    cfg = load_config(Path(args.run) / "config.yaml")
    clips, what = evaluation_clips(cfg, args.data, seed=0, limit=0)
    frames = np.stack([c.original for c in clips]).astype(np.float32) / 255  # (N, T, H, W, 3)
    ds = [d for d in DISTANCES if d < frames.shape[1]]
    print(f"{what}: {len(clips)} clips of {frames.shape[1]} frames\n")
    print("| " + " | ".join(f"d = {d}" for d in ds) + " |")
    print("| " + " | ".join("---" for _ in ds) + " |")
    print("| " + " | ".join(f"{np.abs(frames[:, d:] - frames[:, :-d]).mean():.4f}" for d in ds) + " |")


if __name__ == "__main__":
    main()

"""Corruption + exact oracle time for one clip of T = 20 frames at 64² and 256² (issue 2).

Usage: .venv/bin/python benchmarks/bench_corruption.py [--repeats 20]
Prints a Markdown table: mask generation with redraws until the valid-pair bounds hold, the
oracle alone (coverage of all T³ triples from the pixels), and their sum as `corrupt()` does it.
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np

from rovr.config import CorruptionConfig
from rovr.data.corruption import Oracle, corrupt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    cfg = CorruptionConfig()
    print(f"Corruption + oracle, T = 20, {platform.machine()}, best and median of {args.repeats} seeds.\n")
    print("| size | corrupt() incl. redraws, median ms | best ms | oracle alone, median ms |")
    print("| --- | --- | --- | --- |")
    for size in (64, 256):
        frames = np.random.default_rng(0).integers(0, 256, (20, size, size, 3), dtype=np.uint8)
        full, oracle = [], []
        for seed in range(args.repeats):
            t0 = time.perf_counter()
            c = corrupt(frames, cfg, seed)
            t1 = time.perf_counter()
            Oracle(c.masks)
            t2 = time.perf_counter()
            full.append(1000 * (t1 - t0))
            oracle.append(1000 * (t2 - t1))
        print(f"| {size}x{size} | {np.median(full):.1f} | {min(full):.1f} | {np.median(oracle):.1f} |")


if __name__ == "__main__":
    main()

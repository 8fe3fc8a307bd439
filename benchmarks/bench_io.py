"""Decode throughput of rovr.video.io on the real clips; prints a Markdown table.

    .venv/bin/python benchmarks/bench_io.py [--data ../shared/data/real] [--repeats 3]

For each video: probe time (first, uncached: demux index), full decode (read_video) and a 20-frame
window from the middle (iter_frames, which seeks to the keyframe before it; its frames/s counts the
20 delivered frames, so the seek and the decoded frames before the window are overhead). Best of
``--repeats`` after one warm-up decode.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

import av
import cv2

from rovr.video import io

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"


def best_of(fn: Callable[[], object], repeats: int) -> float:
    """Shortest wall time of ``repeats`` calls, in seconds."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder of videos")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--window", type=int, default=20)
    args = ap.parse_args()
    cv2.setNumThreads(1)

    videos = sorted(p for p in args.data.iterdir() if io.is_video_file(p))
    rows = []
    for path in videos:
        t0 = time.perf_counter()
        info = io.probe(path)
        t_probe = time.perf_counter() - t0
        io.read_video(path)  # warm-up: file cache, decoder threads
        t_full = best_of(lambda p=path: io.read_video(p), args.repeats)
        start = max(0, info.frames // 2 - args.window // 2)
        n = min(args.window, info.frames - start)
        t_win = best_of(lambda p=path, s=start, k=n: list(io.iter_frames(p, s, k)), args.repeats)
        rows.append(
            f"| {path.name} | {info.width}x{info.height} | {info.frames} | {info.fps:.2f} | {t_probe * 1e3:.1f} "
            f"| {info.frames / t_full:.0f} | {t_full * 1e3:.0f} | {start}-{start + n - 1} | {n / t_win:.0f} "
            f"| {t_win * 1e3:.0f} |"
        )

    print(
        f"Decode throughput, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs visible, "
        f"best of {args.repeats}, PyAV {av.__version__}.\n"
    )
    print(
        "| video | size | frames | fps | probe ms | full decode frames/s | full ms | window | window frames/s | window ms |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    print("\n".join(rows))


if __name__ == "__main__":
    main()

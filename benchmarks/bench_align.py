"""Cost of Γ's frame alignment (``local.align``): Γ inference with and without it.

Usage: .venv/bin/python benchmarks/bench_align.py [--repeats 5] [--shifts]
Demo-size Γ (configs/demo.yaml), untrained weights, k = 2, torch's default threads.

``--shifts`` times the shift estimation alone (``local.estimate_shifts``) on the shapes its callers
use: one target's T = 20 frames (copy costs and brute force align every frame of a clip once per
target), a training batch of 16 targets × k = 2, and larger frames. Run it with ``PYTHONPATH`` set to
another checkout's ``src`` to compare two versions.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

import torch

from rovr.cli import packaged_config
from rovr.config import load_config
from rovr.models.local import LocalNet, estimate_shifts


def median_ms(fn, repeats: int) -> float:  # type: ignore[no-untyped-def]
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(1000 * (time.perf_counter() - t0))
    return statistics.median(times)


def time_shifts(repeats: int) -> None:
    g = torch.Generator().manual_seed(0)
    print(f"estimate_shifts, torch threads {torch.get_num_threads()}, median of {repeats}.\n")
    print("| targets × frames | frame (W×H) | max shift | ms |")
    print("| --- | --- | --- | --- |")
    for b, k, h, w, r in ((1, 20, 64, 64, 8), (16, 2, 64, 64, 8), (1, 20, 64, 116, 8), (8, 2, 256, 256, 32)):
        x, c = torch.rand(b, 3, h, w, generator=g), torch.rand(b, k, 3, h, w, generator=g)
        m = (torch.rand(b, 1, h, w, generator=g) < 0.2).float()
        cm = (torch.rand(b, k, 1, h, w, generator=g) < 0.2).float()
        ms = median_ms(lambda x=x, m=m, c=c, cm=cm, r=r: estimate_shifts(x, m, c, cm, r), repeats)
        print(f"| {b} × {k} | {w}×{h} | {r} | {ms:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--shifts", action="store_true", help="time estimate_shifts alone")
    args = parser.parse_args()
    if args.shifts:
        time_shifts(args.repeats)
        return
    cfg = load_config(packaged_config("demo"))
    torch.manual_seed(0)
    print(f"Γ inference, k = 2, torch threads {torch.get_num_threads()}.\n")
    print("| frame | batch | Γ without alignment (ms) | Γ with alignment (ms) | overhead |")
    print("| --- | --- | --- | --- | --- |")
    for (h, w), batch in (((64, 64), 32), ((256, 256), 8), ((240, 432), 8)):
        x = torch.rand(batch, 3, h, w)
        m = (torch.rand(batch, 1, h, w) < 0.2).float()
        c = torch.rand(batch, 2, 3, h, w)
        cm = (torch.rand(batch, 2, 1, h, w) < 0.2).float()
        times = []
        for align in (False, True):
            net = LocalNet(dataclasses.replace(cfg.local, align=align), 2).eval()
            with torch.inference_mode():
                times.append(median_ms(lambda net=net, x=x, m=m, c=c, cm=cm: net(x, m, c, cm), args.repeats))
        print(
            f"| {w}×{h} | {batch} | {times[0]:.0f} | {times[1]:.0f} | {100 * (times[1] / times[0] - 1):+.0f} % |"
        )


if __name__ == "__main__":
    main()

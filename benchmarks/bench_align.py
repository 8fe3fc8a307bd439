"""Cost of Γ's frame alignment (``local.align``): Γ inference with and without it.

Usage: .venv/bin/python benchmarks/bench_align.py [--repeats 5]
Demo-size Γ (configs/demo.yaml), untrained weights, k = 2, torch's default threads.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

import torch

from rovr.cli import packaged_config
from rovr.config import load_config
from rovr.models.local import LocalNet


def median_ms(fn, repeats: int) -> float:  # type: ignore[no-untyped-def]
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(1000 * (time.perf_counter() - t0))
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
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

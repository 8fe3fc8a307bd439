"""SSIM map (the weight-free L_P fallback, ``rovr.metrics.image.ssim_map``): time per call; a Markdown table.

    .venv/bin/python benchmarks/bench_ssim.py [--threads 0] [--rounds 5] [--min-seconds 1]

Every reward, evaluation row and brute-force pair scores frames with ``1 − mean SSIM`` when no VGG
weights are present, and Γ's training loss (Eq. 1) differentiates it. This times ``ssim_map`` on the
shapes those callers use (brute force's 171 pairs of a 64² target, a training batch forward+backward,
256² frames) against ``gather``, the previous implementation (symmetric padding of both dimensions by
one advanced-indexing gather before the two 1-D Gaussian passes), alternating the two in rounds
(median per call). The two must agree exactly (``torch.equal``); the script stops if they do not.
"""

from __future__ import annotations

import argparse
import functools
import platform
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from rovr.metrics import image
from rovr.train.common import keep_freed_memory

CASES = [  # (label, batch, side, backward)
    ("brute force: 171 pairs, 64²", 171, 64, False),
    ("training batch 16, 64², fwd+bwd", 16, 64, True),
    ("batch 128, 64², fwd+bwd", 128, 64, True),
    ("inference batch 8, 256²", 8, 256, False),
    ("training batch 16, 256², fwd+bwd", 16, 256, True),
]


def ssim_map_gather(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The previous ``ssim_map``: both dimensions padded at once by an index gather, then the two passes."""
    B, C, H, W = x.shape
    r = image.SSIM_RADIUS
    g = image._gaussian_window(x.dtype, x.device)
    iy = torch.cat([torch.arange(r - 1, -1, -1), torch.arange(H), torch.arange(H - 1, H - 1 - r, -1)])
    ix = torch.cat([torch.arange(r - 1, -1, -1), torch.arange(W), torch.arange(W - 1, W - 1 - r, -1)])
    stats = torch.cat([x, y, x * x, y * y, x * y], dim=1)[..., iy, :][..., ix]
    n = stats.shape[1]
    stats = F.conv2d(stats, g.view(1, 1, -1, 1).expand(n, 1, -1, 1), groups=n)
    stats = F.conv2d(stats, g.view(1, 1, 1, -1).expand(n, 1, 1, -1), groups=n)
    mx, my, mxx, myy, mxy = stats.split(C, dim=1)
    vx, vy, cxy = mxx - mx * mx, myy - my * my, mxy - mx * my
    c1, c2 = image._C1, image._C2
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return s.mean(dim=1, keepdim=True)


def call(
    f: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], x: torch.Tensor, y: torch.Tensor, backward: bool
) -> object:
    """One SSIM map of (x, y) by ``f``, under no_grad, or its mean's backward pass with ``backward``."""
    if not backward:
        with torch.no_grad():
            return f(x, y)
    out = f(x, y).mean()
    out.backward()
    return out


def time_call(fn: Callable[[], object], min_seconds: float) -> float:
    """Seconds per call of ``fn``, repeated for at least ``min_seconds`` (after one warm-up call)."""
    fn()
    n, start = 0, time.perf_counter()
    while True:
        fn()
        n += 1
        spent = time.perf_counter() - start
        if spent >= min_seconds:
            return spent / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--rounds", type=int, default=5, help="alternating rounds per case (median reported)")
    ap.add_argument("--min-seconds", type=float, default=1.0, help="time per measurement")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    keep_freed_memory()  # as rovr's training and evaluation commands do
    print(
        f"{platform.processor() or platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads\n"
    )
    print("| case | gather (ms) | ssim_map (ms) | speed-up |")
    print("| --- | --- | --- | --- |")
    g = torch.Generator().manual_seed(0)
    for label, batch, side, backward in CASES:
        x = torch.rand(batch, 3, side, side, generator=g, requires_grad=backward)
        y = torch.rand(batch, 3, side, side, generator=g)
        if not torch.equal(ssim_map_gather(x, y), image.ssim_map(x, y)):
            raise SystemExit(f"{label}: ssim_map and the gather reference disagree")

        old, new = [], []
        for _ in range(args.rounds):
            old.append(time_call(functools.partial(call, ssim_map_gather, x, y, backward), args.min_seconds))
            new.append(time_call(functools.partial(call, image.ssim_map, x, y, backward), args.min_seconds))
        a, b = statistics.median(old), statistics.median(new)
        print(f"| {label} | {a * 1e3:.1f} | {b * 1e3:.1f} | {a / b:.2f}x |", flush=True)


if __name__ == "__main__":
    main()

"""Cost of Γ's frame alignment (``local.align``): Γ inference with and without it.

Usage: .venv/bin/python benchmarks/bench_align.py [--repeats 5] [--shifts]
Demo-size Γ (configs/demo.yaml), untrained weights, k = 2, torch's default threads.

``--shifts`` times the shift estimation alone (``local.estimate_shifts``) on the shapes its callers
use: one target's T = 20 frames (copy costs and brute force align every frame of a clip once per
target), a training batch of 16 targets × k = 2, and larger frames. Run it with ``PYTHONPATH`` set to
another checkout's ``src`` to compare two versions.

``--run RUN [--data DIR]`` checks a version against another on a trained run: it estimates the shift
of every frame of every clip onto each of its targets (the run's test clips, corruption seed 5, at
most 8 clips; with ``--data`` that folder's clips instead; max shift 8) and collects stage 2's
states with their copy costs on the first ``--clips`` corrupted training clips, timing the
collection; it prints a SHA-256 of the shifts and of the costs, so two versions that agree print the
same digests.
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


def check_run(run: str, data: str | None, n_clips: int) -> None:
    import hashlib
    from pathlib import Path

    import numpy as np

    from rovr.reconstruct import to_tensor
    from rovr.restore import load_run
    from rovr.train.common import corrupted_clips, keep_freed_memory, load_local
    from rovr.train.imitation import collect_states

    keep_freed_memory()
    cfg, rd = load_run(Path(run))
    source = cfg.data.source
    if data:
        cfg.data.source = data
    shifts = hashlib.sha256()
    pairs = 0
    for clip in corrupted_clips(cfg, "train" if data else "test", seed=5, limit=8):
        f, m = to_tensor(np.asarray(clip.frames)), torch.from_numpy(np.asarray(clip.masks)).float()[:, None]
        for t in range(f.shape[0]):
            s = estimate_shifts(f[t : t + 1], m[t : t + 1], f[None], m[None], 8)
            shifts.update(s.numpy().tobytes())
            pairs += f.shape[0]
    print(f"shifts of {pairs} (target, frame) pairs: sha256 {shifts.hexdigest()[:16]}")
    cfg.data.source = source
    clips = corrupted_clips(cfg, "train", seed=cfg.seed * 7919 + 11, limit=n_clips)
    net = load_local(rd.local, cfg)
    t0 = time.perf_counter()
    states = collect_states(clips, net, cfg, cfg.seed, "copy")
    spent = time.perf_counter() - t0
    assert states.cost is not None
    digest = hashlib.sha256(states.cost.numpy().tobytes()).hexdigest()[:16]
    print(
        f"stage 2 states of {len(clips)} training clips: {len(states)} in {spent:.1f} s, copy costs sha256 {digest}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--shifts", action="store_true", help="time estimate_shifts alone")
    parser.add_argument("--run", help="trained run folder: digests of its shifts and copy costs")
    parser.add_argument("--data", help="with --run: estimate the shifts on this folder's clips")
    parser.add_argument(
        "--clips", type=int, default=32, help="with --run: training clips to collect states on"
    )
    args = parser.parse_args()
    if args.run:
        check_run(args.run, args.data, args.clips)
        return
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

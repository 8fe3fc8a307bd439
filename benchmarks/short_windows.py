"""Videos shorter than the policy's T: does the pointer policy still choose better than the masks' oracle?

    .venv/bin/python benchmarks/short_windows.py [--run runs/demo] [--data ../shared/data/real]
        [--lengths 6 10 14] [--seeds 3]

`rovr restore` runs a video shorter than T in one window of all its frames. The pointer policy is
length-agnostic (its position features are fractions of the window), so it can choose there, though
it was trained on windows of T frames. For each length n the clips of ``--data`` are cut to n frames
and corrupted as in evaluation (the run's corruption, ``--seeds`` corruption seeds), and Γ rebuilds
every frame from the pairs of: the run's policy (``--policy``, default imitation, greedy at its
temperature), the baselines that need no ground truth (`oracle_best`, the coverage oracle of the
masks, which `rovr restore` used for every short video before; `sequential`; `stride`) and the
copy teacher `oracle_copy` (it peeks at the truth: a bound, not a choice restore could make).
Prints the mean per-frame L_P for a Markdown table (BENCHMARKS.md, "Videos shorter than T").
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import time
from pathlib import Path

import numpy as np
import torch

from common import load_scoring
from rovr.conditioning import make_baseline
from rovr.evaluate import folder_clips
from rovr.reconstruct import Episodes, reconstruct
from rovr.train.common import load_policy

BASELINES = ("oracle_best", "sequential", "stride", "oracle_copy")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default="runs/demo", help="trained run (default runs/demo)")
    ap.add_argument("--data", default="../shared/data/real", help="folder of videos (default the real clips)")
    ap.add_argument("--policy", default="imitation", help="policy of the run (default imitation)")
    ap.add_argument("--lengths", type=int, nargs="+", default=[6, 10, 14], help="window lengths n < T")
    ap.add_argument("--seeds", type=int, default=3, help="corruption seeds (default 3)")
    args = ap.parse_args()
    cfg, run, net, metric = load_scoring(args.run)
    device = torch.device("cpu")
    policy = load_policy(run.policy(args.policy), cfg, args.policy, "rovr train", device)
    names = [f"{args.policy} (T={cfg.data.frames})", *BASELINES]
    print(
        f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}; run {args.run}\n"
    )
    print("| frames | clips | " + " | ".join(names) + " |")
    print("| --- | --- | " + " | ".join("---" for _ in names) + " |")
    started = time.perf_counter()
    for n in args.lengths:
        short = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, frames=n))
        losses: dict[str, list[float]] = {name: [] for name in names}
        count = 0
        for seed in range(args.seeds):
            clips = folder_clips(short, Path(args.data), seed)
            count = len(clips)
            choosers = [policy, *(make_baseline(b, seed) for b in BASELINES)]
            for name, chooser in zip(names, choosers):
                ep = Episodes.of_run(cfg, clips, net, metric)
                losses[name] += reconstruct(ep, chooser).loss.ravel().tolist()
        row = " | ".join(f"{np.mean(losses[name]):.4f}" for name in names)
        print(f"| {n} | {count} | {row} |")
    print(f"\n{time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()

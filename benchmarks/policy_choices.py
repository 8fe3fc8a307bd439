"""Which frames each policy of a run conditions on: distance from the target, coverage and L_P.

Usage: .venv/bin/python benchmarks/policy_choices.py --run runs/demo [--data ../shared/data/real] [--seed 0] [--brute-force]

For the run's test split (or every clip of ``--data``, up to the run's ``eval.max_clips``, spread over
the videos) with one corruption seed: for each learned policy of the run and for ``oracle_copy`` and
``sequential`` (and ``brute_force`` with ``--brute-force``: where the best pair lies), the mean distance |i − t| of the nearer and of the farther chosen frame, the oracle
coverage of the pair, and L_P. Explains *what* a policy learned where Table 2 says only how well it did.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from rovr.conditioning import Chooser, make_baseline
from rovr.evaluate import evaluation_clips, load_policies, run_policy_of
from rovr.metrics.perceptual import build_perceptual
from rovr.restore import load_run
from rovr.train.common import load_local


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--run", required=True, help="run folder (rovr demo / rovr train)")
    parser.add_argument("--data", help="folder of videos (default: the run's test split)")
    parser.add_argument("--seed", type=int, default=0, help="corruption seed")
    parser.add_argument("--brute-force", action="store_true", help="add the brute-force row (slow)")
    args = parser.parse_args()
    cfg, run = load_run(Path(args.run))
    device = torch.device("cpu")
    net = load_local(run.local, cfg, device)
    perceptual = build_perceptual(cfg.metric, device)
    clips, what = evaluation_clips(cfg, args.data, args.seed, cfg.eval.max_clips)
    policies, _ = load_policies(cfg, run.root, device)
    choosers: list[Chooser] = [*policies.values()]
    extra = ["oracle_copy", "sequential"] + (["brute_force"] if args.brute_force else [])
    choosers += [make_baseline(name) for name in extra]
    print(f"{what}: {len(clips)} clips, corruption seed {args.seed}, L_P = {perceptual.name}\n")
    print("| policy | nearer frame: mean abs(i − t) | farther frame | pair coverage | L_P |")
    print("| --- | --- | --- | --- | --- |")
    for chooser in choosers:
        r = run_policy_of(cfg, clips, chooser, net, perceptual, device=device)
        dist = np.abs(r.choices - np.arange(r.choices.shape[1])[None, :, None])  # (B, T, k)
        print(
            f"| {chooser.name} | {dist.min(2).mean():.2f} | {dist.max(2).mean():.2f} "
            f"| {r.coverage.mean():.3f} | {r.loss.mean():.4f} |"
        )


if __name__ == "__main__":
    main()

"""Weight-space interpolation between the imitation policy and its PPG fine-tune (WiSE-FT).

    .venv/bin/python benchmarks/policy_interpolation.py [--run runs/demo] [--data ../shared/data/real]
        [--alphas 0 0.25 0.5 0.75 1] [--seeds 3]

Fine-tuning often trades robustness under a distribution shift for gains on its own data, and
averaging the weights of the start and the fine-tuned model, θ(α) = (1 − α) θ_imitation + α θ_PPG,
can keep most of the gain while losing less, sometimes more than either end (Wortsman et al.,
"Robust fine-tuning of zero-shot models", CVPR 2022). Here the shift is synthetic training clips →
real footage, and PPG (`rovr_flow_warm`) beats imitation on the first and loses on the second. For
each α the interpolated actor plays greedily at PPG's temperature (`ppg.tau`, from its checkpoint)
on the clips `rovr evaluate` uses: the run's test split and ``--data`` (``eval.max_clips`` clips per
corruption seed, seeds 0 … ``--seeds``−1); α = 0 is also shown at imitation's own temperature,
which is what `rovr evaluate` reports for it. Prints the mean per-frame L_P (and per seed).
"""

from __future__ import annotations

import argparse
import copy
import platform
import time

import numpy as np
import torch

from common import load_scoring
from rovr.conditioning import PolicyChooser
from rovr.evaluate import evaluation_clips
from rovr.reconstruct import Episodes, reconstruct
from rovr.train.common import load_policy


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default="runs/demo", help="trained run with imitation and rovr_flow_warm")
    ap.add_argument(
        "--data", default="../shared/data/real", help="second data folder (default the real clips)"
    )
    ap.add_argument("--alphas", type=float, nargs="+", default=[0.0, 0.25, 0.5, 0.75, 1.0])
    ap.add_argument("--seeds", type=int, default=3, help="corruption seeds (default 3)")
    args = ap.parse_args()
    cfg, run, net, metric = load_scoring(args.run)
    device = torch.device("cpu")
    start = load_policy(run.policy("imitation"), cfg, "imitation", "rovr imitate", device)
    tuned = load_policy(run.policy("rovr_flow_warm"), cfg, "rovr_flow_warm", "rovr train-policy", device)
    a, b = start.actor.state_dict(), tuned.actor.state_dict()
    sets = {
        "synthetic test split": [
            evaluation_clips(cfg, None, s, cfg.eval.max_clips)[0] for s in range(args.seeds)
        ],
        args.data: [evaluation_clips(cfg, args.data, s, cfg.eval.max_clips)[0] for s in range(args.seeds)],
    }
    print(
        f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}; run {args.run}\n"
    )
    print("| α | τ | " + " | ".join(f"L_P {name} (per seed)" for name in sets) + " |")
    print("| --- | --- | " + " | ".join("---" for _ in sets) + " |")
    started = time.perf_counter()
    rows = [(0.0, start.tau)] + [(alpha, tuned.tau) for alpha in args.alphas]
    for alpha, tau in rows:
        actor = copy.deepcopy(tuned.actor)
        actor.load_state_dict(
            {k: (1 - alpha) * a[k] + alpha * b[k] if a[k].is_floating_point() else b[k] for k in a}
        )
        cells = []
        for seeds in sets.values():
            losses = []
            for clips in seeds:
                ep = Episodes.of_run(cfg, clips, net, metric)
                losses.append(float(reconstruct(ep, PolicyChooser(actor.eval(), "mix", tau=tau)).loss.mean()))
            cells.append(f"{np.mean(losses):.4f} ({' / '.join(f'{v:.4f}' for v in losses)})")
        print(f"| {alpha:g} | {tau:g} | " + " | ".join(cells) + " |")
    print(f"\n{time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()

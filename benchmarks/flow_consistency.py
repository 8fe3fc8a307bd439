"""Does conditioning consecutive targets on the same frames raise flow recovery (Eq. 3)?

Usage: .venv/bin/python benchmarks/flow_consistency.py --run runs/demo [--data ../shared/data/real] [--seeds 3]
[--flow-greedy]

The flow reward can only change a policy's choices if some choices give a video whose optical flow
is closer to the original's without giving better frames one by one. The most likely such choice is
temporal consistency: rebuilding neighbouring targets from the same frames. This benchmark measures
it with the copy-cost teacher (``oracle_copy``, which peeks at the original) made sticky: at target
t it keeps the previous target's pair P (``same``: P itself; ``shift``: P + 1, the same offsets
from the target) whenever that pair is allowed and its copy cost is within a factor 1 + ε of the
cheapest, and otherwise takes the cheapest pair. Rows: ``oracle_copy`` (ε = 0), the sticky
variants, ``nearest``, ``sequential`` (always t − 1, t − 2 or the nearest frames: maximally consistent) and
``random``; L_P and flow recovery on the run's test split (or every clip of ``--data``, up to the
run's ``eval.max_clips``), mean ± std over ``--seeds`` corruption seeds, plus the share of targets
that kept the previous target's pair and each row's flow recovery minus ``oracle_copy``'s on the
same corruption seed (mean ± std over seeds).

``--flow-greedy`` asks the same question with the strongest choosers instead (minutes per seed): how
much flow recovery is there for any choice to buy beyond ``brute_force`` (the lowest-L_P pair for
every target)? :class:`FlowGreedy` rebuilds every pair as brute force does and, among those within
1 + ε of the best L_P, takes the one whose flow from the repaired previous frame is closest to the
original's: what a flow-aware choice can buy at least (a greedy, one-step-ahead chooser; a
policy that planned further could do better), frame by frame, in the paper's MDP.
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import numpy as np
import torch

from rovr.conditioning import Chooser, cheapest_pairs, copy_pair_costs, make_baseline
from rovr.evaluate import evaluation_clips, run_policy_of
from rovr.metrics.flow import FlowBackend, build_flow, pair_flows
from rovr.metrics.perceptual import build_perceptual
from rovr.reconstruct import Episodes
from rovr.restore import load_run
from rovr.train.common import load_local


class StickyCopy:
    """``oracle_copy`` that keeps the previous target's pair (or that pair + 1) while its copy cost is
    within ``1 + eps`` of the cheapest pair's."""

    def __init__(self, eps: float, mode: str) -> None:
        self.eps, self.mode = eps, mode
        self.name = f"sticky copy, {mode}, eps {eps:g}"
        self.prev: torch.Tensor | None = None
        self.kept = self.steps = 0

    def reset(self, episodes: Episodes) -> None:
        self.prev = None

    def choose(self, episodes: Episodes) -> torch.Tensor:
        cost = copy_pair_costs(episodes)  # (B, T, T), +inf where not allowed
        best = cheapest_pairs(cost)
        if self.prev is not None:
            n = episodes.num_frames
            cand = self.prev + (1 if self.mode == "shift" else 0)
            inside = ((cand >= 0) & (cand < n)).all(dim=1)
            rows = torch.arange(len(best))
            c = cost[rows, cand[:, 0].clamp(0, n - 1), cand[:, 1].clamp(0, n - 1)]
            low = cost.flatten(1).min(dim=1).values
            keep = inside & torch.isfinite(c) & (c <= (1.0 + self.eps) * low + 1e-12)
            best = torch.where(keep[:, None], cand, best)
            self.kept += int(keep.sum())
            self.steps += len(best)
        self.prev = best.clone()
        return best


class FlowGreedy:
    """Brute force that trades L_P for flow: among the pairs whose Γ output has an L_P within a factor
    ``1 + eps`` of the best pair's, the one whose flow from the repaired previous target, F(x̂_{t−1}, x̂_t),
    is closest to the original's F(x_{t−1}, x_t) (peeks at X; the first target takes the best L_P).
    ``eps = 0`` is ``brute_force``; ``eps = inf`` picks by flow alone. Meaningful in the paper's MDP,
    where x̂_{t−1} is in the video when target t is rebuilt (targets visited in order)."""

    def __init__(self, eps: float, flow: FlowBackend) -> None:
        self.eps, self.flow = eps, flow
        self.name = f"flow-greedy brute force, eps {eps:g}"

    def reset(self, episodes: Episodes) -> None:
        pass

    @torch.no_grad()
    def choose(self, episodes: Episodes) -> torch.Tensor:
        t, n, k, dev = episodes.t, episodes.num_frames, episodes.k, episodes.device
        assert episodes.perceptual is not None
        combos = torch.tensor(list(itertools.combinations([i for i in range(n) if i != t], k)), device=dev)
        best = torch.zeros(episodes.batch_size, k, dtype=torch.long, device=dev)
        for b in range(episodes.batch_size):
            rows = torch.full((len(combos),), b, dtype=torch.long, device=dev)
            shifts = episodes.frame_shifts(b)
            x_hat = episodes.rebuild(combos, rows, None if shifts is None else shifts[combos])
            lp = episodes.perceptual(x_hat, episodes.original[b, t].expand_as(x_hat))
            score = lp
            if t > 0 and episodes.repaired()[t - 1]:
                prev = episodes.video[b, t - 1].expand_as(x_hat)
                ref = self.flow.flow(episodes.original[b, t - 1 : t + 1])  # (1, 2, H, W)
                err = (pair_flows(self.flow, prev, x_hat) - ref).flatten(1).pow(2).sum(1)
                allowed = torch.ones_like(lp, dtype=torch.bool)
                if self.eps != float("inf"):  # inf · 0 would be NaN: flow alone allows every pair
                    allowed = lp <= (1.0 + self.eps) * lp.min() + 1e-12
                score = torch.where(allowed, err, torch.full_like(err, float("inf")))
            best[b] = combos[int(score.argmin())]
        return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--run", required=True, help="run folder (rovr demo / rovr train)")
    parser.add_argument("--data", help="folder of videos (default: the run's test split)")
    parser.add_argument("--seeds", type=int, default=3, help="corruption seeds")
    parser.add_argument(
        "--flow-greedy",
        action="store_true",
        help="instead: oracle_copy, nearest, brute_force and the brute-force choosers that trade L_P for "
        "flow (FlowGreedy; minutes per seed)",
    )
    args = parser.parse_args()
    cfg, run = load_run(Path(args.run))
    device = torch.device("cpu")
    net = load_local(run.local, cfg, device)
    perceptual = build_perceptual(cfg.metric, device)
    flow = build_flow(cfg.metric, device)
    sticky = [StickyCopy(eps, mode) for mode in ("same", "shift") for eps in (0.0, 0.1, 0.3, 1.0)]
    choosers: list[Chooser] = [
        make_baseline("oracle_copy"),
        *sticky,
        make_baseline("nearest"),
        make_baseline("sequential"),
    ]
    choosers.append(make_baseline("random"))
    if args.flow_greedy:  # the brute-force rows alone: the sticky ones are cheap but not what is asked
        choosers = [make_baseline("oracle_copy"), make_baseline("nearest"), make_baseline("brute_force")]
        choosers += [FlowGreedy(e, flow) for e in (0.2, float("inf"))]
    results: dict[str, list[tuple[float, float]]] = {c.name: [] for c in choosers}
    what = ""
    for seed in range(args.seeds):
        clips, what = evaluation_clips(cfg, args.data, seed, cfg.eval.max_clips)
        for chooser in choosers:
            r = run_policy_of(cfg, clips, chooser, net, perceptual, flow=flow, device=device)
            assert r.flow_recovery is not None
            results[chooser.name].append((float(r.loss.mean()), float(np.nanmean(r.flow_recovery))))
    print(f"{what}: {args.seeds} corruption seeds, L_P = {perceptual.name}, flow = {flow.name}\n")
    print("| chooser | kept the previous pair | L_P | flow recovery | flow − oracle_copy's, same seed |")
    print("| --- | --- | --- | --- | --- |")
    ref = np.array(results["oracle_copy"])[:, 1]
    for chooser in choosers:
        v = np.array(results[chooser.name])
        kept = (
            f"{chooser.kept / chooser.steps:.2f}"
            if isinstance(chooser, StickyCopy) and chooser.steps
            else "—"
        )
        d = v[:, 1] - ref
        print(
            f"| {chooser.name} | {kept} | {v[:, 0].mean():.4f} ± {v[:, 0].std():.4f} "
            f"| {v[:, 1].mean():.3f} ± {v[:, 1].std():.3f} | {d.mean():+.4f} ± {d.std():.4f} |"
        )


if __name__ == "__main__":
    main()

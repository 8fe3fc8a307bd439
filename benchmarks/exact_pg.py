"""Exact expected policy gradient over every pair: what policy-gradient training of a run's policy
could reach with no sampling noise at all.

Usage: .venv/bin/python benchmarks/exact_pg.py --run runs/demo --out DIR [--data FOLDER] [--split train]
       [--variants 2] [--steps 400] [--lr 5e-4] [--tau 0.1]

For every state (a target t of a clip of ``--split``, ``--variants`` mask draws per clip; ``--data``:
that folder's clips, split ``all`` by default) Γ rebuilds the target from all C(T − 1, 2) pairs and
scores each by its L_P gain r(s, {a, b}) = L_P(x̄_t, x_t) − L_P(x̂_t, x_t), PPG's local reward.
From the run's imitation policy the actor then ascends, by Adam on minibatches,

    J = E_s Σ_{a<b} π({a, b} | s) r(s, {a, b})

with the exact pair probabilities at ``--tau`` (:func:`rovr.models.policy.pair_log_prob_table`): the
gradient PPG's sampled rollouts estimate, without their noise. The actor is saved into a copy of
the run as ``policy_exact.safetensors`` (greedy at that τ), so that
``rovr evaluate --checkpoint DIR [--data ...]`` puts it beside ``imitation``. Cost: about 1 s of Γ
a state at 64×64 on 2 cores (171 pairs).
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import sys
import time
from pathlib import Path

import torch

from rovr.metrics.perceptual import build_perceptual
from rovr.models.policy import build_actor, pair_log_prob_table
from rovr.reconstruct import Episodes
from rovr.restore import load_run
from rovr.train.common import corrupted_clips, load_local, load_model, save_model

COPIED = (
    "config.yaml",
    "local.json",
    "local.safetensors",
    "policy_imitation.json",
    "policy_imitation.safetensors",
)


def _u8(x: torch.Tensor) -> torch.Tensor:
    return (x * 255 + 0.5).clamp(0, 255).to(torch.uint8)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--run", required=True, help="run folder with Γ and an imitation policy")
    parser.add_argument("--out", required=True, help="new run folder for the result")
    parser.add_argument("--data", default="", help="train on this folder's clips instead of the run's data")
    parser.add_argument("--split", default="", help="split to train on (default: train, or all with --data)")
    parser.add_argument("--variants", type=int, default=2, help="mask draws per clip")
    parser.add_argument("--steps", type=int, default=400, help="Adam steps")
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument(
        "--tau", type=float, default=0.1, help="the policy's temperature (the demo's ppg.tau)"
    )
    parser.add_argument("--batch", type=int, default=64, help="states per Adam step")
    args = parser.parse_args()
    torch.manual_seed(0)
    cfg, run = load_run(Path(args.run))
    if cfg.condition_on != "observed":
        sys.exit(
            f"exact_pg.py: '{args.run}' runs with condition_on={cfg.condition_on}, where a choice changes the "
            "later states and the per-state gradient below is not the exact one; use a run trained with "
            "--set condition_on=observed"
        )
    if args.data:
        cfg = dataclasses.replace(
            cfg, data=dataclasses.replace(cfg.data, source=str(Path(args.data).resolve()))
        )
    split = args.split or ("all" if args.data else "train")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name in COPIED:
        shutil.copy(run.root / name, out / name)
    net = load_local(run.local, cfg)
    metric = build_perceptual(cfg.metric)
    T = cfg.data.frames
    ia, ib = torch.triu_indices(T, T, offset=1)  # the order of pair_log_prob_table

    videos, targets, ts, rewards = [], [], [], []
    started = time.time()
    with torch.no_grad():
        for v in range(args.variants):
            clips = corrupted_clips(cfg, split, seed=7000 + v)
            for s in range(0, len(clips), 2):  # 2 clips × 171 pairs through Γ at once
                ep = Episodes.of_run(cfg, clips[s : s + 2], net, metric)
                B = ep.batch_size
                while not ep.done:
                    obs, t = ep.observation(), ep.t
                    ok = (ia != t) & (ib != t)
                    pairs = torch.stack([ia[ok], ib[ok]], 1)[None].expand(B, -1, -1)
                    r = ep.try_pairs(pairs)  # (B, M'): the L_P gain of every pair
                    full = torch.zeros(B, len(ia))
                    full[:, ok] = r
                    videos.append(_u8(obs.video))
                    targets.append(_u8(obs.target))
                    ts.append(obs.t.clone())
                    rewards.append(full)
                    # observed conditioning: later observations do not depend on this choice
                    ep.step(pairs[torch.arange(B), r.argmax(1)])
            print(
                f"mask draw {v}: {sum(len(x) for x in ts)} states, {time.time() - started:.0f} s", flush=True
            )
    video, target, t_all, R = torch.cat(videos), torch.cat(targets), torch.cat(ts), torch.cat(rewards)
    n = len(t_all)

    actor = build_actor(cfg.policy, T)
    load_model(run.policy("imitation"), actor, cfg, "rovr imitate")
    opt = torch.optim.Adam(actor.parameters(), lr=args.lr)

    def expected_gain(idx: torch.Tensor) -> torch.Tensor:
        o = actor(video[idx].float() / 255, target[idx].float() / 255, t_all[idx])
        p = pair_log_prob_table(o.logits, args.tau, o.pair_bias)[0].exp()  # (b, M); 0 where t is in the pair
        return (p * R[idx]).sum(1)

    def report(label: str) -> None:
        with torch.no_grad():
            j = expected_gain(torch.arange(n)).mean()
        print(f"{label}: expected L_P gain {j:.5f} (best pair {R.max(1).values.mean():.5f})", flush=True)

    report("imitation")
    g = torch.Generator().manual_seed(0)
    for step in range(args.steps):
        idx = torch.randint(n, (args.batch,), generator=g)
        loss = -expected_gain(idx).mean() / R[idx].abs().mean().clamp(min=1e-6)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(actor.parameters(), 0.5)
        opt.step()
        if (step + 1) % 100 == 0:
            report(f"step {step + 1}")
    path = out / "policy_exact.safetensors"
    save_model(path, actor, cfg, stage="ppg", policy="exact", iterations=args.steps, tau=args.tau)
    print(f"saved {path} ({time.time() - started:.0f} s); now: rovr evaluate --checkpoint {out} ...")


if __name__ == "__main__":
    main()

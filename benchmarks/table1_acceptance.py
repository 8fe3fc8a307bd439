"""Table 1 acceptance of issue 3: Γ with the oracle's best / random / worst pairs (+ brute force), classical peers.

    .venv/bin/python benchmarks/table1_acceptance.py --run RUN [--real ../shared/data/real] [--seeds 3]

``RUN`` is a folder written by ``rovr pretrain-local --out RUN`` (``config.yaml`` + ``local.safetensors``).
For each corruption seed 0 … seeds−1, Table 1 (:func:`rovr.evaluate.table1`) and its classical peers
(:func:`rovr.evaluate.table1_peers`: OpenCV Telea in-painting, copying hole pixels from the oracle's
best pair) are computed on the run's held-out test split and, with ``--real``, on every clip of that
folder (cut and corrupted as in training). Frames are pooled over the seeds
(:func:`rovr.evaluate.pool_table1_rows`): mean ± std per frame and the half width of the 95 % CI of
the mean. The script prints the Markdown tables and the acceptance checks:

- best < random < worst on L_P, with non-overlapping 95 % CIs (both data sets);
- Γ with the best pair beats cv2.inpaint on hole PSNR (both data sets);
- Γ with the best pair beats copy-from-best-pair on hole PSNR (synthetic; reported for real clips).

Exit status 0 when every required check holds, 1 otherwise.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from rovr.config import RunConfig, config_from_dict, read_yaml
from rovr.data.corruption import Corrupted
from rovr.errors import RovrError
from rovr.evaluate import folder_clips, markdown_table1, pool_table1_rows, table1, table1_peers
from rovr.metrics.perceptual import PerceptualMetric, build_perceptual
from rovr.models.local import LocalNet
from rovr.train.common import RunDir, corrupted_clips, load_model, setup_torch

Row = dict[str, Any]


def pooled_tables(
    clips_by_seed: Mapping[int, Sequence[Corrupted]],
    cfg: RunConfig,
    net: LocalNet,
    perceptual: PerceptualMetric,
    device: torch.device,
    brute_force_seeds: int,
) -> tuple[list[Row], list[Row]]:
    """Table 1 rows and peer rows of every seed, pooled per policy over the seeds.

    The brute-force row (T(T−1)(T−2)/2 Γ calls per clip) is computed on the first ``brute_force_seeds`` seeds.
    """
    t1: dict[str, list[Row]] = {}
    peers: dict[str, list[Row]] = {}
    for n, (seed, clips) in enumerate(clips_by_seed.items()):
        brute_force = n < brute_force_seeds
        rows = table1(
            clips,
            net,
            perceptual,
            cfg.k,
            seed,
            brute_force,
            device,
            cell=cfg.policy.cell,
            condition_on=cfg.condition_on,
        )
        for row in rows:
            t1.setdefault(row["policy"], []).append(row)
        for row in table1_peers(clips, perceptual, device):
            peers.setdefault(row["policy"], []).append(row)
    return [pool_table1_rows(r) for r in t1.values()], [pool_table1_rows(r) for r in peers.values()]


def checks(t1: Sequence[Row], peers: Sequence[Row], beat_copy_required: bool) -> list[tuple[str, bool, bool]]:
    """(description, holds, required) for each acceptance criterion."""
    by = {r["policy"]: r for r in [*t1, *peers]}
    best, rand, worst = by["best"], by["random"], by["worst"]

    def hi(r: Row) -> float:
        return float(r["loss_mean"] + r["ci95"])

    def lo(r: Row) -> float:
        return float(r["loss_mean"] - r["ci95"])

    return [
        ("L_P best < random < worst", best["loss_mean"] < rand["loss_mean"] < worst["loss_mean"], True),
        (
            "95% CIs do not overlap (best/random, random/worst)",
            hi(best) < lo(rand) and hi(rand) < lo(worst),
            True,
        ),
        (
            f"hole PSNR best {best['hole_psnr']:.2f} > cv2_inpaint {by['cv2_inpaint']['hole_psnr']:.2f}",
            best["hole_psnr"] > by["cv2_inpaint"]["hole_psnr"],
            True,
        ),
        (
            f"hole PSNR best {best['hole_psnr']:.2f} > copy_best_pair {by['copy_best_pair']['hole_psnr']:.2f}",
            best["hole_psnr"] > by["copy_best_pair"]["hole_psnr"],
            beat_copy_required,
        ),
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--run", required=True, type=Path, help="folder of `rovr pretrain-local --out`")
    parser.add_argument("--real", type=Path, help="also evaluate on every clip of this folder of videos")
    parser.add_argument("--seeds", type=int, default=3, help="corruption seeds (default 3)")
    parser.add_argument(
        "--brute-force-seeds", type=int, default=1, help="seeds with a brute-force row, synthetic (default 1)"
    )
    parser.add_argument(
        "--real-brute-force-seeds",
        type=int,
        default=0,
        help="seeds with a brute-force row, --real (default 0)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")

    run = RunDir(args.run)
    cfg = config_from_dict(read_yaml(run.config))
    device = setup_torch(cfg)
    net = LocalNet(cfg.local, cfg.k)
    meta = load_model(run.local, net, cfg, "rovr pretrain-local")
    net.to(device).eval()
    perceptual = build_perceptual(cfg.metric, device)
    print(
        f"Γ: {run.local} (step {meta.get('step')}, trained with L_P = {meta.get('perceptual')}); "
        f"evaluation L_P = {perceptual.name}; {cfg.data.frames} frames at {cfg.data.size}², seeds 0..{args.seeds - 1}"
    )
    sets: list[tuple[str, dict[int, list[Corrupted]], int, bool]] = [
        (
            f"{cfg.data.source} (test split)",
            {s: corrupted_clips(cfg, "test", s) for s in range(args.seeds)},
            args.brute_force_seeds,
            True,
        )
    ]
    if args.real:
        sets.append(
            (
                f"{args.real} (all videos)",
                {s: folder_clips(cfg, args.real, s) for s in range(args.seeds)},
                args.real_brute_force_seeds,
                False,
            )
        )
    ok = True
    for name, clips_by_seed, brute_force_seeds, beat_copy_required in sets:
        started = time.perf_counter()
        t1, peers = pooled_tables(clips_by_seed, cfg, net, perceptual, device, brute_force_seeds)
        print(
            f"\n### {name}: {len(clips_by_seed[0])} clips × {args.seeds} seeds ({time.perf_counter() - started:.0f} s)\n"
        )
        print(markdown_table1(t1))
        print("Classical peers (no Γ):\n")
        print(markdown_table1(peers), flush=True)
        for what, holds, required in checks(t1, peers, beat_copy_required):
            print(f"- [{'x' if holds else ' '}] {what}{'' if required else ' (reported, not required)'}")
            ok &= holds or not required
    print(f"\nacceptance: {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except RovrError as e:
        print(f"table1_acceptance: error: {e}", file=sys.stderr)
        sys.exit(2)

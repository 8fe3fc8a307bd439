"""Does Γ repair the known pixels too? ``local.repair_known`` on corruptions beyond holes (paper §8).

    .venv/bin/python benchmarks/degradations.py RUN [RUN ...] [--seeds 3] [--chooser sequential]

Each RUN is a run folder with a trained Γ (``rovr pretrain-local --out RUN --set
corruption.noise_std=… --set local.repair_known=…``); its own config (corruption included) draws
the held-out clips. For every corruption seed the test split is rebuilt through the reconstruction
loop with the pairs of ``--chooser`` (a baseline, so every Γ sees the same pairs), and the result
is compared with the clean clips: PSNR over the whole frame, over the known pixels (where the
paper's Γ returns the corrupted input unchanged) and over the holes, and the per-frame L_P of the
run's metric. Prints a Markdown table (means over the seeds' frames) for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import platform
from pathlib import Path

import numpy as np
import torch

from common import load_scoring
from rovr.conditioning import make_baseline
from rovr.metrics.image import psnr
from rovr.reconstruct import Episodes, reconstruct
from rovr.train.common import corrupted_clips


def scores(run_dir: Path, seeds: int, chooser: str) -> dict[str, float]:
    cfg, _, net, metric = load_scoring(run_dir)
    parts: dict[str, list[float]] = {"frame": [], "known": [], "holes": [], "input_known": [], "lp": []}
    for seed in range(seeds):
        clips = corrupted_clips(cfg, "test", seed)
        ep = Episodes.of_run(cfg, clips, net, metric)
        rec = reconstruct(ep, make_baseline(chooser, seed))
        x, out, bar = (v.flatten(0, 1) for v in (ep.original, rec.video, ep.corrupted))
        hole = ep.masks.flatten(0, 1)[:, None].float()  # (N, 1, H, W), 1 = hole
        parts["frame"] += psnr(out, x).tolist()
        parts["known"] += psnr(out, x, mask=1 - hole).tolist()
        parts["input_known"] += psnr(bar, x, mask=1 - hole).tolist()
        has_hole = hole.flatten(1).any(dim=1)
        parts["holes"] += psnr(out[has_hole], x[has_hole], mask=hole[has_hole]).tolist()
        parts["lp"] += rec.loss.ravel().tolist()
    return {k: float(np.mean(v)) for k, v in parts.items()} | {"repair": float(cfg.local.repair_known)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", help="run folders with a trained Γ")
    ap.add_argument("--seeds", type=int, default=3, help="corruption seeds of the test split (default 3)")
    ap.add_argument(
        "--chooser", default="sequential", help="baseline that picks the pairs (default sequential)"
    )
    args = ap.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    print(
        f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}; pairs: {args.chooser}\n"
    )
    print(
        "| run | repair_known | PSNR frame (dB) | PSNR known pixels (dB) | input's known pixels (dB) | PSNR holes (dB) | L_P |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in args.runs:
        s = scores(Path(r), args.seeds, args.chooser)
        print(
            f"| {r} | {'yes' if s['repair'] else 'no'} | {s['frame']:.2f} | {s['known']:.2f} | "
            f"{s['input_known']:.2f} | {s['holes']:.2f} | {s['lp']:.4f} |"
        )


if __name__ == "__main__":
    main()

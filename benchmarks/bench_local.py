"""Γ throughput: the real pretraining step vs the raw UNet forward+backward, and inference; a Markdown table.

    .venv/bin/python benchmarks/bench_local.py [--config CONFIG] [--sizes 64 128 256] [--batch 16] [--threads 0]

For each frame size S (the config's Γ, ``local:``; k from the config):

- **train step** — what :func:`rovr.train.local.pretrain_local` pays per step: ``SamplePool.sample`` (uint8
  gather, float conversion, hole zeroing), :func:`~rovr.train.local.compute_gradients` (Γ forward, Eq. 1
  with the configured perceptual metric at λ = 0.5, backward, gradient clipping) and the Adam step, plus
  the amortised cost of logging (scalars every 25 steps) and validation (64 frames every 100 steps).
- **raw fwd+bwd** — the same UNet and Adam on tensors made once: forward, MSE, backward, step.
- **overhead** = 1 − train / raw (data, loss, clipping and logging; the issue asks for < 20 %).
- **inference** — Γ forward under ``torch.inference_mode`` on batches of ``--batch`` and of 1 frame.

Train and raw are measured in alternating rounds (median of ``--rounds``), so a change in machine load
affects both alike. Each measurement runs at least ``--min-seconds``.

``--infer-batches B …`` instead times Γ's no-grad forward on batches of B frames (a pool sample of the
largest B), alternating, within the process, Γ's own splitting of large CPU batches
(:data:`rovr.models.local.CPU_BATCH_PIXELS`) with one pass over the whole batch; add ``--keep-freed``
to call :func:`rovr.train.common.keep_freed_memory` first (as the training and evaluation commands do).

``--malloc-ab`` instead compares glibc's default malloc with :data:`TUNABLES` (no mmap/trim of large
blocks, so freed activations are reused instead of being returned to the kernel and page-faulted back
in) and with the same settings made from inside the process by
:func:`rovr.train.common.keep_freed_memory` (what the training and evaluation commands do): alternating
child processes each run ``--steps`` train steps, reporting wall and CPU time per step and minor page
faults per step of the stepping loop alone.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from rovr.config import RunConfig, load_config
from rovr.metrics.perceptual import build_perceptual
from rovr.models.local import LocalNet
from rovr.train.common import MetricLog, keep_freed_memory
from rovr.train.local import POOL_VARIANTS, Batch, SamplePool, compute_gradients

DEMO = Path(__file__).resolve().parents[1] / "src" / "rovr" / "configs" / "demo.yaml"
LAMBDA = 0.5
LOG_EVERY, VAL_EVERY, VAL_FRAMES = 25, 100, 64  # as in pretrain_local
TUNABLES = "glibc.malloc.mmap_threshold=4294967296:glibc.malloc.trim_threshold=4294967296"


def rate(fn: Callable[[], object], items: int, min_seconds: float) -> float:
    """Items per second of ``fn`` (which handles ``items`` per call), over at least ``min_seconds``."""
    calls, t0 = 0, time.perf_counter()
    while True:
        fn()
        calls += 1
        elapsed = time.perf_counter() - t0
        if elapsed >= min_seconds and calls >= 2:
            return calls * items / elapsed


def seconds_per_call(fn: Callable[[], object], repeats: int = 3) -> float:
    fn()
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - t0) / repeats


def train_setup(cfg: RunConfig, batch: int) -> tuple[SamplePool, LocalNet, Callable[[], None]]:
    """The pool, Γ and one real pretraining step (sample, Eq. 1 gradients, Adam) at ``cfg.data.size``."""
    device = torch.device(cfg.device)
    pool = SamplePool(cfg, "train", POOL_VARIANTS, seed=0)
    perceptual = build_perceptual(cfg.metric, device, download=False)
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    net = LocalNet(cfg.local, cfg.k).to(device).train()
    opt = torch.optim.Adam(net.parameters(), lr=cfg.pretrain.lr)

    def train_step() -> None:
        b = pool.sample(batch, cfg.k, gen, device)
        loss, grad_norm = compute_gradients(net, perceptual, b, LAMBDA)
        assert bool(torch.isfinite(loss)) and bool(torch.isfinite(grad_norm))
        opt.step()

    return pool, net, train_step


def bench_size(cfg: RunConfig, batch: int, rounds: int, min_seconds: float) -> dict[str, float]:
    """Images/s of the train step and of raw fwd+bwd, and frames/s of inference, at ``cfg.data.size``."""
    device = torch.device(cfg.device)
    k = cfg.k
    pool, net, train_step = train_setup(cfg, batch)
    perceptual = build_perceptual(cfg.metric, device, download=False)
    gen = torch.Generator().manual_seed(1)

    torch.manual_seed(0)
    raw_net = LocalNet(cfg.local, k).to(device).train()
    raw_opt = torch.optim.Adam(raw_net.parameters(), lr=cfg.pretrain.lr)
    fixed = pool.sample(batch, k, gen, device)

    def raw_step() -> None:
        loss = F.mse_loss(raw_net(*fixed[:4]), fixed.original)
        raw_opt.zero_grad(set_to_none=True)
        loss.backward()
        raw_opt.step()

    # amortised per-step costs of what pretrain_local does every 25 / 100 steps
    val: Batch = pool.sample(VAL_FRAMES, k, torch.Generator().manual_seed(1), device)

    @torch.no_grad()
    def validate() -> None:
        net.eval()
        float(perceptual(net(*val[:4]), val.original).mean())
        net.train()

    with tempfile.TemporaryDirectory() as tmp:
        metrics = MetricLog(Path(tmp))
        log_cost = seconds_per_call(lambda: metrics.log("bench", 0, {"local/loss": 0.1, "local/lr": 1e-3}))
        metrics.close()
    per_step_extra = log_cost / LOG_EVERY + seconds_per_call(validate, 1) / VAL_EVERY

    train, raw = [], []
    for _ in range(rounds):
        train_rate = rate(train_step, batch, min_seconds)
        train.append(batch / (batch / train_rate + per_step_extra))
        raw.append(rate(raw_step, batch, min_seconds))

    net.eval()
    one = Batch(*(t[:1] for t in fixed))
    with torch.inference_mode():
        infer = rate(lambda: net(*fixed[:4]), batch, min_seconds)
        infer1 = rate(lambda: net(*one[:4]), 1, min_seconds)
    return {
        "train": statistics.median(train),
        "raw": statistics.median(raw),
        "infer": infer,
        "infer1": infer1,
        "params": sum(p.numel() for p in net.parameters()),
    }


def child_steps(cfg: RunConfig, batch: int, steps: int) -> dict[str, float]:
    """Per-step wall time, CPU time and minor page faults of ``steps`` real train steps (after 2 warm-up steps)."""
    _, _, train_step = train_setup(cfg, batch)
    for _ in range(2):
        train_step()
    r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    for _ in range(steps):
        train_step()
    r1, t1 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    cpu = (r1.ru_utime + r1.ru_stime) - (r0.ru_utime + r0.ru_stime)
    return {"wall": (t1 - t0) / steps, "cpu": cpu / steps, "faults": (r1.ru_minflt - r0.ru_minflt) / steps}


def malloc_ab(args: argparse.Namespace) -> None:
    """Alternate child processes without / with :data:`TUNABLES` / with ``keep_freed_memory()``; print
    medians per size."""
    print(
        f"GLIBC_TUNABLES={TUNABLES} vs keep_freed_memory() vs default; {args.steps} train steps per child, "
        f"{args.rounds} rounds\n"
    )
    print("| S | malloc | wall s/step | CPU s/step | minor faults/step |")
    print("| --- | --- | --- | --- | --- |")
    for size in args.sizes:
        runs: dict[str, list[dict[str, float]]] = {"default": [], "tunables": [], "keep_freed_memory": []}
        for _ in range(args.rounds):
            for name in runs:
                env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
                if name == "tunables":
                    env["GLIBC_TUNABLES"] = TUNABLES
                cmd = [sys.executable, __file__, "--child", "--sizes", str(size), "--steps", str(args.steps)]
                cmd += ["--batch", str(args.batch), "--threads", str(args.threads), "--config", args.config]
                cmd += ["--keep-freed"] if name == "keep_freed_memory" else []
                out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
                runs[name].append(json.loads(out.strip().splitlines()[-1]))
        for name, rs in runs.items():
            med = {key: statistics.median(r[key] for r in rs) for key in ("wall", "cpu", "faults")}
            print(
                f"| {size}² | {name} | {med['wall']:.3f} | {med['cpu']:.3f} | {med['faults']:.0f} |",
                flush=True,
            )


def infer_batches(cfg: RunConfig, batches: list[int], rounds: int, min_seconds: float) -> None:
    """Frames/s of Γ's no-grad forward per batch size, split as Γ splits CPU batches vs one pass."""
    import rovr.models.local as local

    device = torch.device(cfg.device)
    pool = SamplePool(cfg, "train", POOL_VARIANTS, seed=0)
    torch.manual_seed(0)
    net = LocalNet(cfg.local, cfg.k).to(device).eval()
    fixed = pool.sample(max(batches), cfg.k, torch.Generator().manual_seed(1), device)
    split = local.CPU_BATCH_PIXELS
    res: dict[tuple[int, str], list[float]] = {}
    with torch.inference_mode():
        for _ in range(rounds):
            for b in batches:
                inputs = [t[:b] for t in fixed[:4]]
                for mode, pixels in (("split", split), ("one pass", 1 << 62)):
                    local.CPU_BATCH_PIXELS = pixels
                    res.setdefault((b, mode), []).append(
                        rate(functools.partial(net, *inputs), b, min_seconds)
                    )
    local.CPU_BATCH_PIXELS = split
    print("| batch | Γ splits it (frames/s) | one pass (frames/s) |")
    print("| --- | --- | --- |")
    for b in batches:
        cells = [statistics.median(res[(b, m)]) for m in ("split", "one pass")]
        print(f"| {b} | {cells[0]:.0f} | {cells[1]:.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--config", default=str(DEMO), help="RunConfig YAML (default: the demo config)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256])
    parser.add_argument("--batch", type=int, default=16, help="images per step (default 16, the demo's)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = all cores)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating train/raw rounds (median)")
    parser.add_argument("--min-seconds", type=float, default=4.0, help="per measurement")
    parser.add_argument("--videos", type=int, default=6, help="synthetic videos in the pool")
    parser.add_argument("--malloc-ab", action="store_true", help="compare glibc malloc settings instead")
    parser.add_argument("--steps", type=int, default=20, help="train steps per child of --malloc-ab")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "--keep-freed", action="store_true", help="call keep_freed_memory() first (as rovr's commands do)"
    )
    parser.add_argument(
        "--infer-batches", type=int, nargs="+", help="time Γ's no-grad forward at these batch sizes instead"
    )
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    base = load_config(args.config)

    def at(size: int) -> RunConfig:
        data = dataclasses.replace(base.data, source="synthetic", size=size, num_videos=args.videos)
        return dataclasses.replace(base, data=data)

    if args.keep_freed and not keep_freed_memory():
        raise SystemExit("keep_freed_memory() was not applied (no glibc, or GLIBC_TUNABLES sets malloc)")
    if args.child:
        print(json.dumps(child_steps(at(args.sizes[0]), args.batch, args.steps)))
        return
    if args.malloc_ab:
        malloc_ab(args)
        return
    if args.infer_batches:
        malloc = "keep_freed_memory()" if args.keep_freed else os.environ.get("GLIBC_TUNABLES") or "default"
        print(
            f"Γ = LocalNet({base.local}) at {args.sizes[0]}², {torch.get_num_threads()} threads, malloc: {malloc}\n"
        )
        infer_batches(at(args.sizes[0]), args.infer_batches, args.rounds, args.min_seconds)
        return
    print(
        f"Γ = LocalNet({base.local}), k = {base.k}, batch {args.batch}, {torch.get_num_threads()} threads, "
        f"{platform.processor() or platform.machine()} ({os.cpu_count()} CPUs), torch {torch.__version__}, "
        f"L_P = {build_perceptual(base.metric, download=False).name}\n"
    )
    print(
        "| S | params | train step (img/s) | raw fwd+bwd (img/s) | overhead | inference, batch (frames/s) | inference, 1 frame (frames/s) |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for size in args.sizes:
        r = bench_size(at(size), args.batch, args.rounds, args.min_seconds)
        print(
            f"| {size}² | {r['params'] / 1e6:.2f}M | {r['train']:.1f} | {r['raw']:.1f} | "
            f"{100 * (1 - r['train'] / r['raw']):.0f} % | {r['infer']:.1f} | {r['infer1']:.1f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()

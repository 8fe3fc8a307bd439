"""Speed and memory of `rovr restore`; prints Markdown tables (for BENCHMARKS.md).

    .venv/bin/python benchmarks/bench_restore.py [--cores 2] [--frames 120] [--long 1000]

The model is the demo config's (src/rovr/configs/demo.yaml: T = 20, Γ with 24 base channels and
depth 3, the paper policy) with untrained weights: restoring costs the same whatever the weights.
The videos are synthetic (a smooth drifting texture with a moving box; the mask is the box, one PNG
per frame). The process is pinned to ``--cores`` CPUs, with as many torch threads unless ``--threads``.

Speed: ``restore_video`` in this process at 64x64, 256x256 and 432x240; frames/s of the streaming
loop (decode, Γ and the policy, compositing with the default ``--fill copy``, H.264 encode; the
first window includes warm-up; in brackets the share of hole pixels copied), the same with
``--copy-reach 0`` (no frames beyond the nearest) and with ``--fill gamma``, and for scale the frames/s of
decode + encode alone. Γ runs at the training size's short side (64), so
the work per frame grows with the resolution only through decoding, resizing and encoding.

Memory: peak RSS (``wait4``) of the `rovr restore` CLI in a child process, for the same 432x240
video at ``--long`` frames and at a fifth of that (still a full batch of windows): equal peaks show
that memory does not grow with the length; and for a 1920x1080 video of ``--hd`` frames (the box
is 640x360), peak RSS and speed of the CLI with the default copy and with ``--copy-reach 0``.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from rovr.cli import packaged_config
from rovr.config import load_config, save_config
from rovr.models.local import LocalNet
from rovr.models.policy import build_actor
from rovr.restore import MAX_BATCH, restore_video, working_size
from rovr.train.common import RunDir, save_model
from rovr.video import io

SIZES = ((64, 64), (256, 256), (432, 240))  # (width, height)


def make_demo_run(root: Path) -> Path:
    """A run folder with the demo config, an untrained Γ and an untrained imitation policy."""
    torch.manual_seed(0)
    cfg = load_config(packaged_config("demo"))
    run = RunDir(root)
    root.mkdir(parents=True)
    save_config(cfg, run.config)
    save_model(run.local, LocalNet(cfg.local, cfg.k), cfg)
    save_model(run.policy("imitation"), build_actor(cfg.policy, cfg.data.frames), cfg)
    return root


def make_video(folder: Path, frames: int, width: int, height: int) -> tuple[Path, Path]:
    """Write ``folder/video.mp4`` and ``folder/masks/`` (a moving box, about 1/9 of the frame)."""
    folder.mkdir(parents=True)
    video, masks = folder / "video.mp4", folder / "masks"
    masks.mkdir()
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    bw, bh = width // 3, height // 3
    with io.VideoWriter(video, 24, width, height) as w:
        for i in range(frames):
            f = np.empty((height, width, 3), np.uint8)
            f[..., 0] = 128 + 90 * np.sin((x + 2 * i) / 11)
            f[..., 1] = 128 + 90 * np.cos((y - i) / 9)
            f[..., 2] = 128 + 60 * np.sin((x + y) / 17)
            bx = int((width - bw) * (0.5 + 0.5 * np.sin(i / 15)))
            by = int((height - bh) * (0.5 + 0.5 * np.cos(i / 23)))
            hole = np.zeros((height, width), bool)
            hole[by : by + bh, bx : bx + bw] = True
            f[hole] = (250, 30, 30)
            w.write(f)
            io.write_png(masks / f"{i:05d}.png", hole)
    return video, masks


def io_only_fps(video: Path, out: Path) -> float:
    """Frames/s of decoding ``video`` and encoding it again unchanged (restore's floor)."""
    info = io.probe(video)
    t0 = time.perf_counter()
    with io.VideoWriter(out, info.fps, info.width, info.height) as w:
        for f in io.iter_frames(video):
            w.write(f)
    return info.frames / (time.perf_counter() - t0)


#: Runs argv[1:] and prints its peak RSS (KiB) last on stderr. A child's ``ru_maxrss`` also counts the
#: memory of the process it was forked from, until it execs: measured from this small launcher, the
#: floor is the launcher's few MiB, not this benchmark's own size.
LAUNCHER = (
    "import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); sys.exit(r.returncode)"
)


def peak_rss_mb(cmd: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(peak RSS in MiB, wall seconds) of running ``cmd`` as a child process."""
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", LAUNCHER, *cmd], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    secs = time.perf_counter() - t0
    err = proc.stderr.decode().strip().splitlines()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n" + "\n".join(err))
    return int(err[-1]) / 1024, secs  # Linux: ru_maxrss in KiB


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cores", type=int, default=2, help="CPUs to pin to (default 2)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (default: --cores)")
    ap.add_argument("--frames", type=int, default=120, help="frames of each speed video (default 120)")
    ap.add_argument("--long", type=int, default=1000, help="frames of the memory video (default 1000)")
    ap.add_argument(
        "--hd", type=int, default=100, help="frames of the 1920x1080 video (default 100; 0 = skip)"
    )
    args = ap.parse_args()

    cpus = sorted(os.sched_getaffinity(0))[: args.cores]
    os.sched_setaffinity(0, cpus)  # children inherit it
    threads = args.threads or args.cores
    torch.set_num_threads(threads)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    cfg = load_config(packaged_config("demo"))
    load = os.getloadavg()

    with tempfile.TemporaryDirectory(prefix="bench_restore_") as tmp:
        root = Path(tmp)
        run = make_demo_run(root / "run")
        speed = []
        for w, h in SIZES:
            video, masks = make_video(root / f"v{w}x{h}", args.frames, w, h)
            floor = io_only_fps(video, root / f"copy{w}x{h}.mp4")
            t0 = time.perf_counter()
            res = restore_video(video, masks, root / f"out{w}x{h}.mp4", run)
            total = time.perf_counter() - t0
            near = restore_video(video, masks, root / f"near{w}x{h}.mp4", run, copy_reach=0)
            plain = restore_video(video, masks, root / f"gamma{w}x{h}.mp4", run, fill="gamma")
            wh, ww = working_size(h, w, cfg.data.size)
            speed.append(
                f"| {w}x{h} | {ww}x{wh} | {res.frames} | {res.frames / res.seconds:.1f} ({100 * res.copied:.0f} %) "
                f"| {res.frames / total:.1f} | {near.frames / near.seconds:.1f} ({100 * near.copied:.0f} %) "
                f"| {plain.frames / plain.seconds:.1f} | {floor:.0f} |"
            )
            print(f"  {w}x{h}: {res.frames / res.seconds:.1f} frames/s", file=sys.stderr)

        mem = []
        # a fifth of the frames, but enough windows to fill a whole batch: only the length differs
        short = max(args.long // 5, MAX_BATCH * cfg.data.frames)
        for n in (short, args.long):
            video, masks = make_video(root / f"long{n}", n, 432, 240)
            cmd = [sys.executable, "-m", "rovr.cli", "restore", str(video), "--masks", str(masks)]
            cmd += ["-o", str(root / f"long{n}.mp4"), "--checkpoint", str(run), "--no-progress"]
            rss, secs = peak_rss_mb(cmd, env)
            mem.append(f"| 432x240 | {n} | {rss:.0f} | {secs:.1f} | {n / secs:.1f} |")
            print(f"  {n} frames: {rss:.0f} MiB", file=sys.stderr)
        hd = []
        if args.hd:
            video, masks = make_video(root / "hd", args.hd, 1920, 1080)
            for extra in ([], ["--copy-reach", "0"]):
                cmd = [sys.executable, "-m", "rovr.cli", "restore", str(video), "--masks", str(masks)]
                cmd += ["-o", str(root / "hd.mp4"), "--checkpoint", str(run), "--no-progress", *extra]
                rss, secs = peak_rss_mb(cmd, env)
                hd.append(
                    f"| 1920x1080 | {args.hd} | {' '.join(extra) or 'default'} | {rss:.0f} | {secs:.1f} "
                    f"| {args.hd / secs:.2f} |"
                )
                print(f"  1920x1080 {extra}: {rss:.0f} MiB", file=sys.stderr)
        base, _ = peak_rss_mb([sys.executable, "-c", "import rovr.restore, rovr.cli"], env)

    print(
        f"`rovr restore`, demo model (T={cfg.data.frames}, Γ base {cfg.local.base_channels} depth "
        f"{cfg.local.depth}, {cfg.policy.kind} policy; untrained weights), {len(cpus)} cores of "
        f"{platform.processor() or platform.machine()}, torch {torch.__version__}, {threads} torch threads; "
        f"load average {load[0]:.1f} before, {os.getloadavg()[0]:.1f} after.\n"
    )
    print(
        "| video | Γ at | frames | restore frames/s (copied) | incl. model load | with --copy-reach 0 (copied) "
        "| with --fill gamma | decode+encode only frames/s |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    print("\n".join(speed))
    print(f"\nPeak memory of the CLI (child process; importing rovr alone peaks at {base:.0f} MiB):\n")
    print("| video | frames | peak RSS MiB | wall s (incl. start-up) | frames/s end to end |")
    print("| --- | --- | --- | --- | --- |")
    print("\n".join(mem))
    if hd:
        print("\n| video | frames | options | peak RSS MiB | wall s (incl. start-up) | frames/s end to end |")
        print("| --- | --- | --- | --- | --- | --- |")
        print("\n".join(hd))


if __name__ == "__main__":
    main()

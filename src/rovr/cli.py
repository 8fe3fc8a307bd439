"""The ``rovr`` command. Only this module prints; library code logs."""

from __future__ import annotations

import argparse
import dataclasses
import errno
import logging
import os
import re
import shlex
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, NoReturn

from rovr import __version__
from rovr.errors import RovrError

if TYPE_CHECKING:  # the config module imports torch: `rovr --help` and argument errors do without it
    from rovr.config import RunConfig

log = logging.getLogger("rovr")

#: The real clips shipped beside the project (``../shared/data/real``), evaluated by the demo if present.
DEFAULT_EVAL_DATA = Path("..") / "shared" / "data" / "real"


#: The configs shipped inside the package: ``--config NAME`` finds them from any folder.
PACKAGED_CONFIGS = ("demo", "paper")


def packaged_config(name: str) -> Path:
    """Path of a config shipped with the package (``demo`` or ``paper``)."""
    return Path(str(resources.files("rovr") / "configs" / f"{name}.yaml"))


def _config(args: argparse.Namespace, default: str | None = None, extra: Sequence[str] = ()) -> RunConfig:
    from rovr.config import load_config

    path = args.config or (packaged_config(default) if default else None)
    if args.config in PACKAGED_CONFIGS and not Path(args.config).exists():  # `--config paper` from anywhere
        path = packaged_config(args.config)
    overrides = list(extra) + list(args.overrides)
    if getattr(args, "data", None):
        overrides.append(f"data.source={args.data}")
    if getattr(args, "device", None):
        overrides.append(f"device={args.device}")
    return load_config(path, overrides)


def _add_config_args(p: argparse.ArgumentParser, data: bool = True) -> None:
    p.add_argument(
        "--config",
        help="YAML config file, or `demo` / `paper` for the configs shipped with rovr (default: demo)",
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set ppg.iterations=10 (repeatable)",
    )
    if data:
        p.add_argument(
            "--data",
            help="folder of videos / frame folders to train on (default: the embedded synthetic set)",
        )
    p.add_argument("--device", choices=["cpu", "cuda"], help="where to run (default: the config's, cpu)")


def _out(args: argparse.Namespace, cfg: RunConfig) -> Path:
    return Path(args.out) if args.out else Path("runs") / cfg.name


# ----------------------------------------------------------------------------- handlers


def cmd_demo(args: argparse.Namespace) -> int:
    from rovr.evaluate import (
        check_evaluation_data,
        check_out_beside_data,
        evaluate_run,
        markdown_table1,
        markdown_table2,
    )
    from rovr.pipeline import plan_training, train_all
    from rovr.train.common import RunLock, check_device, check_writable, prepare_run

    extra = QUICK if args.quick else []
    cfg = _config(args, "demo", extra)
    check_device(cfg)  # before the data notices
    out = Path(args.out)
    started = time.time()
    if args.no_eval_data and args.eval_data:
        raise RovrError("--no-eval-data and --eval-data contradict each other; pass one of them")
    eval_dirs = [Path(d) for d in args.eval_data] or (
        [DEFAULT_EVAL_DATA] if DEFAULT_EVAL_DATA.is_dir() and not args.no_eval_data else []
    )
    check_writable(out, "run folder", "--out", folder=True)
    for folder in eval_dirs:  # refused now, not after the training and the first evaluation
        check_out_beside_data(out, folder)
        check_evaluation_data(cfg, folder, args.eval_seeds)
    with RunLock(out) as lock:  # a command training there already: refused before anything is written
        todo = plan_training(cfg, out, args.restart, say=False)  # another run's folder: refused untouched
        prepare_run(cfg, out, write=bool(todo), lock=lock)
        _print_oracle_stats(cfg, out)
        res = train_all(cfg, out, progress=not args.no_progress, restart=args.restart)
    ev = evaluate_run(res.run.root, out, cfg=cfg, timing=res.timing)
    print("\nTable 1 — Γ with oracle conditioning (held-out clips)\n")
    print(markdown_table1(ev.report["table1"]))
    print("\nTable 2 — conditioning policies (held-out clips)\n")
    print(markdown_table2(ev.report["table2"]))
    for folder in eval_dirs:
        sub = out / f"eval_{folder.name}"
        ev2 = evaluate_run(
            res.run.root, sub, cfg=cfg, data=folder, seeds=args.eval_seeds, brute_force=args.eval_brute_force
        )
        bf = "" if args.eval_brute_force else "; no brute-force row: add --eval-brute-force"
        print(f"\nTable 2 on {folder} (our masks, {args.eval_seeds} corruption seed(s){bf})\n")
        print(markdown_table2(ev2.report["table2"]))
        print(f"report: {sub / 'report.html'}")
    print(f"\nreport: {out / 'report.html'}   ({time.time() - started:.0f} s in all)")
    return 0


#: ``rovr demo --quick``: the whole pipeline at toy size, in seconds (tests use it).
QUICK = [
    "data.num_videos=6",
    "data.size=32",
    "data.frames=8",
    "local.base_channels=8",
    "local.depth=2",
    "policy.channels=8",
    "policy.hidden=32",
    "policy.cell=16",
    "pretrain.steps=20",
    "pretrain.batch_size=4",
    "imitation.steps=10",
    "ppg.iterations=2",
    "ppg.n_pi=2",
    "ppg.episodes_per_iter=2",
    "ppg.minibatch=8",
    "eval.seeds=1",
    "corruption.max_valid_pairs=6",
]


def _print_oracle_stats(cfg: RunConfig, out: Path) -> None:
    """Issue-2 view of the data: the corruption's oracle statistics and a Fig. 1 of masked frames."""
    import numpy as np

    from rovr.report import fig1_masked
    from rovr.train.common import corrupted_clips

    clips = corrupted_clips(cfg, "train", seed=0, limit=8)
    if not clips:
        return
    nv = np.concatenate([c.oracle.num_valid() for c in clips])
    area = np.mean([c.masks.mean() for c in clips])
    t_ = cfg.data.frames
    print(
        f"data: {cfg.data.source}, clips of {t_} frames at {cfg.data.size}x{cfg.data.size}; "
        f"holes cover {100 * area:.0f}% of a frame; valid pairs per target: "
        f"min {nv.min()}, mean {nv.mean():.1f}, max {nv.max()} of {(t_ - 1) * (t_ - 2) // 2}"
    )
    out.mkdir(parents=True, exist_ok=True)
    fig1_masked(clips[0], [0, t_ // 2, t_ - 1], out / "fig1_masked.png")


def cmd_train(args: argparse.Namespace) -> int:
    from rovr.pipeline import ablations, train_all

    cfg = _config(args, "demo")
    extra = ablations(cfg)[1:] if args.ablations else []
    res = train_all(cfg, _out(args, cfg), progress=not args.no_progress, restart=args.restart, policies=extra)
    for stage, secs in res.timing.items():
        print(f"{stage}: {secs:.0f} s")
    print(
        f"run: {res.run.root}  (next: rovr evaluate --checkpoint {shlex.quote(str(res.run.root))} "
        f"--out {shlex.quote(str(res.run.root / 'eval'))})"
    )
    return 0


def _stage(stage: str) -> Callable[[argparse.Namespace], int]:
    def handler(args: argparse.Namespace) -> int:
        from rovr.pipeline import check_stage_state, discard_resume, run_stage
        from rovr.train.common import RunDir, RunLock, check_run_architecture, prepare_run

        cfg = _config(args, "demo")
        out = _out(args, cfg)
        with RunLock(out) as lock:  # another command training here is refused first
            check_run_architecture(cfg, out)
            check_stage_state(cfg, RunDir(out), stage, args.restart, alone=True)
            run = prepare_run(cfg, out, stage, lock=lock)
            if args.restart:
                discard_resume(cfg, run, stage)
                later = sorted(p.name for p in run.root.glob("policy_*.safetensors"))
                if stage == "pretrain-local" and later:
                    log.warning(
                        "the policies in %s (%s) were trained with the previous Γ; retrain them with "
                        "`rovr imitate --restart` and `rovr train-policy --restart`",
                        run.root,
                        ", ".join(later),
                    )
            path = run_stage(cfg, run, stage, progress=not args.no_progress)
        from rovr.train.dist import env_rank

        if env_rank() == 0:  # torchrun: rank 0 alone saved it
            print(f"{stage}: saved {path}")
        return 0

    return handler


def cmd_evaluate(args: argparse.Namespace) -> int:
    from rovr.evaluate import (
        evaluate_run,
        evaluate_seed_runs,
        markdown_table1,
        markdown_table2,
        progress_log,
        seed_runs,
    )

    level = progress_log.level
    if args.no_progress:
        progress_log.setLevel(logging.WARNING)
    options = dict(
        data=args.data,
        seeds=args.seeds,
        max_clips=args.max_clips,
        brute_force=False if args.no_brute_force else None,
        local=args.local,
        threads=args.threads,
    )
    try:
        if seed_runs(args.checkpoint):  # the --out of `rovr reproduce`: every seed's run, combined
            report = evaluate_seed_runs(args.checkpoint, args.out, **options)
        else:
            report = evaluate_run(args.checkpoint, args.out, **options).report
    finally:
        progress_log.setLevel(level)
    print(markdown_table1(report["table1"]))
    print()
    print(markdown_table2(report["table2"]))
    print(f"\nreport: {Path(args.out) / 'report.html'}")
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from rovr.restore import restore_video
    from rovr.video.io import probe

    video, out = Path(args.video), Path(args.output)
    masks = Path(args.masks) if args.masks else None
    total = max(0, args.frames if args.frames is not None else probe(video).frames - args.start)
    # the bar opens when restore_video accepts the input (on_frames(0)): a refused input prints its error alone
    bars: list[tqdm] = []

    def progress(n: int) -> None:
        if not bars:
            bars.append(
                tqdm(total=total, unit="frame", desc="restore", disable=args.no_progress, dynamic_ncols=True)
            )
        bars[0].update(n)

    try:
        res = restore_video(
            video,
            masks,
            out,
            Path(args.checkpoint),
            policy=args.policy,
            report=Path(args.report) if args.report else None,
            dilate=args.dilate,
            on_frames=progress,
            audio=not args.no_audio,
            fill=args.fill,
            copy_from=args.copy_from,
            copy_reach=args.copy_reach,
            unseen=args.unseen,
            start=args.start,
            frames=args.frames,
            boxes=args.box,
            threads=args.threads,
            local=args.local,
        )
    finally:
        for bar in bars:
            bar.close()
    sound = f"; audio {res.audio}" if res.audio else ""
    copied = ""
    if res.fill == "copy":
        copied = f"; {100 * res.copied:.0f}% of hole pixels copied at full size"
        if res.unseen == "telea":
            copied += f", {100 * res.inpainted:.0f}% in-painted"
        if res.gamma >= 0.005:
            copied += f", {100 * res.gamma:.0f}% Γ's fill"
    print(
        f"restored {res.frames} frames in {res.seconds:.1f} s ({res.frames / max(res.seconds, 1e-9):.1f} frames/s) "
        f"with policy {res.policy}{copied}{sound}: {out}"
    )
    return 0


def cmd_reproduce(args: argparse.Namespace) -> int:
    from rovr.evaluate import markdown_table2
    from rovr.pipeline import reproduce_table2

    cfg = _config(args, "demo")
    # one corruption seed per training run (the ± is over training seeds) unless --set eval.seeds=N
    if not any(o.replace(" ", "").startswith("eval.seeds=") for o in args.overrides):
        cfg = dataclasses.replace(cfg, eval=dataclasses.replace(cfg.eval, seeds=1))
    report = reproduce_table2(
        cfg,
        Path(args.out),
        seeds=args.seeds,
        progress=not args.no_progress,
        data=args.eval_data,
        restart=args.restart,
    )
    print(markdown_table2(report["table2"]))
    print(f"\nreport: {Path(args.out) / 'report.json'}")
    return 0


# ----------------------------------------------------------------------------- parser


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error (its usage block would come first): what was wrong and where
    the help is. Sub-command parsers are of the same class."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}; see `{self.prog} --help`\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="rovr",
        description="ROVR: Reinforcement Optimized Video Reconstruction — video in-painting with a learned choice of conditioning frames.",
    )
    parser.add_argument("--version", action="version", version=f"rovr {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    def add(
        name: str, help: str, handler: Callable[[argparse.Namespace], int], progress: str = "no progress bars"
    ) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.set_defaults(handler=handler)
        p.add_argument("--no-progress", action="store_true", help=progress)
        return p

    p = add(
        "demo",
        "the whole pipeline on the embedded data at 64x64 (minutes on a laptop CPU), ending in runs/demo/report.html",
        cmd_demo,
    )
    _add_config_args(p)
    p.add_argument("--out", default="runs/demo", help="run folder (default: runs/demo)")
    p.add_argument(
        "--eval-data",
        action="append",
        default=[],
        metavar="DIR",
        help="also evaluate on this folder of videos (default: ../shared/data/real if present)",
    )
    p.add_argument(
        "--no-eval-data",
        action="store_true",
        help="evaluate on the embedded held-out clips only (not ../shared/data/real)",
    )
    p.add_argument(
        "--eval-seeds",
        type=int,
        default=1,
        metavar="N",
        help="corruption seeds for the --eval-data folders (default 1, to keep the demo short; "
        "`rovr evaluate --seeds 3` gives the spread)",
    )
    p.add_argument(
        "--eval-brute-force",
        action="store_true",
        help="include the brute-force row (and gap closed) for the --eval-data folders too "
        "(off by default: a minute or two a seed on 2 CPU cores)",
    )
    p.add_argument(
        "--quick", action="store_true", help="toy sizes: the whole pipeline in seconds (for tests)"
    )
    p.add_argument("--restart", action="store_true", help="redo finished stages instead of skipping them")

    p = add("train", "all three training stages in order: pretrain-local, imitate, train-policy", cmd_train)
    _add_config_args(p)
    p.add_argument("--out", help="run folder (default: runs/<name>)")
    p.add_argument("--restart", action="store_true", help="redo finished stages instead of skipping them")
    p.add_argument(
        "--ablations",
        action="store_true",
        help="also train the paper's other PPG runs (flow+cold, noflow+warm)",
    )

    for stage, help in (
        ("pretrain-local", "stage 1: pretrain the local network Γ on random pairs (§6.1)"),
        ("imitate", "stage 2: imitation warm start of the policy from the oracle (§6.2)"),
        ("train-policy", "stage 3: phasic policy gradient (§6.3); torchrun-ready"),
    ):
        p = add(stage, help, _stage(stage))
        _add_config_args(p)
        p.add_argument("--out", help="run folder (default: runs/<name>)")
        p.add_argument(
            "--restart",
            action="store_true",
            help="train the stage again from scratch, replacing its checkpoint (default: a finished "
            "stage is refused, an interrupted one resumed)",
        )

    p = add(
        "evaluate",
        "Table 1 and Table 2 of a trained run on any data → report.json, report.md, report.html",
        cmd_evaluate,
        progress="no line per Table 2 row and seed as they are computed",
    )
    p.add_argument(
        "--checkpoint",
        required=True,
        metavar="RUN",
        help="run folder of `rovr train` / `rovr demo`, or the --out of `rovr reproduce` (every seed's "
        "run evaluated into OUT/seed_<S>, Table 2 over the training seeds in OUT)",
    )
    p.add_argument("--data", help="folder of videos to evaluate on (default: the run's held-out test split)")
    p.add_argument("--out", required=True, help="folder for the report")
    p.add_argument("--seeds", type=int, help="corruption seeds (default: the run's eval.seeds)")
    p.add_argument("--max-clips", type=int, help="evaluate at most this many clips per seed")
    p.add_argument("--no-brute-force", action="store_true", help="skip the (slow) brute-force row")
    p.add_argument(
        "--threads",
        type=int,
        metavar="N",
        help="torch CPU threads (default: the run's `threads`; 0 = all cores, 1 on a busy machine)",
    )
    p.add_argument(
        "--local",
        metavar="FILE",
        help="one Γ checkpoint for every row (e.g. local_rovr_flow_warm.safetensors of the run: the "
        "same-Γ control); default: local.safetensors, and a policy's own Γ where PPG trained one",
    )

    p = add("restore", "in-paint the masked regions of your own video with a trained run", cmd_restore)
    p.add_argument("video", help="input video file or folder of frames")
    p.add_argument(
        "--masks",
        help="folder of per-frame mask PNGs (non-zero = hole), one mask image for every frame, or a mask "
        "video (white = hole)",
    )
    p.add_argument(
        "--box",
        action="append",
        default=[],
        metavar="X,Y,W,H",
        help="a rectangle (pixels: left, top, width, height) that is a hole in every frame, e.g. a logo or "
        "a time stamp; repeatable, and added to --masks if both are given",
    )
    p.add_argument(
        "-o",
        "--output",
        required=True,
        help="output .mp4 (H.264, same size and frame rate as the input, with its sound) or a folder "
        "(lossless PNG frames 00000.png, ...; a frame folder rovr wrote there before is replaced, any "
        "other non-empty folder refused)",
    )
    p.add_argument(
        "--checkpoint", default="runs/demo", metavar="RUN", help="trained run folder (default: runs/demo)"
    )
    p.add_argument(
        "--policy", help="policy of the run to use, or a baseline (sequential, stride, oracle_best, ...)"
    )
    p.add_argument("--report", help="write which frames conditioned each frame to this JSON file")
    p.add_argument(
        "--threads",
        type=int,
        default=0,
        metavar="N",
        help="CPU threads for Γ and the copy (default 0: one per core this process may use); 1 on a "
        "busy or shared machine, where spinning threads can make restore 10x slower",
    )
    p.add_argument(
        "--local",
        metavar="FILE",
        help="the Γ checkpoint to run (a file of the run folder, e.g. local.safetensors for stage 1's, or "
        "a path); default: the policy's own Γ where PPG trained one, else a Γ another PPG run of the run "
        "tuned (ppg.train_local), else local.safetensors",
    )
    p.add_argument(
        "--dilate", type=int, default=0, help="grow the masks by this many pixels first (default 0)"
    )
    p.add_argument(
        "--fill",
        choices=["copy", "gamma"],
        default="copy",
        help="copy (default): hole pixels from other frames at full size, aligned per hole (see --copy-from, "
        "--copy-reach, --unseen); gamma: Γ's output only, resized from the working size (blurrier)",
    )
    p.add_argument(
        "--copy-from",
        type=int,
        default=6,
        metavar="N",
        help="--fill copy ranks the N nearest other frames with the chosen ones (default 6; 0 = only "
        "the frames the policy chose; each frame costs one match per hole region)",
    )
    p.add_argument(
        "--copy-reach",
        type=int,
        default=30,
        metavar="R",
        help="--fill copy looks up to R frames away for what those frames do not show (default 30; "
        "0 = no farther; needs 2R frames held in memory, lowered for very large frames)",
    )
    p.add_argument(
        "--unseen",
        choices=["telea", "gamma"],
        default="telea",
        help="--fill copy: what no frame shows is in-painted from around it at full size (telea, default) "
        "or keeps Γ's output resized (gamma)",
    )
    p.add_argument(
        "--no-audio",
        action="store_true",
        help="leave the sound out (default: the input's audio is copied, or re-encoded as AAC)",
    )
    p.add_argument(
        "--start",
        type=int,
        default=0,
        metavar="N",
        help="restore from frame N (0 = the first; default 0); the masks still cover the whole video",
    )
    p.add_argument(
        "--frames",
        type=int,
        metavar="N",
        help="restore N frames only (default: to the end), e.g. a quick look before a long run; "
        "the output holds just those frames and their sound",
    )

    p = add(
        "reproduce",
        "reproduce Table 2: the three PPG ablations x N training seeds, then evaluation (demo config: 43 min for 3 seeds on 2 CPU cores, measured)",
        cmd_reproduce,
    )
    p.add_argument("what", choices=["table2"])
    _add_config_args(p)
    p.add_argument("--out", default="runs/table2", help="output folder (default: runs/table2)")
    p.add_argument("--seeds", type=int, default=3, help="training seeds (default 3)")
    p.add_argument(
        "--restart",
        action="store_true",
        help="retrain every stage of these seeds instead of skipping finished ones",
    )
    p.add_argument("--eval-data", help="evaluate on this folder instead of the held-out split")
    return parser


class Stopped(KeyboardInterrupt):
    """SIGTERM or SIGHUP (a scheduler's preemption, a closed terminal), handled as Ctrl-C is: every
    stage's clean-up runs (temporary files removed, a training stage's resume checkpoint saved)."""


def _stop(signum: int, frame: FrameType | None) -> None:
    raise Stopped(signal.Signals(signum).name)


#: What an interruption leaves, by command (the line printed after Ctrl-C, SIGTERM or SIGHUP).
AFTER_INTERRUPT = {
    "restore": "the output and report were not written (an earlier output there is as it was)",
    "evaluate": "no report was written (an earlier report in --out is as it was)",
}


def _joined_negative_values(argv: Sequence[str]) -> list[str]:
    """``--box -5,3,10,10`` as ``--box=-5,3,10,10``: argparse reads a value that starts with '-' as an
    option and says only "expected one argument"; joined, the value reaches its own check and message."""
    out: list[str] = []
    for arg in argv:
        if out and out[-1] == "--box" and re.fullmatch(r"-[\d.]*(,[-\d.]*)*", arg) and "," in arg:
            out[-1] = f"--box={arg}"
        else:
            out.append(arg)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    argv = _joined_negative_values(sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser().parse_args(argv)
    except KeyboardInterrupt:  # Ctrl-C right at start-up
        print("rovr: interrupted; nothing was done", file=sys.stderr)
        return 130
    main_thread = threading.current_thread() is threading.main_thread()  # signals are set there only
    before = (
        {sig: signal.signal(sig, _stop) for sig in (signal.SIGTERM, signal.SIGHUP)} if main_thread else {}
    )
    try:
        return _run(args)
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)


def _run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    for noisy in ("matplotlib", "PIL", "h5py"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    ours, level = logging.getLogger("rovr"), logging.getLogger("rovr").level
    from rovr.train.dist import env_rank

    if env_rank() > 0:  # torchrun: rank 0 says it all once (notices, progress)
        ours.setLevel(logging.ERROR)
    try:
        return int(args.handler(args) or 0)
    except RovrError as e:
        print(f"rovr: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        how = f"stopped by {e.args[0]}" if isinstance(e, Stopped) else "interrupted"
        left = AFTER_INTERRUPT.get(args.command, "training stages resume where they stopped when rerun")
        if getattr(args, "restart", False) and args.command not in AFTER_INTERRUPT:
            left += " without --restart (with it they start over)"
        print(f"rovr: {how}; nothing half-written was left: {left}", file=sys.stderr)
        # 128 + the signal's number, as a shell reports a process the signal ended
        return 128 + int(signal.Signals[e.args[0]]) if isinstance(e, Stopped) else 130
    except BrokenPipeError:
        os._exit(0)
    except OSError as e:  # a file system refusal (permissions, disk full) the layers above did not name
        where = f" writing '{_user_path(e.filename)}'" if e.filename else ""
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            what = "free some space or write elsewhere"
        else:
            what = "check the path and its permissions"
        print(f"rovr: error: {e.strerror or e}{where}; {what}", file=sys.stderr)
        return 2
    finally:
        ours.setLevel(level)


#: The hidden temporary names files are written under before being renamed into place.
_TEMP_NAME = re.compile(r"\.(?P<name>.+)\.(?:[0-9a-f]{12}\.(?:part|tmpdir|old)|[A-Za-z0-9_]{8}\.tmp)")


def _user_path(filename: object) -> str:
    """The file a user asked for, for a temporary file written beside it (``.NAME.<hex>.part`` -> NAME)."""
    path = Path(str(filename))
    m = _TEMP_NAME.fullmatch(path.name)
    return str(path.with_name(m["name"])) if m else str(path)


if __name__ == "__main__":
    sys.exit(main())

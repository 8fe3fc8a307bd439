"""Repair a user's own video (object removal / damaged regions) with a trained ROVR run.

The video is streamed through windows of the model's T frames: ``ceil(N / T)`` windows spread evenly
over the N frames (neighbours overlap when T does not divide N), each one episode of the
reconstruction loop (:func:`rovr.reconstruct.reconstruct`, paper §5.1) at the model's working
resolution. A frame in an overlap is taken from the window it lies more central in, so every frame
is written exactly once, in order. Windows run B at a time as one batch of episodes.

Only hole pixels are written; every other pixel of the output is the input's (up to the H.264
encoding). ``fill="copy"`` (the default) takes each hole pixel at full resolution, aligned per hole
region (:func:`rovr.fill.copy_fill`), from the frames the policy chose and the ``copy_from``
nearest other frames, then, where none of them shows it, from frames up to ``copy_reach`` away
(:func:`copy_sources`); what no frame shows is in-painted from around it at full resolution
(``unseen="telea"``) or taken from Γ's output, resized to the input's resolution (``"gamma"``);
``fill="gamma"`` writes Γ's resized output only (the paper's reconstruction, blurred by
the upsampling). The output keeps the input's size and frame rate and appears under its name only
when complete.

Memory stays bounded whatever the video's length: a full-size frame (with Γ's fill once its window
has run) is held from its reading until no frame left to write may copy from it, at most
``max(T, copy_from + k, copy_reach)`` frames either side of the writer plus one batch of windows
(B chosen so they fit :data:`BATCH_BYTES`, ``copy_reach`` lowered to fit :data:`REACH_BYTES`).
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch

from rovr.checkpoint import atomic_write_json
from rovr.conditioning import (
    NEEDS_ORIGINAL,
    BruteForce,
    Chooser,
    CopyOracle,
    PolicyChooser,
    check_chooser,
    make_baseline,
)
from rovr.config import RunConfig, read_run_config
from rovr.data.corruption import Corrupted, apply_masks
from rovr.errors import CheckpointError, DataError, RovrError
from rovr.fill import UNSEEN, FillStats, copy_fill
from rovr.models.local import LocalNet
from rovr.reconstruct import Episodes, reconstruct, to_uint8
from rovr.train.common import (
    PPG_POLICIES,
    SAME_LOCAL_CONTROL,
    RunDir,
    check_writable,
    load_local,
    load_policy,
    no_gamma_advice,
)
from rovr.video.io import (
    MIN_FRAMES,
    FrameWriter,
    VideoWriter,
    check_frame_folder,
    iter_frames,
    iter_masks,
    probe,
)

log = logging.getLogger(__name__)

#: Policies tried, in order, when none is named. Imitation first: in the observed MDP it beat every
#: PPG policy on real footage. In the paper's MDP PPG's policy beats it on the real evaluation clips
#: (README, Table 2), but at full resolution, under the same tuned Γ, it moved hole PSNR by only
#: +0.01–0.09 dB and flickered more on three of four clips (`benchmarks/restore_fill.py --policy`;
#: BENCHMARKS.md, "Which policy chooses"): not enough to change the default.
PREFERRED = ("imitation", *PPG_POLICIES)


#: A video shorter than the policy's T is restored in one window of all its frames. The pointer
#: policy (length-agnostic) still chooses there if the window holds at least this fraction of T;
#: below it, and always for the paper's actor (tied to T), the coverage oracle of the masks does. On the
#: real clips (`benchmarks/short_windows.py`) the demo's imitation policy beat `oracle_best` at 10 and 14
#: of its 20 frames and lost at 6 (BENCHMARKS.md, "Videos shorter than T").
SHORT_FRACTION = 0.5

#: Memory allowed for the full-size frames of the windows restored together (one window always runs).
BATCH_BYTES = 256 * 2**20
#: At most this many windows per batch of episodes (a batch is also the progress bar's step).
MAX_BATCH = 4
#: ``fill`` choices of :func:`restore_video`.
FILLS = ("copy", "gamma")
#: Frames of the window, besides the chosen ones, that ``fill="copy"`` may copy from (nearest first).
#: BENCHMARKS.md ("Restoring at full resolution"): 6 doubles the copy's cost and adds 0.4-2.7 dB of
#: hole PSNR to copying from the chosen frames alone on the real clips.
COPY_FROM = 6
#: How far (frames) ``fill="copy"`` looks for what the chosen and nearest frames do not show.
#: BENCHMARKS.md ("Restoring at full resolution"): objects removed with their masks moving with them
#: need frames 10-30 away; 30 (1 s at 30 fps) gains as much as 63 on the real clips.
COPY_REACH = 30
#: Memory allowed for the full-size frames held around the one being written for copying
#: (``copy_reach`` is lowered to fit: 64 frames each way at 1080p, 16 at 4K).
REACH_BYTES = 2**30
#: :func:`far_frames`: every frame within this distance, beyond it a grid of every FAR_STRIDE-th frame.
DENSE_REACH = 8
#: BENCHMARKS.md ("Restoring at full resolution"): strides 3, 4, 6, 8 all lower the flicker on
#: dogs_jump; 4 offers about as many frames as the distances 10, 12, 15, 18, 22, 27 it replaced.
FAR_STRIDE = 4
#: Bytes per pixel of a held frame: RGB (or RGB with Γ's fill) and its mask.
FRAME_BYTES = 4


@dataclass
class RestoreResult:
    """What :func:`restore_video` did."""

    frames: int  # frames written
    seconds: float  # wall time of the streaming loop
    policy: str  # name of the conditioning policy
    windows: int  # episodes run
    batch: int  # windows run together
    work_size: tuple[int, int]  # (height, width) Γ ran at
    choices: list[list[int]] = field(default_factory=list)  # written frame -> its conditioning frames,
    # as frame numbers of the input video ([] if it has no hole)
    audio: str | None = None  # how the input's sound was carried (None: it has none, or audio=False)
    fill: str = "copy"  # how hole pixels were filled: "copy" (chosen and nearby frames, full size) or "gamma"
    hole_pixels: int = 0  # hole pixels written
    copied_pixels: int = 0  # of them copied from another frame (fill="copy"); the rest in-painted or Γ's
    copy_reach: int = 0  # how far (frames) the copy looked, after lowering for memory (0 for "gamma")
    unseen: str = "gamma"  # how "copy" filled what no frame showed: "telea" or "gamma"
    inpainted_pixels: int = 0  # hole pixels no frame showed, in-painted at full size (unseen="telea")
    unaligned_pixels: int = 0  # of copied_pixels, taken unmoved (all-hole frames: nothing to align on)
    whole_hole_frames: int = 0  # frames written that were entirely hole
    local: str = ""  # the Γ checkpoint that ran (absolute path)

    @property
    def copied(self) -> float:
        """Fraction of the hole pixels copied from other frames at full resolution."""
        return self.copied_pixels / self.hole_pixels if self.hole_pixels else 0.0

    @property
    def inpainted(self) -> float:
        """Fraction of the hole pixels that no frame showed, in-painted at full resolution."""
        return self.inpainted_pixels / self.hole_pixels if self.hole_pixels else 0.0

    @property
    def unaligned(self) -> float:
        """Fraction of the hole pixels copied unmoved, in frames with no known pixel to align on."""
        return self.unaligned_pixels / self.hole_pixels if self.hole_pixels else 0.0

    @property
    def gamma(self) -> float:
        """Fraction of the hole pixels that keep Γ's fill (resized from its working size)."""
        return 1.0 - self.copied - self.inpainted if self.hole_pixels else 0.0


@dataclass(frozen=True)
class Window:
    """Frames ``start .. stop-1`` form one episode; frames ``write_from .. write_to-1`` of it are written."""

    start: int
    stop: int
    write_from: int
    write_to: int


def plan_windows(num_frames: int, length: int) -> list[Window]:
    """``ceil(N / length)`` windows of ``length`` frames spread evenly over ``num_frames`` = N.

    Consecutive windows overlap (or touch); a frame in an overlap belongs to the window it is more
    central in, so the written ranges partition 0..N-1 in order. ``length >= N`` gives one window.
    """
    if num_frames < 1 or length < 1:
        raise ValueError(f"need num_frames >= 1 and length >= 1 (got {num_frames}, {length})")
    if num_frames <= length:
        return [Window(0, num_frames, 0, num_frames)]
    n = math.ceil(num_frames / length)
    starts = [round(i * (num_frames - length) / (n - 1)) for i in range(n)]
    # ownership boundary: the middle of each overlap [s_{i+1}, s_i + length)
    bounds = [0] + [(starts[i + 1] + starts[i] + length) // 2 for i in range(n - 1)] + [num_frames]
    return [Window(s, s + length, bounds[i], bounds[i + 1]) for i, s in enumerate(starts)]


def windows_per_batch(height: int, width: int, length: int, held: int = 0) -> int:
    """Windows to run as one batch: their full-size frames (each, with its mask, held until written)
    and ``held`` frames kept around them for copying fit :data:`BATCH_BYTES` (at least one window)."""
    per_frame = FRAME_BYTES * height * width
    return max(1, min(MAX_BATCH, (BATCH_BYTES - held * per_frame) // (length * per_frame)))


def copy_threads() -> int:
    """Frames filled at once by ``fill="copy"``: one per CPU this process may run on (at most 8)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(8, cpus))


def far_frames(i: int, n: int, reach: int) -> list[int]:
    """Frames within ``reach`` of frame ``i`` (of ``n``) that the copy's second tier looks at, nearest
    first (ties: earlier first): every frame up to :data:`DENSE_REACH` away, then only those whose
    index is a multiple of :data:`FAR_STRIDE`. Far away, neighbouring frames show nearly the same; and
    because the grid is fixed in the video, consecutive targets are offered the same far frames, so a
    hole region keeps taking its pixels from the same frame (BENCHMARKS.md: less flicker than frames
    at fixed distances from each target)."""
    near = [j for d in range(1, min(reach, DENSE_REACH) + 1) for j in (i - d, i + d)]
    grid = [j for j in range(i - reach, i + reach + 1) if abs(j - i) > DENSE_REACH and j % FAR_STRIDE == 0]
    return [j for j in near + sorted(grid, key=lambda j: (abs(j - i), j)) if 0 <= j < n]


def copy_sources(
    i: int, n: int, chosen: Sequence[int], copy_from: int, reach: int
) -> tuple[list[int], list[int]]:
    """Frames the copy fill of frame ``i`` (of ``n``) uses: ``(near, far)``.

    ``near``: the ``chosen`` frames, then the ``copy_from`` nearest other frames (ties: earlier first),
    ranked together; ``far``: the :func:`far_frames` within ``reach`` of ``i`` not in ``near``,
    used only where ``near`` does not show the hole.
    """
    near = list(chosen)
    span = copy_from + len(near)  # the nearest copy_from frames not chosen lie within it
    others = sorted(
        (j for j in range(max(0, i - span), min(n, i + span + 1)) if j != i and j not in near),
        key=lambda j: (abs(j - i), j),
    )
    near += others[:copy_from]
    far = [j for j in far_frames(i, n, reach) if j not in near]
    return near, far


def working_size(height: int, width: int, size: int) -> tuple[int, int]:
    """(height, width) Γ runs at: the shorter side scaled to ``size`` (the training size), sides even."""
    scale = size / min(height, width)
    return max(2, round(height * scale / 2) * 2), max(2, round(width * scale / 2) * 2)


# ----------------------------------------------------------------------------- loading a run


def load_run(checkpoint: Path, gamma_given: bool = False) -> tuple[RunConfig, RunDir]:
    """The config and files of a trained run folder (``runs/demo`` or any ``rovr train --out``);
    ``gamma_given`` (``--local``): the folder need not hold stage 1's Γ."""
    run = RunDir(Path(checkpoint))
    if run.root.is_file():
        raise CheckpointError(
            f"--checkpoint '{checkpoint}' is a file; pass a run folder (the --out of `rovr train` or `rovr demo`)"
        )
    if not run.root.exists():
        raise CheckpointError(
            f"run folder '{checkpoint}' does not exist; train one with `rovr demo` or `rovr train`, "
            "or pass --checkpoint RUN"
        )
    if not run.config.is_file():
        advice = "pass --checkpoint RUN, the --out of `rovr train` or `rovr demo`"
        raise CheckpointError(
            f"'{checkpoint}' is not a rovr run folder (no config.yaml); {no_gamma_advice(run.root, advice)}"
        )
    if not run.local.is_file() and not gamma_given:
        advice = "train it with `rovr demo` or `rovr train`, pass --checkpoint RUN, or name a Γ with --local"
        raise CheckpointError(
            f"run folder '{checkpoint}' has no trained Γ ({run.local.name}); {no_gamma_advice(run.root, advice)}"
        )
    cfg = read_run_config(run.config)
    if cfg.device != "cpu" and not torch.cuda.is_available():
        log.info("run '%s' was configured for %s; no GPU here, restoring on the CPU", run.root, cfg.device)
        cfg.device = "cpu"
    return cfg, run


def restore_gamma(run: RunDir, chooser: Chooser) -> Path:
    """The Γ ``rovr restore`` runs by default: the policy's own (trained alongside it during PPG,
    ``ppg.train_local``), else the first Γ a PPG run of the run folder tuned, else stage 1's. A tuned Γ
    has had more training than stage 1's, and the measurements found it better under other policies
    too: Table 2's ``imitation_tuned_local`` beat ``imitation`` with stage 1's Γ on the real clips in
    every seed (BENCHMARKS.md, "The same variant on today's code")."""
    own = run.local_for(chooser.name if isinstance(chooser, PolicyChooser) else None)
    first = run.first_tuned()
    return own if own != run.local or first is None else run.tuned_local(first)


def pick_chooser(cfg: RunConfig, run: RunDir, policy: str | Chooser | None) -> Chooser:
    """A trained policy of the run (``policy`` or the best available), a named baseline, or
    ``policy`` itself when it is a :class:`~rovr.conditioning.Chooser` (a researcher's own rule).

    With no trained policy in the run, the coverage oracle of the user's masks picks the frames
    (``oracle_best``; it needs only the masks, no ground truth).
    """
    usable = "pass --policy sequential, nearest, stride, random or oracle_best, or a policy the run trained"
    if policy is not None and not isinstance(policy, str):
        check_chooser(policy, "policy")
        if policy.name in NEEDS_ORIGINAL or isinstance(policy, (CopyOracle, BruteForce)):
            raise RovrError(
                f"policy '{policy.name}' scores frames against the original video under the holes, which a "
                f"video to restore does not have (it is an evaluation baseline); {usable}"
            )
        return policy
    if policy in NEEDS_ORIGINAL:
        raise RovrError(
            f"--policy {policy} scores frames against the original video under the holes, which a video to "
            f"restore does not have (it is an evaluation baseline); {usable}"
        )
    if policy == SAME_LOCAL_CONTROL:  # a Table 2 row, not a policy
        raise RovrError(
            f"--policy {SAME_LOCAL_CONTROL} is Table 2's same-Γ control: pass --policy imitation (the "
            "default), which repairs with that tuned Γ already"
        )
    if policy and not run.policy(policy).is_file():
        try:
            return make_baseline(policy)
        except ValueError:
            raise RovrError(
                f"run '{run.root}' has no policy '{policy}' (no {run.policy(policy).name}) and it is not a "
                f"baseline; train it or {usable}"
            ) from None
    names = [policy] if policy else [p for p in PREFERRED if run.policy(p).is_file()]
    if not names:
        log.warning(
            "run '%s' has no trained policy; conditioning on the oracle's best pairs from the masks", run.root
        )
        return make_baseline("oracle_best")
    return load_policy(run.policy(names[0]), cfg, names[0], "rovr train-policy")


# ----------------------------------------------------------------------------- checking paths


def _same_file(a: Path, b: Path) -> bool:
    if a.resolve() == b.resolve():
        return True
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def frames_out(out: Path) -> bool:
    """True when ``out`` names a folder of PNG frames: no suffix, or an existing folder not named .mp4."""
    return out.suffix == "" or (out.is_dir() and out.suffix.lower() != ".mp4")


REPORT_KEYS = ("video", "output", "conditioning")  # what marks a JSON file as an earlier restore report


def _inside(path: Path, folder: Path, exists: bool = True) -> bool:
    """True when ``path`` is ``folder`` or lies (at any depth) inside it (``exists``: a folder that
    exists; else also one still to be made, such as a frame output)."""
    try:
        return (folder.is_dir() or not exists) and path.resolve().is_relative_to(folder.resolve())
    except OSError:
        return False


def _is_restore_report(path: Path) -> bool:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return isinstance(data, dict) and all(k in data for k in REPORT_KEYS)


def check_paths(
    video: Path, out: Path, report: Path | None, masks: Path | None = None, checkpoint: Path | None = None
) -> None:
    """One-line errors for outputs that are neither .mp4 nor a frame folder, would overwrite an input
    (the video, the masks, the run) or a file that is not an earlier report, or cannot be written."""
    if not frames_out(out) and out.suffix.lower() != ".mp4":
        raise RovrError(
            f"output '{out}' must end in .mp4 (a video) or be a folder (PNG frames); pass -o NAME.mp4 or -o FOLDER"
        )
    inputs = [(video, "the input video")]
    if masks is not None:
        inputs.append((masks, "the masks"))
    for path, what in inputs:
        if _same_file(out, path):
            raise RovrError(f"output '{out}' would overwrite {what}; choose another -o")
    if checkpoint is not None and _inside(out, checkpoint):
        raise RovrError(f"output '{out}' lies inside the run folder '{checkpoint}'; choose another -o")
    if frames_out(out):
        check_frame_folder(out)
        check_writable(out, "output", "-o", folder=True)
    else:
        check_writable(out, "output", "-o")
    if report is not None:
        for path, what in [*inputs, (out, "the output")]:
            if _same_file(report, path) or _inside(report, path, exists=path != out or not frames_out(out)):
                raise RovrError(f"report '{report}' would overwrite {what}; choose another --report")
        if checkpoint is not None and _inside(report, checkpoint):
            raise RovrError(
                f"report '{report}' lies inside the run folder '{checkpoint}'; choose another --report"
            )
        if report.is_file() and not _is_restore_report(report):
            raise RovrError(
                f"report '{report}' exists and is not an earlier restore report; choose another --report "
                "(a new file, or the report of an earlier restore to replace)"
            )
        check_writable(report, "report", "--report")


# ----------------------------------------------------------------------------- restoring


def parse_box(text: str) -> tuple[int, int, int, int]:
    """``"X,Y,W,H"`` (pixels: left, top, width, height) -> (x, y, w, h); RovrError (one line) if malformed."""
    parts = text.replace(" ", "").split(",")
    try:
        x, y, w, h = (int(p) for p in parts)
    except ValueError:
        x = y = w = h = -1
    if x < 0 or y < 0 or w < 1 or h < 1:
        raise RovrError(
            f"--box '{text}' is not X,Y,W,H in whole pixels (left, top >= 0; width, height >= 1); "
            "e.g. --box 20,30,200,80"
        )
    return x, y, w, h


def box_mask(boxes: Sequence[tuple[int, int, int, int]], height: int, width: int) -> np.ndarray:
    """The union of ``boxes`` (x, y, w, h) as a read-only bool (height, width) mask, True = hole;
    RovrError if a box reaches past the frame."""
    mask = np.zeros((height, width), bool)
    for x, y, w, h in boxes:
        if x + w > width or y + h > height:
            raise RovrError(
                f"--box {x},{y},{w},{h} reaches past the {width}x{height} frame (x + w <= {width}, "
                f"y + h <= {height}); pass a box inside it"
            )
        mask[y : y + h, x : x + w] = True
    mask.flags.writeable = False
    return mask


def restore_video(
    video: str | Path,
    masks: str | Path | None,
    out: str | Path,
    checkpoint: str | Path,
    policy: str | Chooser | None = None,
    report: str | Path | None = None,
    dilate: int = 0,
    on_frames: Callable[[int], None] | None = None,
    batch: int | None = None,
    audio: bool = True,
    fill: str = "copy",
    copy_from: int = COPY_FROM,
    copy_reach: int = COPY_REACH,
    unseen: str = "telea",
    start: int = 0,
    frames: int | None = None,
    boxes: Sequence[str | tuple[int, int, int, int]] = (),
    threads: int = 0,
    local: str | Path | None = None,
) -> RestoreResult:
    """In-paint the hole pixels of ``video`` (file or frame folder) given by ``masks``; write ``out``.

    ``masks``: a folder of one mask image per frame, one image for every frame (non-zero = hole), or
    a video of the masks (white = hole; :func:`rovr.video.io.iter_masks`); None with ``boxes``.
    ``boxes``: rectangles ``"X,Y,W,H"`` (or (x, y, w, h)) in pixels that are holes in every frame —
    a logo, a watermark, a time stamp — added to ``masks`` where both are given.
    ``out`` is an H.264 mp4 of the input's size and frame rate, or a folder (no ``.mp4`` suffix) that
    gets one lossless PNG per frame (missing folders are created); only
    hole pixels (grown by ``dilate`` pixels) differ from the input. ``report``: JSON with the
    conditioning frames of every frame. ``on_frames(n)`` is called once with 0 when the input has been
    checked and the work begins, then after every n frames written. ``policy``: a policy of the run or
    a baseline by name (default: the run's best trained policy), or any
    :class:`~rovr.conditioning.Chooser` object (it sees observed pixels and masks only).
    ``batch`` windows run together as one batch of episodes (default: as many as fit
    :data:`BATCH_BYTES` of held frames, at most :data:`MAX_BATCH`). ``audio``: carry the input's
    sound into ``out`` (copied, or re-encoded as AAC; :func:`rovr.video.io.carry_audio`). ``fill``:
    "copy" (the full-size pixels of other frames where they show the hole; a video already at Γ's
    working size gets Γ's output as it is, ``result.fill == "gamma"``) or "gamma".
    ``copy_from``: how many other frames, nearest first, "copy" also ranks with the chosen ones;
    ``copy_reach``: how far (frames) it looks beyond them for what they do not show
    (:func:`copy_sources`; lowered to fit :data:`REACH_BYTES`); ``unseen``: how "copy" fills what no
    frame shows, "telea" (in-painted from around it at full size) or "gamma" (Γ's resized output).
    ``start``, ``frames``: restore only frames ``start .. start+frames-1`` (default: to the end) into
    an output of that many frames — a quick look at a long video, or a part of it — with the sound
    of that stretch; the masks still cover the whole video, and frames outside the part are neither
    decoded nor copied from. ``threads`` > 0 caps the CPU threads of Γ (torch) and of the copy
    (default: :func:`copy_threads`). ``local``: the Γ checkpoint to run (a file of the run folder by
    name, e.g. ``local_rovr_flow_warm.safetensors``, or a path); default: the policy's own Γ where its
    PPG run trained one (``ppg.train_local``), else another PPG run's tuned Γ, else stage 1's
    ``local.safetensors`` (:func:`restore_gamma`).
    Everything is checked before any work; an exception midway leaves neither ``out`` nor a temp file.
    """
    video, out, checkpoint = Path(video), Path(out), Path(checkpoint)
    masks = Path(masks) if masks is not None else None
    report = Path(report) if report is not None else None
    if masks is None and not boxes:
        raise RovrError("nothing marks the holes; pass --masks MASKS, --box X,Y,W,H, or both")
    rects = [parse_box(b) if isinstance(b, str) else parse_box(",".join(map(str, b))) for b in boxes]
    if dilate < 0:
        raise RovrError(f"--dilate must be >= 0 pixels (got {dilate})")
    if batch is not None and batch < 1:
        raise RovrError(f"batch must be >= 1 window (got {batch})")
    if fill not in FILLS:
        raise RovrError(f"--fill must be one of {', '.join(FILLS)} (got {fill!r})")
    if copy_from < 0:
        raise RovrError(f"--copy-from must be >= 0 frames (got {copy_from})")
    if copy_reach < 0:
        raise RovrError(f"--copy-reach must be >= 0 frames (got {copy_reach})")
    if unseen not in UNSEEN:
        raise RovrError(f"--unseen must be one of {', '.join(UNSEEN)} (got {unseen!r})")
    if threads < 0:
        raise RovrError(f"--threads must be >= 0 (0 = one per core; got {threads})")
    check_paths(video, out, report, masks, checkpoint)
    info = probe(video)
    n = info.frames - start if frames is None else frames
    if start < 0 or n < MIN_FRAMES or start + n > info.frames:
        asked = f"--start {start}" + ("" if frames is None else f" --frames {frames}")
        if start < 0 or start >= info.frames or start + n > info.frames:
            what = "is outside" if frames is None or start < 0 or start >= info.frames else "reaches past"
        else:
            what = f"leaves {max(n, 0)} frame(s) of"
        raise RovrError(
            f"{asked} {what} '{video}' (frames 0..{info.frames - 1}); restore at least "
            f"{MIN_FRAMES} frames that lie in the video"
        )
    box = box_mask(rects, info.height, info.width) if rects else None
    mask_iter: Iterator[np.ndarray]
    if masks is None:
        assert box is not None  # boxes were given (checked above)
        mask_iter = itertools.repeat(box, n)
    else:
        # count and sizes checked here, against the whole video
        mask_iter = iter_masks(masks, info.frames, info.height, info.width, start, n)
        if box is not None:
            mask_iter = (m | box for m in mask_iter)
    cfg, run = load_run(checkpoint, gamma_given=local is not None)
    device = torch.device(cfg.device)
    chooser = pick_chooser(cfg, run, policy)
    length = min(cfg.data.frames, n)
    if length < cfg.data.frames and isinstance(chooser, PolicyChooser):
        if cfg.policy.kind != "pointer" or length < SHORT_FRACTION * cfg.data.frames:
            log.warning(
                "'%s' has %d frames to restore, fewer than %s; using the oracle's best pairs",
                video,
                n,
                f"{math.ceil(SHORT_FRACTION * cfg.data.frames)}, the fewest the policy (T={cfg.data.frames}) chooses among"
                if cfg.policy.kind == "pointer"
                else f"the paper actor's T={cfg.data.frames}",
            )
            chooser = make_baseline("oracle_best")
        else:
            log.info(
                "%d frames of '%s' to restore, fewer than the policy's T=%d: it chooses among them",
                n,
                video,
                cfg.data.frames,
            )
    gamma = run.gamma_file(local) if local is not None else restore_gamma(run, chooser)
    net = load_local(gamma, cfg, device)
    if gamma != run.local:
        log.info("Γ: %s", gamma.name if gamma.parent == run.root else gamma)
    if cfg.local.repair_known:
        log.warning(
            "this run's Γ also corrects known pixels (local.repair_known), at %dpx only; restore "
            "repairs the holes and keeps every other pixel as it is",
            cfg.data.size,
        )
    plan = plan_windows(n, length)
    work = working_size(info.height, info.width, cfg.data.size)
    # growing by the frame's longer side already reaches every pixel: a larger value changes nothing
    grow = min(dilate, max(info.height, info.width))
    kernel = np.ones((2 * grow + 1, 2 * grow + 1), np.uint8) if grow > 0 else None
    if fill == "copy" and work == (info.height, info.width):
        fill = "gamma"  # Γ already worked at the video's size and saw the chosen frames: nothing to sharpen
        log.info("the video is at Γ's working size: Γ's fill is written as it is")
    reach = min(copy_reach, REACH_BYTES // (2 * FRAME_BYTES * info.height * info.width))
    if fill == "copy" and reach < copy_reach:
        log.warning(
            "copying from at most %d frames away (not %d): the %d frames either side of %dx%d would "
            "need more than %d MiB (rovr.restore.REACH_BYTES)",
            reach,
            copy_reach,
            copy_reach,
            info.width,
            info.height,
            REACH_BYTES // 2**20,
        )
    # the nearest frames are held in memory too: beyond the default, no more than the reach's budget
    # allows (and no more than the video has)
    near_cap = max(COPY_FROM, REACH_BYTES // (2 * FRAME_BYTES * info.height * info.width) - cfg.k)
    if fill == "copy" and copy_from > min(n - 1, near_cap) and near_cap < n - 1:
        log.warning(
            "ranking the %d nearest frames (not %d): more of %dx%d would need more than %d MiB "
            "(rovr.restore.REACH_BYTES)",
            near_cap,
            copy_from,
            info.width,
            info.height,
            REACH_BYTES // 2**20,
        )
    copy_from = min(copy_from, n - 1, near_cap)
    # frames a written frame may copy from lie at most `lag` before or after it
    lag = max(length - 1, copy_from + cfg.k, reach) if fill == "copy" else 0
    batch = min(batch or windows_per_batch(info.height, info.width, length, held=2 * lag), len(plan))
    log.info(
        "restoring %d frames of %dx%d%s in %s of %d frames (%d at a time); Γ (%s) runs at %dx%d; policy %s",
        n,
        info.width,
        info.height,
        f" (frames {start}..{start + n - 1} of {info.frames})" if n < info.frames else "",
        "one window" if len(plan) == 1 else f"{len(plan)} windows",
        length,
        batch,
        gamma.name,
        work[1],
        work[0],
        chooser.name,
    )
    if on_frames is not None:
        on_frames(0)  # the input is accepted and the work begins
    result = RestoreResult(
        0,
        0.0,
        chooser.name,
        len(plan),
        batch,
        work,
        [],
        fill=fill,
        copy_reach=reach if fill == "copy" else 0,
        unseen=unseen if fill == "copy" else "gamma",
        local=str(gamma.resolve()),
    )
    started = time.perf_counter()
    frame_iter = iter_frames(video, start, n)
    full: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # (frame, mask) read, not yet through Γ
    small: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # (frame, mask) at the working size
    # frame i with its writing window's Γ fill in its holes (full size), its mask and its chosen
    # frames; held while a later frame may copy from it
    ready: dict[int, tuple[np.ndarray, np.ndarray, list[int]]] = {}
    read = written = 0
    pool_threads = min(threads, copy_threads()) if threads > 0 else copy_threads()
    with (
        (
            FrameWriter(out, info.width, info.height)
            if frames_out(out)
            else VideoWriter(
                out,
                info.fps,
                info.width,
                info.height,
                audio_from=video if audio else None,
                audio_span=None if n == info.frames else (start / info.fps, (start + n) / info.fps),
            )
        ) as writer,
        ThreadPoolExecutor(pool_threads) as pool,
        _torch_threads(threads),
    ):
        for g in range(0, len(plan), batch):
            group = plan[g : g + batch]
            while read < group[-1].stop:
                try:
                    frame, mask = next(frame_iter), next(mask_iter)
                except StopIteration:
                    raise DataError(
                        f"'{video}' ended after {start + read} of its announced {info.frames} frames (truncated?); "
                        "nothing was written"
                    ) from None
                if kernel is not None:
                    mask = cv2.dilate(mask.astype(np.uint8), kernel).astype(bool)
                full[read] = (frame, mask)
                small[read] = _shrink(frame, mask, work)
                read += 1
            # windows with holes go through the loop together, as a batch of episodes
            todo = [w for w in group if any(small[i][1].any() for i in range(w.start, w.stop))]
            done: dict[Window, tuple[np.ndarray, np.ndarray]] = {}
            if todo:
                filled, picked = _restore_windows(
                    [np.stack([small[i][0] for i in range(w.start, w.stop)]) for w in todo],
                    [np.stack([small[i][1] for i in range(w.start, w.stop)]) for w in todo],
                    net,
                    chooser,
                    cfg,
                    device,
                )
                done = {w: (filled[b], picked[b]) for b, w in enumerate(todo)}
            for w in group:
                for i in range(w.write_from, w.write_to):
                    frame, mask = full.pop(i)
                    if mask.any():
                        rec, chosen = done[w][0][i - w.start], done[w][1][i - w.start]
                        ready[i] = (_composite(frame, mask, rec), mask, [w.start + int(c) for c in chosen])
                    else:
                        ready[i] = (frame, mask, [])
            known = group[-1].write_to  # every frame before it is in `ready`
            # the frames that can be written now: every frame they copy from is in `ready`
            now: list[tuple[int, list[int], list[int]]] = []  # (frame, near, far: copy_sources)
            while written + len(now) < known:
                i = written + len(now)
                near, far = (
                    copy_sources(i, n, ready[i][2], copy_from, reach)
                    if fill == "copy" and ready[i][1].any()
                    else ([], [])
                )
                if near + far and max(near + far) >= known:
                    break  # a frame it copies from is in a later batch
                now.append((i, near, far))

            def finish(item: tuple[int, list[int], list[int]]) -> tuple[np.ndarray, FillStats]:
                i, near, far = item
                target, mask, _ = ready[i]
                if fill != "copy" or not mask.any():
                    return target, FillStats(hole=int(mask.sum()))
                return copy_fill(
                    target,
                    mask,
                    [ready[j][0] for j in near + far],
                    [ready[j][1] for j in near + far],
                    tiers=(len(near), len(far)),
                    unseen=unseen,
                )

            # frames are filled in parallel (OpenCV releases the GIL) and written in order, a few
            # at a time so that finished frames do not pile up ahead of the encoder
            step = 2 * pool_threads
            done_now = (r for k in range(0, len(now), step) for r in pool.map(finish, now[k : k + step]))
            for (i, _, _), (target, stats) in zip(now, done_now):
                result.hole_pixels += stats.hole
                result.copied_pixels += stats.copied
                result.inpainted_pixels += stats.inpainted
                result.unaligned_pixels += stats.unaligned
                result.whole_hole_frames += bool(stats.hole == target.shape[0] * target.shape[1])
                writer.write(target)
                result.choices.append([start + c for c in ready[i][2]])
                written += 1
                result.frames += 1
                if on_frames is not None:
                    on_frames(1)
            for i in [i for i in ready if i < written - lag]:
                del ready[i]
            keep_from = plan[g + batch].start if g + batch < len(plan) else read
            for i in [i for i in small if i < keep_from]:
                del small[i]
            assert len(small) <= length and len(full) <= length  # only the next window's overlap is kept
            assert len(ready) <= 2 * lag + batch * length
    assert result.frames == n and not full
    result.seconds = time.perf_counter() - started
    if not result.hole_pixels:
        log.warning("the masks mark no hole in the frames restored: the output is the input, re-encoded")
    elif result.whole_hole_frames:
        log.warning(
            "%d of %d frames are hole everywhere: nothing in them to align other frames on, so %s",
            result.whole_hole_frames,
            result.frames,
            "their pixels are copied unmoved from the frames nearby that show them"
            if result.unaligned_pixels
            else "they keep Γ's low-resolution fill",
        )
    result.audio = writer.audio
    if report is not None:
        atomic_write_json(
            report,
            {
                "video": str(video),
                "masks": None if masks is None else str(masks),
                "boxes": [list(r) for r in rects],
                "output": str(out),
                "checkpoint": str(checkpoint),
                "policy": result.policy,
                "local": result.local,
                "start": start,
                "frames": result.frames,
                "fps": info.fps,
                "size": [info.width, info.height],
                "work_size": [work[1], work[0]],
                "windows": [[start + w.start, start + w.stop] for w in plan],
                "seconds": round(result.seconds, 3),
                "audio": result.audio,
                "fill": result.fill,
                "copied": round(result.copied, 4),
                "copy_from": copy_from if result.fill == "copy" else 0,
                "copy_reach": result.copy_reach,
                "unseen": result.unseen,
                "inpainted": round(result.inpainted, 4),
                "unaligned": round(result.unaligned, 4),
                "whole_hole_frames": result.whole_hole_frames,
                "conditioning": result.choices,
            },
        )
    return result


@contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    """torch's CPU threads set to ``n`` (> 0) inside the block and put back after it; 0 leaves them."""
    before = torch.get_num_threads()
    if n > 0:  # more threads than CPUs only contend (and thousands fail to start)
        torch.set_num_threads(min(n, os.cpu_count() or 1))
    try:
        yield
    finally:
        if n > 0:
            torch.set_num_threads(before)


def _shrink(frame: np.ndarray, mask: np.ndarray, work: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """A frame (H, W, 3) and mask (H, W) at the working size; a working pixel is a hole if any pixel under it is."""
    wh, ww = work
    small = cv2.resize(frame, (ww, wh), interpolation=cv2.INTER_AREA)
    # INTER_AREA gives every source pixel a positive weight (shrinking: exact area; enlarging: linear)
    small_mask = cv2.resize(mask.astype(np.float32), (ww, wh), interpolation=cv2.INTER_AREA) > 0
    return small, small_mask


def _composite(frame: np.ndarray, mask: np.ndarray, filled: np.ndarray) -> np.ndarray:
    """``frame`` (H, W, 3) with its hole pixels taken from ``filled`` (h, w, 3) resized to H x W."""
    h, w = mask.shape
    up = cv2.resize(filled, (w, h), interpolation=cv2.INTER_CUBIC)
    out = frame.copy()
    out[mask] = up[mask]
    return out


def _restore_windows(
    frames: list[np.ndarray],
    masks: list[np.ndarray],
    net: LocalNet,
    chooser: Chooser,
    cfg: RunConfig,
    device: torch.device,
) -> tuple[np.ndarray, np.ndarray]:
    """B windows, each (T, h, w, 3) + masks (T, h, w), through the reconstruction loop as B episodes.

    Returns the reconstructed frames uint8 (B, T, h, w, 3) and the conditioning frames (B, T, k),
    as indices within each window.
    """
    # the only truth there is: the observed pixels (the input under the holes is what is being
    # removed, so no chooser may see it as the "original")
    observed = [apply_masks(f, m) for f, m in zip(frames, masks)]
    clips = [Corrupted(original=o, frames=o, masks=m) for o, m in zip(observed, masks)]
    episodes = Episodes.of_run(cfg, clips, net, None, device=device)
    rec = reconstruct(episodes, chooser)
    return to_uint8(rec.video), rec.choices

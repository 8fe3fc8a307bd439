"""Where videos come from: a folder of the user's videos, or the embedded synthetic default.

A :class:`Source` names its videos with stable string ids and reads any frame window of one as
uint8 (T, H, W, 3). :func:`open_source` picks the source from :class:`rovr.config.DataConfig`.
"""

from __future__ import annotations

import logging
import math
import os
from functools import cache, lru_cache
from pathlib import Path
from typing import Protocol, runtime_checkable

import cv2
import numpy as np

from rovr.config import DataConfig
from rovr.errors import DataError
from rovr.video.io import (
    FOLDER_FPS,
    IMAGE_EXTS,
    VIDEO_EXTS,
    VideoInfo,
    natural_key,
    probe,
    read_video,
)

log = logging.getLogger(__name__)


@runtime_checkable
class Source(Protocol):
    """A set of videos addressed by stable string ids."""

    @property
    def name(self) -> str:
        """Human-readable name (used in logs and error messages)."""
        ...

    def videos(self) -> list[str]:
        """Ids of all videos, in a stable order."""
        ...

    def num_frames(self, video: str) -> int:
        """Number of frames of ``video`` (without decoding it)."""
        ...

    def fps(self, video: str) -> float:
        """Frame rate of ``video``."""
        ...

    def read(self, video: str, start: int = 0, count: int | None = None) -> np.ndarray:
        """Frames ``start .. start+count-1`` (default: all) as uint8 (T, H, W, 3) RGB."""
        ...


# ----------------------------------------------------------------------------- folders


def is_mask_name(name: str) -> bool:
    """True for names of mask data, not videos: DAVIS ``Annotations*``, ``mask(s)``, ``*_mask(s)``."""
    stem = name.lower().rsplit(".", 1)[0] if "." in name else name.lower()
    return (
        stem in ("mask", "masks")
        or stem.startswith("annotations")
        or stem.endswith(("_mask", "_masks", "-mask", "-masks"))
    )


#: What this process already said about a folder (the videos :class:`VideoFolder` found in it, the
#: resolution a DAVIS folder is read at): each stage opens its splits anew, and says it once.
_ANNOUNCED: set[tuple[str, object]] = set()


def _scan(root: Path, quiet: bool = False) -> dict[str, Path]:
    """Map video id (POSIX path relative to ``root``) -> video file or frame folder, recursively.

    A folder whose direct children include images is one video (a frame folder); its sub-folders
    are scanned too. Hidden entries and mask folders/files (:func:`is_mask_name`) are skipped. Under a
    DAVIS-style ``JPEGImages`` folder holding several resolutions, only one is used (``480p`` if
    present), so one sequence never appears twice. ``quiet``: say nothing of skipped folders (a check
    that scans again later).
    """
    found: dict[str, Path] = {}
    seen: set[str] = set()

    def vid(p: Path) -> str:
        return p.name if p == root else p.relative_to(root).as_posix()

    def visit(d: Path) -> None:
        real = os.path.realpath(d)
        if real in seen:  # symlink loop or the same folder linked twice
            return
        seen.add(real)
        try:
            entries = sorted(os.scandir(d), key=lambda e: natural_key(e.name))
        except OSError as err:
            if not quiet:
                log.warning("skipping folder '%s' (%s)", d, err.strerror)
            return
        entries = [e for e in entries if not e.name.startswith(".") and not is_mask_name(e.name)]
        files = [e for e in entries if e.is_file()]
        dirs = [Path(e.path) for e in entries if e.is_dir()]
        if any(os.path.splitext(e.name)[1].lower() in IMAGE_EXTS for e in files):
            found[vid(d)] = d
        for e in files:
            if os.path.splitext(e.name)[1].lower() in VIDEO_EXTS:
                found[vid(Path(e.path))] = Path(e.path)
        if d.name.lower() == "jpegimages" and len(dirs) > 1:
            keep = next((x for x in dirs if x.name.lower() == "480p"), dirs[0])
            if not quiet:
                said = ("resolutions", str(d.resolve()))
                if said not in _ANNOUNCED:  # each stage scans anew: say it once
                    _ANNOUNCED.add(said)
                    log.info("'%s' holds several resolutions; using only '%s'", d, keep.name)
            dirs = [keep]
        for sub in dirs:
            visit(sub)

    visit(root)
    return found


def scan_folder(root: Path, quiet: bool = False) -> dict[str, Path]:
    """:func:`_scan` of a data folder; DataError (one line) if it is missing, a file or holds no videos."""
    if not root.exists():
        raise DataError(f"data folder '{root}' does not exist; pass a folder of videos or frame folders")
    if not root.is_dir():
        raise DataError(f"data source '{root}' is a file; pass the folder that holds your videos")
    paths = _scan(root, quiet)
    if not paths:
        raise DataError(
            f"data folder '{root}' holds no videos ({', '.join(VIDEO_EXTS)}) and no frame folders "
            f"({', '.join(IMAGE_EXTS)}); put your videos in it"
        )
    return paths


class VideoFolder:
    """Every video file (mp4, avi, mov, mkv, webm, gif) and frame folder under ``root``, recursively.

    Covers a flat folder of videos, RealVSR-style folders of frames and DAVIS ``JPEGImages/<res>/<seq>``
    (``Annotations`` and ``*_mask`` folders are masks, not videos). Ids are paths relative to ``root``.
    Files are opened only when asked about, so a broken file raises DataError when it is first used.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).expanduser()
        self._paths = scan_folder(self.root)
        self._ids = sorted(self._paths, key=natural_key)
        self._info: dict[str, VideoInfo] = {}
        said = (str(self.root.resolve()), len(self._ids))
        if said not in _ANNOUNCED:  # each stage opens its splits anew: say it once
            _ANNOUNCED.add(said)
            log.info(
                "found %d video%s under '%s'", len(self._ids), "" if len(self._ids) == 1 else "s", self.root
            )

    @property
    def name(self) -> str:
        return str(self.root)

    def videos(self) -> list[str]:
        return list(self._ids)

    def path(self, video: str) -> Path:
        """The file or frame folder of ``video``."""
        try:
            return self._paths[video]
        except KeyError:
            raise DataError(
                f"no video '{video}' under '{self.root}'; use one of VideoFolder.videos()"
            ) from None

    def info(self, video: str) -> VideoInfo:
        """Probe of ``video`` (cached)."""
        if video not in self._info:
            self._info[video] = probe(self.path(video))
        return self._info[video]

    def num_frames(self, video: str) -> int:
        return self.info(video).frames

    def fps(self, video: str) -> float:
        return self.info(video).fps

    def read(self, video: str, start: int = 0, count: int | None = None) -> np.ndarray:
        return read_video(self.path(video), start, count)

    def __repr__(self) -> str:
        return f"VideoFolder('{self.root}', {len(self._ids)} videos)"


# ----------------------------------------------------------------------------- synthetic videos

_BACKGROUNDS = (
    "astronaut",
    "coffee",
    "chelsea",
    "rocket",
    "camera",
    "immunohistochemistry",
    "hubble_deep_field",
)
_PATCHES = (*_BACKGROUNDS, "coins", "clock", "moon", "brick", "grass", "gravel")


@cache
def _photo(name: str) -> np.ndarray | None:
    """A photograph shipped with scikit-image as uint8 (H, W, 3) RGB, or None if it cannot be loaded."""
    import skimage.data

    try:
        img = np.asarray(getattr(skimage.data, name)())
    except Exception as e:  # a missing optional data file must not break the embedded default
        log.warning("skimage.data.%s is unavailable (%s); synthetic videos use the other photos", name, e)
        return None
    if img.dtype != np.uint8:
        img = (img.astype(np.float64) * (255.0 / max(float(img.max()), 1.0))).astype(np.uint8)
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    return np.ascontiguousarray(img[:, :, :3])


def _available(names: tuple[str, ...]) -> list[str]:
    ok = [n for n in names if _photo(n) is not None]
    if not ok:
        raise DataError(
            "no scikit-image sample photo could be loaded; reinstall scikit-image or use data.source=DIR"
        )
    return ok


@lru_cache(maxsize=64)
def _canvas(name: str, short_side: int) -> np.ndarray:
    """Photo ``name`` resized (INTER_AREA) so that its shorter side is ``short_side``: uint8 (H, W, 3)."""
    img = _photo(name)
    assert img is not None
    h, w = img.shape[:2]
    s = short_side / min(h, w)
    size = (max(short_side, round(w * s)), max(short_side, round(h * s)))
    interp = cv2.INTER_AREA if s < 1 else cv2.INTER_CUBIC
    return cv2.resize(img, size, interpolation=interp)


def _bounce(x: np.ndarray, length: float) -> np.ndarray:
    """Reflect positions ``x`` into [0, length] (a ball bouncing between two walls)."""
    if length <= 0:
        return np.zeros_like(x)
    m = np.mod(x, 2 * length)
    return np.where(m <= length, m, 2 * length - m)


class SyntheticVideos:
    """The embedded default: ``num_videos`` procedurally generated videos of ``frames`` x ``size`` x ``size``.

    Each video is a camera moving over a real photograph from scikit-image (a smooth pan, a zoom and a
    small rotation, rendered with ``cv2.warpAffine``) with 1-3 textured objects cut from another photo
    that move linearly and bounce off the frame borders. Video ``i`` depends only on (seed, i, frames,
    size) and is generated when read; the photos are loaded once per process.
    """

    fps_value = FOLDER_FPS

    def __init__(self, num_videos: int, frames: int, size: int, seed: int = 0) -> None:
        if num_videos < 1 or frames < 3 or size < 16:
            raise ValueError(
                f"need num_videos >= 1, frames >= 3, size >= 16 (got {num_videos}, {frames}, {size})"
            )
        self.num_videos, self.frames, self.size, self.seed = num_videos, frames, size, seed
        self._ids = [f"synth_{i:05d}" for i in range(num_videos)]
        self._index = {v: i for i, v in enumerate(self._ids)}

    @property
    def name(self) -> str:
        return f"synthetic (seed {self.seed})"

    def videos(self) -> list[str]:
        return list(self._ids)

    def _number(self, video: str) -> int:
        try:
            return self._index[video]
        except KeyError:
            raise DataError(f"no synthetic video '{video}'; use one of SyntheticVideos.videos()") from None

    def num_frames(self, video: str) -> int:
        self._number(video)
        return self.frames

    def fps(self, video: str) -> float:
        self._number(video)
        return self.fps_value

    def read(self, video: str, start: int = 0, count: int | None = None) -> np.ndarray:
        count = self.frames - start if count is None else count
        if start < 0 or count < 1 or start + count > self.frames:
            raise DataError(
                f"frames [{start}, {start + count}) requested but '{video}' has {self.frames} frames; "
                "ask for a window inside the video"
            )
        return self.generate(self._number(video))[start : start + count]

    def generate(self, index: int) -> np.ndarray:
        """Video number ``index``: uint8 (frames, size, size, 3)."""
        S, T = self.size, self.frames
        rng = np.random.default_rng([self.seed, index])
        backgrounds = _available(_BACKGROUNDS)
        bg_name = backgrounds[(index + self.seed) % len(backgrounds)]  # every photo in turn
        canvas = _canvas(bg_name, round(S * rng.uniform(1.8, 2.4)))
        if rng.random() < 0.5:
            canvas = canvas[:, ::-1]
        ch, cw = canvas.shape[:2]

        # Camera: centre, zoom (output px per canvas px) and angle, eased between two nearby random
        # poses: a slow pan of 3-12 % of the frame over the clip, a zoom change within ±4 % and a
        # rotation within ±2°, so distant frames show the same scene, slightly shifted (as in
        # hand-held or tripod footage); the objects carry the larger motion.
        z0 = rng.uniform(1.0, 1.3)
        zoom = np.array([z0, z0 * rng.uniform(0.96, 1.04)])
        a0 = rng.uniform(-4.0, 4.0)
        angle = np.array([a0, a0 + rng.uniform(-2.0, 2.0)])
        r = S * math.sqrt(2) / 2 / zoom.min() + 1  # the view's half-diagonal, in canvas pixels
        lo, hi = np.array([r, r]), np.array([max(r, cw - r), max(r, ch - r)])
        start = rng.uniform(lo, hi)
        theta_cam = rng.uniform(0, 2 * math.pi)
        travel = S * rng.uniform(0.03, 0.12) / zoom.mean()
        end = np.clip(start + travel * np.array([math.cos(theta_cam), math.sin(theta_cam)]), lo, hi)
        centre = np.stack([start, end])  # (pose, axis): (x, y) at the first and the last frame
        u = np.linspace(0.0, 1.0, T)
        ease = u * u * (3 - 2 * u) if rng.random() < 0.5 else u

        # Objects: textured patches (rectangles or ellipses) moving linearly, bouncing off the borders.
        patches = _available(_PATCHES)
        others = [n for n in patches if n != bg_name] or patches
        objects = []
        for _ in range(int(rng.integers(1, 4))):
            src = _photo(others[int(rng.integers(len(others)))])
            assert src is not None
            w, h = (int(v) for v in np.round(S * rng.uniform(0.18, 0.38, size=2)))
            zoom_src = rng.uniform(1.0, 3.0)
            sw, sh = min(src.shape[1], round(w * zoom_src)), min(src.shape[0], round(h * zoom_src))
            x0, y0 = int(rng.integers(0, src.shape[1] - sw + 1)), int(rng.integers(0, src.shape[0] - sh + 1))
            tex = cv2.resize(src[y0 : y0 + sh, x0 : x0 + sw], (w, h), interpolation=cv2.INTER_AREA)
            alpha = np.zeros((h, w), np.uint8)
            if rng.random() < 0.5:
                alpha[:] = 255
            else:
                cv2.ellipse(
                    alpha,
                    (w // 2, h // 2),
                    (max(1, w // 2 - 1), max(1, h // 2 - 1)),
                    0,
                    0,
                    360,
                    255,
                    -1,
                    cv2.LINE_AA,
                )
            p0 = rng.uniform(0, 1, size=2) * (S - w, S - h)
            speed = S * rng.uniform(0.01, 0.04)
            theta = rng.uniform(0, 2 * math.pi)
            steps = np.arange(T)
            xs = _bounce(p0[0] + speed * math.cos(theta) * steps, S - w)
            ys = _bounce(p0[1] + speed * math.sin(theta) * steps, S - h)
            objects.append((tex, alpha, xs, ys))

        out = np.empty((T, S, S, 3), np.uint8)
        for t in range(T):
            cx, cy = centre[0] + (centre[1] - centre[0]) * ease[t]
            z = zoom[0] + (zoom[1] - zoom[0]) * ease[t]
            a = angle[0] + (angle[1] - angle[0]) * ease[t]
            M = cv2.getRotationMatrix2D((float(cx), float(cy)), float(a), float(z))
            M[:, 2] += (S / 2 - cx, S / 2 - cy)
            frame = cv2.warpAffine(
                canvas, M, (S, S), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101
            )
            acc = frame.astype(np.float32)
            for tex, alpha, xs, ys in objects:
                shift = np.array([[1.0, 0.0, xs[t]], [0.0, 1.0, ys[t]]])
                layer = cv2.warpAffine(
                    tex, shift, (S, S), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT
                )
                cover = cv2.warpAffine(
                    alpha, shift, (S, S), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT
                )
                cov = cover.astype(np.float32)[:, :, None] / 255.0
                acc = acc * (1.0 - cov) + layer.astype(np.float32) * cov
            out[t] = np.clip(np.rint(acc), 0, 255).astype(np.uint8)
        return out

    def __repr__(self) -> str:
        return f"SyntheticVideos({self.num_videos}, frames={self.frames}, size={self.size}, seed={self.seed})"


# ----------------------------------------------------------------------------- selection


def open_source(cfg: DataConfig) -> Source:
    """``cfg.source == 'synthetic'``: :class:`SyntheticVideos` at ``cfg.size`` with ``cfg.frames``
    frames per video; anything else is a folder for :class:`VideoFolder` (DataError if missing or empty).
    """
    if cfg.source == "synthetic":
        return SyntheticVideos(cfg.num_videos, frames=cfg.frames, size=cfg.size, seed=cfg.seed)
    return VideoFolder(_source_root(cfg))


def check_source(cfg: DataConfig) -> None:
    """Refuse, in one line (DataError), a data folder that is missing, a file or holds no videos —
    what :func:`open_source` would refuse, without opening anything, so that commands can check
    their data before they write or load anything else."""
    if cfg.source != "synthetic":
        scan_folder(_source_root(cfg), quiet=True)


def _source_root(cfg: DataConfig) -> Path:
    root = Path(cfg.source).expanduser()
    if not root.exists():
        raise DataError(
            f"data.source '{cfg.source}' does not exist; pass 'synthetic' or a folder of videos / frame folders"
        )
    return root

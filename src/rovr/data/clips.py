"""Clips: fixed-length, square windows of source videos, split into train/val/test by source video."""

from __future__ import annotations

import hashlib
import logging
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import overload

import cv2
import numpy as np

from rovr.config import DataConfig
from rovr.data.sources import Source, open_source
from rovr.errors import DataError
from rovr.video.io import natural_key

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Clip:
    """``frames`` uint8 (T, S, S, 3) taken from frames ``start .. start+T-1`` of source video ``video``."""

    frames: np.ndarray
    video: str
    start: int


def resize_and_crop(frames: np.ndarray, size: int) -> np.ndarray:
    """Resize the shorter side to ``size`` and centre-crop to ``size`` x ``size``.

    uint8 (T, H, W, 3) -> (T, size, size, 3), or (H, W, 3) -> (size, size, 3). Shrinking uses
    ``cv2.INTER_AREA``; enlarging uses ``cv2.INTER_LINEAR`` (INTER_AREA degrades to nearest there).
    """
    single = frames.ndim == 3
    batch = frames[None] if single else frames
    _, h, w, _ = batch.shape
    if (h, w) == (size, size):
        return frames
    scale = size / min(h, w)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    y0, x0 = (nh - size) // 2, (nw - size) // 2
    out = np.empty((batch.shape[0], size, size, 3), dtype=np.uint8)
    for i, frame in enumerate(batch):
        out[i] = cv2.resize(frame, (nw, nh), interpolation=interp)[y0 : y0 + size, x0 : x0 + size]
    return out[0] if single else out


def spread(n: int, limit: int = 0) -> list[int]:
    """Indices of ``limit`` items spread evenly over ``n`` (first and last included); all if ``limit`` is 0 or ≥ n.

    Used wherever a budget keeps only some items of an ordered list (clip starts of a video, clips of
    a split sorted by video), so that the kept ones span the whole list instead of its head.
    """
    if limit <= 0 or limit >= n:
        return list(range(n))
    return [int(i) for i in np.unique(np.round(np.linspace(0, n - 1, limit)).astype(int))]


def clip_starts(num_frames: int, length: int, stride: int, max_clips: int = 0) -> list[int]:
    """First frames of the clips of a ``num_frames`` video: 0, stride, 2 stride, ... while a clip fits.

    With ``max_clips`` > 0 and more candidates than that, ``max_clips`` starts spread evenly over
    the candidates (first and last included) are kept.
    """
    if num_frames < length:
        return []
    starts = list(range(0, num_frames - length + 1, stride))
    return [starts[i] for i in spread(len(starts), max_clips)]


def clips_from_video(
    frames: np.ndarray, length: int, stride: int, size: int, max_clips: int = 0, video: str = ""
) -> list[Clip]:
    """Cut uint8 (N, H, W, 3) into clips of ``length`` frames at :func:`clip_starts`, each resized to ``size``."""
    return [
        Clip(resize_and_crop(frames[s : s + length], size), video, s)
        for s in clip_starts(len(frames), length, stride, max_clips)
    ]


#: (source, video, data.frames) already said to be too short: said once, not once per split.
_SAID_SHORT: set[tuple[str, str, int]] = set()


def usable_videos(source: Source, frames: int) -> dict[str, int]:
    """The videos of ``source`` long enough for one clip of ``frames`` → their lengths, in source order.

    A shorter video is in no split (one alone in the test split would leave nothing to evaluate); it
    is said once. DataError (one line) when no video is long enough.
    """
    names = source.videos()
    lengths = {video: source.num_frames(video) for video in names}
    short = [video for video in names if lengths[video] < frames]
    for video in short:
        if (source.name, video, frames) not in _SAID_SHORT:
            _SAID_SHORT.add((source.name, video, frames))
            log.warning("skipping '%s': %d frames, fewer than data.frames=%d", video, lengths[video], frames)
    if names and len(short) == len(names):
        raise DataError(
            f"no video of {source.name} has at least data.frames={frames} frames ({len(short)} skipped); "
            "add longer videos or lower data.frames"
        )
    return {video: n for video, n in lengths.items() if n >= frames}


def video_splits(cfg: DataConfig, source: Source | None = None) -> dict[str, list[str]]:
    """The train/val/test videos of ``cfg``'s source (:func:`split_videos` of its usable videos)."""
    source = source if source is not None else open_source(cfg)
    names = list(usable_videos(source, cfg.frames))
    return split_videos(names, cfg.val_fraction, cfg.test_fraction, cfg.seed)


def _stable_hash(name: str, seed: int) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}\0{name}".encode()).digest()[:8], "big")


def split_videos(
    names: Sequence[str], val_fraction: float, test_fraction: float, seed: int
) -> dict[str, list[str]]:
    """Split source videos (never clips) into {"train", "val", "test"}.

    Videos are ranked by a SHA-256 hash of (seed, name), so the split depends only on the set of names
    and the seed, not on their order or on Python's hash seed. The first ``round(test_fraction N)``
    go to test, the next ``round(val_fraction N)`` to val, the rest to train. A fraction > 0 gets at
    least one video, and train keeps at least one, so with N >= 3 every split with a non-zero
    fraction is non-empty. Each list is sorted by name.
    """
    unique = sorted(set(names), key=natural_key)
    n = len(unique)
    n_test, n_val = round(test_fraction * n), round(val_fraction * n)
    if test_fraction > 0:
        n_test = max(n_test, 1)
    if val_fraction > 0:
        n_val = max(n_val, 1)
    while n_test + n_val > max(n - 1, 0):
        if n_val >= n_test and n_val > 0:
            n_val -= 1
        else:
            n_test -= 1
    ranked = sorted(unique, key=lambda v: (_stable_hash(v, seed), v))
    parts = {
        "test": ranked[:n_test],
        "val": ranked[n_test : n_test + n_val],
        "train": ranked[n_test + n_val :],
    }
    return {k: sorted(parts[k], key=natural_key) for k in SPLITS}


class ClipSet(Sequence[Clip]):
    """The clips of one split (``"train"``, ``"val"``, ``"test"``, or ``"all"``) of ``cfg``'s source.

    Clips are ``cfg.frames`` long, start every ``cfg.stride`` frames (at most ``cfg.max_clips_per_video``
    per video) and are resized/cropped to ``cfg.size``. Videos shorter than ``cfg.frames`` are skipped
    with a warning; DataError if none of the split's videos is long enough. Clips are decoded when first
    indexed and kept in an LRU cache of ``cache_bytes``; their frames are read-only (copy to modify).
    Pass ``source`` to share one opened source between splits.
    """

    def __init__(
        self, cfg: DataConfig, split: str, source: Source | None = None, cache_bytes: int = 2 << 30
    ) -> None:
        if split not in (*SPLITS, "all"):
            raise ValueError(f"split must be one of {(*SPLITS, 'all')} (got '{split}')")
        self.cfg, self.split = cfg, split
        self.source = source if source is not None else open_source(cfg)
        lengths = usable_videos(self.source, cfg.frames)
        names = list(lengths)
        self.videos = (
            names
            if split == "all"
            else split_videos(names, cfg.val_fraction, cfg.test_fraction, cfg.seed)[split]
        )
        self.windows: list[tuple[str, int]] = []
        for video in self.videos:
            self.windows += [
                (video, s)
                for s in clip_starts(lengths[video], cfg.frames, cfg.stride, cfg.max_clips_per_video)
            ]
        if not self.videos:
            log.warning("split '%s' of %s holds no videos (%d in total)", split, self.source.name, len(names))
        self._cache: OrderedDict[int, Clip] = OrderedDict()
        self._cache_bytes = 0
        self._cache_limit = cache_bytes

    def __len__(self) -> int:
        return len(self.windows)

    @overload
    def __getitem__(self, i: int) -> Clip: ...

    @overload
    def __getitem__(self, i: slice) -> list[Clip]: ...

    def __getitem__(self, i: int | slice) -> Clip | list[Clip]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        n = len(self.windows)
        if not -n <= i < n:
            raise IndexError(f"clip {i} out of range ({n} clips)")
        i %= n
        clip = self._cache.get(i)
        if clip is not None:
            self._cache.move_to_end(i)
            return clip
        video, start = self.windows[i]
        frames = resize_and_crop(self.source.read(video, start, self.cfg.frames), self.cfg.size)
        frames = np.ascontiguousarray(frames)
        frames.flags.writeable = False
        clip = Clip(frames, video, start)
        self._cache[i] = clip
        self._cache_bytes += frames.nbytes
        while self._cache_bytes > self._cache_limit and self._cache:
            _, old = self._cache.popitem(last=False)
            self._cache_bytes -= old.frames.nbytes
        return clip

    def __repr__(self) -> str:
        return f"ClipSet(split='{self.split}', {len(self)} clips of {len(self.videos)} videos from {self.source.name})"

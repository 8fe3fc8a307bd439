"""The only module that decodes or encodes video, frames and masks.

Inputs: video files (mp4, avi, mov, mkv, webm, gif; anything FFmpeg opens is tried) and folders of
frames (png, jpg, jpeg, bmp; sorted naturally by name, so ``2.png`` comes before ``10.png``). A frame
folder has no frame rate of its own; it is reported as :data:`FOLDER_FPS` (24). Frames come out as RGB
``uint8``; grayscale, palette and RGBA inputs are converted (alpha is dropped).

Masks: a folder of per-frame images or one image used for every frame; a pixel is a hole where the
image is non-zero (palette images: a non-zero palette index). JPEG masks are lossy, so there a hole
is a value >= :data:`JPEG_HOLE` (64: DAVIS's darkest object colour, 128, survives the compression noise
that a threshold at 128 would cut through). In an image with transparency the hole is where it is non-zero *and* not
transparent; one whose opaque pixels are all black (strokes painted into the alpha channel of an
editor's layer) is a hole wherever it is not transparent.

Outputs: H.264 mp4 (libx264) and PNG. Every write goes to a temporary file beside the target and is
renamed over it only when complete, so a crash never leaves a half-written file under the real name.

Bad input raises :class:`rovr.errors.DataError` with one line naming the file, what is wrong and
what to do; FFmpeg errors never escape as tracebacks.
"""

from __future__ import annotations

import heapq
import logging
import os
import re
import secrets
import shutil
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import av
import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from rovr.errors import DataError

log = logging.getLogger(__name__)

VIDEO_EXTS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".gif")
"""File extensions that :func:`is_video_file` (and so folder scans) treat as videos."""
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp")
"""Extensions of frame and mask images."""
FOLDER_FPS = 24.0
"""Frame rate reported for a folder of frames (it carries none of its own)."""
MIN_FRAMES = 3
"""Fewer frames than this is not a video we can use (a target needs two other frames)."""
MAX_SIDE = 8192
JPEG_HOLE = 64
"""In a JPEG mask, a pixel is a hole where a channel reaches this value (lossy: not every non-zero)."""
"""Largest accepted width or height in pixels."""

_AV_ERRORS = (av.FFmpegError, OSError, EOFError)

# OpenCV's own warnings ("PNG input buffer is incomplete") would precede the one-line DataError of a
# damaged frame; the error says it
cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)

PathLike = str | os.PathLike[str]


@dataclass(frozen=True)
class VideoInfo:
    """What :func:`probe` learns about a video file or frame folder without decoding it."""

    path: Path
    frames: int
    fps: float
    width: int
    height: int


# ----------------------------------------------------------------------------- naming and listing


def natural_key(name: str) -> list[int | str]:
    """Sort key that orders embedded numbers by value: ``f2.png`` < ``f10.png``."""
    parts = re.split(r"([0-9]+)", name)  # ASCII digits only: odd positions are numbers
    return [int(p) if i % 2 else p.lower() for i, p in enumerate(parts)]


def is_video_file(path: PathLike) -> bool:
    """True for a file with a video extension (see :data:`VIDEO_EXTS`), hidden files excluded."""
    p = Path(path)
    return p.is_file() and p.suffix.lower() in VIDEO_EXTS and not p.name.startswith(".")


def list_images(folder: PathLike) -> list[Path]:
    """Image files directly inside ``folder``, sorted naturally (hidden files excluded)."""
    try:
        entries = list(os.scandir(folder))
    except OSError as e:
        raise DataError(
            f"cannot list folder '{folder}' ({e.strerror}); check the path and its permissions"
        ) from None
    files = [
        Path(e.path)
        for e in entries
        if e.is_file() and not e.name.startswith(".") and os.path.splitext(e.name)[1].lower() in IMAGE_EXTS
    ]
    return sorted(files, key=lambda p: natural_key(p.name))


_NUMBERED = re.compile(r"^(.*?)([0-9]+)([^0-9]*)$")
_GAPS_SAID: set[Path] = set()


def numbering_gap(files: Sequence[Path]) -> tuple[str, str, int] | None:
    """(name before, name after, frames missing) of the first jump in the numbering of ``files`` (sorted
    naturally), when all their names are one pattern with a number (``frame_0007.png``); else None."""
    parts = [_NUMBERED.match(f.stem) for f in files]
    if len(files) < 2 or not all(parts):
        return None
    if len({(m.group(1), m.group(3), f.suffix.lower()) for m, f in zip(parts, files) if m}) != 1:
        return None
    numbers = [int(m.group(2)) for m in parts if m]
    for n, (a, b) in enumerate(zip(numbers, numbers[1:])):
        if b - a > 1:
            missing = sum(max(0, y - x - 1) for x, y in zip(numbers, numbers[1:]))
            return files[n].name, files[n + 1].name, missing
    return None


def _say_gaps(folder: Path, files: Sequence[Path], what: str) -> None:
    """Warn once per folder and process that a numbered sequence skips numbers (read as consecutive)."""
    gap = numbering_gap(files)
    key = folder.resolve()
    if gap is None or key in _GAPS_SAID:
        return
    _GAPS_SAID.add(key)
    before, after, missing = gap
    log.warning(
        "%s folder '%s' skips numbers ('%s' is followed by '%s'; %d number(s) missing in all): its %d "
        "images are read as consecutive frames",
        what,
        folder,
        before,
        after,
        missing,
        len(files),
    )


def _check_size(path: Path, width: int, height: int) -> None:
    if not (1 <= width <= MAX_SIDE and 1 <= height <= MAX_SIDE):
        raise DataError(
            f"'{path}' is {width}x{height} pixels; sides must be between 1 and {MAX_SIDE}, resize it first"
        )


# ----------------------------------------------------------------------------- video files


@contextmanager
def _open_container(path: Path) -> Iterator[av.container.InputContainer]:
    """``av.open`` for reading with FFmpeg errors turned into one-line DataErrors."""
    try:
        container = av.open(str(path), "r")
    except PermissionError as e:
        raise DataError(f"cannot read '{path}' ({e.strerror}); check its permissions") from None
    except _AV_ERRORS as e:
        raise DataError(
            f"'{path}' is not a readable video ({_reason(e)}); the file is truncated, corrupt or not a video - "
            "re-export or re-download it"
        ) from None
    try:
        if not container.streams.video:
            raise DataError(f"'{path}' has no video stream; pass a video file or a folder of frames")
        yield container
    finally:
        container.close()


def _reason(e: BaseException) -> str:
    """Short one-line description of an FFmpeg/OS error (without the path it repeats)."""
    msg = getattr(e, "strerror", None) or str(e) or type(e).__name__
    return str(msg).splitlines()[0]


@dataclass(frozen=True)
class _FileIndex:
    """Presentation timestamps of all frames of a file's first video stream, sorted."""

    pts: np.ndarray | None  # int64 (N,), or None when the container gives no timestamps
    frames: int
    fps: float
    width: int  # as stored (before the display rotation)
    height: int
    turns: int = 0  # quarter turns counter-clockwise that display the frames upright (a phone's flag)


def _display_turns(path: Path) -> int:
    """Quarter turns (counter-clockwise, 0-3) of the display rotation of ``path``'s first video frame:
    phones store portrait video as landscape frames with a rotation flag that players apply."""
    try:
        with _open_container(path) as c:
            frame = next(c.decode(c.streams.video[0]), None)
    except (DataError, StopIteration, *_AV_ERRORS):
        return 0  # what cannot be decoded here is refused, with its reason, when the frames are read
    rotation = getattr(frame, "rotation", 0) if frame is not None else 0
    return round((rotation or 0) / 90) % 4


@lru_cache(maxsize=256)
def _file_index(path: Path, mtime_ns: int, size: int) -> _FileIndex:
    """Demux (no decoding) ``path`` once to count frames and record their timestamps.

    Cached by (path, mtime, size), so an overwritten file is indexed afresh.
    """
    with _open_container(path) as c:
        s = c.streams.video[0]
        width, height = s.codec_context.width, s.codec_context.height
        _check_size(path, width, height)
        rate = s.average_rate or s.guessed_rate or s.base_rate
        fps = float(rate) if rate else FOLDER_FPS
        declared = s.frames
        pts: list[int] = []
        has_pts = True
        n_packets = 0
        try:
            for pkt in c.demux(s):
                if pkt.size == 0:  # the flush packet at the end
                    continue
                n_packets += 1
                if pkt.is_discard:
                    continue
                if pkt.pts is None:
                    has_pts = False
                else:
                    pts.append(int(pkt.pts))
        except _AV_ERRORS as e:
            raise DataError(
                f"'{path}' could not be read to the end ({_reason(e)}); it is truncated or corrupt - re-export it"
            ) from None
    if declared > 0 and n_packets < declared:
        raise DataError(
            f"'{path}' is truncated: its header declares {declared} frames but only {n_packets} are present; "
            "re-export or re-download it"
        )
    frames = len(pts) if has_pts else n_packets
    arr = np.sort(np.asarray(pts, dtype=np.int64)) if has_pts else None
    if arr is not None and len(np.unique(arr)) != len(arr):
        arr = None  # duplicate timestamps: fall back to counting decoded frames
    return _FileIndex(arr, frames, fps, width, height, _display_turns(path))


def _index(path: Path) -> _FileIndex:
    st = path.stat()
    return _file_index(path, st.st_mtime_ns, st.st_size)


def _iter_file(path: Path, info: VideoInfo, start: int, count: int) -> Iterator[np.ndarray]:
    """Decode ``count`` frames of a video file from frame ``start``, seeking to the keyframe before it."""
    idx = _index(path)
    W, H, turns = idx.width, idx.height, idx.turns

    def upright(frame: av.VideoFrame) -> np.ndarray:
        rgb = frame.to_ndarray(format="rgb24", width=W, height=H)
        return np.ascontiguousarray(np.rot90(rgb, turns)) if turns else rgb

    yielded = 0
    try:
        with _open_container(path) as c:
            s = c.streams.video[0]
            s.thread_type = "AUTO"
            target: int | None = None
            if start > 0 and idx.pts is not None:
                target = int(idx.pts[start])
                c.seek(target, stream=s, backward=True, any_frame=False)
            seen = 0
            for frame in c.decode(s):
                if target is not None and yielded == 0:
                    if frame.pts is None or frame.pts > target:
                        break  # the seek overshot or timestamps vanished: decode from the start below
                    if frame.pts < target:
                        continue
                elif target is None and seen < start:
                    seen += 1
                    continue
                yield upright(frame)
                yielded += 1
                if yielded == count:
                    return
            if target is not None and yielded == 0:
                log.debug("seek in '%s' missed frame %d; decoding from the start", path, start)
                c.seek(0, stream=s, backward=True, any_frame=False)
                for i, frame in enumerate(c.decode(s)):
                    if i < start:
                        continue
                    yield upright(frame)
                    yielded += 1
                    if yielded == count:
                        return
    except _AV_ERRORS as e:
        raise DataError(
            f"'{path}' failed to decode at frame {start + yielded} ({_reason(e)}); the file is corrupt - re-export it"
        ) from None
    raise DataError(
        f"'{path}' ended after {start + yielded} of {info.frames} frames; the file is truncated or corrupt - "
        "re-export it"
    )


# ----------------------------------------------------------------------------- frame folders


def _read_image_rgb(path: Path) -> np.ndarray:
    """One image file -> uint8 (H, W, 3) RGB."""
    try:
        data = np.frombuffer(path.read_bytes(), dtype=np.uint8)
    except OSError as e:
        raise DataError(f"cannot read frame '{path}' ({e.strerror}); check the file") from None
    img = cv2.imdecode(data, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION) if data.size else None
    if img is None:
        raise DataError(f"frame '{path}' is not a readable image; replace or delete it")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def _image_size(path: Path, what: str = "frame") -> tuple[int, int]:
    """(width, height) from an image header, without decoding the pixels."""
    try:
        with Image.open(path) as im:
            return im.size
    except (OSError, UnidentifiedImageError, ValueError):
        raise DataError(f"{what} '{path}' is not a readable image; replace or delete it") from None


def _iter_folder(folder: Path, info: VideoInfo, start: int, count: int) -> Iterator[np.ndarray]:
    for p in list_images(folder)[start : start + count]:
        img = _read_image_rgb(p)
        if img.shape[:2] != (info.height, info.width):
            raise DataError(
                f"frame '{p}' is {img.shape[1]}x{img.shape[0]} but the first frame of '{folder}' is "
                f"{info.width}x{info.height}; all frames of a folder must have one size"
            )
        yield img


# ----------------------------------------------------------------------------- public reading API


def probe(path: PathLike) -> VideoInfo:
    """Frame count, fps and size of a video file or frame folder (no decoding).

    Raises DataError for a missing path, an unreadable or truncated file, an empty folder, fewer than
    :data:`MIN_FRAMES` frames or a side longer than :data:`MAX_SIDE`.
    """
    p = Path(path)
    if p.is_dir():
        images = list_images(p)
        if not images:
            raise DataError(
                f"folder '{p}' holds no frames ({', '.join(IMAGE_EXTS)}); pass a video file or a folder of frames"
            )
        width, height = _image_size(images[0])
        _check_size(images[0], width, height)
        _say_gaps(p, images, "frame")
        info = VideoInfo(p, len(images), FOLDER_FPS, width, height)
    elif p.is_file():
        idx = _index(p)
        w, h = (idx.height, idx.width) if idx.turns % 2 else (idx.width, idx.height)
        info = VideoInfo(p, idx.frames, idx.fps, w, h)  # as displayed: upright
    else:
        raise DataError(f"video '{p}' does not exist; pass an existing video file or folder of frames")
    if info.frames < MIN_FRAMES:
        raise DataError(
            f"'{p}' has {info.frames} frame(s); rovr needs at least {MIN_FRAMES} (each frame is rebuilt "
            "from others): pass a longer video"
        )
    return info


def _window(info: VideoInfo, start: int, count: int | None) -> int:
    """Validate the window [start, start + count) against the video; return count."""
    if count is None:
        count = info.frames - start
    if start < 0 or count < 1 or start + count > info.frames:
        raise DataError(
            f"frames [{start}, {start + count}) requested but '{info.path}' has {info.frames} frames; "
            "ask for a window inside the video"
        )
    return count


def iter_frames(path: PathLike, start: int = 0, count: int | None = None) -> Iterator[np.ndarray]:
    """Stream frames ``start .. start+count-1`` (default: to the end) as uint8 (H, W, 3) RGB.

    Holds one frame at a time; files are seeked to the keyframe before ``start``. The window is
    checked before the first frame is decoded.
    """
    info = probe(path)
    n = _window(info, start, count)
    if info.path.is_dir():
        return _iter_folder(info.path, info, start, n)
    return _iter_file(info.path, info, start, n)


def read_video(path: PathLike, start: int = 0, count: int | None = None) -> np.ndarray:
    """Frames ``start .. start+count-1`` (default: all) of a video or frame folder: uint8 (T, H, W, 3)."""
    info = probe(path)
    n = _window(info, start, count)
    out = np.empty((n, info.height, info.width, 3), dtype=np.uint8)
    it = (
        _iter_folder(info.path, info, start, n)
        if info.path.is_dir()
        else _iter_file(info.path, info, start, n)
    )
    for i, frame in enumerate(it):
        out[i] = frame
    return out


# ----------------------------------------------------------------------------- masks


def _read_mask(path: Path) -> np.ndarray:
    """One mask image -> bool (H, W), True = hole (non-zero; JPEG: >= JPEG_HOLE; see the module docstring
    for transparency)."""
    try:
        with Image.open(path) as im:
            im.load()
            mode = im.mode
            if mode in ("1", "L", "P", "I", "I;16", "I;16B", "I;16L", "F"):
                a = np.asarray(im)
                hole = a >= JPEG_HOLE if im.format == "JPEG" else a != 0
            elif mode in ("RGB", "RGBA", "LA", "PA"):
                a = np.asarray(im)
                colour = a[..., :-1] if mode in ("RGBA", "LA", "PA") else a
                thr = JPEG_HOLE if im.format == "JPEG" else 1
                hole = (colour >= thr).any(axis=-1)
                if mode != "RGB":
                    shown = a[..., -1] > 0
                    hole &= shown
                    if not hole.any() and not shown.all():  # black strokes on a transparent layer
                        hole = shown
            else:
                hole = np.asarray(im.convert("L")) != 0
    except (OSError, UnidentifiedImageError, ValueError):
        raise DataError(f"mask '{path}' is not a readable image; replace it with a PNG mask") from None
    return np.ascontiguousarray(hole, dtype=bool)


def _mask_files(path: Path, num_frames: int, height: int, width: int) -> list[Path]:
    """Check a mask folder or image against the video; return the files (one = applies to every frame)."""
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1 (got {num_frames})")
    if path.is_dir():
        files = list_images(path)
        if not files:
            raise DataError(f"mask folder '{path}' holds no images; put one PNG mask per frame in it")
        _say_gaps(path, files, "mask")
        if len(files) != num_frames:
            raise DataError(
                f"mask folder '{path}' has {len(files)} masks but the video has {num_frames} frames; "
                "provide one mask per frame (or a single mask image for all)"
            )
    elif path.is_file():
        files = [path]
    else:
        raise DataError(f"masks '{path}' do not exist; pass a folder of per-frame masks or one mask image")
    for f in files:
        w, h = _image_size(f, "mask")
        if (w, h) != (width, height):
            raise DataError(
                f"mask '{f}' is {w}x{h} but the video frames are {width}x{height} (WxH); "
                "masks must have the size of the video"
            )
    return files


def _iter_mask_video(
    path: Path, num_frames: int, height: int, width: int, start: int = 0, count: int | None = None
) -> Iterator[np.ndarray]:
    """Frames ``start .. start+count-1`` of a mask video as bool (H, W), True = hole (any channel >=
    128); its size and frame count are checked up front."""
    try:
        info = probe(path)
    except DataError as e:
        raise DataError(f"masks: {e}") from None
    if (info.width, info.height) != (width, height):
        raise DataError(
            f"mask video '{path}' is {info.width}x{info.height} but the video frames are {width}x{height} (WxH); "
            "masks must have the size of the video"
        )
    if info.frames != num_frames:
        raise DataError(
            f"mask video '{path}' has {info.frames} frames but the video has {num_frames}; "
            "provide one mask per frame (or a single mask image for all)"
        )
    frames = iter_frames(path, start, count)

    def gen() -> Iterator[np.ndarray]:
        for frame in frames:
            yield np.asarray((frame >= 128).any(axis=-1))

    return gen()


def iter_masks(
    path: PathLike, num_frames: int, height: int, width: int, start: int = 0, count: int | None = None
) -> Iterator[np.ndarray]:
    """Stream the masks of frames ``start .. start+count-1`` (default: all ``num_frames``) of a video of
    ``num_frames`` frames, as bool (H, W), True = hole.

    ``path`` is a folder with one image per frame (sorted naturally), one image used for every frame
    (then the same read-only array is yielded each time), or a video of the masks, one frame each
    (white on black as segmentation tools export them; lossy codecs blur the edges, so a pixel is a
    hole where any channel is >= 128). Count and sizes are checked up front (against the whole
    video: masks cover every frame); masks before ``start`` are not read.
    """
    if count is None:
        count = num_frames - start
    if start < 0 or count < 1 or start + count > num_frames:
        raise ValueError(f"mask window [{start}, {start + count}) is outside 0..{num_frames}")
    if is_video_file(path):
        return _iter_mask_video(Path(path), num_frames, height, width, start, count)
    files = _mask_files(Path(path), num_frames, height, width)

    def gen() -> Iterator[np.ndarray]:
        if len(files) == 1 and not Path(path).is_dir():
            mask = _read_mask(files[0])
            mask.flags.writeable = False
            for _ in range(count):
                yield mask
        else:
            for f in files[start : start + count]:
                yield _read_mask(f)

    return gen()


def read_masks(path: PathLike, num_frames: int, height: int, width: int) -> np.ndarray:
    """All masks as bool (T, H, W), T = ``num_frames``, True = hole (see :func:`iter_masks`)."""
    out = np.empty((num_frames, height, width), dtype=bool)
    for i, m in enumerate(iter_masks(path, num_frames, height, width)):
        out[i] = m
    return out


# ----------------------------------------------------------------------------- writing


def _temp_beside(path: Path, suffix: str = ".part") -> Path:
    """A fresh hidden temporary name in the folder of ``path`` (same file system, so rename is atomic)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.parent / f".{path.name}.{secrets.token_hex(6)}{suffix}"


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = _temp_beside(path)
    try:
        with open(tmp, "xb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _check_frame(frame: np.ndarray, height: int, width: int) -> None:
    if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8 or frame.shape != (height, width, 3):
        got = f"{frame.dtype} {frame.shape}" if isinstance(frame, np.ndarray) else type(frame).__name__
        raise ValueError(f"expected a uint8 frame of shape ({height}, {width}, 3), got {got}")


class _Writer:
    """What both writers share: used as a context manager, the output appears on a clean exit and
    everything written is discarded on an exception; one never closed is discarded with a warning."""

    path: Path
    frames_written: int = 0
    _closed: bool = True

    def close(self) -> None:
        """Finish the output and move it to ``path`` (atomic); on any failure discard what was written."""
        if self._closed:
            return
        try:
            self._finish()
        except BaseException:
            self.abort()
            raise
        log.debug("wrote %s (%d frames)", self.path, self.frames_written)

    def _finish(self) -> None:
        raise NotImplementedError

    def abort(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def __del__(self) -> None:
        if not getattr(self, "_closed", True):
            log.warning(
                "%s for '%s' was never closed; discarding what was written", type(self).__name__, self.path
            )
            self.abort()


class VideoWriter(_Writer):
    """Stream frames into an H.264 mp4; the file appears under ``path`` only on a successful close.

    Even sizes use yuv420p (plays everywhere); an odd width or height uses yuv444p, which H.264
    accepts at any size, so the written file decodes to exactly ``width x height``. Use as a context
    manager: an exception inside the block removes the temporary file. ``audio_from``: a video file
    whose first audio stream goes into the output on close (:func:`carry_audio`; ``self.audio``
    then says how); ``audio_span`` (start, end) in seconds of the source: only that part of it.

    >>> with VideoWriter("out.mp4", fps=24, width=W, height=H) as w:
    ...     for frame in frames:  # uint8 (H, W, 3) RGB
    ...         w.write(frame)
    """

    def __init__(
        self,
        path: PathLike,
        fps: float,
        width: int,
        height: int,
        crf: int = 18,
        preset: str = "medium",
        audio_from: PathLike | None = None,
        audio_span: tuple[float, float] | None = None,
    ) -> None:
        if not (np.isfinite(fps) and 0 < fps <= 1000):
            raise ValueError(f"fps must be in (0, 1000] (got {fps})")
        if not (1 <= width <= MAX_SIDE and 1 <= height <= MAX_SIDE):
            raise ValueError(f"width and height must be in [1, {MAX_SIDE}] (got {width}x{height})")
        self.path = Path(path)
        self.width, self.height = int(width), int(height)
        self.frames_written = 0
        self.audio_from = Path(audio_from) if audio_from is not None else None
        self.audio_span = audio_span
        self.audio: str | None = None  # after close: how the audio was carried (see carry_audio)
        self._closed = True  # until the container is open, there is nothing to abort
        rate = Fraction(fps).limit_denominator(1001)
        self._time_base = 1 / rate
        self._tmp = _temp_beside(self.path)
        try:
            container = av.open(str(self._tmp), "w", format="mp4")
        except BaseException:
            self._tmp.unlink(missing_ok=True)
            raise
        self._container = container
        self._closed = False
        try:
            self._stream = container.add_stream("libx264", rate=rate)
            self._stream.width, self._stream.height = self.width, self.height
            self._stream.pix_fmt = "yuv420p" if width % 2 == 0 and height % 2 == 0 else "yuv444p"
            self._stream.options = {"crf": str(int(crf)), "preset": preset}
        except BaseException:
            self.abort()
            raise

    def write(self, frame: np.ndarray) -> None:
        """Append one uint8 (H, W, 3) RGB frame."""
        if self._closed:
            raise ValueError(f"VideoWriter for '{self.path}' is already closed")
        _check_frame(frame, self.height, self.width)
        vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
        vf.pts = self.frames_written
        vf.time_base = self._time_base
        for packet in self._stream.encode(vf):
            self._container.mux(packet)
        self.frames_written += 1

    def _finish(self) -> None:
        """Flush the encoder and move the finished file to ``path``."""
        if self.frames_written == 0:
            raise ValueError(f"no frames were written to '{self.path}'; nothing saved")
        for packet in self._stream.encode():
            self._container.mux(packet)
        self._container.close()
        self._closed = True
        if self.audio_from is not None:
            self.audio = carry_audio(self._tmp, self.audio_from, self.audio_span)
        os.replace(self._tmp, self.path)

    def abort(self) -> None:
        """Discard everything written so far (the target file is left untouched)."""
        if not self._closed:
            self._closed = True
            try:
                self._container.close()
            except _AV_ERRORS:
                pass
        self._tmp.unlink(missing_ok=True)


def _timed(packets: Iterator[av.Packet]) -> Iterator[tuple[float, av.Packet]]:
    """Packets with a decode timestamp, keyed by it in seconds (demux's final flush packets have none)."""
    for p in packets:
        if p.dts is not None and p.time_base is not None:
            yield float(p.dts * p.time_base), p


def _cut(frame: av.AudioFrame, lo: int, hi: int) -> av.AudioFrame:
    """Samples ``lo .. hi-1`` of an audio frame, as a new frame of the same format, layout and rate."""
    arr = frame.to_ndarray()  # planar: (channels, samples); packed: (1, samples · channels)
    per = 1 if frame.format.is_planar else len(frame.layout.channels)
    cut: Any = np.ascontiguousarray(arr[:, lo * per : hi * per])  # the sample type of the frame's format
    part = av.AudioFrame.from_ndarray(cut, format=frame.format.name, layout=frame.layout.name)
    part.sample_rate = frame.sample_rate
    return part


def _encoded_aac(
    container: av.container.InputContainer,
    out: av.audio.stream.AudioStream,
    span: tuple[float, float] | None = None,
) -> Iterator[av.Packet]:
    """Decode the first audio stream of ``container`` and encode it into ``out`` (AAC).

    ``span`` (t0, t1) in seconds: only the sound between them, sample-exact, starting at t0 = 0."""
    rate = out.codec_context.sample_rate
    t0, t1 = span if span is not None else (0.0, float("inf"))
    samples: int | None = None  # timestamps count samples (time base 1/rate), as the encoder expects
    clock = 0.0  # where the next frame starts when it has no timestamp
    decoded = (f for packet in container.demux(container.streams.audio[0]) for f in packet.decode())
    for frame in decoded:
        at = float(frame.pts * frame.time_base) if frame.pts is not None and frame.time_base else clock
        fr = frame.sample_rate or rate
        clock = at + frame.samples / fr
        if at >= t1:
            break
        lo = max(0, round((t0 - at) * fr))
        hi = frame.samples if span is None else min(frame.samples, round((t1 - at) * fr))
        if hi <= lo:
            continue
        if (lo, hi) != (0, frame.samples):
            frame = _cut(frame, lo, hi)
        if samples is None:  # keep where the sound starts (an offset against the video)
            samples = max(0, round((at + lo / fr - t0) * rate))
        frame.pts, frame.time_base = samples, Fraction(1, rate)
        samples += frame.samples
        yield from out.encode(frame)
    yield from out.encode(None)


#: Audio codecs copied into the mp4 as they are (players and browsers read them there); any other
#: (PCM, Vorbis, ...) is re-encoded as AAC.
MP4_AUDIO = frozenset({"aac", "mp3", "ac3", "eac3", "alac", "opus", "flac"})


def _remux_audio(
    video: Path, source: Path, out_path: Path, transcode: bool, span: tuple[float, float] | None = None
) -> str:
    with (
        av.open(str(video), "r") as vin,
        av.open(str(source), "r") as ain,
        av.open(str(out_path), "w", format="mp4") as out,
    ):
        v_in, a_in = vin.streams.video[0], ain.streams.audio[0]
        name = a_in.codec_context.name
        v_out = out.add_stream_from_template(v_in)
        if transcode:
            a_out = out.add_stream("aac", rate=a_in.codec_context.sample_rate or 48000)
            layout = a_in.codec_context.layout
            if layout.name.endswith("channels"):  # no channel order (PCM in Matroska): AAC needs one
                layout = av.AudioLayout(f"{len(layout.channels)}c")  # the default order for the count
            a_out.layout = layout
            audio = _timed(_encoded_aac(ain, a_out, span))
            how = f"{name} re-encoded as AAC"
        else:
            a_out = out.add_stream_from_template(a_in)
            audio = _timed(ain.demux(a_in))
            how = f"{name} copied"
        # interleave by time, as a player reads them; ties: video first
        merged = heapq.merge(
            ((t, 0, p) for t, p in _timed(vin.demux(v_in))),
            ((t, 1, p) for t, p in audio),
            key=lambda x: (x[0], x[1]),
        )
        for _, kind, packet in merged:
            packet.stream = v_out if kind == 0 else a_out
            out.mux(packet)
    return how


def carry_audio(video: PathLike, source: PathLike, span: tuple[float, float] | None = None) -> str | None:
    """Put the first audio stream of ``source`` beside the video of the mp4 ``video`` (in place).

    The audio packets are copied as they are when the codec plays in mp4 (:data:`MP4_AUDIO`), else
    (or when copying fails) re-encoded as AAC, from where the sound starts against the video.
    ``span`` (t0, t1): only the sound of ``source`` between t0 and t1 seconds, re-encoded, t0 at the
    video's start (a part of a video restored on its own).
    Returns how (``"aac copied"``, ``"vorbis re-encoded as AAC"``), or None when ``source`` has no
    audio (a frame folder, a silent file). Audio that cannot be carried at all leaves ``video`` as
    it was, with a one-line warning: the repaired frames are never lost for it.
    """
    video, source = Path(video), Path(source)
    if not source.is_file():
        return None
    try:
        with av.open(str(source), "r") as c:
            if not c.streams.audio:
                return None
            copy = c.streams.audio[0].codec_context.name in MP4_AUDIO and span is None
    except _AV_ERRORS:
        return None
    tmp = _temp_beside(video, ".mux")
    reasons = []
    try:
        for transcode in (False, True) if copy else (True,):
            try:
                how = _remux_audio(video, source, tmp, transcode, span)
            except Exception as e:  # the sound is optional: no failure of it may cost the repaired video
                reasons.append(_reason(e))
                tmp.unlink(missing_ok=True)
                continue
            os.replace(tmp, video)
            return how
    finally:
        tmp.unlink(missing_ok=True)
    log.warning("could not carry the audio of '%s' (%s); the output has no sound", source, reasons[-1])
    return None


def write_video(path: PathLike, frames: np.ndarray | Iterable[np.ndarray], fps: float, crf: int = 18) -> None:
    """Write uint8 (T, H, W, 3) RGB frames (an array or any iterable of (H, W, 3)) as H.264 mp4, atomically."""
    it = iter(frames)
    try:
        first = next(it)
    except StopIteration:
        raise ValueError(f"no frames given for '{path}'; nothing saved") from None
    if not isinstance(first, np.ndarray) or first.ndim != 3:
        raise ValueError(
            f"frames must be uint8 (H, W, 3) arrays (got {getattr(first, 'shape', type(first))})"
        )
    with VideoWriter(path, fps, first.shape[1], first.shape[0], crf=crf) as w:
        w.write(first)
        for frame in it:
            w.write(frame)


def write_png(path: PathLike, image: np.ndarray) -> None:
    """Write uint8 (H, W, 3) RGB, uint8 (H, W) gray or bool (H, W) (as 0/255) as a PNG, atomically."""
    img = np.asarray(image)
    if img.dtype == bool and img.ndim == 2:
        img = img.astype(np.uint8) * 255
    if img.dtype != np.uint8 or not (img.ndim == 2 or (img.ndim == 3 and img.shape[2] == 3)):
        raise ValueError(
            f"write_png expects uint8 (H, W, 3), uint8 (H, W) or bool (H, W), got {img.dtype} {img.shape}"
        )
    if img.ndim == 3:
        img = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".png", img)
    if not ok:
        raise ValueError(f"PNG encoding failed for '{path}' (shape {img.shape})")
    _atomic_write_bytes(Path(path), buf.tobytes())


FRAMES_MARKER = ".rovr-frames"  # written into every frame folder rovr makes: only such a folder is replaced
_FRAME_NAME = re.compile(r"\d{5}\.png")


def check_frame_folder(folder: PathLike) -> None:
    """Refuse an output frame folder unless it is new, empty, or a frame folder rovr wrote before
    (its :data:`FRAMES_MARKER` and ``NNNNN.png`` frames, nothing else): writing replaces that folder
    whole, so a folder of the user's own images (or masks) must never be taken for one."""
    target = Path(folder)
    if not target.exists():
        return
    if not target.is_dir():
        raise DataError(f"'{target}' exists and is not a folder; choose another output folder")
    entries = list(os.scandir(target))
    if not entries:
        return
    names = {e.name for e in entries}
    foreign = [
        e.name
        for e in entries
        if e.name != FRAMES_MARKER and not (e.is_file() and _FRAME_NAME.fullmatch(e.name))
    ]
    if foreign or FRAMES_MARKER not in names:
        what = f"other files (e.g. '{sorted(foreign)[0]}')" if foreign else "images rovr did not write"
        raise DataError(
            f"output folder '{target}' holds {what}; choose an empty or new folder (rovr replaces only a "
            f"frame folder it wrote, marked by {FRAMES_MARKER})"
        )


class FrameWriter(_Writer):
    """Stream frames as ``00000.png, 00001.png, ...`` (lossless) into a folder, like :class:`VideoWriter`.

    The frames go to a temporary folder beside ``folder`` that is renamed into place on a successful
    close, replacing a frame folder rovr wrote before (:func:`check_frame_folder`); an exception inside the
    ``with`` block removes the temporary folder and leaves ``folder`` as it was. ``width`` and
    ``height`` default to the first frame's. A frame folder carries no sound (``self.audio`` is None).
    """

    def __init__(self, folder: PathLike, width: int | None = None, height: int | None = None) -> None:
        self.path = Path(folder)
        self._closed = True  # until the temporary folder exists, there is nothing to abort
        check_frame_folder(self.path)
        self.width, self.height = width, height
        self.frames_written = 0
        self.audio: str | None = None
        self._tmp = _temp_beside(self.path, suffix=".tmpdir")
        self._tmp.mkdir()
        self._closed = False

    def write(self, frame: np.ndarray) -> None:
        """Append one uint8 (H, W, 3) RGB frame."""
        if self._closed:
            raise ValueError(f"FrameWriter for '{self.path}' is already closed")
        if self.width is None or self.height is None:
            self.height, self.width = (int(v) for v in np.shape(frame)[:2])
        _check_frame(frame, self.height, self.width)
        write_png(self._tmp / f"{self.frames_written:05d}.png", frame)
        self.frames_written += 1

    def _finish(self) -> None:
        """Move the finished folder to ``path`` (a previous frame folder there is replaced)."""
        check_frame_folder(self.path)  # still rovr's own frames: nothing else gets deleted
        (self._tmp / FRAMES_MARKER).write_text("frames written by rovr; a rerun may replace this folder\n")
        old = None
        if self.path.exists():
            old = _temp_beside(self.path, suffix=".old")
            os.replace(self.path, old)
        os.replace(self._tmp, self.path)
        self._closed = True
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)

    def abort(self) -> None:
        """Discard everything written so far (``path`` is left untouched)."""
        if not self._closed:
            self._closed = True
            shutil.rmtree(self._tmp, ignore_errors=True)


def write_frames(folder: PathLike, frames: np.ndarray | Iterable[np.ndarray]) -> int:
    """Write frames as ``00000.png, 00001.png, ...`` into ``folder``; returns the number written.

    The frames go to a temporary folder beside ``folder`` that is renamed into place when complete.
    An existing ``folder`` is replaced only if it is empty or a frame folder rovr wrote (marked by
    :data:`FRAMES_MARKER`); otherwise DataError, so no unrelated files are ever deleted (:class:`FrameWriter`).
    """
    with FrameWriter(folder) as writer:
        for frame in frames:
            writer.write(frame)
    return writer.frames_written

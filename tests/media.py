"""Test media that rovr itself never writes: videos with a sound track."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np


def tone(seconds: float, rate: int) -> np.ndarray:
    """float32 (n,): a 440 Hz sine at amplitude 0.3."""
    t = np.arange(round(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)


def write_video_with_sound(
    path: Path,
    frames: np.ndarray,
    fps: int,
    audio_codec: str = "aac",
    fmt: str = "mp4",
    rate: int = 44100,
    offset: float = 0.0,
    wave: np.ndarray | None = None,
) -> np.ndarray:
    """Write uint8 (T, H, W, 3) frames (H.264) with a mono 440 Hz tone as long as the video (or the
    float32 samples ``wave``), starting ``offset`` seconds in; returns the sound's samples."""
    wave = tone(len(frames) / fps - offset, rate) if wave is None else wave
    pcm = audio_codec.startswith("pcm_s16")
    with av.open(str(path), "w", format=fmt) as c:
        v = c.add_stream("libx264", rate=fps)
        v.width, v.height, v.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        a = c.add_stream(audio_codec, rate=rate)
        a.layout = "mono"
        for i, f in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")
            vf.pts, vf.time_base = i, Fraction(1, fps)
            for p in v.encode(vf):
                c.mux(p)
        start = round(offset * rate)
        for s in range(0, len(wave), 1024):
            block = wave[None, s : s + 1024]
            data = (block * 32767).astype(np.int16) if pcm else block
            af = av.AudioFrame.from_ndarray(data, format="s16" if pcm else "fltp", layout="mono")
            af.sample_rate, af.pts, af.time_base = rate, start + s, Fraction(1, rate)
            for p in a.encode(af):
                c.mux(p)
        for p in [*v.encode(), *a.encode()]:
            c.mux(p)
    return wave


def sound_of(path: Path) -> tuple[str, float, np.ndarray]:
    """(codec, start in seconds, mono float32 samples) of the first audio stream of ``path``."""
    with av.open(str(path)) as c:
        s = c.streams.audio[0]
        start = float(s.start_time * s.time_base) if s.start_time is not None else 0.0
        mono = av.AudioResampler(format="flt", layout="mono", rate=s.codec_context.sample_rate)
        chunks = [g.to_ndarray().reshape(-1) for f in c.decode(s) for g in mono.resample(f)]
        chunks += [g.to_ndarray().reshape(-1) for g in mono.resample(None)]
        return s.codec_context.name, start, np.concatenate(chunks)

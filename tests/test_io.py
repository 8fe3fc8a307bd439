"""rovr.video.io: round trips, streaming windows, masks, atomic writes and one-line errors."""

from __future__ import annotations

import logging
import os
import struct
from collections.abc import Callable, Iterator
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from PIL import Image

from media import sound_of, write_video_with_sound
from rovr.errors import DataError
from rovr.video import io

REAL_VIDEOS = ("schoolgirls.mp4", "dogs_jump.mp4", "skating.mp4", "parkour.mp4")


def smooth_frames(t: int, h: int, w: int) -> np.ndarray:
    """uint8 (t, h, w, 3): smooth colour gradients drifting right, easy for H.264."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    out = np.empty((t, h, w, 3), np.uint8)
    for i in range(t):
        out[i, ..., 0] = 128 + 100 * np.sin((x + 2 * i) / 9)
        out[i, ..., 1] = 128 + 100 * np.cos(y / 7)
        out[i, ..., 2] = 40 + 3 * i
    return out


def encode_with_pyav(
    path: Path, frames: np.ndarray, codec: str, fmt: str, options: dict[str, str] | None = None
) -> None:
    """Write a test file in a container/codec that rovr itself never writes."""
    with av.open(str(path), "w", format=fmt, options=options or {}) as c:
        s = c.add_stream(codec, rate=25)
        s.width, s.height, s.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        for f in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


# ----------------------------------------------------------------------------- round trips


@pytest.mark.parametrize(("w", "h"), [(64, 48), (65, 49), (64, 37)])
def test_mp4_round_trip_keeps_size_count_fps_and_pixels(tmp_path: Path, w: int, h: int) -> None:
    frames = smooth_frames(12, h, w)
    path = tmp_path / "v.mp4"
    io.write_video(path, frames, fps=30)
    info = io.probe(path)
    assert (info.frames, info.width, info.height) == (12, w, h)
    assert info.fps == pytest.approx(30.0)
    back = io.read_video(path)
    assert back.shape == frames.shape and back.dtype == np.uint8
    # crf 18; the floor for this saturated pattern is ~2.9 even at crf 0 (4:2:0 chroma subsampling)
    assert np.abs(back.astype(int) - frames).mean() < 4.0


def test_write_video_accepts_iterables_and_ntsc_rate(tmp_path: Path) -> None:
    path = tmp_path / "v.mp4"
    io.write_video(path, (f for f in smooth_frames(5, 32, 32)), fps=30000 / 1001)
    assert io.probe(path).fps == pytest.approx(29.97, abs=0.01)
    assert leftovers(tmp_path) == []


def test_video_writer_streams_frames(tmp_path: Path) -> None:
    frames = smooth_frames(7, 32, 48)
    with io.VideoWriter(tmp_path / "s.mp4", fps=24, width=48, height=32) as wr:
        for f in frames:
            wr.write(f)
        assert not (tmp_path / "s.mp4").exists()  # only visible once complete
    assert wr.frames_written == 7
    assert io.read_video(tmp_path / "s.mp4").shape == frames.shape


@pytest.mark.parametrize(
    ("name", "codec", "fmt"),
    [
        ("v.mkv", "libx264", "matroska"),
        ("v.avi", "mpeg4", "avi"),
        ("v.mov", "libx264", "mov"),
        ("v.webm", "libvpx-vp9", "webm"),
    ],
)
def test_other_containers_decode_and_seek(tmp_path: Path, name: str, codec: str, fmt: str) -> None:
    frames = smooth_frames(10, 32, 48)
    path = tmp_path / name
    encode_with_pyav(path, frames, codec, fmt, {"g": "4"} if codec != "libvpx-vp9" else None)
    info = io.probe(path)
    assert (info.frames, info.width, info.height) == (10, 48, 32)
    assert info.fps == pytest.approx(25.0)
    full = io.read_video(path)
    assert np.abs(full.astype(int) - frames).mean() < 6.0
    np.testing.assert_array_equal(io.read_video(path, 5, 4), full[5:9])


def test_gif_is_read_with_its_frame_rate(tmp_path: Path) -> None:
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)]
    frames = np.stack([np.full((20, 30, 3), c, np.uint8) for c in colours])
    Image.fromarray(frames[0]).save(
        tmp_path / "a.gif",
        save_all=True,
        append_images=[Image.fromarray(f) for f in frames[1:]],
        duration=40,
        loop=0,
    )
    info = io.probe(tmp_path / "a.gif")
    assert (info.frames, info.width, info.height, info.fps) == (4, 30, 20, 25.0)
    np.testing.assert_array_equal(io.read_video(tmp_path / "a.gif"), frames)
    np.testing.assert_array_equal(io.read_video(tmp_path / "a.gif", 2), frames[2:])


def _dominant_hz(x: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spectrum) * rate / len(x))


@pytest.mark.parametrize(
    ("codec", "fmt", "rate", "how"),
    [
        ("aac", "mp4", 44100, "aac copied"),
        ("libopus", "matroska", 48000, "opus copied"),
        ("pcm_s16le", "mov", 22050, "pcm_s16le re-encoded as AAC"),  # PCM plays badly from mp4
        ("pcm_s16le", "matroska", 48000, "pcm_s16le re-encoded as AAC"),  # its layout has no order
    ],
)
def test_writer_carries_the_sound_of_a_video(
    tmp_path: Path, codec: str, fmt: str, rate: int, how: str
) -> None:
    """Copied or re-encoded, the tone keeps its pitch, loudness, length and start (0.5 s in)."""
    frames = smooth_frames(20, 32, 48)
    src = tmp_path / f"in.{fmt}"
    wave = write_video_with_sound(src, frames, fps=10, audio_codec=codec, fmt=fmt, rate=rate, offset=0.5)
    out = tmp_path / "out.mp4"
    with io.VideoWriter(out, 10, 48, 32, audio_from=src) as w:
        for f in frames:
            w.write(f)
    assert w.audio == how
    assert io.read_video(out).shape == frames.shape
    name, start, sound = sound_of(out)
    assert name == ("opus" if codec == "libopus" else "aac")
    assert start == pytest.approx(0.5, abs=0.05)
    assert abs(len(sound) - len(wave)) <= 2048  # the encoder's frame of padding at most
    assert np.sqrt(np.mean(sound**2)) == pytest.approx(np.sqrt(np.mean(wave**2)), rel=0.05)
    assert _dominant_hz(sound, rate) == pytest.approx(440, abs=5)
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize(("codec", "fmt"), [("aac", "mp4"), ("pcm_s16le", "mov")])
def test_a_span_of_the_sound_is_cut_sample_exact(tmp_path: Path, codec: str, fmt: str) -> None:
    """audio_span (1.0, 1.6) of 440 Hz for 1 s then 880 Hz: 0.6 s of 880 Hz from the output's start."""
    rate, frames = 22050, smooth_frames(20, 32, 48)
    t = np.arange(2 * rate) / rate
    wave = (0.3 * np.sin(2 * np.pi * np.where(t < 1.0, 440, 880) * t)).astype(np.float32)
    src = tmp_path / f"in.{fmt}"
    write_video_with_sound(src, frames, fps=10, audio_codec=codec, fmt=fmt, rate=rate, wave=wave)
    out = tmp_path / "out.mp4"
    with io.VideoWriter(out, 10, 48, 32, audio_from=src, audio_span=(1.0, 1.6)) as w:
        for f in frames[10:16]:
            w.write(f)
    assert w.audio is not None and w.audio.endswith("re-encoded as AAC")
    _, start, sound = sound_of(out)
    assert start == pytest.approx(0.0, abs=0.05)
    assert abs(len(sound) - round(0.6 * rate)) <= 2048
    assert _dominant_hz(sound[: round(0.6 * rate)], rate) == pytest.approx(880, abs=10)


def test_cut_keeps_interleaved_channels_together() -> None:
    """Samples lo..hi of a packed stereo frame are the pairs lo..hi (not single values)."""
    n = 100
    left, right = np.arange(n, dtype=np.int16), -np.arange(n, dtype=np.int16)
    packed = np.stack([left, right], axis=1).reshape(1, -1)  # L0 R0 L1 R1 ...
    frame = av.AudioFrame.from_ndarray(packed, format="s16", layout="stereo")
    frame.sample_rate = 8000
    part = io._cut(frame, 10, 30)
    assert part.samples == 20 and part.sample_rate == 8000 and part.layout.name == "stereo"
    assert np.array_equal(part.to_ndarray().reshape(-1, 2), np.stack([left, right], axis=1)[10:30])
    planar = av.AudioFrame.from_ndarray(
        np.stack([left, right]).astype(np.float32), format="fltp", layout="stereo"
    )
    planar.sample_rate = 8000
    assert np.array_equal(
        io._cut(planar, 5, 7).to_ndarray(), np.stack([left, right])[:, 5:7].astype(np.float32)
    )


def test_no_sound_to_carry(tmp_path: Path) -> None:
    """A silent video or a frame folder: no audio stream, nothing said."""
    frames = smooth_frames(5, 32, 48)
    silent, folder = tmp_path / "silent.mp4", tmp_path / "frames"
    io.write_video(silent, frames, fps=10)
    io.write_frames(folder, frames)
    for src in (silent, folder):
        out = tmp_path / "out.mp4"
        with io.VideoWriter(out, 10, 48, 32, audio_from=src) as w:
            for f in frames:
                w.write(f)
        assert w.audio is None
        with av.open(str(out)) as c:
            assert not c.streams.audio


@pytest.mark.parametrize(
    "error",
    [
        av.InvalidDataError(1094995529, "Invalid data found when processing input"),
        TypeError("unexpected layout"),
    ],
)
def test_sound_that_cannot_be_carried_keeps_the_video(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, error: Exception
) -> None:
    """If muxing fails both ways, the repaired video is still saved, without sound, with one warning."""
    frames = smooth_frames(10, 32, 48)
    src = tmp_path / "in.mp4"
    write_video_with_sound(src, frames, fps=10)

    def broken(*args: object) -> str:
        raise error

    monkeypatch.setattr(io, "_remux_audio", broken)
    out = tmp_path / "out.mp4"
    with (
        caplog.at_level(logging.WARNING, logger="rovr.video.io"),
        io.VideoWriter(out, 10, 48, 32, audio_from=src) as w,
    ):
        for f in frames:
            w.write(f)
    assert w.audio is None
    assert io.read_video(out).shape == frames.shape
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "in.mp4" in warnings[0] and "no sound" in warnings[0]
    assert "\n" not in warnings[0] and leftovers(tmp_path) == []


def test_a_numbered_folder_that_skips_numbers_is_said_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A dropped frame in an exported sequence is read as consecutive frames: rovr says so (frames and
    masks folders), once per folder; names that are not one numbered pattern say nothing."""
    P = lambda *names: [Path(n) for n in names]  # noqa: E731
    assert io.numbering_gap(P("f_1.png", "f_2.png", "f_5.png", "f_7.png")) == ("f_2.png", "f_5.png", 3)
    assert io.numbering_gap(P("00000.jpg", "00001.jpg", "00002.jpg")) is None
    assert io.numbering_gap(P("a1.png", "b3.png")) is None  # two patterns
    assert io.numbering_gap(P("f1.png", "f3.jpg")) is None
    frames = smooth_frames(4, 8, 8)
    for folder in ("frames", "masks"):
        (tmp_path / folder).mkdir()
        for n, number in enumerate((0, 1, 2, 4)):
            Image.fromarray(frames[n]).save(tmp_path / folder / f"{number:05d}.png")
    with caplog.at_level(logging.WARNING, logger="rovr.video.io"):
        assert io.read_video(tmp_path / "frames").shape[0] == 4
        io.probe(tmp_path / "frames")
        assert io.read_masks(tmp_path / "masks", 4, 8, 8).shape == (4, 8, 8)
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 2, said
    assert said[0].startswith(
        f"frame folder '{tmp_path / 'frames'}' skips numbers ('00002.png' is followed by"
    )
    assert "1 number(s) missing" in said[0] and said[1].startswith("mask folder")


def test_png_folder_round_trip_is_lossless_and_naturally_sorted(tmp_path: Path) -> None:
    frames = smooth_frames(4, 16, 24)
    assert io.write_frames(tmp_path / "f", frames) == 4
    np.testing.assert_array_equal(io.read_video(tmp_path / "f"), frames)
    assert io.probe(tmp_path / "f").fps == io.FOLDER_FPS == 24.0
    # natural order: 2 before 10; gray and RGBA frames come out RGB; jpg/bmp accepted
    d = tmp_path / "mixed"
    d.mkdir()
    Image.fromarray(np.full((8, 8), 10, np.uint8)).save(d / "f2.png")
    Image.fromarray(np.full((8, 8, 4), (20, 30, 40, 0), np.uint8)).save(d / "f10.png")
    Image.fromarray(np.full((8, 8, 3), 200, np.uint8)).save(d / "f1.bmp")
    Image.fromarray(np.full((8, 8, 3), 100, np.uint8)).save(d / "f11.jpg", quality=95)
    (d / "notes.txt").write_text("ignored")
    out = io.read_video(d)
    assert out.shape == (4, 8, 8, 3)
    np.testing.assert_array_equal(out[:3, 0, 0], [[200, 200, 200], [10, 10, 10], [20, 30, 40]])
    assert np.abs(out[3].astype(int) - 100).max() <= 2


@pytest.mark.parametrize("video", REAL_VIDEOS)
def test_streaming_window_equals_slice_of_full_read(real_dir: Path, video: str) -> None:
    path = real_dir / video
    info = io.probe(path)
    full = io.read_video(path)
    assert full.shape == (info.frames, info.height, info.width, 3)
    mid = info.frames // 2 - 10
    window = list(io.iter_frames(path, mid, 20))
    np.testing.assert_array_equal(np.stack(window), full[mid : mid + 20])
    np.testing.assert_array_equal(io.read_video(path, info.frames - 3), full[-3:])


def test_real_schoolgirls_is_80_frames_432x240(real_dir: Path) -> None:
    info = io.probe(real_dir / "schoolgirls.mp4")
    assert (info.frames, info.width, info.height, info.fps) == (80, 432, 240, 24.0)


def test_iter_frames_is_lazy(real_dir: Path) -> None:
    it = io.iter_frames(real_dir / "skating.mp4", 30)
    first = next(it)
    assert first.shape == (360, 640, 3)
    it.close()  # stops decoding; the container is closed


# ----------------------------------------------------------------------------- masks


def test_palette_mask_folder_nonzero_index_is_hole(tmp_path: Path) -> None:
    d = tmp_path / "m"
    d.mkdir()
    expected = []
    for i in range(11):  # names 0..10 must sort naturally
        idx = np.zeros((6, 9), np.uint8)
        idx[i % 6, i % 9] = 1 + i % 3
        im = Image.fromarray(idx, mode="P")
        im.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * 756)
        im.save(d / f"{i}.png")
        expected.append(idx != 0)
    masks = io.read_masks(d, 11, 6, 9)
    assert masks.dtype == bool
    np.testing.assert_array_equal(masks, np.stack(expected))


def test_gray_binary_and_jpeg_masks(tmp_path: Path) -> None:
    a = np.zeros((6, 8), np.uint8)
    a[1:3, 2:5] = 255
    Image.fromarray(a).save(tmp_path / "gray.png")
    Image.fromarray(a > 0).save(tmp_path / "binary.png")
    Image.fromarray(a).save(tmp_path / "lossy.jpg", quality=60)
    for name in ("gray.png", "binary.png", "lossy.jpg"):
        np.testing.assert_array_equal(io.read_masks(tmp_path / name, 1, 6, 8)[0], a > 0, err_msg=name)


def test_a_davis_coloured_jpeg_mask_keeps_its_hole(tmp_path: Path) -> None:
    """DAVIS's object colours (128, 0, 0) saved as JPEG: noise around 128 cut a threshold of 128
    through the object (37 % of a real clip's hole was lost); 64 keeps it, and adds no stray pixels."""
    y, x = np.mgrid[0:64, 0:96]
    hole = (x - 40) ** 2 / 400 + (y - 30) ** 2 / 150 < 1  # an object's blob
    bgr = np.zeros((64, 96, 3), np.uint8)
    bgr[hole] = (0, 0, 128)  # cv2 writes BGR: red 128, as a DAVIS palette PNG converts
    cv2.imwrite(str(tmp_path / "m.jpg"), bgr, [cv2.IMWRITE_JPEG_QUALITY, 75])
    got = io.read_masks(tmp_path / "m.jpg", 1, 64, 96)[0]
    assert (got & hole).sum() >= 0.97 * hole.sum()
    assert (got & ~hole).sum() <= 0.03 * hole.sum()


def test_transparent_masks(tmp_path: Path) -> None:
    hole = np.zeros((6, 8), bool)
    hole[1:3, 2:5] = True
    cases = {}
    white_strokes = np.zeros((6, 8, 4), np.uint8)  # white, opaque strokes on a clear black layer
    white_strokes[hole] = 255
    cases["white_strokes"] = white_strokes
    white_clear = np.full((6, 8, 4), 255, np.uint8)  # clear pixels that are white underneath
    white_clear[~hole, 3] = 0
    cases["white_clear"] = white_clear
    black_strokes = np.zeros((6, 8, 4), np.uint8)  # strokes in the alpha channel only
    black_strokes[hole, 3] = 200
    cases["black_strokes"] = black_strokes
    for name, a in cases.items():
        Image.fromarray(a, mode="RGBA").save(tmp_path / f"{name}.png")
        np.testing.assert_array_equal(io.read_masks(tmp_path / f"{name}.png", 1, 6, 8)[0], hole, err_msg=name)
    gray_alpha = np.stack([np.zeros((6, 8), np.uint8), np.where(hole, 255, 0).astype(np.uint8)], -1)
    Image.fromarray(gray_alpha, mode="LA").save(tmp_path / "la.png")
    np.testing.assert_array_equal(io.read_masks(tmp_path / "la.png", 1, 6, 8)[0], hole)
    opaque_black = np.zeros((6, 8, 4), np.uint8)  # no transparency and nothing non-zero: no hole
    opaque_black[..., 3] = 255
    Image.fromarray(opaque_black, mode="RGBA").save(tmp_path / "none.png")
    assert not io.read_masks(tmp_path / "none.png", 1, 6, 8).any()


def test_a_damaged_png_frame_is_one_line(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    d = tmp_path / "f"
    d.mkdir()
    for i in range(3):
        cv2.imwrite(str(d / f"{i}.png"), np.full((8, 8, 3), 40 * i, np.uint8))
    data = (d / "1.png").read_bytes()
    (d / "1.png").write_bytes(data[: len(data) // 2])  # cut short: OpenCV warns before failing
    with pytest.raises(DataError, match="1.png' is not a readable image"):
        io.read_video(d)
    assert "WARN" not in capfd.readouterr().err


def test_single_mask_image_applies_to_every_frame(tmp_path: Path) -> None:
    a = np.zeros((5, 7), np.uint8)
    a[2, 3] = 1
    Image.fromarray(a).save(tmp_path / "one.png")
    masks = io.read_masks(tmp_path / "one.png", 4, 5, 7)
    assert masks.shape == (4, 5, 7)
    assert masks.sum() == 4 and masks[:, 2, 3].all()
    streamed = list(io.iter_masks(tmp_path / "one.png", 4, 5, 7))
    assert len(streamed) == 4 and not streamed[0].flags.writeable


def test_a_mask_video_gives_one_mask_per_frame(real_dir: Path, tmp_path: Path) -> None:
    """A real mask folder written as an H.264 mp4 (as segmentation tools export masks) reads back as
    the same masks up to the codec's blur on the edges; a wrong count or size is one line."""
    info = io.probe(real_dir / "dogs_jump.mp4")
    truth = io.read_masks(real_dir / "dogs_jump_mask", info.frames, info.height, info.width)
    video = tmp_path / "masks.mp4"
    io.write_video(video, np.repeat(truth[..., None].astype(np.uint8) * 255, 3, axis=3), fps=info.fps)
    masks = io.read_masks(video, info.frames, info.height, info.width)
    assert masks.dtype == bool and masks.shape == truth.shape
    edges = truth ^ np.stack([cv2.erode(m.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0 for m in truth])
    assert (masks != truth).mean() < 0.002 and ((masks != truth) & ~edges).mean() < 0.0005
    with pytest.raises(
        DataError, match=rf"mask video '.*masks.mp4' has {info.frames} frames but the video has 5"
    ):
        io.iter_masks(video, 5, info.height, info.width)
    with pytest.raises(DataError, match="is 432x240 but the video frames are 400x240"):
        io.iter_masks(video, info.frames, info.height, 400)
    (tmp_path / "broken.mp4").write_bytes(b"not a video")
    with pytest.raises(DataError, match="^masks: "):
        io.iter_masks(tmp_path / "broken.mp4", info.frames, info.height, info.width)


def test_masks_of_a_part_of_the_video(tmp_path: Path) -> None:
    """iter_masks(start, count) gives masks start..start+count-1 from a folder, a mask video and one
    image; the count is still checked against the whole video; a window outside it is refused."""
    n, h, w = 12, 16, 24
    truth = np.zeros((n, h, w), bool)
    for i in range(n):
        truth[i, 2:10, i : i + 8] = True
    folder = tmp_path / "masks"
    folder.mkdir()
    for i in range(n):
        io.write_png(folder / f"{i:03d}.png", truth[i])
    video = tmp_path / "masks.mp4"
    io.write_video(video, np.repeat(truth[..., None].astype(np.uint8) * 255, 3, axis=3), fps=10)
    for src in (folder, video):
        part = np.stack(list(io.iter_masks(src, n, h, w, start=4, count=5)))
        assert part.shape == (5, h, w)
        assert (part != truth[4:9]).mean() < 0.01, src  # exact for PNGs; the codec's edges for the mp4
    np.testing.assert_array_equal(
        np.stack(list(io.iter_masks(folder, n, h, w, start=4, count=5))), truth[4:9]
    )
    assert len(list(io.iter_masks(folder / "003.png", n, h, w, start=10))) == 2
    with pytest.raises(DataError, match="has 12 masks but the video has 20 frames"):
        io.iter_masks(folder, 20, h, w, start=4, count=5)
    with pytest.raises(ValueError, match="outside"):
        io.iter_masks(folder, n, h, w, start=10, count=5)


@pytest.mark.parametrize("video", ["schoolgirls", "dogs_jump"])
def test_real_mask_folders_match_their_videos(real_dir: Path, video: str) -> None:
    info = io.probe(real_dir / f"{video}.mp4")
    masks = io.read_masks(real_dir / f"{video}_mask", info.frames, info.height, info.width)
    assert masks.shape == (info.frames, info.height, info.width)
    assert 0.005 < masks.mean() < 0.5  # an object, not empty and not everything
    assert masks.reshape(info.frames, -1).any(axis=1).all()


# ----------------------------------------------------------------------------- atomic writes


def test_failed_stream_leaves_nothing_and_keeps_old_file(tmp_path: Path) -> None:
    target = tmp_path / "out.mp4"
    target.write_bytes(b"old")
    with pytest.raises(KeyboardInterrupt), io.VideoWriter(target, 24, 16, 16) as wr:
        wr.write(np.zeros((16, 16, 3), np.uint8))
        raise KeyboardInterrupt
    assert target.read_bytes() == b"old"
    assert leftovers(tmp_path) == []
    bad = [np.zeros((16, 16, 3), np.uint8), np.zeros((16, 17, 3), np.uint8)]
    with pytest.raises(ValueError, match=r"\(16, 16, 3\)"):
        io.write_video(tmp_path / "new.mp4", bad, fps=24)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4"]


def test_write_png_and_write_frames_are_atomic(tmp_path: Path) -> None:
    img = smooth_frames(1, 9, 11)[0]
    io.write_png(tmp_path / "a.png", img)
    io.write_png(tmp_path / "m.png", img[..., 0] > 128)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "m.png"]
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "a.png")), img)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "m.png")), (img[..., 0] > 128) * 255)
    # a frame folder rovr wrote is replaced whole; a folder with other files is refused
    io.write_frames(tmp_path / "f", smooth_frames(5, 4, 4))
    io.write_frames(tmp_path / "f", smooth_frames(3, 4, 4))
    frames = ["00000.png", "00001.png", "00002.png"]
    assert sorted(p.name for p in (tmp_path / "f").iterdir()) == [io.FRAMES_MARKER, *frames]
    (tmp_path / "f" / "keep.txt").write_text("x")
    with pytest.raises(DataError, match="keep.txt"):
        io.write_frames(tmp_path / "f", smooth_frames(3, 4, 4))
    # the same frames without rovr's marker (the user's own, or masks named alike) are never replaced
    (tmp_path / "f" / "keep.txt").unlink()
    (tmp_path / "f" / io.FRAMES_MARKER).unlink()
    with pytest.raises(DataError, match="images rovr did not write"):
        io.write_frames(tmp_path / "f", smooth_frames(3, 4, 4))
    assert sorted(p.name for p in (tmp_path / "f").iterdir()) == frames

    def boom() -> Iterator[np.ndarray]:
        yield smooth_frames(1, 4, 4)[0]
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        io.write_frames(tmp_path / "g", boom())
    assert not (tmp_path / "g").exists() and leftovers(tmp_path) == []


# ----------------------------------------------------------------------------- bad input


def _truncate(path: Path, keep: float) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def _bad_cases(tmp: Path) -> dict[str, tuple[Callable[[], object], str]]:
    """name -> (call that must raise DataError, the file name the message must mention)."""
    (tmp / "text.mp4").write_text("this is a text file, not a video\n" * 20)
    io.write_video(tmp / "trunc.mp4", smooth_frames(30, 32, 32), fps=24)
    _truncate(tmp / "trunc.mp4", 0.5)
    rng = np.random.default_rng(0)
    encode_with_pyav(
        tmp / "faststart.mp4",
        rng.integers(0, 255, (30, 32, 32, 3), dtype=np.uint8),
        "libx264",
        "mp4",
        {"movflags": "faststart"},
    )
    _truncate(tmp / "faststart.mp4", 0.6)
    (tmp / "empty_dir").mkdir()
    io.write_video(tmp / "two.mp4", smooth_frames(2, 16, 16), fps=24)
    (tmp / "huge").mkdir()
    for i in range(3):
        Image.fromarray(np.zeros((2, 8200), np.uint8)).save(tmp / "huge" / f"{i}.png")
    io.write_frames(tmp / "ok", smooth_frames(3, 6, 8))
    (tmp / "broken").mkdir()
    for i in range(3):
        (tmp / "broken" / f"{i}.png").write_text("not a png")
    (tmp / "masks3").mkdir()
    for i in range(3):
        Image.fromarray(np.zeros((6, 8), np.uint8)).save(tmp / "masks3" / f"{i}.png")
    Image.fromarray(np.zeros((5, 8), np.uint8)).save(tmp / "small_mask.png")
    return {
        "missing": (lambda: io.read_video(tmp / "nope.mp4"), "nope.mp4"),
        "text renamed .mp4": (lambda: io.read_video(tmp / "text.mp4"), "text.mp4"),
        "truncated mp4": (lambda: io.probe(tmp / "trunc.mp4"), "trunc.mp4"),
        "truncated faststart mp4": (lambda: io.read_video(tmp / "faststart.mp4"), "faststart.mp4"),
        "empty folder": (lambda: io.probe(tmp / "empty_dir"), "empty_dir"),
        "two frames": (lambda: io.read_video(tmp / "two.mp4"), "two.mp4"),
        "absurd size": (lambda: io.probe(tmp / "huge"), "0.png"),
        "unreadable frame": (lambda: io.read_video(tmp / "broken"), "0.png"),
        "window outside": (lambda: list(io.iter_frames(tmp / "ok", 2, 5)), "ok"),
        "mask count": (lambda: io.read_masks(tmp / "masks3", 4, 6, 8), "masks3"),
        "mask folder size": (lambda: io.read_masks(tmp / "masks3", 3, 7, 8), "0.png"),
        "single mask size": (lambda: io.read_masks(tmp / "small_mask.png", 3, 6, 8), "small_mask.png"),
        "mask not an image": (lambda: io.read_masks(tmp / "text.mp4", 3, 6, 8), "text.mp4"),
        "missing masks": (lambda: io.read_masks(tmp / "nomasks", 3, 6, 8), "nomasks"),
    }


def test_bad_inputs_raise_one_line_data_errors(tmp_path: Path) -> None:
    cases = _bad_cases(tmp_path)
    for name, (call, fname) in cases.items():
        with pytest.raises(DataError) as err:
            call()
        msg = str(err.value)
        assert "\n" not in msg, name
        assert fname in msg, f"{name}: {msg}"
        assert err.value.__cause__ is None, name  # no chained FFmpeg traceback
    assert "8x5" in str(pytest.raises(DataError, cases["single mask size"][0]).value)
    assert "8200" in str(pytest.raises(DataError, cases["absurd size"][0]).value)
    assert "4 frames" in str(pytest.raises(DataError, cases["mask count"][0]).value)


def test_data_error_is_raised_before_decoding(tmp_path: Path) -> None:
    """iter_frames validates the window eagerly, not at the first next()."""
    io.write_frames(tmp_path / "ok", smooth_frames(3, 6, 8))
    with pytest.raises(DataError):
        io.iter_frames(tmp_path / "ok", 0, 4)


def test_overwritten_file_is_reprobed(tmp_path: Path) -> None:
    path = tmp_path / "v.mp4"
    io.write_video(path, smooth_frames(4, 16, 16), fps=24)
    assert io.probe(path).frames == 4
    io.write_video(path, smooth_frames(6, 16, 16), fps=24)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1))  # guard against coarse mtime
    assert io.probe(path).frames == 6


def test_natural_key_orders_numbers_by_value() -> None:
    names = ["f10.png", "F2.png", "f1.png", "f²x.png", "f٣.png"]  # non-ASCII digits sort as text
    assert sorted(names, key=io.natural_key)[:3] == ["f1.png", "F2.png", "f10.png"]


def _flag_rotation(path: Path) -> None:
    """Give the (first) track of an mp4 the display matrix of a phone held upright: 90° clockwise."""
    data = bytearray(path.read_bytes())
    i = data.index(b"tkhd")
    matrix = i + 8 + (32 if data[i + 4] == 1 else 20) + 16  # after the times, ids, layer and volume
    data[matrix : matrix + 36] = struct.pack(">9i", 0, 0x10000, 0, -0x10000, 0, 0, 0, 0, 0x40000000)
    path.write_bytes(bytes(data))


def test_a_rotation_flag_is_applied_as_players_do(tmp_path: Path) -> None:
    """Portrait phone video is stored landscape with a rotation flag: frames are read upright (as
    players and OpenCV show them), so masks drawn on what one sees fit, and outputs play upright."""
    frames = np.zeros((3, 16, 24, 3), np.uint8)
    frames[:, :4, :6] = 255  # a mark in the stored top-left corner
    path = tmp_path / "phone.mp4"
    io.write_video(path, frames, fps=10)
    _flag_rotation(path)
    with av.open(str(path)) as c:
        assert next(c.decode(video=0)).rotation == -90
    info = io.probe(path)
    assert (info.width, info.height) == (16, 24)
    upright = io.read_video(path)
    assert upright.shape == (3, 24, 16, 3)
    lit = upright[0, :, :, 0] > 128
    assert lit[:6, 12:].all() and lit.sum() == 24  # turned clockwise: now the top-right corner
    assert np.array_equal(next(io.iter_frames(path, start=1)), upright[1])

"""rovr.data.sources and rovr.data.clips: folder scanning, synthetic videos, splits and clip sets."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from rovr.config import DataConfig
from rovr.data.clips import (
    Clip,
    ClipSet,
    clip_starts,
    clips_from_video,
    resize_and_crop,
    split_videos,
    spread,
)
from rovr.data.sources import Source, SyntheticVideos, VideoFolder, check_source, open_source
from rovr.errors import DataError
from rovr.video import io


def frames_folder(folder: Path, n: int, h: int = 8, w: int = 10, ext: str = "png") -> None:
    folder.mkdir(parents=True)
    for i in range(n):
        Image.fromarray(np.full((h, w, 3), 10 * i, np.uint8)).save(folder / f"{i:05d}.{ext}")


# ----------------------------------------------------------------------------- VideoFolder


def test_video_folder_finds_exactly_the_four_real_videos(real_dir: Path) -> None:
    src = VideoFolder(real_dir)
    assert src.videos() == ["dogs_jump.mp4", "parkour.mp4", "schoolgirls.mp4", "skating.mp4"]
    assert isinstance(src, Source)
    assert src.num_frames("schoolgirls.mp4") == 80 and src.fps("schoolgirls.mp4") == 24.0
    assert src.read("dogs_jump.mp4", 10, 3).shape == (3, 240, 432, 3)


def test_video_folder_layouts(tmp_path: Path) -> None:
    root = tmp_path / "data"
    # DAVIS: JPEGImages/<res>/<seq>, with annotations beside; only one resolution is used
    for res in ("480p", "Full-Resolution"):
        frames_folder(root / "DAVIS" / "JPEGImages" / res / "bear", 3, ext="jpg")
        frames_folder(root / "DAVIS" / "Annotations" / res / "bear", 3)
    # RealVSR-like folders of frames, with a sibling mask folder and a 'masks' subfolder
    frames_folder(root / "realvsr" / "001", 4)
    frames_folder(root / "realvsr" / "001" / "masks", 4)
    frames_folder(root / "realvsr" / "001_mask", 4)
    frames_folder(root / ".hidden" / "x", 4)
    io.write_video(root / "clips" / "a.mp4", np.zeros((3, 16, 16, 3), np.uint8), fps=24)
    io.write_video(root / "clips" / "a_mask.mp4", np.zeros((3, 16, 16, 3), np.uint8), fps=24)
    (root / "clips" / "readme.txt").write_text("not a video")
    src = VideoFolder(root)
    assert src.videos() == ["clips/a.mp4", "DAVIS/JPEGImages/480p/bear", "realvsr/001"]
    assert src.read("realvsr/001").shape == (4, 8, 10, 3)
    assert src.fps("realvsr/001") == 24.0
    # a root that is itself a frame folder is one video
    assert VideoFolder(root / "realvsr" / "001").videos() == ["001"]


def test_video_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="nope.*does not exist"):
        VideoFolder(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("x")
    with pytest.raises(DataError, match="empty.*holds no videos"):
        VideoFolder(tmp_path / "empty")
    (tmp_path / "v.mp4").write_text("text")
    with pytest.raises(DataError, match="is a file"):
        VideoFolder(tmp_path / "v.mp4")
    with pytest.raises(DataError, match="v.mp4"):  # found by the scan, rejected when used
        VideoFolder(tmp_path).read("v.mp4")
    with pytest.raises(DataError, match="missing.mp4"):
        VideoFolder(tmp_path).read("missing.mp4")


# ----------------------------------------------------------------------------- SyntheticVideos


def test_folder_is_announced_once_and_checked_quietly(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Each stage opens its splits anew: "found N videos" is said once a process (again when the
    count changes); check_source says nothing and refuses what open_source refuses."""
    root = tmp_path / "vids"
    frames_folder(root / "a", 3)
    with caplog.at_level(logging.INFO, logger="rovr.data.sources"):
        check_source(DataConfig(source=str(root)))
        assert caplog.records == []
        for _ in range(3):
            VideoFolder(root)
        frames_folder(root / "b", 3)
        VideoFolder(root)
    found = [r.getMessage() for r in caplog.records if "found" in r.getMessage()]
    assert found == [f"found 1 video under '{root}'", f"found 2 videos under '{root}'"]
    (tmp_path / "empty").mkdir()
    for bad, needle in ((tmp_path / "empty", "holds no videos"), (tmp_path / "nope", "does not exist")):
        with pytest.raises(DataError, match=needle):
            check_source(DataConfig(source=str(bad)))
    check_source(DataConfig(source="synthetic"))  # nothing to check


def test_synthetic_videos_are_deterministic_and_moving() -> None:
    a = SyntheticVideos(3, frames=6, size=32, seed=7)
    b = SyntheticVideos(3, frames=6, size=32, seed=7)
    c = SyntheticVideos(3, frames=6, size=32, seed=8)
    va, vb, vc = (s.read(s.videos()[1]) for s in (a, b, c))
    assert va.shape == (6, 32, 32, 3) and va.dtype == np.uint8
    np.testing.assert_array_equal(va, vb)
    assert not np.array_equal(va, vc)
    assert not np.array_equal(va, a.read(a.videos()[0]))
    assert all(not np.array_equal(va[t], va[t + 1]) for t in range(5))  # camera and objects move
    assert va.std() > 20  # a photograph, not a flat colour
    np.testing.assert_array_equal(a.read(a.videos()[1], 2, 3), va[2:5])
    assert a.fps(a.videos()[0]) == 24.0 and a.num_frames(a.videos()[2]) == 6
    with pytest.raises(DataError, match="synth_00009"):
        a.read("synth_00009")


def test_open_source(tmp_path: Path, real_dir: Path) -> None:
    src = open_source(DataConfig(num_videos=5, frames=4, size=16))
    assert isinstance(src, SyntheticVideos) and len(src.videos()) == 5
    assert src.read(src.videos()[0]).shape == (4, 16, 16, 3)
    assert isinstance(open_source(DataConfig(source=str(real_dir))), VideoFolder)
    with pytest.raises(DataError, match="data.source.*nowhere"):
        open_source(DataConfig(source=str(tmp_path / "nowhere")))


# ----------------------------------------------------------------------------- clips


def test_resize_and_crop_takes_the_centre() -> None:
    frames = np.zeros((2, 40, 80, 3), np.uint8)
    frames[:, :, 20:60] = 255  # the centre square of a 2:1 frame
    out = resize_and_crop(frames, 16)
    assert out.shape == (2, 16, 16, 3)
    assert out.min() == 255
    up = resize_and_crop(frames[0], 100)  # enlarging, single frame
    assert up.shape == (100, 100, 3) and up[:, 5:95].min() == 255
    np.testing.assert_array_equal(resize_and_crop(frames[:, :, 10:50], 40), frames[:, :, 10:50])


def test_clip_starts_and_clips_from_video() -> None:
    assert clip_starts(10, 4, 3) == [0, 3, 6]
    assert clip_starts(3, 4, 1) == []
    assert clip_starts(100, 20, 5, max_clips=3) == [0, 40, 80]  # spread evenly, first and last kept
    frames = np.arange(10, dtype=np.uint8)[:, None, None, None] * np.ones((1, 4, 6, 3), np.uint8)
    clips = clips_from_video(frames, 4, 3, 4, video="v")
    assert [c.start for c in clips] == [0, 3, 6] and all(c.video == "v" for c in clips)
    assert clips[1].frames.shape == (4, 4, 4, 3)
    np.testing.assert_array_equal(clips[1].frames[:, 0, 0, 0], [3, 4, 5, 6])


@settings(max_examples=60, deadline=None)
@given(
    names=st.lists(st.text(min_size=1, max_size=8), min_size=0, max_size=30, unique=True),
    val=st.sampled_from([0.0, 0.1, 0.15, 0.3]),
    test=st.sampled_from([0.0, 0.05, 0.2, 0.4]),
    seed=st.integers(0, 3),
)
def test_split_videos_partitions_by_video(names: list[str], val: float, test: float, seed: int) -> None:
    s = split_videos(names, val, test, seed)
    parts = [set(s[k]) for k in ("train", "val", "test")]
    assert sum(len(p) for p in parts) == len(names) and set().union(*parts) == set(names)
    assert split_videos(list(reversed(names)), val, test, seed) == s  # order of names does not matter
    if len(names) >= 3:
        assert s["train"] and (s["val"] or val == 0) and (s["test"] or test == 0)
    if len(names) >= 1:
        assert s["train"]


def test_split_is_stable_across_processes_and_versions() -> None:
    """Pinned: the split uses SHA-256 of (seed, name), not Python's salted hash()."""
    names = [f"v{i}" for i in range(10)]
    assert split_videos(names, 0.2, 0.2, seed=0) == split_videos(names, 0.2, 0.2, seed=0)
    assert split_videos(names, 0.2, 0.2, seed=0) == {
        "train": ["v0", "v1", "v3", "v4", "v6", "v9"],
        "val": ["v2", "v8"],
        "test": ["v5", "v7"],
    }


def test_clipset_synthetic_splits_do_not_share_videos() -> None:
    cfg = DataConfig(num_videos=8, frames=4, size=16, val_fraction=0.25, test_fraction=0.25, seed=3)
    src = open_source(cfg)
    sets = {k: ClipSet(cfg, k, source=src) for k in ("train", "val", "test")}
    videos = {k: {c.video for c in v} for k, v in sets.items()}
    assert videos["train"].isdisjoint(videos["test"]) and videos["train"].isdisjoint(videos["val"])
    assert videos["val"].isdisjoint(videos["test"])
    assert sum(len(v) for v in sets.values()) == 8  # one clip per synthetic video of exactly T frames
    clip = sets["train"][0]
    assert isinstance(clip, Clip) and clip.frames.shape == (4, 16, 16, 3) and clip.start == 0
    assert not clip.frames.flags.writeable
    assert sets["train"][0] is clip  # cached
    assert [c.video for c in sets["train"][-2:]] == [v for v, _ in sets["train"].windows[-2:]]
    with pytest.raises(IndexError):
        sets["train"][len(sets["train"])]


def test_clipset_skips_short_videos_and_errors_when_none_left(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    frames_folder(tmp_path / "long", 9, 12, 20)
    frames_folder(tmp_path / "short", 4, 12, 20)
    cfg = DataConfig(source=str(tmp_path), frames=5, size=16, stride=2, val_fraction=0, test_fraction=0)
    with caplog.at_level(logging.WARNING):
        cs = ClipSet(cfg, "train")
    assert "short" in caplog.text
    assert cs.windows == [("long", 0), ("long", 2), ("long", 4)]
    np.testing.assert_array_equal(cs[1].frames, resize_and_crop(io.read_video(tmp_path / "long", 2, 5), 16))
    with pytest.raises(DataError, match=str(tmp_path)):
        ClipSet(DataConfig(source=str(tmp_path), frames=10, size=16), "train")


def test_clipset_on_the_real_clips(real_dir: Path) -> None:
    cfg = DataConfig(source=str(real_dir), frames=20, size=32, stride=20, max_clips_per_video=2)
    cs = ClipSet(cfg, "all")
    assert len(cs) == 8 and {c.video for c in cs} == set(VideoFolder(real_dir).videos())
    clip = cs[5]
    assert clip.frames.shape == (20, 32, 32, 3)
    full = io.read_video(real_dir / clip.video, clip.start, 20)
    np.testing.assert_array_equal(clip.frames, resize_and_crop(full, 32))


def test_spread_keeps_the_ends_and_covers_every_video() -> None:
    assert spread(5) == spread(5, 0) == spread(5, 9) == [0, 1, 2, 3, 4]
    assert spread(15, 4) == [0, 5, 9, 14]
    assert spread(6, 4) == [0, 2, 3, 5]
    assert spread(0, 3) == [] and spread(7, 1) == [0]
    # the real-clip folder's layout (clips sorted by video: 3, 4, 4, 4): a budget of 4 sees all 4 videos
    videos = ["dogs"] * 3 + ["parkour"] * 4 + ["schoolgirls"] * 4 + ["skating"] * 4
    assert sorted({videos[i] for i in spread(len(videos), 4)}) == sorted(set(videos))


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 60), st.integers(0, 70))
def test_spread_is_sorted_unique_and_of_the_asked_size(n: int, limit: int) -> None:
    idx = spread(n, limit)
    assert idx == sorted(set(idx)) and all(0 <= i < n for i in idx)
    assert len(idx) == (n if limit <= 0 or limit >= n else limit)


def test_a_video_shorter_than_a_clip_is_in_no_split(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A too-short video used to take a split's place: alone in test, it left nothing to evaluate
    (found only by `rovr evaluate`, after training); now the split is made of usable videos only,
    and the skip is said once, not once per split."""
    root = tmp_path / "data"
    for name in ("a", "b", "c", "d"):
        frames_folder(root / name, 6)
    frames_folder(root / "short", 3)
    for seed in range(8):  # whichever way the hash falls, every split holds long videos only
        cfg = DataConfig(
            source=str(root), frames=5, size=16, val_fraction=0.25, test_fraction=0.25, seed=seed
        )
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="rovr"):
            splits = {s: ClipSet(cfg, s) for s in ("train", "val", "test")}
        assert sorted(v for c in splits.values() for v in c.videos) == ["a", "b", "c", "d"], seed
        assert all(len(c) > 0 for c in splits.values()), seed
        assert caplog.text.count("skipping 'short'") <= 1
    with pytest.raises(DataError, match="no video of .* has at least data.frames=7 frames \\(5 skipped\\)"):
        ClipSet(DataConfig(source=str(root), frames=7, size=16), "test")

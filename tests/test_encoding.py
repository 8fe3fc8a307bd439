"""Tiled low-res representation (paper Fig. 2)."""

from __future__ import annotations

import torch

from rovr.data.encoding import grid_side, tile, untile


def test_paper_shape() -> None:
    frames = torch.rand(20, 3, 256, 256)
    assert tile(frames, 32).shape == (3, 160, 160)
    assert grid_side(20) == 5 and grid_side(16) == 4 and grid_side(17) == 5


def test_layout_and_round_trip() -> None:
    frames = torch.rand(2, 7, 3, 8, 8)  # batch of 2 videos, T = 7, already at cell size
    tiles = tile(frames, 8)
    assert tiles.shape == (2, 3, 24, 24)
    # frame n at grid row n // 3, column n % 3
    assert torch.equal(tiles[1, :, 8:16, 0:8], frames[1, 3])
    assert torch.equal(tiles[0, :, 16:24, 8:16], torch.zeros(3, 8, 8))  # unused cell
    assert torch.equal(untile(tiles, 7, 8), frames)


def test_downsampling_averages() -> None:
    frames = torch.zeros(3, 3, 4, 4)
    frames[1] = 1.0
    tiles = tile(frames, 2)
    assert torch.allclose(tiles[:, 0:2, 2:4], torch.ones(3, 2, 2))

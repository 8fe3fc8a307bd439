"""Tiled low-res representation of a whole video (paper §5.1.1, Fig. 2).

Each of the T frames is downsampled to ``cell × cell`` and placed in a ``G × G`` grid,
``G = ceil(sqrt(T))``: frame ``n`` sits at grid row ``n // G``, column ``n % G``; unused cells are
zero. For the paper's T = 20 and cell = 32 this is a 5 × 5 grid, a 160 × 160 image.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def grid_side(num_frames: int) -> int:
    """G = ceil(sqrt(T)), the number of cells per side of the tiled image."""
    return math.ceil(math.sqrt(num_frames))


def downsample(frames: torch.Tensor, cell: int) -> torch.Tensor:
    """Area-downsample ``(..., 3, H, W)`` frames to ``(..., 3, cell, cell)``."""
    lead = frames.shape[:-3]
    x = frames.reshape(-1, *frames.shape[-3:])
    if x.shape[-2:] != (cell, cell):
        x = F.interpolate(x, size=(cell, cell), mode="area")
    return x.reshape(*lead, x.shape[-3], cell, cell)


def tile(frames: torch.Tensor, cell: int) -> torch.Tensor:
    """Tile ``(..., T, 3, H, W)`` frames into ``(..., 3, G*cell, G*cell)`` (Fig. 2)."""
    *lead, n, c, _, _ = frames.shape
    g = grid_side(n)
    small = downsample(frames, cell)  # (..., T, 3, cell, cell)
    pad = g * g - n
    if pad:
        small = torch.cat([small, small.new_zeros(*lead, pad, c, cell, cell)], dim=-4)
    small = small.reshape(*lead, g, g, c, cell, cell)  # (..., Grow, Gcol, 3, c, c)
    nd = len(lead)
    # -> (..., 3, Grow, c, Gcol, c)
    perm = [*range(nd), nd + 2, nd, nd + 3, nd + 1, nd + 4]
    return small.permute(*perm).reshape(*lead, c, g * cell, g * cell)


def untile(tiles: torch.Tensor, num_frames: int, cell: int) -> torch.Tensor:
    """Inverse of :func:`tile`: ``(..., 3, G*cell, G*cell)`` -> ``(..., T, 3, cell, cell)``."""
    *lead, c, _, _ = tiles.shape
    g = grid_side(num_frames)
    nd = len(lead)
    x = tiles.reshape(*lead, c, g, cell, g, cell)
    perm = [*range(nd), nd + 1, nd + 3, nd, nd + 2, nd + 4]  # (..., Grow, Gcol, 3, c, c)
    x = x.permute(*perm).reshape(*lead, g * g, c, cell, cell)
    return x[..., :num_frames, :, :, :]

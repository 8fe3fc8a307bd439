"""Local network Γ (paper §5.2.3): a UNet that rebuilds a target frame from conditioning frames.

Γ(x̄_t, c_1, …, c_k) = x̂_t. The target and its k conditioning frames are stacked as channels
together with their hole masks, passed through a UNet, and the prediction is composited into
the holes of the target only, so every known pixel of x̄_t is returned unchanged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class LocalNetConfig:
    base_channels: int = field(
        default=32, metadata={"help": "channels of the first UNet level (doubled per level)"}
    )
    depth: int = field(default=3, metadata={"help": "number of down/up-sampling levels"})

    def __post_init__(self) -> None:
        from rovr.config import check

        check(
            4 <= self.base_channels <= 512,
            "local.base_channels",
            f"must be in [4, 512] (got {self.base_channels})",
        )
        check(1 <= self.depth <= 6, "local.depth", f"must be in [1, 6] (got {self.depth})")


def _norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with up to 8 groups (the largest count of at most 8 that divides ``channels``)."""
    return nn.GroupNorm(math.gcd(channels, 8), channels)


class ConvBlock(nn.Sequential):
    """Two (3x3 conv → GroupNorm → ReLU) layers: (B, c_in, H, W) → (B, c_out, H, W)."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__(
            nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
            _norm(c_out),
            nn.ReLU(inplace=True),
            nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
            _norm(c_out),
            nn.ReLU(inplace=True),
        )


class Up(nn.Module):
    """Upsample ×2, fuse with the skip connection: (B, c_in, h, w), (B, c_skip, 2h, 2w) → (B, c_out, 2h, 2w)."""

    def __init__(self, c_in: int, c_skip: int, c_out: int) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(c_in, c_out, 2, stride=2)
        self.block = ConvBlock(c_out + c_skip, c_out)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.block(torch.cat([self.up(x), skip], dim=1))


class LocalNet(nn.Module):
    """Γ (paper §5.2.3): UNet over the stacked target and k conditioning frames, holes composited.

    Input channels: target (3) + target hole mask (1) + k × (frame (3) + hole mask (1)) + the copy
    prior (3) and where it exists (1) = 4 (k + 2). Hole pixels of every input frame are zeroed first,
    so Γ never depends on what the holes hold.

    The copy prior ``c`` is, at each pixel, the mean of the conditioning frames that observe it
    (0 where none does). The UNet predicts a residual on top of it,
    ``pred = clamp(c + r, 0, 1)`` where ``c`` exists and ``σ(r)`` elsewhere, with the last layer
    initialised near zero: an untrained Γ already copies what the chosen frames show, and training
    learns the corrections (motion, lighting) and the hallucination of pixels no frame shows.
    Level l of the UNet has ``base_channels · 2**l`` channels, l = 0 … depth.
    """

    def __init__(self, cfg: LocalNetConfig, k: int = 2) -> None:
        super().__init__()
        if k < 1:
            raise ValueError(f"LocalNet needs k >= 1 conditioning frames (got {k})")
        self.cfg = cfg
        self.k = k
        widths = [cfg.base_channels * 2**level for level in range(cfg.depth + 1)]
        self.stem = ConvBlock(4 * (k + 2), widths[0])
        self.down = nn.ModuleList(
            nn.Sequential(nn.MaxPool2d(2), ConvBlock(widths[i], widths[i + 1])) for i in range(cfg.depth)
        )
        self.up = nn.ModuleList(Up(widths[i + 1], widths[i], widths[i]) for i in reversed(range(cfg.depth)))
        self.head = nn.Conv2d(widths[0], 3, 1)
        nn.init.normal_(self.head.weight, std=1e-3)  # ≈ 0: an untrained Γ copies (gradients still flow)
        if self.head.bias is not None:
            nn.init.zeros_(self.head.bias)

    def forward(
        self,
        target: torch.Tensor,
        target_mask: torch.Tensor,
        cond: torch.Tensor,
        cond_masks: torch.Tensor,
    ) -> torch.Tensor:
        """Reconstruct the target frame.

        Args:
            target: (B, 3, H, W) float in [0, 1], the corrupted frame x̄_t.
            target_mask: (B, 1, H, W) float or bool, 1 = hole of x̄_t.
            cond: (B, k, 3, H, W) float in [0, 1], the conditioning frames c_1 … c_k.
            cond_masks: (B, k, 1, H, W) float or bool, 1 = hole of each conditioning frame.

        Returns:
            (B, 3, H, W) in [0, 1]: x̂_t = x̄_t ⊙ (1 − m) + Γ_pred ⊙ m, known pixels kept exactly.
        """
        B, _, H, W = target.shape
        if cond.shape != (B, self.k, 3, H, W) or cond_masks.shape != (B, self.k, 1, H, W):
            raise ValueError(
                f"LocalNet(k={self.k}) expects cond (B, {self.k}, 3, H, W) and cond_masks (B, {self.k}, 1, H, W) "
                f"for target {tuple(target.shape)}; got {tuple(cond.shape)} and {tuple(cond_masks.shape)}"
            )
        m = target_mask.to(target.dtype)  # (B, 1, H, W)
        cm = cond_masks.to(target.dtype)  # (B, k, 1, H, W)
        frames = torch.cat([target * (1 - m), m], dim=1)  # (B, 4, H, W)
        conds = torch.cat([cond * (1 - cm), cm], dim=2).flatten(1, 2)  # (B, 4k, H, W)
        seen = (1 - cm).sum(dim=1)  # (B, 1, H, W): how many conditioning frames observe each pixel
        prior = (cond * (1 - cm)).sum(dim=1) / seen.clamp(min=1)  # (B, 3, H, W) copy prior
        has_prior = (seen > 0).to(target.dtype)  # (B, 1, H, W)
        x = torch.cat([frames, conds, prior, has_prior], dim=1) * 2 - 1  # (B, 4(k+2), H, W) in [-1, 1]

        # pad to a multiple of 2**depth so every level halves exactly; cropped back below
        mult = 2**self.cfg.depth
        ph, pw = (-H) % mult, (-W) % mult
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="replicate")

        skips = [self.stem(x)]  # level l: (B, base·2**l, H'/2**l, W'/2**l)
        for down in self.down:
            skips.append(down(skips[-1]))
        h = skips.pop()
        for up in self.up:
            h = up(h, skips.pop())
        r = self.head(h)[..., :H, :W]  # (B, 3, H, W) residual
        pred = torch.where(has_prior > 0, (prior + r).clamp(0, 1), torch.sigmoid(r))
        return target * (1 - m) + pred * m

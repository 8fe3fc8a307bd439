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

# Γ's no-grad passes on the CPU take at most this many pixels (B·H·W) at a time — 32 frames at 64²,
# 8 at 128², 2 at 256² — and split larger batches (brute force's 171 pairs of a target, PPG's draws).
# That bounds their memory (171 pairs of the paper's Γ at 256²: 2.9 GB in its first level alone) and
# keeps them fast under glibc's default malloc, which maps every large block afresh: at 64² one pass
# over 171 frames ran at 76 frames/s, split at 116 (BENCHMARKS.md, "Γ's inference batch"; with freed
# memory kept, as rovr's commands do, the two agree). Training passes are never split.
CPU_BATCH_PIXELS = 1 << 17


@dataclass
class LocalNetConfig:
    base_channels: int = field(
        default=32, metadata={"help": "channels of the first UNet level (doubled per level)"}
    )
    depth: int = field(default=3, metadata={"help": "number of down/up-sampling levels"})
    align: bool = field(
        default=True,
        metadata={"help": "shift each conditioning frame onto the target (global translation) before Γ"},
    )
    max_shift: float = field(
        default=0.125, metadata={"help": "largest alignment shift, as a fraction of the frame side"}
    )
    repair_known: bool = field(
        default=False,
        metadata={
            "help": "also correct the known pixels (the noise, brightness and blur of corruption.*) "
            "instead of keeping them exactly (the paper: holes only)"
        },
    )

    def __post_init__(self) -> None:
        from rovr.config import check

        check(
            4 <= self.base_channels <= 512,
            "local.base_channels",
            f"must be in [4, 512] (got {self.base_channels})",
        )
        check(1 <= self.depth <= 6, "local.depth", f"must be in [1, 6] (got {self.depth})")
        check(0 <= self.max_shift <= 0.5, "local.max_shift", f"must be in [0, 0.5] (got {self.max_shift})")


# ----------------------------------------------------------------------------- alignment

#: Penalty per squared pixel of shift added to the alignment cost, so ties (flat images, static
#: cameras) resolve to no shift; far below the cost change of any real misalignment.
SHIFT_PENALTY = 1e-5
#: A shift is taken only if it lowers the cost of no shift by this fraction: on content that does
#: not pin the motion down (noise, flat regions) the frame stays put instead of following float noise.
MIN_GAIN = 0.25


def _fft_len(n: int) -> int:
    """The smallest 5-smooth length >= n (2^a 3^b 5^c: pocketfft's fastest sizes)."""
    while True:
        m = n
        for p in (2, 3, 5):
            while m % p == 0:
                m //= p
        if m == 1:
            return n
        n += 1


@torch.no_grad()
def estimate_shifts(
    target: torch.Tensor,
    target_mask: torch.Tensor,
    cond: torch.Tensor,
    cond_masks: torch.Tensor,
    max_shift: int,
    min_overlap: float = 0.25,
) -> torch.Tensor:
    """Integer translation aligning each conditioning frame to the target, by masked least squares.

    For target x (holes m) and frame c (holes n), with visibility weights w = 1 − m, v = 1 − n and
    grey levels, the shift s = (dy, dx) minimises the mean squared difference over the pixels seen
    in both::

        E(s) = Σ_p w(p) v(p+s) (x(p) − c(p+s))² / Σ_p w(p) v(p+s)  +  SHIFT_PENALTY · |s|²

    over |dy|, |dx| ≤ ``max_shift`` with an overlap of at least ``min_overlap`` of the frame, and
    keeps s = 0 unless E(s) < (1 − MIN_GAIN) E(0). The numerator expands into three
    cross-correlations ``(a ⋆ b)[s] = Σ_p a(p) b(p + s)`` — w x² ⋆ v + w ⋆ v c² − 2 w x ⋆ v c — and
    the denominator is w ⋆ v. All four come from FFTs zero-padded to ``H + max_shift`` (no
    wrap-around within the shifts searched): the target's three maps transformed once for all its
    frames, each frame's three once, the numerator summed in the frequency domain, so two inverse
    transforms per frame. O(HW log HW) per frame instead of O(HW · shifts). Returns (B, k, 2) long
    (dy, dx): the aligned frame is ``c[y + dy, x + dx]``.
    """
    B, k, _, H, W = cond.shape
    r = max(0, min(max_shift, H - 1, W - 1))
    size = (_fft_len(H + r), _fft_len(W + r))
    x = target.float().mean(dim=1)  # (B, H, W) grey
    w = 1.0 - target_mask.float().reshape(B, H, W)
    c = cond.float().mean(dim=2)  # (B, k, H, W)
    v = 1.0 - cond_masks.float().reshape(B, k, H, W)
    wx = w * x
    ft = torch.fft.rfft2(torch.stack([wx * x, w, wx], dim=1), s=size).conj()[:, None]  # (B, 1, 3, ·, ·)
    fc = torch.fft.rfft2(torch.stack([v, v * c * c, v * c], dim=2), s=size)  # (B, k, 3, ·, ·)
    num_f = ft[:, :, 0] * fc[:, :, 0] + ft[:, :, 1] * fc[:, :, 1] - 2.0 * ft[:, :, 2] * fc[:, :, 2]
    num, den = torch.fft.irfft2(torch.stack([num_f, ft[:, :, 1] * fc[:, :, 0]]), s=size).flatten(1, 2)
    d = torch.arange(-r, r + 1, device=cond.device)
    iy, ix = d % size[0], d % size[1]  # shift s sits at index s mod size
    num = num[:, iy][:, :, ix]  # (B·k, 2r+1, 2r+1): rows dy, cols dx
    den = den[:, iy][:, :, ix]
    cost = num / den.clamp(min=1.0) + SHIFT_PENALTY * (d[:, None] ** 2 + d[None, :] ** 2).to(num.dtype)
    cost = cost.masked_fill(den < min_overlap * H * W, math.inf)
    flat = cost.flatten(1)
    best = flat.argmin(dim=1)  # all-inf rows (no overlap anywhere) pick index 0 below
    dy, dx = d[best // (2 * r + 1)], d[best % (2 * r + 1)]
    lowest, at_zero = flat.min(dim=1).values, cost[:, r, r]
    ok = torch.isfinite(lowest) & (lowest < (1.0 - MIN_GAIN) * at_zero)
    shifts = torch.stack([dy, dx], dim=1) * ok[:, None]
    return shifts.view(B, k, 2)


def shift_frames(
    frames: torch.Tensor, masks: torch.Tensor, shifts: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``out[y, x] = frames[y + dy, x + dx]``; pixels from outside the frame become holes.

    frames (N, C, H, W), masks (N, 1, H, W) (1 = hole), shifts (N, 2) long -> (frames, masks).
    """
    N, C, H, W = frames.shape
    ys = torch.arange(H, device=frames.device)[None, :] + shifts[:, :1]  # (N, H)
    xs = torch.arange(W, device=frames.device)[None, :] + shifts[:, 1:]  # (N, W)
    inside = ((ys >= 0) & (ys < H))[:, :, None] & ((xs >= 0) & (xs < W))[:, None, :]  # (N, H, W)
    lin = (ys.clamp(0, H - 1)[:, :, None] * W + xs.clamp(0, W - 1)[:, None, :]).flatten(1)  # (N, HW)
    out = frames.flatten(2).gather(2, lin[:, None, :].expand(N, C, H * W)).view(N, C, H, W)
    m = masks.to(frames.dtype).flatten(2).gather(2, lin[:, None, :]).view(N, 1, H, W)
    m = torch.where(inside[:, None], m, torch.ones_like(m))
    return out * (1 - m), m


def align(
    target: torch.Tensor,
    target_mask: torch.Tensor,
    cond: torch.Tensor,
    cond_masks: torch.Tensor,
    max_shift: int,
    shifts: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Conditioning frames (B, k, 3, H, W) and holes (B, k, 1, H, W) shifted onto the target.

    ``shifts`` (B, k, 2), when given, are used instead of estimating them (callers that rebuild one
    target from many frame sets estimate each frame's shift once).
    """
    B, k, C, H, W = cond.shape
    if shifts is None:
        shifts = estimate_shifts(target, target_mask, cond, cond_masks, max_shift)
    s = shifts.reshape(B * k, 2)
    if not bool(s.any()):
        return cond, cond_masks.to(cond.dtype)
    f, m = shift_frames(cond.reshape(B * k, C, H, W), cond_masks.reshape(B * k, 1, H, W), s)
    return f.view(B, k, C, H, W), m.view(B, k, 1, H, W)


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

    With ``repair_known`` (beyond the paper, whose §8 leaves noise, brightness and blur to future
    work) a second 1×1 head, initialised at zero, predicts a residual ``r_k`` for the known pixels
    too: ``x̂ = clamp(x̄ + r_k, 0, 1) ⊙ (1 − m) + pred ⊙ m``, so the conditioning frames can help
    denoise, relight and sharpen the target; untrained it still returns x̄ there. Without it the
    known pixels are kept exactly, as the paper's Γ does.

    With ``align`` (default), each conditioning frame is first shifted onto the target by the
    integer translation that best matches the pixels both show (:func:`estimate_shifts`), so a
    distant frame of a panning camera contributes pixels in the right place; pixels shifted in from
    outside the frame count as holes. Alignment has no parameters and no gradient.
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
        self.head_known: nn.Conv2d | None = None
        if cfg.repair_known:
            self.head_known = nn.Conv2d(widths[0], 3, 1)
            nn.init.zeros_(self.head_known.weight)  # x̂ = x̄ on the known pixels until trained
            if self.head_known.bias is not None:
                nn.init.zeros_(self.head_known.bias)
        # NHWC weights: oneDNN's convolutions run 1.2-1.4x faster on the CPU at 64x64 (training and
        # inference, same results to 1e-7; BENCHMARKS.md); .to(device) keeps the format
        self.to(memory_format=torch.channels_last)

    @property
    def aligns(self) -> bool:
        return self.cfg.align and self.cfg.max_shift > 0

    def _max_shift(self, H: int, W: int) -> int:
        return round(self.cfg.max_shift * min(H, W))

    def shifts(
        self, target: torch.Tensor, target_mask: torch.Tensor, frames: torch.Tensor, frame_masks: torch.Tensor
    ) -> torch.Tensor | None:
        """Alignment shifts (B, n, 2) of ``frames`` (B, n, 3, H, W) onto ``target``; None without alignment."""
        if not self.aligns:
            return None
        H, W = target.shape[-2:]
        return estimate_shifts(target, target_mask, frames, frame_masks, self._max_shift(H, W))

    def forward(
        self,
        target: torch.Tensor,
        target_mask: torch.Tensor,
        cond: torch.Tensor,
        cond_masks: torch.Tensor,
        shifts: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Reconstruct the target frame.

        Args:
            target: (B, 3, H, W) float in [0, 1], the corrupted frame x̄_t.
            target_mask: (B, 1, H, W) float or bool, 1 = hole of x̄_t.
            cond: (B, k, 3, H, W) float in [0, 1], the conditioning frames c_1 … c_k.
            cond_masks: (B, k, 1, H, W) float or bool, 1 = hole of each conditioning frame.
            shifts: optional (B, k, 2) alignment shifts from :meth:`shifts` (estimated when omitted).

        Returns:
            (B, 3, H, W) in [0, 1]: x̂_t = x̄_t ⊙ (1 − m) + Γ_pred ⊙ m, known pixels kept exactly
            (corrected by the second head with ``repair_known``).
        """
        B, _, H, W = target.shape
        if cond.shape != (B, self.k, 3, H, W) or cond_masks.shape != (B, self.k, 1, H, W):
            raise ValueError(
                f"LocalNet(k={self.k}) expects cond (B, {self.k}, 3, H, W) and cond_masks (B, {self.k}, 1, H, W) "
                f"for target {tuple(target.shape)}; got {tuple(cond.shape)} and {tuple(cond_masks.shape)}"
            )
        n = max(1, CPU_BATCH_PIXELS // (H * W))
        if B > n and target.device.type == "cpu" and not torch.is_grad_enabled():
            return torch.cat(
                [
                    self.forward(
                        target[s : s + n],
                        target_mask[s : s + n],
                        cond[s : s + n],
                        cond_masks[s : s + n],
                        None if shifts is None else shifts[s : s + n],
                    )
                    for s in range(0, B, n)
                ]
            )
        if self.aligns:
            cond, cond_masks = align(target, target_mask, cond, cond_masks, self._max_shift(H, W), shifts)
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
        known = target * (1 - m)
        if self.head_known is not None:  # the known pixels corrected too (repair_known)
            known = (target + self.head_known(h)[..., :H, :W]).clamp(0, 1) * (1 - m)
        return known + pred * m

"""Full-resolution hole fill for `rovr restore`: other frames' own pixels, aligned locally.

Γ runs at the training resolution (short side ``data.size``, 64 in the demo), so on a 640x360
video its fill, upsampled, is a blur. The frames the policy chose to condition on usually show
most of the hole at full resolution, displaced by camera and object motion (restore offers them,
the nearest other frames and, where those leave pixels, frames up to ``--copy-reach`` away). :func:`copy_fill` moves their pixels in: for each
connected region ``C`` of the target's holes, grown by ``margin`` pixels, and each offered frame
``j``, it finds the integer translation

    d_j = argmin_{|d|∞ ≤ S}  E_j(d),   E_j(d) = Σ_{p∈C} w(p)² (Y(R_j)(p + d) − Y(G)(p))² / Σ_{p∈C} w(p)²

where ``G`` is the target with Γ's upsampled fill in its holes, ``R_j`` frame j with Γ's fill in
its own holes, ``Y`` the luma (0.299 R + 0.587 G + 0.114 B; a third of the work of matching the
three colours, hole PSNR within 0.1 dB of it on the real clips, BENCHMARKS.md) and ``w = 1`` on
the ring of known pixels around the hole, ``1/2`` inside it (where ``G`` is only Γ's blurred
estimate; the square is OpenCV's masked ``TM_SQDIFF``). Each hole pixel ``p`` of C then takes
``R_j(p + d_j)``: the mean over the frames that show it among the best usable one and those whose
``E_j`` is within a factor ``1 +`` :data:`BLEND` of its (independent noise and compression
artefacts average out), else from the frame with the lowest ``E_j`` that shows it (frame j's own
holes, grown by :data:`GUARD` pixels, and pixels outside it do not count; frames offered in
groups, ``tiers``, are ranked within a group, and a later group only gives what the earlier ones
did not show: restore offers the chosen and nearest frames first, farther ones after),
and what no offered frame shows is in-painted from the pixels around it at full resolution
(OpenCV's fast marching, Telea 2004: on the real clips better than Γ's upsampled fill, which
``unseen="gamma"`` keeps); a region with no known pixel around it (a frame that is all hole) cannot
be aligned, so each of its pixels comes unmoved from the first offered frame that shows it (Γ's
fill where none does). A frame that, so placed, still differs from the
target on the known ring by a mean squared error over :data:`MAX_ERROR` (it does not match around
this hole: occlusion, deformation, another object) gives nothing there; the test reads only known
pixels, so it does not depend on how good Γ's fill is. Regions move independently, so two objects moving
differently each get their own translation.

The placement of a frame that gives pixels is then refined below the pixel (:data:`SUBPIXEL`): with
E₋, E₀, E₊ the luma's squared error on the known ring (where that frame shows it too) at the
optimum and one pixel either side along an axis, the vertex of the parabola through them,
``δ = (E₋ − E₊) / (2 (E₋ − 2E₀ + E₊))`` clipped to ±½, is added to the offset (unless both are
below :data:`SUBPIXEL_MIN`), and the frame is sampled bilinearly there (``cv2.warpAffine``).
Moving content rarely moves by whole pixels: on the real clips this adds 0.03–0.91 dB of hole
PSNR and lowers the flicker on three of four (BENCHMARKS.md).

The search runs coarse to fine: at ``1/f`` of the resolution with ``f = ceil(S / COARSE)`` over
``±COARSE`` positions, then at full resolution over ``±f`` around the coarse optimum. This is a
beyond-the-paper step (§5.1 reconstructs at one resolution); ``rovr restore --fill gamma`` keeps
the paper's upsampled Γ output.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

#: Largest search radius (pixels) run at one level; larger ones start on a downscaled copy.
COARSE = 12
#: An offered frame's own holes are grown by this many pixels before its pixels are copied.
GUARD = 2
#: Weight (before OpenCV squares it) of the target's hole pixels, against 1 on the known ring.
HOLE_WEIGHT = 0.5
#: Largest mean squared error on the known ring (8-bit levels squared: an RMS of ~45) at which a
#: frame's pixels are copied. Chosen on the four real clips (BENCHMARKS.md, "Restoring at full
#: resolution"): with restore's default frames no limit moves hole PSNR by at most 0.15 dB and 1000
#: costs three clips 0.05-0.43 dB; copying from the chosen frames only with no limit falls 0.26 dB
#: below Γ on one clip.
MAX_ERROR = 2000.0
#: Frames whose match error E is within 1 + BLEND of the best usable frame's are averaged where they
#: show the same hole pixels (less noise and flicker). Chosen on the four real clips of
#: BENCHMARKS.md ("Restoring at full resolution"): 0.3 raised hole PSNR and SSIM on all four; 1.0
#: blurred the rectangles (lower SSIM) and cost a quarter more time.
BLEND = 0.3
#: Refine each used placement below the pixel (parabola through the SSD at ±1 px) and sample bilinearly.
SUBPIXEL = True
#: A refinement smaller than this (pixels, on both axes) is dropped: whole-pixel motion is copied
#: exactly, without the slight blur of resampling (the SSD is not quite symmetric about its minimum).
SUBPIXEL_MIN = 0.1
#: ``unseen`` choices of :func:`copy_fill`.
UNSEEN = ("telea", "gamma")
#: Neighbourhood (pixels) of the in-painting of what no frame shows. BENCHMARKS.md ("Restoring at
#: full resolution"): radius 3, 5 and 9 are within 0.25 dB of one another, all above Γ's fill.
UNSEEN_RADIUS = 5


def default_search(height: int, width: int) -> int:
    """Search radius S for a frame size: 5 % of the longer side, at least 8 pixels."""
    return max(8, round(0.05 * max(height, width)))


@dataclass
class FillStats:
    """What :func:`copy_fill` did to one frame."""

    hole: int = 0  # hole pixels
    copied: int = 0  # of them taken from an offered frame
    inpainted: int = 0  # of the rest, filled from around them (``unseen="telea"``); the others keep Γ's fill
    unaligned: int = 0  # of ``copied``, taken unmoved: their region had no known pixel to align on


def _best_offset(image: np.ndarray, template: np.ndarray, weight: np.ndarray) -> tuple[int, int, float]:
    """argmin over placements of the weighted SSD; (dy, dx) from the top-left of ``image``, and E.

    ``image`` and ``template`` are (h, w) or (h, w, C) float32; E is per channel."""
    channels = 1 if template.ndim == 2 else template.shape[2]
    mask = weight if channels == 1 else np.repeat(weight[..., None], channels, axis=2)
    res = cv2.matchTemplate(image, template, cv2.TM_SQDIFF, mask=mask)
    res = np.where(np.isfinite(res), res, np.inf)
    dy, dx = np.unravel_index(int(np.argmin(res)), res.shape)
    return int(dy), int(dx), float(res[dy, dx]) / (channels * float((weight**2).sum()))


def luma(image: np.ndarray) -> np.ndarray:
    """(h, w, 3) RGB, any dtype -> (h, w) float32 luma (ITU-R BT.601 weights, as OpenCV's RGB2GRAY)."""
    return cv2.cvtColor(image.astype(np.float32, copy=False), cv2.COLOR_RGB2GRAY)


def _reflect(index: np.ndarray, size: int) -> np.ndarray:
    """Indices outside 0..size-1 mirrored as OpenCV's ``BORDER_REFLECT`` does (fedcba|abcdef|fedcba)."""
    i = np.mod(index, 2 * size)
    return np.where(i >= size, 2 * size - 1 - i, i)


def _view(img: np.ndarray, y: int, x: int, h: int, w: int) -> np.ndarray:
    """``img[y : y + h, x : x + w]``, the parts outside the frame mirrored (``BORDER_REFLECT``): the
    same pixels as padding the whole frame and cropping, without the whole padded copy."""
    H, W = img.shape[:2]
    if 0 <= y and y + h <= H and 0 <= x and x + w <= W:
        return img[y : y + h, x : x + w]
    top, bottom, left, right = max(0, -y), max(0, y + h - H), max(0, -x), max(0, x + w - W)
    inner = img[max(0, y) : max(0, min(H, y + h)), max(0, x) : max(0, min(W, x + w))]
    ih, iw = inner.shape[:2]
    if 0 < ih and 0 < iw and max(top, bottom) <= ih and max(left, right) <= iw:
        # each mirrored strip reads pixels of the part inside the frame: OpenCV pads it (fast)
        return cv2.copyMakeBorder(inner, top, bottom, left, right, cv2.BORDER_REFLECT)
    return img[np.ix_(_reflect(np.arange(y, y + h), H), _reflect(np.arange(x, x + w), W))]


def _shows(mask: np.ndarray, y: int, x: int, h: int, w: int) -> np.ndarray:
    """bool (h, w): where the frame with holes ``mask`` may give pixels at ``[y : y + h, x : x + w]``:
    inside the frame and not within :data:`GUARD` pixels of its holes."""
    H, W = mask.shape
    out = np.zeros((h, w), bool)
    iy0, iy1, ix0, ix1 = max(0, y), min(H, y + h), max(0, x), min(W, x + w)
    if iy0 >= iy1 or ix0 >= ix1:
        return out
    # dilate a crop GUARD pixels larger: inside it, the same as dilating the whole mask
    ya, xa = max(0, iy0 - GUARD), max(0, ix0 - GUARD)
    crop = mask[ya : min(H, iy1 + GUARD), xa : min(W, ix1 + GUARD)].astype(np.uint8)
    grown = cv2.dilate(crop, np.ones((2 * GUARD + 1, 2 * GUARD + 1), np.uint8))
    out[iy0 - y : iy1 - y, ix0 - x : ix1 - x] = grown[iy0 - ya : iy1 - ya, ix0 - xa : ix1 - xa] == 0
    return out


def _shrink(x: np.ndarray, f: int) -> np.ndarray:
    h, w = x.shape[:2]
    return cv2.resize(x, (max(1, w // f), max(1, h // f)), interpolation=cv2.INTER_AREA)


def match_region(
    ref: np.ndarray, template: np.ndarray, weight: np.ndarray, y0: int, x0: int, search: int
) -> tuple[int, int, float]:
    """Translation (dy, dx), |d|∞ ≤ search, placing ``template`` (h, w) or (h, w, C) float32 best in ``ref``.

    ``ref`` is the frame padded by ``search`` pixels on every side (float32) and the template sits
    at (y0, x0) of the unpadded frame; passing the crop ``ref[y0 : y0 + h + 2·search, x0 : x0 + w +
    2·search]`` with y0 = x0 = 0 gives the same answer. Returns the offset and its weighted mean
    squared error E.
    """
    h, w = template.shape[:2]
    f = max(1, math.ceil(search / COARSE))
    lo_y = lo_x = 0  # offsets into the padded frame: 0 .. 2·search, search = no shift
    hi_y = hi_x = 2 * search
    small_w = _shrink(weight, f) if f > 1 else weight
    if f > 1 and small_w.sum() > 0:
        window = ref[y0 : y0 + h + 2 * search, x0 : x0 + w + 2 * search]
        dy, dx, _ = _best_offset(_shrink(window, f), _shrink(template, f), small_w)
        cy, cx = min(2 * search, dy * f), min(2 * search, dx * f)
        lo_y, hi_y = max(0, cy - f), min(2 * search, cy + f)
        lo_x, hi_x = max(0, cx - f), min(2 * search, cx + f)
    image = ref[y0 + lo_y : y0 + hi_y + h, x0 + lo_x : x0 + hi_x + w]
    dy, dx, err = _best_offset(image, template, weight)
    return lo_y + dy - search, lo_x + dx - search, err


def parabola_vertex(e_minus: float, e_zero: float, e_plus: float) -> float:
    """Offset of the vertex of the parabola through (−1, E₋), (0, E₀), (1, E₊), clipped to ±½; 0 when
    E₀ is not a strict minimum of the three (no curvature to fit)."""
    den = e_minus - 2.0 * e_zero + e_plus
    if not (math.isfinite(den) and den > 1e-12):
        return 0.0
    return float(min(0.5, max(-0.5, 0.5 * (e_minus - e_plus) / den)))


def _placed(
    ref: np.ndarray, y: int, x: int, h: int, w: int, template_luma: np.ndarray, weight: np.ndarray
) -> np.ndarray:
    """``ref`` around (y, x) as float32 (h, w, 3), placed below the pixel where :data:`SUBPIXEL` (the
    parabola through the SSD of the luma at ±1 px over the pixels ``weight`` marks, sampled
    bilinearly), else as it is."""
    if not SUBPIXEL:
        return _view(ref, y, x, h, w).astype(np.float32)
    big = _view(ref, y - 1, x - 1, h + 2, w + 2).astype(np.float32)
    res = cv2.matchTemplate(luma(big), template_luma, cv2.TM_SQDIFF, mask=weight)  # (3, 3)
    if not np.isfinite(res).all():
        return big[1:-1, 1:-1]
    fy = parabola_vertex(float(res[0, 1]), float(res[1, 1]), float(res[2, 1]))
    fx = parabola_vertex(float(res[1, 0]), float(res[1, 1]), float(res[1, 2]))
    if max(abs(fy), abs(fx)) < SUBPIXEL_MIN:
        return big[1:-1, 1:-1]
    shift = np.array([[1.0, 0.0, 1.0 + fx], [0.0, 1.0, 1.0 + fy]], np.float32)  # out(p) = big(p + 1 + f)
    out: np.ndarray = cv2.warpAffine(big, shift, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)
    return out


def copy_fill(
    target: np.ndarray,
    mask: np.ndarray,
    refs: Sequence[np.ndarray],
    ref_masks: Sequence[np.ndarray],
    search: int | None = None,
    margin: int = 8,
    max_error: float | None = None,
    tiers: Sequence[int] | None = None,
    unseen: str = "telea",
) -> tuple[np.ndarray, FillStats]:
    """Replace the hole pixels of ``target`` by the offered frames' own, aligned per hole region.

    ``target`` (H, W, 3) uint8 already holds Γ's upsampled fill in its holes ``mask`` (H, W) bool;
    ``refs`` are the frames to copy from, likewise filled in their own holes ``ref_masks``. Returns a new
    frame (only hole pixels may differ from ``target``) and how many hole pixels were copied.
    ``max_error`` defaults to :data:`MAX_ERROR` as it is at the call. ``tiers``: sizes of consecutive
    groups of ``refs`` (default: one group of all); each group is ranked by ``E_j`` and used best
    first, and a later group is matched on a region only if the groups before it left some of its
    hole pixels, and gives only those. ``unseen``: what becomes of the hole pixels of a region that
    no offered frame shows: "telea" fills them from the pixels around them, known and copied, by
    OpenCV's fast-marching in-painting (Telea 2004, radius :data:`UNSEEN_RADIUS`); "gamma" keeps
    Γ's fill. A region with no known pixel around it takes each pixel unmoved from the first frame
    of ``refs`` that shows it (``stats.unaligned``), and keeps Γ's fill where none does.
    """
    H, W = mask.shape
    out = target.copy()
    stats = FillStats(hole=int(mask.sum()))
    if unseen not in UNSEEN:
        raise ValueError(f"unseen must be one of {', '.join(UNSEEN)} (got {unseen!r})")
    if not stats.hole:
        return out, stats
    tiers = [len(refs)] if tiers is None else list(tiers)
    if sum(tiers) != len(refs) or any(t < 0 for t in tiers):
        raise ValueError(f"tiers {tiers} do not split {len(refs)} frames")
    bounds = np.cumsum([0, *tiers])
    S = default_search(H, W) if search is None else search
    limit = MAX_ERROR if max_error is None else max_error
    grown = cv2.dilate(mask.astype(np.uint8), np.ones((2 * margin + 1, 2 * margin + 1), np.uint8))
    count, labels, boxes, _ = cv2.connectedComponentsWithStats(grown, connectivity=8)
    left = np.zeros((H, W), np.uint8)  # hole pixels of regions with a known ring that no frame showed
    for c in range(1, count):
        x0, y0, w, h = (int(v) for v in boxes[c, :4])
        region = labels[y0 : y0 + h, x0 : x0 + w] == c
        hole = mask[y0 : y0 + h, x0 : x0 + w] & region
        ring = region & ~hole
        if not hole.any():
            continue
        if not ring.any():
            # no known pixel around it (a frame that is all hole): no placement can be checked, so
            # each pixel comes unmoved from the first offered frame that shows it (chosen, then
            # nearest): sharper than Γ's low-resolution fill, and right for a still camera
            todo = hole.copy()
            patch = out[y0 : y0 + h, x0 : x0 + w]
            for j in range(len(refs)):
                if not todo.any():
                    break
                take = todo & _shows(ref_masks[j], y0, x0, h, w)
                patch[take] = refs[j][y0 : y0 + h, x0 : x0 + w][take]
                todo &= ~take
            stats.unaligned += int((hole & ~todo).sum())
            stats.copied += int((hole & ~todo).sum())
            continue
        weight = np.where(hole, HOLE_WEIGHT, 1.0).astype(np.float32) * region
        template = target[y0 : y0 + h, x0 : x0 + w].astype(np.float32)
        template_luma = luma(template)
        ring_weight = ring.astype(np.float32)  # the sub-pixel fit reads pixels known in both frames only
        todo = hole.copy()
        patch = out[y0 : y0 + h, x0 : x0 + w]
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            if not todo.any():
                break
            # frame j around the region, every candidate placement included (one at a time: at 4K
            # the frames offered for one target would not fit in memory as padded float copies)
            ranked = sorted(
                (
                    match_region(
                        luma(_view(refs[j], y0 - S, x0 - S, h + 2 * S, w + 2 * S)),
                        template_luma,
                        weight,
                        0,
                        0,
                        S,
                    )[::-1],
                    j,
                )
                for j in range(int(lo), int(hi))
            )  # ((E, dx, dy), j), best first
            # the first usable frame and any within 1 + BLEND of its error are averaged where they
            # show the hole; the rest fill, best first, only what those leave
            acc = np.zeros((h, w, 3), np.float32)
            cnt = np.zeros((h, w), np.float32)
            best: float | None = None
            for (err, dx, dy), j in ranked:
                near = best is None or err <= (1.0 + BLEND) * best
                if not near and not todo.any():
                    break
                shows = _shows(ref_masks[j], y0 + dy, x0 + dx, h, w)
                src = _placed(refs[j], y0 + dy, x0 + dx, h, w, template_luma, ring_weight * shows)
                if float(((src[ring] - template[ring]) ** 2).mean()) > limit:
                    continue
                if best is None:
                    best = err
                if near:
                    add = shows & (todo | (cnt > 0))
                    acc[add] += src[add]
                    cnt[add] += 1
                else:
                    take = todo & shows
                    patch[take] = np.clip(np.rint(src[take]), 0, 255).astype(np.uint8)
                todo &= ~shows
            blended = cnt > 0
            patch[blended] = np.clip(np.rint(acc[blended] / cnt[blended, None]), 0, 255).astype(np.uint8)
        stats.copied += int((hole & ~todo).sum())
        left[y0 : y0 + h, x0 : x0 + w][todo] = 1
    if unseen == "telea" and left.any():
        out[left > 0] = cv2.inpaint(out, left, UNSEEN_RADIUS, cv2.INPAINT_TELEA)[left > 0]
        stats.inpainted = int(left.sum())
    return out, stats

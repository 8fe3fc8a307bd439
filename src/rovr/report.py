"""Figures and the HTML report of an evaluation (paper Figs. 1, 3, 6; learning curves; videos).

Matplotlib draws on an Agg canvas only (no pyplot, no display); every file is written atomically
(PNG through :func:`rovr.video.io.write_png`, mp4 through :func:`rovr.video.io.write_video`, HTML
through :func:`rovr.checkpoint.atomic_write_text`).
"""

from __future__ import annotations

import base64
import html
import logging
import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import yaml
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from rovr.checkpoint import atomic_write_text
from rovr.conditioning import NEEDS_ORIGINAL
from rovr.data.corruption import Corrupted
from rovr.evaluate import (
    TABLE1_SCOPE,
    data_line,
    gap_note,
    local_notes,
    metric_note,
    table1_cells,
    table2_cells,
    table2_spread,
)
from rovr.reconstruct import to_uint8
from rovr.video.io import write_png, write_video

log = logging.getLogger(__name__)

GREEN = np.array([0, 200, 0], dtype=np.float32)
"""Overlay colour of hole pixels that a chosen frame shows (paper Fig. 6)."""
RED = np.array([230, 0, 0], dtype=np.float32)
"""Overlay colour of hole pixels that no chosen frame shows."""
HEAT_TARGET = (1.0, 0.85, 0.0)  # yellow: the target frame (paper Fig. 3)
HEAT_CHOSEN = (0.13, 0.65, 0.25)  # green: a chosen conditioning frame
HEAT_EMPTY = (0.94, 0.94, 0.94)


# ----------------------------------------------------------------------------- helpers


def _save(fig: Figure, path: str | Path) -> Path:
    """Render ``fig`` on an Agg canvas and write it as a PNG, atomically."""
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    rgba = np.asarray(canvas.buffer_rgba())  # (H, W, 4) uint8
    write_png(path, np.ascontiguousarray(rgba[..., :3]))
    return Path(path)


def as_uint8_video(frames: np.ndarray | torch.Tensor) -> np.ndarray:
    """uint8 (T, H, W, 3) from uint8 (T, H, W, 3) or a float tensor (T, 3, H, W) in [0, 1]."""
    if isinstance(frames, torch.Tensor):
        return to_uint8(frames)
    arr = np.asarray(frames)
    if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[-1] != 3:
        raise ValueError(
            f"expected uint8 (T, H, W, 3) or a float tensor (T, 3, H, W), got {arr.dtype} {arr.shape}"
        )
    return arr


def _image(ax: Any, image: np.ndarray, title: str) -> None:
    ax.imshow(image, interpolation="nearest")
    ax.set_title(title, fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])


# ----------------------------------------------------------------------------- Fig. 1


def fig1_masked(corrupted: Corrupted, t: int | Sequence[int], path: str | Path) -> Path:
    """Paper Fig. 1: masked target frame(s) ``t`` beside the oracle's best pair (i, j) and its coverage."""
    targets = [t] if isinstance(t, int) else list(t)
    fig = Figure(figsize=(6.0, 2.1 * len(targets)), dpi=100)
    axes = fig.subplots(len(targets), 3, squeeze=False)
    for row, target in enumerate(targets):
        i, j = corrupted.oracle.best_pair(target)
        cov = corrupted.oracle.coverage[target, i, j]
        hole = corrupted.masks[target].mean()
        _image(axes[row, 0], corrupted.frames[target], f"target {target} ({hole:.0%} hole)")
        _image(axes[row, 1], corrupted.frames[i], f"best pair: frame {i}")
        _image(axes[row, 2], corrupted.frames[j], f"frame {j} (coverage {cov:.0%})")
    fig.tight_layout()
    return _save(fig, path)


# ----------------------------------------------------------------------------- Fig. 3


def heatmap_image(choices: np.ndarray, num_frames: int | None = None) -> np.ndarray:
    """RGB (T, T, 3) float image of one policy's choices (T, k): row t = target t, yellow at (t, t),
    green at the chosen frames, light grey elsewhere (paper Fig. 3)."""
    choices = np.asarray(choices)
    n = choices.shape[0] if num_frames is None else num_frames
    img = np.empty((choices.shape[0], n, 3), dtype=np.float32)
    img[:] = HEAT_EMPTY
    for t, chosen in enumerate(choices):
        img[t, chosen] = HEAT_CHOSEN
        img[t, t] = HEAT_TARGET
    return img


def fig3_heatmaps(choices: Mapping[str, np.ndarray], path: str | Path) -> Path:
    """Paper Fig. 3: one T×T panel per policy (rows = timestep/target, columns = frames).

    ``choices`` maps a policy name to its chosen frames (T, k) for one clip.
    """
    if not choices:
        raise ValueError("fig3_heatmaps needs at least one policy")
    n = len(choices)
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(3.2 * cols, 3.3 * rows), dpi=100)
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax, (name, chosen) in zip(axes.flat, choices.items()):
        img = heatmap_image(chosen)
        t_ = img.shape[0]
        ax.imshow(img, interpolation="nearest")
        ax.set_title(name, fontsize=9)
        step = 1 if t_ <= 10 else 5
        ax.set_xticks(range(0, t_, step))
        ax.set_yticks(range(0, t_, step))
        ax.tick_params(labelsize=7, length=0)
        ax.set_xticks(np.arange(-0.5, t_, 1), minor=True)
        ax.set_yticks(np.arange(-0.5, t_, 1), minor=True)
        ax.grid(which="minor", color="white", linewidth=0.8)
        ax.set_xlabel("conditioning frame", fontsize=8)
        ax.set_ylabel("timestep (target)", fontsize=8)
    for ax in list(axes.flat)[n:]:
        ax.set_axis_off()
    fig.tight_layout()
    return _save(fig, path)


# ----------------------------------------------------------------------------- Fig. 6


def coverage_overlay(
    frame: np.ndarray, target_mask: np.ndarray, chosen_masks: np.ndarray, alpha: float = 0.5
) -> np.ndarray:
    """Paper Fig. 6 overlay on a corrupted target frame uint8 (H, W, 3).

    Hole pixels of the target (``target_mask`` bool (H, W)) seen by at least one chosen frame
    (``chosen_masks`` bool (k, H, W), True = hole) are tinted green, those hidden in every chosen frame
    red, with opacity ``alpha``; other pixels are unchanged.
    """
    hidden_everywhere = np.asarray(chosen_masks, dtype=bool).all(axis=0)
    out = frame.astype(np.float32)
    for where, colour in ((target_mask & ~hidden_everywhere, GREEN), (target_mask & hidden_everywhere, RED)):
        out[where] = (1 - alpha) * out[where] + alpha * colour
    return (out + 0.5).astype(np.uint8)


def chosen_views(
    corrupted: Corrupted, video: np.ndarray, chosen: Sequence[int], t: int, condition_on: str
) -> tuple[np.ndarray, np.ndarray, list[bool]]:
    """What Γ was given of the frames ``chosen`` for target ``t`` (targets repaired in order 0..T−1):
    frames uint8 (k, H, W, 3), holes bool (k, H, W), and whether each was a repair. With
    ``condition_on="current"`` a frame before t is its repair in ``video`` with no hole; otherwise
    every frame is its observed pixels with its holes."""
    repaired = [condition_on == "current" and i < t for i in chosen]
    frames = np.stack([video[i] if r else corrupted.frames[i] for i, r in zip(chosen, repaired)])
    holes = np.stack(
        [np.zeros_like(corrupted.masks[i]) if r else corrupted.masks[i] for i, r in zip(chosen, repaired)]
    )
    return frames, holes, repaired


def fig6_grid(
    corrupted: Corrupted,
    choices: np.ndarray,
    reconstruction: np.ndarray | torch.Tensor,
    targets: Sequence[int],
    path: str | Path,
    alpha: float = 0.5,
    condition_on: str = "current",
) -> Path:
    """Paper Fig. 6: per target, corrupted target (overlay) | chosen frames | reconstruction | original.

    ``choices`` (T, k) chosen frames, ``reconstruction`` uint8 (T, H, W, 3) or float (T, 3, H, W).
    Green: hole pixels visible in at least one chosen frame as Γ got it (:func:`chosen_views`: a
    frame repaired at an earlier step shows them all); red: hidden in all of them.
    """
    video = as_uint8_video(reconstruction)
    k = np.asarray(choices).shape[1]
    fig = Figure(figsize=(1.6 * (k + 3), 1.75 * len(targets)), dpi=100)
    axes = fig.subplots(len(targets), k + 3, squeeze=False)
    for row, t in enumerate(targets):
        chosen = [int(i) for i in choices[t]]
        frames, holes, repaired = chosen_views(corrupted, video, chosen, t, condition_on)
        over = coverage_overlay(corrupted.frames[t], corrupted.masks[t], holes, alpha)
        _image(axes[row, 0], over, f"target {t}")
        for col, (i, frame, rep) in enumerate(zip(chosen, frames, repaired), start=1):
            _image(axes[row, col], frame, f"frame {i}" + (" (repaired)" if rep else ""))
        _image(axes[row, k + 1], video[t], "reconstruction")
        _image(axes[row, k + 2], corrupted.original[t], "original")
    fig.tight_layout()
    return _save(fig, path)


# ----------------------------------------------------------------------------- learning curves

#: Table 2 rows that look at the oracle's coverage or at the original video.
PEEKING = NEEDS_ORIGINAL | {"oracle_best", "oracle_worst"}

_LOCAL_STAGES = ("local", "pretrain")


def _is_local(stage: str) -> bool:
    return stage.startswith(_LOCAL_STAGES)


#: Panels of the learning curves: per PPG iteration (return, L_P, flow recovery), per step of Γ and of
#: imitation. The one-off held-out evaluations (``heldout/…``) are not curves.
_CURVES: tuple[tuple[str, Callable[[str, str], bool]], ...] = (
    ("return", lambda stage, key: stage == "ppg" and "return" in key),
    ("perceptual loss L_P", lambda stage, key: stage == "ppg" and "perceptual" in key),
    ("flow recovery O (Eq. 3)", lambda stage, key: stage == "ppg" and "flow" in key),
    ("local net Γ loss", lambda stage, key: _is_local(stage) and ("loss" in key or "perceptual" in key)),
    ("imitation loss", lambda stage, key: stage.startswith("imitation") and "loss" in key),
)


def curve_series(
    records: Sequence[Mapping[str, Any]],
) -> dict[str, dict[str, tuple[list[float], list[float]]]]:
    """Panel title → {label → (steps, values)} from metric-log records (``stage``, ``step``, scalars).

    A label is ``"stage: key"``, or ``"policy: key"`` for a PPG policy's rows; when the step of a series
    goes back (logs written before rows named their policy: the PPG ablations one after another), a
    new series ``"stage: key [2]"`` starts.
    """
    panels: dict[str, dict[str, tuple[list[float], list[float]]]] = {title: {} for title, _ in _CURVES}
    current: dict[tuple[str, str], str] = {}  # (panel, "stage: key") → label of its running segment
    for rec in records:
        stage, step = str(rec.get("stage", "")), rec.get("step")
        if not isinstance(step, (int, float)):
            continue
        for key, value in rec.items():
            if (
                key in ("stage", "policy", "step", "time")
                or key.startswith("heldout/")
                or not isinstance(value, (int, float))
                or isinstance(value, bool)
            ):
                continue
            for title, match in _CURVES:
                if not match(stage, key):
                    continue
                base = f"{rec.get('policy') or stage}: {key}"
                label = current.get((title, base), base)
                series = panels[title].get(label)
                if series is not None and step <= series[0][-1]:
                    label = f"{base} [{sum(lb == base or lb.startswith(base + ' [') for lb in panels[title]) + 1}]"
                    series = None
                if series is None:
                    series = panels[title][label] = ([], [])
                    current[(title, base)] = label
                series[0].append(float(step))
                series[1].append(float(value))
    return {title: series for title, series in panels.items() if series}


def learning_curves(records: Sequence[Mapping[str, Any]], path: str | Path) -> Path | None:
    """Return, perceptual loss and flow recovery per iteration, plus local-net and imitation losses when
    logged (records of :func:`rovr.train.common.read_metric_log`). None (nothing written) without data."""
    panels = curve_series(records)
    if not panels:
        log.info("no training metrics to plot; learning curves skipped")
        return None
    cols = min(len(panels), 3)
    rows = math.ceil(len(panels) / cols)
    fig = Figure(figsize=(4.4 * cols, 3.2 * rows), dpi=100)
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax, (title, series) in zip(axes.flat, panels.items()):
        for label, (xs, ys) in series.items():
            ax.plot(xs, ys, label=label, linewidth=1.2, marker="o" if len(xs) == 1 else None, markersize=3)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("iteration / step", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    for ax in list(axes.flat)[len(panels) :]:
        ax.set_axis_off()
    fig.tight_layout()
    return _save(fig, path)


# ----------------------------------------------------------------------------- video


def _label_strip(label: str, width: int, height: int = 18) -> np.ndarray:
    strip = np.full((height, width, 3), 40, dtype=np.uint8)
    cv2.putText(strip, label, (4, height - 5), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
    return strip


def side_by_side_frames(
    panels: Sequence[tuple[str, np.ndarray]], scale: int | None = None, gap: int = 2
) -> np.ndarray:
    """Labelled panels uint8 (T, H, W, 3) side by side, upscaled ×``scale`` (nearest; default: to ~192 px).

    Returns uint8 (T, 18 + s·H, n·s·W + (n−1)·gap, 3).
    """
    t_, h, w, _ = panels[0][1].shape
    s = scale or max(1, 192 // max(h, w))
    cols = []
    for n, (label, video) in enumerate(panels):
        if video.shape != (t_, h, w, 3):
            raise ValueError(f"panel '{label}' has shape {video.shape}, expected {(t_, h, w, 3)}")
        big = video.repeat(s, axis=1).repeat(s, axis=2)  # (T, sH, sW, 3)
        strip = np.broadcast_to(_label_strip(label, s * w), (t_, 18, s * w, 3))
        cols.append(np.concatenate([strip, big], axis=1))
        if n < len(panels) - 1:
            cols.append(np.full((t_, 18 + s * h, gap, 3), 255, dtype=np.uint8))
    return np.ascontiguousarray(np.concatenate(cols, axis=2))


def side_by_side_video(
    corrupted: Corrupted,
    reconstructions: Mapping[str, np.ndarray | torch.Tensor],
    original: np.ndarray,
    path: str | Path,
    fps: float = 4.0,
    scale: int | None = None,
) -> Path:
    """Before/after mp4: corrupted | each reconstruction (by name) | original, labelled, small frames upscaled."""
    panels = [("corrupted", corrupted.frames)]
    panels += [(name, as_uint8_video(v)) for name, v in reconstructions.items()]
    panels.append(("original", np.asarray(original)))
    write_video(path, side_by_side_frames(panels, scale), fps)
    return Path(path)


# ----------------------------------------------------------------------------- HTML

_CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; max-width: 1100px; margin: 2em auto;
       padding: 0 1em; color: #222; line-height: 1.45; }
h1 { border-bottom: 2px solid #444; padding-bottom: .2em; }
h2 { margin-top: 2em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: .8em 0; font-size: 14px; }
th, td { border: 1px solid #ccc; padding: 4px 10px; text-align: right; }
th { background: #f0f0f0; } td:first-child, th:first-child { text-align: left; }
img, video { max-width: 100%; border: 1px solid #ddd; }
pre { background: #f6f6f6; padding: 1em; overflow-x: auto; font-size: 12px; }
.note { color: #555; font-size: 14px; }
"""


def _table_html(header: list[str], cells: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in cells)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _img_html(path: Path, alt: str) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f'<p><img src="data:image/png;base64,{data}" alt="{html.escape(alt)}"></p>'


def _summary_html(report: Mapping[str, Any]) -> str:
    policies = report.get("policies") or {}
    items = [data_line(report)] if data_line(report) else []
    names = [r["policy"] for r in report["table2"]]
    items.append(f"Policies evaluated: {', '.join(names) or 'none'}.")
    if policies.get("missing"):
        items.append(f"Not in this run (not evaluated): {', '.join(policies['missing'])}.")
    for name, why in (policies.get("unusable") or {}).items():
        items.append(f"Skipped {name}: {why}")
    items += [line.replace("`", "") for line in local_notes(report)]
    fair = [r for r in report["table2"] if r["policy"] not in PEEKING]
    fair = [r for r in fair if r.get("perceptual_loss") is not None]
    if fair:
        best = min(fair, key=lambda r: r["perceptual_loss"])
        gap = best.get("gap_closed")
        gap_txt = f", closing {gap:.0%} of the random → brute-force gap" if gap is not None else ""
        items.append(
            f"Lowest L_P among policies that use neither the oracle nor the original: {best['policy']} "
            f"({best['perceptual_loss']:.4f}{gap_txt})."
        )
    return "<ul>" + "".join(f"<li>{html.escape(i)}</li>" for i in items) + "</ul>"


def write_html(
    out_dir: str | Path,
    report: Mapping[str, Any],
    figures: Mapping[str, str | Path],
    videos: Mapping[str, str | Path],
    config: Mapping[str, Any],
) -> Path:
    """Write ``out_dir/report.html``: one self-contained page (images embedded as base64 PNG, videos
    linked relatively in ``<video>`` tags, no external CSS/JS).

    ``figures`` keys: ``fig1``, ``fig3``, ``fig6_<policy>``, ``learning_curves`` (any subset).
    Sections: summary, metric backends, Table 1 (+ classical peers), Table 2, Fig. 3, Fig. 6, Fig. 1,
    learning curves, before/after videos, timing, exact config (YAML).
    """
    out = Path(out_dir)
    metric = report["metric"]
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>ROVR evaluation</title>",
        f"<style>{_CSS}</style></head><body><h1>ROVR evaluation</h1>",
        "<h2>Summary</h2>",
        _summary_html(report),
        "<h2>Metric backends</h2>",
        _table_html(
            ["metric", "backend"],
            [["perceptual L_P", metric["perceptual"]], ["optical flow", metric["flow"]]],
        ),
        f"<p class='note'>{html.escape(metric_note(metric['perceptual']))}</p>",
        "<h2>Table 1 — Γ under different conditioning frames</h2>",
        f"<p class='note'>{html.escape(TABLE1_SCOPE)}</p>",
        _table_html(*table1_cells(report["table1"])),
    ]
    if report.get("table1_peers"):
        parts += [
            "<p>Classical peers (no Γ, nothing learned):</p>",
            _table_html(*table1_cells(report["table1_peers"])),
        ]
    parts += [
        "<h2>Table 2 — conditioning policies</h2>",
        f"<p class='note'>Mean ± std over {html.escape(table2_spread(report))}. PSNR/SSIM over hole pixels "
        "only. Gap closed = (L_random − L_policy) / (L_random − L_brute_force), per seed, then averaged. "
        "Coverage: oracle fraction of the target's hole pixels visible in the chosen frames; valid rate: "
        f"fraction of targets with coverage 1. {html.escape(gap_note(report))}</p>",
        _table_html(*table2_cells(report["table2"])),
    ]
    sections: list[tuple[str, Callable[[str], bool], str]] = [
        (
            "Fig. 3 — chosen conditioning frames",
            lambda key: key == "fig3",
            "Yellow: the target frame of each timestep; green: the frames chosen to condition on (the first clip evaluated).",
        ),
        (
            "Fig. 6 — sample reconstructions",
            lambda key: key.startswith("fig6"),
            "Green: hole pixels visible in at least one chosen frame as Γ got it (a frame repaired at an "
            "earlier step, shown as its repair, shows them all); red: hidden in all of them.",
        ),
        ("Fig. 1 — masked targets and their oracle best pair", lambda key: key == "fig1", ""),
        ("Learning curves", lambda key: key == "learning_curves", ""),
    ]
    if report.get("seed_reports"):
        links = ", ".join(f"<a href='{html.escape(p)}'>{html.escape(p)}</a>" for p in report["seed_reports"])
        parts.append(f"<p>Each training seed's own report: {links}.</p>")
    if figures and report.get("figures_from"):
        parts.append(
            f"<p class='note'>The figures below are those of {html.escape(report['figures_from'])}.</p>"
        )
    for title, match, note in sections:
        keys = [key for key in figures if match(key)]
        if not keys:
            continue
        parts.append(f"<h2>{html.escape(title)}</h2>")
        if note:
            parts.append(f"<p class='note'>{html.escape(note)}</p>")
        for key in keys:
            label = key.removeprefix("fig6_") if key.startswith("fig6_") else ""
            if label:
                parts.append(f"<h3>{html.escape(label)}</h3>")
            parts.append(_img_html(Path(figures[key]), key))
    if videos:
        parts.append("<h2>Before / after</h2>")
        for name, path in videos.items():
            rel = os.path.relpath(Path(path), out).replace(os.sep, "/")
            parts.append(
                f"<p>{html.escape(name)}: <a href='{html.escape(rel)}'>{html.escape(rel)}</a></p>"
                f"<video controls loop muted src='{html.escape(rel)}'></video>"
            )
    timing = report.get("timing") or {}
    if timing:
        parts += [
            "<h2>Timing</h2>",
            _table_html(["stage", "seconds"], [[k, f"{v:.1f}"] for k, v in timing.items()]),
        ]
    config_yaml = yaml.safe_dump(dict(config), sort_keys=False)
    heading = "Exact config"
    if report.get("training_seeds"):
        heading += " (of the first training seed's run; the others differ only in seed, time budgets, threads and device)"
    parts += [f"<h2>{heading}</h2>", f"<pre>{html.escape(config_yaml)}</pre>", "</body></html>"]
    path = out / "report.html"
    atomic_write_text(path, "\n".join(parts) + "\n")
    return path

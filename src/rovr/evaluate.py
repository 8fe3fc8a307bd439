"""Evaluation: Table 1 and Table 2 of the paper (§7) → ``report.json``, ``report.md`` (and figures).

Every learned or baseline number comes from :func:`rovr.reconstruct.reconstruct` (the one loop), with
a :class:`~rovr.conditioning.Chooser` plugged in:

* **Table 1** (§7.1): Γ with the oracle's best, random, the oracle's worst and brute-force pairs;
  per-frame L_P over every target of every clip (mean, std, 95 % CI) plus PSNR/SSIM over hole pixels.
  Classical peers that use no Γ (OpenCV Telea in-painting of each frame; copying hole pixels from
  the oracle's best pair) are reported beside it (``table1_peers``).
* **Table 2** (§7.3): every policy over ``eval.seeds`` corruption seeds: L_P, flow recovery (Eq. 3),
  PSNR and SSIM over hole pixels, the fraction of the random → brute-force gap closed, oracle
  coverage of the chosen frames and the rate of fully covering choices; mean and std over seeds.

:func:`evaluate_run` ties it together for ``rovr evaluate``; figures and HTML live in
:mod:`rovr.report`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import re
import secrets
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

import cv2
import numpy as np
import torch

from rovr.checkpoint import atomic_write_json, atomic_write_text
from rovr.conditioning import Chooser, PolicyChooser, check_chooser, is_chooser, make_baseline
from rovr.data.corruption import Corrupted
from rovr.errors import DataError, RovrError
from rovr.metrics.image import psnr, ssim
from rovr.reconstruct import Episodes, reconstruct, to_tensor, to_uint8
from rovr.train.common import PPG_POLICIES, SAME_LOCAL_CONTROL

if TYPE_CHECKING:
    from rovr.config import RunConfig
    from rovr.metrics.flow import FlowBackend
    from rovr.metrics.perceptual import PerceptualMetric
    from rovr.models.local import LocalNet

log = logging.getLogger(__name__)
#: The line per Table 2 row and seed, `rovr evaluate`'s progress (``--no-progress`` silences it).
progress_log = logging.getLogger(f"{__name__}.progress")

TABLE1_POLICIES: dict[str, str] = {
    "best": "oracle_best",
    "random": "random",
    "worst": "oracle_worst",
    "brute_force": "brute_force",
}
"""Table 1 row name → the baseline chooser that produces it."""
LEARNED_POLICIES = (*PPG_POLICIES, "imitation")
"""Learned policies a full run trains (``policy_<name>.safetensors`` in the run folder)."""
TABLE2_BASELINES = ("sequential", "nearest", "random", "stride", "oracle_best", "oracle_copy", "brute_force")
TABLE2_ORDER = LEARNED_POLICIES + (SAME_LOCAL_CONTROL,) + TABLE2_BASELINES
"""Row order of Table 2 (DESIGN.md names); other names follow in the order given."""
TABLE2_METRICS = ("perceptual_loss", "flow_recovery", "psnr", "ssim", "gap_closed", "coverage", "valid_rate")
"""Per-seed metrics of a Table 2 row; each gets a ``<name>_std`` field (std over seeds)."""
PEERS = ("cv2_inpaint", "copy_best_pair")
"""Classical, non-learned peers reported beside Table 1."""
FALLBACK_PERCEPTUAL = "ssim"
"""Name of the weight-free perceptual backend (L_P = 1 − SSIM), see :mod:`rovr.metrics.perceptual`."""


# ----------------------------------------------------------------------------- statistics


@dataclass(frozen=True)
class Summary:
    """Mean, sample std (ddof = 1), half width of the 95 % CI of the mean, and count of finite values."""

    mean: float
    std: float
    ci95: float
    n: int


def summarize(values: np.ndarray | Sequence[float]) -> Summary:
    """Summary of the finite entries of ``values`` (any shape).

    ``ci95`` = t_{0.975, n−1} · std / √n (Student t). With one value the std is 0 and the CI is NaN;
    with none, everything is NaN.
    """
    from scipy.stats import t as student_t

    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    n = int(v.size)
    if n == 0:
        return Summary(math.nan, math.nan, math.nan, 0)
    mean = float(v.mean())
    if n == 1:
        return Summary(mean, 0.0, math.nan, 1)
    std = float(v.std(ddof=1))
    return Summary(mean, std, float(student_t.ppf(0.975, n - 1)) * std / math.sqrt(n), n)


def gap_closed(loss_random: float, loss_policy: float, loss_brute_force: float) -> float:
    """(L_random − L_policy) / (L_random − L_brute_force): 0 = random, 1 = brute force; NaN if the gap is 0."""
    gap = loss_random - loss_brute_force
    if not math.isfinite(gap) or abs(gap) < 1e-12:
        return math.nan
    return (loss_random - loss_policy) / gap


def _finite_mean(values: np.ndarray) -> float:
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    return float(v.mean()) if v.size else math.nan


# ----------------------------------------------------------------------------- running one policy


@dataclass
class PolicyRun:
    """One conditioning policy run over B clips (batches concatenated)."""

    name: str
    choices: np.ndarray  # (B, T, k) conditioning frames of every target
    loss: np.ndarray  # (B, T) L_P(x̂_t, x_t)
    coverage: np.ndarray  # (B, T) oracle coverage of the chosen frames
    hole_psnr: np.ndarray  # (B, T) PSNR over hole pixels, NaN for a frame without holes
    hole_ssim: np.ndarray  # (B, T) SSIM over hole pixels, NaN for a frame without holes
    flow_recovery: np.ndarray | None  # (B,) Eq. 3, None without a flow backend
    sample: np.ndarray  # uint8 (T, H, W, 3): the reconstruction of the first clip


def hole_metrics(
    video: torch.Tensor, original: torch.Tensor, masks: torch.Tensor
) -> tuple[np.ndarray, np.ndarray]:
    """PSNR and SSIM over hole pixels of each frame: videos (B, T, 3, H, W), masks (B, T, H, W) → (B, T) × 2."""
    b, t = masks.shape[:2]
    x = video.flatten(0, 1).float()  # (B·T, 3, H, W)
    y = original.flatten(0, 1).float().to(x.device)
    m = masks.flatten(0, 1)[:, None].to(x.device)  # (B·T, 1, H, W)
    p = psnr(x, y, mask=m).reshape(b, t).double().cpu().numpy()
    s = ssim(x, y, mask=m).reshape(b, t).double().cpu().numpy()
    return p, s


def run_policy_of(
    cfg: RunConfig,
    clips: Sequence[Corrupted],
    chooser: Chooser,
    net: LocalNet,
    perceptual: PerceptualMetric,
    *,
    flow: FlowBackend | None = None,
    device: torch.device | str = "cpu",
) -> PolicyRun:
    """:func:`run_policy` in run config ``cfg``'s MDP (its k, cell and ``condition_on``)."""
    return run_policy(
        clips,
        chooser,
        net,
        perceptual,
        k=cfg.k,
        cell=cfg.policy.cell,
        flow=flow,
        device=device,
        condition_on=cfg.condition_on,
    )


@torch.no_grad()
def run_policy(
    clips: Sequence[Corrupted],
    chooser: Chooser,
    net: LocalNet,
    perceptual: PerceptualMetric,
    *,
    k: int = 2,
    cell: int = 32,
    flow: FlowBackend | None = None,
    device: torch.device | str = "cpu",
    batch_size: int = 8,
    condition_on: Literal["current", "observed"] = "current",
) -> PolicyRun:
    """Run ``chooser`` through :func:`reconstruct` over ``clips`` in batches of ``batch_size``."""
    if not clips:
        raise RovrError("no clips to evaluate; give a data folder with at least one usable video")
    parts: dict[str, list[np.ndarray]] = {
        key: [] for key in ("choices", "loss", "coverage", "psnr", "ssim", "flow")
    }
    sample: np.ndarray | None = None
    for start in range(0, len(clips), batch_size):
        episodes = Episodes(
            clips[start : start + batch_size],
            net,
            perceptual,
            k=k,
            cell=cell,
            flow=flow,
            condition_on=condition_on,
            device=device,
        )
        rec = reconstruct(episodes, chooser)
        hp, hs = hole_metrics(rec.video, episodes.original, episodes.masks)
        parts["choices"].append(rec.choices)
        parts["loss"].append(rec.loss)
        parts["coverage"].append(rec.coverage)
        parts["psnr"].append(hp)
        parts["ssim"].append(hs)
        if rec.flow_recovery is not None:
            parts["flow"].append(rec.flow_recovery)
        if sample is None:
            sample = to_uint8(rec.video[0])
    assert sample is not None
    return PolicyRun(
        name=chooser.name,
        choices=np.concatenate(parts["choices"]),
        loss=np.concatenate(parts["loss"]),
        coverage=np.concatenate(parts["coverage"]),
        hole_psnr=np.concatenate(parts["psnr"]),
        hole_ssim=np.concatenate(parts["ssim"]),
        flow_recovery=np.concatenate(parts["flow"]) if parts["flow"] else None,
        sample=sample,
    )


# ----------------------------------------------------------------------------- Table 1


def _table1_row(
    policy: str, loss: np.ndarray, hole_psnr: np.ndarray, hole_ssim: np.ndarray
) -> dict[str, Any]:
    s = summarize(loss)
    return {
        "policy": policy,
        "loss_mean": s.mean,
        "loss_std": s.std,
        "n_frames": s.n,
        "ci95": s.ci95,
        "hole_psnr": _finite_mean(hole_psnr),
        "hole_ssim": _finite_mean(hole_ssim),
    }


def table1(
    clips: Sequence[Corrupted],
    net: LocalNet,
    perceptual: PerceptualMetric,
    k: int = 2,
    seed: int = 0,
    brute_force: bool = True,
    device: torch.device | str = "cpu",
    *,
    cell: int = 32,
    runs: Mapping[str, PolicyRun] | None = None,
    condition_on: Literal["current", "observed"] = "current",
) -> list[dict[str, Any]]:
    """Table 1 (§7.1): Γ with best / random / worst (/ brute-force) conditioning frames.

    Rows: ``policy`` (best, random, worst, brute_force), ``loss_mean``, ``loss_std`` (per-frame L_P over
    all targets of all clips), ``n_frames``, ``ci95`` (half width of the 95 % CI of the mean),
    ``hole_psnr``, ``hole_ssim`` (over hole pixels, mean over frames). ``runs`` maps chooser names
    (``oracle_best``, ``random``, ...) to runs over these same clips to reuse instead of re-running.
    """
    rows = []
    for row, chooser_name in TABLE1_POLICIES.items():
        if chooser_name == "brute_force" and not brute_force:
            continue
        run = (runs or {}).get(chooser_name)
        if run is None:
            chooser = make_baseline(chooser_name, seed)
            run = run_policy(
                clips, chooser, net, perceptual, k=k, cell=cell, device=device, condition_on=condition_on
            )
        rows.append(_table1_row(row, run.loss, run.hole_psnr, run.hole_ssim))
    return rows


def telea_inpaint(clip: Corrupted, radius: int = 3) -> np.ndarray:
    """OpenCV Telea in-painting of every corrupted frame with its own mask, alone. uint8 (T, H, W, 3)."""
    return np.stack(
        [
            cv2.inpaint(f, m.astype(np.uint8), radius, cv2.INPAINT_TELEA)
            for f, m in zip(clip.frames, clip.masks)
        ]
    )


def copy_from_frames(clip: Corrupted, choices: np.ndarray) -> np.ndarray:
    """Fill each hole pixel of target t from the first of ``choices[t]`` (T, k) that sees it. uint8 (T, H, W, 3).

    Pixels hidden in every chosen frame keep their corrupted value; known pixels are unchanged.
    """
    out = clip.frames.copy()
    for t, chosen in enumerate(choices):
        todo = clip.masks[t].copy()  # (H, W) holes of t not yet filled
        for i in chosen:
            take = todo & ~clip.masks[i]
            out[t][take] = clip.frames[i][take]
            todo &= ~take
    return out


def best_pairs(clip: Corrupted) -> np.ndarray:
    """The oracle's best pair of every target (§4). int64 (T, 2)."""
    return np.array([clip.oracle.best_pair(t) for t in range(clip.frames.shape[0])], dtype=np.int64)


@torch.no_grad()
def table1_peers(
    clips: Sequence[Corrupted], perceptual: PerceptualMetric, device: torch.device | str = "cpu"
) -> list[dict[str, Any]]:
    """Classical peers beside Table 1, no Γ and nothing learned; same fields as :func:`table1` rows.

    ``cv2_inpaint``: OpenCV Telea in-painting of each corrupted frame with its mask (single frame).
    ``copy_best_pair``: each hole pixel copied from the oracle's best pair (i, j), from i where i sees
    it, else from j (:func:`copy_from_frames`).
    """
    methods: dict[str, Callable[[Corrupted], np.ndarray]] = {
        "cv2_inpaint": telea_inpaint,
        "copy_best_pair": lambda c: copy_from_frames(c, best_pairs(c)),
    }
    rows = []
    for name, method in methods.items():
        loss, hp, hs = [], [], []
        for clip in clips:
            x_hat = to_tensor(method(clip)).to(device)  # (T, 3, H, W)
            x = to_tensor(clip.original).to(device)
            loss.append(perceptual(x_hat, x).double().cpu().numpy())
            p, s = hole_metrics(x_hat[None], x[None], torch.from_numpy(clip.masks)[None])
            hp.append(p)
            hs.append(s)
        rows.append(_table1_row(name, np.stack(loss), np.concatenate(hp), np.concatenate(hs)))
    return rows


# ----------------------------------------------------------------------------- Table 2


@dataclass
class Table2Result:
    """Table 2 rows plus what the figures need.

    ``per_seed[name]``: one metrics dict per seed; ``runs[name]``: the run of the first seed (per-clip
    choices (B, T, k) for the heat maps, the first clip's reconstruction for grids and videos);
    ``sample_clip``: that first clip.
    """

    rows: list[dict[str, Any]]
    per_seed: dict[str, list[dict[str, float]]]
    runs: dict[str, PolicyRun]
    sample_clip: Corrupted
    seeds: list[int] = field(default_factory=list)

    @property
    def choices(self) -> dict[str, np.ndarray]:
        """Policy → chosen frames (B, T, k) of every clip of the first seed."""
        return {name: run.choices for name, run in self.runs.items()}

    @property
    def samples(self) -> dict[str, np.ndarray]:
        """Policy → uint8 (T, H, W, 3) reconstruction of the first clip of the first seed."""
        return {name: run.sample for name, run in self.runs.items()}


def _seed_metrics(run: PolicyRun) -> dict[str, float]:
    flow = _finite_mean(run.flow_recovery) if run.flow_recovery is not None else math.nan
    return {
        "perceptual_loss": float(run.loss.mean()),
        "flow_recovery": flow,
        "psnr": _finite_mean(run.hole_psnr),
        "ssim": _finite_mean(run.hole_ssim),
        "coverage": float(run.coverage.mean()),
        "valid_rate": float((run.coverage >= 1.0).mean()),
        "gap_closed": math.nan,
    }


def ordered_policies(names: Sequence[str]) -> list[str]:
    """``names`` in Table 2 order (:data:`TABLE2_ORDER`), unknown names after, as given."""
    known = [n for n in TABLE2_ORDER if n in names]
    return known + [n for n in names if n not in TABLE2_ORDER]


def table2(
    clips_by_seed: Mapping[int, Sequence[Corrupted]],
    choosers: Mapping[str, Callable[[int], Chooser]],
    net: LocalNet,
    perceptual: PerceptualMetric,
    flow: FlowBackend | None,
    k: int = 2,
    device: torch.device | str = "cpu",
    *,
    cell: int = 32,
    batch_size: int = 8,
    nets: Mapping[str, LocalNet] | None = None,
    condition_on: Literal["current", "observed"] = "current",
) -> Table2Result:
    """Table 2 (§7.3): every policy on the clips of every corruption seed.

    Γ is ``net``, or ``nets[name]`` for a policy that has its own (the Γ trained alongside it).

    ``choosers`` maps a Table 2 name to a factory taking the seed. Per seed, a policy gets: mean
    per-frame L_P (``perceptual_loss``), mean flow recovery O (Eq. 3) of the clips, ``psnr`` and
    ``ssim`` over hole pixels only (mean over frames), ``coverage`` (mean oracle coverage of the
    chosen frames), ``valid_rate`` (fraction of targets whose chosen frames cover every hole pixel)
    and ``gap_closed`` (needs ``random`` and ``brute_force`` among the choosers, else NaN). A row holds
    the mean over seeds, ``<metric>_std`` (sample std over seeds; 0 with one seed) and ``seeds``.
    Frames without holes (NaN hole PSNR/SSIM) and exactly restored holes (+inf PSNR) are left out of
    the PSNR/SSIM means.
    """
    if not clips_by_seed:
        raise RovrError("Table 2 needs at least one corruption seed")
    names = ordered_policies(list(choosers))
    per_seed: dict[str, list[dict[str, float]]] = {name: [] for name in names}
    runs: dict[str, PolicyRun] = {}
    seeds = sorted(clips_by_seed)
    for n, seed in enumerate(seeds):
        clips = clips_by_seed[seed]
        for name in names:
            started = time.perf_counter()
            run = run_policy(
                clips,
                choosers[name](seed),
                (nets or {}).get(name, net),
                perceptual,
                k=k,
                cell=cell,
                flow=flow,
                device=device,
                batch_size=batch_size,
                condition_on=condition_on,
            )
            progress_log.info(
                "table 2: %s, seed %d: L_P %.4f (%.1f s)",
                name,
                seed,
                run.loss.mean(),
                time.perf_counter() - started,
            )
            if n == 0:
                runs[name] = run
            per_seed[name].append(_seed_metrics(run))
        if "random" in names and "brute_force" in names:
            l_rand = per_seed["random"][-1]["perceptual_loss"]
            l_bf = per_seed["brute_force"][-1]["perceptual_loss"]
            for name in names:
                m = per_seed[name][-1]
                m["gap_closed"] = gap_closed(l_rand, m["perceptual_loss"], l_bf)
    rows = []
    for name in names:
        row: dict[str, Any] = {"policy": name}
        for metric in TABLE2_METRICS:
            s = summarize([m[metric] for m in per_seed[name]])
            row[metric], row[f"{metric}_std"] = s.mean, s.std
        row["seeds"] = len(seeds)
        row["clips"] = len(clips_by_seed[seeds[0]])
        rows.append(row)
    return Table2Result(rows, per_seed, runs, clips_by_seed[seeds[0]][0], seeds)


# ----------------------------------------------------------------------------- report.json and Markdown

TABLE1_KEYS = {"policy": str, "loss_mean": float, "loss_std": float, "n_frames": int}
TABLE2_KEYS = {
    "policy": str,
    "perceptual_loss": float,
    "flow_recovery": float,
    "psnr": float,
    "ssim": float,
    "gap_closed": float,
    "seeds": int,
}


def _jsonable(obj: Any) -> Any:
    """Plain JSON values: numpy scalars/arrays → Python, NaN/inf → None, Paths → str."""
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def validate_report(report: Mapping[str, Any]) -> None:
    """Raise ValueError unless ``report`` follows the report.json contract of DESIGN.md.

    Number fields may be None (NaN in the evaluation, e.g. ``gap_closed`` without a brute-force row).
    """
    for key in ("metric", "table1", "table2", "timing"):
        if key not in report:
            raise ValueError(f"report.json lacks '{key}'")
    metric = report["metric"]
    if not (
        isinstance(metric, Mapping) and all(isinstance(metric.get(m), str) for m in ("perceptual", "flow"))
    ):
        raise ValueError(f"report.json 'metric' must name the perceptual and flow backends, got {metric!r}")
    for table, keys in (("table1", TABLE1_KEYS), ("table2", TABLE2_KEYS)):
        if not isinstance(report[table], list):
            raise ValueError(f"report.json '{table}' must be a list of rows")
        for row in report[table]:
            for key, tp in keys.items():
                if not isinstance(row, Mapping) or key not in row:
                    raise ValueError(f"report.json {table} row {row!r} lacks '{key}'")
                value = row[key]
                if tp is float:
                    ok = value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))
                else:
                    ok = isinstance(value, tp) and not isinstance(value, bool)
                if not ok:
                    raise ValueError(f"report.json {table} row {row!r}: '{key}' must be {tp.__name__}")
    for row in report["table1"]:
        if row["policy"] not in TABLE1_POLICIES:
            raise ValueError(
                f"report.json table1 policy must be one of {list(TABLE1_POLICIES)}, got {row['policy']!r}"
            )
    timing = report["timing"]
    if not (isinstance(timing, Mapping) and all(isinstance(v, (int, float)) for v in timing.values())):
        raise ValueError(f"report.json 'timing' must map stages to seconds, got {timing!r}")


def build_report(
    metric: Mapping[str, str],
    table1_rows: Sequence[Mapping[str, Any]],
    table2_rows: Sequence[Mapping[str, Any]],
    timing: Mapping[str, float],
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The report.json dict (DESIGN.md contract), JSON-clean (NaN → null) and validated; ``extra`` adds keys."""
    report: dict[str, Any] = {
        "metric": {"perceptual": str(metric["perceptual"]), "flow": str(metric["flow"])},
        "table1": [dict(r) for r in table1_rows],
        "table2": [dict(r) for r in table2_rows],
        "timing": {str(k): float(v) for k, v in timing.items()},
    }
    for key, value in (extra or {}).items():
        if key in report:
            raise ValueError(f"extra report section '{key}' would overwrite a contract field")
        report[key] = value
    clean: dict[str, Any] = _jsonable(report)
    validate_report(clean)
    return clean


def write_report_json(
    path: str | Path,
    metric: Mapping[str, str],
    table1_rows: Sequence[Mapping[str, Any]],
    table2_rows: Sequence[Mapping[str, Any]],
    timing: Mapping[str, float],
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Write report.json atomically (see :func:`build_report`) and return what was written."""
    report = build_report(metric, table1_rows, table2_rows, timing, extra)
    atomic_write_json(Path(path), report)
    return report


def _num(value: Any, digits: int) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    return f"{value:.{digits}f}"


def _pm(mean: Any, std: Any, digits: int, show_std: bool = True) -> str:
    if not show_std or _num(mean, digits) == "—":
        return _num(mean, digits)
    return f"{_num(mean, digits)} ± {_num(std, digits)}"


def table1_cells(rows: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Header and formatted cells of Table 1 (or its peers), shared by Markdown and HTML."""
    header = [
        "Conditioning policy",
        "L_P per frame (mean ± std)",
        "95% CI ±",
        "frames",
        "hole PSNR (dB)",
        "hole SSIM",
    ]
    cells = [
        [
            str(r["policy"]),
            _pm(r.get("loss_mean"), r.get("loss_std"), 4),
            _num(r.get("ci95"), 4),
            str(r.get("n_frames", "")),
            _num(r.get("hole_psnr"), 2),
            _num(r.get("hole_ssim"), 4),
        ]
        for r in rows
    ]
    return header, cells


def table2_cells(rows: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Header and formatted cells (mean ± std over seeds) of Table 2, shared by Markdown and HTML. The
    last column counts corruption seeds, or training seeds in a combined report (its rows carry
    ``eval_seeds_per_run``)."""
    combined = any("eval_seeds_per_run" in r for r in rows)
    header = [
        "Policy",
        "L_P",
        "flow recovery",
        "hole PSNR (dB)",
        "hole SSIM",
        "gap closed",
        "coverage",
        "valid rate",
        "training seeds" if combined else "seeds",
    ]
    digits = {"psnr": 2}
    cells = []
    for r in rows:
        many = int(r.get("seeds") or 0) > 1
        cells.append(
            [str(r["policy"])]
            + [_pm(r.get(m), r.get(f"{m}_std"), digits.get(m, 4), many) for m in TABLE2_METRICS]
            + [str(r.get("seeds", ""))]
        )
    return header, cells


def _markdown(header: list[str], cells: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in cells]
    return "\n".join(lines) + "\n"


def markdown_table1(rows: Sequence[Mapping[str, Any]]) -> str:
    """Table 1 as a Markdown table (L_P mean ± std per frame, CI, hole PSNR/SSIM)."""
    return _markdown(*table1_cells(rows))


def markdown_table2(rows: Sequence[Mapping[str, Any]]) -> str:
    """Table 2 as a Markdown table (mean ± std over seeds)."""
    return _markdown(*table2_cells(rows))


def table2_spread(report: Mapping[str, Any]) -> str:
    """What Table 2's ± is over: corruption seeds of one run, or the runs of several training seeds."""
    n = report.get("training_seeds")
    return f"{n} training seeds (each run's mean over its corruption seeds)" if n else "corruption seeds"


def metric_note(perceptual_name: str) -> str:
    """One sentence on the perceptual backend, saying so when the weight-free fallback was used."""
    if perceptual_name == FALLBACK_PERCEPTUAL:
        return (
            "L_P is the weight-free fallback 1 − SSIM (the VGG16 weights for the paper's LPIPS-VGG were not "
            "available); its values are not comparable with LPIPS numbers."
        )
    return f"L_P is {perceptual_name} (paper Eq. 1, perceptual term)."


#: How many video names "Data: …" lists (``datasets.videos`` holds them all).
DATA_LINE_VIDEOS = 8


def data_line(report: Mapping[str, Any]) -> str:
    """ "Data: …" — what a report evaluated (``datasets``), or "" when it does not say."""
    data = report.get("datasets") or {}
    if not data:
        return ""
    clips = data.get("clips", "?")
    videos = list(data.get("videos") or [])
    named = ""
    if videos:
        shown = ", ".join(videos[:DATA_LINE_VIDEOS])
        more = f" and {len(videos) - DATA_LINE_VIDEOS} more" if len(videos) > DATA_LINE_VIDEOS else ""
        named = f" of {len(videos)} video{'' if len(videos) == 1 else 's'} ({shown}{more})"
    return (
        f"Data: {data.get('source', '?')}: {clips} clip{'' if clips == 1 else 's'}{named} of "
        f"{data.get('frames', '?')} frames, {data.get('width', '?')}×{data.get('height', '?')}, corruption "
        f"seeds {data.get('seeds', '?')}.{mdp_note(report)}"
    )


def mdp_note(report: Mapping[str, Any]) -> str:
    """The sentence after the Data line: the MDP of the run config the report records ("" if none)."""
    from rovr.config import as_recorded

    config = report.get("config")
    if not isinstance(config, Mapping):
        return ""
    return MDP_NOTES.get(str(as_recorded(dict(config)).get("condition_on")), "")


#: What the report's MDP was (the run config's ``condition_on``), said after the Data line.
MDP_NOTES = {
    "current": " Frames repaired at earlier steps are conditioned on as repaired (`condition_on: current`, "
    "the paper's state).",
    "observed": " Γ and the policies saw only the observed pixels of every frame, repaired or not "
    "(`condition_on: observed`).",
}


#: What Table 1 is computed over (its caption in report.md and report.html).
TABLE1_SCOPE = (
    "Per-frame L_P over every target of every clip, with the first corruption seed's masks; PSNR/SSIM "
    "over hole pixels only."
)


def gap_note(report: Mapping[str, Any]) -> str:
    """Why "gap closed" is empty, where it is: the evaluation skipped the brute-force row."""
    if any(r.get("policy") == "brute_force" for r in report.get("table2") or []):
        return ""
    return (
        "Gap closed needs the brute-force row, which this evaluation skipped (--no-brute-force or "
        "eval.brute_force=false)."
    )


def local_notes(report: Mapping[str, Any]) -> list[str]:
    """Which Γ the rows used, where not stage 1's alone (``local``, ``policies.local``)."""
    if report.get("local"):
        return [f"Every row and Table 1 use the Γ of `{report['local']}` (`--local`)."]
    own = dict((report.get("policies") or {}).get("local") or {})
    notes = list(report.get("local_notes") or [])  # a combined report's own word
    control = own.pop(SAME_LOCAL_CONTROL, None)
    for name, path in own.items():
        notes.append(f"`{name}` runs with the Γ trained alongside it during PPG (`{path}`).")
    if control is not None:
        donor = next((n for n, p in own.items() if p == control), control)
        notes.append(
            f"`{SAME_LOCAL_CONTROL}` is the imitation policy run with `{donor}`'s Γ (`{control}`): the "
            f"same-Γ control, so its difference to `{donor}` is the policy's alone."
        )
    if own or control is not None:
        notes.append("Table 1 and every other row use stage 1's Γ (`local.safetensors`).")
    return notes


def markdown_report(report: Mapping[str, Any]) -> str:
    """The whole report.md: backends, data, Table 1 (+ peers), Table 2, missing policies, timing."""
    metric = report["metric"]
    parts = [
        "# ROVR evaluation\n",
        f"Perceptual metric: **{metric['perceptual']}**; optical flow: **{metric['flow']}**. "
        + metric_note(metric["perceptual"])
        + "\n",
        *([data_line(report) + "\n"] if data_line(report) else []),
        "## Table 1 — Γ under different conditioning (per frame)\n",
        TABLE1_SCOPE + "\n",
        markdown_table1(report["table1"]),
    ]
    if report.get("table1_peers"):
        parts += ["\nClassical peers (no Γ, nothing learned):\n", markdown_table1(report["table1_peers"])]
    parts += [
        f"\n## Table 2 — policies (mean ± std over {table2_spread(report)})\n",
        "PSNR and SSIM are over hole pixels only. Gap closed: (L_random − L_policy) / (L_random − L_brute_force), "
        f"per seed, then averaged. {gap_note(report)}".rstrip()
        + "\n",
        markdown_table2(report["table2"]),
    ]
    if report.get("training_seeds"):
        said = metric_note(metric["perceptual"])
        parts.append("\n" + " ".join(n for n in report.get("notes") or [] if n != said) + "\n")
    if report.get("seed_reports"):
        links = ", ".join(f"[{p}]({p})" for p in report["seed_reports"])
        parts.append(f"\nEach training seed's own report, with its figures: {links}.\n")
    policies = report.get("policies") or {}
    if policies.get("missing"):
        parts.append(f"\nNot in this run (not evaluated): {', '.join(policies['missing'])}.\n")
    for name, why in (policies.get("unusable") or {}).items():
        parts.append(f"\nSkipped `{name}`: {why}\n")
    parts += [f"\n{line}\n" for line in local_notes(report)]
    timing = report.get("timing") or {}
    if timing:
        parts.append("\n## Timing (s)\n\n" + "\n".join(f"- {k}: {v:.1f}" for k, v in timing.items()) + "\n")
    return "\n".join(parts)


# ----------------------------------------------------------------------------- combining runs


def pool_table1_rows(rows: Sequence[Mapping[str, Any]], same_frames: bool = False) -> dict[str, Any]:
    """One Table 1 row from rows of the same policy (exact pooled mean/std/CI).

    Pooled std: √(Σ[(n_i − 1) s_i² + n_i (m_i − m)²] / (N − 1)); hole PSNR/SSIM: frame-weighted means.
    The rows hold disjoint frame sets (N = Σ n_i frames), or with ``same_frames`` the same n frames
    each (runs of several training seeds evaluated on one test set): then the mean and std pool all
    N values but the frames are counted once, n, for ``n_frames`` and the 95 % CI (t_{0.975, n−1} ·
    std / √n), which N would make narrower than n distinct frames can support.
    """
    from scipy.stats import t as student_t

    rows = [r for r in rows if r.get("loss_mean") is not None and int(r.get("n_frames") or 0) > 0]
    if not rows:
        raise ValueError("pool_table1_rows needs at least one row with frames")
    n = np.array([int(r["n_frames"]) for r in rows], dtype=np.float64)
    m = np.array([float(r["loss_mean"]) for r in rows])
    s = np.array([float(r.get("loss_std") or 0.0) for r in rows])
    total = float(n.sum())
    mean = float((n * m).sum() / total)
    std = math.sqrt(float(((n - 1) * s**2 + n * (m - mean) ** 2).sum()) / (total - 1)) if total > 1 else 0.0
    if same_frames and (n != n[0]).any():
        raise ValueError("pool_table1_rows(same_frames=True) needs rows over the same number of frames")
    frames = float(n[0]) if same_frames else total
    ci = float(student_t.ppf(0.975, frames - 1)) * std / math.sqrt(frames) if frames > 1 else math.nan

    def weighted(key: str) -> float:
        pairs = [(w, float(r[key])) for w, r in zip(n, rows) if r.get(key) is not None]
        return sum(w * v for w, v in pairs) / sum(w for w, _ in pairs) if pairs else math.nan

    return {
        "policy": rows[0]["policy"],
        "loss_mean": mean,
        "loss_std": std,
        "n_frames": int(frames),
        "ci95": ci,
        "hole_psnr": weighted("hole_psnr"),
        "hole_ssim": weighted("hole_ssim"),
    }


#: The figure files of an evaluation folder → their keys in :func:`rovr.report.write_html`.
_FIGURE_FILES = {
    "fig1_masked.png": "fig1",
    "fig3_heatmaps.png": "fig3",
    "learning_curves.png": "learning_curves",
}


def evaluation_figures(folder: str | Path) -> dict[str, Path]:
    """The figures an evaluation wrote into ``folder`` (keys as :func:`rovr.report.write_html` takes)."""
    folder = Path(folder)
    found = {key: folder / name for name, key in _FIGURE_FILES.items() if (folder / name).is_file()}

    def order(f: Path) -> tuple[int, str]:  # as an evaluation shows them: learned policies first
        name = f.stem.removeprefix("fig6_")
        return (
            LEARNED_POLICIES.index(name)
            if name in LEARNED_POLICIES
            else len(LEARNED_POLICIES) + (name == "sequential"),
            name,
        )

    fig6 = {f"fig6_{f.stem.removeprefix('fig6_')}": f for f in sorted(folder.glob("fig6_*.png"), key=order)}
    return {**found, **fig6}


def combine_seed_reports(
    reports: Sequence[Mapping[str, Any]],
    out_dir: str | Path,
    folders: Sequence[str | Path] | None = None,
) -> dict[str, Any]:
    """Combine the reports of runs trained with different seeds → ``out_dir``/report.json, .md, .html.

    Table 2: per policy, mean and std over the runs of each run's (seed-averaged) metrics; ``seeds`` is
    the number of runs that hold the policy. Table 1 and its peers: frames pooled over the runs
    (:func:`pool_table1_rows`; runs evaluated on the same clips count their frames once). Timing:
    summed per stage. ``folders``: the evaluation folder of each report, in order; the page shows the
    first one's figures and links every one's report.html (``seed_reports``).
    """
    from rovr import report as figures

    if not reports:
        raise ValueError("combine_seed_reports needs at least one report")
    if folders is not None and len(folders) != len(reports):
        raise ValueError("combine_seed_reports: one evaluation folder per report")
    metric = dict(reports[0]["metric"])
    if any(dict(r["metric"]) != metric for r in reports):
        raise ValueError("cannot combine reports made with different metric backends")
    datasets = [r.get("datasets") for r in reports]
    same_data = bool(datasets[0]) and all(d == datasets[0] for d in datasets)

    def pooled(key: str) -> list[dict[str, Any]]:
        names = list(dict.fromkeys(row["policy"] for r in reports for row in r.get(key) or []))
        out = []
        for name in names:
            rows = [row for r in reports for row in r.get(key) or [] if row["policy"] == name]
            same = same_data and len(rows) == len(reports) and len({int(r["n_frames"]) for r in rows}) == 1
            out.append(pool_table1_rows(rows, same_frames=same))
        return out

    names = ordered_policies(list(dict.fromkeys(row["policy"] for r in reports for row in r["table2"])))
    t2_rows = []
    for name in names:
        rows = [row for r in reports for row in r["table2"] if row["policy"] == name]
        out_row: dict[str, Any] = {"policy": name}
        for key in TABLE2_METRICS:
            summary = summarize([row[key] if row.get(key) is not None else math.nan for row in rows])
            out_row[key], out_row[f"{key}_std"] = summary.mean, summary.std
        out_row["seeds"] = len(rows)
        out_row["eval_seeds_per_run"] = int(rows[0].get("seeds") or 0)
        t2_rows.append(out_row)
    timing: dict[str, float] = {}
    for r in reports:
        for key, value in (r.get("timing") or {}).items():
            timing[key] = timing.get(key, 0.0) + float(value)
    missing = sorted({n for r in reports for n in (r.get("policies") or {}).get("missing", [])})
    locals_ = [((r.get("policies") or {}).get("local") or {}, r.get("local")) for r in reports]
    same_local = locals_[0][0] if all(x == locals_[0] for x in locals_) else {}
    gamma_notes = []
    if any(x != locals_[0] for x in locals_):  # averaged over runs whose rows used different Γs
        gamma_notes = [
            "The runs used different Γs for some rows (a Γ trained alongside a policy in some runs, or "
            "--local in some): each run's report says which; the means here mix them."
        ]
    out = Path(out_dir)
    table1_note = (
        "Table 1: every run's frames pooled; the runs evaluated the same clips, so its frames and 95 % CI "
        "count each frame once."
        if same_data
        else "Table 1: frames pooled over the runs."
    )
    extra: dict[str, Any] = {
        "table1_peers": pooled("table1_peers"),
        "training_seeds": len(reports),
        "policies": {
            "evaluated": names,
            "missing": missing,
            "unusable": {},
            **({"local": same_local} if same_local else {}),
        },
        "runs": [r.get("run") for r in reports],
        **({"local": locals_[0][1]} if locals_[0][1] and not gamma_notes else {}),
        **({"local_notes": gamma_notes} if gamma_notes else {}),
        **({"datasets": dict(datasets[0] or {})} if same_data else {}),
        "notes": [
            metric_note(metric["perceptual"]),
            f"Table 2: mean ± std over {len(reports)} training seeds of each run's mean. {table1_note}",
        ],
        "config": reports[0].get("config") or {},
    }
    shown: dict[str, Path] = {}
    if folders:
        extra["seed_reports"] = [
            os.path.relpath(Path(f) / "report.html", out).replace(os.sep, "/") for f in folders
        ]
        shown = evaluation_figures(folders[0])
        if shown:
            extra["figures_from"] = extra["seed_reports"][0]
    report = write_report_json(out / "report.json", metric, pooled("table1"), t2_rows, timing, extra)
    atomic_write_text(out / "report.md", markdown_report(report))
    figures.write_html(out, report, shown, {}, report["config"])
    return report


# ----------------------------------------------------------------------------- rovr evaluate


@dataclass
class EvaluationResult:
    """What :func:`evaluate_run` wrote: the report dict and the paths under ``out_dir``."""

    report: dict[str, Any]
    out_dir: Path
    files: dict[str, Path]


def folder_clips(cfg: RunConfig, folder: str | Path, seed: int, limit: int = 0) -> list[Corrupted]:
    """Corrupted clips of every video in ``folder``, whatever the train/val/test split would say.

    Clips are cut and corrupted as in training (``cfg.data`` sizes, ``cfg.corruption``, seed per clip).
    """
    from rovr.train.common import corrupted_clips

    data = dataclasses.replace(cfg.data, source=str(folder))
    return corrupted_clips(dataclasses.replace(cfg, data=data), "all", seed, limit)


def _same_source(a: str, b: str) -> bool:
    if a == b:
        return True
    return (
        a != "synthetic"
        and b != "synthetic"
        and Path(a).expanduser().resolve() == Path(b).expanduser().resolve()
    )


class _Named:
    """A researcher's chooser as the row ``name``: its errors, and invalid frames it returns, become one
    line that names the row (the check of :meth:`Episodes.check_pairs`)."""

    def __init__(self, chooser: Chooser, name: str) -> None:
        self.chooser, self.name = chooser, name

    def _failed(self, where: str, e: Exception) -> RovrError:
        what = str(e) if isinstance(e, RovrError) else f"{type(e).__name__}: {e}"
        return RovrError(f"chooser '{self.name}' {where}: {what}")

    def reset(self, episodes: Episodes) -> None:
        try:
            self.chooser.reset(episodes)
        except Exception as e:
            raise self._failed("failed in reset()", e) from e

    def choose(self, episodes: Episodes) -> torch.Tensor:
        try:
            return episodes.check_pairs(self.chooser.choose(episodes))
        except Exception as e:
            raise self._failed(f"at target {episodes.t}", e) from e


def _seeded(chooser: Chooser | Callable[[int], Chooser], name: str) -> Callable[[int], Chooser]:
    """A row's chooser as a function of the corruption seed (a Chooser object serves every seed)."""
    if is_chooser(chooser):
        return lambda seed: _Named(cast("Chooser", chooser), name)

    def make(seed: int) -> Chooser:
        try:
            made = cast("Callable[[int], Chooser]", chooser)(seed)
        except Exception as e:
            raise RovrError(
                f"chooser '{name}': calling it with the corruption seed failed ({type(e).__name__}: {e}); "
                "pass a Chooser object or a function of the seed that returns one"
            ) from e
        check_chooser(made, f"chooser '{name}' (called with seed {seed}) returned", named=False)
        return _Named(made, name)

    return make


def _try_choosers(
    rows: Mapping[str, Callable[[int], Chooser]],
    clip: Corrupted,
    seed: int,
    net: LocalNet,
    cfg: RunConfig,
    device: torch.device,
) -> None:
    """Each of a researcher's rows picks the frames of one target before anything runs (a mistake is
    said in seconds, not after the brute-force row), on one clip, without scoring."""
    for make in rows.values():
        episodes = Episodes.of_run(cfg, [clip], net, None, device=device)
        episodes.reset()
        chooser = make(seed)
        chooser.reset(episodes)
        chooser.choose(episodes)


def evaluation_clips(
    cfg: RunConfig, data: str | Path | None, seed: int, limit: int = 0
) -> tuple[list[Corrupted], str]:
    """Clips of one corruption seed and a description: the run's test split, or all of a user folder."""
    from rovr.train.common import corrupted_clips

    if data is None or _same_source(str(data), cfg.data.source):
        return corrupted_clips(cfg, "test", seed, limit), evaluation_source(cfg, data)
    _check_exists(data)  # the rest (a file, no videos) the folder's own scan refuses
    return folder_clips(cfg, Path(data).expanduser(), seed, limit), evaluation_source(cfg, data)


def evaluation_source(cfg: RunConfig, data: str | Path | None) -> str:
    """What :func:`evaluation_clips` evaluates on, as the report names it (``datasets.source``)."""
    if data is None or _same_source(str(data), cfg.data.source):
        return f"{cfg.data.source} (test split)"
    return f"{Path(data).expanduser().resolve()} (all videos)"


def check_held_out(run_splits: Path, cfg: RunConfig, data: str | Path | None) -> None:
    """Refuse (one line) to evaluate a run on its own test split when that split now holds a video the
    run trained on (videos were added to or removed from the data folder since: the hash split moved);
    a test split that changed otherwise is said. ``run_splits``: the run's ``splits.json``."""
    from rovr.data.clips import video_splits

    if not (data is None or _same_source(str(data), cfg.data.source)) or not run_splits.is_file():
        return
    try:
        then = json.loads(run_splits.read_text())
    except (OSError, ValueError):
        return  # an unreadable record protects nothing; the evaluation itself is still valid
    now = video_splits(cfg.data)
    if now["test"] == then.get("test"):
        return
    trained = set(then.get("train", [])) | set(then.get("val", []))
    seen = [v for v in now["test"] if v in trained]
    if seen:
        raise DataError(
            f"the videos of {cfg.data.source} changed since this run was trained: its test split now holds "
            f"{', '.join(seen)}, which the run trained on; evaluate on held-out videos with --data DIR "
            "(or put the folder back as it was)"
        )
    log.warning(
        "the test split of %s changed since this run was trained (then: %s; now: %s); none of them was trained on",
        cfg.data.source,
        ", ".join(then.get("test", [])) or "none",
        ", ".join(now["test"]),
    )


def no_clips_error(cfg: RunConfig, data: str | Path | None, source: str) -> DataError:
    """Why :func:`evaluation_clips` found nothing, in one line: a run's test split that holds no video
    (its few videos all went to training), else videos shorter than a clip."""
    if data is None or _same_source(str(data), cfg.data.source):
        return DataError(
            f"the test split of {cfg.data.source} holds no videos (too few videos to split, or "
            f"data.test_fraction={cfg.data.test_fraction}); evaluate on other videos with --data DIR"
        )
    return DataError(
        f"no clips of {cfg.data.frames} frames in {source}; use longer videos or lower data.frames"
    )


def _check_exists(data: str | Path) -> None:
    if not Path(data).expanduser().exists():
        raise DataError(f"data folder '{data}' does not exist; pass a folder of videos or frame folders")


#: The report files of `rovr evaluate`: a folder holding one that an evaluation did not write is refused.
REPORT_FILES = ("report.json", "report.md", "report.html")
#: Everything an evaluation writes into its --out: a new report replaces the earlier one's set.
REPORT_OUTPUTS = (
    *REPORT_FILES,
    "fig1_masked.png",
    "fig3_heatmaps.png",
    "fig6_*.png",
    "learning_curves.png",
    "before_after.mp4",
)


def check_out_beside_data(out: Path, data: str | Path | None) -> None:
    """Refuse (one line) an --out folder inside the data folder: its videos and figures would be read
    as data by the next evaluation of it (``rovr demo`` and ``rovr reproduce`` check before training)."""
    if data is not None and Path(data).expanduser().is_dir():
        if out.resolve().is_relative_to(Path(data).expanduser().resolve()):
            raise RovrError(
                f"--out '{out}' lies inside the data folder '{data}' (its video and figures would be read "
                "as data next time); choose another --out"
            )


def check_report_folder(out: Path, data: str | Path | None) -> None:
    """Refuse (one line) an --out folder inside the data folder (its figures and video would be read
    as data by the next evaluation of it), one that cannot be made or written (a file, a folder without
    write permission), or one holding files of the report's names that an evaluation did not write (a
    report.json without Table 2): they would be replaced."""
    from rovr.train.common import check_writable

    check_out_beside_data(out, data)
    check_writable(out, "output folder", "--out", folder=True)
    if not out.is_dir():
        return
    ours = [p.name for p in out.iterdir() if p.name in REPORT_FILES]
    if not ours:
        return
    try:
        earlier = json.loads((out / "report.json").read_text())
    except (OSError, ValueError):
        earlier = None
    if not (isinstance(earlier, dict) and "table2" in earlier):
        raise RovrError(
            f"--out '{out}' holds files rovr evaluate did not write (e.g. '{sorted(ours)[0]}'; no earlier "
            "report.json with Table 2); choose an empty or new folder"
        )


def check_evaluation_data(cfg: RunConfig, data: str | Path | None, seeds: int = 1) -> None:
    """Refuse in one line what an evaluation after training would refuse: fewer than one seed, or a
    folder that is missing, a file, without videos, with a video that cannot be read, or without a
    clip of ``data.frames`` frames (the first seed's clips are cut and corrupted: seconds). Commands
    that evaluate after training (``rovr demo --eval-data``, ``rovr reproduce --eval-data``) check
    it first."""
    from rovr.data.sources import scan_folder

    if seeds < 1:
        raise RovrError(f"an evaluation needs at least one corruption seed (got {seeds})")
    if data is None or _same_source(str(data), cfg.data.source):
        return
    _check_exists(data)
    scan_folder(Path(data).expanduser(), quiet=True)
    clips, source = evaluation_clips(cfg, data, 0, cfg.eval.max_clips)
    if not clips:
        raise no_clips_error(cfg, data, source)


def load_policies(
    cfg: RunConfig, root: Path, device: torch.device
) -> tuple[dict[str, PolicyChooser], dict[str, str]]:
    """Every ``policy_<name>.safetensors`` in the run as a greedy chooser at its training temperature:
    (name → chooser, name → why it could not be used)."""
    from rovr.train.common import load_policy

    choosers: dict[str, PolicyChooser] = {}
    unusable: dict[str, str] = {}
    for path in sorted(root.glob("policy_*.safetensors")):
        name = path.name[len("policy_") : -len(".safetensors")]
        try:
            choosers[name] = load_policy(path, cfg, name, "rovr train", device)
        except RovrError as e:
            log.warning("skipping policy %s: %s", name, e)
            unusable[name] = str(e)
    return choosers, unusable


def seed_runs(root: str | Path) -> list[Path]:
    """The run folders ``root/seed_<S>`` of a `rovr reproduce` folder (each with its config.yaml), in
    seed order; [] when ``root`` is a run folder itself or holds no such runs."""
    root = Path(root)
    if (root / "config.yaml").is_file():
        return []
    runs = [p.parent for p in root.glob("seed_*/config.yaml")]
    runs = [r for r in runs if r.name.removeprefix("seed_").isdigit()]
    return sorted(runs, key=lambda r: int(r.name.removeprefix("seed_")))


def evaluate_seed_runs(root: str | Path, out_dir: str | Path, **kwargs: Any) -> dict[str, Any]:
    """``rovr evaluate --checkpoint OUT`` on the folder of `rovr reproduce` (its runs in ``seed_<S>``):
    each run is evaluated by :func:`evaluate_run` (same ``kwargs``) into ``out_dir/seed_<S>``, and
    Table 2 over the training seeds (:func:`combine_seed_reports`, mean ± std of each run's mean) is
    written to ``out_dir``. So the runs of a reproduction are evaluated on any data in one command,
    e.g. the real clips, without touching their own ``eval`` folders."""
    runs = seed_runs(root)
    if not runs:
        raise RovrError(
            f"'{root}' holds no runs of `rovr reproduce` (no seed_<S>/config.yaml); pass a run folder or "
            "the --out of `rovr reproduce`"
        )
    out = Path(out_dir)
    if out.resolve() == Path(root).resolve():
        raise RovrError(
            f"--out '{out}' is the reproduce folder itself (its seed_<S> are the runs); choose a folder for "
            f"the report, e.g. '{Path(root) / 'eval_other'}'"
        )
    check_report_folder(out, kwargs.get("data"))
    for run in runs:  # every output folder is checked before the first (long) evaluation
        check_report_folder(out / run.name, kwargs.get("data"))
    reports, folders = [], []
    for run in runs:
        log.info("evaluating %s → %s", run, out / run.name)
        reports.append(evaluate_run(run, out / run.name, **kwargs).report)
        folders.append(out / run.name)
    return combine_seed_reports(reports, out, folders)


def _pick_targets(num_frames: int, count: int = 5) -> list[int]:
    return sorted({int(round(x)) for x in np.linspace(0, num_frames - 1, min(count, num_frames))})


def evaluate_run(
    run_dir: str | Path,
    out_dir: str | Path,
    *,
    cfg: RunConfig | None = None,
    data: str | Path | None = None,
    seeds: int | None = None,
    max_clips: int | None = None,
    brute_force: bool | None = None,
    timing: Mapping[str, float] | None = None,
    video_fps: float = 4.0,
    local: str | Path | None = None,
    threads: int | None = None,
    choosers: Mapping[str, Chooser | Callable[[int], Chooser]] | None = None,
) -> EvaluationResult:
    """``rovr evaluate``: Table 1 and Table 2 of a trained run → report.json, report.md, figures, report.html.

    Loads Γ (``local.safetensors``) and every ``policy_*.safetensors`` of ``run_dir``; learned policies
    that are absent are listed in the report, not fatal. ``cfg`` defaults to the run's config.yaml;
    ``data`` None (or the training source) means the run's test split, another folder means all of
    its videos. ``seeds``/``max_clips``/``brute_force`` override ``cfg.eval``; ``timing`` (e.g. the
    training stages) is merged into the report's timing. A policy with its own Γ (trained alongside it,
    ``local_<policy>.safetensors``) runs with it; ``local`` (a Γ file, relative to the run folder or
    not) puts one Γ under every row and Table 1 instead — the same-Γ control for such a comparison.
    ``threads`` overrides the config's torch CPU threads (0 = all cores). ``choosers`` adds rows of
    one's own: name → a :class:`~rovr.conditioning.Chooser`, or a function of the corruption seed
    that returns one; they run like every other row (Table 2, Fig. 3, Fig. 6).
    """
    from rovr.config import read_run_config, to_dict
    from rovr.metrics.flow import build_flow
    from rovr.metrics.perceptual import build_perceptual
    from rovr.train.common import (
        RunDir,
        RunLock,
        load_local,
        make_folder,
        no_gamma_advice,
        read_metric_log,
        setup_torch,
    )

    started = time.perf_counter()
    run = RunDir(Path(run_dir))
    if not run.root.is_dir():
        what = "is a file" if run.root.is_file() else "does not exist"
        raise RovrError(f"run folder '{run.root}' {what}; pass the --out folder of a `rovr train` run")
    if not run.local.is_file() and local is None:
        raise RovrError(
            f"run folder '{run.root}' has no local.safetensors; "
            + no_gamma_advice(run.root, "train Γ first with `rovr pretrain-local`, or name one with --local")
        )
    if cfg is None:
        if not run.config.is_file():
            raise RovrError(f"run folder '{run.root}' has no config.yaml; it was not made by `rovr train`")
        cfg = read_run_config(run.config)
        if cfg.device != "cpu" and not torch.cuda.is_available():
            log.info(
                "run '%s' was configured for %s; no GPU here, evaluating on the CPU", run.root, cfg.device
            )
            cfg.device = "cpu"
    n_seeds = cfg.eval.seeds if seeds is None else seeds
    limit = cfg.eval.max_clips if max_clips is None else max_clips
    if n_seeds < 1 or limit < 0:
        raise RovrError(
            f"an evaluation needs --seeds >= 1 and --max-clips >= 0 (0 = all; got {n_seeds} and {limit})"
        )
    use_bf = cfg.eval.brute_force if brute_force is None else brute_force
    out = Path(out_dir)
    if threads is not None:
        if threads < 0:
            raise RovrError(f"--threads must be >= 0 (0 = all cores; got {threads})")
        cfg = dataclasses.replace(cfg, threads=threads)
    if choosers is not None and not isinstance(choosers, Mapping):
        raise RovrError(
            f"choosers must map row names to choosers, e.g. {{'mine': Mine()}} (got {type(choosers).__name__})"
        )
    for name, chooser in (choosers or {}).items():
        taken = name in TABLE2_ORDER or run.policy(name).is_file()
        if not isinstance(name, str) or taken or not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
            why = "is a row of the table already" if taken else "is not a plain name (letters, digits, _ . -)"
            raise RovrError(f"chooser name {name!r} {why}; give your chooser another name")
        if isinstance(chooser, type):
            check_chooser(chooser, f"chooser '{name}'")
        if not (is_chooser(chooser) or callable(chooser)):
            raise RovrError(
                f"chooser '{name}' is neither a Chooser (.reset, .choose) nor a function of the corruption "
                "seed returning one; see rovr.conditioning"
            )
    device = setup_torch(cfg)
    check_report_folder(out, data)

    gamma = run.gamma_file(local)  # stage 1's Γ under Table 1 and the rows without their own
    net = load_local(gamma, cfg, device)
    # the data and the output folder are checked before the metrics and policies are loaded (their
    # notices would come before a one-line refusal) and long before the output is written
    check_held_out(run.splits, cfg, data)
    clips_by_seed: dict[int, list[Corrupted]] = {}
    source = ""
    for seed in range(n_seeds):
        clips_by_seed[seed], source = evaluation_clips(cfg, data, seed, limit)
        if not clips_by_seed[seed]:
            raise no_clips_error(cfg, data, source)
    own = {n: _seeded(c, n) for n, c in (choosers or {}).items()}
    _try_choosers(own, clips_by_seed[0][0], 0, net, cfg, device)
    make_folder(out, "output folder", "--out")
    perceptual = build_perceptual(cfg.metric, device)
    flow = build_flow(cfg.metric, device)
    try:  # another command training in the run folder: its checkpoints may change under this report
        with RunLock(run.root):
            pass
    except RovrError:
        log.warning(
            "run folder '%s' is being trained by another rovr command; this report evaluates the "
            "checkpoints it holds now",
            run.root,
        )
    policies, unusable = load_policies(cfg, run.root, device)
    from rovr.pipeline import retrained_inputs
    from rovr.train.common import mdp_of

    for name in policies:  # a policy (and the Γ tuned with it) trained from checkpoints since replaced
        stale = retrained_inputs(run, run.policy(name))
        if stale:
            log.warning(
                "%s was trained from another %s than the run holds now (retrained since); its rows (and "
                "those with its Γ) mix old and new work: retrain it with `rovr %s --restart`",
                name,
                " and ".join(stale),
                "imitate" if name == "imitation" else "train-policy",
            )
        trained_in = mdp_of(run.policy(name))
        if trained_in not in (None, cfg.condition_on):
            log.warning(
                "%s was trained with condition_on=%s and is evaluated with condition_on=%s (the run's "
                "config.yaml): its rows measure it in an MDP it was not trained in",
                name,
                trained_in,
                cfg.condition_on,
            )
    nets: dict[str, LocalNet] = {}  # a policy whose PPG run also trained Γ is evaluated with that Γ
    local_names: dict[str, str] = {}
    for name in policies if local is None else ():
        if (path := run.local_for(name)) != run.local:
            nets[name] = load_local(path, cfg, device, "rovr train-policy")
            local_names[name] = path.name
    donor = run.first_tuned([n for n in PPG_POLICIES if n in nets])
    if donor is not None and "imitation" in policies and "imitation" not in nets:
        # imitation's choices with the first tuned Γ: is the PPG row's gain its policy's or Γ's?
        nets[SAME_LOCAL_CONTROL] = nets[donor]
        local_names[SAME_LOCAL_CONTROL] = local_names[donor]
    missing = [n for n in LEARNED_POLICIES if n not in policies and n not in unusable]
    if missing:
        log.info("not trained in %s, so not in the tables: %s", run.root, ", ".join(missing))

    loaded = time.perf_counter()

    def learned(policy: PolicyChooser) -> Callable[[int], Chooser]:
        return lambda seed: PolicyChooser(policy.actor, policy.name, tau=policy.tau, seed=seed)

    def baseline(name: str) -> Callable[[int], Chooser]:
        return lambda seed: make_baseline(name, seed)

    rows: dict[str, Callable[[int], Chooser]] = {n: learned(p) for n, p in policies.items()}
    if SAME_LOCAL_CONTROL in nets:
        rows[SAME_LOCAL_CONTROL] = learned(policies["imitation"])
    rows.update({n: baseline(n) for n in TABLE2_BASELINES if n != "brute_force" or use_bf})
    rows.update(own)
    t2 = table2(
        clips_by_seed,
        rows,
        net,
        perceptual,
        flow,
        cfg.k,
        device,
        cell=cfg.policy.cell,
        nets=nets,
        condition_on=cfg.condition_on,
    )
    t2_done = time.perf_counter()
    first = clips_by_seed[min(clips_by_seed)]
    t1 = table1(
        first,
        net,
        perceptual,
        cfg.k,
        min(clips_by_seed),
        use_bf,
        device,
        cell=cfg.policy.cell,
        runs=t2.runs,
        condition_on=cfg.condition_on,
    )
    peers = table1_peers(first, perceptual, device)
    t1_done = time.perf_counter()

    from rovr import report as figures

    # every output is written into a hidden folder and moved into place at the end: an interruption
    # leaves an earlier report in `out` whole, never mixed with the figures of this one
    stage = out / f".partial-{secrets.token_hex(4)}"
    stage.mkdir()
    try:
        files: dict[str, Path] = {}
        clip = t2.sample_clip
        targets = _pick_targets(clip.frames.shape[0])
        files["fig1"] = figures.fig1_masked(clip, targets[:3], stage / "fig1_masked.png")
        files["fig3"] = figures.fig3_heatmaps(  # the control's choices are imitation's, nearly to a frame
            {n: r.choices[0] for n, r in t2.runs.items() if n != SAME_LOCAL_CONTROL},
            stage / "fig3_heatmaps.png",
        )
        shown = [n for n in LEARNED_POLICIES if n in t2.runs] + list(choosers or {}) + ["sequential"]
        shown = shown if len(shown) > 1 else ["sequential", "oracle_best"]
        for name in shown:
            r = t2.runs[name]
            files[f"fig6_{name}"] = figures.fig6_grid(
                clip,
                r.choices[0],
                r.sample,
                targets,
                stage / f"fig6_{name}.png",
                condition_on=cfg.condition_on,
            )
        curves = figures.learning_curves(read_metric_log(run.logs), stage / "learning_curves.png")
        if curves is not None:
            files["learning_curves"] = curves
        videos = {"before_after": stage / "before_after.mp4"}
        figures.side_by_side_video(
            clip, {n: t2.runs[n].sample for n in shown}, clip.original, videos["before_after"], video_fps
        )
        done = time.perf_counter()

        all_timing = {
            **(timing or {}),
            "eval_load": loaded - started,
            "eval_table2": t2_done - loaded,
            "eval_table1": t1_done - t2_done,
            "eval_figures": done - t1_done,
        }
        first_clip = first[0].frames.shape
        extra = {
            "table1_peers": peers,
            "table2_per_seed": t2.per_seed,
            "policies": {
                "evaluated": [r["policy"] for r in t2.rows],
                "missing": missing,
                "unusable": unusable,
                "local": local_names,
            },
            **({"local": str(gamma)} if local is not None else {}),  # --local: one Γ under every row
            "datasets": {
                "source": source,
                "clips": len(first),
                "frames": first_clip[0],
                "height": first_clip[1],
                "width": first_clip[2],
                "seeds": t2.seeds,
                "videos": list(dict.fromkeys(c.video for c in first if c.video)),
                "clip_starts": [[c.video, c.start] for c in first if c.video],
            },
            "notes": [metric_note(perceptual.name)],
            "run": str(run.root.resolve()),
            "config": to_dict(cfg),
        }
        metric = {"perceptual": perceptual.name, "flow": flow.name}
        report = write_report_json(stage / "report.json", metric, t1, t2.rows, all_timing, extra)
        files["report_json"] = stage / "report.json"
        files["report_md"] = stage / "report.md"
        atomic_write_text(files["report_md"], markdown_report(report))
        fig_paths = {k: v for k, v in files.items() if k.startswith(("fig", "learning"))}
        files["report_html"] = figures.write_html(stage, report, fig_paths, videos, to_dict(cfg))
        files.update(videos)
        # an earlier report's own files that this one does not have (a policy no longer in the run)
        earlier = {f.name for pattern in REPORT_OUTPUTS for f in out.glob(pattern)}
        if not (out / "report.json").is_file():
            earlier = set()
        written = sorted(stage.iterdir())
        for f in written:
            os.replace(f, out / f.name)
        for name in sorted(earlier - {f.name for f in written}):
            (out / name).unlink(missing_ok=True)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    files = {k: out / v.name for k, v in files.items()}
    log.info("evaluation written to %s (%.1f s)", out, time.perf_counter() - started)
    return EvaluationResult(report, out, files)

"""Whole-pipeline commands: all training stages in order, the demo, and the Table 2 reproduction."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rovr.config import RunConfig
from rovr.errors import CheckpointError
from rovr.train.common import RunDir, prepare_run

log = logging.getLogger(__name__)

STAGES = ("pretrain-local", "imitate", "train-policy")


@dataclass
class TrainResult:
    run: RunDir
    timing: dict[str, float]


def stage_done(cfg: RunConfig, run: RunDir, stage: str) -> bool:
    """Whether a stage's final checkpoint exists (then ``rovr train`` skips it)."""
    from rovr.train.ppg import policy_name

    path = {
        "pretrain-local": run.local,
        "imitate": run.policy("imitation"),
        "train-policy": run.policy(policy_name(cfg)),
    }[stage]
    return path.is_file()


def check_stage_inputs(cfg: RunConfig, run: RunDir, stage: str) -> None:
    """Refuse, in one line, a stage whose earlier stages' checkpoints are not in ``run`` — before
    ``rovr imitate`` / ``rovr train-policy`` write anything there."""
    if stage in ("imitate", "train-policy") and not run.local.is_file():
        raise CheckpointError(f"'{run.local}' does not exist; run `rovr pretrain-local` first")
    if stage == "train-policy" and cfg.ppg.warm_start and not run.policy("imitation").is_file():
        raise CheckpointError(
            f"'{run.policy('imitation')}' does not exist; run `rovr imitate` first (or --set ppg.warm_start=false)"
        )


def run_stage(cfg: RunConfig, run: RunDir, stage: str, progress: bool = True) -> Path:
    """Run one training stage (``pretrain-local``, ``imitate`` or ``train-policy``)."""
    if stage == "pretrain-local":
        from rovr.train.local import pretrain_local

        return pretrain_local(cfg, run, progress)
    if stage == "imitate":
        from rovr.train.imitation import train_imitation

        return train_imitation(cfg, run, progress)
    from rovr.train.ppg import train_policy

    return train_policy(cfg, run, progress)


def train_all(
    cfg: RunConfig,
    out: Path,
    progress: bool = True,
    restart: bool = False,
    policies: Sequence[RunConfig] = (),
) -> TrainResult:
    """``rovr train``: Γ pretraining, imitation, PPG — finished stages are skipped (resume), unless ``restart``.

    ``policies`` are extra PPG configs (ablations) trained on the same Γ and imitation policy.
    """
    run = prepare_run(cfg, out)
    timing: dict[str, float] = {}
    for stage in STAGES:
        for c in [cfg, *policies] if stage == "train-policy" else [cfg]:
            if not restart and stage_done(c, run, stage):
                log.info("%s: already done in %s, skipping (use --restart to redo)", stage, run.root)
                continue
            if stage == "imitate" and not (c.ppg.warm_start or any(p.ppg.warm_start for p in policies)):
                continue
            t0 = time.time()
            run_stage(c, run, stage, progress)
            key = stage if stage != "train-policy" else f"train-policy:{_name(c)}"
            timing[key] = time.time() - t0
    return TrainResult(run, timing)


def _name(cfg: RunConfig) -> str:
    from rovr.train.ppg import policy_name

    return policy_name(cfg)


def ablations(cfg: RunConfig) -> list[RunConfig]:
    """The paper's three PPG runs (§7.3): flow+warm, flow+cold, noflow+warm."""
    out = []
    for flow, warm in ((True, True), (True, False), (False, True)):
        out.append(
            dataclasses.replace(cfg, ppg=dataclasses.replace(cfg.ppg, flow_reward=flow, warm_start=warm))
        )
    return out


def reproduce_table2(
    cfg: RunConfig, out: Path, seeds: int = 3, progress: bool = True, data: str | None = None
) -> dict[str, Any]:
    """Train the three ablations for ``seeds`` training seeds and evaluate each seed's run.

    Each seed is a full run folder ``out/seed_<s>`` (its own Γ, imitation policy and three PPG
    policies); the Table 2 rows are then averaged over training seeds (mean ± std across seeds).
    """
    from rovr.evaluate import check_evaluation_data, combine_seed_reports, evaluate_run

    check_evaluation_data(cfg, data)  # refused now, not after the first seed's training
    reports = []
    for s in range(seeds):
        c = dataclasses.replace(cfg, seed=cfg.seed + s)
        runs = ablations(c)
        res = train_all(runs[0], out / f"seed_{s}", progress, policies=runs[1:])
        ev = evaluate_run(
            res.run.root, out / f"seed_{s}" / "eval", cfg=c, data=data, seeds=1, timing=res.timing
        )
        reports.append(ev.report)
    return combine_seed_reports(reports, out)

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
from rovr.errors import CheckpointError, ConfigError
from rovr.train.common import RunDir, RunLock, flat_config, prepare_run

log = logging.getLogger(__name__)

STAGES = ("pretrain-local", "imitate", "train-policy")


@dataclass
class TrainResult:
    run: RunDir
    timing: dict[str, float]


#: What a stage's checkpoint depends on (fields and sections of the config): a finished stage is
#: kept, and an interrupted one resumed, only for a config that agrees on them.
STAGE_KEYS = {
    "pretrain-local": ("seed", "k", "data", "corruption", "metric", "local", "pretrain"),
    "imitate": ("seed", "k", "condition_on", "data", "corruption", "policy", "imitation"),
    "train-policy": ("seed", "k", "condition_on", "data", "corruption", "metric", "policy", "ppg"),
}
#: Settings that change how long a stage runs or how often it saves, not what it learns.
FREE_KEYS = frozenset(
    {
        "pretrain.max_minutes",
        "pretrain.checkpoint_every",
        "imitation.max_minutes",
        "imitation.checkpoint_every",
        "ppg.max_minutes",
    }
)
#: Also free when resuming: the learning rate (lowered to go on after a divergence).
RESUME_FREE_KEYS = FREE_KEYS | {"pretrain.lr", "imitation.lr", "ppg.lr"}


def stage_checkpoint(cfg: RunConfig, run: RunDir, stage: str) -> Path:
    """The final checkpoint a stage writes."""
    from rovr.train.ppg import policy_name

    return {
        "pretrain-local": run.local,
        "imitate": run.policy("imitation"),
        "train-policy": run.policy(policy_name(cfg)),
    }[stage]


def stage_resume(cfg: RunConfig, run: RunDir, stage: str) -> Path:
    """The in-progress checkpoint of a stage."""
    from rovr.train.ppg import policy_name

    return {
        "pretrain-local": run.resume("local"),
        "imitate": run.resume("imitation"),
        "train-policy": run.resume(policy_name(cfg)),
    }[stage]


def stage_done(cfg: RunConfig, run: RunDir, stage: str) -> bool:
    """Whether a stage's final checkpoint exists (then ``rovr train`` skips it)."""
    return stage_checkpoint(cfg, run, stage).is_file()


def config_differences(cfg: RunConfig, path: Path, stage: str, resume: bool = False) -> list[str]:
    """The settings of ``stage`` (:data:`STAGE_KEYS`) in which ``cfg`` differs from the config checkpoint
    ``path`` was trained with, as ``key: checkpoint's value → this one`` (folders compared resolved)."""
    from rovr.checkpoint import read_meta
    from rovr.config import to_dict
    from rovr.train.common import saved_config

    saved = saved_config(read_meta(path), path)  # the header only: no tensors are loaded
    mine = to_dict(cfg)
    free = RESUME_FREE_KEYS if resume else FREE_KEYS
    out = []
    for top in STAGE_KEYS[stage]:
        theirs, ours = flat_config(saved.get(top), top), flat_config(mine.get(top), top)
        for key in sorted(set(theirs) | set(ours)):
            a, b = theirs.get(key), ours.get(key)
            if (
                key == "data.source"
                and isinstance(a, str)
                and isinstance(b, str)
                and "synthetic" not in (a, b)
            ):
                a, b = str(Path(a).expanduser().resolve()), str(Path(b).expanduser().resolve())
            if key not in free and a != b:
                out.append(f"{key}: {theirs.get(key)!r} → {ours.get(key)!r}")
    return out


def check_stage_state(cfg: RunConfig, run: RunDir, stage: str, restart: bool, alone: bool) -> bool:
    """Whether ``stage`` is to run in ``run`` (False: it is finished and ``rovr train`` skips it), or a
    one-line refusal, before anything is written: a finished stage run ``alone`` (``rovr
    pretrain-local`` etc.) would be replaced, or ``rovr train`` would skip one trained with other
    settings, or resume an interrupted one of other settings — unless ``restart``. A finished stage
    with a resume checkpoint beside it (an interrupted ``--restart``) is resumed, not skipped."""
    done = stage_checkpoint(cfg, run, stage)
    # a resume checkpoint beside a finished one: a retraining (--restart) was interrupted; resumed
    retraining = done.is_file() and stage_resume(cfg, run, stage).is_file()
    if done.is_file() and not restart and not retraining:
        if alone:
            raise CheckpointError(
                f"{stage} is already done in '{run.root}' ({done.name}); pass --restart to train it again "
                "(replacing it), or choose another --out"
            )
        diffs = config_differences(cfg, done, stage)
        if diffs:
            raise ConfigError(
                f"'{done}' was trained with other settings ({'; '.join(diffs[:4])}); rerun with its settings "
                "to go on, pass --restart to retrain every stage, or choose another --out"
            )
        stale = retrained_inputs(run, done)
        if stale:
            raise CheckpointError(
                f"'{done}' was trained from another {' and '.join(stale)} than the run holds now (retrained "
                f"since); retrain it with `rovr {stage} --restart` (and the stages after it), or "
                "`rovr train --restart`"
            )
        return False
    from rovr.train import dist

    if stage != "train-policy" and dist.launched():  # every rank would train (and write) its own copy
        raise ConfigError(
            f"under torchrun only train-policy runs on several processes; {stage} is not done in "
            f"'{run.root}': train it in one process first (`rovr {stage} --out {run.root}` with the same "
            "settings, or `rovr train`), then rerun this torchrun command"
        )
    resume = stage_resume(cfg, run, stage)
    if resume.is_file() and not restart:
        diffs = config_differences(cfg, resume, stage, resume=True)
        if diffs:
            raise ConfigError(
                f"an interrupted {stage} with other settings ({'; '.join(diffs[:4])}) is in '{resume}'; "
                "rerun the command that started it to resume it, pass --restart to start over, or "
                "choose another --out"
            )
    return True


def retrained_inputs(run: RunDir, path: Path) -> list[str]:
    """The checkpoints of ``run`` that checkpoint ``path`` was trained from and that have changed
    since (Γ, the imitation policy); checkpoints of earlier versions record none."""
    from rovr.checkpoint import fingerprint, read_meta

    recorded = read_meta(path).get("trained_from")
    files = {"local": run.local, "imitation": run.policy("imitation")}
    if not isinstance(recorded, dict):
        return []
    return [
        name
        for name, digest in recorded.items()
        if name in files and (not files[name].is_file() or fingerprint(files[name]) != digest)
    ]


def discard_resume(cfg: RunConfig, run: RunDir, stage: str) -> None:
    """Delete a stage's in-progress checkpoint (``--restart``: the stage starts over)."""
    from rovr.train.common import discard

    discard(stage_resume(cfg, run, stage))


def check_stage_inputs(cfg: RunConfig, run: RunDir, stage: str) -> None:
    """Refuse, in one line, a stage whose earlier stages' checkpoints are not in ``run``, or were made
    for another architecture — before ``rovr imitate`` / ``rovr train-policy`` write anything there."""
    from rovr.checkpoint import read_meta
    from rovr.train.common import ARCH_KEYS, LOCAL_ARCH_KEYS, check_same_architecture, mdp_of

    if stage in ("imitate", "train-policy"):
        if not run.local.is_file():
            raise CheckpointError(f"'{run.local}' does not exist; run `rovr pretrain-local` first")
        check_same_architecture(cfg, read_meta(run.local), run.local, LOCAL_ARCH_KEYS)
        other = [
            d for d in config_differences(cfg, run.local, "pretrain-local") if d.startswith("data.source:")
        ]
        if other:  # allowed (a policy may be trained on other videos), but never unnoticed
            log.warning(
                "%s trains on other data than Γ (%s) was trained on (%s); pass --data with the "
                "run's data (and its --config / --set values) if that is not what you meant",
                stage,
                run.local.name,
                other[0].removeprefix("data.source: "),
            )
    if stage == "train-policy" and cfg.ppg.warm_start:
        start = run.policy("imitation")
        if not start.is_file():
            raise CheckpointError(
                f"'{start}' does not exist; run `rovr imitate` first (or --set ppg.warm_start=false)"
            )
        check_same_architecture(cfg, read_meta(start), start, ARCH_KEYS)
        if (started_in := mdp_of(start)) not in (None, cfg.condition_on):  # allowed, never unnoticed
            log.warning(
                "train-policy (condition_on=%s) warm-starts from an imitation policy trained with "
                "condition_on=%s (%s); pass --set condition_on=%s if that is not what you meant",
                cfg.condition_on,
                started_in,
                start.name,
                started_in,
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
    with RunLock(out) as lock:  # another command training here is refused before anything is read
        todo = plan_training(cfg, out, restart, policies)
        run = prepare_run(cfg, out, write=bool(todo), lock=lock)
        timing: dict[str, float] = {}
        for stage, c in todo:
            if restart:
                discard_resume(c, run, stage)
            t0 = time.time()
            run_stage(c, run, stage, progress)
            key = stage if stage != "train-policy" else f"train-policy:{_name(c)}"
            timing[key] = time.time() - t0
    return TrainResult(run, timing)


def plan_training(
    cfg: RunConfig, out: Path, restart: bool = False, policies: Sequence[RunConfig] = (), say: bool = True
) -> list[tuple[str, RunConfig]]:
    """The (stage, config) pairs ``rovr train`` runs in ``out``, every stage checked
    (:func:`check_stage_state`) before the run folder is touched; finished ones are logged (``say``)
    as skipped."""
    from rovr.train.common import check_device, check_run_architecture

    check_device(cfg)
    check_run_architecture(cfg, out)  # another architecture's folder is named as such first
    todo: list[tuple[str, RunConfig]] = []
    retraining = False  # an interrupted --restart is resumed: the stages after it are trained anew too
    for stage in STAGES:
        for c in [cfg, *policies] if stage == "train-policy" else [cfg]:
            if stage == "imitate" and not (c.ppg.warm_start or any(p.ppg.warm_start for p in policies)):
                continue
            if check_stage_state(c, RunDir(out), stage, restart or retraining, alone=False):
                if not restart and stage_done(c, RunDir(out), stage):
                    if not retraining and say:
                        log.info(
                            "%s: resuming the interrupted retraining in %s (%s); the stages after it are "
                            "trained again",
                            stage,
                            out,
                            stage_resume(c, RunDir(out), stage).name,
                        )
                    retraining = True
                todo.append((stage, c))
            elif any(s != stage for s, _ in todo):  # kept, but an earlier stage is to be trained anew
                raise CheckpointError(
                    f"'{stage_checkpoint(c, RunDir(out), stage)}' is finished but the {todo[0][0]} it "
                    "builds on is to be trained again; pass --restart to retrain every stage, or choose "
                    "another --out"
                )
            elif say:
                what = f"{stage} ({_name(c)})" if stage == "train-policy" else stage
                log.info("%s: already done in %s, skipping (use --restart to redo)", what, out)
    return todo


def _name(cfg: RunConfig) -> str:
    from rovr.train.ppg import policy_name

    return policy_name(cfg)


def ablations(cfg: RunConfig) -> list[RunConfig]:
    """The paper's three PPG runs (§7.3): flow+warm, flow+cold, noflow+warm.

    The cold start learns without the oracle altogether: its ``ppg.bc_coef`` (the copy teacher's
    cross-entropy in the policy loss, imitation's own objective) is 0 whatever the config says.
    """
    out = []
    for flow, warm in ((True, True), (True, False), (False, True)):
        ppg = dataclasses.replace(cfg.ppg, flow_reward=flow, warm_start=warm)
        if not warm:
            ppg = dataclasses.replace(ppg, bc_coef=0.0)
        out.append(dataclasses.replace(cfg, ppg=ppg))
    return out


def reproduce_table2(
    cfg: RunConfig,
    out: Path,
    seeds: int = 3,
    progress: bool = True,
    data: str | None = None,
    restart: bool = False,
) -> dict[str, Any]:
    """Train the three ablations for ``seeds`` training seeds and evaluate each seed's run.

    Each training seed S (``cfg.seed`` … ``cfg.seed + seeds − 1``) is a full run folder
    ``out/seed_<S>`` (its own Γ, imitation policy and three PPG policies). Finished stages are skipped
    and a seed whose run is unchanged since its evaluation keeps that evaluation, so rerunning the
    command costs seconds (``restart``: every stage of these seeds is trained again). The Table 2 rows are averaged over training seeds (mean ± std across
    seeds) — over this command's seeds and every other ``seed_<S>`` folder in ``out`` evaluated with
    the same settings, so seeds trained by parallel processes (``--seeds 1 --set seed=S``, one
    ``--out``) are combined by whichever finishes last, or by rerunning the command. Each run is
    evaluated with ``cfg.eval.seeds`` corruption seeds (`rovr reproduce` sets 1 unless ``--set
    eval.seeds=N`` is given).
    """
    from rovr.evaluate import (
        check_evaluation_data,
        check_out_beside_data,
        combine_seed_reports,
        evaluate_run,
        seed_runs,
    )

    if seeds < 1:
        raise ConfigError(f"--seeds must be >= 1 training seed (got {seeds})")
    check_out_beside_data(out, data)  # refused now, not after the first seed's training
    check_evaluation_data(cfg, data)
    reports, folders = [], []
    for s in range(seeds):
        c = dataclasses.replace(cfg, seed=cfg.seed + s)
        runs = ablations(c)
        folder = out / f"seed_{c.seed}"
        res = train_all(runs[0], folder, progress, restart=restart, policies=runs[1:])
        report = None if res.timing else _evaluated(folder, c, data, same_seed=True)
        if report is not None:
            log.info("seed %d: the run is unchanged since its evaluation; kept %s", c.seed, folder / "eval")
        else:
            report = evaluate_run(folder, folder / "eval", cfg=c, data=data, timing=res.timing).report
        reports.append(report)
        folders.append(folder / "eval")
    ours = {cfg.seed + s for s in range(seeds)}
    for folder in seed_runs(out):
        seed = int(folder.name.removeprefix("seed_"))
        if seed not in ours:
            other = _evaluated(folder, dataclasses.replace(cfg, seed=seed), data, same_seed=False)
            if other is not None:
                log.info("Table 2 also averages %s (seed %s, evaluated with these settings)", folder, seed)
                reports.append(other)
                folders.append(folder / "eval")
    # in seed order, whichever process combines: the page shows the lowest seed's figures
    order = sorted(range(len(reports)), key=lambda i: int(folders[i].parent.name.removeprefix("seed_")))
    return combine_seed_reports([reports[i] for i in order], out, [folders[i] for i in order])


#: Settings that do not change what a seed's evaluation measures.
_EVAL_FREE = FREE_KEYS | {"device", "threads"}


def _evaluated(folder: Path, cfg: RunConfig, data: str | None, same_seed: bool) -> dict[str, Any] | None:
    """The report of ``folder/eval`` if it evaluated ``folder``'s current checkpoints, trained and
    evaluated with ``cfg`` (its seed aside unless ``same_seed``), on ``data`` with ``cfg.eval.seeds``
    corruption seeds."""
    import json

    from rovr.config import as_recorded, to_dict
    from rovr.evaluate import evaluation_source

    path = folder / "eval" / "report.json"
    try:
        report = json.loads(path.read_text())
        checkpoints = [f.stat().st_mtime for f in folder.glob("*.safetensors")]
        evaluated_at = path.stat().st_mtime
    except (OSError, ValueError):
        return None
    if not isinstance(report, dict) or not checkpoints or max(checkpoints) > evaluated_at:
        return None
    datasets = report.get("datasets") or {}
    if (
        datasets.get("source") != evaluation_source(cfg, data)
        or len(datasets.get("seeds") or []) != cfg.eval.seeds
    ):
        return None
    recorded = report.get("config")
    theirs = flat_config(as_recorded(recorded) if isinstance(recorded, dict) else recorded, "")
    mine = flat_config(to_dict(cfg), "")
    free = {f".{key}" for key in _EVAL_FREE | ({"seed"} if not same_seed else set())}
    if any(theirs.get(k) != mine.get(k) for k in set(theirs) | set(mine) if k not in free):
        return None
    return report

"""Stage 1 (Γ pretraining, §6.1): the sample pool and schedules, and tiny runs of the real trainer:
files, the λ schedule, the time budget, exact resume, bad checkpoints and NaN batches, the CLI."""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import math
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file
from torch import nn

from rovr.checkpoint import META_KEY, load_checkpoint, read_meta
from rovr.config import CorruptionConfig, DataConfig, MetricConfig, PretrainConfig, RunConfig
from rovr.data.clips import ClipSet, video_splits
from rovr.data.corruption import corrupt
from rovr.errors import CheckpointError, RovrError
from rovr.metrics.perceptual import lambda_schedule
from rovr.models.local import LocalNet, LocalNetConfig
from rovr.train import local as stage
from rovr.train.common import (
    MetricLog,
    RunDir,
    keep_freed_memory,
    load_local,
    load_model,
    prepare_run,
    read_metric_log,
)
from rovr.train.local import Batch, SamplePool, cosine_lr, pretrain_local, stage_progress

STEPS = 8
STEPS_BATCH = 4  # the training batch size of tiny(); the validation batch is larger


def tiny(steps: int = STEPS, **pretrain: Any) -> RunConfig:
    """4 videos of 6 frames at 32², a 2-level UNet of 8 channels; L_P = 1 − SSIM (no weights needed)."""
    return RunConfig(
        data=DataConfig(num_videos=4, frames=6, size=32, val_fraction=0.25, test_fraction=0.25),
        corruption=CorruptionConfig(min_valid_pairs=0),
        metric=MetricConfig(perceptual="ssim"),
        local=LocalNetConfig(base_channels=8, depth=2),
        pretrain=PretrainConfig(
            steps=steps, batch_size=STEPS_BATCH, lr=2e-3, **{"checkpoint_every": 3, **pretrain}
        ),
    )


def weights(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)[0]


def one_line(err: pytest.ExceptionInfo[BaseException]) -> str:
    msg = str(err.value)
    assert msg and "\n" not in msg
    return msg


def patch_sample(monkeypatch: pytest.MonkeyPatch, on_call: Callable[[int, Batch], Batch]) -> None:
    """Route SamplePool.sample of the training pool through ``on_call(call_number, batch)`` (1-based)."""
    real = SamplePool.sample
    calls = itertools.count(1)

    def sample(self: SamplePool, batch: int, *args: Any) -> Batch:
        out = real(self, batch, *args)
        return on_call(next(calls), out) if batch == STEPS_BATCH else out

    monkeypatch.setattr(SamplePool, "sample", sample)


def record_lambda(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Record the λ of every training step (the argument the trainer passes to the Eq. 1 loss)."""
    lams: list[float] = []
    real_loss = stage.reconstruction_loss

    def recording(x_hat: torch.Tensor, x: torch.Tensor, metric: Any, lam: float) -> torch.Tensor:
        lams.append(lam)
        return real_loss(x_hat, x, metric, lam)

    monkeypatch.setattr(stage, "reconstruction_loss", recording)
    return lams


# ============================================================================= schedules and pool


def test_progress_is_the_larger_of_steps_and_time() -> None:
    assert stage_progress(5, 0.0, 10, 0.0) == 0.5  # no budget: steps only
    assert stage_progress(5, 1e6, 10, 0.0) == 0.5
    assert stage_progress(1, 45.0, 10, 1.0) == 0.75  # 45 s of a 1-minute budget
    assert stage_progress(9, 6.0, 10, 1.0) == 0.9
    assert stage_progress(3, 120.0, 10, 1.0) == 1.0  # clipped


def test_cosine_lr_by_hand() -> None:
    assert cosine_lr(1e-3, 0.0) == pytest.approx(1e-3)
    assert cosine_lr(1e-3, 1.0) == pytest.approx(0.05e-3)
    assert cosine_lr(1e-3, 0.5) == pytest.approx(1e-3 * (0.05 + 0.95 * 0.5))
    values = [cosine_lr(1.0, f) for f in np.linspace(0, 1, 11)]
    assert all(a > b for a, b in zip(values, values[1:]))


def test_pool_holds_the_corruptions_of_corrupt() -> None:
    """Masks, and frames with holes zeroed, are those of corrupt() with the pool's seeds (both storage modes)."""
    for corruption in (
        CorruptionConfig(min_valid_pairs=0),
        CorruptionConfig(min_valid_pairs=0, noise_std=0.05),
    ):
        cfg = dataclasses.replace(tiny(), corruption=corruption)
        pool = SamplePool(cfg, "train", variants=2, seed=3)
        clips = ClipSet(cfg.data, "train")
        assert pool.num_clips == len(clips) and len(pool) == 2 * len(clips)
        assert (pool.degraded is not None) == (corruption.noise_std > 0)
        for v, i in itertools.product(range(2), range(len(clips))):
            c = corrupt(clips[i].frames, corruption, seed=3 * 1_000_003 + v * 10_007 + i)
            row = v * len(clips) + i
            assert np.array_equal(pool.masks[row].numpy(), c.masks)
            frames = pool.degraded[row] if pool.degraded is not None else pool.original[i]
            known = frames.permute(0, 2, 3, 1).numpy() * ~c.masks[..., None]
            assert np.array_equal(known, c.frames)
            assert np.array_equal(pool.original[i].permute(0, 2, 3, 1).numpy(), c.original)


def test_pool_draws_fewer_variants_when_memory_is_short() -> None:
    cfg = tiny()
    pool = SamplePool(cfg, "train", variants=8, seed=0)
    clips, frame = pool.num_clips, cfg.data.frames * cfg.data.size**2  # bytes of one clip's masks
    assert pool.variants == 8 and pool.masks.shape == (8 * clips, 6, 32, 32)
    small = SamplePool(cfg, "train", variants=8, seed=0, max_bytes=clips * frame * (3 + 2))  # originals + 2
    assert small.variants == 2 and len(small) == 2 * clips
    assert torch.equal(small.masks, pool.masks[: 2 * clips])  # the same seeds, just fewer of them


def test_pool_samples_a_uniform_k_subset_of_the_same_clip() -> None:
    cfg = tiny()
    pool = SamplePool(cfg, "train", variants=3, seed=0)
    n, clips = pool.num_frames, pool.num_clips
    # frame t of clip c is the constant (16 c + t + 1) / 255, so a batch reveals what was drawn
    code = (16 * torch.arange(clips)[:, None] + torch.arange(n)[None] + 1).to(torch.uint8)
    pool.original = code[:, :, None, None, None].expand_as(pool.original).contiguous()
    gen = torch.Generator().manual_seed(0)
    b = pool.sample(2000, 2, gen, torch.device("cpu"))
    assert b.target.shape == (2000, 3, 32, 32) and b.cond.shape == (2000, 2, 3, 32, 32)
    assert b.target_mask.shape == (2000, 1, 32, 32) and b.cond_masks.shape == (2000, 2, 1, 32, 32)
    # holes are zeroed in every input frame; known pixels are the originals
    assert (b.target * b.target_mask).abs().max() == 0 and (b.cond * b.cond_masks).abs().max() == 0
    assert torch.equal(b.target * (1 - b.target_mask), b.original * (1 - b.target_mask))

    def decode(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:  # (B, 3, H, W) → code, from a known pixel
        values = torch.where(m.bool(), torch.nan, x * 255).flatten(1)
        return values.nanmedian(dim=1).values.round().long() - 1

    t_code = b.original.flatten(1)[:, 0].mul(255).round().long() - 1
    c_code = torch.stack([decode(b.cond[:, j], b.cond_masks[:, j]) for j in range(2)], 1)
    assert torch.equal(c_code // 16, (t_code // 16)[:, None].expand(-1, 2))  # same clip
    t, i, j = t_code % 16, c_code[:, 0] % 16, c_code[:, 1] % 16
    assert bool(((i < j) & (i != t) & (j != t)).all())  # two distinct frames ≠ t, in increasing order
    counts = Counter(zip(t.tolist(), i.tolist(), j.tolist()))
    cells = n * (n - 1) * (n - 2) // 2  # (t, {i, j}) combinations, each with probability 1 / cells
    assert len(counts) == cells
    expected = 2000 / cells
    chi2 = sum((c - expected) ** 2 / expected for c in counts.values())
    assert chi2 < cells + 5 * math.sqrt(2 * cells)  # chi-square with cells - 1 dof, far in the tail


# ============================================================================= the trainer


def test_smoke_run_writes_gamma_logs_and_follows_the_lambda_schedule(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lams = record_lambda(monkeypatch)
    cfg = tiny(steps=10, lambda_rate=-5.0)
    run = prepare_run(cfg, tmp_path / "run")
    assert pretrain_local(cfg, run, progress=False) == run.local
    pc = cfg.pretrain
    assert lams == pytest.approx([lambda_schedule(s, 10, pc.lambda_max, pc.lambda_rate) for s in range(10)])
    assert lams[0] == 0.0 and lams[5] < 0.1 * pc.lambda_max < lams[9]  # slow, then fast (r < 0)

    meta = json.loads(run.local.with_suffix(".json").read_text())
    assert meta["stage"] == "pretrain-local" and meta["step"] == 10 and meta["perceptual"] == "ssim"
    assert meta["config"]["local"] == {
        "base_channels": 8,
        "depth": 2,
        "align": True,
        "max_shift": 0.125,
        "repair_known": False,
    }
    net = LocalNet(cfg.local, cfg.k)
    load_model(run.local, net, cfg, "rovr pretrain-local")
    assert not any(k.startswith(("opt.", "net.")) for k in weights(run.local))
    assert not run.resume("local").exists() and not run.resume("local").with_suffix(".json").exists()
    (row,) = read_metric_log(run.logs)
    assert row["step"] == 10 and row["local/lr"] == pytest.approx(cosine_lr(pc.lr, 0.9))
    assert math.isfinite(row["local/val_perceptual"]) and row["charts/images_per_s"] > 0
    assert list((run.logs / "pretrain-local").glob("events.out.tfevents.*"))  # TensorBoard: a run per stage


def test_metric_log_keeps_each_step_of_a_series_once(tmp_path: Path) -> None:
    """A resumed series drops its rows after the checkpoint's step, a fresh start drops the whole series
    (training that --restart replaced); other stages, other policies and foreign lines are kept, and a
    line a killed run left half-written is skipped."""

    def write(log: MetricLog, steps: range) -> None:
        for step in steps:
            log.log(step, {"loss": float(step)})
        log.close()

    def steps(stage: str, policy: str | None = None) -> list[int]:
        rows = read_metric_log(tmp_path)
        return [r["step"] for r in rows if r["stage"] == stage and r.get("policy") == policy]

    write(MetricLog(tmp_path, "pretrain-local"), range(1, 6))
    write(MetricLog(tmp_path, "ppg", "a"), range(1, 4))
    write(MetricLog(tmp_path, "ppg", "b"), range(1, 4))
    with (tmp_path / "metrics.jsonl").open("a") as f:
        f.write('{"stage": "ppg", "policy": "a", "step": 9, "half')  # killed mid-line
    assert steps("ppg", "a") == [1, 2, 3]
    write(MetricLog(tmp_path, "pretrain-local", resumed_at=3), range(4, 7))
    assert steps("pretrain-local") == [1, 2, 3, 4, 5, 6]
    write(MetricLog(tmp_path, "ppg", "a"), range(1, 3))  # started afresh
    assert steps("ppg", "a") == [1, 2] and steps("ppg", "b") == [1, 2, 3]
    assert "half" not in (tmp_path / "metrics.jsonl").read_text()
    assert len(list((tmp_path / "ppg-a").glob("events.out.tfevents.*"))) == 1  # the replaced run's are gone
    assert len(list((tmp_path / "pretrain-local").glob("events.out.tfevents.*"))) == 2
    MetricLog(tmp_path, "imitation", enabled=False).log(0, {"loss": 1.0})  # another rank: writes nothing
    assert steps("imitation") == [] and not (tmp_path / "imitation").exists()


def test_time_budget_ends_the_schedules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = itertools.count(step=0.5)  # every clock reading advances half a second
    monkeypatch.setattr(stage, "time", SimpleNamespace(perf_counter=lambda: next(clock)))
    lams = record_lambda(monkeypatch)
    cfg = tiny(steps=300, max_minutes=0.25)  # 15 s: a few steps of the fake clock
    run = prepare_run(cfg, tmp_path / "run")
    pretrain_local(cfg, run, progress=False)
    meta = json.loads(run.local.with_suffix(".json").read_text())
    assert 2 < meta["step"] < 100 and meta["seconds"] >= 15.0
    assert json.loads(run.splits.read_text()) == video_splits(cfg.data)  # what evaluate holds it to
    assert len(lams) == meta["step"]
    assert lams[-1] > 0.5 * cfg.pretrain.lambda_max  # by steps alone it would still be ~0


def test_a_budget_spent_before_the_first_step_is_said(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    clock = itertools.count(step=60.0)  # every clock reading a minute later: the budget is gone at once
    monkeypatch.setattr(stage, "time", SimpleNamespace(perf_counter=lambda: next(clock)))
    cfg = tiny(steps=300, max_minutes=0.25)
    run = prepare_run(cfg, tmp_path / "run")
    with caplog.at_level(logging.WARNING, logger="rovr"):
        pretrain_local(cfg, run, progress=False)
    assert json.loads(run.local.with_suffix(".json").read_text())["step"] == 0
    assert "Γ was saved untrained: pretrain.max_minutes=0.25 ran out before its first step" in caplog.text


def test_interrupted_run_resumes_exactly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tiny()
    straight = prepare_run(cfg, tmp_path / "straight")
    pretrain_local(cfg, straight, progress=False)

    def interrupt(call: int, batch: Batch) -> Batch:
        if call == 6:  # Ctrl-C while drawing the batch of step 6 (5 steps done)
            raise KeyboardInterrupt
        return batch

    run = prepare_run(cfg, tmp_path / "interrupted")
    with monkeypatch.context() as m:
        patch_sample(m, interrupt)
        with pytest.raises(KeyboardInterrupt):
            pretrain_local(cfg, run, progress=False)
    tensors, meta = load_checkpoint(run.resume("local"))
    assert meta["step"] == 5 and not run.local.exists()
    adam_steps = [float(v) for k, v in tensors.items() if k.startswith("opt.") and k.endswith(".step")]
    assert adam_steps and set(adam_steps) == {5.0}

    pretrain_local(cfg, run, progress=False)  # resumes: same weights as the run never interrupted
    assert json.loads(run.local.with_suffix(".json").read_text())["step"] == STEPS
    a, b = weights(straight.local), weights(run.local)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not run.resume("local").exists()


def test_an_interrupt_after_a_step_resumes_exactly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C between steps (in the progress bar, the validation pass, logging or a checkpoint): the
    step's batch has been drawn, so the resume checkpoint holds the sampler state after it (it held
    the state before, and the resumed run trained on that batch twice)."""
    cfg = tiny()
    straight = prepare_run(cfg, tmp_path / "straight")
    pretrain_local(cfg, straight, progress=False)
    tqdm = stage.tqdm

    class Bar:  # the stage's bar, interrupted as its 4th step is counted
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            self.bar, self.n = tqdm(*args, **kwargs), 0

        def update(self, k: int) -> None:
            self.n += 1
            if self.n == 4:
                raise KeyboardInterrupt
            self.bar.update(k)

        def __getattr__(self, name: str) -> Any:
            return getattr(self.bar, name)

    run = prepare_run(cfg, tmp_path / "interrupted")
    with monkeypatch.context() as m:
        m.setattr(stage, "tqdm", Bar)
        with pytest.raises(KeyboardInterrupt):
            pretrain_local(cfg, run, progress=False)
    assert load_checkpoint(run.resume("local"))[1]["step"] == 4
    pretrain_local(cfg, run, progress=False)
    a, b = weights(straight.local), weights(run.local)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_crash_resumes_from_the_last_periodic_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = tiny()
    straight = prepare_run(cfg, tmp_path / "straight")
    pretrain_local(cfg, straight, progress=False)

    def crash(call: int, batch: Batch) -> Batch:
        if call == 5:
            raise MemoryError("killed")  # nothing is saved on a crash: the step-3 checkpoint stays
        return batch

    run = prepare_run(cfg, tmp_path / "crashed")
    with monkeypatch.context() as m:
        patch_sample(m, crash)
        with pytest.raises(MemoryError):
            pretrain_local(cfg, run, progress=False)
    assert load_checkpoint(run.resume("local"))[1]["step"] == 3
    pretrain_local(cfg, run, progress=False)
    a, b = weights(straight.local), weights(run.local)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_nan_batch_is_one_line_and_keeps_earlier_checkpoints(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = tiny()
    run = prepare_run(cfg, tmp_path / "run")
    pretrain_local(cfg, run, progress=False)
    finished = run.local.read_bytes(), run.local.with_suffix(".json").read_text()

    def poison(call: int, batch: Batch) -> Batch:
        if call == 5:
            batch.cond[0, 0, :, 3, 3] = torch.nan  # a known pixel of a conditioning frame
            batch.cond_masks[0, 0, :, 3, 3] = 0
        return batch

    patch_sample(monkeypatch, poison)
    with pytest.raises(RovrError) as err:
        pretrain_local(cfg, run, progress=False)
    msg = one_line(err)
    assert "non-finite loss" in msg and "step 4" in msg and str(run.resume("local")) in msg
    assert (run.local.read_bytes(), run.local.with_suffix(".json").read_text()) == finished
    tensors, meta = load_checkpoint(run.resume("local"))
    assert meta["step"] == 3 and all(
        bool(torch.isfinite(v).all()) for v in tensors.values() if v.is_floating_point()
    )


def test_resume_checkpoint_of_another_architecture_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = tiny()
    run = prepare_run(cfg, tmp_path / "run")

    def interrupt(call: int, batch: Batch) -> Batch:
        if call == 4:
            raise KeyboardInterrupt
        return batch

    with monkeypatch.context() as m:
        patch_sample(m, interrupt)
        with pytest.raises(KeyboardInterrupt):
            pretrain_local(cfg, run, progress=False)
    other = dataclasses.replace(cfg, local=LocalNetConfig(base_channels=12, depth=2))
    with pytest.raises(CheckpointError) as err:
        pretrain_local(other, RunDir(run.root), progress=False)
    msg = one_line(err)
    assert "another config" in msg and "local" in msg and "base_channels" in msg

    # config metadata that lies about the tensors: the shape check still refuses them
    meta = load_checkpoint(run.resume("local"))[1]
    meta["config"]["local"]["base_channels"] = 12
    rewrite_meta(run.resume("local"), json.dumps(meta))
    with pytest.raises(CheckpointError) as err:
        pretrain_local(other, RunDir(run.root), progress=False)
    assert "does not fit this model" in one_line(err)


def test_final_checkpoint_into_another_architecture_is_refused(tmp_path: Path) -> None:
    cfg = tiny(steps=2)
    run = prepare_run(cfg, tmp_path / "run")
    pretrain_local(cfg, run, progress=False)
    other = dataclasses.replace(cfg, local=LocalNetConfig(base_channels=8, depth=3))
    with pytest.raises(CheckpointError) as err:
        load_model(run.local, LocalNet(other.local, other.k), other, "rovr pretrain-local")
    assert "depth" in one_line(err)


def test_load_local_gives_the_saved_gamma_in_eval_mode(tmp_path: Path) -> None:
    """load_local = LocalNet(cfg) + load_model + eval, on the device; a missing file names the command."""
    cfg = tiny(steps=2)
    run = prepare_run(cfg, tmp_path / "run")
    pretrain_local(cfg, run, progress=False)
    net = load_local(run.local, cfg, "cpu")
    assert not net.training and next(net.parameters()).device.type == "cpu"
    tensors, _ = load_checkpoint(run.local)
    assert all(torch.equal(p.detach(), tensors[n]) for n, p in net.named_parameters())
    with pytest.raises(CheckpointError) as err:
        load_local(tmp_path / "none.safetensors", cfg, hint="rovr train-policy")
    assert "run `rovr train-policy` first" in one_line(err)


def test_final_checkpoint_serves_another_policy_config(tmp_path: Path) -> None:
    """Γ's check covers only what shapes Γ (k, local): a new policy architecture reuses stage 1's Γ."""
    cfg = tiny(steps=2)
    run = prepare_run(cfg, tmp_path / "run")
    pretrain_local(cfg, run, progress=False)
    other = dataclasses.replace(cfg, policy=dataclasses.replace(cfg.policy, hidden=cfg.policy.hidden + 8))
    net = LocalNet(other.local, other.k)
    load_model(run.local, net, other, "rovr pretrain-local")
    tensors, _ = load_checkpoint(run.local)
    assert all(torch.equal(p.detach(), tensors[n]) for n, p in net.named_parameters())
    with pytest.raises(CheckpointError) as err:  # k shapes Γ's input: still refused
        load_model(
            run.local, LocalNet(other.local, 3), dataclasses.replace(other, k=3), "rovr pretrain-local"
        )
    assert "another config" in one_line(err) and "k:" in one_line(err)


def test_checkpoint_from_before_a_new_config_field_still_loads(tmp_path: Path) -> None:
    """A field added later (here policy.pairwise) takes its default when an older checkpoint is read."""
    from rovr.models.policy import PolicyConfig, build_actor
    from rovr.train.common import save_model

    cfg = dataclasses.replace(tiny(steps=2), policy=PolicyConfig(kind="pointer", cell=8, hidden=16, embed=0))
    actor = build_actor(cfg.policy, cfg.data.frames)
    path = tmp_path / "policy_old.safetensors"
    save_model(path, actor, cfg)
    meta_path = path.with_suffix(".json")
    meta = json.loads(meta_path.read_text())
    del meta["config"]["policy"]["pairwise"]  # as written before the field existed
    meta_path.write_text(json.dumps(meta))
    load_model(path, build_actor(cfg.policy, cfg.data.frames), cfg, "rovr imitate")
    newer = dataclasses.replace(cfg, policy=dataclasses.replace(cfg.policy, pairwise=False))
    with pytest.raises(CheckpointError) as err:  # a non-default value is still a different policy
        load_model(path, build_actor(newer.policy, newer.data.frames), newer, "rovr imitate")
    assert "pairwise" in one_line(err)


def test_a_record_from_before_condition_on_was_trained_on_observed_frames(tmp_path: Path) -> None:
    """Runs recorded before ``condition_on`` existed conditioned on observed pixels, not today's default
    (the reconstructions): their checkpoints and config.yaml read as ``observed``, so `rovr train` with
    today's default refuses to skip them (naming the setting) and `rovr evaluate` plays them as trained."""
    from rovr.config import read_run_config, to_dict
    from rovr.pipeline import config_differences
    from rovr.train.common import save_model

    cfg = tiny(steps=2)
    assert cfg.condition_on == "current"
    path = tmp_path / "policy_imitation.safetensors"
    save_model(path, nn.Linear(2, 2), cfg)
    assert config_differences(cfg, path, "imitate") == []
    meta = read_meta(path)
    del meta["config"]["condition_on"]  # as written before the field existed
    rewrite_meta(path, json.dumps(meta))
    assert config_differences(cfg, path, "imitate") == ["condition_on: 'observed' → 'current'"]
    assert config_differences(cfg, path, "pretrain-local") == []  # Γ's pretraining does not depend on it
    old = to_dict(cfg)
    del old["condition_on"]
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(old))
    assert read_run_config(tmp_path / "config.yaml").condition_on == "observed"
    from rovr.train.common import mdp_of

    assert mdp_of(path) == "observed" and mdp_of(tmp_path / "missing.safetensors") is None


def test_a_policy_warm_started_from_the_other_mdp_is_said(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """`rovr train-policy` in one MDP from an imitation policy trained in the other: allowed (an
    experiment), never unnoticed."""
    from rovr.models.policy import PolicyConfig, build_actor
    from rovr.pipeline import check_stage_inputs
    from rovr.train.common import save_model

    cfg = dataclasses.replace(tiny(steps=2), policy=PolicyConfig(kind="pointer", cell=8, hidden=16, embed=0))
    run = RunDir(tmp_path)
    save_model(run.local, LocalNet(cfg.local, cfg.k), cfg)
    observed = dataclasses.replace(cfg, condition_on="observed")
    save_model(run.policy("imitation"), build_actor(cfg.policy, cfg.data.frames), observed)
    with caplog.at_level(logging.WARNING, logger="rovr"):
        check_stage_inputs(observed, run, "train-policy")
        assert not caplog.records
        check_stage_inputs(cfg, run, "train-policy")
    (line,) = [r.getMessage() for r in caplog.records]
    assert "condition_on=current" in line and "trained with condition_on=observed" in line


def rewrite_meta(path: Path, text: str) -> None:
    """Replace the metadata held in a checkpoint's header by ``text`` (its tensors unchanged)."""
    tensors = load_file(str(path))
    save_file(tensors, str(path), metadata={META_KEY: text})


@pytest.mark.parametrize("damage", ["truncate", "json", "stage"])
def test_damaged_resume_checkpoint_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, damage: str
) -> None:
    cfg = tiny()
    run = prepare_run(cfg, tmp_path / "run")

    def interrupt(call: int, batch: Batch) -> Batch:
        if call == 4:
            raise KeyboardInterrupt
        return batch

    with monkeypatch.context() as m:
        patch_sample(m, interrupt)
        with pytest.raises(KeyboardInterrupt):
            pretrain_local(cfg, run, progress=False)
    path = run.resume("local")
    if damage == "truncate":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif damage == "json":
        rewrite_meta(path, '{"step": 3, "conf')
    else:
        rewrite_meta(path, json.dumps({**load_checkpoint(path)[1], "stage": "imitate"}))
    with pytest.raises(CheckpointError) as err:
        pretrain_local(cfg, run, progress=False)
    assert str(path) in one_line(err)
    assert not run.local.exists()


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rovr.cli", *args], capture_output=True, text=True, timeout=120, check=False
    )


TINY_SETS = [
    "data.num_videos=4",
    "data.frames=6",
    "data.size=32",
    "data.val_fraction=0.25",
    "data.test_fraction=0.25",
    "corruption.min_valid_pairs=0",
    "metric.perceptual=ssim",
    "local.base_channels=8",
    "local.depth=2",
    "pretrain.steps=4",
    "pretrain.batch_size=4",
    "pretrain.max_minutes=0",
]


def test_cli_pretrain_local_and_bad_values(tmp_path: Path) -> None:
    sets = [a for s in TINY_SETS for a in ("--set", s)]
    res = _cli("pretrain-local", "--out", str(tmp_path / "run"), "--no-progress", *sets)
    assert res.returncode == 0, res.stderr
    assert "local.safetensors" in res.stdout and (tmp_path / "run" / "local.json").is_file()

    res = _cli(
        "pretrain-local", "--out", str(tmp_path / "bad"), "--no-progress", *sets, "--set", "pretrain.lr=-1"
    )
    assert res.returncode == 2 and "Traceback" not in res.stderr
    (line,) = res.stderr.strip().splitlines()
    assert "pretrain.lr" in line


_REFAULT = """
import resource, sys
import torch
import yaml
import rovr.models.local as local
from rovr.train.common import keep_freed_memory
applied = keep_freed_memory() if sys.argv[1] == "keep" else None
local.CPU_BATCH_PIXELS = 1 << 40  # one pass over the whole batch
net = local.LocalNet(local.LocalNetConfig(base_channels=8, depth=2), k=2).eval()
B, S = 128, 64
args = torch.rand(B, 3, S, S), torch.zeros(B, 1, S, S), torch.rand(B, 2, 3, S, S), torch.zeros(B, 2, 1, S, S)
faults = []
with torch.no_grad():
    for _ in range(6):
        f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        net(*args)
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
print(applied, min(faults[2:]))  # the fewest of passes 3-6: the heap has grown by then
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_keep_freed_memory_stops_page_faulting_activations_in_again(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """By default glibc maps each large activation afresh and every later Γ pass over a batch of 128
    still page-faults 5·10^4-1.5·10^5 pages in; after keep_freed_memory() the freed memory is reused
    (passes 3-6: 0 faults, now and then one pass of 4096). A GLIBC_TUNABLES malloc setting of the
    user's own stands (not applied)."""
    thp = Path("/sys/kernel/mm/transparent_hugepage/enabled")
    if thp.is_file() and "[always]" in thp.read_text():
        pytest.skip("transparent huge pages for every mapping: 512x fewer faults either way")
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}

    procs = {
        arm: subprocess.Popen(
            [sys.executable, "-c", _REFAULT, arm], env=env, stdout=subprocess.PIPE, text=True
        )
        for arm in ("default", "keep")
    }
    out = {name: p.communicate()[0].split() for name, p in procs.items()}
    assert all(p.returncode == 0 for p in procs.values())
    default, kept = int(out["default"][1]), int(out["keep"][1])
    assert out["keep"][0] == "True" and default > 20_000 and kept < default / 20, (default, kept)
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.trim_threshold=0")
    assert keep_freed_memory() is False

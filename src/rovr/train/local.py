"""Stage 1 — pretraining of the local network Γ (paper §6.1).

Each sample is a target frame of a corrupted training clip with a *random* set of k other frames
(decoupled from any policy, §6.1). Γ minimises Eq. 1,
``L_R = λ · L_P(x̂, x) + (1 − λ) · MSE(x̂, x)``, with λ growing exponentially from 0 to λ_max and the
learning rate following a cosine from ``pretrain.lr`` to 5 % of it. Both schedules run on the
*progress* of the stage, max(step / steps, seconds / (60 · max_minutes)), so a run stopped by its time
budget still ends with λ = λ_max and the smallest learning rate.

Checkpoints (weights, Adam state, step, sampler RNG, seconds trained) are written atomically every
``checkpoint_every`` steps and when the run is interrupted (Ctrl-C); the next run resumes from there
with the same samples an uninterrupted run would have drawn. A non-finite loss or gradient stops the
run with one error line and leaves the last checkpoint as it was.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from tqdm.auto import tqdm

from rovr.checkpoint import atomic_write_json
from rovr.config import CorruptionConfig, RunConfig
from rovr.data.clips import ClipSet, video_splits
from rovr.data.corruption import corrupt
from rovr.errors import RovrError
from rovr.metrics.perceptual import PerceptualMetric, build_perceptual, lambda_schedule, reconstruction_loss
from rovr.models.local import LocalNet
from rovr.train.common import (
    LOCAL_ARCH_KEYS,
    MetricLog,
    Progress,
    RunDir,
    discard,
    load_resume,
    save_model,
    save_resume,
    seed_everything,
    setup_torch,
)

log = logging.getLogger(__name__)

STAGE = "pretrain-local"
LR_FLOOR = 0.05
"""The cosine learning-rate schedule ends at this fraction of ``pretrain.lr``."""
MAX_GRAD_NORM = 1.0
"""Gradients are clipped to this global norm."""
POOL_VARIANTS = 8
"""Corruptions (mask seeds) drawn per training clip when the pool is built."""
POOL_MAX_BYTES = 2 << 30
"""Fewer variants are drawn when the pool would hold more than this many bytes."""


class Batch(NamedTuple):
    """One training batch of Γ: B targets, each with k conditioning frames."""

    target: torch.Tensor  # (B, 3, H, W) corrupted target x̄_t, holes zeroed
    target_mask: torch.Tensor  # (B, 1, H, W) 1 = hole
    cond: torch.Tensor  # (B, k, 3, H, W) corrupted conditioning frames, holes zeroed
    cond_masks: torch.Tensor  # (B, k, 1, H, W)
    original: torch.Tensor  # (B, 3, H, W) ground truth x_t


def _degrades(cfg: CorruptionConfig) -> bool:
    """Whether the corruption changes known pixels too (noise, brightness, blur of paper §8)."""
    return cfg.noise_std > 0 or cfg.brightness > 0 or cfg.blur_sigma > 0


class SamplePool:
    """The corrupted clips of one split as uint8 tensors; draws (target, random k-set) batches.

    ``variants`` corruptions (mask seeds) of every clip are drawn up front, so a step costs no mask
    generation; fewer when they would exceed ``max_bytes``. The original clips are stored once; the
    corrupted frames are the originals with holes zeroed, so they are only stored (per variant) when
    the corruption also degrades known pixels.
    """

    def __init__(
        self, cfg: RunConfig, split: str, variants: int, seed: int, max_bytes: int = POOL_MAX_BYTES
    ) -> None:
        clips = ClipSet(cfg.data, split)
        if len(clips) == 0:
            raise RovrError(
                f"no {split} clips in '{cfg.data.source}'; add videos or lower data.frames / data.val_fraction"
            )
        t_, s = cfg.data.frames, cfg.data.size
        clip_bytes = t_ * s * s * (4 if _degrades(cfg.corruption) else 1)  # masks (+ degraded frames)
        fit = (max_bytes - len(clips) * t_ * 3 * s * s) // max(1, len(clips) * clip_bytes)
        self.variants = int(max(1, min(variants, fit)))
        if self.variants < variants:
            log.warning(
                "%s pool: %d mask variants per clip instead of %d (memory)", split, self.variants, variants
            )
        originals = [clips[i].frames for i in range(len(clips))]
        degraded, masks = [], []
        for v in range(self.variants):
            for i, frames in enumerate(originals):
                c = corrupt(frames, cfg.corruption, seed=seed * 1_000_003 + v * 10_007 + i)
                masks.append(c.masks)
                if _degrades(cfg.corruption):
                    degraded.append(c.frames)
        self.original = _to_tensor(np.stack(originals))  # (C, T, 3, H, W) uint8
        self.degraded = _to_tensor(np.stack(degraded)) if degraded else None  # (V·C, T, 3, H, W) or None
        self.masks = torch.from_numpy(np.stack(masks))  # (V·C, T, H, W) bool
        self.num_clips = len(originals)
        self.num_frames = t_

    def __len__(self) -> int:
        """Number of corrupted clips (variants × clips)."""
        return int(self.masks.shape[0])

    def sample(self, batch: int, k: int, gen: torch.Generator, device: torch.device) -> Batch:
        """``batch`` random (corrupted clip, target t, k distinct frames ≠ t in increasing order)."""
        n = self.num_frames
        row = torch.randint(len(self), (batch,), generator=gen)  # (B,) corrupted clip
        t = torch.randint(n, (batch,), generator=gen)  # (B,)
        keys = torch.rand(batch, n, generator=gen)
        keys[torch.arange(batch), t] = 2.0  # never pick t itself
        cond = keys.argsort(dim=1)[:, :k].sort(dim=1).values  # (B, k) a uniform k-subset, i < j
        idx = torch.cat([t[:, None], cond], 1)  # (B, 1 + k)
        frames = self.degraded if self.degraded is not None else self.original
        clip = row if self.degraded is not None else row % self.num_clips
        m = self.masks[row[:, None], idx].to(device)[:, :, None].float()  # (B, 1 + k, 1, H, W)
        f = frames[clip[:, None], idx].to(device).float().div_(255).mul_(1 - m)  # (B, 1 + k, 3, H, W)
        x = self.original[row % self.num_clips, t].to(device).float().div_(255)  # (B, 3, H, W)
        return Batch(f[:, 0], m[:, 0], f[:, 1:], m[:, 1:], x)


def compute_gradients(
    net: LocalNet, perceptual: PerceptualMetric, batch: Batch, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 1 loss of Γ on ``batch``, backpropagated; gradients clipped to norm :data:`MAX_GRAD_NORM`.

    Returns (loss, gradient norm before clipping), both detached scalars. The optimizer step is the
    caller's, so a non-finite loss or gradient can be refused before any weight changes.
    """
    loss = reconstruction_loss(net(*batch[:4]), batch.original, perceptual, lam)
    net.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(net.parameters(), MAX_GRAD_NORM)
    return loss.detach(), grad_norm


def _to_tensor(frames: np.ndarray) -> torch.Tensor:
    """uint8 (N, T, H, W, 3) → uint8 (N, T, 3, H, W), contiguous."""
    return torch.from_numpy(frames).permute(0, 1, 4, 2, 3).contiguous()


def stage_progress(step: int, seconds: float, steps: int, max_minutes: float) -> float:
    """Fraction of the stage done: max(step / steps, seconds / budget), in [0, 1]; no budget if max_minutes = 0."""
    by_time = seconds / (60.0 * max_minutes) if max_minutes > 0 else 0.0
    return min(1.0, max(step / steps, by_time))


def cosine_lr(lr: float, frac: float, floor: float = LR_FLOOR) -> float:
    """Learning rate at progress ``frac``: a half cosine from ``lr`` down to ``floor · lr``."""
    return lr * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * frac)))


def pretrain_local(cfg: RunConfig, run: RunDir, progress: bool = True) -> Path:
    """Stage 1 (§6.1): train Γ on random conditioning frames; writes and returns ``run.local``.

    Resumes from ``run.resume("local")`` when it exists. Raises RovrError on a non-finite loss or
    gradient (no checkpoint is written from that state).
    """
    pc = cfg.pretrain
    started = time.perf_counter()
    seed_everything(cfg.seed)
    device = setup_torch(cfg)
    net = LocalNet(cfg.local, cfg.k).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=pc.lr)
    gen = torch.Generator().manual_seed(cfg.seed)
    state = Progress()
    resume = run.resume("local")
    resumed = resume.is_file()
    if resumed:
        state = load_resume(resume, cfg, STAGE, net, opt, gen, LOCAL_ARCH_KEYS)
        log.info("%s: resuming from step %d (%s)", STAGE, state.step, resume)
    seconds_before = state.seconds
    perceptual = build_perceptual(cfg.metric, device)
    pool = SamplePool(cfg, "train", POOL_VARIANTS, seed=cfg.seed)
    atomic_write_json(run.splits, video_splits(cfg.data))  # what is held out, for `rovr evaluate`
    val = SamplePool(cfg, "val" if cfg.data.val_fraction > 0 else "train", 1, seed=cfg.seed + 1)
    val_batch = val.sample(
        min(64, 4 * len(val) * val.num_frames), cfg.k, torch.Generator().manual_seed(123), device
    )
    log.info(
        "%s: %d training clips × %d mask variants, %s", STAGE, pool.num_clips, pool.variants, perceptual.name
    )

    def elapsed() -> float:
        return seconds_before + time.perf_counter() - started

    def keep(rng: torch.Tensor) -> None:
        save_resume(resume, cfg, STAGE, net, opt, rng, Progress(state.step, elapsed()))

    metrics = MetricLog(run.logs, STAGE, resumed_at=state.step if resumed else None)
    bar = tqdm(total=pc.steps, initial=state.step, desc=STAGE, disable=not progress, dynamic_ncols=True)
    rng, rng_step = gen.get_state(), state.step  # sampler state at the start of the step in progress
    updating = False  # True while opt.step() runs: the weights may be half-updated
    window = (time.perf_counter(), state.step)
    net.train()
    try:
        while state.step < pc.steps:
            frac = stage_progress(state.step, elapsed(), pc.steps, pc.max_minutes)
            if frac >= 1.0:
                log.info(
                    "%s: time budget of %.1f min reached at step %d of %d",
                    STAGE,
                    pc.max_minutes,
                    state.step,
                    pc.steps,
                )
                break
            lam = lambda_schedule(round(frac * pc.steps), pc.steps, pc.lambda_max, pc.lambda_rate)
            lr = cosine_lr(pc.lr, frac)
            for group in opt.param_groups:
                group["lr"] = lr
            rng, rng_step = gen.get_state(), state.step
            batch = pool.sample(pc.batch_size, cfg.k, gen, device)
            loss, grad_norm = compute_gradients(net, perceptual, batch, lam)
            if not bool(torch.isfinite(loss)):
                _diverged(state.step, f"loss {loss.item()}", resume, pc.lr)
            if not bool(torch.isfinite(grad_norm)):
                _diverged(state.step, f"gradient norm {grad_norm.item()}", resume, pc.lr)
            updating = True
            opt.step()
            state.step += 1
            updating = False
            bar.update(1)

            if state.step % 25 == 0 or state.step == pc.steps:
                now = time.perf_counter()
                scalars = {
                    "local/loss": loss.item(),
                    "local/lambda": lam,
                    "local/lr": lr,
                    "local/progress": frac,
                    "charts/images_per_s": pc.batch_size
                    * (state.step - window[1])
                    / max(now - window[0], 1e-9),
                }
                window = (now, state.step)
                if state.step % 100 == 0 or state.step == pc.steps:
                    scalars["local/val_perceptual"] = _val_loss(net, perceptual, val_batch)
                metrics.log(state.step, scalars)
                postfix = {"loss": f"{scalars['local/loss']:.4f}", "λ": f"{lam:.2f}"}
                if "local/val_perceptual" in scalars:
                    postfix["val"] = f"{scalars['local/val_perceptual']:.4f}"
                if pc.max_minutes > 0:
                    postfix["budget_left"] = f"{max(0.0, 60 * pc.max_minutes - elapsed()):.0f}s"
                bar.set_postfix(postfix)
            if state.step % pc.checkpoint_every == 0 and state.step < pc.steps:
                keep(gen.get_state())
    except KeyboardInterrupt:
        if not updating:  # weights, Adam state and step agree: keep them for the next run
            # interrupted after the step (validation, logging, a checkpoint): its batch is drawn
            keep(rng if state.step == rng_step else gen.get_state())
            log.info("%s: interrupted at step %d; saved %s, run again to resume", STAGE, state.step, resume)
        raise
    finally:
        bar.close()
        metrics.close()
    state.seconds = elapsed()
    save_model(
        run.local, net, cfg, stage=STAGE, step=state.step, seconds=state.seconds, perceptual=perceptual.name
    )
    discard(resume)
    log.info("%s: %d steps, %.0f s of training, Γ saved to %s", STAGE, state.step, state.seconds, run.local)
    if state.step == 0:
        log.warning(
            "%s: Γ was saved untrained: pretrain.max_minutes=%g ran out before its first step; raise it",
            STAGE,
            pc.max_minutes,
        )
    return run.local


def _diverged(step: int, what: str, resume: Path, lr: float) -> None:
    """Raise the one-line error for a non-finite loss or gradient; nothing is saved from that state."""
    kept = f"the last checkpoint '{resume}' is kept" if resume.is_file() else "no checkpoint was written"
    raise RovrError(
        f"{STAGE}: non-finite {what} at step {step} (NaN/inf in the batch or diverging training); {kept}; "
        f"check the data or lower pretrain.lr (now {lr:g}) and run again"
    )


@torch.no_grad()
def _val_loss(net: LocalNet, perceptual: PerceptualMetric, batch: Batch) -> float:
    """Mean L_P of Γ on a fixed validation batch."""
    net.eval()
    value = float(perceptual(net(*batch[:4]), batch.original).mean())
    net.train()
    return value

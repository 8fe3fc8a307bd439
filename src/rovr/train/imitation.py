"""Stage 2 — imitation warm start of the policy π (paper §6.2, Eq. 2; §8 for the listwise loss).

States come from expert trajectories: the expert's pairs (and, for half of the clips, random
pairs, so π also sees states off the expert's path) are run through the reconstruction loop with
the pretrained Γ; every state is labelled by the exact oracle of its clip (coverage of every pair)
and, for the default ``copy`` expert, by the copy cost of every pair
(:func:`rovr.conditioning.copy_pair_costs`: the error of the aligned copy in the target's holes).

Experts (``imitation.expert``). ``coverage`` is the paper's oracle: the pairs that reveal all of the
target's holes. On videos with camera and object motion a valid pair of distant frames shows the
holes' content displaced, and t−1, t−2 rebuild better than the paper's oracle; ``copy`` scores what
Γ actually gets — coverage, alignment and motion at once — and is the better teacher (measured in
BENCHMARKS.md: it beats sequential and picks valid pairs far more often than random).

Losses (``imitation.loss``):

* ``bce`` — paper Eq. 2, ``−[y log σ(l_i) + (1 − y) log(1 − σ(l_i))]`` on the two frames of one
  positive (valid) pair (y = 1) and of one negative (invalid) pair (y = 0) per state, so every step
  sees positive and negative examples, as the paper alternates them.
* ``listwise`` — the ranking loss the paper proposes in §8: cross-entropy between the uniform
  distribution over the best pairs (all valid pairs; the max-coverage pairs when none is valid)
  and π's own distribution over unordered pairs, ``−Σ_p q_p log π(p | s)``, with log π(p | s) the
  exact Gumbel-top-2 (Plackett–Luce) pair log-probability — the distribution PPG samples from.

At the end, the greedy policy (top-2 logits) is run through the reconstruction loop on the held-out
(validation) clips next to the random and sequential baselines: valid-pair rate, mean coverage of
the chosen pair, L_P and the squared error inside the holes (ISSUE 4's acceptance numbers). They are
logged and stored in the checkpoint's metadata (``heldout``).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from rovr.checkpoint import fingerprint
from rovr.conditioning import (
    Chooser,
    CopyOracle,
    PolicyChooser,
    Random,
    Sequential,
    cheapest_pairs,
    copy_pair_costs,
)
from rovr.conditioning import Oracle as OracleChooser
from rovr.config import RunConfig
from rovr.data.clips import ClipSet
from rovr.data.corruption import Corrupted, corrupt
from rovr.errors import RovrError
from rovr.metrics.perceptual import PerceptualMetric, build_perceptual
from rovr.models.local import LocalNet
from rovr.models.policy import ActorNet, build_actor, greedy_pair, pair_log_prob_table
from rovr.reconstruct import Episodes, reconstruct
from rovr.train.common import (
    MetricLog,
    Progress,
    RunDir,
    corrupted_clips,
    discard,
    load_local,
    load_resume,
    save_model,
    save_resume,
    seed_everything,
    setup_torch,
)

log = logging.getLogger(__name__)

STAGE = "imitation"
#: Episodes run through Γ together while collecting states and evaluating.
CHUNK = 16
#: Corruptions (mask draws) of every training clip: each is a new labelled trajectory, so π sees
#: more hole layouts than there are clips (one draw per clip over-fits the demo's 30 clips).
MASK_VARIANTS = 4


@dataclass
class StateSet:
    """Labelled states: tiles uint8 (N, 3, G·c, G·c), targets uint8 (N, 3, c, c), t (N,), coverage (N, T, T),
    and optionally the copy costs (N, T, T) of every pair."""

    video: torch.Tensor
    target: torch.Tensor
    t: torch.Tensor
    coverage: torch.Tensor  # coverage[n, i, j] of state n's target frame (oracle, §4)
    cost: torch.Tensor | None = None  # copy_pair_costs of state n (+inf where i or j is t, or i == j)

    def __len__(self) -> int:
        return int(self.t.shape[0])

    def inputs(self, idx: torch.Tensor | slice, device: torch.device) -> tuple[torch.Tensor, ...]:
        """(video, target, t) of rows ``idx`` as the policy's float input on ``device``."""
        return (
            self.video[idx].to(device).float().div_(255.0),
            self.target[idx].to(device).float().div_(255.0),
            self.t[idx].to(device),
        )


def _u8(x: torch.Tensor) -> torch.Tensor:
    return (x.clamp(0, 1) * 255 + 0.5).to(torch.uint8).cpu()


@torch.no_grad()
def collect_states(
    clips: list[Corrupted], net: LocalNet, cfg: RunConfig, seed: int, expert: str | None = None
) -> StateSet:
    """Run the expert (even clips) and random (odd clips) choosers; record every state with its labels.

    ``expert`` defaults to ``cfg.imitation.expert``; with ``copy`` every state also gets its copy
    costs, and the expert follows them. No scores are needed, so the episodes run without the
    perceptual metric.
    """
    device = torch.device(cfg.device)
    expert = expert or cfg.imitation.expert
    with_cost = expert == "copy"
    out: dict[str, list[torch.Tensor]] = {"video": [], "target": [], "t": [], "coverage": [], "cost": []}
    groups: list[tuple[list[Corrupted], Chooser | None]] = [
        (clips[0::2], None if with_cost else OracleChooser(best=True)),  # None: argmin of the costs
        (clips[1::2], Random(seed)),
    ]
    for group, chooser in groups:
        for start in range(0, len(group), CHUNK):
            ep = Episodes.of_run(cfg, group[start : start + CHUNK], net, None, device=device)
            if chooser is not None:
                chooser.reset(ep)
            while not ep.done:
                obs = ep.observation()
                out["video"].append(_u8(obs.video))
                out["target"].append(_u8(obs.target))
                out["t"].append(obs.t.cpu())
                out["coverage"].append(ep.coverage[:, ep.t])  # (B, T, T)
                cost = copy_pair_costs(ep) if with_cost else None
                if cost is not None:
                    out["cost"].append(cost.cpu())
                if chooser is None:
                    assert cost is not None
                    ep.step(cheapest_pairs(cost))
                else:
                    ep.step(chooser.choose(ep))
    if not out["t"]:
        raise RovrError("no clips to imitate; add training videos or lower data.frames")
    costs = out.pop("cost")
    cost_all = torch.cat(costs) if with_cost else None
    return StateSet(**{k: torch.cat(v) for k, v in out.items()}, cost=cost_all)


# ----------------------------------------------------------------------------- losses (tested)


def all_pairs(num_frames: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Index tensors (a, b), a < b, of all C(T, 2) unordered frame pairs (the order of every pair table)."""
    a, b = torch.triu_indices(num_frames, num_frames, offset=1)
    return a, b


def pair_log_probs(logits: torch.Tensor, tau: float, bias: torch.Tensor | None = None) -> torch.Tensor:
    """log π({a, b} | s) of every unordered pair, in :func:`all_pairs` order: (B, T) -> (B, C(T, 2)).

    Exact Gumbel-top-2 (Plackett–Luce) probabilities; −inf for pairs containing the target.
    """
    return pair_log_prob_table(logits, tau, bias)[0]


def best_pair_targets(coverage: torch.Tensor, t: torch.Tensor, distance_weight: float = 0.0) -> torch.Tensor:
    """q over all pairs: uniform over the expert's best pairs that do not contain t.

    The expert scores a pair by ``coverage − α · (|i − t| + |j − t|) / T`` (α = ``distance_weight``).
    α = 0 is the paper's oracle: the max-coverage pairs (= the valid ones when any exist). α > 0
    trades coverage for nearby frames, which Γ rebuilds from better (they are better aligned).
    coverage (B, T, T), t (B,) -> (B, C(T, 2)), rows sum to 1.
    """
    n = coverage.shape[-1]
    a, b = all_pairs(n)
    a, b = a.to(coverage.device), b.to(coverage.device)
    has_t = (a[None] == t[:, None]) | (b[None] == t[:, None])  # (B, P)
    dist = ((a[None] - t[:, None]).abs() + (b[None] - t[:, None]).abs()).float() / n  # (B, P)
    score = (coverage[:, a, b] - distance_weight * dist).masked_fill(has_t, -math.inf)  # (B, P)
    best = score >= score.max(dim=1, keepdim=True).values - 1e-6
    return best.float() / best.sum(dim=1, keepdim=True)


def copy_pair_targets(cost: torch.Tensor, soft: float = 0.0) -> torch.Tensor:
    """q over all pairs from copy costs (B, T, T) (+inf = not a pair): (B, C(T, 2)), rows sum to 1.

    ``soft = 0``: uniform over the cheapest pairs (ties within 1e-9). ``soft > 0``:
    ``q_p ∝ exp(−(c_p − min c) / (soft · mean c))``, the mean over the row's finite costs, so near-best
    pairs share the mass (a Plackett–Luce policy cannot always put it all on one pair).
    """
    a, b = all_pairs(cost.shape[-1])
    c = cost[:, a.to(cost.device), b.to(cost.device)].double()  # (B, P)
    finite = torch.isfinite(c)
    cmin = torch.where(finite, c, torch.full_like(c, math.inf)).min(dim=1, keepdim=True).values
    if soft > 0:
        mean = torch.where(finite, c, torch.zeros_like(c)).sum(1, keepdim=True) / finite.sum(1, keepdim=True)
        logit = -(c - cmin) / (soft * mean.clamp(min=1e-12))
        q = torch.softmax(logit.masked_fill(~finite, -math.inf), dim=1)
    else:
        best = finite & (c <= cmin + 1e-9)
        q = best.double() / best.sum(dim=1, keepdim=True)
    return q.float()


def listwise_ce(
    logits: torch.Tensor, q: torch.Tensor, tau: float, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """−Σ_p q_p log π(p | s), averaged over the batch (paper §8's ranking objective). logits (B, T)."""
    lp = pair_log_probs(logits, tau, bias)  # (B, P)
    return -(q * torch.where(q > 0, lp, torch.zeros_like(lp))).sum(dim=1).mean()


def listwise_loss(
    logits: torch.Tensor, coverage: torch.Tensor, t: torch.Tensor, tau: float, distance_weight: float = 0.0
) -> torch.Tensor:
    """:func:`listwise_ce` towards the coverage expert's best pairs (:func:`best_pair_targets`)."""
    return listwise_ce(logits, best_pair_targets(coverage, t, distance_weight), tau)


def bce_loss(
    logits: torch.Tensor, coverage: torch.Tensor, t: torch.Tensor, generator: torch.Generator
) -> torch.Tensor:
    """Paper Eq. 2 on one positive and one negative pair per state: BCE of σ(l_i), σ(l_j) against y.

    The positive pair is drawn uniformly from the valid pairs, the negative one from the invalid
    pairs (pairs containing t are neither); states without one of the two contribute only the
    other. The two terms (y = 1 and y = 0) are averaged. ``generator`` is a CPU generator.
    """
    a, b = all_pairs(logits.shape[1])
    a, b = a.to(logits.device), b.to(logits.device)
    cov = coverage[:, a, b]  # (B, P)
    has_t = (a[None] == t[:, None]) | (b[None] == t[:, None])
    losses = []
    for mask, y in (((cov >= 1.0) & ~has_t, 1.0), ((cov < 1.0) & ~has_t, 0.0)):
        rows = torch.nonzero(mask.any(dim=1)).squeeze(1)  # states with such a pair
        if rows.numel() == 0:
            continue
        pick = (
            torch.multinomial(mask[rows].float().cpu(), 1, generator=generator).squeeze(1).to(logits.device)
        )
        li, lj = logits[rows, a[pick]], logits[rows, b[pick]]  # (B',) each
        both = torch.cat([li, lj])
        losses.append(F.binary_cross_entropy_with_logits(both, torch.full_like(both, y)))
    if not losses:
        raise RovrError("no labelled pairs in this batch (every frame fully hidden?)")
    return torch.stack(losses).mean()


# ----------------------------------------------------------------------------- evaluation


@torch.no_grad()
def greedy_stats(
    actor: ActorNet, states: StateSet, device: torch.device, batch: int = 256, tau: float = 0.7
) -> dict[str, float]:
    """Greedy (top-2 logits) pair on ``states``: valid-pair rate and mean coverage, and with copy costs
    the rate of picking the expert's pair and the mean excess copy cost over it (``copy_regret``)."""
    actor.eval()
    cov, hit, regret = [], [], []
    for s in range(0, len(states), batch):
        sl = slice(s, s + batch)
        out = actor(*states.inputs(sl, device))
        pair = greedy_pair(out.logits, out.pair_bias, tau).cpu()
        rows = torch.arange(pair.shape[0])
        cov.append(states.coverage[sl][rows, pair[:, 0], pair[:, 1]])
        if states.cost is not None:
            cost = states.cost[sl]
            best = cost.flatten(1).min(dim=1).values
            chosen = cost[rows, pair[:, 0], pair[:, 1]]
            hit.append(chosen <= best + 1e-9)
            regret.append(chosen - best)
    actor.train()
    c = torch.cat(cov)
    out = {"valid_rate": float((c >= 1.0).float().mean()), "coverage": float(c.mean())}
    if hit:
        out["expert_match"] = float(torch.cat(hit).float().mean())
        out["copy_regret"] = float(torch.cat(regret).mean())
    return out


def random_valid_rate(states: StateSet) -> float:
    """Expected valid-pair rate of a uniformly random pair on ``states`` (exact, no sampling)."""
    a, b = all_pairs(states.coverage.shape[-1])
    has_t = (a[None] == states.t[:, None]) | (b[None] == states.t[:, None])
    valid = ((states.coverage[:, a, b] >= 1.0) & ~has_t).float().sum(1)
    return float((valid / (~has_t).float().sum(1)).mean())


@torch.no_grad()
def heldout_eval(
    choosers: list[Chooser],
    clips: list[Corrupted],
    net: LocalNet,
    perceptual: PerceptualMetric,
    cfg: RunConfig,
) -> dict[str, dict[str, float]]:
    """Each chooser through the reconstruction loop on ``clips``: per policy name, the mean over targets of
    valid-pair rate, coverage of the chosen pair, L_P(x̂_t, x_t) and the squared error in the holes."""
    device = torch.device(cfg.device)
    out: dict[str, dict[str, float]] = {}
    for chooser in choosers:
        valid, cov, loss, sq, holes = [], [], [], 0.0, 0.0
        for start in range(0, len(clips), CHUNK):
            ep = Episodes.of_run(cfg, clips[start : start + CHUNK], net, perceptual, device=device)
            res = reconstruct(ep, chooser)
            hole = ep.masks[:, :, None].float()  # (B, T, 1, H, W)
            sq += float((((res.video - ep.original) ** 2) * hole).sum())
            holes += 3.0 * float(hole.sum())
            valid.append(res.coverage >= 1.0)
            cov.append(res.coverage)
            loss.append(res.loss)
        out[chooser.name] = {
            "valid_rate": float(np.concatenate(valid).mean()),
            "coverage": float(np.concatenate(cov).mean()),
            "perceptual_loss": float(np.concatenate(loss).mean()),
            "hole_mse": sq / max(holes, 1.0),
        }
    return out


# ----------------------------------------------------------------------------- the stage


def train_imitation(cfg: RunConfig, run: RunDir, progress: bool = True) -> Path:
    """Stage 2: imitate the oracle; writes ``policy_imitation.safetensors`` and returns its path.

    Saves ``run.resume("imitation")`` every ``imitation.checkpoint_every`` steps and when interrupted
    (Ctrl-C); the next run resumes from there. The labelled states are collected again (the same
    seeds give the same states), so a resumed run ends where an uninterrupted one would.
    """
    if cfg.k != 2:
        raise RovrError(f"imitation learning is implemented for pairs (k=2); got k={cfg.k}")
    seed_everything(cfg.seed + 2)
    device = setup_torch(cfg)
    net = load_local(run.local, cfg, device)
    actor = build_actor(cfg.policy, cfg.data.frames).to(device)
    opt = torch.optim.Adam(actor.parameters(), lr=cfg.imitation.lr)
    gen = torch.Generator().manual_seed(cfg.seed)
    state = Progress()
    resume = run.resume(STAGE)
    resumed = resume.is_file()
    if resumed:  # read before the states are collected: a bad file is said at once
        state = load_resume(resume, cfg, STAGE, actor, opt, gen)
        for group in opt.param_groups:  # this config's learning rate wins (lowered after a divergence)
            group["lr"] = cfg.imitation.lr
        log.info("imitation: resuming from step %d (%s)", state.step, resume)

    t0 = time.time()
    clips = ClipSet(cfg.data, "train")  # decoded once, corrupted MASK_VARIANTS times
    train_clips = [  # clip-major: the variants of one clip alternate between the expert and random
        corrupt(
            clips[i].frames, cfg.corruption, seed=(cfg.seed * 7919 + 11) * 100_003 + i * MASK_VARIANTS + v
        )
        for i in range(len(clips))
        for v in range(MASK_VARIANTS)
    ]
    val_split = "val" if cfg.data.val_fraction > 0 else "train"
    val_clips = corrupted_clips(cfg, val_split, seed=cfg.seed * 7919 + 12)
    if not val_clips:
        val_split, val_clips = "train", corrupted_clips(cfg, "train", seed=cfg.seed * 7919 + 12)
    expert = cfg.imitation.expert if cfg.imitation.loss == "listwise" else "coverage"
    states = collect_states(train_clips, net, cfg, cfg.seed, expert)
    val_states = collect_states(val_clips, net, cfg, cfg.seed + 1, expert)
    log.info(
        "imitation: %d training states, %d %s states (collected in %.0f s)",
        len(states),
        len(val_states),
        val_split,
        time.time() - t0,
    )

    started = time.perf_counter()  # the time budget covers the optimisation, not the state collection
    seconds_before = state.seconds

    def elapsed() -> float:
        return seconds_before + time.perf_counter() - started

    def keep(rng: torch.Tensor) -> None:
        save_resume(resume, cfg, STAGE, actor, opt, rng, Progress(state.step, elapsed()))

    # a row is logged at the 0-based index of the step just taken: a checkpoint after s steps has rows < s
    metrics = MetricLog(run.logs, STAGE, resumed_at=state.step - 1 if resumed else None)
    steps = cfg.imitation.steps
    bar = tqdm(total=steps, initial=state.step, desc=STAGE, disable=not progress, dynamic_ncols=True)
    rng = gen.get_state()  # the batch sampler's state at the start of the step in progress
    updating = False  # True while opt.step() runs: the weights may be half-updated
    step = state.step
    try:
        while state.step < steps:
            if cfg.imitation.max_minutes and elapsed() > 60 * cfg.imitation.max_minutes:
                log.info(
                    "imitation: time budget of %.1f min reached at step %d",
                    cfg.imitation.max_minutes,
                    state.step,
                )
                if state.step == 0:
                    log.warning(
                        "imitation: the policy is saved untrained: imitation.max_minutes=%g ran out before "
                        "its first step; raise it",
                        cfg.imitation.max_minutes,
                    )
                break
            step = state.step
            rng = gen.get_state()
            idx = torch.randint(len(states), (min(cfg.imitation.batch_size, len(states)),), generator=gen)
            out = actor(*states.inputs(idx, device))
            logits = out.logits  # (n, T)
            cov, t = states.coverage[idx].to(device), states.t[idx].to(device)
            if cfg.imitation.loss == "listwise" and states.cost is not None:
                q = copy_pair_targets(states.cost[idx].to(device), cfg.imitation.soft)
                loss = listwise_ce(logits, q, cfg.policy.tau, out.pair_bias)
            elif cfg.imitation.loss == "listwise":
                loss = listwise_loss(logits, cov, t, cfg.policy.tau, cfg.imitation.distance_weight)
            else:
                loss = bce_loss(logits, cov, t, gen)
            if not torch.isfinite(loss):
                kept = f"the last checkpoint '{resume}' is kept; " if resume.is_file() else ""
                raise RovrError(
                    f"imitation diverged at step {step} (loss {loss.item()}); {kept}lower imitation.lr and rerun"
                )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            updating = True
            opt.step()
            state.step += 1
            updating = False
            bar.update(1)
            if step % 50 == 0 or state.step == steps:
                val = {
                    f"val/{k}": v
                    for k, v in greedy_stats(actor, val_states, device, tau=cfg.policy.tau).items()
                }
                metrics.log(step, {"imitation/loss": loss.item(), **val})
                bar.set_postfix(loss=f"{loss.item():.3f}", valid=f"{val['val/valid_rate']:.2f}")
            if state.step % cfg.imitation.checkpoint_every == 0 and state.step < steps:
                keep(gen.get_state())
        bar.close()
        perceptual = build_perceptual(cfg.metric, device)
        choosers: list[Chooser] = [
            PolicyChooser(actor, "imitation", tau=cfg.policy.tau),
            Random(cfg.seed),
            Sequential(),
            CopyOracle(),
        ]
        heldout = heldout_eval(choosers, val_clips, net, perceptual, cfg)
        for name, r in heldout.items():
            metrics.log(cfg.imitation.steps, {f"heldout/{name}_{k}": v for k, v in r.items()})
            log.info(
                "imitation: %-10s on %s: valid-pair rate %.3f, coverage %.3f, L_P %.4f, hole MSE %.5f",
                name,
                val_split,
                r["valid_rate"],
                r["coverage"],
                r["perceptual_loss"],
                r["hole_mse"],
            )
    except KeyboardInterrupt:
        if not updating:  # weights, Adam state and step agree: keep them for the next run
            keep(rng if state.step == step else gen.get_state())
            log.info("imitation: interrupted at step %d; saved %s, run again to resume", state.step, resume)
        raise
    finally:
        bar.close()
        metrics.close()
    final = greedy_stats(actor, val_states, device, tau=cfg.policy.tau)
    save_model(
        run.policy("imitation"),
        actor,
        cfg,
        stage="imitation",
        val=final,
        random_valid_rate=random_valid_rate(val_states),
        heldout=heldout,
        heldout_split=val_split,
        trained_from={"local": fingerprint(run.local)},
    )
    discard(resume)
    return run.policy("imitation")

"""Stage 3 — Phasic Policy Gradient (paper §6.3; Cobbe et al. 2021, "Phasic Policy Gradient").

Policy phase, repeated N_π times: collect rollouts (B episodes through the one reconstruction loop,
:class:`~rovr.reconstruct.Episodes`), compute returns and advantages, then E_π epochs of the clipped
surrogate with an entropy bonus on the actor and E_V epochs of value regression (L_V, §6.3) on the
separate critic. Auxiliary phase: E_aux epochs of behaviour cloning to the pre-phase policy
(β_clone · KL) plus distillation of the value target into the actor's auxiliary value head; the
critic is trained again there. Optionally Γ keeps training on L_R (Eq. 1) over each rollout (§6.3),
and (beyond the paper, ``ppg.bc_coef``) the policy loss keeps stage 2's cross-entropy to the copy
teacher on the rollout states (DAPG).

Returns: rewards-to-go with γ = 1 (the paper's choice), or GAE(γ, λ); λ = 1 gives exactly the
rewards-to-go R_t and the advantage R_t − V(s_t).

Sign of the advantage: the paper (§6.3) writes Â_t = V(s_t) − R_t. With that sign, maximising
L^CLIP would *lower* the probability of actions that did better than the critic expected — the
gradient points the wrong way. We use the standard Â_t = R_t − V(s_t), normalised per batch (over
all ranks).

Layout: the tested math (pure functions), the rollout storage (:class:`Batch`), :class:`Learner`
(rollout collection and the PPG updates, independent of Γ and of the data, so it can be tested on a
toy problem), and :class:`Trainer` (Γ, data, Γ updates, checkpoints, the loop of two phases).
Under ``torchrun`` each rank collects its own episodes; gradients and statistics are averaged, and
rank 0 alone writes checkpoints and logs (:mod:`rovr.train.dist`).
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from rovr.checkpoint import (
    fingerprint,
    load_checkpoint,
    load_optimizer,
    load_state,
    optimizer_tensors,
    save_checkpoint,
    state_tensors,
)
from rovr.conditioning import copy_pair_costs
from rovr.config import PPGConfig, RunConfig, to_dict
from rovr.data.clips import ClipSet
from rovr.data.corruption import corrupt
from rovr.errors import RovrError
from rovr.metrics.flow import build_flow
from rovr.metrics.perceptual import build_perceptual, reconstruction_loss
from rovr.models.policy import (
    ActorNet,
    CriticNet,
    InvalidLogitsError,
    PolicyObs,
    build_actor,
    build_critic,
    greedy_pair,
    pair_entropy,
    pair_log_prob,
    pair_log_prob_table,
    sample_topk,
)
from rovr.reconstruct import Episodes, Observation, StepInfo
from rovr.train import dist
from rovr.train.common import (
    MetricLog,
    RunDir,
    check_same_architecture,
    discard,
    load_local,
    load_model,
    save_model,
    seed_everything,
    setup_torch,
)
from rovr.train.imitation import copy_pair_targets, listwise_ce

log = logging.getLogger(__name__)

#: Gradients of every PPG update are clipped to this global L2 norm (as cleanrl / SB3 do).
MAX_GRAD_NORM = 1.0
#: Γ's learning rate during PPG (``ppg.train_local``), relative to ``pretrain.lr``: where stage 1's
#: cosine schedule ends (train/local.py anneals to 5 % of its learning rate).
LOCAL_LR_FACTOR = 0.05


def policy_name(cfg: RunConfig) -> str:
    """Table 2 name of the policy a config trains: rovr_{flow|noflow}_{warm|cold}."""
    return f"rovr_{'flow' if cfg.ppg.flow_reward else 'noflow'}_{'warm' if cfg.ppg.warm_start else 'cold'}"


# ============================================================================= the math (tested)


def rewards_to_go(rewards: torch.Tensor, gamma: float = 1.0) -> torch.Tensor:
    """R_t = Σ_{u ≥ t} γ^{u−t} r_u along the last axis (§6.3; γ = 1: a reversed cumulative sum). (..., T)."""
    out = torch.empty_like(rewards)
    running = torch.zeros_like(rewards[..., 0])
    for t in reversed(range(rewards.shape[-1])):
        running = rewards[..., t] + gamma * running
        out[..., t] = running
    return out


def gae(
    rewards: torch.Tensor, values: torch.Tensor, gamma: float = 1.0, lam: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """GAE(γ, λ) of fixed-length episodes that end in a terminal state. rewards, values (..., T).

    δ_t = r_t + γ V(s_{t+1}) − V(s_t) with V = 0 after the last step; Â_t = Σ_l (γλ)^l δ_{t+l}.
    Returns (advantages Â, returns Â + V), each (..., T). λ = 1: Â_t = R_t − V(s_t), returns = R_t.
    """
    next_v = torch.cat([values[..., 1:], torch.zeros_like(values[..., :1])], dim=-1)
    delta = rewards + gamma * next_v - values
    adv = torch.empty_like(rewards)
    running = torch.zeros_like(rewards[..., 0])
    for t in reversed(range(rewards.shape[-1])):
        running = delta[..., t] + gamma * lam * running
        adv[..., t] = running
    return adv, adv + values


def causal_returns(rewards: torch.Tensor, terminal: torch.Tensor) -> torch.Tensor:
    """Returns when an action can change only its own local reward and the episode's terminal reward.

    rewards (B, T) are the MDP's rewards, the last one including the terminal (flow) reward
    ``terminal`` (B,). With Γ conditioning on observed pixels only (``condition_on="observed"``), the
    local reward r_u of a later step does not depend on a_t, so dropping it from R_t leaves
    E[∇ log π(a_t|s_t) R_t] unchanged and removes its variance: R_t = (r_t − [t = T−1] · terminal)
    + terminal. (B, T). With ``"current"`` a_t also shapes the later states (x̂_t is a frame they
    can condition on), and this credit ignores that: a myopic, lower-variance approximation.
    """
    return pay_terminal(rewards, terminal, terminal[:, None].expand_as(rewards))


def pay_terminal(rewards: torch.Tensor, terminal: torch.Tensor, paid: torch.Tensor) -> torch.Tensor:
    """Each step's local reward plus what it is paid of the terminal reward: r_t − [t = T−1] · terminal + paid_t.

    rewards (B, T) whose last entry includes ``terminal`` (B,); paid (B, T). With every step paid the
    whole terminal reward these are :func:`causal_returns`. With per-frame shares that sum to it
    (``ppg.flow_credit=frame``: :func:`rovr.metrics.flow.recovery_shares` · w) they are rewards with
    the same episode return, credited frame by frame — a step's causal return is its own L_P gain plus
    its own frame's share of w · O, and :func:`gae` of them pays each step its share and the later ones.
    """
    out = rewards.clone()
    out[:, -1] = out[:, -1] - terminal
    return out + paid.nan_to_num(0.0)


class Surrogate(NamedTuple):
    loss: torch.Tensor  # scalar to minimise: −L^CLIP
    approx_kl: torch.Tensor  # scalar, detached: E[(r − 1) − log r]
    clipfrac: torch.Tensor  # scalar, detached: fraction of samples with |r − 1| > ε


def clipped_surrogate(
    logp: torch.Tensor, old_logp: torch.Tensor, adv: torch.Tensor, clip: float
) -> Surrogate:
    """L^CLIP (§6.3) as a loss: −E[min(r Â, clip(r, 1 − ε, 1 + ε) Â)], r = π_θ(a|s) / π_θold(a|s). (N,) each."""
    log_ratio = logp - old_logp
    ratio = log_ratio.exp()
    loss = -torch.min(ratio * adv, ratio.clamp(1 - clip, 1 + clip) * adv).mean()
    with torch.no_grad():
        approx_kl = ((ratio - 1) - log_ratio).mean()
        clipfrac = ((ratio - 1).abs() > clip).float().mean()
    return Surrogate(loss, approx_kl, clipfrac)


def pair_kl(
    old_logits: torch.Tensor,
    logits: torch.Tensor,
    tau: float,
    old_bias: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """KL(π_old ‖ π) over unordered pairs (exact pair probabilities), mean over the batch.

    old_logits, logits (B, T) with −inf at the same (masked) frames (and the pair biases (B, T, T) of
    a pairwise pointer) -> scalar. Pairs π_old cannot draw contribute 0 (0 · log 0 = 0), with no NaN
    in the backward pass.
    """
    lp_old = pair_log_prob_table(old_logits, tau, old_bias)[0]  # (B, P)
    lp = pair_log_prob_table(logits, tau, bias)[0]
    keep = torch.isfinite(lp_old)
    zero = torch.zeros_like(lp)
    lp_old, lp = torch.where(keep, lp_old, zero), torch.where(keep, lp, zero)
    return torch.where(keep, lp_old.exp() * (lp_old - lp), zero).sum(dim=1).mean()


class AuxLoss(NamedTuple):
    loss: torch.Tensor  # value_loss + β_clone · kl
    value_loss: torch.Tensor  # mean (V_aux(s) − V_targ)²
    kl: torch.Tensor  # KL(π_old ‖ π)


def auxiliary_loss(
    aux_value: torch.Tensor,
    value_target: torch.Tensor,
    old_logits: torch.Tensor,
    logits: torch.Tensor,
    tau: float,
    beta_clone: float,
    old_bias: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
) -> AuxLoss:
    """PPG's joint loss of the auxiliary phase: distil V_targ into the actor's aux head, keep π near π_old.

    L = mean (V_aux − V_targ)² + β_clone · KL(π_old ‖ π). aux_value, value_target (N,); logits (N, T).
    (The squared error is not halved, like the paper's L_V.)
    """
    value_loss = F.mse_loss(aux_value, value_target)
    kl = pair_kl(old_logits, logits, tau, old_bias, bias)
    return AuxLoss(value_loss + beta_clone * kl, value_loss, kl)


def group_advantages(returns: torch.Tensor) -> torch.Tensor:
    """Leave-one-out advantages of K pairs drawn at one state: Â_j = R_j − mean_{i ≠ j} R_i. (..., K).

    The baseline of a pair does not depend on that pair's draw, so E[∇ log π(a_j|s) Â_j] is the
    policy gradient (Kool et al. 2019, "Buy 4 REINFORCE samples, get a baseline for free!"); unlike
    R − V(s) it needs no critic and is exact for the state at hand. K ≥ 2.
    """
    k = returns.shape[-1]
    if k < 2:
        raise ValueError(f"group_advantages needs at least 2 returns per state, got {k}")
    return returns - (returns.sum(dim=-1, keepdim=True) - returns) / (k - 1)


def explained_variance(pred: torch.Tensor, target: torch.Tensor) -> float:
    """1 − Var[target − pred] / Var[target] (1 = perfect critic, 0 = a constant); NaN if target is constant."""
    var = float(target.var())
    return float("nan") if var == 0 else 1.0 - float((target - pred).var()) / var


def quantize(x: torch.Tensor) -> torch.Tensor:
    """Observation in [0, 1] -> uint8 (as stored in a :class:`Batch`)."""
    return (x.clamp(0, 1) * 255 + 0.5).to(torch.uint8)


def dequantize(x: torch.Tensor) -> torch.Tensor:
    """uint8 -> float32 in [0, 1]."""
    return x.float().div_(255.0)


# ============================================================================= rollout storage


@dataclass
class Batch:
    """Transitions of one iteration, flattened over (episode, step, draw): N = B · T · K, row (b · T + s) · K + j.

    K = ``ppg.group`` pairs drawn at each state (K = 1: row b · T + s); the observation, value and
    value target of a state repeat over its K rows, and the state-level updates (critic, auxiliary
    phase) use the played rows only.

    Observations are stored as uint8 and the policy acted on exactly these (dequantised) values, so
    the first update's probability ratio is 1.
    """

    video: torch.Tensor  # (N, 3, G·c, G·c) uint8, tiled current video (Fig. 2)
    target: torch.Tensor  # (N, 3, c, c) uint8, low-res target frame
    t: torch.Tensor  # (N,) long, target index
    pairs: torch.Tensor  # (N, 2) long, the chosen frames i < j
    logp: torch.Tensor  # (N,) log π_old(pair | s)
    value: torch.Tensor  # (N,) V(s) at collection time
    returns: torch.Tensor  # (N,) value target: R_t (λ = 1) or Â + V
    adv: torch.Tensor  # (N,) Â, not normalised
    played: torch.Tensor  # (N,) bool: the pair the episode went on with (all rows unless ppg.group > 1)
    teacher: torch.Tensor  # (N, C(T, 2)) the copy teacher's pair distribution (ppg.bc_coef), else (N, 0)

    def __len__(self) -> int:
        return int(self.t.shape[0])

    def obs(self, idx: torch.Tensor) -> PolicyObs:
        """The (float) policy input of rows ``idx``."""
        return PolicyObs(dequantize(self.video[idx]), dequantize(self.target[idx]), self.t[idx])

    def states(self) -> Batch:
        """The played rows only: one per state (the batch itself when every row was played)."""
        if bool(self.played.all()):
            return self
        keep = self.played.nonzero().squeeze(1)
        return Batch(**{f.name: getattr(self, f.name)[keep] for f in dataclasses.fields(Batch)})

    @staticmethod
    def cat(batches: list[Batch]) -> Batch:
        """The transitions of several batches in one (the auxiliary phase's buffer)."""
        return Batch(
            **{f.name: torch.cat([getattr(b, f.name) for b in batches]) for f in dataclasses.fields(Batch)}
        )


class RolloutEnv(Protocol):
    """What :meth:`Learner.rollout` needs of the environment: B episodes stepped together
    (:class:`~rovr.reconstruct.Episodes`, or a toy problem in the tests)."""

    @property
    def done(self) -> bool: ...

    def observation(self) -> Observation: ...

    def step(self, pairs: torch.Tensor) -> StepInfo: ...

    def try_pairs(self, pairs: torch.Tensor) -> torch.Tensor:
        """(B, M, 2) other pairs for the current target -> (B, M) their local rewards (``ppg.group`` > 1)."""
        ...

    def swapped_terminal_reward(self) -> torch.Tensor:
        """After the last step: (B, T, M) terminal reward had each tried pair been played instead."""
        ...

    def terminal_reward_shares(self) -> torch.Tensor:
        """After the last step: (B, T) the terminal reward split over the steps (``ppg.flow_credit=frame``)."""
        ...


class Diverged(RovrError):
    """A PPG loss or gradient became NaN/inf."""


# ============================================================================= rollouts and updates


class Learner:
    """PPG for an actor (with an auxiliary value head) and a separate critic (§5.2, §6.3).

    Owns the two optimizers and the random generators; knows nothing of Γ or of the data, so the
    update logic can be checked on a toy problem. ``cfg`` is the ``ppg`` section, ``tau`` the
    policy's Gumbel temperature.
    """

    def __init__(
        self,
        actor: ActorNet,
        critic: CriticNet,
        cfg: PPGConfig,
        tau: float,
        device: torch.device,
        reference: ActorNet | None = None,
        teacher: Callable[[Any], torch.Tensor] | None = None,
        bc_tau: float = 0.0,
    ) -> None:
        self.actor, self.critic, self.cfg, self.tau, self.device = actor, critic, cfg, tau, device
        if cfg.bc_coef > 0 and teacher is None:
            raise RovrError("ppg.bc_coef > 0 needs a teacher (the copy costs of the rollout states)")
        self.teacher = teacher if cfg.bc_coef > 0 else None  # env -> (B, C(T, 2)) pair targets
        self.bc_tau = bc_tau or tau  # the temperature imitation fitted its pairs at
        if cfg.kl_ref > 0 and reference is None:
            reference = copy.deepcopy(actor)  # the policy PPG starts from
        self.reference = (
            None if cfg.kl_ref == 0 or reference is None else reference.eval().requires_grad_(False)
        )
        self.opt_pi = torch.optim.Adam(actor.parameters(), lr=cfg.lr)
        self.opt_v = torch.optim.Adam(critic.parameters(), lr=cfg.lr)
        self.gen = torch.Generator()  # minibatch order (CPU)
        self.sample_gen = torch.Generator(device=device)  # Gumbel noise of the actions
        self.reseed(0)

    def reseed(self, seed: int) -> None:
        """Reset both generators (the trainer reseeds every iteration, so a resumed run repeats exactly)."""
        self.gen.manual_seed(seed)
        self.sample_gen.manual_seed(seed + 1)

    # -- rollout -----------------------------------------------------------------------------------
    @torch.no_grad()
    def rollout(self, env: RolloutEnv) -> tuple[Batch, dict[str, float]]:
        """Run B episodes to the end with pairs drawn from π (Gumbel top-2, §5.2.1); return the batch and stats.

        With ``ppg.group`` = K > 1, K pairs are drawn at every state: the first is played, the others
        are scored by :meth:`RolloutEnv.try_pairs` and, at the end, by the flow recovery of the episode
        with their frame swapped in; a draw's advantage is its return minus the others' mean
        (:func:`group_advantages`) or, with ``ppg.baseline=greedy``, minus the return of π's greedy
        pair at that state (scored the same way; self-critical, Rennie et al. 2017). Rewards are multiplied by
        ``ppg.reward_scale`` for the returns; the logged return is the unscaled one of the played pairs
        (the MDP's: Σ_t L_P improvements + w · O).
        """
        cfg = self.cfg
        k = cfg.group
        self_critical = k > 1 and cfg.baseline == "greedy"
        rec: dict[str, list[torch.Tensor]] = defaultdict(list)  # one (B, ...) entry per step
        flow_rec: torch.Tensor | None = None
        terminal_reward: torch.Tensor | None = None
        self.actor.eval()
        self.critic.eval()
        while not env.done:
            o = env.observation()
            video, target = quantize(o.video), quantize(o.target)  # what the batch keeps
            obs = PolicyObs(dequantize(video), dequantize(target), o.t)
            out = self.actor(obs)
            logits, bias = out.logits, out.pair_bias  # (B, T), −inf at t; (B, T, T) or None
            b = logits.shape[0]
            logits_k = logits.repeat_interleave(k, dim=0)  # (B·K, T): K independent draws per state
            bias_k = None if bias is None else bias.repeat_interleave(k, dim=0)
            pairs = sample_topk(logits_k, 2, self.tau, generator=self.sample_gen, bias=bias_k)  # i < j
            logp = pair_log_prob(
                logits_k, pairs[:, 0], pairs[:, 1], tau=self.tau, mode=cfg.logprob, bias=bias_k
            )
            pairs, logp = pairs.view(b, k, 2), logp.view(b, k)
            value = self.critic(obs)  # (B,)
            teacher = self.teacher(env) if self.teacher is not None else logits.new_zeros(b, 0)
            others = pairs[:, 1:]  # (B, K−1, 2): drawn, not played
            if self_critical:  # the pair evaluation would pick, scored last
                others = torch.cat([others, greedy_pair(logits, bias, self.tau)[:, None]], dim=1)
            tried = env.try_pairs(others) if k > 1 else None  # (B, K−1 [+1]) L_P gains
            info = env.step(pairs[:, 0])
            gain = (info.loss_before - info.loss_after)[:, None]
            if tried is not None:
                gain = torch.cat([gain, tried.to(gain)], dim=1)  # (B, K)
            step = {"video": video, "target": target, "t": o.t, "pairs": pairs, "logp": logp, "value": value}
            step["teacher"] = teacher
            step |= {"reward": info.reward, "gain": gain, "loss": info.loss_after, "coverage": info.coverage}
            for key, v in step.items():
                rec[key].append(v.to(self.device))
            if info.flow_recovery is not None:
                flow_rec = info.flow_recovery
                # the terminal (flow) part of the last reward: reward = L_P gain + w · flow recovery
                terminal_reward = info.reward - (info.loss_before - info.loss_after)
        self.actor.train()
        self.critic.train()
        steps = {key: torch.stack(v, dim=1) for key, v in rec.items()}  # (B, T, ...)
        rewards = steps["reward"].float()  # (B, T)
        if k > 1:
            terminal = torch.zeros_like(steps["gain"])  # (B, T, K [+1]): w·O of each pair's video
            if terminal_reward is not None and cfg.flow_reward:  # w = 0: no other pair's flow to pay
                terminal[:, :, 0] = terminal_reward.to(terminal)[:, None]
                swapped = env.swapped_terminal_reward()  # (B, T, K−1 [+1])
                terminal[:, :, 1:] = swapped.to(terminal)
            all_returns = ((steps["gain"] + terminal) * cfg.reward_scale).nan_to_num(0.0)
            group_returns = all_returns[:, :, :k]  # the K draws
            if self_critical:
                adv = group_returns - all_returns[:, :, k:]  # R_j − R(greedy pair)
            else:
                adv = group_advantages(group_returns)
            returns = group_returns.mean(dim=2, keepdim=True).expand_as(adv)  # V(s) target: E_π[R | s]
        else:
            terminal_b = torch.zeros_like(rewards[:, 0])
            if terminal_reward is not None:
                terminal_b = terminal_reward.to(rewards).nan_to_num(0.0)
            shares = None  # per-frame shares of w·O (ppg.flow_credit=frame), else w·O on the last step
            if cfg.flow_credit == "frame" and cfg.flow_reward and terminal_reward is not None:
                shares = env.terminal_reward_shares().to(rewards)
            if cfg.credit == "causal":
                paid = terminal_b[:, None].expand_as(rewards) if shares is None else shares
                returns = (pay_terminal(rewards, terminal_b, paid) * cfg.reward_scale)[..., None]
                adv = returns - steps["value"][..., None]
            else:
                credited = rewards if shares is None else pay_terminal(rewards, terminal_b, shares)
                adv, returns = gae(credited * cfg.reward_scale, steps["value"], cfg.gamma, cfg.gae_lambda)
                adv, returns = adv[..., None], returns[..., None]

        def rows(x: torch.Tensor) -> torch.Tensor:  # (B, T, ...) per state -> (B·T·K, ...) per pair
            return x.repeat_interleave(k, dim=1).flatten(0, 1) if k > 1 else x.flatten(0, 1)

        first = torch.zeros_like(steps["logp"], dtype=torch.bool)
        first[:, :, 0] = True
        batch = Batch(
            video=rows(steps["video"]),
            target=rows(steps["target"]),
            t=rows(steps["t"]),
            pairs=steps["pairs"].flatten(0, 2),
            logp=steps["logp"].flatten(0, 2),
            value=rows(steps["value"]),
            returns=returns.flatten(0, 2),
            adv=adv.flatten(0, 2),
            played=first.flatten(0, 2),
            teacher=rows(steps["teacher"]),
        )
        cov = steps["coverage"].float()
        stats = {
            "charts/episodic_return": float(rewards.sum(dim=1).mean()),
            "charts/perceptual_loss": float(steps["loss"].float().mean()),
            "charts/coverage": float(cov.mean()),
            "charts/valid_rate": float((cov >= 1).float().mean()),
        }
        if flow_rec is not None:
            stats["charts/flow_recovery"] = float(flow_rec.float().mean())
        return batch, stats

    # -- policy phase ------------------------------------------------------------------------------
    def policy_epochs(self, batch: Batch, bc: float = 0.0) -> dict[str, float]:
        """E_π epochs of the clipped surrogate with an entropy bonus on π, then E_V epochs of L_V on V.

        ``bc`` > 0 (DAPG, Rajeswaran et al. 2018): the loss also has ``bc · CE(q_teacher, π)``, the
        listwise cross-entropy of imitation (−Σ_p q_p log π(p | s) at imitation's τ) on these states.
        """
        cfg = self.cfg
        mean, std = dist.global_mean_std(batch.adv)  # over all ranks' episodes
        adv = (batch.adv - mean) / (std + 1e-8)
        stats: dict[str, list[float]] = {
            k: []
            for k in (
                "losses/policy_loss",
                "losses/entropy",
                "losses/approx_kl",
                "losses/clipfrac",
                "losses/kl_ref",
                "losses/teacher_ce",
            )
        }
        for _ in range(cfg.e_pi):
            for idx in self.minibatches(len(batch)):
                out = self.actor(batch.obs(idx))
                logits, bias = out.logits, out.pair_bias  # (n, T), (n, T, T) or None
                pairs = batch.pairs[idx]
                logp = pair_log_prob(
                    logits, pairs[:, 0], pairs[:, 1], tau=self.tau, mode=cfg.logprob, bias=bias
                )
                surrogate = clipped_surrogate(logp, batch.logp[idx], adv[idx], cfg.clip)
                entropy = pair_entropy(logits, self.tau, bias).mean()
                loss = surrogate.loss - cfg.ent_coef * entropy
                if self.reference is not None:
                    with torch.no_grad():
                        ref = self.reference(batch.obs(idx))
                    kl_ref = pair_kl(logits, ref.logits, self.tau, bias, ref.pair_bias)  # KL(π ‖ π_ref)
                    loss = loss + cfg.kl_ref * kl_ref
                    stats["losses/kl_ref"].append(kl_ref.item())
                if bc > 0 and batch.teacher.shape[1] > 0:
                    ce = listwise_ce(logits, batch.teacher[idx], self.bc_tau, bias)
                    loss = loss + bc * ce
                    stats["losses/teacher_ce"].append(ce.item())
                self.step(self.opt_pi, self.actor, loss)
                stats["losses/policy_loss"].append(surrogate.loss.item())
                stats["losses/entropy"].append(entropy.item())
                stats["losses/approx_kl"].append(surrogate.approx_kl.item())
                stats["losses/clipfrac"].append(surrogate.clipfrac.item())
        states = batch.states()
        value_losses = [loss for _ in range(cfg.e_v) for loss in self.value_epoch(states)]
        out = {k: float(np.mean(v)) for k, v in stats.items() if v}
        if value_losses:
            out["losses/value_loss"] = float(np.mean(value_losses))
        out["losses/explained_variance"] = explained_variance(states.value, states.returns)
        return out

    def value_epoch(self, batch: Batch) -> list[float]:
        """One epoch of L_V = mean (R_t − V(s_t))² (§6.3) on the critic over ``batch``'s rows; the minibatch losses."""
        losses = []
        for idx in self.minibatches(len(batch)):
            loss = F.mse_loss(self.critic(batch.obs(idx)), batch.returns[idx])
            self.step(self.opt_v, self.critic, loss)
            losses.append(loss.item())
        return losses

    # -- auxiliary phase ---------------------------------------------------------------------------
    def auxiliary_phase(self, batches: list[Batch]) -> dict[str, float]:
        """E_aux epochs of β_clone · KL(π_old ‖ π) + aux-head value distillation, each followed by a critic epoch.

        π_old is the policy at the start of the phase; the value target is each batch's ``returns``.
        """
        cfg = self.cfg
        buf = Batch.cat([b.states() for b in batches])
        with torch.no_grad():
            old = [self.actor(buf.obs(idx)) for idx in self.minibatches(len(buf), shuffle=False)]
            old_logits = torch.cat([o.logits for o in old])  # (N, T)
            biases = [o.pair_bias for o in old if o.pair_bias is not None]
            old_bias = torch.cat(biases) if biases else None  # (N, T, T) for a pairwise pointer
        kls, aux_losses, v_losses = [], [], []
        for _ in range(cfg.e_aux):
            for idx in self.minibatches(len(buf)):
                out = self.actor(buf.obs(idx))
                aux = auxiliary_loss(
                    out.aux_value,
                    buf.returns[idx],
                    old_logits[idx],
                    out.logits,
                    self.tau,
                    cfg.beta_clone,
                    None if old_bias is None else old_bias[idx],
                    out.pair_bias,
                )
                self.step(self.opt_pi, self.actor, aux.loss)
                kls.append(aux.kl.item())
                aux_losses.append(aux.value_loss.item())
            v_losses.extend(self.value_epoch(buf))
        if not kls:
            return {}
        return {
            "losses/aux_value_loss": float(np.mean(aux_losses)),
            "losses/clone_kl": float(np.mean(kls)),
            "losses/aux_critic_loss": float(np.mean(v_losses)),
        }

    # -- plumbing ----------------------------------------------------------------------------------
    def minibatches(self, n: int, shuffle: bool = True) -> list[torch.Tensor]:
        """Index tensors of ``ppg.minibatch`` rows (the last one may be shorter), on the batch device."""
        order = torch.randperm(n, generator=self.gen) if shuffle else torch.arange(n)
        order = order.to(self.device)
        return list(order.split(self.cfg.minibatch))

    def step(self, opt: torch.optim.Optimizer, model: torch.nn.Module, loss: torch.Tensor) -> None:
        """One optimizer step on ``loss``: backward, all-reduce, clip, step (raises :class:`Diverged`)."""
        opt.zero_grad(set_to_none=True)
        loss.backward()
        apply_gradients(opt, model, loss)


def apply_gradients(opt: torch.optim.Optimizer, model: torch.nn.Module, loss: torch.Tensor) -> None:
    """Average the gradients over ranks, clip them to :data:`MAX_GRAD_NORM` and step.

    A non-finite loss or gradient on any rank stops every rank with :class:`Diverged`, before the
    weights change.
    """
    dist.allreduce_gradients(model.parameters())
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), MAX_GRAD_NORM)
    bad = not (bool(torch.isfinite(loss.detach())) and bool(torch.isfinite(norm)))
    if dist.any_rank(bad):
        raise Diverged(f"loss {loss.item():.4g}, gradient norm {norm.item():.4g}")
    opt.step()


# ============================================================================= the trainer


class Trainer:
    """Everything one PPG run needs (Γ, data, learner, checkpoints); :meth:`train` is the loop."""

    def __init__(self, cfg: RunConfig, run: RunDir, progress: bool = True) -> None:
        self.cfg, self.run, self.progress = cfg, run, progress
        self.device = setup_torch(cfg)
        dist.init_from_env(self.device)
        self.name = policy_name(cfg)
        seed_everything(cfg.seed + 1000 * dist.rank())
        # models: Γ (pretrained, stage 1), actor (warm: imitation, stage 2), critic; rank 0's weights everywhere
        self.net = load_local(run.local, cfg, self.device)
        actor = build_actor(cfg.policy, cfg.data.frames).to(self.device)
        critic = build_critic(cfg.policy, cfg.data.frames).to(self.device)
        if cfg.ppg.warm_start:
            load_model(run.policy("imitation"), actor, cfg, "rovr imitate")
        for module in (actor, critic):
            dist.broadcast_module(module)
        soft = cfg.imitation.soft
        self.learner = Learner(
            actor,
            critic,
            cfg.ppg,
            cfg.ppg.tau or cfg.policy.tau,
            self.device,
            teacher=lambda env: copy_pair_targets(copy_pair_costs(env), soft),
            bc_tau=cfg.policy.tau,
        )
        self.local_lr = cfg.pretrain.lr * LOCAL_LR_FACTOR
        self.opt_local = (
            torch.optim.Adam(self.net.parameters(), lr=self.local_lr) if cfg.ppg.train_local else None
        )
        with dist.main_first():  # rank 0 may download metric weights into the shared cache
            self.perceptual = build_perceptual(cfg.metric, self.device, download=dist.is_main())
            # built without the flow reward too: flow recovery is logged (its learning curve) at w = 0
            self.flow = build_flow(cfg.metric, self.device, download=dist.is_main())
        self.clips = ClipSet(cfg.data, "train")
        if len(self.clips) == 0:
            raise RovrError(f"no training clips in '{cfg.data.source}'; add videos or lower data.frames")
        self.rng = np.random.default_rng([cfg.seed, dist.rank()])  # reseeded every iteration
        self.iteration = 0

    def reseed(self, iteration: int) -> None:
        """Episodes, actions and minibatches of ``iteration`` on this rank depend on (seed, rank, iteration) only."""
        seq = np.random.SeedSequence([self.cfg.seed, dist.rank(), iteration])
        self.rng = np.random.default_rng(seq)
        self.learner.reseed(int(seq.generate_state(1, np.uint32)[0]))

    def episodes(self) -> Episodes:
        """B fresh episodes: random training clips, each with a fresh corruption (new masks)."""
        cfg = self.cfg
        idx = self.rng.integers(len(self.clips), size=cfg.ppg.episodes_per_iter)
        seeds = self.rng.integers(2**31, size=len(idx))
        clips = [corrupt(self.clips[int(i)].frames, cfg.corruption, seed=int(s)) for i, s in zip(idx, seeds)]
        return Episodes.of_run(
            cfg,
            clips,
            self.net,
            self.perceptual,
            flow=self.flow,
            flow_weight=cfg.ppg.flow_weight if cfg.ppg.flow_reward else 0.0,
            device=self.device,
        )

    def update_local(self, ep: Episodes, batch: Batch) -> dict[str, float]:
        """§6.3: one step of Γ on L_R (Eq. 1, λ = λ_max where pretraining ends) over this rollout's (target, pair)s."""
        assert self.opt_local is not None
        pairs = batch.states().pairs.view(ep.batch_size, ep.num_frames, 2)  # (B, T, 2), the played pairs
        self.net.train()
        self.opt_local.zero_grad(set_to_none=True)
        total = torch.zeros((), device=self.device)
        for s in range(ep.num_frames):  # one backward per step: the graph of one Γ call at a time
            ep.step_index = s
            x_hat = ep.rebuild(pairs[:, s])
            loss = reconstruction_loss(
                x_hat, ep.original[:, ep.t], self.perceptual, self.cfg.pretrain.lambda_max
            )
            (loss / ep.num_frames).backward()
            total += loss.detach() / ep.num_frames
        ep.step_index = ep.num_frames
        apply_gradients(self.opt_local, self.net, total)
        self.net.eval()
        return {"losses/local_loss": float(total)}

    # -- checkpoints ---------------------------------------------------------------------------------
    def save_resume(self) -> None:
        """Rank 0: actor, critic, optimizers (and Γ when it trains) at the end of an auxiliary phase."""
        if not dist.is_main():
            return
        learner = self.learner
        tensors = {**state_tensors(learner.actor, "actor."), **state_tensors(learner.critic, "critic.")}
        meta: dict[str, Any] = {
            "config": to_dict(self.cfg),
            "iteration": self.iteration,
            "stage": "ppg",
            "policy": self.name,
        }
        opts: dict[str, torch.optim.Optimizer] = {"opt_pi": learner.opt_pi, "opt_v": learner.opt_v}
        if self.opt_local is not None:
            tensors.update(state_tensors(self.net, "local."))
            opts["opt_local"] = self.opt_local
        for key, opt in opts.items():
            ot, om = optimizer_tensors(opt, prefix=f"{key}.")
            tensors.update(ot)
            meta[key] = om
        save_checkpoint(self.run.resume(self.name), tensors, meta)

    def try_resume(self) -> bool:
        """Continue from ``resume_<policy>.safetensors`` if it exists (every rank reads it); whether it did."""
        path = self.run.resume(self.name)
        if not path.is_file():
            return False
        tensors, meta = load_checkpoint(path)
        check_same_architecture(self.cfg, meta, path)
        learner = self.learner
        load_state(learner.actor, tensors, "actor.", path)
        load_state(learner.critic, tensors, "critic.", path)
        opts: dict[str, torch.optim.Optimizer] = {"opt_pi": learner.opt_pi, "opt_v": learner.opt_v}
        if self.opt_local is not None and "opt_local" in meta:
            load_state(self.net, tensors, "local.", path)
            opts["opt_local"] = self.opt_local
        for key, opt in opts.items():
            load_optimizer(opt, tensors, meta[key], prefix=f"{key}.")
            for (
                group
            ) in opt.param_groups:  # the learning rate of this config wins (e.g. lowered after a divergence)
                group["lr"] = self.local_lr if key == "opt_local" else self.cfg.ppg.lr
        self.iteration = int(meta["iteration"])
        log.info("ppg: resuming %s from iteration %d (%s)", self.name, self.iteration, path)
        return True

    # -- the loop ------------------------------------------------------------------------------------
    def train(self) -> Path:
        """Run PPG: phases of N_π policy iterations, each followed by one auxiliary phase.

        A checkpoint is written after every auxiliary phase; a rerun of the same command resumes
        from it (and, with the per-iteration seeds, repeats what an uninterrupted run would do).
        """
        cfg = self.cfg.ppg
        # what this policy is trained from: a later retraining of either is noticed (pipeline)
        self.trained_from = {"local": fingerprint(self.run.local)}
        if self.cfg.ppg.warm_start:
            self.trained_from["imitation"] = fingerprint(self.run.policy("imitation"))
        resumed = self.try_resume()
        self.metrics = MetricLog(
            self.run.logs,
            "ppg",
            self.name,
            resumed_at=self.iteration if resumed else None,
            enabled=dist.is_main(),
        )
        started = time.time()
        bar = tqdm(
            total=cfg.iterations,
            initial=self.iteration,
            desc=f"ppg {self.name}",
            disable=not (self.progress and dist.is_main()),
            dynamic_ncols=True,
        )
        stop = False
        try:
            while self.iteration < cfg.iterations and not stop:
                batches: list[Batch] = []
                for _ in range(min(cfg.n_pi, cfg.iterations - self.iteration)):  # policy phase
                    t0 = time.time()
                    self.reseed(self.iteration)
                    episodes = self.episodes()
                    batch, stats = self.learner.rollout(episodes)
                    if self.opt_local is not None:
                        stats.update(self.update_local(episodes, batch))
                    bc = cfg.bc_coef * cfg.bc_decay**self.iteration
                    stats.update(self.learner.policy_epochs(batch, bc))
                    batches.append(batch)
                    self.iteration += 1
                    self.log_iteration(stats, len(batch) / (time.time() - t0), bar)
                    stop = self.out_of_time(started)
                    if stop:
                        break
                aux = self.learner.auxiliary_phase(batches)  # auxiliary phase
                self.metrics.log(self.iteration, dist.mean_scalars(aux))
                self.save_resume()
        except (Diverged, InvalidLogitsError) as e:
            raise self.diverged(str(e)) from None
        except KeyboardInterrupt:
            if dist.is_main():
                resume = self.run.resume(self.name)
                log.info(
                    "ppg %s: interrupted at iteration %d; %s",
                    self.name,
                    self.iteration,
                    f"run again to resume from its last checkpoint ({resume})"
                    if resume.is_file()
                    else "no checkpoint yet (one is saved after every auxiliary phase): a rerun starts over",
                )
            raise
        finally:
            bar.close()
            self.metrics.close()
        if dist.is_main():
            save_model(
                self.run.policy(self.name),
                self.learner.actor,
                self.cfg,
                stage="ppg",
                policy=self.name,
                iterations=self.iteration,
                tau=self.learner.tau,  # evaluation's greedy pair is the mode at the τ PPG trained
                trained_from=self.trained_from,
            )
            if self.opt_local is not None:
                save_model(self.run.tuned_local(self.name), self.net, self.cfg, stage="ppg")
            discard(self.run.resume(self.name))
        dist.barrier()  # the policy file exists on every rank's return
        return self.run.policy(self.name)

    def log_iteration(self, stats: dict[str, float], samples_per_s: float, bar: tqdm) -> None:
        """Average the iteration's statistics over ranks; rank 0 logs them and updates the bar."""
        stats = dist.mean_scalars(stats)
        stats["charts/SPS"] = samples_per_s * dist.world_size()
        self.metrics.log(self.iteration, stats)
        bar.update(1)
        bar.set_postfix(
            ret=f"{stats['charts/episodic_return']:.3f}", valid=f"{stats['charts/valid_rate']:.2f}"
        )

    def out_of_time(self, started: float) -> bool:
        """Whether ``ppg.max_minutes`` is spent (decided together, so every rank stops at the same iteration)."""
        budget = self.cfg.ppg.max_minutes
        stop = dist.any_rank(budget > 0 and time.time() - started > 60 * budget)
        if stop:
            log.info("ppg: time budget of %.1f min reached at iteration %d", budget, self.iteration)
        return stop

    def diverged(self, reason: str) -> RovrError:
        """The one-line error for a NaN/inf during training; the last good checkpoint is left untouched."""
        path = self.run.resume(self.name)
        kept = (
            f"the last good checkpoint '{path}' is kept; lower ppg.lr and rerun the same command to resume from it"
            if path.is_file()
            else "no checkpoint had been written yet; lower ppg.lr and rerun"
        )
        return RovrError(f"PPG diverged after iteration {self.iteration} ({reason}); {kept}")


def train_policy(cfg: RunConfig, run: RunDir, progress: bool = True) -> Path:
    """Stage 3 entry point (``rovr train-policy``): writes ``policy_<name>.safetensors`` and returns its path."""
    if cfg.k != 2:
        raise RovrError(f"PPG is implemented for pairs (k=2); got k={cfg.k}")
    from rovr.pipeline import check_stage_inputs

    check_stage_inputs(cfg, run, "train-policy")
    try:
        return Trainer(cfg, run, progress).train()
    finally:
        dist.shutdown()

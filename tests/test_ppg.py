"""Stage 3 (PPG): the math against hand calculations, the update logic on a toy problem whose best
pair is known, and smoke runs of the real trainer (files, resume, bad input, divergence)."""

from __future__ import annotations

import dataclasses
import itertools
import logging
import math
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from rovr.checkpoint import load_checkpoint, save_checkpoint
from rovr.conditioning import PolicyChooser
from rovr.config import PPGConfig, RunConfig, load_config, save_config, to_dict
from rovr.errors import CheckpointError, ConfigError, RovrError
from rovr.models.local import LocalNet
from rovr.models.policy import PolicyConfig, build_actor, build_critic, greedy_pair, pair_log_prob
from rovr.reconstruct import Episodes, Observation, StepInfo
from rovr.train import ppg
from rovr.train.common import RunDir, prepare_run, read_metric_log, save_model
from rovr.train.imitation import all_pairs
from rovr.train.ppg import (
    Batch,
    Learner,
    Trainer,
    auxiliary_loss,
    causal_returns,
    clipped_surrogate,
    explained_variance,
    gae,
    group_advantages,
    pair_kl,
    rewards_to_go,
    train_policy,
)

# ============================================================================= returns and advantages


def test_rewards_to_go_by_hand() -> None:
    r = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 1.0]])
    assert torch.allclose(rewards_to_go(r), torch.tensor([[6.0, 5.0, 3.0], [1.0, 1.0, 1.0]]))
    # γ = 0.5: R2 = 3, R1 = 2 + 1.5 = 3.5, R0 = 1 + 1.75 = 2.75
    assert torch.allclose(rewards_to_go(r[:1], gamma=0.5), torch.tensor([[2.75, 3.5, 3.0]]))


def test_gae_lambda_one_is_rewards_to_go_minus_value() -> None:
    r = torch.tensor([[1.0, 2.0, 3.0]])
    v = torch.tensor([[0.5, 1.0, 2.0]])
    adv, ret = gae(r, v, gamma=1.0, lam=1.0)
    assert torch.allclose(adv, torch.tensor([[5.5, 4.0, 1.0]]))  # R − V = [6, 5, 3] − V
    assert torch.allclose(ret, torch.tensor([[6.0, 5.0, 3.0]]))  # the value target is R_t
    g = torch.Generator().manual_seed(0)
    r, v = torch.randn(4, 7, generator=g), torch.randn(4, 7, generator=g)
    adv, ret = gae(r, v)
    assert torch.allclose(adv, rewards_to_go(r) - v, atol=1e-6)


def test_causal_returns_by_hand() -> None:
    """Each step keeps its own local reward plus the episode's terminal (flow) reward, nothing later."""
    rewards = torch.tensor([[0.1, 0.2, 0.3 + 0.5], [0.0, -0.1, 0.4 + 0.2]])  # last step: local + terminal
    terminal = torch.tensor([0.5, 0.2])
    want = torch.tensor([[0.6, 0.7, 0.8], [0.2, 0.1, 0.6]])
    torch.testing.assert_close(causal_returns(rewards, terminal), want)
    torch.testing.assert_close(rewards, torch.tensor([[0.1, 0.2, 0.8], [0.0, -0.1, 0.6]]))  # not modified


def test_group_advantages_by_hand() -> None:
    r = torch.tensor([[1.0, 2.0, 6.0], [0.5, 0.5, 0.5]])
    # pair 0: 1 − (2 + 6)/2 = −3; pair 1: 2 − (1 + 6)/2 = −1.5; pair 2: 6 − (1 + 2)/2 = 4.5
    torch.testing.assert_close(group_advantages(r), torch.tensor([[-3.0, -1.5, 4.5], [0.0, 0.0, 0.0]]))
    with pytest.raises(ValueError, match="at least 2"):
        group_advantages(torch.ones(4, 1))


def test_gae_hand_computed() -> None:
    r = torch.tensor([1.0, 2.0, 3.0])
    v = torch.tensor([0.5, 1.0, 2.0])
    # γ = 1, λ = 0.5: δ = [1 + 1 − 0.5, 2 + 2 − 1, 3 − 2] = [1.5, 3, 1]
    # Â2 = 1, Â1 = 3 + 0.5·1 = 3.5, Â0 = 1.5 + 0.5·3.5 = 3.25
    adv, ret = gae(r, v, gamma=1.0, lam=0.5)
    assert torch.allclose(adv, torch.tensor([3.25, 3.5, 1.0]))
    assert torch.allclose(ret, torch.tensor([3.75, 4.5, 3.0]))
    # γ = 0.9, λ = 0.5: δ = [1 + 0.9 − 0.5, 2 + 1.8 − 1, 1] = [1.4, 2.8, 1]; γλ = 0.45
    adv, _ = gae(r, v, gamma=0.9, lam=0.5)
    assert torch.allclose(adv, torch.tensor([1.4 + 0.45 * 3.25, 2.8 + 0.45, 1.0]))
    adv0, _ = gae(r, v, gamma=1.0, lam=0.0)  # λ = 0: one-step TD errors
    assert torch.allclose(adv0, torch.tensor([1.5, 3.0, 1.0]))


# ============================================================================= losses


def test_clipped_surrogate_by_hand() -> None:
    ratio = torch.tensor([1.5, 0.5, 1.1, 0.5, 1.5])
    adv = torch.tensor([1.0, -1.0, 2.0, 1.0, -1.0])
    old = torch.zeros(5)
    logp = ratio.log().requires_grad_(True)
    out = clipped_surrogate(logp, old, adv, clip=0.2)
    # min(rÂ, clip(r)Â): 1.2 (clipped above), −0.8 (clipped below), 2.2, 0.5 and −1.5 (unclipped: the min)
    assert out.loss.item() == pytest.approx(-(1.2 - 0.8 + 2.2 + 0.5 - 1.5) / 5)
    assert out.clipfrac.item() == pytest.approx(0.8)  # |r − 1| > 0.2 for all but 1.1
    # (r − 1) − log r: 2·(0.5 − 0.405465) + 2·(−0.5 + 0.693147) + (0.1 − 0.095310)
    assert out.approx_kl.item() == pytest.approx((2 * 0.094535 + 2 * 0.193147 + 0.004690) / 5, abs=1e-5)
    out.loss.backward()
    # d/dlogp: 0 where the clipped term is the min; −Â·r/N elsewhere (a positive advantage raises log π)
    assert logp.grad is not None
    assert torch.allclose(logp.grad, torch.tensor([0.0, 0.0, -2 * 1.1 / 5, -0.5 / 5, 1.5 / 5]), atol=1e-6)


def test_clipped_surrogate_at_ratio_one_is_minus_mean_advantage() -> None:
    adv = torch.tensor([0.3, -1.0, 2.0])
    out = clipped_surrogate(torch.zeros(3), torch.zeros(3), adv, clip=0.2)
    assert out.loss.item() == pytest.approx(-adv.mean().item())
    assert out.approx_kl.item() == 0.0 and out.clipfrac.item() == 0.0


def _pair_probs_bruteforce(logits: np.ndarray, tau: float) -> dict[tuple[int, int], float]:
    """P({a, b}) of sequential sampling without replacement from softmax(l/τ), by enumeration."""
    z = np.where(np.isfinite(logits), logits / tau, -np.inf)
    p = np.exp(z - z[np.isfinite(z)].max())
    p /= p.sum()
    out: dict[tuple[int, int], float] = {}
    for a, b in itertools.permutations(range(len(p)), 2):
        key = (min(a, b), max(a, b))
        out[key] = out.get(key, 0.0) + p[a] * p[b] / (1 - p[a])
    return out


def test_pair_kl_against_enumeration() -> None:
    tau = 0.7
    old = torch.tensor(
        [[-math.inf, 0.3, -1.0, 2.0, 0.5], [1.0, -math.inf, 0.0, 0.0, -2.0]], dtype=torch.float64
    )
    new = torch.tensor(
        [[-math.inf, 1.0, 0.2, 0.0, -0.5], [0.0, -math.inf, 1.5, -1.0, 0.3]], dtype=torch.float64
    )
    kls = []
    for o, n in zip(old.numpy(), new.numpy()):
        po, pn = _pair_probs_bruteforce(o, tau), _pair_probs_bruteforce(n, tau)
        kls.append(sum(po[k] * math.log(po[k] / pn[k]) for k in po if po[k] > 0))
    assert pair_kl(old, new, tau).item() == pytest.approx(np.mean(kls), rel=1e-9)
    assert pair_kl(old, old, tau).item() == pytest.approx(0.0, abs=1e-12)
    assert pair_kl(new, old, tau).item() != pytest.approx(np.mean(kls), rel=1e-3)  # not symmetric


def test_pair_kl_gradient_is_finite_with_masked_frames() -> None:
    old = torch.tensor([[-math.inf, 0.3, -1.0, 2.0]])
    new = torch.tensor([[-math.inf, 1.0, 0.2, 0.0]], requires_grad=True)
    pair_kl(old, new, 0.7).backward()
    assert new.grad is not None and torch.isfinite(new.grad).all()


def test_auxiliary_loss_by_hand() -> None:
    aux_value, target = torch.tensor([1.0, 2.0]), torch.tensor([0.0, 4.0])
    logits = torch.tensor([[-math.inf, 0.0, 1.0, 2.0], [0.5, -math.inf, 0.0, 0.0]])
    out = auxiliary_loss(aux_value, target, logits, logits, tau=0.7, beta_clone=3.0)
    assert out.value_loss.item() == pytest.approx(2.5)  # ((1 − 0)² + (2 − 4)²) / 2
    assert out.kl.item() == pytest.approx(0.0, abs=1e-6)
    assert out.loss.item() == pytest.approx(2.5, abs=1e-6)
    moved = logits + torch.tensor([[0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 2.0]])
    out = auxiliary_loss(aux_value, target, logits, moved, tau=0.7, beta_clone=0.5)
    kl = pair_kl(logits, moved, 0.7).item()
    assert kl > 0.01
    assert out.loss.item() == pytest.approx(2.5 + 0.5 * kl)


def test_explained_variance() -> None:
    y = torch.tensor([1.0, 2.0, 4.0])
    assert explained_variance(y, y) == pytest.approx(1.0)
    assert explained_variance(torch.full((3,), y.mean().item()), y) == pytest.approx(0.0)
    assert math.isnan(explained_variance(y, torch.ones(3)))


# ============================================================================= a toy problem with a known best pair

T, CELL = 5, 8


def best_pair(t: int) -> tuple[int, int]:
    """The pair that earns reward at target t: the two frames after t, cyclically (never adjacent ties)."""
    a, b = (t + 1) % T, (t + 2) % T
    return (min(a, b), max(a, b))


class PairBandit:
    """B episodes of T steps; step t pays 1 for :func:`best_pair` (t), else 0.

    The frames are fixed random images (the same for every episode of one ``seed``), so the target
    index t is the only context that matters: a contextual bandit read through the real actor.
    """

    def __init__(self, batch: int, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        side = math.ceil(math.sqrt(T)) * CELL
        self.video = torch.rand(batch, 3, side, side, generator=g)
        self.frames = torch.rand(batch, T, 3, CELL, CELL, generator=g)
        self.batch_size, self.num_frames, self.step_index = batch, T, 0

    @property
    def done(self) -> bool:
        return self.step_index >= T

    def observation(self) -> Observation:
        t = self.step_index
        return Observation(self.video, self.frames[:, t], torch.full((self.batch_size,), t, dtype=torch.long))

    def _hit(self, pairs: torch.Tensor) -> torch.Tensor:
        return (pairs == torch.tensor(best_pair(self.step_index))).all(dim=-1).float()

    def step(self, pairs: torch.Tensor) -> StepInfo:
        hit = self._hit(pairs)
        self.step_index += 1
        return StepInfo(reward=hit, loss_before=torch.ones_like(hit), loss_after=1 - hit, coverage=hit)

    def try_pairs(self, pairs: torch.Tensor) -> torch.Tensor:
        return self._hit(pairs)  # (B, M)


def _learner(
    seed: int = 0, teacher: Callable[[PairBandit], torch.Tensor] | None = None, **ppg_overrides: object
) -> Learner:
    torch.manual_seed(seed)
    pc = PolicyConfig(cell=CELL, channels=8, hidden=32)
    defaults: dict[str, object] = {"lr": 3e-3, "minibatch": 16, "reward_scale": 1.0, "ent_coef": 0.0}
    cfg = PPGConfig(**{**defaults, **ppg_overrides})  # type: ignore[arg-type]
    return Learner(build_actor(pc, T), build_critic(pc, T), cfg, pc.tau, torch.device("cpu"), teacher=teacher)


def _greedy_pairs(learner: Learner, env: PairBandit) -> list[tuple[int, int]]:
    out = []
    with torch.no_grad():
        for t in range(T):
            env.step_index = t
            o = env.observation()
            pi = learner.actor(o.video[:1], o.target[:1], o.t[:1])
            a, b = greedy_pair(pi.logits, pi.pair_bias, learner.tau)[0].tolist()
            out.append((a, b))
    return out


def test_rollout_batch_layout_returns_and_ratio_one() -> None:
    learner = _learner(reward_scale=2.0)
    with torch.no_grad():  # logits of order 1, so that any change of the input shows
        learner.actor.policy_head.weight.mul_(300.0)  # type: ignore[operator]
    env = PairBandit(batch=3)
    batch, stats = learner.rollout(env)
    assert len(batch) == 3 * T and batch.video.dtype == torch.uint8
    assert batch.t.tolist() == list(range(T)) * 3  # row b·T + s holds step s of episode b
    rewards = torch.stack(
        [
            (batch.pairs[b * T : (b + 1) * T] == torch.tensor([best_pair(t) for t in range(T)]))
            .all(1)
            .float()
            for b in range(3)
        ]
    )
    expected = 2.0 * rewards_to_go(rewards)  # γ = λ = 1: R_t, scaled
    assert torch.allclose(batch.returns, expected.flatten())
    assert torch.allclose(batch.adv, batch.returns - batch.value)  # Â = R − V, not V − R
    assert stats["charts/episodic_return"] == pytest.approx(float(rewards.sum(1).mean()))
    # the stored observations are exactly what π acted on: the first update sees ratio 1
    logits = learner.actor(batch.obs(torch.arange(len(batch)))).logits
    logp = pair_log_prob(logits, batch.pairs[:, 0], batch.pairs[:, 1], tau=learner.tau)
    assert torch.allclose(logp, batch.logp, atol=1e-5)


def test_group_rollout_layout_and_leave_one_out_advantages() -> None:
    """ppg.group = K: K draws per state, the first played; each row's advantage is its reward minus the others' mean."""
    K = 3
    learner = _learner(group=K, credit="causal", reward_scale=2.0)
    with torch.no_grad():
        learner.actor.policy_head.weight.mul_(300.0)  # type: ignore[operator]
    env = PairBandit(batch=2)
    played: list[torch.Tensor] = []
    step = env.step

    def spy(pairs: torch.Tensor) -> StepInfo:
        played.append(pairs.clone())
        return step(pairs)

    env.step = spy  # type: ignore[method-assign]
    batch, stats = learner.rollout(env)
    assert len(batch) == 2 * T * K
    assert batch.t.tolist() == [t for _ in range(2) for t in range(T) for _ in range(K)]
    assert batch.played.tolist() == [j == 0 for _ in range(2 * T) for j in range(K)]
    pairs = batch.pairs.view(2, T, K, 2)
    torch.testing.assert_close(pairs[:, :, 0], torch.stack(played, dim=1))  # row j = 0 is the played pair
    hits = torch.stack([(pairs[:, t] == torch.tensor(best_pair(t))).all(-1).float() for t in range(T)], 1)
    r = 2.0 * hits  # (B, T, K): no flow reward here, so a pair's return is its own reward
    loo = r - (r.sum(-1, keepdim=True) - r) / (K - 1)
    torch.testing.assert_close(batch.adv, loo.flatten())
    torch.testing.assert_close(batch.returns, r.mean(-1, keepdim=True).expand_as(r).flatten())
    assert batch.states().t.tolist() == list(range(T)) * 2
    logits = learner.actor(batch.obs(torch.arange(len(batch)))).logits  # the draws' own log-probs
    logp = pair_log_prob(logits, batch.pairs[:, 0], batch.pairs[:, 1], tau=learner.tau)
    torch.testing.assert_close(logp, batch.logp, atol=1e-5, rtol=1e-5)
    assert stats["charts/episodic_return"] == pytest.approx(float(hits[:, :, 0].sum(1).mean()))


def test_self_critical_baseline_is_the_greedy_pairs_return() -> None:
    """ppg.baseline=greedy: Â_j = R_j − R(greedy pair), the greedy pair scored by try_pairs like the draws."""
    K = 3
    learner = _learner(group=K, credit="causal", baseline="greedy")
    with torch.no_grad():
        learner.actor.policy_head.weight.mul_(300.0)  # type: ignore[operator]
    env = PairBandit(batch=2)
    tried: list[torch.Tensor] = []
    try_pairs = env.try_pairs

    def spy(pairs: torch.Tensor) -> torch.Tensor:
        tried.append(pairs.clone())
        return try_pairs(pairs)

    env.try_pairs = spy  # type: ignore[method-assign]
    batch, _ = learner.rollout(env)
    assert len(batch) == 2 * T * K and all(p.shape == (2, K, 2) for p in tried)  # K − 1 draws + greedy
    greedy = torch.stack([p[:, -1] for p in tried], dim=1)  # (B, T, 2)
    for t, g in enumerate(_greedy_pairs(learner, env)):
        assert greedy[0, t].tolist() == list(g)  # the pair evaluation picks
    pairs = batch.pairs.view(2, T, K, 2)
    hit = lambda p, t: (p == torch.tensor(best_pair(t))).all(-1).float()  # noqa: E731
    r = torch.stack([hit(pairs[:, t], t) for t in range(T)], 1)  # (B, T, K)
    r_greedy = torch.stack([hit(greedy[:, t], t) for t in range(T)], 1)  # (B, T)
    torch.testing.assert_close(batch.adv, (r - r_greedy[..., None]).flatten())


def test_group_needs_causal_credit() -> None:
    with pytest.raises(ConfigError, match="ppg.group.*credit=causal"):
        load_config(None, ["ppg.group=4", "ppg.credit=to_go"])
    assert load_config(None, ["ppg.group=4", "ppg.credit=causal"]).ppg.group == 4


def test_positive_advantage_raises_probability_of_its_pair() -> None:
    learner = _learner(e_pi=1, e_v=0, lr=1e-2)
    env = PairBandit(batch=1)
    env.step_index = 2
    o = env.observation()
    quant = Batch(
        video=ppg.quantize(o.video).repeat(2, 1, 1, 1),
        target=ppg.quantize(o.target).repeat(2, 1, 1, 1),
        t=o.t.repeat(2),
        pairs=torch.tensor([[3, 4], [0, 1]]),
        logp=torch.zeros(2),
        value=torch.full((2,), 0.5),
        returns=torch.tensor([1.0, 0.0]),
        adv=torch.tensor([0.5, -0.5]),  # R − V: the first pair did better than expected
        played=torch.ones(2, dtype=torch.bool),
        teacher=torch.zeros(2, 0),  # no teacher term
    )
    idx = torch.arange(2)
    with torch.no_grad():
        before = learner.actor(quant.obs(idx)).logits
        quant.logp = pair_log_prob(before, quant.pairs[:, 0], quant.pairs[:, 1], tau=learner.tau)
    learner.policy_epochs(quant)
    with torch.no_grad():
        after = learner.actor(quant.obs(idx)).logits
        logp = pair_log_prob(after, quant.pairs[:, 0], quant.pairs[:, 1], tau=learner.tau)
    assert logp[0] > quant.logp[0] and logp[1] < quant.logp[1]


def test_ppg_finds_the_rewarded_pair() -> None:
    """A few PPG iterations (policy phases + auxiliary phases) on the bandit end up choosing its best pairs."""
    learner = _learner(seed=0, n_pi=2, e_pi=4, e_v=2, e_aux=2, lr=1e-2, ent_coef=0.05)
    env_eval = PairBandit(batch=1)
    assert sum(p == best_pair(t) for t, p in enumerate(_greedy_pairs(learner, env_eval))) <= 2
    returns = []
    best = [best_pair(t) for t in range(T)]
    for it in range(24):  # 12 iterations on a Xeon, 13 on an AMD EPYC (float sums differ by CPU)
        learner.reseed(it)
        batches = []
        for _ in range(learner.cfg.n_pi):
            batch, stats = learner.rollout(PairBandit(batch=16))
            learner.policy_epochs(batch)
            batches.append(batch)
            returns.append(stats["charts/episodic_return"])
        aux = learner.auxiliary_phase(batches)
        assert aux["losses/clone_kl"] < 0.5
        if it >= 11 and _greedy_pairs(learner, env_eval) == best:
            break
    assert _greedy_pairs(learner, env_eval) == best
    assert np.mean(returns[-4:]) > 3.0 > 1.5 > np.mean(returns[:4])  # out of T = 5; random pairs: 5/6


@pytest.mark.parametrize("baseline", ["others", "greedy"])
def test_ppg_with_group_draws_finds_the_rewarded_pair(baseline: str) -> None:
    """The same bandit with K = 4 draws per state; Â against the other draws or the greedy pair (no critic in Â)."""
    learner = _learner(
        seed=0,
        n_pi=2,
        e_pi=4,
        e_v=2,
        e_aux=2,
        lr=1e-2,
        ent_coef=0.05,
        group=4,
        credit="causal",
        baseline=baseline,
    )
    env_eval = PairBandit(batch=1)
    returns = []
    for it in range(8):
        learner.reseed(it)
        batches = []
        for _ in range(learner.cfg.n_pi):
            batch, stats = learner.rollout(PairBandit(batch=8))
            learner.policy_epochs(batch)
            batches.append(batch)
            returns.append(stats["charts/episodic_return"])
        learner.auxiliary_phase(batches)
    assert _greedy_pairs(learner, env_eval) == [best_pair(t) for t in range(T)]
    assert np.mean(returns[-4:]) > 3.0 > 1.5 > returns[0]  # out of T = 5; random pairs: 5/6


def test_kl_to_the_reference_pulls_the_policy_back_to_it() -> None:
    """ppg.kl_ref: with zero advantages the only force is β_ref · KL(π ‖ π_ref), and it shrinks that KL."""
    learner = _learner(seed=0, kl_ref=1.0, e_pi=1, e_v=0, lr=3e-3)
    reference = learner.reference
    assert reference is not None and not any(p.requires_grad for p in reference.parameters())
    torch.manual_seed(1)
    for p in learner.actor.parameters():  # move π away from where it started (= π_ref)
        p.data.add_(0.05 * torch.randn_like(p))
    env = PairBandit(batch=4)
    batch, _ = learner.rollout(env)
    batch.adv.zero_()
    idx = torch.arange(len(batch))

    def kl() -> float:
        with torch.no_grad():
            out, ref = learner.actor(batch.obs(idx)), reference(batch.obs(idx))
            return float(pair_kl(out.logits, ref.logits, learner.tau))

    before = kl()
    assert before > 1e-3
    for _ in range(10):
        stats = learner.policy_epochs(batch)
    assert kl() < 0.1 * before and stats["losses/kl_ref"] > 0
    assert "losses/kl_ref" not in _learner().policy_epochs(batch)  # off by default


def _pair_index(pair: tuple[int, int]) -> int:
    """The column of ``pair`` in :func:`all_pairs` order."""
    a, b = all_pairs(T)
    return int(((a == pair[0]) & (b == pair[1])).nonzero())


def _teacher_of_the_bandit(env: PairBandit) -> torch.Tensor:
    """All of q on the bandit's rewarded pair: (B, C(T, 2))."""
    q = torch.zeros(env.batch_size, T * (T - 1) // 2)
    q[:, _pair_index(best_pair(env.step_index))] = 1.0
    return q


def test_teacher_term_alone_teaches_the_teachers_pairs() -> None:
    """ppg.bc_coef (DAPG): with zero advantages the teacher's cross-entropy is the only force on π, and
    it makes the greedy pair the teacher's on the states it saw; the rollout stores q per state."""
    learner = _learner(seed=3, bc_coef=1.0, e_pi=1, e_v=0, lr=1e-2, teacher=_teacher_of_the_bandit)
    batch, _ = learner.rollout(PairBandit(batch=4))
    assert batch.teacher.shape == (4 * T, T * (T - 1) // 2)  # row b·T + s: step s of episode b
    teacher_pairs = [best_pair(t) for t in range(T)] * 4
    assert batch.teacher.argmax(1).tolist() == [_pair_index(p) for p in teacher_pairs]

    def greedy() -> list[tuple[int, int]]:
        with torch.no_grad():
            pi = learner.actor(batch.obs(torch.arange(len(batch))))
            return [(a, b) for a, b in greedy_pair(pi.logits, pi.pair_bias, learner.tau).tolist()]

    assert greedy() != teacher_pairs
    batch.adv.zero_()
    ces = [learner.policy_epochs(batch, bc=1.0)["losses/teacher_ce"] for _ in range(60)]
    assert ces[-1] < 0.1 * ces[0]
    assert greedy() == teacher_pairs
    assert "losses/teacher_ce" not in learner.policy_epochs(batch, bc=0.0)  # weight 0 this iteration


def test_teacher_term_needs_a_teacher() -> None:
    with pytest.raises(RovrError, match="bc_coef"):
        _learner(bc_coef=0.5)
    assert _learner().rollout(PairBandit(batch=2))[0].teacher.shape == (2 * T, 0)  # off: nothing stored


def test_auxiliary_phase_distils_value_and_keeps_policy() -> None:
    learner = _learner(seed=1, e_aux=8, beta_clone=1.0, lr=1e-2)
    batch, _ = learner.rollout(PairBandit(batch=4))
    idx = torch.arange(len(batch))
    with torch.no_grad():
        before = learner.actor(batch.obs(idx))
    stats = learner.auxiliary_phase([batch])
    with torch.no_grad():
        after = learner.actor(batch.obs(idx))
    err = lambda out: float(((out.aux_value - batch.returns) ** 2).mean())  # noqa: E731
    assert err(after) < 0.5 * err(before)
    assert pair_kl(before.logits, after.logits, learner.tau).item() < 0.05
    assert set(stats) == {"losses/aux_value_loss", "losses/clone_kl", "losses/aux_critic_loss"}


def test_nonfinite_loss_raises_before_the_weights_change() -> None:
    learner = _learner()
    batch, _ = learner.rollout(PairBandit(batch=2))
    weights = [p.detach().clone() for p in learner.actor.parameters()]
    batch.adv[3] = float("nan")
    with pytest.raises(ppg.Diverged):
        learner.policy_epochs(batch)
    assert all(torch.equal(w, p) for w, p in zip(weights, learner.actor.parameters()))


# ============================================================================= the real trainer on a tiny config

TINY = [
    "data.num_videos=6",
    "data.frames=6",
    "data.size=32",
    "data.val_fraction=0.2",
    "data.test_fraction=0.2",
    "local.base_channels=8",
    "local.depth=2",
    "policy.cell=8",
    "policy.channels=8",
    "policy.hidden=32",
    "metric.perceptual=ssim",
    "corruption.max_valid_pairs=6",
    "pretrain.steps=5",
    "pretrain.batch_size=4",
    "imitation.steps=5",
    "ppg.iterations=2",
    "ppg.n_pi=2",
    "ppg.episodes_per_iter=2",
    "ppg.minibatch=8",
    "threads=1",
]


def tiny_config(*extra: str) -> RunConfig:
    return load_config(None, [*TINY, *extra])


def make_run(root: Path, cfg: RunConfig, imitation: bool = True) -> RunDir:
    """A run folder with an (untrained) Γ and imitation policy, as stages 1 and 2 would leave it."""
    run = prepare_run(cfg, root)
    torch.manual_seed(0)
    save_model(run.local, LocalNet(cfg.local, cfg.k), cfg, stage="pretrain-local")
    if imitation:
        save_model(run.policy("imitation"), build_actor(cfg.policy, cfg.data.frames), cfg, stage="imitation")
    return run


def test_train_policy_writes_policy_logs_and_no_resume(tmp_path: Path) -> None:
    cfg = tiny_config("ppg.train_local=true")
    run = make_run(tmp_path / "run", cfg)
    local_before = load_checkpoint(run.local)[0]
    path = train_policy(cfg, run, progress=False)
    assert path == run.policy("rovr_flow_warm") and path.is_file()
    tensors, meta = load_checkpoint(path)
    assert meta["stage"] == "ppg" and meta["iterations"] == 2 and meta["config"]["ppg"]["n_pi"] == 2
    assert not run.resume("rovr_flow_warm").exists()  # removed once the stage completes
    rows = [r for r in read_metric_log(run.logs) if r["stage"] == "ppg"]
    keys = set().union(*rows)
    for key in (
        "losses/approx_kl",
        "losses/clipfrac",
        "losses/explained_variance",
        "losses/policy_loss",
        "losses/value_loss",
        "losses/entropy",
        "losses/clone_kl",
        "losses/local_loss",
        "charts/episodic_return",
        "charts/flow_recovery",
        "charts/SPS",
    ):
        assert key in keys, key
    assert [r["step"] for r in rows if "charts/SPS" in r] == [1, 2]
    assert list((run.logs / "ppg-rovr_flow_warm").glob("events.out.tfevents.*"))
    # Γ kept training on L_R: its copy changed, the stage-1 file did not
    tuned = load_checkpoint(run.root / "local_rovr_flow_warm.safetensors")[0]
    assert any(not torch.equal(tuned[k], local_before[k]) for k in local_before)
    assert all(torch.equal(load_checkpoint(run.local)[0][k], v) for k, v in local_before.items())


def test_train_policy_with_group_draws_reference_anchor_and_teacher(tmp_path: Path) -> None:
    """The real trainer with K = 3 draws per state, β_ref > 0, the copy teacher's term (decaying) and Γ
    training: Γ learns from the played pairs only."""
    cfg = tiny_config(
        "ppg.group=3",
        "ppg.credit=causal",
        "ppg.kl_ref=0.1",
        "ppg.train_local=true",
        "ppg.bc_coef=0.5",
        "ppg.bc_decay=0.5",
    )
    run = make_run(tmp_path / "run", cfg)
    trainer = Trainer(cfg, run, progress=False)
    played: list[int] = []
    update_local = trainer.update_local
    policy_epochs = trainer.learner.policy_epochs
    weights: list[float] = []

    def spy_epochs(batch: Batch, bc: float = 0.0) -> dict[str, float]:
        # the copy teacher's q for every state, the same on its K rows
        pairs = cfg.data.frames * (cfg.data.frames - 1) // 2
        assert batch.teacher.shape == (len(batch), pairs)
        assert torch.allclose(batch.teacher.sum(1), torch.ones(len(batch)))
        assert torch.equal(batch.teacher[0::3], batch.teacher[1::3])
        weights.append(bc)
        return policy_epochs(batch, bc)

    trainer.learner.policy_epochs = spy_epochs  # type: ignore[method-assign]

    def spy(ep: Episodes, batch: Batch) -> dict[str, float]:
        played.append(len(batch.states()))
        assert len(batch) == 3 * len(batch.states())
        return update_local(ep, batch)

    trainer.update_local = spy  # type: ignore[method-assign]
    trainer.train()
    assert played == [cfg.ppg.episodes_per_iter * cfg.data.frames] * cfg.ppg.iterations
    rows = [r for r in read_metric_log(run.logs) if r["stage"] == "ppg" and "charts/SPS" in r]
    assert len(rows) == 2 and all(np.isfinite(r["losses/kl_ref"]) for r in rows)
    assert all(np.isfinite(r["losses/teacher_ce"]) for r in rows)
    assert weights == [0.5, 0.25]  # bc_coef · bc_decay^iteration
    assert run.policy("rovr_flow_warm").is_file()


def test_ppg_temperature_drives_training_and_evaluation_plays_at_it(tmp_path: Path) -> None:
    """ppg.tau: the Learner samples and scores at it, the checkpoint records it, and every loader of
    the policy (evaluate, restore) rebuilds the chooser at it; imitation keeps policy.tau."""
    from rovr.evaluate import load_policies
    from rovr.restore import pick_chooser
    from rovr.train.common import load_policy

    cfg = tiny_config("ppg.tau=0.2", "ppg.iterations=1", "ppg.n_pi=1")
    run = make_run(tmp_path / "run", cfg)
    trainer = Trainer(cfg, run, progress=False)
    assert trainer.learner.tau == 0.2 != cfg.policy.tau
    trainer.train()
    assert load_checkpoint(run.policy("rovr_flow_warm"))[1]["tau"] == 0.2
    policies, unusable = load_policies(cfg, run.root, torch.device("cpu"))
    assert not unusable and {n: p.tau for n, p in policies.items()} == {
        "imitation": cfg.policy.tau,
        "rovr_flow_warm": 0.2,
    }
    chooser = pick_chooser(cfg, run, "rovr_flow_warm")
    assert isinstance(chooser, PolicyChooser) and chooser.tau == 0.2
    assert Trainer(tiny_config(), make_run(tmp_path / "b", tiny_config()), progress=False).learner.tau == (
        cfg.policy.tau
    )  # ppg.tau = 0: the policy's own temperature
    tensors, meta = load_checkpoint(run.policy("rovr_flow_warm"))
    save_checkpoint(run.policy("rovr_flow_warm"), tensors, {**meta, "tau": -1.0})
    with pytest.raises(CheckpointError, match="invalid temperature tau=-1.0"):
        load_policy(run.policy("rovr_flow_warm"), cfg, "rovr_flow_warm", "rovr train-policy")
    with pytest.raises(ConfigError, match="ppg.tau"):
        tiny_config("ppg.tau=-0.5")


def test_resume_after_an_interrupted_phase_repeats_the_uninterrupted_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = tiny_config("ppg.iterations=4", "ppg.flow_reward=false")
    straight = train_policy(cfg, make_run(tmp_path / "a", cfg), progress=False)

    run = make_run(tmp_path / "b", cfg)
    save = Trainer.save_resume

    def save_then_interrupt(self: Trainer) -> None:
        save(self)
        raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "save_resume", save_then_interrupt)
    with pytest.raises(KeyboardInterrupt), caplog.at_level(logging.INFO, logger="rovr"):
        train_policy(cfg, run, progress=False)
    monkeypatch.setattr(Trainer, "save_resume", save)
    resume = run.resume("rovr_noflow_warm")
    assert (
        f"ppg rovr_noflow_warm: interrupted at iteration 2; run again to resume from its last checkpoint ({resume})"
        in caplog.text
    )
    assert load_checkpoint(resume)[1]["iteration"] == 2  # saved after the first auxiliary phase
    assert not run.policy("rovr_noflow_warm").exists()

    resumed = train_policy(cfg, run, progress=False)
    a, b = load_checkpoint(straight)[0], load_checkpoint(resumed)[0]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    steps = [r["step"] for r in read_metric_log(run.logs) if "charts/SPS" in r]
    assert steps == [1, 2, 3, 4]  # iterations 3 and 4 came from the resumed run
    assert not resume.exists()


def test_resumed_run_logs_each_iteration_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Iteration 3 was logged, then interrupted; the checkpoint is of iteration 2, so the resumed run logs
    iteration 3 again and its earlier row must go (the learning curves went back and forth)."""
    cfg = tiny_config("ppg.iterations=4", "ppg.flow_reward=false")
    run = make_run(tmp_path / "run", cfg)
    log_iteration = Trainer.log_iteration

    def log_then_interrupt(self: Trainer, *args: Any) -> None:
        log_iteration(self, *args)
        if self.iteration == 3:
            raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(Trainer, "log_iteration", log_then_interrupt)
        with pytest.raises(KeyboardInterrupt):
            train_policy(cfg, run, progress=False)
    rows = read_metric_log(run.logs)
    assert [r["step"] for r in rows if "charts/SPS" in r] == [1, 2, 3]
    train_policy(cfg, run, progress=False)
    rows = read_metric_log(run.logs)
    assert [r["step"] for r in rows if "charts/SPS" in r] == [1, 2, 3, 4]
    assert [r["step"] for r in rows if "losses/clone_kl" in r] == [2, 4]
    assert {r.get("policy") for r in rows} == {"rovr_noflow_warm"}
    events = run.logs / "ppg-rovr_noflow_warm"
    assert len(list(events.glob("events.out.tfevents.*"))) == 2  # the resumed run's events purge step 3 on


def test_without_the_flow_reward_flow_recovery_is_logged_and_changes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """rovr_noflow_warm measures flow recovery for its learning curve (the ablation's curve to compare)
    but is trained exactly as without any flow backend."""
    import rovr.train.ppg as ppg_module

    cfg = tiny_config("ppg.iterations=2", "ppg.flow_reward=false")
    run = make_run(tmp_path / "a", cfg)
    measured = train_policy(cfg, run, progress=False)
    rows = [r for r in read_metric_log(run.logs) if "charts/SPS" in r]
    assert [r["step"] for r in rows] == [1, 2]
    assert all(-1.0 <= r["charts/flow_recovery"] <= 1.0 for r in rows)
    monkeypatch.setattr(ppg_module, "build_flow", lambda *a, **k: None)
    blind = train_policy(cfg, make_run(tmp_path / "b", cfg), progress=False)
    a, b = load_checkpoint(measured)[0], load_checkpoint(blind)[0]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_time_budget_stops_after_the_iteration_and_still_runs_the_auxiliary_phase(tmp_path: Path) -> None:
    cfg = tiny_config("ppg.iterations=4", "ppg.flow_reward=false", "ppg.max_minutes=0.000001")
    run = make_run(tmp_path / "run", cfg)
    _, meta = load_checkpoint(train_policy(cfg, run, progress=False))
    assert meta["iterations"] == 1
    rows = [r for r in read_metric_log(run.logs) if r["stage"] == "ppg"]
    assert [r["step"] for r in rows if "charts/SPS" in r] == [1]
    assert [r["step"] for r in rows if "losses/clone_kl" in r] == [1]


def test_divergence_stops_and_keeps_the_last_good_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = tiny_config("ppg.iterations=4", "ppg.flow_reward=false")
    run = make_run(tmp_path / "run", cfg)
    calls = {"n": 0}
    step = Episodes.step

    def nan_after_two_iterations(self: Episodes, pairs: torch.Tensor) -> StepInfo:
        info = step(self, pairs)
        calls["n"] += 1
        if calls["n"] > 2 * cfg.ppg.episodes_per_iter // self.batch_size * self.num_frames:
            info.reward = torch.full_like(info.reward, float("nan"))
        return info

    monkeypatch.setattr(Episodes, "step", nan_after_two_iterations)
    with pytest.raises(RovrError) as err:
        train_policy(cfg, run, progress=False)
    msg = str(err.value)
    assert "diverged" in msg and str(run.resume("rovr_noflow_warm")) in msg and "\n" not in msg
    tensors, meta = load_checkpoint(run.resume("rovr_noflow_warm"))
    assert meta["iteration"] == 2 and all(
        torch.isfinite(v).all() for v in tensors.values() if v.is_floating_point()
    )
    assert not run.policy("rovr_noflow_warm").exists()


def test_missing_stage_checkpoints_name_the_command_to_run(tmp_path: Path) -> None:
    cfg = tiny_config()
    run = prepare_run(cfg, tmp_path / "empty")
    with pytest.raises(CheckpointError, match="rovr pretrain-local"):
        train_policy(cfg, run, progress=False)
    run = make_run(tmp_path / "no_imitation", cfg, imitation=False)
    with pytest.raises(CheckpointError, match="rovr imitate"):
        train_policy(cfg, run, progress=False)
    cold = dataclasses.replace(cfg, ppg=dataclasses.replace(cfg.ppg, warm_start=False, iterations=1, n_pi=1))
    assert train_policy(cold, run, progress=False) == run.policy("rovr_flow_cold")


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rovr.cli", *args], capture_output=True, text=True, timeout=120, check=False
    )


def test_cli_train_policy_bad_input_is_one_line(tmp_path: Path) -> None:
    sets = [a for s in TINY for a in ("--set", s)]
    res = _cli("train-policy", "--out", str(tmp_path / "fresh"), "--no-progress", *sets)
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "rovr pretrain-local" in lines[0] and "Traceback" not in res.stderr

    other = make_run(tmp_path / "other", tiny_config("policy.hidden=16"))
    res = _cli("train-policy", "--out", str(other.root), "--no-progress", *sets)
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "another config" in lines[0] and "policy" in lines[0]


def test_resume_checkpoint_of_another_architecture_is_refused(tmp_path: Path) -> None:
    cfg = tiny_config()
    run = make_run(tmp_path / "run", cfg)
    other = tiny_config("policy.hidden=16")
    ppg.save_checkpoint(
        run.resume("rovr_flow_warm"), {}, {"config": dataclasses.asdict(other), "iteration": 2}
    )
    with pytest.raises(CheckpointError, match="another config"):
        train_policy(cfg, run, progress=False)


def _spied_rollout(cfg: RunConfig, root: Path) -> tuple[Batch, dict[str, float], list[StepInfo], Episodes]:
    """One rollout of real episodes with every StepInfo kept: (batch, stats, step infos, episodes)."""
    trainer = Trainer(cfg, make_run(root, cfg), progress=False)
    trainer.reseed(0)
    captured: list[StepInfo] = []
    episodes = trainer.episodes()
    step = episodes.step

    def spy(pairs: torch.Tensor) -> StepInfo:
        info = step(pairs)
        captured.append(info)
        return info

    episodes.step = spy  # type: ignore[method-assign]
    batch, stats = trainer.learner.rollout(episodes)
    return batch, stats, captured, episodes


def test_causal_credit_in_a_real_rollout(tmp_path: Path) -> None:
    """ppg.credit=causal on real episodes: each return is the step's own L_P gain + the episode's w·O."""
    cfg = tiny_config("ppg.credit=causal", "ppg.flow_weight=2.0")
    batch, _, captured, _ = _spied_rollout(cfg, tmp_path / "run")
    last = captured[-1]
    assert last.flow_recovery is not None
    B, T = len(last.reward), len(captured)
    local = torch.stack([i.loss_before - i.loss_after for i in captured], dim=1)  # (B, T)
    want = (local + 2.0 * last.flow_recovery[:, None]) * cfg.ppg.reward_scale
    torch.testing.assert_close(batch.returns.view(B, T), want.float(), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("credit", ["causal", "to_go"])
def test_frame_flow_credit_in_a_real_rollout(tmp_path: Path, credit: str) -> None:
    """ppg.flow_credit=frame: the episode's w·O is paid in per-frame shares of Eq. 3's error, recomputed
    here from the finished video's flows; causal: a step's return is its own L_P gain plus its share."""
    from rovr.metrics.flow import recovery_shares

    cfg = tiny_config(f"ppg.credit={credit}", "ppg.flow_credit=frame", "ppg.flow_weight=2.0")
    batch, stats, captured, episodes = _spied_rollout(cfg, tmp_path / "run")
    last = captured[-1]
    assert last.flow_recovery is not None and episodes.flow is not None
    B, T = len(last.reward), len(captured)
    f_orig, f_bar = episodes._reference_flows()
    f_hat = torch.stack([episodes.flow.flow(v) for v in episodes.video])
    sq = (f_hat.double() - f_orig.double()).flatten(2).pow(2).sum(2)
    shares = 2.0 * recovery_shares(sq, (f_bar.double() - f_orig.double()).flatten(1).norm(dim=1)).float()
    torch.testing.assert_close(shares.sum(1), 2.0 * last.flow_recovery, atol=1e-5, rtol=1e-5)
    local = torch.stack([i.loss_before - i.loss_after for i in captured], dim=1)  # (B, T)
    credited = local + shares
    rewards = torch.stack([i.reward for i in captured], dim=1)
    torch.testing.assert_close(credited.sum(1), rewards.sum(1), atol=1e-5, rtol=1e-5)  # the same return
    assert stats["charts/episodic_return"] == pytest.approx(float(rewards.sum(1).mean()), abs=1e-6)
    want = credited if credit == "causal" else rewards_to_go(credited)
    torch.testing.assert_close(batch.returns.view(B, T), want * cfg.ppg.reward_scale, atol=1e-5, rtol=1e-5)


def test_terminal_reward_shares_follow_the_visiting_order(tmp_path: Path) -> None:
    """Targets visited in another order: step u is paid the share of the frame it repaired, order[u]."""
    from rovr.metrics.flow import recovery_shares

    cfg = tiny_config("ppg.flow_weight=3.0")
    trainer = Trainer(cfg, make_run(tmp_path / "run", cfg), progress=False)
    trainer.reseed(0)
    ep = trainer.episodes()
    n = ep.num_frames
    ep.order = [*range(1, n, 2), *range(0, n, 2)]  # odd frames first, then even
    while not ep.done:
        others = [i for i in range(n) if i != ep.t][:2]
        info = ep.step(torch.tensor([others] * ep.batch_size))
    assert info.flow_recovery is not None and ep.flow is not None
    f_orig, f_bar = ep._reference_flows()
    f_hat = torch.stack([ep.flow.flow(v) for v in ep.video])
    sq = (f_hat.double() - f_orig.double()).flatten(2).pow(2).sum(2)
    per_frame = 3.0 * recovery_shares(sq, (f_bar.double() - f_orig.double()).flatten(1).norm(dim=1))
    shares = ep.terminal_reward_shares()
    torch.testing.assert_close(shares, per_frame[:, ep.order].float())
    torch.testing.assert_close(shares.sum(1), 3.0 * info.flow_recovery, atol=1e-5, rtol=1e-5)


def test_frame_flow_credit_without_the_flow_reward_is_the_episode_credit(tmp_path: Path) -> None:
    """ppg.flow_reward=false: nothing to split, so frame credit returns what episode credit does."""
    batches = []
    for credit in ("episode", "frame"):
        cfg = tiny_config("ppg.credit=causal", f"ppg.flow_credit={credit}", "ppg.flow_reward=false")
        trainer = Trainer(cfg, make_run(tmp_path / credit, cfg), progress=False)
        trainer.reseed(0)
        batches.append(trainer.learner.rollout(trainer.episodes())[0])
    torch.testing.assert_close(batches[0].returns, batches[1].returns)
    torch.testing.assert_close(batches[0].pairs, batches[1].pairs)


def test_frame_flow_credit_needs_one_draw_per_state() -> None:
    with pytest.raises(ConfigError, match="ppg.flow_credit.*group = 1"):
        load_config(None, ["ppg.group=4", "ppg.credit=causal", "ppg.flow_credit=frame"])


def test_tried_pairs_and_swapped_flow_recovery_match_recomputation(tmp_path: Path) -> None:
    """try_pairs scores a pair as step would; swapped_flow_recovery equals O of the swapped video, recomputed."""
    from rovr.metrics.flow import flow_recovery_batch

    cfg = tiny_config("ppg.flow_weight=2.0")
    trainer = Trainer(cfg, make_run(tmp_path / "run", cfg), progress=False)
    trainer.reseed(0)
    ep = trainer.episodes()
    B, n = ep.batch_size, ep.num_frames
    g = torch.Generator().manual_seed(0)
    tried: list[torch.Tensor] = []
    for t in range(n):
        others = torch.tensor([i for i in range(n) if i != t])
        draws = torch.stack(
            [others[torch.randperm(n - 1, generator=g)[:2]].sort().values for _ in range(3 * B)]
        )
        draws = draws.view(B, 3, 2)
        gains = ep.try_pairs(draws)  # (B, 3); draw 0 is played below
        info = ep.step(draws[:, 0])
        torch.testing.assert_close(gains[:, 0], info.loss_before - info.loss_after)
        tried.append(draws)
    swapped = ep.swapped_flow_recovery()  # (B, T, 3)
    assert swapped.shape == (B, n, 3)
    torch.testing.assert_close(ep.swapped_terminal_reward(), 2.0 * swapped)
    played = ep.flow_recovery()
    torch.testing.assert_close(swapped[:, :, 0], played[:, None].expand(B, n))  # draw 0 was played
    f_orig, f_bar = ep._reference_flows()
    assert ep.flow is not None
    for t in (0, n // 2, n - 1):
        for j in (1, 2):
            ep.step_index = t  # rebuild the tried frame at t independently of try_pairs
            video = ep.video.clone()
            video[:, t] = ep.rebuild(tried[t][:, j])
            f_hat = torch.stack([ep.flow.flow(v) for v in video])
            want = flow_recovery_batch(f_hat, f_bar, f_orig).float()
            torch.testing.assert_close(swapped[:, t, j], want, atol=1e-5, rtol=1e-5)
    ep.step_index = n


# ----------------------------------------------------------------------------- the run folder


def _checkpoints(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(root.glob("*.safetensors"))} | {
        "config.yaml": (root / "config.yaml").read_bytes()
    }


def test_a_trained_run_is_never_changed_behind_its_back(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`rovr train` with other settings would skip stages trained otherwise (and rewrite config.yaml
    to say what they were not trained with): refused. A stage run alone would replace its finished
    checkpoint: refused without --restart. The same settings (a time budget aside) go on."""
    from rovr.cli import main

    sets = [a for s in TINY for a in ("--set", s)]
    out = tmp_path / "run"
    train = ["train", "--out", str(out), "--no-progress", *sets]
    assert main(train) == 0
    before = _checkpoints(out)
    capsys.readouterr()

    def refused(args: list[str], *needles: str) -> None:
        assert main(args) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and all(n in lines[0] for n in needles), lines
        assert _checkpoints(out) == before

    refused([*train, "--set", "seed=7"], "trained with other settings", "seed: 0 → 7")
    refused([*train, "--set", "condition_on=observed"], "condition_on: 'current' → 'observed'")
    refused([*train, "--set", f"data.source={tmp_path}"], "data.source")
    refused(["pretrain-local", "--out", str(out), "--no-progress", *sets], "already done", "--restart")
    refused(["imitate", "--out", str(out), "--no-progress", *sets], "already done", "--restart")
    assert main([*train, "--set", "pretrain.max_minutes=9"]) == 0  # a budget is not a setting
    assert {k: v for k, v in _checkpoints(out).items() if k != "config.yaml"} == {
        k: v for k, v in before.items() if k != "config.yaml"
    }
    # --restart retrains the stage, and says that the policies were trained on the previous Γ
    assert (
        main(
            [
                "pretrain-local",
                "--out",
                str(out),
                "--no-progress",
                "--restart",
                *sets,
                "--set",
                "pretrain.steps=6",
            ]
        )
        == 0
    )
    assert (out / "local.safetensors").read_bytes() != before["local.safetensors"]
    assert load_checkpoint(out / "local.safetensors")[1]["step"] == 6
    capsys.readouterr()
    # the policies were trained from the previous Γ: `rovr train` does not skip them as finished
    assert main([*train, "--set", "pretrain.steps=6"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "trained from another local" in err[0] and "--restart" in err[0], err


def test_an_interrupted_restart_is_resumed_and_the_stages_after_it_retrained(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """`rovr train --restart` stopped in Γ's stage (a preempted job): the plain rerun resumed nothing
    and skipped every stage as finished, keeping the old models beside an orphaned resume file; the
    rerun with --restart started over again, so such a job could never finish."""
    import rovr.train.local as local_stage
    from rovr.cli import main

    sets = [a for s in TINY for a in ("--set", s)]
    out = tmp_path / "run"
    train = ["train", "--out", str(out), "--no-progress", *sets, "--set", "pretrain.steps=6"]
    assert main(train) == 0
    before = _checkpoints(out)
    real, calls = local_stage.compute_gradients, {"n": 0}

    def stop_at_the_third_step(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    capsys.readouterr()
    with monkeypatch.context() as m:
        m.setattr(local_stage, "compute_gradients", stop_at_the_third_step)
        assert main([*train[:-2], "--restart", "--set", "pretrain.steps=5"]) == 130
    assert "resume where they stopped when rerun without --restart" in capsys.readouterr().err
    weights = {n for n in before if n != "config.yaml"}
    assert RunDir(out).resume("local").is_file() and all(_checkpoints(out)[n] == before[n] for n in weights)
    with caplog.at_level(logging.INFO, logger="rovr"):
        assert main([*train[:-2], "--set", "pretrain.steps=5"]) == 0  # resumes Γ, then retrains the rest
    assert "pretrain-local: resuming the interrupted retraining" in caplog.text
    caplog.clear()
    assert not RunDir(out).resume("local").exists()
    assert load_checkpoint(out / "local.safetensors")[1]["step"] == 5
    after = _checkpoints(out)
    assert all(
        after[n] != before[n] for n in ("policy_imitation.safetensors", "policy_rovr_flow_warm.safetensors")
    )
    with caplog.at_level(logging.INFO, logger="rovr"):
        assert main([*train[:-2], "--set", "pretrain.steps=5"]) == 0  # all finished, from this Γ
    assert "already done" in caplog.text and _checkpoints(out) == after


def test_a_stage_alone_on_other_data_than_its_gamma_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The README's torchrun line once left out --data: PPG then trained on the synthetic default,
    silently, in a run whose Γ was trained on the user's videos. Allowed (a policy may be trained on
    other videos), but said."""
    from rovr.pipeline import check_stage_inputs
    from rovr.video.io import write_video

    cfg = tiny_config()
    run = make_run(tmp_path / "run", cfg)
    with caplog.at_level(logging.WARNING, logger="rovr"):
        check_stage_inputs(cfg, run, "train-policy")
    assert "other data" not in caplog.text
    videos = tmp_path / "videos"
    write_video(videos / "a.mp4", np.zeros((8, 32, 32, 3), np.uint8), fps=8)
    with caplog.at_level(logging.WARNING, logger="rovr"):
        check_stage_inputs(tiny_config(f"data.source={videos}"), run, "train-policy")
    assert (
        f"train-policy trains on other data than Γ (local.safetensors) was trained on ('synthetic' → '{videos}')"
        in caplog.text
    )


def test_raft_without_its_weights_is_refused_before_any_stage(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """metric.flow=raft with weights that are not there: refused before Γ and imitation are trained
    (PPG refused it only after them: hours at the paper's scale)."""
    from rovr.cli import main

    sets = [a for s in TINY for a in ("--set", s)]
    out = tmp_path / "run"
    nope = tmp_path / "nope.pth"
    args = ["train", "--out", str(out), "--no-progress", *sets, "--set", "metric.flow=raft"]
    assert main([*args, "--set", f"metric.raft_weights={nope}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"'metric.raft_weights' points to '{nope}', which does not exist" in err[0], err
    assert not out.exists()


def test_a_second_command_training_into_the_same_folder_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A job submitted twice: both trained into one folder, the last writer won and the metric log
    interleaved. While one command holds the folder, another is refused, touching nothing."""
    import fcntl

    from rovr.cli import main

    sets = [a for s in TINY for a in ("--set", s)]
    out = tmp_path / "run"
    out.mkdir()
    held = os.open(out, os.O_RDONLY)
    fcntl.flock(held, fcntl.LOCK_EX)  # as another `rovr train` still running there holds it
    try:
        for args in (["train"], ["pretrain-local"], ["demo", "--quick", "--no-eval-data"]):
            assert main([*args, "--out", str(out), "--no-progress", *sets]) == 2
            err = capsys.readouterr().err.strip().splitlines()
            assert len(err) == 1 and "is in use by another rovr command training there" in err[0], err
        assert list(out.iterdir()) == []
    finally:
        os.close(held)
    assert main(["pretrain-local", "--out", str(out), "--no-progress", *sets]) == 0  # released: goes on


def test_of_two_commands_started_together_the_refused_one_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two jobs into a new folder: both find no folder to lock, both make it; the one that then
    loses the lock wrote the other run's config.yaml (its own data) before being refused."""
    import fcntl

    import rovr.train.common as common
    from rovr.errors import RovrError
    from rovr.train.common import RunLock

    out = tmp_path / "run"
    make_folder, held = common.make_folder, []

    def made_and_taken_by_the_other_job(path: Path, what: str, flag: str) -> Path:
        make_folder(path, what, flag)
        held.append(os.open(path, os.O_RDONLY))
        fcntl.flock(held[-1], fcntl.LOCK_EX)
        return path

    monkeypatch.setattr(common, "make_folder", made_and_taken_by_the_other_job)
    try:
        with RunLock(out) as lock, pytest.raises(RovrError, match="is in use by another rovr command"):
            prepare_run(tiny_config(), out, lock=lock)
        assert list(out.iterdir()) == []
    finally:
        for fd in held:
            os.close(fd)


def test_the_next_command_printed_after_training_can_be_pasted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import shlex

    from rovr.cli import main

    out = tmp_path / "my run ü"
    assert main(["train", "--out", str(out), "--no-progress", *[a for s in TINY for a in ("--set", s)]]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    words = shlex.split(line.partition("next: ")[2].rstrip(")"))
    assert words == [
        "rovr",
        "evaluate",
        "--checkpoint",
        str(out.resolve()),
        "--out",
        str(out.resolve() / "eval"),
    ]


def test_a_config_yaml_rovr_did_not_write_is_not_replaced(tmp_path: Path) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "config.yaml").write_text("my: own\nsettings: [1, 2]\n")
    with pytest.raises(ConfigError, match="not a rovr run config"):
        prepare_run(tiny_config(), out)
    assert (out / "config.yaml").read_text() == "my: own\nsettings: [1, 2]\n"


def test_a_refused_command_leaves_no_config_that_locks_the_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The README's way to try a policy config on a trained Γ (its local.* copied into a new folder):
    a refused `rovr imitate` leaves no config.yaml behind, and a config.yaml without checkpoints
    binds nothing, so the right command then works."""
    from rovr.cli import main

    sets = [a for s in TINY for a in ("--set", s)]
    cfg = tiny_config()
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    save_model(RunDir(fresh).local, LocalNet(cfg.local, cfg.k), cfg, stage="pretrain-local")
    assert (
        main(["imitate", "--out", str(fresh), "--no-progress", *sets, "--set", "local.base_channels=12"]) == 2
    )
    err = capsys.readouterr().err
    assert "another config (local.safetensors: local.base_channels: 8 → 12)" in err, err
    assert "(--restart too)" in err and not (fresh / "config.yaml").exists()
    save_config(tiny_config("local.base_channels=12"), RunDir(fresh).config)  # as an older version left it
    (fresh / "local.safetensors").rename(tmp_path / "gamma.safetensors")
    assert main(["imitate", "--out", str(fresh), "--no-progress", *sets]) == 2  # no Γ: says what to run
    (tmp_path / "gamma.safetensors").rename(fresh / "local.safetensors")
    assert main(["imitate", "--out", str(fresh), "--no-progress", *sets]) == 0
    assert RunDir(fresh).policy("imitation").is_file()


def test_an_interrupted_stage_resumes_only_with_its_settings(tmp_path: Path) -> None:
    """A resume checkpoint of other settings is refused (rovr train would finish it on other data or
    seeds); a lowered learning rate, the way to go on after a divergence, is allowed."""
    from rovr.pipeline import check_stage_state

    cfg = tiny_config()
    run = make_run(tmp_path / "run", cfg)
    trainer_cfg = tiny_config("ppg.lr=1e-3")
    save_checkpoint(run.resume("rovr_flow_warm"), {"w": torch.ones(1)}, {"config": to_dict(cfg)})
    assert check_stage_state(trainer_cfg, run, "train-policy", restart=False, alone=False)
    with pytest.raises(ConfigError, match="interrupted train-policy with other settings .*ppg.iterations"):
        check_stage_state(tiny_config("ppg.iterations=4"), run, "train-policy", restart=False, alone=False)
    assert check_stage_state(tiny_config("ppg.iterations=4"), run, "train-policy", restart=True, alone=False)
    # imitation's resume checkpoint likewise (it had none before: an interrupt lost the stage)
    run.policy("imitation").unlink()
    save_checkpoint(run.resume("imitation"), {"w": torch.ones(1)}, {"config": to_dict(cfg)})
    assert check_stage_state(tiny_config("imitation.lr=1e-4"), run, "imitate", restart=False, alone=False)
    with pytest.raises(ConfigError, match="interrupted imitate with other settings .*imitation.soft"):
        check_stage_state(tiny_config("imitation.soft=0.5"), run, "imitate", restart=False, alone=False)


def test_the_cold_start_ablation_learns_without_the_teacher() -> None:
    """rovr reproduce table2: the three runs differ in flow reward and start; the cold one also drops
    the copy teacher's term (a demo config's ppg.bc_coef), or it would not start cold."""
    from rovr.pipeline import ablations

    runs = ablations(load_config(None, ["ppg.bc_coef=1", "ppg.train_local=true"]))
    assert [(c.ppg.flow_reward, c.ppg.warm_start, c.ppg.bc_coef) for c in runs] == [
        (True, True, 1.0),
        (True, False, 0.0),
        (False, True, 1.0),
    ]
    assert all(c.ppg.train_local for c in runs)
    assert [ppg.policy_name(c) for c in runs] == ["rovr_flow_warm", "rovr_flow_cold", "rovr_noflow_warm"]

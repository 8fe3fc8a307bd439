"""Pair distribution math (brute force) and policy/critic networks (shapes, masking, gradients)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from rovr.data.encoding import grid_side, tile, untile
from rovr.errors import RovrError
from rovr.models.policy import (
    Actor,
    Critic,
    InvalidLogitsError,
    PointerActor,
    PointerCritic,
    PolicyConfig,
    PolicyObs,
    build_actor,
    build_critic,
    candidate_to_frame,
    expand_candidate_logits,
    frame_to_candidate,
    greedy_pair,
    match_cues,
    pair_cues,
    pair_entropy,
    pair_log_prob,
    pair_log_prob_table,
    sample_pair,
    sample_topk,
    topk_entropy,
    topk_log_prob,
)

INF = math.inf

# ----------------------------------------------------------------------------- brute force references


def _probs(logits: np.ndarray, tau: float) -> np.ndarray:
    z = logits / tau
    e = np.exp(z - z[np.isfinite(z)].max())
    return e / e.sum()


def _sequence_probs(p: np.ndarray, k: int) -> dict[tuple[int, ...], float]:
    """P(draw sequence) of sequential sampling without replacement, by enumeration."""
    out: dict[tuple[int, ...], float] = {}
    for seq in itertools.permutations(range(len(p)), k):
        prob, taken = 1.0, set()
        for s in seq:
            left = sum(p[j] for j in range(len(p)) if j not in taken)  # summed, not 1 - taken: exact
            prob *= p[s] / left
            taken.add(s)
        out[seq] = prob
    return out


def _subset_probs(p: np.ndarray, k: int) -> dict[tuple[int, ...], float]:
    out: dict[tuple[int, ...], float] = {}
    for seq, prob in _sequence_probs(p, k).items():
        key = tuple(sorted(seq))
        out[key] = out.get(key, 0.0) + prob
    return out


def _logits(n: int, seed: int, masked: tuple[int, ...] = ()) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    lg = 2.0 * torch.randn(n, generator=g, dtype=torch.float64)
    lg[list(masked)] = -INF
    return lg


# ----------------------------------------------------------------------------- pair log-prob


@pytest.mark.parametrize(("n", "masked", "tau"), [(4, (), 1.0), (7, (2,), 0.7), (12, (0, 11), 0.3)])
def test_pair_log_prob_matches_enumeration_of_sequential_sampling(
    n: int, masked: tuple[int, ...], tau: float
) -> None:
    lg = _logits(n, seed=n, masked=masked)
    ref = _subset_probs(_probs(lg.numpy(), tau), 2)
    pairs = list(itertools.combinations(range(n), 2))
    a = torch.tensor([i for i, _ in pairs])
    b = torch.tensor([j for _, j in pairs])
    logits = lg.expand(len(pairs), n)
    lp = pair_log_prob(logits, a, b, tau)
    lp_swapped = pair_log_prob(logits, b, a, tau)  # unordered
    expected = torch.tensor([ref[p] for p in pairs], dtype=torch.float64)
    torch.testing.assert_close(lp.exp(), expected, atol=1e-12, rtol=1e-9)
    torch.testing.assert_close(lp_swapped, lp)
    for i, (x, y) in enumerate(pairs):
        if x in masked or y in masked:
            assert lp[i] == -INF
        else:
            assert abs(float(lp[i]) - math.log(ref[(x, y)])) < 1e-6
    assert float(lp.exp().sum()) == pytest.approx(1.0, abs=1e-12)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.floats(-20, 20, allow_nan=False), min_size=3, max_size=8),
    st.floats(0.2, 3.0),
)
def test_pair_log_prob_property(values: list[float], tau: float) -> None:
    lg = torch.tensor(values, dtype=torch.float64)
    n = len(values)
    ref = _subset_probs(_probs(lg.numpy(), tau), 2)
    table, ia, ib = pair_log_prob_table(lg[None], tau)
    for m in range(len(ia)):
        key = (int(ia[m]), int(ib[m]))
        assert float(table[0, m].exp()) == pytest.approx(ref[key], abs=1e-12, rel=1e-9)
    assert table.shape == (1, n * (n - 1) // 2)
    assert float(table.exp().sum()) == pytest.approx(1.0, abs=1e-12)


def test_pair_log_prob_equals_topk_log_prob_k2() -> None:
    lg = torch.stack([_logits(9, s, masked=(s % 9,)) for s in range(5)])
    idx = sample_topk(lg, 2, 0.7, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(pair_log_prob(lg, idx[:, 0], idx[:, 1], 0.7), topk_log_prob(lg, idx, 0.7))


def test_pair_log_prob_is_stable_when_one_frame_takes_all_the_mass() -> None:
    logits = torch.tensor([[100.0, 0.0, 0.0, 0.0]], requires_grad=True)  # float32, p_0 = 1 - 3e-44
    lp = pair_log_prob(logits.expand(3, 4), torch.tensor([0, 0, 1]), torch.tensor([1, 3, 2]), tau=1.0)
    # P({0, b}) = p_0 p_b (1/(1-p_0) + 1/(1-p_b)) -> 1/3; P({1, 2}) ~ 2 e^-200
    torch.testing.assert_close(lp[:2], torch.full((2,), math.log(1 / 3)), atol=1e-5, rtol=0)
    assert float(lp[2].detach()) == pytest.approx(math.log(2) - 200.0, abs=1e-3)
    lp.sum().backward()
    assert logits.grad is not None and bool(torch.isfinite(logits.grad).all())


def test_geometric_mode_is_the_mean_of_individual_log_probs_not_a_distribution() -> None:
    lg = _logits(6, seed=3)
    pairs = list(itertools.combinations(range(6), 2))
    a = torch.tensor([i for i, _ in pairs])
    b = torch.tensor([j for _, j in pairs])
    geo = pair_log_prob(lg.expand(len(pairs), 6), a, b, 0.7, mode="geometric")
    logp = torch.log_softmax(lg / 0.7, dim=0)
    torch.testing.assert_close(geo, (logp[a] + logp[b]) / 2)
    assert abs(float(geo.exp().sum()) - 1.0) > 0.1


def test_impossible_pairs_are_minus_inf_with_finite_gradients() -> None:
    logits = torch.tensor([[0.3, -INF, 1.0, 0.2]] * 3, requires_grad=True)
    a, b = torch.tensor([0, 1, 2]), torch.tensor([2, 3, 2])  # fine, masked frame, repeated frame
    for mode in ("exact", "geometric"):
        lp = pair_log_prob(logits, a, b, 0.7, mode=mode)
        assert bool(torch.isfinite(lp[0])) and lp[1] == -INF and lp[2] == -INF
    lp = topk_log_prob(logits, torch.stack([a, b], 1), 0.7)
    assert lp[1] == -INF and lp[2] == -INF
    (lp[0] + pair_log_prob(logits, a, b, 0.7)[0] + pair_entropy(logits, 0.7).sum()).backward()
    assert logits.grad is not None and bool(torch.isfinite(logits.grad).all())


@pytest.mark.parametrize("fn", ["pair_log_prob", "pair_entropy", "sample_pair", "topk_log_prob"])
def test_nan_logits_raise_a_clear_error(fn: str) -> None:
    logits = torch.tensor([[0.0, 1.0, float("nan"), 2.0]])
    with pytest.raises(InvalidLogitsError, match="NaN logits from the policy") as err:
        if fn == "pair_log_prob":
            pair_log_prob(logits, torch.tensor([0]), torch.tensor([1]), 0.7)
        elif fn == "pair_entropy":
            pair_entropy(logits, 0.7)
        elif fn == "sample_pair":
            sample_pair(logits, 0.7)
        else:
            topk_log_prob(logits, torch.tensor([[0, 1, 3]]), 0.7)
    assert isinstance(err.value, ValueError) and isinstance(err.value, RovrError)


def test_too_few_selectable_frames_raise() -> None:
    with pytest.raises(InvalidLogitsError, match="fewer than 2"):
        sample_pair(torch.tensor([[0.0, -INF, -INF]]), 0.7)
    with pytest.raises(ValueError, match="k <= 4"):
        topk_log_prob(torch.zeros(1, 8), torch.tensor([[0, 1, 2, 3, 4]]), 0.7)


# ----------------------------------------------------------------------------- k-subsets and entropy


def test_topk_log_prob_k3_matches_enumeration() -> None:
    n, tau = 6, 0.8
    lg = _logits(n, seed=11, masked=(4,))
    p = _probs(lg.numpy(), tau)
    subsets = list(itertools.combinations(range(n), 3))
    idx = torch.tensor(subsets)
    logits = lg.expand(len(subsets), n)
    ref_sets = _subset_probs(p, 3)
    lp = topk_log_prob(logits, idx, tau)
    torch.testing.assert_close(lp.exp(), torch.tensor([ref_sets[s] for s in subsets], dtype=torch.float64))
    assert float(lp.exp().sum()) == pytest.approx(1.0, abs=1e-12)
    ref_seq = _sequence_probs(p, 3)
    seqs = list(itertools.permutations(range(n), 3))
    lp_seq = topk_log_prob(lg.expand(len(seqs), n), torch.tensor(seqs), tau, ordered=True)
    torch.testing.assert_close(lp_seq.exp(), torch.tensor([ref_seq[s] for s in seqs], dtype=torch.float64))
    # any order of the same set gives the same unordered log-prob
    torch.testing.assert_close(topk_log_prob(logits, idx.flip(1), tau), lp)


def test_topk_log_prob_k4_sums_to_one() -> None:
    lg = _logits(7, seed=5, masked=(1,))
    subsets = torch.tensor(list(itertools.combinations(range(7), 4)))
    lp = topk_log_prob(lg.expand(len(subsets), 7), subsets, 0.7)
    assert float(lp.exp().sum()) == pytest.approx(1.0, abs=1e-12)


def test_pair_entropy_matches_enumeration() -> None:
    logits = torch.stack([_logits(8, seed=s, masked=(s,)) for s in range(4)])
    ent = pair_entropy(logits, 0.7)
    for row in range(4):
        probs = np.array(list(_subset_probs(_probs(logits[row].numpy(), 0.7), 2).values()))
        probs = probs[probs > 0]
        assert float(ent[row]) == pytest.approx(-(probs * np.log(probs)).sum(), abs=1e-10)
    torch.testing.assert_close(topk_entropy(logits, 2, 0.7), ent)
    uniform = pair_entropy(torch.zeros(1, 6, dtype=torch.float64), 1.0)
    assert float(uniform[0]) == pytest.approx(math.log(15), abs=1e-12)


def test_topk_entropy_k3_matches_enumeration() -> None:
    lg = _logits(6, seed=2, masked=(0,))
    probs = np.array(list(_subset_probs(_probs(lg.numpy(), 0.7), 3).values()))
    probs = probs[probs > 0]
    assert float(topk_entropy(lg[None], 3, 0.7)[0]) == pytest.approx(
        -(probs * np.log(probs)).sum(), abs=1e-10
    )


# ----------------------------------------------------------------------------- sampling


def _frequency_check(draws: torch.Tensor, expected: dict[tuple[int, ...], float]) -> None:
    keys = list(expected)
    counts = {key: 0 for key in keys}
    for row, c in zip(*torch.unique(draws, dim=0, return_counts=True)):
        key = tuple(int(v) for v in row)
        assert key in counts, f"drew an impossible subset {key}"
        counts[key] = int(c)
    n = draws.shape[0]
    obs = np.array([counts[k] for k in keys], dtype=np.float64)
    exp = np.array([expected[k] for k in keys]) * n
    sigma = np.sqrt(exp * (1 - exp / n))
    assert np.all(np.abs(obs - exp) <= 5 * sigma + 1e-9), (obs, exp)
    positive = exp > 0
    assert stats.chisquare(obs[positive], exp[positive]).pvalue > 1e-6


def test_sample_pair_frequencies_match_the_exact_distribution() -> None:
    n, tau, draws = 6, 0.7, 200_000
    lg = _logits(n, seed=1, masked=(3,)).float()
    pair = sample_pair(lg.expand(draws, n), tau, generator=torch.Generator().manual_seed(0))
    assert bool((pair.i < pair.j).all())
    _frequency_check(torch.stack([pair.i, pair.j], 1), _subset_probs(_probs(lg.double().numpy(), tau), 2))


def test_sample_topk_k3_frequencies_and_draw_order() -> None:
    n, tau, draws = 5, 1.3, 100_000
    lg = _logits(n, seed=4).float()
    gen = torch.Generator().manual_seed(1)
    idx = sample_topk(lg.expand(draws, n), 3, tau, generator=gen)
    _frequency_check(idx, _subset_probs(_probs(lg.double().numpy(), tau), 3))
    first = sample_topk(lg.expand(draws, n), 3, tau, generator=gen, sort=False)[:, 0]
    freq = torch.bincount(first, minlength=n).double() / draws
    p = torch.tensor(_probs(lg.double().numpy(), tau))
    assert bool(((freq - p).abs() <= 5 * torch.sqrt(p * (1 - p) / draws)).all())  # first draw ~ softmax(l/τ)


def test_masked_frames_are_never_drawn() -> None:
    lg = torch.tensor([[5.0, -INF, 5.0, -INF, -3.0]]).expand(50_000, 5)
    idx = sample_topk(lg, 2, 0.7, generator=torch.Generator().manual_seed(2))
    assert not bool(((idx == 1) | (idx == 3)).any())
    only = sample_pair(torch.tensor([[-INF, 0.0, -INF, 9.0]]).expand(1000, 4), 0.1)
    assert bool((only.i == 1).all()) and bool((only.j == 3).all())


def test_sampling_is_reproducible_with_a_generator() -> None:
    lg = torch.randn(64, 20)
    a = sample_pair(lg, 0.7, generator=torch.Generator().manual_seed(7))
    b = sample_pair(lg, 0.7, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a.i, b.i) and torch.equal(a.j, b.j)


# ----------------------------------------------------------------------------- index maps and tiling


def test_candidate_frame_maps_are_inverse_and_skip_the_target() -> None:
    T = 7
    for t in range(T):
        tt = torch.tensor(t)
        cand = torch.arange(T - 1)
        frames = candidate_to_frame(cand, tt)
        assert frames.tolist() == [f for f in range(T) if f != t]
        assert frame_to_candidate(frames, tt).tolist() == cand.tolist()
        assert int(frame_to_candidate(tt, tt)) == -1


def test_expand_candidate_logits_puts_slot_c_at_frame_c_or_c_plus_1() -> None:
    T = 6
    cand = torch.arange(10.0, 10.0 + (T - 1)).expand(T, T - 1)  # slot c holds 10 + c
    t = torch.arange(T)
    logits = expand_candidate_logits(cand, t)  # (T, T)
    for row in range(T):
        for f in range(T):
            if f == row:
                assert logits[row, f] == -INF
            else:
                assert float(logits[row, f]) == 10.0 + (f if f < row else f - 1)


def _tile(frames: torch.Tensor) -> torch.Tensor:
    """Reference tiling per the contract: frame n at grid row n//G, col n%G, empty cells zero."""
    B, T, _, c, _ = frames.shape
    G = math.ceil(math.sqrt(T))
    out = torch.zeros(B, 3, G * c, G * c)
    for n in range(T):
        r, col = divmod(n, G)
        out[:, :, r * c : (r + 1) * c, col * c : (col + 1) * c] = frames[:, n]
    return out


@pytest.mark.parametrize("T", [3, 4, 5, 20, 37])
def test_tiling_matches_the_contract_the_policy_relies_on(T: int) -> None:
    assert grid_side(T) == math.ceil(math.sqrt(T))
    frames = torch.rand(2, T, 3, 8, 8)
    torch.testing.assert_close(tile(frames, 8), _tile(frames), rtol=0, atol=0)
    torch.testing.assert_close(untile(_tile(frames), T, 8), frames, rtol=0, atol=0)


# ----------------------------------------------------------------------------- networks


def _cfg(kind: str = "paper") -> PolicyConfig:
    return PolicyConfig(kind=kind, cell=8, channels=4, hidden=16, embed=16, cell_features=2)  # type: ignore[arg-type]


def _obs(T: int, B: int = 3, cell: int = 8, seed: int = 0) -> tuple[PolicyObs, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    frames = torch.rand(B, T, 3, cell, cell, generator=g)
    t = torch.randint(0, T, (B,), generator=g)
    t[0] = 0
    t[-1] = T - 1
    return PolicyObs(_tile(frames), frames[torch.arange(B), t].clone(), t), frames


@pytest.mark.parametrize("kind", ["paper", "pointer"])
@pytest.mark.parametrize("T", [3, 20, 37])
def test_network_shapes_and_target_masking(kind: str, T: int) -> None:
    torch.manual_seed(0)
    actor, critic = build_actor(_cfg(kind), T), build_critic(_cfg(kind), T)
    assert isinstance(actor, PointerActor if kind == "pointer" else Actor)
    assert isinstance(critic, PointerCritic if kind == "pointer" else Critic)
    obs, _ = _obs(T)
    out = actor(obs)
    assert out.logits.shape == (3, T) and out.aux_value.shape == (3,)
    target = torch.zeros(3, T, dtype=torch.bool)
    target[torch.arange(3), obs.t] = True
    assert bool((out.logits[target] == -INF).all()) and bool(torch.isfinite(out.logits[~target]).all())
    assert critic(obs).shape == (3,)
    actor_params = {id(p) for p in actor.parameters()}
    assert not actor_params & {id(p) for p in critic.parameters()}  # PPG: separate networks


@pytest.mark.parametrize("kind", ["paper", "pointer"])
def test_networks_take_an_obs_or_three_tensors(kind: str) -> None:
    torch.manual_seed(0)
    actor, critic = build_actor(_cfg(kind), 9), build_critic(_cfg(kind), 9)
    obs, _ = _obs(9)
    torch.testing.assert_close(actor(obs).logits, actor(obs.video, obs.target, obs.t).logits)
    torch.testing.assert_close(critic(obs), critic(*obs))


def test_paper_actor_maps_its_t_minus_1_outputs_to_frames() -> None:
    T = 5
    actor = Actor(_cfg(), T)
    with torch.no_grad():
        actor.policy_head.weight.zero_()
        actor.policy_head.bias.copy_(torch.arange(T - 1, dtype=torch.float32))  # slot c -> logit c
    obs, _ = _obs(T, B=T)
    obs = obs._replace(t=torch.arange(T))
    logits = actor(obs).logits
    frames = torch.arange(T).expand(T, T)
    slot = frame_to_candidate(frames, obs.t[:, None]).float()
    torch.testing.assert_close(logits, slot.masked_fill(slot < 0, -INF))


@pytest.mark.parametrize("kind", ["paper", "pointer"])
def test_gradients_reach_every_parameter(kind: str) -> None:
    torch.manual_seed(0)
    T = 6
    actor, critic = build_actor(_cfg(kind), T), build_critic(_cfg(kind), T)
    obs, _ = _obs(T, B=4)
    out = actor(obs)
    bias = out.pair_bias
    assert (bias is not None) == (kind == "pointer")
    pair = sample_topk(out.logits, 2, 0.7, bias=bias)
    loss = (
        -pair_log_prob(out.logits, pair[:, 0], pair[:, 1], 0.7, bias=bias).mean()
        - 0.01 * pair_entropy(out.logits, 0.7, bias).mean()
    )
    loss = loss + out.aux_value.square().mean() + critic(obs).square().mean()
    loss.backward()
    for name, p in [*actor.named_parameters(), *critic.named_parameters()]:
        if name == "score.4.bias":  # one offset added to every logit: softmax ignores it (gradient 0)
            continue
        assert p.grad is not None, name
        assert bool(torch.isfinite(p.grad).all()), name
        assert float(p.grad.abs().sum()) > 0, name


def test_observation_shape_errors() -> None:
    actor = Actor(_cfg(), 20)
    obs, _ = _obs(20)
    with pytest.raises(ValueError, match="tiles"):
        actor(obs._replace(video=obs.video[..., :-1]))
    with pytest.raises(ValueError, match="tiled video"):
        PointerActor(_cfg("pointer"), 20)(obs._replace(video=obs.video[..., :-1]))
    with pytest.raises(TypeError, match="three tensors"):
        actor(obs.video, obs.target)
    with pytest.raises(ValueError, match=r"\[0, 20\)"):
        actor(obs._replace(t=torch.tensor([0, 1, 20])))
    with pytest.raises(ValueError, match="kind=pointer"):
        actor(obs, num_frames=21)


def test_pointer_serves_any_length_with_the_same_weights() -> None:
    torch.manual_seed(0)
    actor, critic = PointerActor(_cfg("pointer"), 20), PointerCritic(_cfg("pointer"), 20)
    n_params = sum(p.numel() for p in actor.parameters())
    for T in (20, 500):
        obs, frames = _obs(T, B=2, seed=T)
        out = actor(obs, num_frames=T)
        assert out.logits.shape == (2, T)
        assert int(torch.isinf(out.logits).sum()) == 2
        assert critic(obs, num_frames=T).shape == (2,)
        # forward(obs) is the same computation as embed_frames + logits
        emb = actor.embed_frames(frames)
        torch.testing.assert_close(actor.logits(emb, obs.target, obs.t, frames), out.logits)
        pair = sample_pair(out.logits, 0.7)
        assert bool((pair.i != obs.t).all()) and bool((pair.j != obs.t).all())
    assert sum(p.numel() for p in actor.parameters()) == n_params


def test_pointer_update_frame_equals_recomputing_every_embedding() -> None:
    torch.manual_seed(0)
    actor = PointerActor(_cfg("pointer"), 12)
    _, frames = _obs(12, B=3)
    emb = actor.embed_frames(frames)
    changed = frames.clone()
    changed[:, 5] = torch.rand(3, 3, 8, 8)
    torch.testing.assert_close(actor.update_frame(emb, changed, 5), actor.embed_frames(changed))
    per_row = torch.tensor([0, 7, 11])
    changed = frames.clone()
    changed[torch.arange(3), per_row] = 1.0 - changed[torch.arange(3), per_row]
    updated = actor.update_frame(emb, changed, per_row)
    torch.testing.assert_close(updated, actor.embed_frames(changed))
    assert not torch.equal(updated, emb)  # the input embeddings are not modified in place
    torch.testing.assert_close(emb, actor.embed_frames(frames))


# ----------------------------------------------------------------------------- pair bias (pointer, pairwise)


def _biased_pair_probs(logits: np.ndarray, bias: np.ndarray, tau: float) -> dict[tuple[int, ...], float]:
    """Brute force: P({a, b}) = p(a) p(b | a) + p(b) p(a | b), p(b | a) ∝ exp((l_b + g_ab)/τ) over b ≠ a."""
    p1 = _probs(logits, tau)
    n = len(logits)
    out: dict[tuple[int, ...], float] = {}
    for a in range(n):
        for b in range(n):
            if a == b or p1[a] == 0:
                continue
            w = np.array([np.exp((logits[c] + bias[a, c]) / tau) if c != a else 0.0 for c in range(n)])
            key = (min(a, b), max(a, b))
            out[key] = out.get(key, 0.0) + p1[a] * w[b] / w.sum()
    return out


def _bias(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    b = torch.randn(n, n, generator=g, dtype=torch.float64)
    return (b + b.T)[None]


def test_zero_pair_bias_is_exactly_plackett_luce() -> None:
    lg = _logits(7, seed=3, masked=(2,))[None]
    lp0, _, _ = pair_log_prob_table(lg, 0.7)
    lp1, _, _ = pair_log_prob_table(lg, 0.7, torch.zeros(1, 7, 7, dtype=lg.dtype))
    torch.testing.assert_close(lp1, lp0, rtol=0, atol=1e-12)


def test_biased_pair_distribution_matches_enumeration_and_sampling() -> None:
    n, tau = 6, 0.7
    lg, bias = _logits(n, seed=5, masked=(4,))[None], _bias(n, seed=6)
    ref = _biased_pair_probs(lg[0].numpy(), bias[0].numpy(), tau)
    lp, ia, ib = pair_log_prob_table(lg, tau, bias)
    for m in range(len(ia)):
        want = ref.get((int(ia[m]), int(ib[m])), 0.0)
        assert math.isclose(float(lp[0, m].exp()), want, abs_tol=1e-12)
    assert math.isclose(float(lp.exp().sum()), 1.0, abs_tol=1e-12)
    every = pair_log_prob(lg.expand(len(ia), n), ia, ib, tau, bias=bias.expand(len(ia), n, n))
    torch.testing.assert_close(every, lp[0], rtol=0, atol=1e-12)  # the O(N) path equals the table
    a, b = torch.tensor([5, 0]), torch.tensor([1, 3])  # (5, 1) in either order
    got = pair_log_prob(lg.expand(2, n), a, b, tau, bias=bias.expand(2, n, n)).exp()
    torch.testing.assert_close(got, torch.tensor([ref[(1, 5)], ref[(0, 3)]], dtype=got.dtype))
    assert pair_log_prob(lg, torch.tensor([4]), torch.tensor([0]), tau, bias=bias).item() == -INF  # masked
    ent = -sum(p * math.log(p) for p in ref.values() if p > 0)
    assert math.isclose(float(pair_entropy(lg, tau, bias)), ent, rel_tol=1e-10)
    draws = 200_000
    idx = sample_topk(
        lg.float().expand(draws, n),
        2,
        tau,
        generator=torch.Generator().manual_seed(0),
        bias=bias.float().expand(draws, n, n),
    )
    _frequency_check(idx, ref)
    assert tuple(greedy_pair(lg, bias, tau)[0].tolist()) == max(ref, key=lambda k: ref[k])
    with pytest.raises(ValueError, match="geometric"):
        pair_log_prob(lg, a[:1], b[:1], tau, mode="geometric", bias=bias)


def test_biased_pair_log_probs_have_finite_gradients_with_masked_frames() -> None:
    lg = _logits(6, seed=7, masked=(0, 3))[None].requires_grad_(True)
    bias = _bias(6, seed=8).requires_grad_(True)
    (pair_log_prob_table(lg, 0.7, bias)[0].exp().sum() + pair_entropy(lg, 0.7, bias).sum()).backward()
    assert lg.grad is not None and bias.grad is not None
    assert bool(torch.isfinite(lg.grad).all()) and bool(torch.isfinite(bias.grad).all())


def test_match_and_pair_cues_by_hand() -> None:
    """Cells 2x2; target holes at the two left pixels; frame 0 shows the top-left, frame 1 the bottom-left."""
    target = torch.full((1, 3, 2, 2), 0.5)
    target[..., :, 0] = 0  # holes (blanked) in the left column
    frames = torch.full((1, 3, 3, 2, 2), 0.5)
    frames[0, 0, :, 1, 0] = 0  # frame 0 hides bottom-left
    frames[0, 1, :, 0, 0] = 0  # frame 1 hides top-left
    frames[0, 2, :, :, 0] = 0  # frame 2 hides both
    frames[0, 2, :, 0, 1] = 0.7  # and differs by 0.2 at the top-right
    cues = match_cues(frames, target)[0]  # (3, 3): coverage, log(1e-4 + mse), visible fraction
    torch.testing.assert_close(cues[:, 0], torch.tensor([0.5, 0.5, 0.0]))
    torch.testing.assert_close(cues[:, 1].exp() - 1e-4, torch.tensor([0.0, 0.0, 0.02]), atol=1e-7, rtol=1e-5)
    torch.testing.assert_close(cues[:, 2], torch.tensor([0.75, 0.75, 0.5]))
    pc = pair_cues(frames, target)[0]  # (3, 3, 2): union coverage, gain over the better frame
    assert float(pc[0, 1, 0]) == 1.0 and float(pc[0, 1, 1]) == 0.5  # complementary: all holes, +0.5
    assert float(pc[0, 2, 0]) == 0.5 and float(pc[0, 2, 1]) == 0.0
    torch.testing.assert_close(pc[..., 0], pc[..., 0].T)


def test_pointer_without_embeddings_scores_from_cues_and_trains() -> None:
    """policy.embed = 0: no frame CNN; the scorer sees positions and cues, any T, gradients everywhere."""
    torch.manual_seed(0)
    cfg = PolicyConfig(kind="pointer", cell=8, channels=4, hidden=16, embed=0)
    actor, critic = build_actor(cfg, 20), build_critic(cfg, 20)
    assert not any("encoder" in n for n, _ in actor.named_parameters())
    for T in (6, 40):
        _, frames = _obs(T, B=3, seed=T, cell=8)
        g = torch.Generator().manual_seed(T)
        for b in range(3):  # blank a random rectangle (a hole) in every frame
            for i in range(T):
                y, x = torch.randint(0, 5, (2,), generator=g).tolist()
                frames[b, i, :, y : y + 4, x : x + 3] = 0
        t = torch.tensor([0, T // 2, T - 1])
        obs = PolicyObs(_tile(frames), frames[torch.arange(3), t].clone(), t)
        out = actor(obs, num_frames=T)
        assert out.logits.shape == (3, T) and out.pair_bias is not None and out.pair_bias.shape == (3, T, T)
        pair = sample_topk(out.logits, 2, 0.7, bias=out.pair_bias)
        loss = -pair_log_prob(out.logits, pair[:, 0], pair[:, 1], 0.7, bias=out.pair_bias).mean()
        loss = loss + out.aux_value.square().mean() + critic(obs, num_frames=T).square().mean()
        actor.zero_grad()
        critic.zero_grad()
        loss.backward()
        for name, p in [*actor.named_parameters(), *critic.named_parameters()]:
            if name != "score.4.bias":
                assert p.grad is not None and float(p.grad.abs().sum()) > 0, name

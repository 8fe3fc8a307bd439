"""Stage 2 (imitation): the pair targets and both losses against hand calculations, the held-out
statistics, and the real stages on a tiny config (pretrain-local -> imitate -> train-policy)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch

from rovr.checkpoint import load_checkpoint
from rovr.data.encoding import tile
from rovr.models.policy import PolicyConfig, build_actor
from rovr.pipeline import run_stage
from rovr.train import imitation
from rovr.train.common import prepare_run, read_metric_log
from rovr.train.imitation import (
    StateSet,
    all_pairs,
    bce_loss,
    best_pair_targets,
    greedy_stats,
    listwise_ce,
    listwise_loss,
    pair_log_probs,
    random_valid_rate,
    train_imitation,
)

INF = math.inf


def coverage_t0(c12: float, c13: float, c23: float) -> torch.Tensor:
    """(1, 4, 4) coverage of target t = 0; pairs with t are 0, as the oracle leaves them."""
    cov = torch.zeros(1, 4, 4)
    for (i, j), c in (((1, 2), c12), ((1, 3), c13), ((2, 3), c23)):
        cov[0, i, j] = cov[0, j, i] = c
    return cov


T0 = torch.tensor([0])


def test_all_pairs_order() -> None:
    a, b = all_pairs(4)
    assert list(zip(a.tolist(), b.tolist())) == [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]


def test_best_pair_targets_by_hand() -> None:
    q = best_pair_targets(coverage_t0(1.0, 0.5, 1.0), T0)  # two valid pairs
    assert q.tolist() == [[0.0, 0.0, 0.0, 0.5, 0.0, 0.5]]
    q = best_pair_targets(coverage_t0(0.7, 0.9, 0.9), T0)  # none valid: the max-coverage pairs
    assert q.tolist() == [[0.0, 0.0, 0.0, 0.0, 0.5, 0.5]]
    q = best_pair_targets(coverage_t0(0.0, 0.0, 0.0), T0)  # nothing helps: never a pair containing t
    assert q[0, :3].tolist() == [0.0, 0.0, 0.0] and q[0, 3:].tolist() == pytest.approx([1 / 3] * 3)


def test_pair_log_probs_are_a_distribution() -> None:
    logits = torch.tensor([[-INF, 0.3, -1.2, 2.0, 0.0]])
    p = pair_log_probs(logits, 0.7).exp()
    assert p.sum().item() == pytest.approx(1.0)
    assert p[0, :4].tolist() == [0.0] * 4  # the pairs containing the target (frame 0)


def test_listwise_loss_by_hand() -> None:
    # τ = 1, p = softmax = [0, 1/2, 1/4, 1/4]: P{1,2} = P{1,3} = 1/8·(2 + 4/3) = 5/12, P{2,3} = 1/16·8/3 = 1/6
    logits = torch.tensor([[-INF, math.log(2.0), 0.0, 0.0]])
    loss = listwise_loss(logits, coverage_t0(1.0, 0.5, 1.0), T0, tau=1.0)
    assert loss.item() == pytest.approx(-0.5 * (math.log(5 / 12) + math.log(1 / 6)), rel=1e-6)
    uniform = torch.tensor([[-INF, 0.0, 0.0, 0.0]])  # every pair 1/3, whatever q is
    assert listwise_loss(uniform, coverage_t0(0.2, 1.0, 0.1), T0, tau=0.7).item() == pytest.approx(
        math.log(3)
    )
    logits.requires_grad_(True)
    listwise_loss(logits, coverage_t0(0.0, 0.0, 0.0), T0, tau=1.0).backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()


def test_bce_loss_by_hand() -> None:
    """Eq. 2: the valid pair {1, 2} gets y = 1, an invalid one ({1, 3} or {2, 3}: same logits) y = 0."""
    logits = torch.tensor([[-INF, 0.0, 0.0, 1.0]])
    cov = coverage_t0(1.0, 0.5, 0.2)
    cov[0, 0, 1:] = 1.0  # pairs containing t must be ignored even when labelled valid
    gen = torch.Generator().manual_seed(0)
    positive = math.log(2.0)  # −log σ(0), for both frames
    negative = (math.log(2.0) + math.log(1 + math.e)) / 2  # −log(1 − σ(0)), −log(1 − σ(1))
    assert bce_loss(logits, cov, T0, gen).item() == pytest.approx((positive + negative) / 2, rel=1e-6)
    # no valid pair for this state: only the negative term
    only_neg = bce_loss(logits, coverage_t0(0.5, 0.5, 0.5), T0, gen).item()
    assert only_neg in (pytest.approx(math.log(2.0)), pytest.approx(negative))


def test_greedy_stats_and_random_rate_by_hand() -> None:
    cfg = PolicyConfig(cell=8, channels=4, hidden=8)
    actor = build_actor(cfg, 4)
    with torch.no_grad():
        actor.policy_head.weight.zero_()  # type: ignore[operator]
        actor.policy_head.bias.copy_(torch.tensor([0.0, 5.0, 4.0]))  # type: ignore[operator]
    # t = 0 for both states: candidate slots 0, 1, 2 are frames 1, 2, 3 -> greedy pair {2, 3}
    cov = torch.cat([coverage_t0(1.0, 0.5, 1.0), coverage_t0(1.0, 0.5, 0.25)])
    states = StateSet(
        video=torch.zeros(2, 3, 16, 16, dtype=torch.uint8),
        target=torch.zeros(2, 3, 8, 8, dtype=torch.uint8),
        t=torch.tensor([0, 0]),
        coverage=cov,
    )
    stats = greedy_stats(actor, states, torch.device("cpu"))
    assert stats == {"valid_rate": 0.5, "coverage": pytest.approx(0.625)}
    assert random_valid_rate(states) == pytest.approx((2 / 3 + 1 / 3) / 2)


# ----------------------------------------------------------------------------- the real stages, tiny


def test_stages_on_a_tiny_config(tmp_path: Path) -> None:
    from test_ppg import tiny_config

    cfg = tiny_config("ppg.iterations=1", "ppg.n_pi=1")
    run = prepare_run(cfg, tmp_path / "run")
    assert run_stage(cfg, run, "pretrain-local", progress=False) == run.local
    path = run_stage(cfg, run, "imitate", progress=False)
    assert path == run.policy("imitation") and path.is_file()
    _, meta = load_checkpoint(path)
    assert meta["stage"] == "imitation" and meta["heldout_split"] == "val"
    assert set(meta["heldout"]) == {"imitation", "random", "sequential", "oracle_copy"}
    for row in meta["heldout"].values():
        assert 0.0 <= row["valid_rate"] <= 1.0 and 0.0 <= row["coverage"] <= 1.0
        assert row["hole_mse"] > 0.0 and row["perceptual_loss"] > 0.0
    logged = set().union(*[r for r in read_metric_log(run.logs) if r["stage"] == "imitation"])
    assert {"imitation/loss", "val/valid_rate", "val/expert_match", "heldout/imitation_hole_mse"} <= logged
    assert run_stage(cfg, run, "train-policy", progress=False) == run.policy("rovr_flow_warm")

    bce = tiny_config("imitation.loss=bce", "imitation.steps=3")
    assert run_stage(bce, run, "imitate", progress=False).is_file()


def test_interrupted_imitation_resumes_exactly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C mid-step, a crash after a periodic checkpoint, and Ctrl-C during the held-out evaluation:
    each rerun ends with the weights of the uninterrupted run, and the metric log holds each step once."""
    from test_ppg import make_run, tiny_config

    cfg = tiny_config("imitation.steps=6", "imitation.checkpoint_every=2")
    straight = make_run(tmp_path / "straight", cfg, imitation=False)
    want = load_checkpoint(train_imitation(cfg, straight, progress=False))[0]
    rows = read_metric_log(straight.logs)

    def fail_at(call: int, error: BaseException) -> None:
        calls = iter(range(1, 100))

        def loss(*args: Any) -> torch.Tensor:
            if next(calls) == call:
                raise error
            return listwise_ce(*args)

        monkeypatch.setattr(imitation, "listwise_ce", loss)

    def heldout_interrupted(*args: Any) -> None:
        raise KeyboardInterrupt

    for name, fail, saved_at in (
        ("ctrl-c", lambda: fail_at(4, KeyboardInterrupt()), 3),  # during step 4: 3 steps done
        ("crash", lambda: fail_at(6, MemoryError("killed")), 4),  # nothing saved: the step-4 checkpoint
        ("heldout", lambda: monkeypatch.setattr(imitation, "heldout_eval", heldout_interrupted), 6),
    ):
        run = make_run(tmp_path / name, cfg, imitation=False)
        with monkeypatch.context() as m:
            m.setattr(imitation, "listwise_ce", imitation.listwise_ce)
            m.setattr(imitation, "heldout_eval", imitation.heldout_eval)
            fail()
            with pytest.raises((KeyboardInterrupt, MemoryError)):
                train_imitation(cfg, run, progress=False)
        assert load_checkpoint(run.resume("imitation"))[1]["step"] == saved_at, name
        assert not run.policy("imitation").exists()
        got = load_checkpoint(train_imitation(cfg, run, progress=False))[0]
        assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want), name
        assert not run.resume("imitation").exists()
        strip = [
            {k: v for k, v in r.items() if k != "time" and "per_s" not in k}
            for r in read_metric_log(run.logs)
        ]
        assert [(r["step"], sorted(r)) for r in strip] == [
            (r["step"], sorted(k for k in r if k != "time")) for r in rows
        ], name


def bright_pair_states(n: int, seed: int) -> StateSet:
    """States whose only valid pair is the two frames drawn bright in the tiles (a rule a CNN can read)."""
    g = torch.Generator().manual_seed(seed)
    frames, cell = 5, 8
    video = torch.rand(n, frames, 3, cell, cell, generator=g) * 0.5
    t = torch.randint(frames, (n,), generator=g)
    cov = torch.full((n, frames, frames), 0.5)
    for k in range(n):
        i, j = sorted(torch.randperm(frames - 1, generator=g)[:2].tolist())
        i, j = i + (i >= t[k]), j + (j >= t[k])  # two frames other than t
        video[k, [i, j]] = 1.0
        cov[k, i, j] = cov[k, j, i] = 1.0
        cov[k, t[k], :] = cov[k, :, t[k]] = 0.0
    return StateSet(
        video=(tile(video, cell) * 255).round().to(torch.uint8),
        target=(video[torch.arange(n), t] * 255).round().to(torch.uint8),
        t=t,
        coverage=cov,
    )


@pytest.mark.parametrize("loss", ["listwise", "bce"])
def test_losses_teach_a_readable_rule_that_generalises(loss: str) -> None:
    """Either loss, through the real actor, learns to pick the valid pair of states it never saw."""
    train, test = bright_pair_states(256, seed=0), bright_pair_states(128, seed=1)
    torch.manual_seed(0)
    actor = build_actor(PolicyConfig(cell=8, channels=8, hidden=32), 5)
    opt = torch.optim.Adam(actor.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    cpu = torch.device("cpu")
    assert greedy_stats(actor, test, cpu)["valid_rate"] < 0.5
    for _ in range(400):
        idx = torch.randint(len(train), (32,), generator=gen)
        logits = actor(*train.inputs(idx, cpu)).logits
        if loss == "listwise":
            value = listwise_loss(logits, train.coverage[idx], train.t[idx], 0.7)
        else:
            value = bce_loss(logits, train.coverage[idx], train.t[idx], gen)
        opt.zero_grad()
        value.backward()
        opt.step()
    assert random_valid_rate(test) == pytest.approx(1 / 6)
    assert greedy_stats(actor, test, cpu)["valid_rate"] > 0.9


def test_distance_weighted_expert_prefers_near_frames() -> None:
    """coverage − α·(|i−t|+|j−t|)/T: with every pair fully covering, α > 0 picks the neighbours."""
    n, t = 5, 2
    cov = torch.ones(1, n, n)
    q0 = best_pair_targets(cov, torch.tensor([t]), 0.0)
    q1 = best_pair_targets(cov, torch.tensor([t]), 1.0)
    a, b = torch.triu_indices(n, n, offset=1)
    usable = (a != t) & (b != t)
    assert torch.allclose(q0[0][usable], torch.full((int(usable.sum()),), 1 / 6))  # all 6 pairs tie
    (best,) = torch.nonzero(q1[0]).flatten().tolist()
    assert (int(a[best]), int(b[best])) == (1, 3)
    # a pair that covers less loses to a far pair that covers all, unless it is much nearer
    cov2 = torch.ones(1, n, n)
    cov2[0, 1, 3] = cov2[0, 3, 1] = 0.5
    best2 = torch.nonzero(best_pair_targets(cov2, torch.tensor([t]), 1.0)[0]).flatten().tolist()
    assert {(int(a[i]), int(b[i])) for i in best2} == {(0, 1), (1, 4), (0, 3), (3, 4)}  # score 1 − 3/5

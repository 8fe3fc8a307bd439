"""The MDP as a Gymnasium environment (paper §5.1)."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from rovr.config import DataConfig, RunConfig
from rovr.env import (
    ENV_ID,
    VectorVideoReconstructionEnv,
    VideoReconstructionEnv,
    frame_sets,
    frames_to_action,
)
from rovr.errors import RovrError
from rovr.models.local import LocalNetConfig
from rovr.models.policy import PolicyConfig


def tiny_config(flow: bool = True) -> RunConfig:
    cfg = RunConfig(
        data=DataConfig(num_videos=3, frames=6, size=24, val_fraction=0.0, test_fraction=0.0),
        local=LocalNetConfig(base_channels=4, depth=1),
        policy=PolicyConfig(cell=8),
    )
    cfg.ppg.flow_reward = flow
    cfg.corruption.max_valid_pairs = 10
    return cfg


def test_check_env_passes_on_the_registered_env() -> None:
    env = gym.make(ENV_ID)
    check_env(env.unwrapped)
    env.close()


def test_action_space_is_every_pair_of_other_frames() -> None:
    env = VideoReconstructionEnv(tiny_config())
    env.reset(seed=0)
    assert env.action_space.n == math.comb(5, 2)
    for t in range(6):
        sets = frame_sets(6, t, 2)
        assert len(sets) == 10 and t not in sets and (sets[:, 0] < sets[:, 1]).all()
        for a, pair in enumerate(sets):
            assert frames_to_action(tuple(pair), 6, t) == a


def test_episode_runs_t_steps_and_rewards_match_the_losses() -> None:
    env = VideoReconstructionEnv(tiny_config())
    obs, _ = env.reset(seed=1)
    assert obs["video"].shape == (3, 24, 24) and obs["target"].shape == (3, 8, 8) and obs["t"] == 0
    total, steps, terminated = 0.0, 0, False
    while not terminated:
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        assert not truncated and t_of(info) == steps
        local = info["perceptual_loss_before"] - info["perceptual_loss"]
        if terminated:
            assert reward == pytest.approx(local + env.cfg.ppg.flow_weight * info["flow_recovery"], abs=1e-5)
        else:
            assert reward == pytest.approx(local, abs=1e-6)
        assert 0.0 <= info["coverage"] <= 1.0 and env.episodes is not None
        assert env.observation_space.contains(obs)
        total += reward
        steps += 1
    assert steps == 6
    with pytest.raises(RovrError, match="reset"):
        env.step(0)


def t_of(info: dict) -> int:  # type: ignore[type-arg]
    return int(info["t"])


def test_bad_actions_are_clear_errors() -> None:
    env = VideoReconstructionEnv(tiny_config(flow=False))
    env.reset(seed=0)
    for bad in (-1, 10, 2.5, "3"):
        with pytest.raises(RovrError, match="outside the action space"):
            env.step(bad)  # type: ignore[arg-type]
    with pytest.raises(RovrError, match="cannot condition on itself"):
        env.episodes.step(np.array([[0, 1]]))  # type: ignore[union-attr]
    with pytest.raises(RovrError, match="out of range"):
        env.episodes.step(np.array([[1, 9]]))  # type: ignore[union-attr]


def test_seeding_is_deterministic() -> None:
    a, b = VideoReconstructionEnv(tiny_config()), VideoReconstructionEnv(tiny_config())
    oa, _ = a.reset(seed=5)
    ob, _ = b.reset(seed=5)
    assert np.array_equal(oa["video"], ob["video"])


def test_vector_env_batches_episodes_and_autoresets() -> None:
    venv = VectorVideoReconstructionEnv(3, tiny_config(flow=False))
    obs, _ = venv.reset(seed=0)
    assert obs["video"].shape == (3, 3, 24, 24) and (obs["t"] == 0).all()
    for step in range(6):
        obs, reward, term, trunc, info = venv.step(venv.action_space.sample())
        assert reward.shape == (3,) and info["coverage"].shape == (3,)
        assert term.all() == (step == 5)
    obs, reward, term, _, _ = venv.step(venv.action_space.sample())  # next-step autoreset
    assert (reward == 0).all() and not term.any() and (obs["t"] == 0).all()


@pytest.mark.parametrize("condition_on", ["current", "observed"])
def test_what_gamma_and_the_policy_see_of_a_repaired_frame(condition_on: str) -> None:
    """``current`` (the paper's transition): a frame reconstructed at an earlier step is passed to Γ as
    its reconstruction with no hole, and the state shows it so; frames not yet reached keep their holes.
    ``observed``: always the observed pixels. Setting ``step_index`` back shows each step as played."""
    import torch

    from rovr.data.corruption import corrupt
    from rovr.data.encoding import tile
    from rovr.data.sources import SyntheticVideos
    from rovr.models.local import LocalNet
    from rovr.reconstruct import Episodes

    cfg = tiny_config()
    clip = corrupt(SyntheticVideos(1, frames=6, size=24).generate(0), cfg.corruption, seed=0)
    net = LocalNet(LocalNetConfig(base_channels=4, depth=1), 2)
    ep = Episodes([clip], net, None, k=2, cell=8, condition_on=condition_on)  # type: ignore[arg-type]
    ep.step(torch.tensor([[1, 2]]))  # t = 0
    ep.step(torch.tensor([[0, 3]]))  # t = 1
    rows = torch.zeros(1, dtype=torch.long)
    frames, holes = ep.conditioning(torch.tensor([[0, 3]]), rows)
    assert bool(ep.masks[0, 0].any()) and bool(ep.masks[0, 3].any())
    if condition_on == "current":
        assert torch.equal(frames[0, 0], ep.video[0, 0]) and not bool(holes[0, 0].any())
        assert not torch.equal(ep.video[0, 0], ep.corrupted[0, 0])
    else:
        assert torch.equal(frames[0, 0], ep.corrupted[0, 0]) and torch.equal(
            holes[0, 0, 0] > 0, ep.masks[0, 0]
        )
    assert torch.equal(frames[0, 1], ep.corrupted[0, 3]) and torch.equal(holes[0, 1, 0] > 0, ep.masks[0, 3])
    shown = ep.video if condition_on == "current" else ep.corrupted
    assert torch.equal(ep.observation().video, tile(shown, 8))  # frames 0 and 1 repaired, the rest not
    ep.step_index = 1  # as at step t = 1: frame 1 not yet repaired, frame 0 is
    frames, holes = ep.conditioning(torch.tensor([[0, 1]]), rows)
    assert torch.equal(frames[0, 1], ep.corrupted[0, 1]) and torch.equal(holes[0, 1, 0] > 0, ep.masks[0, 1])
    assert bool(holes[0, 0].any()) == (condition_on == "observed")
    assert torch.equal(ep.hole[0, 0], torch.zeros_like(ep.masks[0, 0])) and torch.equal(
        ep.hole[0, 1], ep.masks[0, 1]
    )


def test_the_terminal_observation_shows_the_finished_video() -> None:
    """After the last step the state shows every frame repaired (and the last target as repaired)."""
    import torch

    from rovr.data.corruption import corrupt
    from rovr.data.encoding import tile
    from rovr.data.sources import SyntheticVideos
    from rovr.env import observe
    from rovr.models.local import LocalNet
    from rovr.reconstruct import Episodes

    cfg = tiny_config()
    clip = corrupt(SyntheticVideos(1, frames=6, size=24).generate(0), cfg.corruption, seed=0)
    ep = Episodes([clip], LocalNet(LocalNetConfig(base_channels=4, depth=1), 2), None, k=2, cell=8)
    while not ep.done:
        ep.step(torch.tensor([[0, 1]]) if ep.t > 1 else torch.tensor([[2, 3]]))
    obs = observe(ep)
    finished = (tile(ep.video, 8).clamp(0, 1) * 255 + 0.5).to(torch.uint8).numpy()
    assert np.array_equal(obs["video"], finished) and obs["t"].tolist() == [5]

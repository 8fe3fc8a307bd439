"""The ROVR MDP (paper §5.1) as a Gymnasium environment, over any data source.

``gymnasium.make("rovr/VideoReconstruction-v0")`` builds it on the embedded default data with a
freshly initialised Γ (for API checks); pass ``local_checkpoint=`` (a ``local.safetensors`` from
``rovr pretrain-local``) to use a trained Γ. The environment wraps :class:`~rovr.reconstruct.Episodes`
with one episode; :class:`VectorVideoReconstructionEnv` batches B episodes through the same code.

* Observation: ``{"video": uint8 (3, G·c, G·c), "target": uint8 (3, c, c), "t": int}`` — the tiled
  low-res video and the low-res target, as :meth:`~rovr.reconstruct.Episodes.observation` gives them:
  the corrupted frames (``condition_on="observed"``), or with ``condition_on="current"`` (the
  default, the run config's) the paper's current video (reconstructed frames before t, corrupted
  ones after).
* Action: an index into the ``C(T−1, k)`` sets of frames other than the target (lexicographic order
  over the other frames; :meth:`VideoReconstructionEnv.action_to_frames` maps it). Every element of
  the action space is a valid action.
* Reward: ``L_P(x̄_t, x_t) − L_P(x̂_t, x_t)`` each step, plus ``w · O`` (Eq. 3) at the end if
  ``flow_weight > 0``. γ = 1; episodes last exactly T steps (terminated at the end).
"""

from __future__ import annotations

import itertools
import math
from functools import lru_cache
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces

from rovr.config import RunConfig
from rovr.data.clips import ClipSet
from rovr.data.corruption import Corrupted, corrupt
from rovr.data.encoding import grid_side
from rovr.errors import RovrError
from rovr.reconstruct import Episodes, Observation, StepInfo

ENV_ID = "rovr/VideoReconstruction-v0"


@lru_cache(maxsize=64)
def frame_sets(num_frames: int, t: int, k: int) -> np.ndarray:
    """All k-sets of frames other than t, lexicographic. (C(T−1, k), k) int64."""
    others = [i for i in range(num_frames) if i != t]
    return np.array(list(itertools.combinations(others, k)), dtype=np.int64)


def frames_to_action(frames: tuple[int, ...] | list[int], num_frames: int, t: int) -> int:
    """Inverse of the action → frames map."""
    sets = frame_sets(num_frames, t, len(frames))
    hit = np.flatnonzero((sets == np.sort(np.asarray(frames))).all(axis=1))
    if len(hit) != 1:
        raise RovrError(
            f"frames {list(frames)} are not a valid conditioning set for target {t} of {num_frames}"
        )
    return int(hit[0])


def _uint8(x: torch.Tensor) -> np.ndarray:
    return (x.clamp(0, 1) * 255.0 + 0.5).to(torch.uint8).cpu().numpy()


def _build_models(cfg: RunConfig, local_checkpoint: str | None) -> tuple[Any, Any, Any]:
    from rovr.metrics.flow import build_flow
    from rovr.metrics.perceptual import build_perceptual
    from rovr.models.local import LocalNet
    from rovr.train.common import load_local

    device = torch.device(cfg.device)
    if local_checkpoint:
        from pathlib import Path

        net = load_local(Path(local_checkpoint), cfg, device)
    else:
        net = LocalNet(cfg.local, cfg.k).to(device).eval()
    perceptual = build_perceptual(cfg.metric, device)
    flow = build_flow(cfg.metric, device) if cfg.ppg.flow_reward else None
    return net, perceptual, flow


class VideoReconstructionEnv(gym.Env[dict[str, Any], int]):
    """One episode = one corrupted clip, reconstructed frame by frame (paper §5.1)."""

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(
        self,
        config: RunConfig | None = None,
        split: str = "train",
        local_checkpoint: str | None = None,
        clips: list[Corrupted] | None = None,
        models: tuple[Any, Any, Any] | None = None,
    ) -> None:
        self.cfg = config or RunConfig(data=_small_data())
        self.split = split
        self._clips = ClipSet(self.cfg.data, split) if clips is None else None
        self._fixed = clips
        self.net, self.perceptual, self.flow = models or _build_models(self.cfg, local_checkpoint)
        t_, k, c = self.cfg.data.frames, self.cfg.k, self.cfg.policy.cell
        side = grid_side(t_) * c
        self.observation_space = spaces.Dict(
            {
                "video": spaces.Box(0, 255, (3, side, side), np.uint8),
                "target": spaces.Box(0, 255, (3, c, c), np.uint8),
                "t": spaces.Discrete(t_),
            }
        )
        self.action_space = spaces.Discrete(math.comb(t_ - 1, k))  # type: ignore[assignment]
        self.episodes: Episodes | None = None

    def _draw_clip(self) -> Corrupted:
        if self._fixed is not None:
            return self._fixed[int(self.np_random.integers(len(self._fixed)))]
        assert self._clips is not None
        i = int(self.np_random.integers(len(self._clips)))
        return corrupt(self._clips[i].frames, self.cfg.corruption, seed=int(self.np_random.integers(2**31)))

    def _obs(self) -> dict[str, Any]:
        assert self.episodes is not None
        obs = observe(self.episodes)
        return {"video": obs["video"][0], "target": obs["target"][0], "t": int(obs["t"][0])}

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        super().reset(seed=seed)
        clip = self._draw_clip()
        self.episodes = Episodes.of_run(
            self.cfg,
            [clip],
            self.net,
            self.perceptual,
            flow=self.flow,
            flow_weight=self.cfg.ppg.flow_weight if self.flow is not None else 0.0,
            device=self.cfg.device,
        )
        return self._obs(), {}

    def action_to_frames(self, action: int) -> tuple[int, ...]:
        assert self.episodes is not None
        n = math.comb(self.cfg.data.frames - 1, self.cfg.k)
        if not isinstance(action, (int, np.integer)) or isinstance(action, bool) or not 0 <= int(action) < n:
            raise RovrError(f"action {action!r} is outside the action space 0..{n - 1}")
        return tuple(
            int(i) for i in frame_sets(self.cfg.data.frames, self.episodes.t, self.cfg.k)[int(action)]
        )

    def step(self, action: int) -> tuple[dict[str, Any], float, bool, bool, dict[str, Any]]:
        if self.episodes is None or self.episodes.done:
            raise RovrError("step() called before reset() or after the episode ended; call reset()")
        t = self.episodes.t
        frames = self.action_to_frames(action)
        info: StepInfo = self.episodes.step(torch.tensor([frames]))
        terminated = self.episodes.done
        extra = {
            "t": t,
            "frames": frames,
            "perceptual_loss": float(info.loss_after[0]),
            "perceptual_loss_before": float(info.loss_before[0]),
            "coverage": float(info.coverage[0]),
        }
        if info.flow_recovery is not None:
            extra["flow_recovery"] = float(info.flow_recovery[0])
        obs = self._obs()
        return obs, float(info.reward[0]), terminated, False, extra


def observe(e: Episodes) -> dict[str, np.ndarray]:
    """Batched uint8 observation of ``e``; after the last step it shows the finished video and last target."""
    o: Observation = e.observation(e.order[-1] if e.done else None)
    return {"video": _uint8(o.video), "target": _uint8(o.target), "t": o.t.cpu().numpy()}


def _small_data() -> Any:
    from rovr.config import DataConfig

    return DataConfig(num_videos=4, size=32, frames=8, val_fraction=0.0, test_fraction=0.0)


def register() -> None:
    """Register ``rovr/VideoReconstruction-v0`` with Gymnasium (idempotent)."""
    if ENV_ID not in gym.registry:
        gym.register(id=ENV_ID, entry_point="rovr.env:VideoReconstructionEnv", disable_env_checker=False)


register()


class VectorVideoReconstructionEnv(gym.vector.VectorEnv):
    """B episodes batched through one :class:`Episodes` (one Γ call per step for all of them).

    All episodes last T steps, so they end together; the ``step`` after the end starts B new
    episodes (Gymnasium's next-step autoreset: that step's rewards are 0 and its actions ignored).
    """

    metadata: dict[str, Any] = {"autoreset_mode": gym.vector.AutoresetMode.NEXT_STEP}

    def __init__(
        self,
        num_envs: int,
        config: RunConfig | None = None,
        split: str = "train",
        local_checkpoint: str | None = None,
    ) -> None:
        self.single = VideoReconstructionEnv(config, split, local_checkpoint)
        self.num_envs = num_envs
        self.single_observation_space = self.single.observation_space
        self.single_action_space = self.single.action_space
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, num_envs)
        self.action_space = gym.vector.utils.batch_space(self.single_action_space, num_envs)
        self.episodes: Episodes | None = None

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        s = self.single
        if seed is not None:
            s.reset(seed=seed)  # seeds the generator that draws clips and masks
        clips = [s._draw_clip() for _ in range(self.num_envs)]
        self.episodes = Episodes.of_run(
            s.cfg, clips, s.net, s.perceptual, flow=s.flow,
            flow_weight=s.cfg.ppg.flow_weight if s.flow is not None else 0.0, device=s.cfg.device,
        )  # fmt: skip
        return observe(self.episodes), {}

    def step(self, actions: Any) -> tuple[dict[str, Any], np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        n = self.num_envs
        if self.episodes is None or self.episodes.done:
            obs, extra = self.reset()
            return obs, np.zeros(n), np.zeros(n, dtype=bool), np.zeros(n, dtype=bool), extra
        e = self.episodes
        self.single.episodes = e  # action_to_frames reads the current target from it
        frames = np.stack([self.single.action_to_frames(int(a)) for a in np.asarray(actions).reshape(n)])
        step: StepInfo = e.step(torch.from_numpy(frames))
        extra = {"perceptual_loss": step.loss_after.cpu().numpy(), "coverage": step.coverage.cpu().numpy()}
        if step.flow_recovery is not None:
            extra["flow_recovery"] = step.flow_recovery.cpu().numpy()
        terminated = np.full(n, e.done)
        return observe(e), step.reward.cpu().numpy(), terminated, np.zeros(n, dtype=bool), extra

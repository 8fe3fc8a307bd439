"""The reconstruction loop (paper §5.1) — written once, used by the env, training, evaluation and CLI.

:class:`Episodes` holds a batch of B episodes of the MDP: the state (current video, target index),
the transition (Γ rebuilds the target from the chosen frames; the video then holds x̂_t) and the
rewards (local perceptual improvement each step, paper §6.3; flow recovery at the end, Eq. 3).
:func:`reconstruct` runs any :class:`~rovr.conditioning.Chooser` through it.

What Γ sees of a conditioning frame — and so what the policy observes of it — is set by ``condition_on``
(the config's top-level ``condition_on``):

* ``"current"`` (default): the frame as it stands in the current video; frames already reconstructed
  are passed with no holes, so later targets build on earlier reconstructions (the paper's
  transition and state, §5.1: "the entire video at the current timestep").
* ``"observed"``: its observed pixels only (holes blanked and flagged), whether or not it was
  already reconstructed — errors never compound, and the oracle's coverage is exactly what Γ can
  use (what every run recorded before this setting existed was trained with).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch

from rovr.data.corruption import Corrupted
from rovr.data.encoding import downsample, tile
from rovr.errors import RovrError

if TYPE_CHECKING:
    from rovr.conditioning import Chooser
    from rovr.config import RunConfig
    from rovr.metrics.flow import FlowBackend
    from rovr.metrics.perceptual import PerceptualMetric
    from rovr.models.local import LocalNet


def to_tensor(frames: np.ndarray) -> torch.Tensor:
    """uint8 (..., H, W, 3) -> float32 (..., 3, H, W) in [0, 1]."""
    return torch.from_numpy(np.array(frames, copy=True)).movedim(-1, -3).float().div_(255.0)


def to_uint8(frames: torch.Tensor) -> np.ndarray:
    """float (..., 3, H, W) in [0, 1] -> uint8 (..., H, W, 3)."""
    return (frames.detach().clamp(0, 1).movedim(-3, -1) * 255.0 + 0.5).to(torch.uint8).cpu().numpy()


@dataclass
class Observation:
    """The state s_t given to π (§5.1.1): tiled video (B, 3, G·c, G·c), target (B, 3, c, c), t (B,)."""

    video: torch.Tensor
    target: torch.Tensor
    t: torch.Tensor


@dataclass
class StepInfo:
    """One transition of B episodes; every field is (B,)."""

    reward: torch.Tensor  # L_P(x̄_t, x_t) − L_P(x̂_t, x_t)  (+ w·O on the last step)
    loss_before: torch.Tensor  # L_P(x̄_t, x_t)
    loss_after: torch.Tensor  # L_P(x̂_t, x_t)
    coverage: torch.Tensor  # oracle coverage of the chosen frames
    flow_recovery: torch.Tensor | None = None  # O (Eq. 3), on the last step only
    pairs: torch.Tensor | None = None  # (B, k) the frames taken, as checked (long, each row ascending)


class Episodes:
    """A batch of B episodes of the ROVR MDP over corrupted clips (paper §5.1).

    ``original``, ``corrupted``: float (B, T, 3, H, W); ``masks``: bool (B, T, H, W).
    Targets are visited in ``order`` (default 0..T−1, as in the paper). With ``perceptual=None``
    (no ground truth, e.g. repairing a user's video) the transition runs and the scores are NaN.
    """

    def __init__(
        self,
        clips: Sequence[Corrupted],
        net: LocalNet,
        perceptual: PerceptualMetric | None,
        *,
        k: int = 2,
        cell: int = 32,
        flow: FlowBackend | None = None,
        flow_weight: float = 0.0,
        condition_on: Literal["current", "observed"] = "current",
        device: torch.device | str = "cpu",
    ) -> None:
        if not clips:
            raise ValueError("Episodes needs at least one clip")
        shapes = {c.frames.shape for c in clips}
        if len(shapes) != 1:
            raise RovrError(f"clips of one batch must share a shape, got {sorted(shapes)}")
        self.clips = list(clips)
        self.device = torch.device(device)
        self.net, self.perceptual, self.flow = net, perceptual, flow
        self.k, self.cell, self.flow_weight, self.condition_on = k, cell, flow_weight, condition_on
        self.num_frames = clips[0].frames.shape[0]
        if self.num_frames < k + 1:
            raise RovrError(f"a clip of {self.num_frames} frames cannot condition on k={k} other frames")
        self.original = to_tensor(np.stack([c.original for c in clips])).to(self.device)  # (B, T, 3, H, W)
        self.corrupted = to_tensor(np.stack([c.frames for c in clips])).to(self.device)
        self.masks = torch.from_numpy(np.stack([c.masks for c in clips])).to(self.device)  # (B, T, H, W)
        self.coverage = torch.from_numpy(np.stack([c.oracle.coverage for c in clips])).float()  # (B, T, T, T)
        self.order = list(range(self.num_frames))
        self._flow_orig: torch.Tensor | None = None
        self._flow_bar: torch.Tensor | None = None
        self._loss_before: dict[int, torch.Tensor] = {}  # target -> L_P(x̄_t, x_t), fixed per clip
        self.reset()

    @classmethod
    def of_run(
        cls,
        cfg: RunConfig,
        clips: Sequence[Corrupted],
        net: LocalNet,
        perceptual: PerceptualMetric | None,
        *,
        flow: FlowBackend | None = None,
        flow_weight: float = 0.0,
        device: torch.device | str = "cpu",
    ) -> Episodes:
        """Episodes of run config ``cfg``'s MDP: its k, the policy's cell and ``condition_on``."""
        return cls(
            clips,
            net,
            perceptual,
            k=cfg.k,
            cell=cfg.policy.cell,
            flow=flow,
            flow_weight=flow_weight,
            condition_on=cfg.condition_on,
            device=device,
        )

    @property
    def batch_size(self) -> int:
        return len(self.clips)

    def reset(self) -> None:
        """Start over: the current video is the corrupted one; nothing is reconstructed yet."""
        self.video = self.corrupted.clone()  # (B, T, 3, H, W)
        self.step_index = 0
        self._tried: dict[int, torch.Tensor] = {}  # target -> (B, M, 3, H, W) frames of try_pairs
        self._flow_hat: tuple[int, torch.Tensor] | None = None  # (step_index, F(X̂)) of flow_recovery

    @property
    def done(self) -> bool:
        return self.step_index >= self.num_frames

    @property
    def t(self) -> int:
        """Index of the current target frame."""
        return self.order[self.step_index]

    def observation(self, target: int | None = None) -> Observation:
        """s_t: tiled low-res video and low-res target (§5.1.1, Fig. 2), each frame as Γ will use it.

        With ``condition_on="current"`` (default) this is the paper's state: the current video,
        reconstructed frames so far and corrupted frames after. With ``"observed"`` Γ uses only the
        observed pixels of every frame, so the state shows the corrupted video: a reconstructed frame
        shown without its holes would hide exactly what the policy must know (which pixels Γ can copy).
        ``target``: the frame shown as the target (default the current one, ``t``; a finished episode
        has none, and the gym env shows its last).
        """
        b = self.batch_size
        t = self.t if target is None else target
        shown = self.corrupted
        if self.condition_on == "current":  # the whole video as conditioning() gives it, without a gather
            shown = torch.where(self.repaired()[None, :, None, None, None], self.video, self.corrupted)
        return Observation(
            video=tile(shown, self.cell),
            target=downsample(shown[:, t], self.cell),
            t=torch.full((b,), t, dtype=torch.long, device=self.device),
        )

    def check_pairs(self, pairs: torch.Tensor) -> torch.Tensor:
        """Validate (B, k) conditioning frame indices (clear errors for bad actions) -> long tensor, each
        row ascending: the frames are a set (ARCHITECTURE.md: i < j), and Γ sees them in that order.

        A tensor, a NumPy array or nested lists of integers is accepted; floats or booleans are refused
        (truncating them would quietly pick other frames)."""
        given = pairs
        try:
            pairs = torch.as_tensor(np.asarray(pairs) if not isinstance(pairs, torch.Tensor) else pairs)
        except (TypeError, ValueError, RuntimeError):
            raise RovrError(
                f"conditioning frames must be integer frame indices, got {type(given).__name__}"
            ) from None
        if pairs.dtype == torch.bool or pairs.is_floating_point() or pairs.is_complex():
            raise RovrError(
                f"conditioning frames must be integer frame indices, got {str(pairs.dtype).removeprefix('torch.')}"
                f": {pairs.tolist()}"
            )
        pairs = pairs.to(device=self.device, dtype=torch.long)
        if pairs.shape != (self.batch_size, self.k):
            raise RovrError(
                f"expected conditioning frames of shape ({self.batch_size}, {self.k}), got {tuple(pairs.shape)}"
            )
        if bool(((pairs < 0) | (pairs >= self.num_frames)).any()):
            raise RovrError(f"conditioning frame out of range 0..{self.num_frames - 1}: {pairs.tolist()}")
        if bool((pairs == self.t).any()):
            raise RovrError(f"the target frame {self.t} cannot condition on itself: {pairs.tolist()}")
        pairs = pairs.sort(dim=1).values
        if self.k > 1 and bool((pairs.diff(dim=1) == 0).any()):
            raise RovrError(f"conditioning frames must be distinct: {pairs.tolist()}")
        return pairs

    def rebuild(
        self, pairs: torch.Tensor, rows: torch.Tensor | None = None, shifts: torch.Tensor | None = None
    ) -> torch.Tensor:
        """x̂_t = Γ(x̄_t, c_1..c_k) for the given (B', k) frames of episodes ``rows``. (B', 3, H, W).

        ``shifts`` (B', k, 2): Γ's alignment of those frames, if already known (:meth:`frame_shifts`).
        """
        t = self.t
        rows = torch.arange(self.batch_size, device=self.device) if rows is None else rows
        cond, cond_masks = self.conditioning(pairs, rows)
        target = self.corrupted[rows, t]  # x̄_t: the target is always rebuilt from its corrupted self
        target_mask = self.masks[rows, t][:, None].float()
        return self.net(target, target_mask, cond, cond_masks, shifts)

    def frame_shifts(self, row: int) -> torch.Tensor | None:
        """Γ's alignment shift (T, 2) of every frame of episode ``row`` onto its current target; None if Γ
        does not align. Lets a caller that rebuilds one target from many pairs estimate each shift once."""
        t, n = self.t, self.num_frames
        rows = torch.full((1,), row, dtype=torch.long, device=self.device)
        frames, holes = self.conditioning(torch.arange(n, device=self.device)[None], rows)
        s = self.net.shifts(self.corrupted[rows, t], self.masks[rows, t][:, None].float(), frames, holes)
        return None if s is None else s[0]

    def repaired(self) -> torch.Tensor:
        """(T,) bool: the frames already reconstructed at this step (targets before it in ``order``)."""
        done = torch.zeros(self.num_frames, dtype=torch.bool, device=self.device)
        done[self.order[: self.step_index]] = True
        return done

    @property
    def hole(self) -> torch.Tensor:
        """(B, T, H, W) bool: the holes still open in the current video ``video``."""
        return self.masks & ~self.repaired()[None, :, None, None]

    def conditioning(self, pairs: torch.Tensor, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Γ's view of frames ``pairs`` (B', k) of episodes ``rows`` (B',): (B', k, 3, H, W), (B', k, 1, H, W).

        ``"current"``: a frame reconstructed before this step is its reconstruction with no hole, any
        other its observed pixels. Read off ``step_index``, so a caller that sets it back (Γ's update
        on a finished rollout, :meth:`rovr.train.ppg.Trainer.update_local`) sees each step as played.
        """
        r = rows[:, None]
        frames, holes = self.corrupted[r, pairs], self.masks[r, pairs]
        if self.condition_on == "current":
            done = self.repaired()[pairs]  # (B', k)
            frames = torch.where(done[:, :, None, None, None], self.video[r, pairs], frames)
            holes = holes & ~done[:, :, None, None]
        return frames, holes[:, :, None].float()

    @torch.no_grad()
    def step(self, pairs: torch.Tensor) -> StepInfo:
        """Apply one action per episode: rebuild the target, put x̂_t into the video, score it."""
        if self.done:
            raise RovrError("the episode is over; call reset() first")
        pairs = self.check_pairs(pairs)
        t = self.t
        x_hat = self.rebuild(pairs)
        x = self.original[:, t]
        if self.perceptual is not None:
            before, after = self.loss_before(t), self.perceptual(x_hat, x)
        else:  # no ground truth (repairing a user's video): nothing to score
            before = after = torch.full((self.batch_size,), float("nan"), device=self.device)
        self.video[:, t] = x_hat
        cov = self._pair_coverage(t, pairs)
        reward = before - after
        self.step_index += 1
        info = StepInfo(reward=reward, loss_before=before, loss_after=after, coverage=cov, pairs=pairs)
        if self.done and self.flow is not None:
            info.flow_recovery = self.flow_recovery()
            info.reward = info.reward + self.flow_weight * info.flow_recovery
        return info

    @torch.no_grad()
    def try_pairs(self, pairs: torch.Tensor) -> torch.Tensor:
        """Score M other conditioning sets for the current target without taking the step.

        pairs (B, M, k) -> (B, M) rewards L_P(x̄_t, x_t) − L_P(x̂_t, x_t), each x̂_t rebuilt by Γ as
        :meth:`step` would. The rebuilt frames are kept for :meth:`swapped_flow_recovery`.
        """
        if self.done:
            raise RovrError("the episode is over; call reset() first")
        b, m = pairs.shape[:2]
        flat = pairs.reshape(b * m, self.k)
        for j in range(m):
            self.check_pairs(pairs[:, j])
        t = self.t
        rows = torch.arange(b, device=self.device).repeat_interleave(m)
        x_hat = self.rebuild(flat.to(self.device), rows)  # (B·M, 3, H, W)
        self._tried[t] = x_hat.view(b, m, *x_hat.shape[1:])
        if self.perceptual is None:
            return torch.full((b, m), float("nan"), device=self.device)
        after = self.perceptual(x_hat, self.original[rows, t]).view(b, m)
        return self.loss_before(t)[:, None] - after

    def loss_before(self, t: int) -> torch.Tensor:
        """L_P(x̄_t, x_t) of every episode, (B,): computed once per target (it depends on the clips only)."""
        assert self.perceptual is not None
        if t not in self._loss_before:
            self._loss_before[t] = self.perceptual(self.corrupted[:, t], self.original[:, t])
        return self._loss_before[t]

    def _pair_coverage(self, t: int, pairs: torch.Tensor) -> torch.Tensor:
        """Oracle coverage of the chosen frames (pairs: exact; k ≠ 2: union of the frames' views)."""
        p = pairs.cpu()
        b = torch.arange(p.shape[0])
        if self.k == 2:
            return self.coverage[b, t, p[:, 0], p[:, 1]]
        masks = self.masks.cpu()
        target = masks[:, t].flatten(1).float()  # (B, P)
        hidden = masks[b[:, None], p].all(dim=1).flatten(1).float()  # hole in every chosen frame
        area = target.sum(1)
        return torch.where(area > 0, 1 - (target * hidden).sum(1) / area.clamp(min=1), torch.ones_like(area))

    def _reference_flows(self) -> tuple[torch.Tensor, torch.Tensor]:
        """F(X), F(X̄): (B, T−1, 2, H, W) each, computed once per episode batch."""
        assert self.flow is not None
        if self._flow_orig is None or self._flow_bar is None:
            self._flow_orig = torch.stack([self.flow.flow(v) for v in self.original])
            self._flow_bar = torch.stack([self.flow.flow(v) for v in self.corrupted])
        return self._flow_orig, self._flow_bar

    def flow_recovery(self) -> torch.Tensor:
        """O of the current video (Eq. 3), (B,)."""
        from rovr.metrics.flow import flow_recovery_batch

        assert self.flow is not None
        f_orig, f_bar = self._reference_flows()
        f_hat = torch.stack([self.flow.flow(v) for v in self.video])
        self._flow_hat = (self.step_index, f_hat)  # swapped_flow_recovery reuses it at the same step
        return flow_recovery_batch(f_hat, f_bar, f_orig).float()

    def _flow_errors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """n_s = ‖F(X̂)_s − F(X)_s‖² of every consecutive frame pair (B, T−1) and ‖F(X̄) − F(X)‖ (B,), float64."""
        assert self.flow is not None
        f_orig, f_bar = self._reference_flows()
        ref = f_orig.double()
        if self._flow_hat is not None and self._flow_hat[0] == self.step_index:
            f_hat = self._flow_hat[1].double()  # the video has not changed since flow_recovery
        else:
            f_hat = torch.stack([self.flow.flow(v) for v in self.video]).double()
        sq = (f_hat - ref).flatten(2).pow(2).sum(2)
        den = (f_bar.double() - ref).flatten(1).norm(dim=1)
        return sq, den

    @torch.no_grad()
    def terminal_reward_shares(self) -> torch.Tensor:
        """The final flow reward w · O split over the steps by each frame's part of Eq. 3's error.

        After the last step: (B, T) in step order (entry [b, u] belongs to target ``order[u]``), each
        row summing to w · O (:func:`rovr.metrics.flow.recovery_shares`; ``ppg.flow_credit=frame``).
        """
        from rovr.metrics.flow import recovery_shares

        if self.flow is None or not self.done:
            raise RovrError("terminal_reward_shares needs a flow backend and a finished episode")
        sq, den = self._flow_errors()
        shares = recovery_shares(sq, den)  # (B, T) per frame
        order = torch.as_tensor(self.order, device=shares.device)
        return (self.flow_weight * shares[:, order]).float()

    def swapped_terminal_reward(self) -> torch.Tensor:
        """w · :meth:`swapped_flow_recovery`: the last step's flow reward had a tried pair been played. (B, T, M)."""
        return self.flow_weight * self.swapped_flow_recovery()

    @torch.no_grad()
    def swapped_flow_recovery(self) -> torch.Tensor:
        """O (Eq. 3) of the finished video with one frame swapped for a :meth:`try_pairs` alternative.

        Returns (B, T, M): entry [b, t, j] is O of episode b's reconstruction with x̂_t replaced by
        the j-th frame tried at t, every other frame as reconstructed (with ``condition_on="current"``
        the later frames that were rebuilt from x̂_t are kept as played: a one-frame counterfactual).
        Only the flows t−1 → t and t → t+1 change, so with n_s = ‖F(X̂)_s − F(X)_s‖² per frame pair s (Eq. 3's norm is over all
        of them), num² = Σ_s n_s − n_{t−1} − n_t + the two new terms: 2 flows per alternative.
        """
        from rovr.metrics.flow import pair_flows, recovery_score

        if self.flow is None or not self.done:
            raise RovrError("swapped_flow_recovery needs a flow backend and a finished episode")
        n = self.num_frames
        if sorted(self._tried) != list(range(n)):
            raise RovrError("swapped_flow_recovery needs try_pairs at every step of the episode")
        sq, den = self._flow_errors()
        ref = self._reference_flows()[0].double()
        b, m = self._tried[0].shape[:2]
        num_sq = sq.sum(1)[:, None, None].repeat(1, n, m)  # (B, T, M)
        rows = torch.arange(b, device=self.device).repeat_interleave(m)

        def change(s: int, src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
            """n_s with frame pair s = (src, dst) in place of the reconstruction's, minus the old n_s: (B, M)."""
            assert self.flow is not None
            new = (pair_flows(self.flow, src, dst).double() - ref[rows, s]).flatten(1).pow(2).sum(1)
            return new.view(b, m) - sq[:, s, None]

        for t in range(n):
            alt = self._tried[t].flatten(0, 1)  # (B·M, 3, H, W)
            if t > 0:
                num_sq[:, t] += change(t - 1, self.video[rows, t - 1], alt)
            if t < n - 1:
                num_sq[:, t] += change(t, alt, self.video[rows, t + 1])
        return recovery_score(num_sq.clamp_min(0).sqrt(), den[:, None, None]).float()


@dataclass
class Reconstruction:
    """Result of :func:`reconstruct` for B clips."""

    video: torch.Tensor  # (B, T, 3, H, W) reconstructed
    choices: np.ndarray  # (B, T, k) conditioning frames chosen for each target
    loss: np.ndarray  # (B, T) L_P(x̂_t, x_t)
    loss_before: np.ndarray  # (B, T) L_P(x̄_t, x_t)
    reward: np.ndarray  # (B, T) per-step rewards (flow reward included on the last step)
    coverage: np.ndarray  # (B, T) oracle coverage of the chosen frames
    flow_recovery: np.ndarray | None  # (B,) O, Eq. 3


@torch.no_grad()
def reconstruct(episodes: Episodes, chooser: Chooser) -> Reconstruction:
    """Run ``chooser`` through every step of ``episodes`` (from a reset) and collect the results."""
    episodes.reset()
    chooser.reset(episodes)
    b, n = episodes.batch_size, episodes.num_frames
    choices = np.zeros((b, n, episodes.k), dtype=np.int64)
    loss, before, reward, cov = (np.zeros((b, n), dtype=np.float64) for _ in range(4))
    flow = None
    while not episodes.done:
        t = episodes.t
        info = episodes.step(chooser.choose(episodes))
        assert info.pairs is not None
        choices[:, t] = info.pairs.cpu().numpy()
        loss[:, t] = info.loss_after.cpu().numpy()
        before[:, t] = info.loss_before.cpu().numpy()
        reward[:, t] = info.reward.cpu().numpy()
        cov[:, t] = info.coverage.cpu().numpy()
        if info.flow_recovery is not None:
            flow = info.flow_recovery.cpu().numpy()
    return Reconstruction(episodes.video.clone(), choices, loss, before, reward, cov, flow)

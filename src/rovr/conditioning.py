"""Conditioning policies behind one interface (:class:`Chooser`), all run by :func:`rovr.reconstruct.reconstruct`.

Baselines of paper §7 and the usual choices of video in-painting systems:

* ``sequential`` — t−1, t−2 (autoregressive, vid2vid); early targets take the nearest frames that exist.
* ``nearest`` — the k frames nearest the target on both sides: t−1, t+1 for pairs (what PPG drifts
  to on the synthetic clips; the strongest rule of thumb here).
* ``random`` — a uniform pair of other frames.
* ``stride`` — nearest neighbours plus strided global references (as STTN / E2FGVI pick them).
* ``oracle_best`` / ``oracle_worst`` — highest / lowest coverage from the exact oracle (§4).
* ``oracle_copy`` — the pair whose aligned copy (Γ's copy prior, no UNet) is closest to the
  original in the target's holes (:func:`copy_pair_costs`; peeks at the original). Cheap enough to
  label every training state: the expert imitation learns from by default.
* ``brute_force`` — the pair whose Γ output has the lowest L_P against the original: the ceiling
  of any k-frame choice for the state reached, with this Γ (it peeks at the original; evaluation
  only). With ``condition_on="current"`` it is greedy: a worse pair now can make a better frame to
  condition on later, so a policy can beat it on later frames.
* learned policies (``imitation``, ``rovr_*``) through :class:`PolicyChooser`.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Protocol

import numpy as np
import torch

from rovr.errors import RovrError
from rovr.models.local import align

if TYPE_CHECKING:
    from rovr.reconstruct import Episodes


class Chooser(Protocol):
    """Picks k conditioning frames for the current target of every episode."""

    name: str

    def reset(self, episodes: Episodes) -> None: ...

    def choose(self, episodes: Episodes) -> torch.Tensor:
        """Frame indices (B, k), each != the target, distinct within a row."""
        ...


def _full(episodes: Episodes, row: list[int]) -> torch.Tensor:
    return torch.tensor([row] * episodes.batch_size, dtype=torch.long, device=episodes.device)


def nearest_frames(t: int, num_frames: int) -> list[int]:
    """Frames other than t ordered by distance, earlier first on ties: t−1, t+1, t−2, t+2, ..."""
    return sorted((i for i in range(num_frames) if i != t), key=lambda i: (abs(i - t), i > t))


class Sequential:
    """t−1, ..., t−k; targets near the start take the nearest later frames instead."""

    name = "sequential"

    def reset(self, episodes: Episodes) -> None:
        pass

    def choose(self, episodes: Episodes) -> torch.Tensor:
        t, n, k = episodes.t, episodes.num_frames, episodes.k
        prev = list(range(t - 1, max(-1, t - 1 - k), -1))
        rest = [i for i in nearest_frames(t, n) if i > t][: k - len(prev)]
        return _full(episodes, sorted(prev + rest))


class Nearest:
    """The k frames nearest the target, earlier first on ties: t−1, t+1 (at the ends, the two nearest)."""

    name = "nearest"

    def reset(self, episodes: Episodes) -> None:
        pass

    def choose(self, episodes: Episodes) -> torch.Tensor:
        return _full(episodes, sorted(nearest_frames(episodes.t, episodes.num_frames)[: episodes.k]))


class Random:
    """A uniformly random set of k frames other than the target (seeded)."""

    name = "random"

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self.rng = np.random.default_rng(seed)

    def reset(self, episodes: Episodes) -> None:
        pass

    def choose(self, episodes: Episodes) -> torch.Tensor:
        t, n, k = episodes.t, episodes.num_frames, episodes.k
        others = np.array([i for i in range(n) if i != t])
        rows = [
            sorted(self.rng.choice(others, size=k, replace=False).tolist())
            for _ in range(episodes.batch_size)
        ]
        return torch.tensor(rows, dtype=torch.long, device=episodes.device)


class Stride:
    """ceil(k/2) nearest neighbours plus floor(k/2) global references every ``stride`` frames.

    The references are the strided frames farthest from the target (most global context), as
    STTN/E2FGVI combine local neighbours with non-local reference frames.
    """

    name = "stride"

    def __init__(self, stride: int = 5) -> None:
        self.stride = stride

    def reset(self, episodes: Episodes) -> None:
        pass

    def choose(self, episodes: Episodes) -> torch.Tensor:
        t, n, k = episodes.t, episodes.num_frames, episodes.k
        n_local = (k + 1) // 2
        local = nearest_frames(t, n)[:n_local]
        refs = [i for i in range(0, n, self.stride) if i != t and i not in local]
        refs = sorted(refs, key=lambda i: -abs(i - t))[: k - n_local]
        fill = [i for i in nearest_frames(t, n) if i not in local and i not in refs]
        return _full(episodes, sorted(local + refs + fill[: k - n_local - len(refs)]))


class Oracle:
    """Best (or worst) pair by the exact coverage oracle; for k ≠ 2, greedy by coverage gain."""

    def __init__(self, best: bool = True) -> None:
        self.best = best
        self.name = "oracle_best" if best else "oracle_worst"

    def reset(self, episodes: Episodes) -> None:
        pass

    def choose(self, episodes: Episodes) -> torch.Tensor:
        t = episodes.t
        if episodes.k == 2:
            rows = [
                list(c.oracle.best_pair(t) if self.best else c.oracle.worst_pair(t)) for c in episodes.clips
            ]
        else:
            rows = [self._greedy(c.masks, t, episodes.k) for c in episodes.clips]
        return torch.tensor(rows, dtype=torch.long, device=episodes.device)

    def _greedy(self, masks: np.ndarray, t: int, k: int) -> list[int]:
        hidden = masks[t].copy()  # target holes not yet revealed
        chosen: list[int] = []
        for _ in range(k):
            cand = [i for i in nearest_frames(t, masks.shape[0]) if i not in chosen]
            still = [int((hidden & masks[i]).sum()) for i in cand]
            pick = cand[int(np.argmin(still) if self.best else np.argmax(still))]
            chosen.append(pick)
            hidden &= masks[pick]
        return sorted(chosen)


@torch.no_grad()
def copy_pair_costs(episodes: Episodes, rows: torch.Tensor | None = None) -> torch.Tensor:
    """Cost of every pair for the current target: the copy prior's error in the target's holes.

    For target t (original x, holes h) and frames i, j aligned onto it as Γ aligns them (frames
    a_i, visibility v_i), the copy of the pair is ``c = (v_i a_i + v_j a_j) / (v_i + v_j)`` where
    ``v_i + v_j > 0``. Its cost is the mean over hole pixels p of t of

        ‖c(p) − x(p)‖²   where a frame shows p,   ‖μ − x(p)‖²   where none does,

    μ being the mean colour of t's visible pixels (the error of the plainest fill). It weighs
    coverage, alignment and motion at once — what makes a pair useful to Γ — without running Γ.
    Returns (B', T, T) float, symmetric, +inf on the diagonal and wherever i or j is t.
    """
    t, n, dev = episodes.t, episodes.num_frames, episodes.device
    rows = torch.arange(episodes.batch_size, device=dev) if rows is None else rows
    a, b = torch.triu_indices(n, n, offset=1, device=dev)
    out = torch.full((len(rows), n, n), float("inf"), device=dev)
    frames_idx = torch.arange(n, device=dev)[None]
    for r_i, row in enumerate(rows.tolist()):
        r = torch.tensor([row], device=dev)
        frames, holes = episodes.conditioning(frames_idx, r)  # (1, T, 3, H, W), (1, T, 1, H, W)
        shifts = episodes.frame_shifts(row)  # (T, 2) as Γ would align them, or None
        if shifts is not None:
            target, tmask = episodes.corrupted[r, t], episodes.masks[r, t][:, None].float()
            frames, holes = align(target, tmask, frames, holes, 0, shifts[None])
        hole = episodes.masks[row, t].flatten()  # (HW,) bool
        x = episodes.original[row, t].flatten(1)[:, hole]  # (3, Nh)
        if x.shape[1] == 0:  # no hole: every pair is perfect (the diagonal stays +inf: not a pair)
            out[r_i, a, b] = 0.0
            out[r_i, b, a] = 0.0
        else:
            vis = ~episodes.masks[row, t].flatten()
            mu = episodes.corrupted[row, t].flatten(1)[:, vis].mean(dim=1, keepdim=True) if vis.any() else 0.5
            v = 1.0 - holes[0].flatten(1)[:, hole]  # (T, Nh)
            f = frames[0].flatten(2)[:, :, hole] * v[:, None]  # (T, 3, Nh), zero where unseen
            den = v[a] + v[b]  # (P, Nh)
            copy = (f[a] + f[b]) / den.clamp(min=1.0)[:, None]  # (P, 3, Nh)
            err = ((copy - x[None]) ** 2).sum(dim=1)  # (P, Nh)
            fill = ((mu - x) ** 2).sum(dim=0)  # (Nh,)
            cost = torch.where(den > 0, err, fill[None]).mean(dim=1)  # (P,)
            out[r_i, a, b] = cost
            out[r_i, b, a] = cost
        out[r_i, t, :] = float("inf")
        out[r_i, :, t] = float("inf")
    return out


def cheapest_pairs(cost: torch.Tensor) -> torch.Tensor:
    """The lowest-cost pair of each row of a (B, T, T) cost table: (B, 2), i < j."""
    n = cost.shape[-1]
    flat = cost.flatten(1).argmin(dim=1)
    return torch.stack([flat // n, flat % n], dim=1).sort(dim=1).values


class CopyOracle:
    """The pair with the lowest :func:`copy_pair_costs` (peeks at the original; k = 2 only)."""

    name = "oracle_copy"

    def reset(self, episodes: Episodes) -> None:
        if episodes.k != 2:
            raise RovrError(f"oracle_copy chooses pairs (k=2); got k={episodes.k}")

    def choose(self, episodes: Episodes) -> torch.Tensor:
        return cheapest_pairs(copy_pair_costs(episodes))


class BruteForce:
    """For each target, every set of k frames through Γ; keep the one with the lowest L_P (peeks at X)."""

    name = "brute_force"

    def __init__(self, chunk: int = 256) -> None:
        self.chunk = chunk  # pairs per rebuild (Γ itself splits CPU batches: CPU_BATCH_PIXELS)

    def reset(self, episodes: Episodes) -> None:
        pass

    @torch.no_grad()
    def choose(self, episodes: Episodes) -> torch.Tensor:
        t, n, k, dev = episodes.t, episodes.num_frames, episodes.k, episodes.device
        if episodes.perceptual is None:
            raise RovrError(
                "brute_force needs the original video to score pairs; it is an evaluation-only baseline"
            )
        metric = episodes.perceptual
        combos = torch.tensor(list(itertools.combinations([i for i in range(n) if i != t], k)), device=dev)
        best = torch.zeros(episodes.batch_size, k, dtype=torch.long, device=dev)
        for b in range(episodes.batch_size):
            scores = []
            shifts = episodes.frame_shifts(b)  # (T, 2): each frame aligned once, not once per pair
            for start in range(0, len(combos), self.chunk):
                pairs = combos[start : start + self.chunk]
                rows = torch.full((len(pairs),), b, dtype=torch.long, device=dev)
                x_hat = episodes.rebuild(pairs, rows, None if shifts is None else shifts[pairs])
                target = episodes.original[b, t].expand_as(x_hat)
                scores.append(metric(x_hat, target))
            best[b] = combos[int(torch.cat(scores).argmin())]
        return best


class PolicyChooser:
    """A learned actor (paper §5.2.1): its greedy choice, or a Gumbel top-k sample at ``tau``.

    Greedy is the top-k of the logits, or for an actor with a pair term (the pointer policy, k = 2)
    the mode of its pair distribution at ``tau`` (:func:`rovr.models.policy.greedy_pair`) — so pass
    the τ the policy was trained at: :func:`rovr.train.common.load_policy` reads it from the
    checkpoint (a PPG policy records ``ppg.tau``). The episodes' ``cell`` must be the policy's.
    """

    def __init__(
        self, actor: torch.nn.Module, name: str, sample: bool = False, tau: float = 0.7, seed: int = 0
    ) -> None:
        self.actor, self.name, self.sample, self.tau = actor, name, sample, tau
        self.generator = torch.Generator().manual_seed(seed)

    def reset(self, episodes: Episodes) -> None:
        cell = getattr(self.actor, "cell", None)
        if cell is not None and episodes.cell != cell:
            raise RovrError(
                f"policy '{self.name}' reads frames in cells of {cell} px but the episodes were built with "
                f"cell={episodes.cell}; build them with Episodes(..., cell=cfg.policy.cell)"
            )
        self.actor.eval()

    @torch.no_grad()
    def choose(self, episodes: Episodes) -> torch.Tensor:
        from rovr.models.policy import check_logits, greedy_pair, sample_topk

        obs = episodes.observation()
        # the pointer actor scores any number of frames; the paper's refuses a T it was not built for
        out = self.actor(obs.video, obs.target, obs.t, num_frames=episodes.num_frames)
        logits, bias = check_logits(out.logits), out.pair_bias  # (B, T), -inf at t; (B, T, T) or None
        if self.sample:
            return sample_topk(logits, episodes.k, self.tau, generator=self.generator, bias=bias)
        if bias is not None and episodes.k == 2:
            return greedy_pair(logits, bias, self.tau)
        return logits.topk(episodes.k, dim=1).indices.sort(dim=1).values


BASELINES = (
    "sequential",
    "nearest",
    "random",
    "stride",
    "oracle_best",
    "oracle_worst",
    "oracle_copy",
    "brute_force",
)
#: Baselines that score pairs against the original video (evaluation only: a user's video has none).
NEEDS_ORIGINAL = frozenset({"oracle_copy", "brute_force"})


def is_chooser(obj: object) -> bool:
    """Whether ``obj`` is a chooser object (has callable ``reset`` and ``choose``; not a class)."""
    return (
        not isinstance(obj, type)
        and callable(getattr(obj, "choose", None))
        and callable(getattr(obj, "reset", None))
    )


def check_chooser(obj: object, what: str, named: bool = True) -> None:
    """Refuse, in one line, what is not a :class:`Chooser` object (a class instead of an instance,
    no ``reset``/``choose``, or with ``named`` no ``name`` string)."""
    if isinstance(obj, type):
        raise RovrError(f"{what} is the class {obj.__name__}, not a chooser object; pass {obj.__name__}()")
    if not is_chooser(obj):
        raise RovrError(
            f"{what} {obj!r} is not a Chooser (.name, .reset(episodes), .choose(episodes) -> (B, k) frame "
            "indices); see rovr.conditioning"
        )
    if named and not isinstance(getattr(obj, "name", None), str):
        raise RovrError(f"{what} {obj!r} has no .name (a string naming it in reports); give its class one")


def make_baseline(name: str, seed: int = 0) -> Chooser:
    """A baseline chooser by its Table 2 name."""
    table: dict[str, Chooser] = {
        "sequential": Sequential(),
        "nearest": Nearest(),
        "random": Random(seed),
        "stride": Stride(),
        "oracle_best": Oracle(best=True),
        "oracle_worst": Oracle(best=False),
        "oracle_copy": CopyOracle(),
        "brute_force": BruteForce(),
    }
    if name not in table:
        raise ValueError(f"unknown baseline '{name}'; choose from {', '.join(BASELINES)}")
    return table[name]

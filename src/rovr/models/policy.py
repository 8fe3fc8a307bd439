"""Policy π and critic V (paper §5.2.1–5.2.2) and the distribution over frame pairs.

Pair distribution (§5.2.1). The paper adds Gumbel noise to the logits and keeps the two largest
entries. Drawing the top-k of ``l/τ + G`` (G i.i.d. standard Gumbel) is exactly Plackett–Luce
sampling of k frames without replacement from ``p = softmax(l/τ)`` — so the temperature τ acts on
the logits here. (In the Gumbel-softmax form ``softmax((l + G)/τ)`` the top-k would not depend on τ
at all.) The exact probability of the unordered pair {a, b} is::

    P({a, b}) = p_a p_b (1/(1 - p_a) + 1/(1 - p_b))

and every log-probability below is computed from ``log_softmax`` with ``log(1 - p_a)`` taken as
``logsumexp`` of the other entries, which stays exact when ``p_a -> 1``.

Frame indices are used throughout: logits are (B, T) over all frames, with ``-inf`` at the target
frame t (and any other frame that may not be chosen); such entries are never sampled.

Networks. :class:`Actor` / :class:`Critic` follow §5.2.1–5.2.2: one CNN over the tiled low-res
video (Fig. 2), one over the target, features concatenated, fully connected layers to T-1 logits
(actor) or a scalar (critic). Their size grows with T. :class:`PointerActor` / :class:`PointerCritic`
embed each frame with a small CNN and score every candidate against the target, so one set of
weights serves any T, and a step after a one-frame change costs one frame embedding plus O(T) scoring.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rovr.data.encoding import grid_side, untile
from rovr.errors import RovrError


@dataclass
class PolicyConfig:
    kind: Literal["paper", "pointer"] = field(
        default="paper",
        metadata={"help": "'paper' (CNN over the tiled video, T-1 logits) or 'pointer' (any T)"},
    )
    cell: int = field(
        default=32, metadata={"help": "side of one frame in the tiled low-res encoding (Fig. 2)"}
    )
    channels: int = field(default=32, metadata={"help": "width of the CNN trunks"})
    hidden: int = field(default=256, metadata={"help": "width of the fully connected layers"})
    tau: float = field(default=0.7, metadata={"help": "Gumbel-softmax temperature (paper: 0.7)"})
    cell_features: int = field(
        default=4,
        metadata={"help": "side of the feature map kept per frame cell after the CNN (before the FC layers)"},
    )
    embed: int = field(
        default=128,
        metadata={
            "help": "pointer: size D of a learned per-frame embedding; 0 = score frames from the "
            "low-res cues and positions alone (generalises better from few training videos)"
        },
    )
    pairwise: bool = field(
        default=True,
        metadata={
            "help": "pointer: a learned pair term from low-res hole overlap; the second frame is drawn "
            "given the first (False = Plackett–Luce on per-frame scores, as the paper)"
        },
    )

    def __post_init__(self) -> None:
        from rovr.config import check

        check(8 <= self.cell <= 256, "policy.cell", f"must be in [8, 256] (got {self.cell})")
        check(self.tau > 0, "policy.tau", f"must be > 0 (got {self.tau})")
        check(1 <= self.channels <= 1024, "policy.channels", f"must be in [1, 1024] (got {self.channels})")
        check(1 <= self.hidden <= 8192, "policy.hidden", f"must be in [1, 8192] (got {self.hidden})")
        check(
            1 <= self.cell_features <= self.cell,
            "policy.cell_features",
            f"must be in [1, policy.cell] (got {self.cell_features})",
        )
        check(0 <= self.embed <= 4096, "policy.embed", f"must be in [0, 4096] (got {self.embed})")


class InvalidLogitsError(RovrError, ValueError):
    """The policy produced NaN/+inf logits, or left too few frames selectable (training diverged)."""


# ============================================================================= pair distribution (§5.2.1)

MAX_UNORDERED_K = 4  # unordered log-probs sum over k! orderings


def check_logits(logits: Tensor, k: int = 2) -> Tensor:
    """Return ``logits`` (B, N) unchanged; raise unless it has no NaN/+inf and >= ``k`` finite entries per row.

    :class:`InvalidLogitsError` (a ValueError and a RovrError) says "NaN logits from the policy".
    """
    if logits.ndim != 2:
        raise ValueError(f"logits must be (B, N); got shape {tuple(logits.shape)}")
    if not 1 <= k <= logits.shape[1]:
        raise ValueError(f"cannot choose k={k} of N={logits.shape[1]} frames")
    nan = torch.isnan(logits) | torch.isposinf(logits)
    few = torch.isfinite(logits).sum(dim=1) < k
    has_nan, has_few = torch.stack([nan.any(), few.any()]).tolist()
    if has_nan:
        raise InvalidLogitsError(
            "NaN logits from the policy (or +inf): training diverged; lower ppg.lr or resume from an earlier checkpoint"
        )
    if has_few:
        raise InvalidLogitsError(f"policy logits leave fewer than {k} selectable (finite) frames in some row")
    return logits


def _check_tau(tau: float) -> None:
    if not tau > 0:
        raise ValueError(f"temperature tau must be > 0 (got {tau})")


def _valid_subsets(logits: Tensor, idx: Tensor) -> Tensor:
    """(B,) bool: the k indices of each row are distinct and all have finite logits."""
    ok = torch.isfinite(logits.gather(1, idx)).all(dim=1)  # (B,)
    for i, j in itertools.combinations(range(idx.shape[1]), 2):
        ok = ok & (idx[:, i] != idx[:, j])
    return ok


def _safe_indices(logits: Tensor, idx: Tensor, valid: Tensor) -> Tensor:
    """Replace the rows of ``idx`` that are impossible events by the top-k (always possible) indices.

    The result is then masked with -inf, so no NaN ever reaches the forward or the backward pass.
    """
    fallback = logits.detach().topk(idx.shape[1], dim=1).indices  # (B, k)
    return torch.where(valid[:, None], idx, fallback)


def topk_log_prob(logits: Tensor, idx: Tensor, tau: float, ordered: bool = False) -> Tensor:
    """Log-probability of k frames drawn without replacement (Plackett–Luce on ``softmax(l/τ)``).

    logits (B, N), idx (B, k) long -> (B,). ``ordered=True``: the draw sequence idx[:, 0], idx[:, 1], ...;
    ``ordered=False``: the unordered set, a logsumexp over its k! orderings (k <= 4). Repeated indices or
    a masked (-inf) frame give -inf. Cost O(B · k! · k · N).
    """
    _check_tau(tau)
    if idx.ndim != 2 or idx.shape[0] != logits.shape[0]:
        raise ValueError(f"idx must be (B, k) with B = {logits.shape[0]}; got shape {tuple(idx.shape)}")
    k = idx.shape[1]
    if not ordered and k > MAX_UNORDERED_K:
        raise ValueError(f"unordered log-prob enumerates k! orderings; k <= {MAX_UNORDERED_K} (got k={k})")
    check_logits(logits, k)
    logp = torch.log_softmax(logits / tau, dim=1)  # (B, N)
    valid = _valid_subsets(logits, idx)  # (B,)
    safe = _safe_indices(logits, idx, valid)  # (B, k)
    perms = [tuple(range(k))] if ordered else list(itertools.permutations(range(k)))
    seq = safe[:, torch.tensor(perms, device=safe.device)]  # (B, P, k)
    B, P, N = logits.shape[0], len(perms), logits.shape[1]
    lp = logp[:, None, :].expand(B, P, N)  # (B, P, N)
    taken = torch.zeros(B, P, N, dtype=torch.bool, device=logits.device)
    total = torch.zeros(B, P, dtype=logp.dtype, device=logits.device)
    for i in range(k):
        s = seq[:, :, i : i + 1]  # (B, P, 1)
        total = total + lp.gather(2, s).squeeze(2)
        if i > 0:  # divide by the mass left: log(1 - sum of earlier picks) = logsumexp of the rest
            total = total - torch.logsumexp(lp.masked_fill(taken, -math.inf), dim=2)
        taken = taken.scatter(2, s, True)
    out = total[:, 0] if ordered else torch.logsumexp(total, dim=1)  # (B,)
    return out.masked_fill(~valid, -math.inf)


def pair_log_prob(
    logits: Tensor,
    a: Tensor,
    b: Tensor,
    tau: float,
    mode: Literal["exact", "geometric"] = "exact",
    bias: Tensor | None = None,
) -> Tensor:
    """Log-probability of the unordered pair {a, b} under the policy. logits (B, N), a, b (B,) -> (B,).

    ``'exact'``: ``log p_a + log p_b + log(1/(1-p_a) + 1/(1-p_b))`` with ``p = softmax(l/τ)``, the true
    probability of Gumbel top-2 sampling. ``'geometric'``: the paper's §5.2.1 choice, the mean of the two
    individual log-probs ``(log p_a + log p_b)/2`` — more stable by the paper's account, but not the
    log-probability of any distribution over pairs (its exponentials do not sum to 1). a == b or a
    masked frame gives -inf in both modes.

    With a pairwise ``bias`` (B, N, N) the pair is drawn by :func:`sample_topk` in two conditional steps
    and its exact log-probability is ``log(p(a) p(b | a) + p(b) p(a | b))`` (``mode`` must be 'exact'),
    from the two rows a and b of the second draw only: O(N) per pair.
    """
    _check_tau(tau)
    if bias is not None and mode != "exact":
        raise ValueError("the paper's geometric log-prob is defined for per-frame logits only (no pair bias)")
    if mode not in ("exact", "geometric"):
        raise ValueError(f"mode must be 'exact' or 'geometric' (got {mode!r})")
    if a.shape != (logits.shape[0],) or b.shape != a.shape:
        raise ValueError(
            f"a and b must be (B,) with B = {logits.shape[0]}; got {tuple(a.shape)}, {tuple(b.shape)}"
        )
    check_logits(logits, 2)
    logp = torch.log_softmax(logits / tau, dim=1)  # (B, N)
    idx = torch.stack([a, b], dim=1)  # (B, 2)
    valid = _valid_subsets(logits, idx)
    safe = _safe_indices(logits, idx, valid)
    lab = logp.gather(1, safe)  # (B, 2): log p_a, log p_b
    if bias is not None:
        check_bias(logits, bias)
        rows = torch.arange(len(a), device=logits.device)
        x, y = safe[:, 0], safe[:, 1]
        own = F.one_hot(safe, logits.shape[1]).bool()  # (B, 2, N): the first draw is not drawn again
        second = ((logits[:, None, :] + bias[rows[:, None], safe]) / tau).masked_fill(own, -math.inf)
        second = torch.log_softmax(second, dim=2)  # (B, 2, N): log p(· | x), log p(· | y)
        out = torch.logaddexp(lab[:, 0] + second[rows, 0, y], lab[:, 1] + second[rows, 1, x])
    elif mode == "geometric":
        out = lab.mean(dim=1)
    else:
        # log(1 - p_a) = logsumexp_{j != a} log p_j   (exact even when p_a -> 1)
        own = F.one_hot(safe, logits.shape[1]).bool()  # (B, 2, N)
        log1m = torch.logsumexp(logp[:, None, :].masked_fill(own, -math.inf), dim=2)  # (B, 2)
        out = lab.sum(dim=1) + torch.logsumexp(-log1m, dim=1)
    return out.masked_fill(~valid, -math.inf)


def _pair_table(logits: Tensor, tau: float) -> tuple[Tensor, Tensor, Tensor]:
    """Exact log P of every unordered pair a < b: (B, M) and the pair indices (M,), (M,); M = N(N-1)/2."""
    _check_tau(tau)
    check_logits(logits, 2)
    N = logits.shape[1]
    logp = torch.log_softmax(logits / tau, dim=1)  # (B, N)
    eye = torch.eye(N, dtype=torch.bool, device=logits.device)
    log1m = torch.logsumexp(logp[:, None, :].masked_fill(eye, -math.inf), dim=2)  # (B, N) log(1 - p_a)
    ia, ib = torch.triu_indices(N, N, offset=1, device=logits.device)  # (M,), (M,)
    lp = logp[:, ia] + logp[:, ib] + torch.logaddexp(-log1m[:, ia], -log1m[:, ib])  # (B, M)
    return lp, ia, ib


def _entropy_from_log_probs(lp: Tensor) -> Tensor:
    """-sum P log P over the last dim, with 0 log 0 = 0 and no NaN in the backward pass."""
    finite = torch.isfinite(lp)
    safe = torch.where(finite, lp, torch.zeros_like(lp))
    return -torch.where(finite, safe.exp() * safe, torch.zeros_like(lp)).sum(dim=-1)


def check_bias(logits: Tensor, bias: Tensor) -> Tensor:
    """``bias`` (B, N, N) must match the logits and be finite; returned unchanged."""
    B, N = logits.shape
    if bias.shape != (B, N, N):
        raise ValueError(f"pair bias must be (B, N, N) = ({B}, {N}, {N}); got {tuple(bias.shape)}")
    if not bool(torch.isfinite(bias).all()):
        raise InvalidLogitsError(
            "NaN/inf pair bias from the policy: training diverged; lower the learning rate"
        )
    return bias


def conditional_log_probs(logits: Tensor, tau: float, bias: Tensor) -> tuple[Tensor, Tensor]:
    """The two draws of a pair with a pairwise bias: ``log p(a)`` (B, N) and ``log p(b | a)`` (B, N, N).

    ``p(a) = softmax(l/τ)`` and ``p(b | a) = softmax_{b ≠ a}((l_b + g_ab)/τ)``. With g = 0 this is exactly
    Plackett–Luce (Gumbel top-2): the second draw renormalises the first distribution without a.
    """
    _check_tau(tau)
    check_logits(logits, 2)
    check_bias(logits, bias)
    N = logits.shape[1]
    first = torch.log_softmax(logits / tau, dim=1)
    eye = torch.eye(N, dtype=torch.bool, device=logits.device)
    second = ((logits[:, None, :] + bias) / tau).masked_fill(eye, -math.inf)  # (B, N, N): row a, column b
    return first, torch.log_softmax(second, dim=2)


def pair_entropy(logits: Tensor, tau: float, bias: Tensor | None = None) -> Tensor:
    """Exact entropy (nats) of the unordered-pair distribution (Gumbel top-2, or the two conditional draws
    with a pair ``bias``). (B, N) -> (B,).

    Enumerates all N(N-1)/2 pairs at once: O(B·N²) time and memory (N = 20: 190 pairs; N <= ~64 is
    cheap; N = 2000 needs ~2·10⁶ floats per row). Differentiable (the PPG entropy bonus).
    """
    lp, _, _ = pair_log_prob_table(logits, tau, bias)
    return _entropy_from_log_probs(lp)


def pair_log_prob_table(
    logits: Tensor, tau: float, bias: Tensor | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """Exact log P({a, b}) of all pairs a < b: (lp (B, M), a (M,), b (M,)), M = N(N-1)/2; -inf if masked.

    Without ``bias``: Plackett–Luce (module docstring). With a pairwise bias g (B, N, N), the pair is drawn
    as a ~ p(a), then b ~ p(b | a) (:func:`conditional_log_probs`), and
    ``P({a, b}) = p(a) p(b | a) + p(b) p(a | b)``.
    """
    if bias is None:
        return _pair_table(logits, tau)
    first, second = conditional_log_probs(logits, tau, bias)
    N = logits.shape[1]
    ia, ib = torch.triu_indices(N, N, offset=1, device=logits.device)
    # -inf (masked) terms are replaced before logaddexp and restored after, so no NaN reaches backward
    f_ok, s_ok = torch.isfinite(first), torch.isfinite(second)
    first = torch.where(f_ok, first, torch.zeros_like(first))
    second = torch.where(s_ok, second, torch.zeros_like(second))
    ok_ab = f_ok[:, ia] & s_ok[:, ia, ib]  # (B, M): a then b is a possible draw
    ok_ba = f_ok[:, ib] & s_ok[:, ib, ia]
    floor = torch.full_like(first[:, ia], -1e4)
    ab = torch.where(ok_ab, first[:, ia] + second[:, ia, ib], floor)
    ba = torch.where(ok_ba, first[:, ib] + second[:, ib, ia], floor)
    lp = torch.where(ok_ab | ok_ba, torch.logaddexp(ab, ba), torch.full_like(ab, -math.inf))
    return lp, ia, ib


def greedy_pair(logits: Tensor, bias: Tensor | None = None, tau: float = 1.0) -> Tensor:
    """The deterministic choice: top-2 logits, or with a pair bias the pair most probable under the
    policy's distribution at temperature ``tau`` (the mode depends on τ). (B, 2), i < j."""
    if bias is None:
        return logits.topk(2, dim=1).indices.sort(dim=1).values
    lp, ia, ib = pair_log_prob_table(logits, tau, bias)
    best = lp.argmax(dim=1)
    return torch.stack([ia[best], ib[best]], dim=1)


def topk_entropy(logits: Tensor, k: int, tau: float) -> Tensor:
    """Exact entropy (nats) over unordered k-subsets (k <= 4) by enumeration. (B, N) -> (B,).

    Cost O(B · C(N, k) · k! · k · N): fine for N = 20, k = 3 (1140 subsets); use :func:`pair_entropy` for k = 2.
    """
    B, N = logits.shape
    subsets = torch.combinations(torch.arange(N, device=logits.device), r=k)  # (M, k)
    M = subsets.shape[0]
    flat = logits.repeat_interleave(M, dim=0)  # (B*M, N)
    lp = topk_log_prob(flat, subsets.repeat(B, 1), tau).view(B, M)
    return _entropy_from_log_probs(lp)


def sample_topk(
    logits: Tensor,
    k: int,
    tau: float,
    generator: torch.Generator | None = None,
    sort: bool = True,
    bias: Tensor | None = None,
) -> Tensor:
    """Draw k distinct frames by Gumbel top-k on ``l/τ`` (= Plackett–Luce). (B, N) -> (B, k) long.

    ``sort=True`` returns each row ascending (the set convention, pairs as (i, j) with i < j);
    ``sort=False`` returns the draw order. Masked (-inf) frames are never drawn; NaN logits raise
    :class:`InvalidLogitsError`. ``generator`` must live on the logits' device.
    """
    _check_tau(tau)
    check_logits(logits, k)

    def gumbel(shape: torch.Size) -> Tensor:
        u = torch.rand(shape, generator=generator, device=logits.device, dtype=logits.dtype)
        return -torch.log(-torch.log(u.clamp_min(torch.finfo(u.dtype).tiny)))

    with torch.no_grad():
        if bias is None:
            idx = (logits / tau + gumbel(logits.shape)).topk(k, dim=1).indices  # (B, k), draw order
        else:  # two conditional draws (Gumbel-max each): a ~ p(a), b ~ p(b | a)
            if k != 2:
                raise ValueError(f"a pair bias defines a distribution over pairs; k must be 2 (got {k})")
            first, second = conditional_log_probs(logits, tau, bias)
            a = (first + gumbel(first.shape)).argmax(dim=1)  # (B,)
            row = second[torch.arange(len(a), device=a.device), a]  # (B, N)
            b = (row + gumbel(row.shape)).argmax(dim=1)
            idx = torch.stack([a, b], dim=1)
    return idx.sort(dim=1).values if sort else idx


class Pair(NamedTuple):
    """A conditioning pair as frame indices, i < j (ARCHITECTURE.md)."""

    i: Tensor  # (B,) long
    j: Tensor  # (B,) long


def sample_pair(logits: Tensor, tau: float, generator: torch.Generator | None = None) -> Pair:
    """Draw the conditioning pair (§5.2.1: Gumbel top-2). logits (B, N) -> Pair(i (B,), j (B,)), i < j."""
    idx = sample_topk(logits, 2, tau, generator=generator, sort=True)
    return Pair(idx[:, 0], idx[:, 1])


# ============================================================================= observations and index maps


class PolicyObs(NamedTuple):
    """One batched state s_t (§5.1.1)."""

    video: Tensor  # (B, 3, G*c, G*c) tiled low-res video X̄_t in [0, 1]; frame n at row n//G, col n%G
    target: Tensor  # (B, 3, c, c) low-res target frame x̄_t
    t: Tensor  # (B,) long, index of the target frame


class ActorOutput(NamedTuple):
    logits: Tensor  # (B, T) over frame indices, -inf at t
    aux_value: Tensor  # (B,) auxiliary value head (PPG's auxiliary phase)
    pair_bias: Tensor | None = None  # (B, T, T) symmetric g_ab of the second draw, or None (Plackett–Luce)


def as_obs(video: Tensor | PolicyObs, target: Tensor | None = None, t: Tensor | None = None) -> PolicyObs:
    """Networks accept ``net(obs)`` or ``net(video, target, t)``; this returns the PolicyObs either way."""
    if isinstance(video, Tensor):
        if target is None or t is None:
            raise TypeError("pass a PolicyObs, or the three tensors (video, target, t)")
        return PolicyObs(video, target, t)
    if target is not None or t is not None:
        raise TypeError("pass a PolicyObs alone, or the three tensors (video, target, t)")
    return video


def candidate_to_frame(cand: Tensor, t: Tensor) -> Tensor:
    """Candidate slot (0..T-2, all frames but t in order) -> frame index: c if c < t else c + 1."""
    return cand + (cand >= t).long()


def frame_to_candidate(frame: Tensor, t: Tensor) -> Tensor:
    """Frame index -> candidate slot: f if f < t else f - 1; -1 where f == t (not a candidate)."""
    cand = frame - (frame > t).long()
    return torch.where(frame == t, torch.full_like(cand, -1), cand)


def expand_candidate_logits(cand_logits: Tensor, t: Tensor) -> Tensor:
    """(B, T-1) logits over candidate slots -> (B, T) over frames, -inf at each row's t."""
    B, T = cand_logits.shape[0], cand_logits.shape[1] + 1
    frames = torch.arange(T, device=cand_logits.device).expand(B, T)  # (B, T)
    slot = frame_to_candidate(frames, t[:, None]).clamp_min(0)  # (B, T); t's own slot is overwritten
    out = cand_logits.gather(1, slot)
    return out.masked_fill(frames == t[:, None], -math.inf)


def _check_t(t: Tensor, num_frames: int, batch: int) -> None:
    if t.shape != (batch,) or t.dtype != torch.long:
        raise ValueError(f"t must be a (B,) long tensor with B = {batch}; got {tuple(t.shape)} {t.dtype}")
    if bool(((t < 0) | (t >= num_frames)).any()):
        raise ValueError(f"target index t must be in [0, {num_frames}); got {t.tolist()}")


# ============================================================================= networks


def _cnn(cfg: PolicyConfig, out_side: int) -> tuple[nn.Sequential, int]:
    """Conv trunk: stride-2 3x3 convs shrink a c x c cell to ~cell_features, then pool to out_side.

    Returns (module, output channels); the module maps (N, 3, h, w) -> (N, C', out_side, out_side).
    """
    n_down = max(0, int(math.floor(math.log2(cfg.cell / cfg.cell_features))))
    layers: list[nn.Module] = []
    cin = 3
    for i in range(max(n_down, 1)):
        cout = cfg.channels if i == 0 else 2 * cfg.channels
        layers += [nn.Conv2d(cin, cout, 3, stride=2 if i < n_down else 1, padding=1), nn.ReLU(inplace=True)]
        cin = cout
    layers.append(nn.AdaptiveAvgPool2d(out_side))
    return nn.Sequential(*layers), cin


def _head(linear: nn.Linear, std: float) -> nn.Linear:
    """Small-init output layer (cleanrl's layer_init: 0.01 for logits, 1 for values)."""
    nn.init.orthogonal_(linear.weight, std)
    nn.init.zeros_(linear.bias)
    return linear


class _PaperTrunk(nn.Module):
    """§5.2.1: CNN over the tiled video and CNN over the target, concatenated (with a one-hot of t), then FC.

    The FC input is G²·s²·C' + s²·C' + T (s = cell_features): it grows with T.
    """

    def __init__(self, cfg: PolicyConfig, num_frames: int) -> None:
        super().__init__()
        self.num_frames, self.cell = num_frames, cfg.cell
        self.grid = grid_side(num_frames)
        s = cfg.cell_features
        self.video_cnn, cv = _cnn(cfg, self.grid * s)
        self.target_cnn, ct = _cnn(cfg, s)
        in_features = cv * (self.grid * s) ** 2 + ct * s * s + num_frames
        self.fc = nn.Sequential(
            nn.Linear(in_features, cfg.hidden),
            nn.ReLU(inplace=True),
            nn.Linear(cfg.hidden, cfg.hidden),
            nn.ReLU(),
        )

    def forward(self, obs: PolicyObs) -> Tensor:
        B, side, c = obs.video.shape[0], self.grid * self.cell, self.cell
        if obs.video.shape[1:] != (3, side, side) or obs.target.shape != (B, 3, c, c):
            raise ValueError(
                f"observation for T={self.num_frames}, cell={c} must be tiles (B, 3, {side}, {side}) and target "
                f"(B, 3, {c}, {c}); got {tuple(obs.video.shape)} and {tuple(obs.target.shape)}"
            )
        _check_t(obs.t, self.num_frames, B)
        v = self.video_cnn(obs.video).flatten(1)  # (B, C'·(G·s)²)
        x = self.target_cnn(obs.target).flatten(1)  # (B, C'·s²)
        onehot = F.one_hot(obs.t, self.num_frames).to(v.dtype)  # (B, T)
        return self.fc(torch.cat([v, x, onehot], dim=1))  # (B, hidden)


class Actor(nn.Module):
    """Paper policy π (§5.2.1): T-1 logits over candidate frames, returned over frame indices (B, T)."""

    def __init__(self, cfg: PolicyConfig, num_frames: int) -> None:
        super().__init__()
        self.num_frames, self.cell = num_frames, cfg.cell
        self.trunk = _PaperTrunk(cfg, num_frames)
        self.policy_head = _head(nn.Linear(cfg.hidden, num_frames - 1), 0.01)  # one logit per candidate slot
        self.aux_value_head = _head(nn.Linear(cfg.hidden, 1), 1.0)

    def forward(
        self,
        video: Tensor | PolicyObs,
        target: Tensor | None = None,
        t: Tensor | None = None,
        num_frames: int | None = None,
    ) -> ActorOutput:
        """``actor(obs)`` or ``actor(video, target, t)`` -> ActorOutput(logits (B, T), aux_value (B,))."""
        obs = as_obs(video, target, t)
        if num_frames is not None and num_frames != self.num_frames:
            raise ValueError(
                f"this paper Actor was built for T={self.num_frames}, not {num_frames}; use kind=pointer"
            )
        h = self.trunk(obs)  # (B, hidden)
        logits = expand_candidate_logits(self.policy_head(h), obs.t)  # (B, T-1) -> (B, T)
        return ActorOutput(logits=logits, aux_value=self.aux_value_head(h).squeeze(1))


class Critic(nn.Module):
    """Paper critic V (§5.2.2): the actor's design with its own parameters and a scalar output (B,)."""

    def __init__(self, cfg: PolicyConfig, num_frames: int) -> None:
        super().__init__()
        self.num_frames, self.cell = num_frames, cfg.cell
        self.trunk = _PaperTrunk(cfg, num_frames)
        self.value_head = _head(nn.Linear(cfg.hidden, 1), 1.0)

    def forward(
        self,
        video: Tensor | PolicyObs,
        target: Tensor | None = None,
        t: Tensor | None = None,
        num_frames: int | None = None,
    ) -> Tensor:
        """``critic(obs)`` or ``critic(video, target, t)`` -> value (B,)."""
        obs = as_obs(video, target, t)
        if num_frames is not None and num_frames != self.num_frames:
            raise ValueError(
                f"this paper Critic was built for T={self.num_frames}, not {num_frames}; use kind=pointer"
            )
        return self.value_head(self.trunk(obs)).squeeze(1)  # (B,)


class _CellEncoder(nn.Module):
    """Small CNN: one c x c frame (N, 3, c, c) -> embedding (N, D)."""

    def __init__(self, cfg: PolicyConfig) -> None:
        super().__init__()
        s = cfg.cell_features
        self.cnn, co = _cnn(cfg, s)
        self.proj = nn.Sequential(nn.Flatten(), nn.Linear(co * s * s, cfg.embed), nn.LayerNorm(cfg.embed))

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(self.cnn(x))  # (N, D)


#: Intensity below which a low-res pixel counts as a hole (holes are blanked to 0 before tiling).
HOLE_LEVEL = 0.5 / 255


def match_cues(frames: Tensor, target: Tensor) -> Tensor:
    """Per-candidate cues read off the low-res observation: (B, T, 3, c, c), (B, 3, c, c) -> (B, T, 3).

    With ``v`` = 1 where a low-res pixel shows content (max channel > HOLE_LEVEL; holes are blanked)
    and ``h_t = 1 − v_t`` the target's holes:

    * coverage ``Σ h_t v_i / Σ h_t`` (1 when the target has no hole): how much of the target's holes
      frame i shows;
    * ``log(1e-4 + Σ v_t v_i ‖x_t − x_i‖² / (3 Σ v_t v_i))``: how alike the two frames are where both
      are seen (camera and object motion make distant frames differ);
    * the visible fraction of frame i.

    These are what the copy expert trades off (see :func:`rovr.conditioning.copy_pair_costs`); fed to
    the pointer's scorer they let a small policy generalise from few training videos. O(T c²).
    """
    v = (frames.amax(dim=2) > HOLE_LEVEL).to(frames.dtype)  # (B, T, c, c)
    vt = (target.amax(dim=1) > HOLE_LEVEL).to(frames.dtype)[:, None]  # (B, 1, c, c)
    ht = 1.0 - vt
    hole_area = ht.sum(dim=(2, 3))  # (B, 1)
    cov = torch.where(
        hole_area > 0, (ht * v).sum(dim=(2, 3)) / hole_area.clamp(min=1), torch.ones_like(hole_area)
    )
    both = v * vt  # (B, T, c, c)
    sq = ((frames - target[:, None]) ** 2).sum(dim=2)  # (B, T, c, c)
    mse = (both * sq).sum(dim=(2, 3)) / (3.0 * both.sum(dim=(2, 3))).clamp(min=1.0)
    return torch.stack([cov.expand_as(mse), torch.log(1e-4 + mse), v.mean(dim=(2, 3))], dim=2)


#: Above this many frames the pointer drops its pair term (O(T²) memory) and samples Plackett–Luce.
PAIRWISE_MAX_T = 256


def pair_cues(frames: Tensor, target: Tensor) -> Tensor:
    """Pairwise cues from low-res hole overlap: (B, T, 3, c, c), (B, 3, c, c) -> (B, T, T, 2).

    ``cov2[a, b]``: the fraction of the target's (low-res) holes that frame a or b shows,
    ``1 − Σ h_t (1 − v_a)(1 − v_b) / Σ h_t``; and the gain of the pair over its better frame,
    ``cov2[a, b] − max(cov_a, cov_b)`` — large for complementary frames. Symmetric in (a, b).
    """
    v = (frames.amax(dim=2) > HOLE_LEVEL).to(frames.dtype).flatten(2)  # (B, T, c²)
    ht = (target.amax(dim=1) <= HOLE_LEVEL).to(frames.dtype).flatten(1)[:, None]  # (B, 1, c²)
    area = ht.sum(dim=2, keepdim=True)  # (B, 1, 1)
    hid = (1.0 - v) * ht  # (B, T, c²): target holes that frame a does not show
    both = hid @ (1.0 - v).transpose(1, 2)  # (B, T, T): ... nor frame b
    one = torch.where(area > 0, 1.0 - hid.sum(dim=2, keepdim=True) / area.clamp(min=1), torch.ones_like(area))
    cov2 = torch.where(area > 0, 1.0 - both / area.clamp(min=1), torch.ones_like(both))
    gain = cov2 - torch.maximum(one, one.transpose(1, 2))  # (B, T, T)
    return torch.stack([cov2, gain], dim=3)


def _t_features(t: Tensor, num_frames: int, dtype: torch.dtype) -> Tensor:
    """(B,) -> (B, 2): position of the target, t/T, and log(1 + steps left) (rewards-to-go scale, γ = 1)."""
    tf = t.to(dtype)
    return torch.stack([tf / num_frames, torch.log1p(num_frames - 1 - tf)], dim=1)


class _NoEmbedding(nn.Module):
    """``policy.embed = 0``: (N, 3, c, c) -> an empty (N, 0) embedding."""

    def forward(self, x: Tensor) -> Tensor:
        return x.new_zeros(x.shape[0], 0)


class _PointerBase(nn.Module):
    """Per-frame embeddings shared by the pointer actor and critic (each owns its own copy)."""

    def __init__(self, cfg: PolicyConfig, num_frames: int) -> None:
        super().__init__()
        self.num_frames, self.cell = num_frames, cfg.cell
        self.frame_encoder: nn.Module = _CellEncoder(cfg) if cfg.embed else _NoEmbedding()
        self.target_encoder: nn.Module = _CellEncoder(cfg) if cfg.embed else _NoEmbedding()

    def embed_frames(self, frames: Tensor) -> Tensor:
        """Embed every frame once: (B, T, 3, c, c) -> (B, T, D)."""
        B, T = frames.shape[:2]
        return self.frame_encoder(frames.flatten(0, 1)).view(B, T, -1)

    def update_frame(self, emb: Tensor, frames: Tensor, idx: int | Tensor) -> Tensor:
        """Re-embed the one changed frame ``idx`` ((B,) long or int) of ``frames`` (B, T, 3, c, c).

        Returns a new (B, T, D) tensor equal to ``embed_frames(frames)`` when only frame idx changed.
        """
        B = frames.shape[0]
        rows = torch.arange(B, device=frames.device)
        col = torch.as_tensor(idx, device=frames.device, dtype=torch.long).expand(B)  # (B,)
        new = self.frame_encoder(frames[rows, col])  # (B, D)
        return emb.index_put((rows, col), new.to(emb.dtype))

    def _frames(self, obs: PolicyObs, num_frames: int) -> Tensor:
        """Checked observation -> the low-res frames (B, T, 3, c, c)."""
        B, c = obs.video.shape[0], self.cell
        if obs.target.shape != (B, 3, c, c):
            raise ValueError(f"target must be (B, 3, {c}, {c}); got {tuple(obs.target.shape)}")
        side = grid_side(num_frames) * c
        if obs.video.shape[1:] != (3, side, side):
            raise ValueError(
                f"tiled video for T={num_frames}, cell={c} must be (B, 3, {side}, {side}); got {tuple(obs.video.shape)}"
            )
        _check_t(obs.t, num_frames, B)
        return untile(obs.video, num_frames, c)


class PointerActor(_PointerBase):
    """Length-agnostic policy: score(i) = MLP([e_i, e_t, e_i*e_t, pos(i, t, T), cues(i, t)]), logits (B, T).

    ``embed_frames`` once per episode, ``update_frame`` after each reconstructed frame, ``logits`` per
    step: O(T·D·hidden) per step, no term in T² and no parameter that depends on T. ``forward(obs)``
    has the :class:`Actor` signature (it untiles the grid; ``num_frames`` defaults to the T it was
    built for). The cues (:func:`match_cues`) compare each frame with the target pixel by pixel at
    low resolution, which global embeddings learned from a few videos do poorly.
    """

    NUM_POS = 4
    NUM_CUES = 3

    def __init__(self, cfg: PolicyConfig, num_frames: int) -> None:
        super().__init__(cfg, num_frames)
        D = cfg.embed
        self.score = nn.Sequential(
            nn.Linear(3 * D + self.NUM_POS + self.NUM_CUES, cfg.hidden),
            nn.ReLU(inplace=True),
            nn.Linear(cfg.hidden, cfg.hidden),
            nn.ReLU(inplace=True),
            _head(nn.Linear(cfg.hidden, 1), 0.01),
        )
        self.aux_value_head = nn.Sequential(
            nn.Linear(2 * D + 2, cfg.hidden), nn.ReLU(inplace=True), _head(nn.Linear(cfg.hidden, 1), 1.0)
        )
        # pair term g_ab = MLP(pair_cues): starts near 0, i.e. near Plackett–Luce. No output bias: a
        # constant g cancels in the second draw's softmax.
        self.pair: nn.Sequential | None = None
        if cfg.pairwise:
            out = nn.Linear(16, 1, bias=False)
            nn.init.orthogonal_(out.weight, 0.01)
            self.pair = nn.Sequential(nn.Linear(2, 16), nn.ReLU(inplace=True), out)

    def pair_bias(self, frames: Tensor, target: Tensor) -> Tensor | None:
        """g (B, T, T) from :func:`pair_cues`, or None (no pair term, or T > PAIRWISE_MAX_T)."""
        if self.pair is None or frames.shape[1] > PAIRWISE_MAX_T:
            return None
        return self.pair(pair_cues(frames, target)).squeeze(3)

    @staticmethod
    def _positions(t: Tensor, num_frames: int, dtype: torch.dtype) -> Tensor:
        """(B,) -> (B, T, 4): (i-t)/T, i/T, t/T, 1/(1+|i-t|) — meaningful for any T."""
        i = torch.arange(num_frames, device=t.device, dtype=dtype)[None, :]  # (1, T)
        tf = t.to(dtype)[:, None]  # (B, 1)
        d = i - tf  # (B, T)
        return torch.stack(
            [
                d / num_frames,
                (i / num_frames).expand_as(d),
                (tf / num_frames).expand_as(d),
                1.0 / (1.0 + d.abs()),
            ],
            dim=2,
        )

    def _scores(self, emb: Tensor, e_t: Tensor, t: Tensor, cues: Tensor) -> Tensor:
        B, T, _ = emb.shape
        et = e_t[:, None, :].expand_as(emb)  # (B, T, D)
        pos = self._positions(t, T, emb.dtype)
        feats = torch.cat([emb, et, emb * et, pos, cues.to(emb.dtype)], dim=2)  # (B, T, 3D+4+3)
        scores = self.score(feats).squeeze(2)  # (B, T)
        return scores.masked_fill(torch.arange(T, device=t.device)[None, :] == t[:, None], -math.inf)

    def logits(self, emb: Tensor, target: Tensor, t: Tensor, frames: Tensor) -> Tensor:
        """emb (B, T, D) from embed_frames/update_frame, target (B, 3, c, c), t (B,), and the low-res
        frames (B, T, 3, c, c) the embeddings were computed from -> logits (B, T). The pair term is
        separate (:meth:`pair_bias`), as in :meth:`forward`."""
        _check_t(t, emb.shape[1], emb.shape[0])
        return self._scores(emb, self.target_encoder(target), t, match_cues(frames, target))

    def forward(
        self,
        video: Tensor | PolicyObs,
        target: Tensor | None = None,
        t: Tensor | None = None,
        num_frames: int | None = None,
    ) -> ActorOutput:
        """Drop-in for :meth:`Actor.forward`; ``num_frames`` defaults to the T this actor was built for."""
        obs = as_obs(video, target, t)
        T = num_frames or self.num_frames
        frames = self._frames(obs, T)
        emb, e_t = self.embed_frames(frames), self.target_encoder(obs.target)  # (B, T, D), (B, D)
        aux_in = torch.cat([emb.mean(dim=1), e_t, _t_features(obs.t, T, emb.dtype)], dim=1)  # (B, 2D+2)
        cues = match_cues(frames, obs.target)
        return ActorOutput(
            logits=self._scores(emb, e_t, obs.t, cues),
            aux_value=self.aux_value_head(aux_in).squeeze(1),
            pair_bias=self.pair_bias(frames, obs.target),
        )


class PointerCritic(_PointerBase):
    """Length-agnostic critic: MLP([mean_i e_i, e_t, t/T, log(1 + T-1-t), mean_i cues_i, max_i cues_i]) -> (B,)."""

    def __init__(self, cfg: PolicyConfig, num_frames: int) -> None:
        super().__init__(cfg, num_frames)
        D = cfg.embed
        self.value_head = nn.Sequential(
            nn.Linear(2 * D + 2 + 2 * PointerActor.NUM_CUES, cfg.hidden),
            nn.ReLU(inplace=True),
            nn.Linear(cfg.hidden, cfg.hidden),
            nn.ReLU(inplace=True),
            _head(nn.Linear(cfg.hidden, 1), 1.0),
        )

    def _value(self, emb: Tensor, e_t: Tensor, t: Tensor, cues: Tensor) -> Tensor:
        T = emb.shape[1]
        other = (torch.arange(T, device=t.device)[None, :] != t[:, None])[:, :, None]  # (B, T, 1)
        mean_cue = (cues * other).sum(dim=1) / (T - 1)
        max_cue = cues.masked_fill(~other, -math.inf).amax(dim=1)
        x = torch.cat([emb.mean(dim=1), e_t, _t_features(t, T, emb.dtype), mean_cue, max_cue], dim=1)
        return self.value_head(x).squeeze(1)  # (B,)

    def value(self, emb: Tensor, target: Tensor, t: Tensor, frames: Tensor) -> Tensor:
        """emb (B, T, D), target (B, 3, c, c), t (B,), low-res frames (B, T, 3, c, c) -> value (B,)."""
        _check_t(t, emb.shape[1], emb.shape[0])
        return self._value(emb, self.target_encoder(target), t, match_cues(frames, target))

    def forward(
        self,
        video: Tensor | PolicyObs,
        target: Tensor | None = None,
        t: Tensor | None = None,
        num_frames: int | None = None,
    ) -> Tensor:
        """Drop-in for :meth:`Critic.forward`; ``num_frames`` defaults to the T this critic was built for."""
        obs = as_obs(video, target, t)
        T = num_frames or self.num_frames
        frames = self._frames(obs, T)
        emb, e_t = self.embed_frames(frames), self.target_encoder(obs.target)
        return self._value(emb, e_t, obs.t, match_cues(frames, obs.target).to(emb.dtype))


ActorNet = Actor | PointerActor
CriticNet = Critic | PointerCritic


def build_actor(cfg: PolicyConfig, num_frames: int) -> ActorNet:
    """The policy named by ``cfg.kind`` for videos of ``num_frames`` frames (the pointer also serves other T)."""
    if num_frames < 3:
        raise ValueError(f"a policy needs T >= 3 frames (a target and two candidates); got {num_frames}")
    return PointerActor(cfg, num_frames) if cfg.kind == "pointer" else Actor(cfg, num_frames)


def build_critic(cfg: PolicyConfig, num_frames: int) -> CriticNet:
    """The critic matching :func:`build_actor` (separate parameters, PPG)."""
    if num_frames < 3:
        raise ValueError(f"a critic needs T >= 3 frames; got {num_frames}")
    return PointerCritic(cfg, num_frames) if cfg.kind == "pointer" else Critic(cfg, num_frames)

"""Per-step selection cost of the paper Actor vs the PointerActor as T grows; prints a Markdown table.

    .venv/bin/python benchmarks/bench_policy.py [--frames 20 100 500 2000] [--threads 1] [--max-params 1e9]

One "step" is what the reconstruction loop pays to choose a pair for target t, batch 1:

- paper Actor (§5.2.1): ``forward(obs)`` on the whole tiled video (G = ceil(sqrt(T)) cells a side) plus
  Gumbel top-2. Its FC input, and so its parameter count, grows with T; an Actor above ``--max-params``
  is only counted (on the meta device), not built (T = 2000: 532M parameters, ~3.3 GB peak RSS).
- PointerActor, incremental: ``update_frame`` (re-embed the one frame reconstructed last step) +
  ``logits`` (score T candidates) + Gumbel top-2 — what an episode pays per step.
- PointerActor, full: ``forward(obs)`` (untile and embed all T frames) — what a PPG minibatch pays per state.

"episode" = T steps (derived, not measured): with a per-step cost linear in T, both are O(T²) per
episode; the pointer's constant is far smaller and its parameter count does not depend on T.

Times are the median of ``--repeats`` calls after one warm-up, under ``torch.inference_mode``.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable

import torch

from rovr.data.encoding import grid_side, tile
from rovr.models.policy import Actor, PointerActor, PolicyConfig, PolicyObs, sample_pair


def median_ms(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time of ``repeats`` calls after one warm-up, in milliseconds."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def fmt_params(n: int) -> str:
    return f"{n / 1e6:.1f}M"


def observation(T: int, cell: int) -> tuple[PolicyObs, torch.Tensor]:
    """A random state for target t = T // 2: (PolicyObs, frames (1, T, 3, c, c))."""
    frames = torch.rand(1, T, 3, cell, cell)  # (1, T, 3, c, c)
    obs = PolicyObs(video=tile(frames, cell), target=frames[:, T // 2].clone(), t=torch.tensor([T // 2]))
    return obs, frames


@torch.inference_mode()
def bench_row(cfg: PolicyConfig, T: int, repeats: int, max_params: float) -> str:
    """One Markdown table row for T frames."""
    G, c, tau = grid_side(T), cfg.cell, cfg.tau
    obs, frames = observation(T, c)

    with torch.device("meta"):
        paper_params = n_params(Actor(cfg, T))
    if paper_params <= max_params:
        actor = Actor(cfg, T).eval()
        ms = median_ms(lambda: sample_pair(actor(obs).logits, tau), repeats)
        paper_ms, paper_ep = f"{ms:.1f}", f"{ms * T / 1e3:.2f}"
        del actor
    else:
        paper_ms, paper_ep = f"not built (> {max_params / 1e6:.0f}M params)", "-"

    pointer = PointerActor(cfg, T).eval()
    emb = pointer.embed_frames(frames)  # (1, T, D), once per episode

    def pointer_step() -> object:
        e = pointer.update_frame(emb, frames, obs.t - 1)  # the frame reconstructed last step
        return sample_pair(pointer.logits(e, obs.target, obs.t, frames), tau)

    step_ms = median_ms(pointer_step, repeats)
    full_ms = median_ms(lambda: pointer(obs), repeats)
    return (
        f"| {T} | {G}x{G} ({G * c}x{G * c} px) | {fmt_params(paper_params)} | {paper_ms} | {paper_ep} "
        f"| {fmt_params(n_params(pointer))} | {step_ms:.2f} | {step_ms * T / 1e3:.2f} | {full_ms:.1f} |"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, nargs="+", default=[20, 100, 500, 2000])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument(
        "--max-params", type=float, default=1e9, help="do not build paper Actors larger than this"
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = PolicyConfig()
    rows = [bench_row(cfg, T, args.repeats, args.max_params) for T in args.frames]

    print(
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}, {torch.get_num_threads()} thread(s); "
        f"PolicyConfig defaults (cell={cfg.cell}, channels={cfg.channels}, hidden={cfg.hidden}, "
        f"cell_features={cfg.cell_features}, embed={cfg.embed}); batch 1, median of {args.repeats}\n"
    )
    print(
        "| T | tile grid | paper Actor params | paper Actor step (ms) | paper episode (s) | pointer params "
        "| pointer step, incremental (ms) | pointer episode (s) | pointer forward(obs), all frames (ms) |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    print("\n".join(rows))


if __name__ == "__main__":
    main()

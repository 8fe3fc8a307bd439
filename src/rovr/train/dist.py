"""torchrun helpers: rank, world size, all-reduce, rank-0 I/O.

Run the same trainer with ``torchrun --nproc_per_node=N -m rovr.cli train-policy ...``: each rank
collects its own rollouts with its own seed, gradients and statistics are averaged across ranks
(gloo on CPU, NCCL on CUDA), and rank 0 alone writes checkpoints and logs. Without torchrun every
helper here is a no-op, so single-process code pays nothing. Training code holds the unwrapped
models (no DistributedDataParallel, no ``.module``): it calls :func:`allreduce_gradients` between
``backward()`` and ``step()``.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch
import torch.distributed as dist

from rovr.errors import RovrError


def is_distributed() -> bool:
    """True inside an initialised process group of more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def env_rank() -> int:
    """This process's rank as torchrun set it (``RANK``; 0 outside torchrun): known before the process
    group is joined and after it is left, unlike :func:`rank`."""
    return int(os.environ.get("RANK", "0"))


def is_main() -> bool:
    """Rank 0: the only rank that writes checkpoints, logs and progress bars."""
    return rank() == 0


def launched() -> bool:
    """True in a process torchrun started as one of several (before or after the group is joined)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_from_env(device: torch.device) -> None:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1); otherwise do nothing."""
    if not launched() or dist.is_initialized():
        return
    missing = [v for v in ("RANK", "MASTER_ADDR", "MASTER_PORT") if v not in os.environ]  # env:// needs these
    if missing:  # a WORLD_SIZE left in the environment (a scheduler's), not torchrun's
        raise RovrError(
            f"WORLD_SIZE={os.environ['WORLD_SIZE']} is set but {', '.join(missing)} "
            f"{'is' if len(missing) == 1 else 'are'} not; start several processes with torchrun, or "
            "unset WORLD_SIZE for one"
        )
    if device.type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    # the rendezvous blocks in C, where Python's signal handlers cannot run: a rank waiting for ranks
    # that never come ignored Ctrl-C and SIGTERM. Until it returns, they end the process at once
    # (nothing is trained or written yet).
    main_thread = threading.current_thread() is threading.main_thread()
    signals = [signal.SIGINT, signal.SIGTERM] + ([signal.SIGHUP] if hasattr(signal, "SIGHUP") else [])
    saved = {sig: signal.signal(sig, signal.SIG_DFL) for sig in signals} if main_thread else {}
    try:
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if is_distributed():
        dist.barrier()


@contextmanager
def main_first() -> Iterator[None]:
    """Rank 0 runs the block first (e.g. downloads weights into a shared cache), then the others."""
    if not is_main():
        barrier()
    try:
        yield
    finally:
        if is_main():
            barrier()


def broadcast_module(module: torch.nn.Module) -> None:
    """Make every rank hold rank 0's parameters and buffers."""
    if not is_distributed():
        return
    for t in module.state_dict().values():
        dist.broadcast(t, src=0)


def _flat_allreduce_mean(tensors: list[torch.Tensor]) -> None:
    """Average ``tensors`` over ranks in place with one collective (all on one device and dtype)."""
    flat = torch.cat([t.reshape(-1) for t in tensors])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat.div_(world_size())
    offset = 0
    for t in tensors:
        n = t.numel()
        t.copy_(flat[offset : offset + n].view_as(t))
        offset += n


def allreduce_gradients(params: Iterable[torch.nn.Parameter]) -> None:
    """Average gradients across ranks (call between ``backward()`` and ``step()``).

    Parameters without a gradient are skipped; every rank runs the same graph, so the set agrees.
    """
    if not is_distributed():
        return
    grads = [p.grad for p in params if p.grad is not None]
    if grads:
        _flat_allreduce_mean(grads)


def any_rank(flag: bool) -> bool:
    """True on every rank when ``flag`` is True on any rank (a collective decision, e.g. to stop)."""
    if not is_distributed():
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def mean_scalars(scalars: dict[str, float]) -> dict[str, float]:
    """Average a dict of logged scalars over ranks (every rank must pass the same keys in the same order)."""
    if not is_distributed() or not scalars:
        return scalars
    t = torch.tensor(list(scalars.values()), dtype=torch.float64, device=_device())
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return dict(zip(scalars, (t / world_size()).tolist()))


def allreduce_sum(x: torch.Tensor) -> torch.Tensor:
    """Sum of ``x`` over ranks (a copy; ``x`` itself is left unchanged)."""
    y = x.detach().clone()
    if is_distributed():
        dist.all_reduce(y, op=dist.ReduceOp.SUM)
    return y


def global_mean_std(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and population std of all elements of ``x`` on all ranks together (0-d tensors)."""
    x = x.detach().double()
    stats = allreduce_sum(
        torch.stack([x.sum(), (x * x).sum(), torch.tensor(float(x.numel()), device=x.device)])
    )
    mean = stats[0] / stats[2]
    var = (stats[1] / stats[2] - mean * mean).clamp_min(0.0)
    return mean.float(), var.sqrt().float()


def _device() -> torch.device:
    """The device collectives of this backend run on (NCCL: the current GPU; gloo: the CPU)."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")

"""torchrun helpers: no-ops in one process, correct collectives on 2 gloo ranks, and PPG under torchrun
(identical parameters on every rank afterwards, different rollouts, rank 0 alone writes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as tdist
import torch.multiprocessing as mp
from safetensors.torch import load_file

from rovr.checkpoint import load_checkpoint
from rovr.train import dist
from rovr.train.common import read_metric_log

HERE = Path(__file__).resolve().parent


def test_single_process_helpers_are_no_ops() -> None:
    assert (dist.world_size(), dist.rank(), dist.is_main(), dist.is_distributed()) == (1, 0, True, False)
    assert dist.any_rank(True) and not dist.any_rank(False)
    assert dist.mean_scalars({"a": 1.5}) == {"a": 1.5}
    x = torch.tensor([1.0, 2.0, 4.0, 5.0])
    mean, std = dist.global_mean_std(x)
    assert mean.item() == pytest.approx(3.0) and std.item() == pytest.approx(x.std(unbiased=False).item())
    p = torch.nn.Parameter(torch.ones(2))
    p.grad = torch.tensor([3.0, 4.0])
    dist.allreduce_gradients([p])
    assert p.grad.tolist() == [3.0, 4.0]
    with dist.main_first():
        pass
    dist.barrier()


def _collectives(rank: int, world: int, init_file: str, out: str) -> None:
    tdist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    torch.manual_seed(rank)
    module = torch.nn.Linear(3, 2)  # different on every rank until broadcast
    dist.broadcast_module(module)
    p = torch.nn.Parameter(torch.zeros(2))
    q = torch.nn.Parameter(torch.zeros(1))  # no gradient: skipped
    p.grad = torch.tensor([1.0, 2.0]) * (rank + 1)
    dist.allreduce_gradients([p, q])
    x = torch.arange(3, dtype=torch.float32) + 10 * rank  # rank 0: 0, 1, 2; rank 1: 10, 11, 12
    mean, std = dist.global_mean_std(x)
    result = {
        "weight": module.weight.tolist(),
        "grad": p.grad.tolist(),
        "q_grad": q.grad is None,
        "mean": mean.item(),
        "std": std.item(),
        "any": dist.any_rank(rank == 1),
        "none": dist.any_rank(False),
        "scalars": dist.mean_scalars({"a": float(rank), "b": 2.0}),
    }
    Path(out, f"{rank}.json").write_text(json.dumps(result))
    tdist.destroy_process_group()


def test_a_stray_world_size_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """WORLD_SIZE left by a scheduler without torchrun's other variables: torch's rendezvous raised a
    ValueError (a traceback), or, with RANK and MASTER_* set too, waited for ranks that never come."""
    from rovr.errors import RovrError

    monkeypatch.setenv("WORLD_SIZE", "2")
    for var in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(RovrError, match="WORLD_SIZE=2 is set but RANK, MASTER_ADDR, MASTER_PORT are not"):
        dist.init_from_env(torch.device("cpu"))
    assert not tdist.is_initialized()


def test_a_rank_waiting_for_ranks_that_never_come_can_be_stopped(tmp_path: Path) -> None:
    """WORLD_SIZE=2 with RANK/MASTER_* set but no second process: the rendezvous waited in C, where
    rovr's SIGTERM handler (the CLI's, as below) never ran, so only SIGKILL ended it."""
    import signal
    import socket
    import time

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    script = (
        "import signal, torch\n"
        "from rovr.train import dist\n"
        "def stop(*a): raise KeyboardInterrupt\n"
        "signal.signal(signal.SIGTERM, stop)\n"
        "print('waiting', flush=True)\n"
        "dist.init_from_env(torch.device('cpu'))\n"
    )
    env = {**os.environ, "WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0"}
    env |= {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    proc = subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "waiting"
        time.sleep(3)  # inside the rendezvous
        assert proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == -signal.SIGTERM
    finally:
        proc.kill()
        proc.wait()


def test_collectives_on_two_gloo_ranks(tmp_path: Path) -> None:
    mp.spawn(_collectives, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (json.loads((tmp_path / f"{r}.json").read_text()) for r in (0, 1))
    torch.manual_seed(0)
    assert (
        r0["weight"] == r1["weight"] == torch.nn.Linear(3, 2).weight.tolist()
    )  # rank 0's weights everywhere
    assert r0["grad"] == r1["grad"] == [1.5, 3.0]  # the mean of [1, 2] and [2, 4]
    assert r0["q_grad"] and r1["q_grad"]
    all_x = torch.tensor([0.0, 1.0, 2.0, 10.0, 11.0, 12.0])
    for r in (r0, r1):
        assert r["mean"] == pytest.approx(6.0) and r["std"] == pytest.approx(all_x.std(unbiased=False).item())
        assert r["any"] is True and r["none"] is False
        assert r["scalars"] == {"a": 0.5, "b": 2.0}


def test_ppg_under_torchrun_keeps_ranks_identical(tmp_path: Path) -> None:
    from test_ppg import TINY, make_run, tiny_config

    extra = ["ppg.iterations=4", "ppg.n_pi=2", "ppg.bc_coef=0.5"]  # the teacher term too (per-rank labels)
    overrides = [*TINY, *extra]
    cfg = tiny_config(*extra)
    run = make_run(tmp_path / "run", cfg)
    out = tmp_path / "dump"
    out.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(HERE.parent / "src")}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone"]
    res = subprocess.run(
        [*cmd, str(HERE / "dist_ppg_worker.py"), str(out), str(run.root), *overrides],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        check=False,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    info = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert info[0]["world_size"] == info[1]["world_size"] == 2
    assert info[0]["first_pairs"] != info[1]["first_pairs"]  # each rank collects its own episodes

    w0, w1 = load_file(str(out / "rank0.safetensors")), load_file(str(out / "rank1.safetensors"))
    assert w0.keys() == w1.keys()
    assert all(torch.equal(w0[k], w1[k]) for k in w0), "ranks drifted apart"
    start = load_checkpoint(run.policy("imitation"))[0]
    assert any(not torch.equal(w0[f"actor.{k}"], v) for k, v in start.items())  # and they did train
    final = load_checkpoint(run.policy("rovr_flow_warm"))[0]
    assert all(torch.equal(final[k], w0[f"actor.{k}"]) for k in final)

    # rank 0 alone writes: checkpoints, metric lines (one per iteration), TensorBoard files
    assert info[1]["writes"] == []
    assert info[0]["writes"] == ["resume_rovr_flow_warm.safetensors"] * 2 + [
        "policy_rovr_flow_warm.safetensors"
    ]
    rows = [r for r in read_metric_log(run.logs) if "charts/SPS" in r]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert all(r["losses/teacher_ce"] > 0 for r in rows)
    assert len(list(run.logs.rglob("events.out.tfevents.*"))) == 1  # rank 0's, in logs/ppg-rovr_flow_warm


def test_under_torchrun_only_train_policy_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`torchrun … rovr train` trained Γ and the imitation policy on every rank, each writing the same
    files; now a stage other than train-policy that is still to run is refused, before anything is written."""
    from rovr.errors import ConfigError
    from rovr.pipeline import check_stage_state
    from rovr.train.common import RunDir
    from test_ppg import make_run, tiny_config

    cfg = tiny_config()
    monkeypatch.setenv("WORLD_SIZE", "2")
    empty = RunDir(tmp_path / "empty")
    for stage in ("pretrain-local", "imitate"):
        with pytest.raises(
            ConfigError, match=f"only train-policy runs on several processes; {stage} is not done"
        ):
            check_stage_state(cfg, empty, stage, restart=False, alone=False)
    run = make_run(tmp_path / "run", cfg)  # Γ and imitation done: rovr train goes on to PPG
    assert not check_stage_state(cfg, run, "pretrain-local", restart=False, alone=False)
    assert not check_stage_state(cfg, run, "imitate", restart=False, alone=False)
    assert check_stage_state(cfg, run, "train-policy", restart=False, alone=False)
    assert not empty.root.exists()

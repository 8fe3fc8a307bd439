"""Run by tests/test_dist.py under torchrun: one PPG run on every rank, then each rank dumps what it holds.

    python -m torch.distributed.run --nproc_per_node=2 --standalone tests/dist_ppg_worker.py OUT RUN KEY=VALUE...

Writes ``OUT/rank<r>.safetensors`` (the actor and critic this rank ends with) and ``OUT/rank<r>.json``
(world size, the checkpoint files this rank wrote, the pairs of its first rollout). The production
code is used as is; only the checkpoint writers are wrapped here to record who called them.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from safetensors.torch import save_file

from rovr.config import load_config
from rovr.train import dist, ppg
from rovr.train.common import RunDir


def main() -> None:
    out, run = Path(sys.argv[1]), RunDir(Path(sys.argv[2]))
    cfg = load_config(None, sys.argv[3:])
    writes: list[str] = []

    def recording(fn: Any) -> Any:
        def wrapper(path: Path, *args: Any, **kwargs: Any) -> Any:
            writes.append(Path(path).name)
            return fn(path, *args, **kwargs)

        return wrapper

    ppg.save_checkpoint = recording(ppg.save_checkpoint)  # type: ignore[assignment]
    ppg.save_model = recording(ppg.save_model)  # type: ignore[assignment]
    trainer = ppg.Trainer(cfg, run, progress=False)
    rollouts: list[list[list[int]]] = []
    collect = trainer.learner.rollout

    def rollout(env: ppg.RolloutEnv) -> tuple[ppg.Batch, dict[str, float]]:
        batch, stats = collect(env)
        rollouts.append(batch.pairs.tolist())
        return batch, stats

    trainer.learner.rollout = rollout  # type: ignore[method-assign]
    trainer.train()
    r = dist.rank()
    tensors = {f"actor.{k}": v.contiguous() for k, v in trainer.learner.actor.state_dict().items()}
    tensors |= {f"critic.{k}": v.contiguous() for k, v in trainer.learner.critic.state_dict().items()}
    save_file(tensors, str(out / f"rank{r}.safetensors"))
    info = {"world_size": dist.world_size(), "writes": writes, "first_pairs": rollouts[0]}
    (out / f"rank{r}.json").write_text(json.dumps(info))
    dist.shutdown()


if __name__ == "__main__":
    main()

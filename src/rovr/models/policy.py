"""Policy π and critic V (paper §5.2.1–5.2.2) and the distribution over frame pairs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass
class PolicyConfig:
    kind: Literal["paper", "pointer"] = field(
        default="paper", metadata={"help": "'paper' (CNN over the tiled video, T-1 logits) or 'pointer' (any T)"}
    )
    cell: int = field(default=32, metadata={"help": "side of one frame in the tiled low-res encoding (Fig. 2)"})
    channels: int = field(default=32, metadata={"help": "width of the CNN trunks"})
    hidden: int = field(default=256, metadata={"help": "width of the fully connected layers"})
    tau: float = field(default=0.7, metadata={"help": "Gumbel-softmax temperature (paper: 0.7)"})

    def __post_init__(self) -> None:
        from rovr.config import check

        check(8 <= self.cell <= 256, "policy.cell", f"must be in [8, 256] (got {self.cell})")
        check(self.tau > 0, "policy.tau", f"must be > 0 (got {self.tau})")

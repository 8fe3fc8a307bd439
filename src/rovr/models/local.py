"""Local network Γ (paper §5.2.3): a UNet that rebuilds a target frame from conditioning frames."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class LocalNetConfig:
    base_channels: int = field(default=32, metadata={"help": "channels of the first UNet level (doubled per level)"})
    depth: int = field(default=3, metadata={"help": "number of down/up-sampling levels"})

    def __post_init__(self) -> None:
        from rovr.config import check

        check(4 <= self.base_channels <= 512, "local.base_channels", f"must be in [4, 512] (got {self.base_channels})")
        check(1 <= self.depth <= 6, "local.depth", f"must be in [1, 6] (got {self.depth})")

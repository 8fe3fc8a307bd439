"""The config system: overrides, type checks, range checks, unknown keys."""

from __future__ import annotations

import pytest

from rovr.config import load_config
from rovr.errors import ConfigError


def test_overrides_are_typed() -> None:
    cfg = load_config(None, ["ppg.iterations=3", "data.size=32", "ppg.flow_reward=false", "pretrain.lr=1e-3"])
    assert (cfg.ppg.iterations, cfg.data.size, cfg.ppg.flow_reward, cfg.pretrain.lr) == (3, 32, False, 1e-3)


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("data.frames=2", "data.frames"),
        ("pretrain.checkpoint_every=0", "pretrain.checkpoint_every"),
        ("pretrain.max_minutes=-1", "pretrain.max_minutes"),
        ("ppg.clip=1.5", "ppg.clip"),
        ("ppg.iterations=ten", "ppg.iterations"),
        ("ppg.bc_coef=-1", "ppg.bc_coef"),
        ("ppg.bc_decay=0", "ppg.bc_decay"),
        ("imitation.loss=mse", "imitation.loss"),
        ("data.bogus=1", "data.bogus"),
    ],
)
def test_bad_values_name_the_key(override: str, key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")) as e:
        load_config(None, [override])
    assert "\n" not in str(e.value)

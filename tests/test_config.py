"""The config system: overrides, type checks, range checks, unknown keys."""

from __future__ import annotations

from pathlib import Path

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
        ("seed=-1", "seed"),
        ("data.seed=-1", "data.seed"),
        ("data.source=", "data.source"),
        ("threads=-2", "threads"),
        ("device=cuda:abc", "device"),
        ("imitation.batch_size=0", "imitation.batch_size"),
        ("imitation.max_minutes=-1", "imitation.max_minutes"),
        ("ppg.minibatch=0", "ppg.minibatch"),
        ("ppg.e_pi=-1", "ppg.e_pi"),
        ("ppg.e_aux=-1", "ppg.e_aux"),
        ("ppg.max_minutes=-1", "ppg.max_minutes"),
        ("ppg.reward_scale=nan", "ppg.reward_scale"),
        ("ppg.flow_weight=inf", "ppg.flow_weight"),
        ("ppg.ent_coef=-0.1", "ppg.ent_coef"),
        ("pretrain.lambda_rate=nan", "pretrain.lambda_rate"),
        ("imitation.lr=.inf", "imitation.lr"),
    ],
)
def test_bad_values_name_the_key(override: str, key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")) as e:
        load_config(None, [override])
    assert "\n" not in str(e.value)


def test_a_data_folder_is_stored_resolved(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A relative --data is the folder it named when typed: a run folder read from elsewhere later
    still finds (and compares) the same folder."""
    monkeypatch.chdir(tmp_path)
    cfg = load_config(None, ["data.source=videos"])
    assert cfg.data.source == str(tmp_path / "videos")
    assert load_config(None, []).data.source == "synthetic"

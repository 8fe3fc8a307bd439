"""Checkpoints: round trips, atomicity, one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from rovr.checkpoint import (
    load_checkpoint,
    load_optimizer,
    load_state,
    optimizer_tensors,
    save_checkpoint,
    state_tensors,
)
from rovr.errors import CheckpointError


def test_round_trip_with_optimizer(tmp_path: Path) -> None:
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    ot, om = optimizer_tensors(opt)
    save_checkpoint(tmp_path / "c.safetensors", {**state_tensors(model, "m."), **ot}, {"step": 7, "opt": om})
    tensors, meta = load_checkpoint(tmp_path / "c.safetensors")
    model2 = torch.nn.Linear(3, 2)
    opt2 = torch.optim.Adam(model2.parameters(), lr=0.5)
    load_state(model2, tensors, "m.", "c")
    load_optimizer(opt2, tensors, meta["opt"])
    assert meta["step"] == 7 and torch.equal(model.weight, model2.weight)
    assert opt2.param_groups[0]["lr"] == 0.1
    s1, s2 = opt.state_dict()["state"][0], opt2.state_dict()["state"][0]
    assert torch.equal(s1["exp_avg"], s2["exp_avg"]) and float(s1["step"]) == float(s2["step"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.json", "c.safetensors"]


def test_nan_weights_never_replace_a_good_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "c.safetensors"
    save_checkpoint(path, {"w": torch.ones(2)}, {"step": 1})
    with pytest.raises(CheckpointError, match="NaN"):
        save_checkpoint(path, {"w": torch.tensor([1.0, float("nan")])}, {"step": 2})
    tensors, meta = load_checkpoint(path)
    assert meta["step"] == 1 and torch.equal(tensors["w"], torch.ones(2))


def test_truncated_and_missing_files_are_one_line_errors(tmp_path: Path) -> None:
    path = tmp_path / "c.safetensors"
    save_checkpoint(path, {"w": torch.ones(1000)}, {})
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="corrupt or truncated") as e:
        load_checkpoint(path)
    assert "\n" not in str(e.value)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.safetensors")


def test_architecture_mismatch(tmp_path: Path) -> None:
    save_checkpoint(tmp_path / "c.safetensors", state_tensors(torch.nn.Linear(3, 2), ""), {})
    tensors, _ = load_checkpoint(tmp_path / "c.safetensors")
    with pytest.raises(CheckpointError, match="another architecture"):
        load_state(torch.nn.Linear(4, 2), tensors, "", "c.safetensors")

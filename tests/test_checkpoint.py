"""Checkpoints: round trips, atomicity, one-line errors."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

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


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_a_full_disk_is_an_os_error_and_keeps_the_earlier_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ENOSPC while saving is an OSError (every command says it in one line: free some space), not
    safetensors' own error, which reached the user as a traceback; the earlier file stays whole."""
    import errno

    path = tmp_path / "local.safetensors"
    save_checkpoint(path, {"w": torch.ones(3)}, {"step": 1})

    def to_full_disk(self: Path, data: bytes) -> int:
        with open("/dev/full", "wb") as f:  # writes there fail with ENOSPC, as on a full disk
            return f.write(data)

    monkeypatch.setattr(Path, "write_bytes", to_full_disk)
    with pytest.raises(OSError) as err:
        save_checkpoint(path, {"w": torch.zeros(1 << 16)}, {"step": 2})
    assert err.value.errno == errno.ENOSPC
    monkeypatch.undo()
    tensors, meta = load_checkpoint(path)
    assert meta["step"] == 1 and torch.equal(tensors["w"], torch.ones(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["local.json", "local.safetensors"]


def test_truncated_and_missing_files_are_one_line_errors(tmp_path: Path) -> None:
    path = tmp_path / "c.safetensors"
    save_checkpoint(path, {"w": torch.ones(1000)}, {})
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="not a readable checkpoint.*corrupt or truncated") as e:
        load_checkpoint(path)
    assert "\n" not in str(e.value)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.safetensors")


def test_the_json_copy_names_its_weights_file(tmp_path: Path) -> None:
    save_checkpoint(tmp_path / "c.safetensors", {"w": torch.ones(2)}, {"step": 1})
    with pytest.raises(
        CheckpointError, match=r"c.json' is a copy of the metadata of .*c.safetensors'; pass that"
    ):
        load_checkpoint(tmp_path / "c.json")


def test_metadata_travels_inside_the_weights_file(tmp_path: Path) -> None:
    """The weights file holds its metadata, so a process killed between writing it and its .json
    (or a lost .json) still leaves a consistent checkpoint; the .json is a copy for people."""
    path = tmp_path / "c.safetensors"
    save_checkpoint(path, {"w": torch.ones(2)}, {"step": 1, "config": {"k": 2}})
    assert json.loads(path.with_suffix(".json").read_text()) == {"step": 1, "config": {"k": 2}}
    save_checkpoint(tmp_path / "new.safetensors", {"w": torch.zeros(2)}, {"step": 2})
    os.replace(tmp_path / "new.safetensors", path)  # killed after the weights, before the .json
    assert load_checkpoint(path)[1] == {"step": 2}
    path.with_suffix(".json").unlink()
    assert load_checkpoint(path)[1] == {"step": 2}
    # a checkpoint of an earlier version (no header) reads its .json; one that is not an object is refused
    save_file({"w": torch.ones(2)}, str(tmp_path / "old.safetensors"))
    (tmp_path / "old.json").write_text('{"step": 3}')
    assert load_checkpoint(tmp_path / "old.safetensors")[1] == {"step": 3}
    (tmp_path / "old.json").write_text("null")
    with pytest.raises(CheckpointError, match="not a JSON object"):
        load_checkpoint(tmp_path / "old.safetensors")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads anything")
def test_an_unreadable_checkpoint_is_not_called_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "c.safetensors"
    save_checkpoint(path, {"w": torch.ones(2)}, {})
    path.chmod(0)
    with pytest.raises(CheckpointError, match="check its permissions"):
        load_checkpoint(path)


def test_architecture_mismatch(tmp_path: Path) -> None:
    save_checkpoint(tmp_path / "c.safetensors", state_tensors(torch.nn.Linear(3, 2), ""), {})
    tensors, _ = load_checkpoint(tmp_path / "c.safetensors")
    with pytest.raises(CheckpointError, match="another architecture"):
        load_state(torch.nn.Linear(4, 2), tensors, "", "c.safetensors")

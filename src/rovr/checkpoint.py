"""Checkpoints: safetensors weights + JSON metadata, atomic writes, resume. Never unpickles."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file
from safetensors.torch import save as save_bytes

from rovr.errors import CheckpointError


def _atomic_replace(path: Path, write: Any) -> None:
    """Write through ``write(tmp_path)`` into a temp file beside ``path``, then rename over it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    try:
        write(Path(tmp))
        # mkstemp makes owner-only files (and a writer may make its own): results are meant to be shared
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that readers see the old or the new file, never half of one."""
    _atomic_replace(Path(path), lambda p: p.write_text(text))


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(Path(path), json.dumps(obj, indent=2, sort_keys=False) + "\n")


#: The key of the safetensors header that holds a checkpoint's metadata (JSON).
META_KEY = "rovr"


def save_checkpoint(path: str | Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Save ``tensors`` as ``path`` (.safetensors), atomically, with ``meta`` in its header (one file:
    weights and metadata can never disagree, whenever the process is killed), and ``meta`` again as
    ``path`` with .json, for people and tools to read.

    Non-finite weights are refused, so a diverged model never replaces a good checkpoint.
    """
    path = Path(path)
    for name, t in tensors.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise CheckpointError(
                f"refusing to save '{path}': tensor '{name}' holds NaN/inf (training diverged)"
            )
    flat = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    header = {META_KEY: json.dumps(meta)}
    # serialised here and written by Python: a full disk is an OSError (ENOSPC), which every command
    # reports in one line (safetensors' own writer raises its SafetensorError, shown as a traceback)
    _atomic_replace(path, lambda p: p.write_bytes(save_bytes(flat, metadata=header)))
    atomic_write_json(path.with_suffix(".json"), meta)


def fingerprint(path: str | Path) -> str:
    """A short digest of a checkpoint file's bytes: later stages record the one they were trained
    from, so a retrained earlier stage is noticed."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def read_meta(path: str | Path) -> dict[str, Any]:
    """The metadata of checkpoint ``path`` without loading its tensors (one-line errors)."""
    return _load(Path(path), tensors=False)[1]


def load_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Load (tensors, meta) saved by :func:`save_checkpoint`, with one-line errors."""
    return _load(Path(path), tensors=True)


def _load(path: Path, tensors: bool) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    meta_path = path.with_suffix(".json")
    weights_path = path.with_suffix(".safetensors")
    if path.suffix != ".safetensors" and weights_path.is_file():
        raise CheckpointError(
            f"'{path}' is a copy of the metadata of checkpoint '{weights_path}'; pass that file instead"
        )
    if not path.is_file():
        raise CheckpointError(
            f"checkpoint '{path}' does not exist; train that stage first or pass another path"
        )
    try:
        weights = load_file(str(path)) if tensors else {}
        with safe_open(str(path), "pt") as f:
            header = (f.metadata() or {}).get(META_KEY)
    except PermissionError as e:
        raise CheckpointError(
            f"cannot read checkpoint '{path}' ({e.strerror}); check its permissions"
        ) from None
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(
            f"'{path}' is not a readable checkpoint ({e}); if a rovr stage wrote it, it is corrupt or "
            "truncated: delete it and re-run that stage"
        ) from None
    source = path if header is not None else meta_path  # where the metadata is read from
    try:
        if header is not None:  # written with the weights, in one file
            meta = json.loads(header)
        else:  # checkpoints of earlier versions: the .json beside them
            meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise CheckpointError(
            f"checkpoint metadata of '{source}' is corrupt; delete the checkpoint and re-run"
        ) from None
    except OSError as e:
        raise CheckpointError(f"cannot read '{meta_path}' ({e.strerror}); check its permissions") from None
    if not isinstance(meta, dict):
        raise CheckpointError(
            f"checkpoint metadata of '{source}' is not a JSON object; delete the checkpoint and re-run"
        )
    return weights, meta


def load_state(
    module: torch.nn.Module, tensors: dict[str, torch.Tensor], prefix: str, source: str | Path
) -> None:
    """Load ``prefix``-ed entries of ``tensors`` into ``module``; a shape/key mismatch is a one-line error."""
    sd = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
    own = module.state_dict()
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    bad = [k for k in own if k in sd and tuple(sd[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or bad:
        what = (f"missing {missing[:3]}" if missing else "") + (
            f" unexpected {unexpected[:3]}" if unexpected else ""
        )
        what += f" shape mismatch in {bad[:3]}" if bad else ""
        raise CheckpointError(
            f"checkpoint '{source}' does not fit this model ({what.strip()}); it was made with another "
            "architecture config: use the config it was trained with or retrain"
        )
    module.load_state_dict(sd)


def state_tensors(module: torch.nn.Module, prefix: str) -> dict[str, torch.Tensor]:
    """The module's state dict with ``prefix`` added to every key."""
    return {prefix + k: v for k, v in module.state_dict().items()}


def optimizer_tensors(
    opt: torch.optim.Optimizer, prefix: str = "opt."
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimizer's state into tensors (for safetensors) and JSON-able metadata."""
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    state_meta: dict[str, dict[str, Any]] = {}
    for pid, st in sd["state"].items():
        for name, value in st.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{prefix}{pid}.{name}"] = value
            else:
                state_meta.setdefault(str(pid), {})[name] = value
    return tensors, {
        "param_groups": sd["param_groups"],
        "scalars": state_meta,
        "ids": [str(p) for p in sd["state"]],
    }


def load_optimizer(
    opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict[str, Any], prefix: str = "opt."
) -> None:
    """Restore an optimizer saved with :func:`optimizer_tensors`."""
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith(prefix):
            pid, name = key[len(prefix) :].split(".", 1)
            state.setdefault(int(pid), {})[name] = value
    for pid, scalars in meta.get("scalars", {}).items():
        state.setdefault(int(pid), {}).update(scalars)
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})

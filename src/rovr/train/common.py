"""What the three training stages share: the run folder, seeding, devices, logging, model loading."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from rovr.checkpoint import (
    load_checkpoint,
    load_optimizer,
    load_state,
    optimizer_tensors,
    read_meta,
    save_checkpoint,
    state_tensors,
)
from rovr.config import RunConfig, as_recorded, config_from_dict, save_config, to_dict
from rovr.data.clips import ClipSet, spread
from rovr.data.corruption import Corrupted, corrupt
from rovr.data.sources import check_source
from rovr.errors import CheckpointError, ConfigError, RovrError

if TYPE_CHECKING:
    from rovr.conditioning import PolicyChooser
    from rovr.models.local import LocalNet

log = logging.getLogger(__name__)

#: Config sections that must match between the stages of one run (the models' shapes).
ARCH_KEYS = ("k", "local", "policy", "data.frames")
#: The sections that shape Γ alone: a Γ checkpoint serves any policy config (a new policy
#: architecture trained on an existing Γ needs no new stage 1).
LOCAL_ARCH_KEYS = ("k", "local")


#: The PPG policies a full run trains (the paper's three ablations), in Table 2's order.
PPG_POLICIES = ("rovr_flow_warm", "rovr_flow_cold", "rovr_noflow_warm")
#: Table 2's same-Γ control row: the imitation policy run with the Γ a PPG run trained alongside its
#: policy (``ppg.train_local``, §6.3); beside that policy's row it tells the policy's gain from Γ's.
SAME_LOCAL_CONTROL = "imitation_tuned_local"


@dataclass
class RunDir:
    """The files of one run: ``<root>/config.yaml``, stage checkpoints, logs, report."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def local(self) -> Path:
        """Γ after pretraining (stage 1)."""
        return self.root / "local.safetensors"

    def policy(self, name: str) -> Path:
        """A trained policy: ``imitation`` (stage 2) or ``rovr_*`` (stage 3)."""
        return self.root / f"policy_{name}.safetensors"

    def tuned_local(self, policy: str) -> Path:
        """Γ as a PPG run with ``ppg.train_local`` left it, trained alongside ``policy`` (§6.3)."""
        return self.root / f"local_{policy}.safetensors"

    def first_tuned(self, among: Sequence[str] = PPG_POLICIES) -> str | None:
        """The first policy of ``among`` whose PPG run left a tuned Γ here (``ppg.train_local``): the Γ
        Table 2's same-Γ control (:data:`SAME_LOCAL_CONTROL`) and ``rovr restore`` run."""
        return next((p for p in among if self.tuned_local(p).is_file()), None)

    def local_for(self, policy: str | None) -> Path:
        """The Γ that goes with ``policy``: its tuned copy if PPG trained one, else stage 1's."""
        tuned = self.tuned_local(policy) if policy else None
        return tuned if tuned is not None and tuned.is_file() else self.local

    def gamma_file(self, local: str | Path | None, policy: str | None = None) -> Path:
        """The Γ checkpoint to run: ``local`` — a file of this run folder by name
        (``local_rovr_flow_warm.safetensors``) first, else a path as given — or, without it,
        :meth:`local_for` ``policy``; a ``local`` that is neither is refused in one line."""
        if local is None:
            return self.local_for(policy)
        path = (self.root / local if (self.root / local).is_file() else Path(local).expanduser()).resolve()
        if not path.is_file():
            raise RovrError(
                f"--local '{local}' is neither a file nor a file of run folder '{self.root}'; "
                "pass a Γ checkpoint such as local_rovr_flow_warm.safetensors"
            )
        why = ""
        if path.suffix != ".safetensors":
            why = "is not a checkpoint (.safetensors)"
        elif path.name.startswith("resume_"):
            why = "is an in-progress (resume) checkpoint"
        else:
            meta = read_meta(path)  # a damaged file: its own one-line error
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as f:
                is_policy = any("aux_value_head" in k or "policy_head" in k for k in f.keys())  # noqa: SIM118
            if is_policy or "policy" in meta:
                why = "is a policy checkpoint"
        if why:
            raise RovrError(
                f"--local '{local}' {why}, not a Γ; pass local.safetensors (stage 1's) or a "
                "local_<policy>.safetensors a PPG run tuned"
            )
        return path

    def resume(self, stage: str) -> Path:
        """Last in-progress checkpoint of a stage (deleted when the stage completes)."""
        return self.root / f"resume_{stage}.safetensors"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def splits(self) -> Path:
        """The train/val/test videos Γ was trained with (``rovr evaluate`` checks its test split)."""
        return self.root / "splits.json"


def flat_config(node: Any, prefix: str) -> dict[str, Any]:
    """A config (sub)dict as ``{"prefix.section.key": value}``, for naming what two configs differ in."""
    if not isinstance(node, dict):
        return {prefix: node}
    return {k: v for key, sub in node.items() for k, v in flat_config(sub, f"{prefix}.{key}").items()}


def _arch(cfg_dict: dict[str, Any], keys: tuple[str, ...] = ARCH_KEYS) -> dict[str, Any]:
    out = {}
    for key in keys:
        node: Any = cfg_dict
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        out[key] = node
    return out


def saved_config(meta: dict[str, Any], source: Path) -> dict[str, Any]:
    """The config a checkpoint was trained with (its metadata ``meta``), fields added since taking
    their defaults as in a config file; one line if it records none."""
    saved = meta.get("config")
    if not isinstance(saved, dict):
        raise CheckpointError(f"checkpoint '{source}' has no config metadata; it was not written by rovr")
    try:
        return to_dict(config_from_dict(saved))
    except ConfigError:
        return as_recorded(saved)


def mdp_of(checkpoint: Path) -> str | None:
    """The ``condition_on`` a checkpoint was trained with (None if its metadata cannot be read)."""
    from rovr.checkpoint import read_meta

    try:
        return str(saved_config(read_meta(checkpoint), checkpoint).get("condition_on"))
    except RovrError:
        return None


def check_same_architecture(
    cfg: RunConfig, meta: dict[str, Any], source: Path, keys: tuple[str, ...] = ARCH_KEYS
) -> None:
    """Refuse a checkpoint whose model-shaping config (``keys``) differs from ``cfg`` (one line, names them)."""
    saved = saved_config(meta, source)
    mine, theirs = _arch(to_dict(cfg), keys), _arch(saved, keys)
    diff = [k for k in keys if mine[k] != theirs[k]]
    if diff:
        d = "; ".join(f"{k}: checkpoint {theirs[k]} vs config {mine[k]}" for k in diff)
        raise CheckpointError(
            f"checkpoint '{source}' was made with another config ({d}); use its config or retrain"
        )


def check_run_architecture(cfg: RunConfig, root: Path) -> None:
    """Refuse (one line) a run folder holding a checkpoint made for another architecture: the
    model-shaping keys of the config saved in it (Γ's: ``k`` and ``local``; a policy's and PPG's
    resume: :data:`ARCH_KEYS`). config.yaml is only a record here: it binds nothing."""
    from rovr.checkpoint import read_meta

    mine = to_dict(cfg)
    for path in sorted(Path(root).glob("*.safetensors")):
        keys = LOCAL_ARCH_KEYS if path.name.startswith(("local", "resume_local")) else ARCH_KEYS
        meta = read_meta(path)
        if not isinstance(meta.get("config"), dict):
            continue  # not a rovr checkpoint: loading it, if ever, says so
        saved = saved_config(meta, path)
        theirs, ours = _arch(saved, keys), _arch(mine, keys)
        diff = []
        for k in keys:  # a section is named field by field
            a, b = flat_config(theirs[k], k), flat_config(ours[k], k)
            diff += [f"{f}: {a.get(f)} → {b.get(f)}" for f in sorted(set(a) | set(b)) if a.get(f) != b.get(f)]
        if diff:
            raise ConfigError(
                f"run folder '{root}' holds checkpoints of another config ({path.name}: "
                f"{', '.join(diff)}); it cannot be resumed or retrained in place (--restart too): choose "
                "another --out or delete it"
            )


def prepare_run(
    cfg: RunConfig, root: Path, stage: str | None = None, write: bool = True, lock: RunLock | None = None
) -> RunDir:
    """Create the run folder and save the resolved config; a folder holding checkpoints of another
    architecture, a bad data folder, or (with ``stage``) a stage whose earlier stages' checkpoints are
    missing or of another architecture is refused first, in one line, with nothing written.
    ``write`` False (nothing is to be trained): an existing config.yaml is kept as the stages wrote it
    (a rerun with other time budgets would otherwise record budgets no stage ran with). ``lock`` is
    taken as soon as the folder exists, before config.yaml is written: of two commands started
    together into a new folder, the refused one writes nothing."""
    from rovr.metrics.flow import check_flow_weights

    run = RunDir(Path(root))
    check_device(cfg)
    check_flow_weights(cfg.metric)
    check_run_architecture(cfg, run.root)
    if run.config.is_file():  # replaced below: only if it is a rovr config
        from rovr.config import read_yaml

        try:
            config_from_dict(read_yaml(run.config))
        except ConfigError:
            raise ConfigError(
                f"'{run.config}' is not a rovr run config (it would be replaced); choose another --out"
            ) from None
    check_source(cfg.data)  # a bad --data is refused before the run folder is made
    needs_val = cfg.data.val_fraction > 0 and (
        stage == "pretrain-local" or (stage is None and not run.local.is_file())
    )
    check_splits(cfg, ("train", "val") if needs_val else ("train",))
    if stage is not None:
        from rovr.pipeline import check_stage_inputs

        check_stage_inputs(cfg, run, stage)
    make_folder(run.root, "run folder", "--out")
    if lock is not None:
        lock.acquire()
    if not write and run.config.is_file():
        return run
    try:
        save_config(cfg, run.config)
    except OSError as e:
        raise RovrError(
            f"cannot write to run folder '{root}' ({e.strerror}); choose a writable --out"
        ) from None
    return run


def check_splits(cfg: RunConfig, splits: tuple[str, ...]) -> None:
    """Refuse in one line, before a run folder is written, data whose ``splits`` (of train/val/test,
    by video) hold no clip: the stage would refuse it only after the run folder's config.yaml and
    splits.json were written."""
    from rovr.data.clips import video_splits

    parts = video_splits(cfg.data)
    for split in splits:
        if not parts[split]:
            held = sum(len(v) for v in parts.values())
            raise RovrError(
                f"no {split} clips in '{cfg.data.source}' ({held} video{'' if held == 1 else 's'} of at least "
                f"data.frames={cfg.data.frames} frames, split by video); add videos, or lower data.frames"
                + (" / data.val_fraction" if split == "val" else "")
            )


def check_writable(path: Path, what: str, flag: str, folder: bool = False) -> None:
    """Refuse, before any work, an output path that cannot be written (missing parents are created
    later); ``folder``: the output is a folder (an existing one, or one made in its parent)."""
    if path.is_dir() and not folder:
        raise RovrError(f"{what} '{path}' is a folder; pass a file name with {flag}")
    if folder and path.exists() and not path.is_dir():
        raise RovrError(f"{what} '{path}' is a file; choose a folder with {flag}")
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise RovrError(f"cannot create {what} '{path}': '{parent}' is not a folder; choose another {flag}")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise RovrError(f"cannot write {what} '{path}': no permission in '{parent}'; choose another {flag}")


class RunLock:
    """Holds a run folder for one training command: a second command training into the same folder
    (a job submitted twice) is refused in one line instead of both writing the same checkpoints and
    interleaving the metric log. An advisory ``flock`` on the folder itself — no lock file; the
    kernel drops it when the process ends, however it ends. :meth:`acquire` takes it if the folder
    exists (call it again once the folder is made); under torchrun, rank 0 holds it for all ranks."""

    _held: ClassVar[set[str]] = set()  # folders this process holds: a nested RunLock is a no-op

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.fd: int | None = None

    def acquire(self) -> None:
        try:
            import fcntl
        except ImportError:  # not POSIX: no lock
            return
        from rovr.train import dist

        if self.fd is not None or not self.root.is_dir() or dist.env_rank() != 0:
            return
        key = str(self.root.resolve())
        if key in RunLock._held:
            return
        fd = os.open(self.root, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise RovrError(
                f"run folder '{self.root}' is in use by another rovr command training there; wait for it "
                "to finish (then rerun this one to go on), or choose another --out"
            ) from None
        self.fd = fd
        RunLock._held.add(key)

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor drops the flock
            self.fd = None
            RunLock._held.discard(str(self.root.resolve()))

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def make_folder(path: Path, what: str, flag: str) -> Path:
    """Create the output folder ``path`` (and its parents) now, before the work that fills it, or
    refuse in one line naming ``what`` it is and the ``flag`` that chose it."""
    if path.exists() and not path.is_dir():
        raise RovrError(f"{what} '{path}' is a file; choose a folder with {flag}")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RovrError(f"cannot write to {what} '{path}' ({e.strerror}); choose a writable {flag}") from None
    return path


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


#: glibc's mallopt parameters (malloc.h) and the value set: mallopt takes an int, so 2 GiB.
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, KEEP_BYTES = -1, -3, 2**31 - 1


def keep_freed_memory() -> bool:
    """Make glibc's malloc keep freed memory in the process: blocks under 2 GiB come from the heap, not
    from their own ``mmap``, and the heap is not trimmed back to the kernel.

    By default glibc maps every large block (an activation of a batch: tens of MB) afresh and unmaps it
    when freed, so each training step or big inference batch page-faults its memory in again. This is
    what ``GLIBC_TUNABLES=glibc.malloc.mmap_threshold=…:glibc.malloc.trim_threshold=…`` does before a
    process starts, set from inside it (``bench_local.py --malloc-ab``: the same speed-up). Returns
    whether it was applied: not without glibc, and not where the user's own ``GLIBC_TUNABLES`` already
    sets malloc, which then stands.
    """
    import ctypes
    import os
    import platform

    if platform.libc_ver()[0] != "glibc" or "glibc.malloc." in os.environ.get("GLIBC_TUNABLES", ""):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library the process runs on
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, KEEP_BYTES)) & bool(mallopt(M_TRIM_THRESHOLD, KEEP_BYTES))


def setup_torch(cfg: RunConfig) -> torch.device:
    """Set threads (and :func:`keep_freed_memory` unless the config says not to) and return the device;
    asking for CUDA without one is a clear error."""
    if cfg.keep_freed_memory:
        keep_freed_memory()
    if cfg.threads > 0:  # more threads than CPUs only contend (and thousands fail to start)
        torch.set_num_threads(min(cfg.threads, os.cpu_count() or 1))
    check_device(cfg)
    return torch.device(cfg.device)


def no_gamma_advice(root: Path, advice: str) -> str:
    """What to do about a run folder without Γ: ``advice``, or for the top folder of `rovr reproduce`
    (runs in ``seed_<S>``) to pass one of its runs."""
    runs = sorted(p.parent for p in root.glob("seed_*/local.safetensors"))
    if runs:
        return f"it holds the runs of `rovr reproduce` ({len(runs)}): pass one of them, e.g. '{runs[0]}'"
    return advice


def check_device(cfg: RunConfig) -> None:
    """Refuse a CUDA device this machine does not have (one line), before a command writes anything."""
    if not cfg.device.startswith("cuda"):
        return
    if not torch.cuda.is_available():
        raise ConfigError(
            f"device '{cfg.device}' was requested but no CUDA GPU is available; use --device cpu"
        )
    index = cfg.device.partition(":")[2]
    if index and int(index) >= torch.cuda.device_count():
        raise ConfigError(
            f"device '{cfg.device}' was requested but this machine has {torch.cuda.device_count()} CUDA "
            f"GPU(s) (cuda:0 … cuda:{torch.cuda.device_count() - 1}); choose one of them"
        )


def corrupted_clips(cfg: RunConfig, split: str, seed: int, limit: int = 0) -> list[Corrupted]:
    """The clips of ``split``, each corrupted with a seed derived from (``seed``, clip index).

    ``limit`` > 0 keeps that many clips spread evenly over the split (:func:`~rovr.data.clips.spread`);
    the split is sorted by video, so a limited evaluation still sees every video it can.
    """
    clips = ClipSet(cfg.data, split)
    return [
        dataclasses.replace(
            corrupt(clips[i].frames, cfg.corruption, seed=seed * 100_003 + i),
            video=clips.windows[i][0],
            start=clips.windows[i][1],
        )
        for i in spread(len(clips), limit)
    ]


class MetricLog:
    """TensorBoard scalars plus a JSON-lines copy (``metrics.jsonl``, for the report's learning curves).

    One log is one *series*: a stage, or one PPG policy (``policy``). Its rows carry ``stage`` (and
    ``policy``); its TensorBoard events go to their own folder ``<folder>/<series>`` (TensorBoard
    shows each stage and policy as a run of its own). A stage first drops what the series logged
    before that this run replaces: everything when it starts afresh (training that ``--restart``
    replaced, or that was interrupted without a checkpoint), the steps after ``resumed_at`` when it
    resumes from a checkpoint of that step (the resumed run repeats them), so the curves show each
    step once.
    Only the main process of a multi-process run writes (``enabled``).
    """

    def __init__(
        self,
        folder: Path,
        stage: str,
        policy: str | None = None,
        resumed_at: int | None = None,
        enabled: bool = True,
    ) -> None:
        self.enabled = enabled
        self.path = folder / "metrics.jsonl"
        self.stage, self.policy = stage, policy
        self.writer: Any = None
        if not enabled:
            return
        series = stage if policy is None else f"{stage}-{policy}"
        events = folder / series
        events.mkdir(parents=True, exist_ok=True)
        self._drop_rows_after(-1 if resumed_at is None else resumed_at)
        if resumed_at is None:  # the events of training that this run replaces
            for old in events.glob("events.out.tfevents.*"):
                old.unlink(missing_ok=True)
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(events), purge_step=None if resumed_at is None else resumed_at + 1)

    def _mine(self, row: dict[str, Any]) -> bool:
        return row.get("stage") == self.stage and row.get("policy") == self.policy

    def _drop_rows_after(self, step: int) -> None:
        """Rewrite ``metrics.jsonl`` (atomically) without this series' rows after ``step``; a line a
        killed run left half-written goes too."""
        if not self.path.is_file():
            return
        lines = self.path.read_text(errors="replace").splitlines()
        kept = []
        for line in lines:
            row = _metric_row(line)
            at = row.get("step") if row is not None else None
            replaced = isinstance(at, (int, float)) and at > step and self._mine(row or {})
            if row is not None and not replaced:
                kept.append(line)
        if len(kept) == len(lines):
            return
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        tmp.write_text("".join(line + "\n" for line in kept))
        os.replace(tmp, self.path)

    def log(self, step: int, scalars: dict[str, float]) -> None:
        if not self.enabled:
            return
        for key, value in scalars.items():
            self.writer.add_scalar(key, value, step)
        row: dict[str, Any] = {"stage": self.stage, **({"policy": self.policy} if self.policy else {})}
        with self.path.open("a") as f:
            f.write(json.dumps({**row, "step": step, "time": time.time(), **scalars}) + "\n")

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _metric_row(line: str) -> dict[str, Any] | None:
    """One ``metrics.jsonl`` line as a record; None for a blank, half-written or foreign line."""
    try:
        row = json.loads(line)
    except ValueError:
        return None
    return row if isinstance(row, dict) and "stage" in row else None


def read_metric_log(folder: Path) -> list[dict[str, Any]]:
    """The records of ``folder/metrics.jsonl`` (see :class:`MetricLog`), unreadable lines skipped."""
    path = folder / "metrics.jsonl"
    if not path.is_file():
        return []
    rows = (_metric_row(line) for line in path.read_text(errors="replace").splitlines())
    return [row for row in rows if row is not None]


@dataclass
class Progress:
    """Where a stage stands; saved in every resume checkpoint."""

    step: int = 0
    seconds: float = 0.0  # training wall time of earlier runs of this stage plus this one


def save_resume(
    path: Path,
    cfg: RunConfig,
    stage: str,
    model: torch.nn.Module,
    opt: torch.optim.Optimizer,
    rng: torch.Tensor,
    state: Progress,
) -> None:
    """An in-progress checkpoint of a single-model stage: weights, Adam state, the sampler's RNG state at
    the start of the step in progress, and :class:`Progress` (read back by :func:`load_resume`)."""
    ot, om = optimizer_tensors(opt)
    meta = {"config": to_dict(cfg), "stage": stage, "step": state.step, "seconds": state.seconds, "opt": om}
    save_checkpoint(path, {**state_tensors(model, "net."), **ot, "rng": rng}, meta)


def load_resume(
    path: Path,
    cfg: RunConfig,
    stage: str,
    model: torch.nn.Module,
    opt: torch.optim.Optimizer,
    gen: torch.Generator,
    arch_keys: tuple[str, ...] = ARCH_KEYS,
) -> Progress:
    """Restore model, optimizer and sampler RNG from :func:`save_resume`'s checkpoint (one-line errors)."""
    tensors, meta = load_checkpoint(path)
    if meta.get("stage") != stage or "opt" not in meta or "rng" not in tensors:
        raise CheckpointError(
            f"'{path}' is not a {stage} resume checkpoint (stage {meta.get('stage')!r}); delete it to start over"
        )
    check_same_architecture(cfg, meta, path, arch_keys)
    load_state(model, tensors, "net.", path)
    try:
        load_optimizer(opt, tensors, meta["opt"])
        gen.set_state(tensors["rng"])
        state = Progress(step=int(meta["step"]), seconds=float(meta.get("seconds", 0.0)))
    except (KeyError, ValueError, TypeError, RuntimeError) as e:
        reason = (str(e).splitlines() or [type(e).__name__])[0][:200]
        raise CheckpointError(
            f"resume checkpoint '{path}' has unusable optimizer/RNG state ({reason}); delete it to start over"
        ) from None
    return state


def discard(path: Path) -> None:
    """Delete a checkpoint and its ``.json`` copy (a finished stage's resume checkpoint)."""
    path.unlink(missing_ok=True)
    path.with_suffix(".json").unlink(missing_ok=True)


def save_model(path: Path, model: torch.nn.Module, cfg: RunConfig, **meta: Any) -> None:
    """Save one model's weights with the run config and extra metadata."""
    save_checkpoint(path, state_tensors(model, ""), {"config": to_dict(cfg), **meta})


def load_model(path: Path, model: torch.nn.Module, cfg: RunConfig, hint: str) -> dict[str, Any]:
    """Load weights into ``model``; a missing file says which command makes it (``hint``).

    Γ (a :class:`~rovr.models.local.LocalNet`) is checked against :data:`LOCAL_ARCH_KEYS` only, so a
    pretrained Γ can be reused under another policy config; every other model against :data:`ARCH_KEYS`.
    """
    from rovr.models.local import LocalNet

    if not path.is_file():
        raise CheckpointError(f"'{path}' does not exist; run `{hint}` first")
    tensors, meta = load_checkpoint(path)
    check_same_architecture(cfg, meta, path, LOCAL_ARCH_KEYS if isinstance(model, LocalNet) else ARCH_KEYS)
    load_state(model, tensors, "", path)
    return meta


def load_local(
    path: Path, cfg: RunConfig, device: torch.device | str | None = None, hint: str = "rovr pretrain-local"
) -> LocalNet:
    """A trained Γ of a run (``cfg.local``, ``cfg.k``), on ``device`` (default the CPU), in eval mode;
    a missing file says which command makes it (``hint``)."""
    from rovr.models.local import LocalNet

    net = LocalNet(cfg.local, cfg.k)
    load_model(path, net, cfg, hint)
    return net.to(device or torch.device("cpu")).eval()


def load_policy(
    path: Path, cfg: RunConfig, name: str, hint: str, device: torch.device | None = None
) -> PolicyChooser:
    """A trained actor of a run as a greedy :class:`~rovr.conditioning.PolicyChooser`.

    The chooser uses the temperature the policy was trained at: ``tau`` in the checkpoint's metadata
    (PPG saves it; ``ppg.tau`` may differ from ``policy.tau``), else ``cfg.policy.tau``. With a pair
    bias the greedy pair is the mode of the pair distribution, which depends on τ.
    """
    from rovr.conditioning import PolicyChooser
    from rovr.models.policy import build_actor

    actor = build_actor(cfg.policy, cfg.data.frames)
    meta = load_model(path, actor, cfg, hint)
    tau = meta.get("tau", cfg.policy.tau)
    if not isinstance(tau, (int, float)) or not tau > 0:
        raise CheckpointError(f"checkpoint '{path}' has an invalid temperature tau={tau!r}; retrain it")
    return PolicyChooser(actor.to(device or torch.device("cpu")).eval(), name, tau=float(tau))

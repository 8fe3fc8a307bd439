"""One config system: typed dataclasses, YAML in/out, ``a.b=value`` overrides.

Every stage reads a :class:`RunConfig`. Model files own their configs
(:class:`rovr.models.local.LocalNetConfig`, :class:`rovr.models.policy.PolicyConfig`);
this module composes them. Each field carries a one-line description in its
``metadata["help"]``; values are checked in ``__post_init__`` and a bad value raises
:class:`~rovr.errors.ConfigError` naming the key.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

import yaml

from rovr.errors import ConfigError
from rovr.models.local import LocalNetConfig
from rovr.models.policy import PolicyConfig

T = TypeVar("T")


def _f(default: Any, help: str) -> Any:
    """A dataclass field with a default and a one-line description."""
    if isinstance(default, (list, dict, tuple)) or dataclasses.is_dataclass(default):
        return field(default_factory=lambda: default, metadata={"help": help})
    return field(default=default, metadata={"help": help})


def check(cond: bool, key: str, msg: str) -> None:
    """Raise a one-line ConfigError for ``key`` unless ``cond`` holds."""
    if not cond:
        raise ConfigError(f"config value '{key}' {msg}")


@dataclass
class DataConfig:
    source: str = _f("synthetic", "'synthetic' (embedded default) or a folder of videos / frame folders")
    num_videos: int = _f(24, "number of synthetic videos (source='synthetic' only)")
    frames: int = _f(20, "T: frames per clip (paper: 20)")
    size: int = _f(64, "H = W: clips are resized and centre-cropped to size x size (paper: 256)")
    stride: int = _f(20, "frames between the starts of consecutive clips of one video")
    max_clips_per_video: int = _f(4, "at most this many clips from each source video (0 = all)")
    val_fraction: float = _f(0.15, "fraction of source videos held out for validation")
    test_fraction: float = _f(0.2, "fraction of source videos held out for testing")
    seed: int = _f(0, "seed of the synthetic videos and of the split")

    def __post_init__(self) -> None:
        check(self.source.strip() != "", "data.source", "is empty; pass 'synthetic' or a folder of videos")
        if self.source != "synthetic":  # stored resolved: the run folder is read from anywhere later
            self.source = str(Path(self.source).expanduser().resolve())
        check(self.seed >= 0, "data.seed", f"must be >= 0 (got {self.seed})")
        check(self.frames >= 3, "data.frames", f"must be at least 3 (got {self.frames})")
        check(self.frames <= 4096, "data.frames", f"is absurdly large (got {self.frames})")
        check(16 <= self.size <= 4096, "data.size", f"must be between 16 and 4096 (got {self.size})")
        check(self.stride >= 1, "data.stride", f"must be >= 1 (got {self.stride})")
        check(self.num_videos >= 1, "data.num_videos", f"must be >= 1 (got {self.num_videos})")
        check(self.max_clips_per_video >= 0, "data.max_clips_per_video", "must be >= 0")
        for k in ("val_fraction", "test_fraction"):
            v = getattr(self, k)
            check(0.0 <= v < 1.0, f"data.{k}", f"must be in [0, 1) (got {v})")
        check(
            self.val_fraction + self.test_fraction < 1.0, "data", "val_fraction + test_fraction must be < 1"
        )


@dataclass
class CorruptionConfig:
    kind: Literal["rectangles"] = _f("rectangles", "mask generator (paper §4: K rectangles per frame)")
    rects: int = _f(4, "K: rectangles per frame")
    regions: int = _f(6, "fixed regions each rectangle is placed in (a frame uses `rects` of them)")
    min_area: float = _f(0.15, "lower bound of the hole area as a fraction of the frame")
    max_area: float = _f(0.35, "upper bound of the hole area as a fraction of the frame")
    min_valid_pairs: int = _f(1, "every target must have at least this many fully covering pairs")
    max_valid_pairs: int = _f(16, "and at most this many (paper §5.1.2: at most 16 of 171)")
    max_tries: int = _f(200, "redraws allowed to meet the valid-pair bounds")
    noise_std: float = _f(0.0, "std of additive Gaussian noise on the whole frame (0-1 scale), paper §8")
    brightness: float = _f(0.0, "max absolute brightness shift (0-1 scale), paper §8")
    blur_sigma: float = _f(0.0, "Gaussian blur sigma in pixels, paper §8")

    def __post_init__(self) -> None:
        check(1 <= self.rects <= self.regions, "corruption.rects", "must be in [1, corruption.regions]")
        check(self.regions <= 16, "corruption.regions", f"must be <= 16 (got {self.regions})")
        check(
            0.0 < self.min_area <= self.max_area < 1.0,
            "corruption.min_area/max_area",
            "must satisfy 0 < min_area <= max_area < 1",
        )
        check(
            0 <= self.min_valid_pairs <= self.max_valid_pairs,
            "corruption.min_valid_pairs",
            "must be <= corruption.max_valid_pairs",
        )
        check(self.max_tries >= 1, "corruption.max_tries", "must be >= 1")
        for k in ("noise_std", "brightness", "blur_sigma"):
            check(getattr(self, k) >= 0.0, f"corruption.{k}", "must be >= 0")


@dataclass
class MetricConfig:
    perceptual: str = _f(
        "auto", "'auto' (LPIPS-VGG if weights exist, else the weight-free fallback), 'lpips-vgg', or 'ssim'"
    )
    vgg_weights: str = _f("", "path to VGG16 ImageNet weights (.pth); empty = look in TORCH_HOME")
    flow: str = _f(
        "dis", "optical-flow backend: 'dis' (OpenCV, no weights) or 'raft' (torchvision RAFT-small)"
    )
    raft_weights: str = _f("", "path to RAFT weights (.pth); empty = look in TORCH_HOME")


@dataclass
class PretrainConfig:
    steps: int = _f(1500, "optimizer steps of local-net pretraining (§6.1)")
    batch_size: int = _f(16, "targets per step")
    lr: float = _f(2e-3, "Adam learning rate")
    lambda_max: float = _f(0.9, "final perceptual weight λ of Eq. 1 (grown exponentially from 0)")
    lambda_rate: float = _f(
        -5.0,
        "shape of λ(s) = λ_max (1 - exp(-r s/S)) / (1 - exp(-r)); r < 0 grows exponentially (slow, then fast)",
    )
    max_minutes: float = _f(0.0, "stop after this many minutes of training (0 = no limit)")
    checkpoint_every: int = _f(250, "save a checkpoint every this many steps")

    def __post_init__(self) -> None:
        check(self.steps >= 1, "pretrain.steps", "must be >= 1")
        check(self.batch_size >= 1, "pretrain.batch_size", "must be >= 1")
        check(self.lr > 0, "pretrain.lr", f"must be > 0 (got {self.lr})")
        check(0.0 <= self.lambda_max <= 1.0, "pretrain.lambda_max", "must be in [0, 1]")
        check(
            self.checkpoint_every >= 1,
            "pretrain.checkpoint_every",
            f"must be >= 1 (got {self.checkpoint_every})",
        )
        check(self.max_minutes >= 0, "pretrain.max_minutes", f"must be >= 0 (got {self.max_minutes})")


@dataclass
class ImitationConfig:
    steps: int = _f(600, "optimizer steps of the imitation warm start (§6.2)")
    batch_size: int = _f(32, "states per step")
    lr: float = _f(1e-3, "Adam learning rate")
    loss: Literal["bce", "listwise"] = _f(
        "listwise", "'bce' (paper Eq. 2) or 'listwise' ranking over pairs (paper §8)"
    )
    expert: Literal["copy", "coverage"] = _f(
        "copy",
        "listwise expert: 'copy' = lowest error of the aligned copy in the holes (needs no Γ run), "
        "'coverage' = the paper's mask oracle (with imitation.distance_weight)",
    )
    distance_weight: float = _f(
        1.0,
        "coverage expert: pair score = coverage − α (|i−t| + |j−t|)/T; 0 = the paper's oracle (coverage only)",
    )
    soft: float = _f(
        0.0,
        "copy expert: 0 = imitate the best pair only; s > 0 = q ∝ exp(−(cost − min) / (s · mean cost))",
    )
    max_minutes: float = _f(
        0.0,
        "stop after this many minutes of training (0 = no limit; labelling the teacher's states comes first)",
    )
    checkpoint_every: int = _f(500, "save a resume checkpoint every this many steps (and on Ctrl-C)")

    def __post_init__(self) -> None:
        check(self.steps >= 0, "imitation.steps", "must be >= 0")
        check(
            self.checkpoint_every >= 1,
            "imitation.checkpoint_every",
            f"must be >= 1 (got {self.checkpoint_every})",
        )
        check(self.batch_size >= 1, "imitation.batch_size", f"must be >= 1 (got {self.batch_size})")
        check(self.lr > 0, "imitation.lr", "must be > 0")
        check(self.max_minutes >= 0, "imitation.max_minutes", f"must be >= 0 (got {self.max_minutes})")
        check(self.soft >= 0, "imitation.soft", f"must be >= 0 (got {self.soft})")


@dataclass
class PPGConfig:
    iterations: int = _f(24, "policy-phase iterations in total")
    episodes_per_iter: int = _f(8, "episodes (videos) collected per iteration")
    n_pi: int = _f(4, "N_pi: policy iterations between auxiliary phases")
    e_pi: int = _f(2, "E_pi: epochs of the clipped surrogate per iteration")
    e_v: int = _f(2, "E_V: epochs of value regression per iteration")
    e_aux: int = _f(2, "E_aux: epochs of the auxiliary phase")
    minibatch: int = _f(64, "transitions per minibatch")
    lr: float = _f(5e-4, "Adam learning rate of actor and critic")
    clip: float = _f(0.2, "ε of the clipped surrogate")
    ent_coef: float = _f(0.01, "entropy bonus coefficient")
    kl_ref: float = _f(
        0.0,
        "β_ref: weight of KL(π ‖ π_ref) in the policy loss, π_ref = the frozen warm start (imitation); "
        "keeps what imitation learned from the oracle while PPG adapts it (0 = off, the paper)",
    )
    bc_coef: float = _f(
        0.0,
        "λ0 of demonstration-augmented PG (DAPG, Rajeswaran et al. 2018): weight of the listwise "
        "cross-entropy to the copy teacher's pairs (imitation's loss, at policy.tau) on PPG's own rollout "
        "states, added to the policy loss (0 = off, the paper)",
    )
    bc_decay: float = _f(1.0, "λ1: the teacher term's weight is bc_coef · bc_decay^iteration")
    beta_clone: float = _f(1.0, "β_clone: weight of the behaviour-cloning KL in the auxiliary phase")
    gamma: float = _f(1.0, "discount (paper: 1)")
    gae_lambda: float = _f(1.0, "GAE λ (1 = plain rewards-to-go minus V, as in the paper)")
    credit: Literal["to_go", "causal"] = _f(
        "to_go",
        "'to_go': returns are (GAE) rewards-to-go, as the paper; 'causal': a step's return is its own "
        "local reward plus the episode's final flow reward — with condition_on=observed an action cannot "
        "change later local rewards, so the same expected gradient with far less variance; with "
        "condition_on=current (a repaired frame helps later targets) a myopic approximation",
    )
    flow_credit: Literal["episode", "frame"] = _f(
        "episode",
        "how the final flow reward w·O reaches the steps: 'episode' = whole to every step's return (the "
        "paper's terminal reward); 'frame' = split by each repaired frame's part of Eq. 3's flow error "
        "(shares sum to w·O; with credit=causal a step is paid for the flows into and out of its own "
        "frame only). Needs group = 1",
    )
    group: int = _f(
        1,
        "K: pairs drawn from π at every state. K > 1 (needs credit=causal): Γ rebuilds the target from "
        "each; a pair's return is its own L_P gain + w·O of the episode with that frame swapped in, and "
        "its advantage is that return minus the mean of the other K−1 (leave-one-out baseline)",
    )
    baseline: Literal["others", "greedy"] = _f(
        "others",
        "with group > 1, what a draw's return is compared with: 'others' = the mean of the other K−1 "
        "draws; 'greedy' = the return of π's own greedy pair at that state (self-critical: only draws "
        "that beat what evaluation would pick are reinforced; one more Γ call per state)",
    )
    tau: float = _f(
        0.0,
        "temperature of π's pair distribution during PPG (sampling, log-probs, entropy, KLs); 0 = "
        "policy.tau. Lower samples closer to π's greedy pair, which evaluation plays",
    )
    flow_reward: bool = _f(True, "add the global flow-recovery reward at the end (Eq. 3)")
    flow_weight: float = _f(1.0, "w: weight of the flow-recovery reward")
    reward_scale: float = _f(10.0, "rewards are multiplied by this (the perceptual differences are small)")
    warm_start: bool = _f(True, "start from the imitation checkpoint (False = cold start)")
    train_local: bool = _f(False, "keep training Γ on L_R during rollouts (§6.3)")
    logprob: Literal["exact", "geometric"] = _f(
        "exact", "pair log-prob: exact Plackett-Luce, or the paper's geometric mean"
    )
    max_minutes: float = _f(0.0, "stop after this many minutes (0 = no limit)")

    def __post_init__(self) -> None:
        check(self.iterations >= 1, "ppg.iterations", "must be >= 1")
        check(self.episodes_per_iter >= 1, "ppg.episodes_per_iter", "must be >= 1")
        check(self.n_pi >= 1, "ppg.n_pi", "must be >= 1")
        for key in ("e_pi", "e_v", "e_aux"):
            check(getattr(self, key) >= 0, f"ppg.{key}", f"must be >= 0 (got {getattr(self, key)})")
        check(self.minibatch >= 1, "ppg.minibatch", f"must be >= 1 (got {self.minibatch})")
        check(self.max_minutes >= 0, "ppg.max_minutes", f"must be >= 0 (got {self.max_minutes})")
        for key in ("ent_coef", "beta_clone", "flow_weight"):
            check(getattr(self, key) >= 0, f"ppg.{key}", f"must be >= 0 (got {getattr(self, key)})")
        check(self.reward_scale > 0, "ppg.reward_scale", f"must be > 0 (got {self.reward_scale})")
        check(self.group >= 1, "ppg.group", "must be >= 1")
        check(
            self.group == 1 or self.flow_credit == "episode",
            "ppg.flow_credit",
            f"= 'frame' needs ppg.group = 1 (got {self.group}; each of K draws is already paid the flow of "
            "its own frame): set ppg.flow_credit=episode or ppg.group=1",
        )
        check(
            self.group == 1 or self.credit == "causal",
            "ppg.group",
            f"> 1 needs ppg.credit=causal (each of the K pairs is scored by its own return; got {self.credit})",
        )
        check(0.0 < self.clip < 1.0, "ppg.clip", "must be in (0, 1)")
        check(0.0 < self.gamma <= 1.0, "ppg.gamma", "must be in (0, 1]")
        check(0.0 <= self.gae_lambda <= 1.0, "ppg.gae_lambda", "must be in [0, 1]")
        check(self.lr > 0, "ppg.lr", "must be > 0")
        check(self.kl_ref >= 0, "ppg.kl_ref", f"must be >= 0 (got {self.kl_ref})")
        check(self.bc_coef >= 0, "ppg.bc_coef", f"must be >= 0 (got {self.bc_coef})")
        check(0.0 < self.bc_decay <= 1.0, "ppg.bc_decay", f"must be in (0, 1] (got {self.bc_decay})")
        check(self.tau >= 0, "ppg.tau", f"must be >= 0 (0 = policy.tau; got {self.tau})")


@dataclass
class EvalConfig:
    seeds: int = _f(3, "corruption/evaluation seeds per policy")
    max_clips: int = _f(0, "evaluate at most this many clips, spread evenly over the videos (0 = all)")
    brute_force: bool = _f(True, "include the brute-force row (T(T-1)(T-2)/2 Γ calls per clip)")

    def __post_init__(self) -> None:
        check(self.seeds >= 1, "eval.seeds", "must be >= 1")


@dataclass
class RunConfig:
    name: str = _f("run", "run name (folder under out)")
    seed: int = _f(0, "global seed of training")
    device: str = _f("cpu", "'cpu' or 'cuda'")
    threads: int = _f(0, "torch CPU threads (0 = all cores)")
    keep_freed_memory: bool = _f(
        True,
        "glibc: the training and evaluation commands keep freed memory in the process (mallopt) instead of "
        "returning it to the kernel: 20-550x fewer page faults a step, a 256² step 1.3-2.5x faster; resident "
        "memory stays at its peak",
    )
    k: int = _f(2, "conditioning frames per target (paper: 2)")
    condition_on: Literal["current", "observed"] = _f(
        "current",
        "what Γ and the policy see of a frame already repaired: 'current' = its reconstruction, no holes "
        "(the paper's state and transition, §5.1); 'observed' = only its observed pixels, holes blanked",
    )
    data: DataConfig = _f(DataConfig(), "data source and clips")
    corruption: CorruptionConfig = _f(CorruptionConfig(), "the corruption and its oracle")
    metric: MetricConfig = _f(MetricConfig(), "perceptual and flow metric backends")
    local: LocalNetConfig = _f(LocalNetConfig(), "local network Γ")
    policy: PolicyConfig = _f(PolicyConfig(), "policy and critic")
    pretrain: PretrainConfig = _f(PretrainConfig(), "stage 1: local-net pretraining")
    imitation: ImitationConfig = _f(ImitationConfig(), "stage 2: imitation warm start")
    ppg: PPGConfig = _f(PPGConfig(), "stage 3: phasic policy gradient")
    eval: EvalConfig = _f(EvalConfig(), "evaluation")

    def __post_init__(self) -> None:
        check(self.seed >= 0, "seed", f"must be >= 0 (got {self.seed})")
        check(self.threads >= 0, "threads", f"must be >= 0 (0 = all cores; got {self.threads})")
        check(
            self.device in ("cpu", "cuda") or (self.device.startswith("cuda:") and self.device[5:].isdigit()),
            "device",
            f"must be 'cpu' or 'cuda' (got '{self.device}')",
        )
        check(2 <= self.k + 1 <= self.data.frames, "k", f"must be >= 1 and < data.frames (got {self.k})")


# ----------------------------------------------------------------------------- (de)serialisation


def _coerce(tp: Any, value: Any, key: str) -> Any:
    """Convert a YAML value to the annotated type ``tp`` or raise a one-line ConfigError."""
    origin = get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}' must be a mapping (got {value!r})")
        return from_dict(tp, value, prefix=key + ".")  # type: ignore[arg-type]
    if origin is Literal:
        allowed = get_args(tp)
        if value not in allowed:
            raise ConfigError(f"config value '{key}' must be one of {list(allowed)} (got {value!r})")
        return value
    if origin in (typing.Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _coerce(args[0], value, key)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"config value '{key}' must be true or false (got {value!r})")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"config value '{key}' must be an integer (got {value!r})")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config value '{key}' must be a number (got {value!r})")
        if not math.isfinite(value):
            raise ConfigError(f"config value '{key}' must be a finite number (got {value!r})")
        return float(value)
    if tp is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"config value '{key}' must be a string (got {value!r})")
        return str(value)
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config value '{key}' must be a list (got {value!r})")
        (inner, *_) = get_args(tp) or (Any,)
        return origin(_coerce(inner, v, key) for v in value)
    return value


def from_dict(cls: type[T], data: dict[str, Any], prefix: str = "") -> T:
    """Build dataclass ``cls`` from a (partial) nested dict; unknown keys are errors."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    for key in data:
        if key not in names:
            raise ConfigError(
                f"unknown config key '{prefix}{key}'; valid keys here: {', '.join(sorted(names))}"
            )
    kwargs = {k: _coerce(hints[k], v, prefix + k) for k, v in data.items()}
    return cls(**kwargs)


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain nested dict of a config (YAML/JSON-serialisable)."""
    return dataclasses.asdict(cfg)


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b=value`` overrides (value parsed as YAML) to a nested dict, in place."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}' must look like key=value (e.g. ppg.iterations=10)")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        node = data
        parts = key.strip().split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override '{item}': '{p}' is not a section")
        node[parts[-1]] = value
    return data


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping from ``path`` with one-line errors."""
    p = Path(path)
    if not p.is_file():
        what = "is a folder" if p.is_dir() else "does not exist"
        raise ConfigError(
            f"config file '{p}' {what}; pass an existing YAML file, or `demo` / `paper` for the shipped ones"
        )
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ConfigError(f"config file '{p}' is not valid YAML ({first}); fix the file") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file '{p}' must hold a mapping of sections, not {type(data).__name__}")
    return data


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Resolve a RunConfig from an optional YAML file plus ``a.b=value`` overrides."""
    data = read_yaml(path) if path else {}
    apply_overrides(data, overrides or [])
    return from_dict(RunConfig, data)


def save_config(cfg: RunConfig, path: str | Path) -> None:
    """Write the resolved config as YAML (atomically)."""
    from rovr.checkpoint import atomic_write_text

    atomic_write_text(Path(path), yaml.safe_dump(to_dict(cfg), sort_keys=False))


#: Settings added after runs were already being recorded, with the value every run recorded before
#: them was trained with (which is not today's default): a full record without the key means that.
RECORDED_BEFORE = {"condition_on": "observed"}


def as_recorded(data: dict[str, Any]) -> dict[str, Any]:
    """A config dict rovr recorded (checkpoint metadata, a run's config.yaml, a report's ``config``)
    with the keys of :data:`RECORDED_BEFORE` it lacks at the value runs had before those keys existed."""
    return {**RECORDED_BEFORE, **data}


def config_from_dict(data: dict[str, Any]) -> RunConfig:
    """RunConfig from a full dict rovr wrote (a checkpoint's metadata, a run's config.yaml): :func:`as_recorded`."""
    return from_dict(RunConfig, as_recorded(data))


def read_run_config(path: str | Path) -> RunConfig:
    """The config.yaml a run folder was trained with; an empty one is refused (its defaults are not
    what the run's checkpoints were trained with, and would only fail later as a shape mismatch)."""
    data = read_yaml(path)
    if not data:
        raise ConfigError(
            f"run config '{path}' is empty; put back the settings the run was trained with (every "
            'checkpoint\'s .json beside it holds them under "config") or train the run again'
        )
    return config_from_dict(data)

"""What the benchmark scripts that score a trained run share (run them as ``python benchmarks/NAME.py``,
which puts this folder on the import path)."""

from __future__ import annotations

from pathlib import Path

import torch

from rovr.config import RunConfig
from rovr.metrics.perceptual import PerceptualMetric, build_perceptual
from rovr.models.local import LocalNet
from rovr.restore import load_run
from rovr.train.common import RunDir, load_local


def load_scoring(run_dir: str | Path) -> tuple[RunConfig, RunDir, LocalNet, PerceptualMetric]:
    """A trained run on the CPU: its config and folder, its Γ, and its perceptual metric L_P
    (no download: the weight-free fallback where the VGG weights are absent). One-line errors for a
    folder that is not a trained run, as `rovr restore` gives."""
    cfg, run = load_run(Path(run_dir))
    device = torch.device("cpu")
    return cfg, run, load_local(run.local, cfg, device), build_perceptual(cfg.metric, device, download=False)

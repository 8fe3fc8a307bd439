"""Shared test fixtures. Tests run with one torch thread each (pytest -n 2 uses both cores)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"
if not REAL.is_dir():  # CI clones main elsewhere with shared/ beside it
    REAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real"


@pytest.fixture(scope="session")
def real_dir() -> Path:
    """Folder of the real clips (../shared/data/real); tests that need it skip only if it is absent."""
    if not REAL.is_dir():
        pytest.skip("../shared/data/real is not present")
    return REAL

"""Shared fixtures: tiny models, images and checkpoints (no downloads, CPU only)."""

from __future__ import annotations

import os
from pathlib import Path

# Idle OpenMP threads sleep instead of spinning: on a busy 2-core machine spinning threads
# make small convolutions 10-50x slower. Must be set before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402
import torch  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_REFERENCE = REPO_ROOT.parent / "shared" / "reference"

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def shared_reference() -> Path:
    """../shared/reference (split lists, checkpoint key list); skip the test when absent."""
    if not SHARED_REFERENCE.is_dir():
        pytest.skip("../shared/reference is not available")
    return SHARED_REFERENCE

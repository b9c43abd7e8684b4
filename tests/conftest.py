"""Shared fixtures: tiny models, images and checkpoints (no downloads, CPU only)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_REFERENCE = REPO_ROOT.parent / "shared" / "reference"

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def shared_reference() -> Path:
    """../shared/reference (split lists, checkpoint key list); skip the test when absent."""
    if not SHARED_REFERENCE.is_dir():
        pytest.skip("../shared/reference is not available")
    return SHARED_REFERENCE

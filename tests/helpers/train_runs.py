"""Tiny `hmfss train` runs of the VAT and ASNet heads, shared by the CLI tests.

The VAT learner's 4D volumes have a fixed size whatever the input size, so one training
episode costs ~10-20 s on a CPU: each head is trained once per test session (1 epoch, one
1-shot episode, one validation episode) and the tests read the run directory.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from types import SimpleNamespace

import torch

from .tiny_data import make_fss

TEST_CLASSES = ("zebra_fish", "apple_pie")


def fss_with_training_classes(root: Path) -> SimpleNamespace:
    """Tiny FSS-1000 with images for a training (abacus), a val (banjo) and two test classes."""
    data = make_fss(root, categories=TEST_CLASSES + ("abacus", "banjo"), trn=("abacus",), val=("banjo",))
    (data.splits / "fss" / "test.txt").write_text("\n".join(TEST_CLASSES) + "\n")
    return data


def train_args(arch: str, data: SimpleNamespace, run: Path, *extra: str) -> list[str]:
    """`hmfss train` arguments: one epoch of one 1-shot episode, one validation episode."""
    return ["train", "--arch", arch, "--benchmark", "fss", "--datapath", str(data.datapath),
            "--splits", str(data.splits), "--backbone", "efficientnet-lite0", "--masking", "hm",
            "--bsz", "1", "--epochs", "1", "--episodes-per-epoch", "1", "--val-episodes", "1",
            "--workers", "0", "--no-tensorboard", "--no-progress", "--logdir", str(run), *extra]


# ASNet needs inputs of at least ~257 px; VAT runs at its recipe's size (473 for FSS-1000)
EXTRA = {"vat": (), "asnet": ("--img-size", "257")}


def train_head(arch: str, root: Path) -> SimpleNamespace:
    """Train ``arch`` on tiny FSS data under ``root`` with one thread; returns rc, run, data."""
    from hmfss.cli.main import main

    data = fss_with_training_classes(root / "data")
    run = root / "run"
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        # the run's console lines would land in whichever test first asks for the run (which
        # one depends on how tests are spread over processes): keep them out; log.txt has them
        with contextlib.redirect_stderr(io.StringIO()):
            rc = main(train_args(arch, data, run, *EXTRA[arch]))
    finally:
        torch.set_num_threads(before)
    return SimpleNamespace(rc=rc, run=run, data=data, arch=arch)

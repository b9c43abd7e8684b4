"""``kill -9`` of a real ``hmfss train`` process at controlled points, then the documented
``hmfss train --resume RUN``: the final weights equal an uninterrupted run's bit for bit and no
temp file of an interrupted write remains.

The kills happen before the first optimisation step's successor (no checkpoint yet), right
after a checkpoint's temp file is written but before its rename (last.pt, then best.pt), and in
the middle of an epoch after a mid-epoch checkpoint. Each resumption starts where the previous
process left a finished checkpoint (from the beginning when there is none).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import hmfss
from hmfss.atomic import is_own_temp
from hmfss.cli.main import main
from hmfss.data.synthetic import SyntheticParams, generate
from helpers import assert_same_tensors, one_thread, without_timing  # noqa: F401  (one_thread: autouse fixture)

pytestmark = pytest.mark.slow  # seconds per test: scheduled first (tests/conftest.py)

KILLER = Path(__file__).with_name("killed_train.py")


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    generate(root, SyntheticParams(classes=8, images_per_class=3, size=32, seed=2, test_ratio=0.25, val_ratio=0.25))
    return root


def _args(bench: Path, run: Path) -> list[str]:
    """2 epochs x 3 steps of 2 episodes; last.pt also after step 2 of each epoch."""
    return ["train", "--benchmark", "fss", "--datapath", str(bench), "--splits", str(bench / "splits"),
            "--backbone", "efficientnet-lite0", "--img-size", "32", "--bsz", "2", "--episodes-per-epoch", "6",
            "--epochs", "2", "--val-episodes", "2", "--checkpoint-every", "2", "--workers", "0",
            "--no-tensorboard", "--no-progress", "--logdir", str(run)]


def _killed(point: str, n: int, args: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(Path(hmfss.__file__).parents[1]), "OMP_NUM_THREADS": "1",
           "OMP_WAIT_POLICY": "PASSIVE"}
    return subprocess.run([sys.executable, str(KILLER), point, str(n), "--", *args], env=env,
                          capture_output=True, text=True, timeout=120)


def _temps(run: Path) -> list[str]:
    return sorted(p.name for p in run.iterdir() if is_own_temp(p.name))


def _load(path: Path) -> dict:
    return torch.load(path, weights_only=True)


def _history(run: Path) -> list[dict]:
    return without_timing([json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()])


def test_kill_9_at_any_point_then_resume_equals_an_uninterrupted_run(bench, tmp_path):
    assert main(_args(bench, tmp_path / "full")) == 0
    run = tmp_path / "cut"
    resume = ["train", "--resume", str(run)]

    # 1. killed before its second step: config.yaml, no checkpoint at all
    done = _killed("step", 2, _args(bench, run))
    assert done.returncode == -9, done.stderr
    assert (run / "config.yaml").is_file() and not (run / "last.pt").exists()

    # 2. resumed (from the beginning), killed while writing the first last.pt (after step 2)
    done = _killed("write:last.pt", 1, resume)
    assert done.returncode == -9, done.stderr
    assert "starting the run from the beginning" in (run / "log.txt").read_text()
    assert not (run / "last.pt").exists() and [n[:9] for n in _temps(run)] == [".last.pt."]

    # 3. resumed (from the beginning again; the stale temp goes), killed while writing best.pt
    done = _killed("write:best.pt", 1, resume)
    assert done.returncode == -9, done.stderr
    assert "removed 1 temp file(s) of interrupted writes: .last.pt." in (run / "log.txt").read_text()
    assert (_load(run / "last.pt")["epoch"], _load(run / "last.pt")["step"]) == (0, 2)
    assert [n[:9] for n in _temps(run)] == [".best.pt."] and not (run / "best.pt").exists()

    # 4. resumed at epoch 1 step 2, killed in the middle of epoch 2 (before its 3rd step)
    done = _killed("step", 4, resume)
    assert done.returncode == -9, done.stderr
    assert (_load(run / "last.pt")["epoch"], _load(run / "last.pt")["step"]) == (1, 2)
    assert _temps(run) == []

    # 5. the documented command finishes the run
    assert main(resume) == 0
    assert _temps(run) == []
    for name in ("last.pt", "best.pt"):
        full, cut = _load(tmp_path / "full" / name), _load(run / name)
        assert_same_tensors(full["model"], cut["model"])
        assert full["epoch"] == cut["epoch"]
    full, cut = _load(tmp_path / "full" / "last.pt"), _load(run / "last.pt")
    for sa, sb in zip(full["optimizer"]["state"].values(), cut["optimizer"]["state"].values()):
        assert_same_tensors(sa, sb)
    assert _history(tmp_path / "full") == _history(run)

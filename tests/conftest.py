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

# the tests allocate and free large tensors all the time: keep freed memory for reuse instead
# of mapping it in again (the kernel's page faults were a large share of the suite's time)
from hmfss.fast.memory import keep_freed_memory  # noqa: E402

keep_freed_memory()


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests sharing the session's trained VAT/ASNet runs go to one worker process (the runs
    are made once there); those and the tests marked ``slow`` are scheduled first, so that
    the parallel run does not end with one process busy and the other idle."""
    for item in items:
        if "trained_head" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.xdist_group("trained_head"))

    def rank(item: pytest.Item) -> int:
        if item.get_closest_marker("xdist_group"):
            return 0
        return 1 if item.get_closest_marker("slow") else 2

    items.sort(key=rank)


@pytest.fixture(scope="session")
def shared_reference() -> Path:
    """../shared/reference (split lists, checkpoint key list); skip the test when absent."""
    if not SHARED_REFERENCE.is_dir():
        pytest.skip("../shared/reference is not available")
    return SHARED_REFERENCE


@pytest.fixture(scope="session")
def trained_head(tmp_path_factory):
    """``trained_head(arch)``: a tiny `hmfss train` run of ``arch`` ("vat", "asnet"), made once
    per session on first use (see helpers/train_runs.py)."""
    from helpers.train_runs import train_head

    runs = {}

    def get(arch: str):
        if arch not in runs:
            runs[arch] = train_head(arch, tmp_path_factory.mktemp(f"trained-{arch}"))
        return runs[arch]

    return get


@pytest.fixture
def compiled_graphs(monkeypatch):
    """The FX graphs ``nn.Module.compile`` hands its backend, in a list. Within the test a
    compile traces with dynamo and runs the traced graph as is (no code generation: seconds
    instead of a minute or more on a CPU), computing what the eager module computes; each
    graph's ``calls`` counts the runs of its compiled form."""
    graphs = []

    def record(graph, example_inputs):
        graphs.append(graph)
        graph.calls = 0

        def run(*args):
            graph.calls += 1
            return graph.forward(*args)
        return run

    real = torch.nn.Module.compile
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, **kwargs: real(self, backend=record, **kwargs))
    yield graphs
    torch._dynamo.reset()


@pytest.fixture(autouse=True)
def short_matmul_peak(monkeypatch):
    """Benchmarks measure the machine's matmul rate for 1 s by default; the tests only read the
    figure, so a tenth of that is enough (the bound itself is tested with its own budget)."""
    from hmfss.evaluation import timing

    monkeypatch.setattr(timing, "PEAK_BUDGET_S", 0.1)


@pytest.fixture(autouse=True)
def default_pixel_limit():
    """The CLI's --max-pixels sets a process-wide limit: every test starts and ends with the default."""
    from hmfss.data import io

    io.set_max_pixels(io.DEFAULT_MAX_PIXELS)
    yield
    io.set_max_pixels(io.DEFAULT_MAX_PIXELS)

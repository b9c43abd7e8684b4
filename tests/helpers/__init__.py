"""Test helpers shared across the suite (importable as ``helpers``)."""

from __future__ import annotations

import contextlib

import pytest
import torch


def make_episode(batch: int = 1, shots: int = 1, size: int = 64, seed: int = 0):
    """Random normalised images and blob masks: (B,3,S,S), (B,K,3,S,S), (B,K,S,S)."""
    gen = torch.Generator().manual_seed(seed)
    query = torch.randn(batch, 3, size, size, generator=gen)
    supports = torch.randn(batch, shots, 3, size, size, generator=gen)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    masks = torch.zeros(batch, shots, size, size)
    for b in range(batch):
        for k in range(shots):
            cy, cx = torch.randint(size // 4, 3 * size // 4, (2,), generator=gen).tolist()
            r = int(torch.randint(size // 8, size // 3, (1,), generator=gen))
            masks[b, k] = (((yy - cy) ** 2 + (xx - cx) ** 2) <= r * r).float()
    return query, supports, masks


@contextlib.contextmanager
def on_meta():
    """Build and run on the meta device (shapes only), with hmfss's quick resizes of meta
    tensors (PyTorch's own take ~30 ms each: most of a VAT or ASNet pass)."""
    from hmfss.meta import quick_meta_resize

    with torch.device("meta"), quick_meta_resize():
        yield


def plain_and_deterministic(fn):
    """``fn()`` on two threads, then again under PyTorch's deterministic mode (which runs
    kernels that add with atomics serially, or refuses them): the pair of results. A
    computation whose results do not depend on how threads interleave gives equal ones."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        plain = fn()
        torch.use_deterministic_algorithms(True)
        try:
            return plain, fn()
        finally:
            torch.use_deterministic_algorithms(False)
    finally:
        torch.set_num_threads(threads)


def saved_tiny_model(folder):
    """A seeded tiny HSNet-HM (Lite0, 32 px) saved in ``folder``: (model, path, the saved payload)."""
    from hmfss import build_model, save_checkpoint

    torch.manual_seed(0)
    model = build_model("hsnet", "efficientnet-lite0", "hm", img_size=32)
    path = save_checkpoint(model, folder / "tiny.pt")
    return model, path, torch.load(path, weights_only=True)


def assert_same_tensors(a: dict, b: dict) -> None:
    """Two name -> tensor mappings (state dicts, optimizer states) with the same names and
    bit-identical tensors."""
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def without_timing(rows: list[dict]) -> list[dict]:
    """Training history rows without the fields that measure time (they differ between
    otherwise identical runs)."""
    from hmfss.training.rundir import TIMING_FIELDS  # here: every test process imports this module

    return [{k: v for k, v in r.items() if k not in TIMING_FIELDS} for r in rows]


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: one thread is as fast, and immune to OpenMP spin-waits on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

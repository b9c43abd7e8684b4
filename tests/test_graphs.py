"""Recorded episodes (hmfss.fast.graphs): the replay bookkeeping, on the CPU with a recorder
that recomputes instead of replaying, and what lets a CUDA graph record the model at all:
no operation waits for the device or uses host memory (checked with device-less meta tensors)."""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from hmfss import build_model
from hmfss.errors import HmfssError
from hmfss.evaluation.benchmark import BenchmarkConfig, format_table, run_benchmark
from hmfss.fast.graphs import cuda_graphed, record_eager
from hmfss.heads import HEADS


def test_replay_computes_on_each_calls_inputs_and_returns_an_independent_tensor():
    calls = []

    def fn(a, b):
        calls.append(1)
        return a * 2 + b

    graphed = cuda_graphed(fn, torch.zeros(2, 3), torch.zeros(3), recorder=record_eager)
    a, b = torch.arange(6.0).reshape(2, 3), torch.tensor([1.0, -1.0, 0.5])
    first = graphed(a, b)
    assert torch.equal(first, torch.tensor([[1.0, 1.0, 4.5], [7.0, 7.0, 10.5]]))
    second = graphed(torch.ones(2, 3), torch.zeros(3))
    assert torch.equal(second, torch.full((2, 3), 2.0))
    assert torch.equal(first, torch.tensor([[1.0, 1.0, 4.5], [7.0, 7.0, 10.5]]))  # not overwritten
    assert len(calls) == 3  # recorded once, replayed twice
    a.fill_(100.0)  # the caller's tensors are copied in, never kept
    assert torch.equal(graphed(torch.ones(2, 3), torch.zeros(3)), second)


@pytest.mark.parametrize("args, message", [
    ((torch.zeros(2, 4), torch.zeros(3)),
     r"input 0 must be \(2, 3\) torch.float32 on cpu \(the recorded shape\), got \(2, 4\)"),
    ((torch.zeros(2, 3), torch.zeros(3, dtype=torch.float64)),
     r"input 1 must be \(3,\) torch.float32 .* got \(3,\) torch.float64"),
    ((torch.zeros(2, 3),), "takes 2 tensors, got 1"),
    ((torch.zeros(2, 3), [0.0, 0.0, 0.0]), "input 1 must be .* got list"),
])
def test_replay_refuses_inputs_unlike_the_recorded_ones(args, message):
    graphed = cuda_graphed(lambda a, b: a + b, torch.zeros(2, 3), torch.zeros(3), recorder=record_eager)
    with pytest.raises(HmfssError, match=message):
        graphed(*args)


def test_recording_needs_cuda_and_reports_a_failure_in_one_line():
    with pytest.raises(HmfssError, match="example input 1 must be a tensor, got float"):
        cuda_graphed(lambda a, b: a + b, torch.zeros(2), 1.0, recorder=record_eager)
    with pytest.raises(HmfssError, match="must return one tensor, got list"):
        cuda_graphed(lambda a: [a, a], torch.zeros(2), recorder=record_eager)
    with pytest.raises(HmfssError, match="CUDA graphs need inputs on a CUDA device, got cpu"):
        cuda_graphed(lambda a: a + 1, torch.zeros(2))

    def failing(fn):
        raise RuntimeError("operation not permitted when stream is capturing\nCUDA kernel errors ...")

    with pytest.raises(HmfssError, match=r"could not be recorded as a CUDA graph: operation not permitted "
                                         r"when stream is capturing$"):
        cuda_graphed(lambda a: a + 1, torch.zeros(2), recorder=failing)


class OffDevice(TorchDispatchMode):
    """Records every operation that reads or makes a tensor off the meta device."""

    def __init__(self):
        super().__init__()
        self.seen: list[str] = []
        self.ops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.ops += 1
        tensors = [t for t in tree_flatten((args, kwargs, out))[0] if isinstance(t, torch.Tensor)]
        self.seen += [f"{func} on {t.device}" for t in tensors if t.device.type != "meta"]
        return out


@pytest.mark.parametrize("arch", sorted(HEADS))
def test_every_head_records_no_host_tensor_and_no_device_wait(arch):
    """An episode (2-shot predict_mask) and a fixed-support query (segment) on meta tensors:
    a value read on the host (``.item()``, ``nonzero``, a Python branch on data) raises on
    meta, and an operation on a CPU tensor is recorded; either would stop a CUDA graph."""
    with torch.device("meta"):
        model = build_model(arch, "resnet50", "hm").eval()
    s = model.config.img_size
    query, supports, masks = (torch.empty(*shape, device="meta") for shape in
                              ((1, 3, s, s), (1, 2, 3, s, s), (1, 2, s, s)))
    watch = OffDevice()
    with torch.no_grad(), watch:
        mask = model.predict_mask(query, supports, masks)
        state = model.encode_support(supports, masks)
        segmented = model.segment(query, state)
    assert mask.shape == segmented.shape == (1, s, s) and mask.device.type == "meta"
    assert watch.ops > 500 and watch.seen == []
    assert model.fast_path._buffers() == {}  # off the CPU nothing is kept from call to call


def test_correlation_memory_is_kept_between_calls_on_the_cpu_only():
    """A recorded graph writes where its recording allocated; memory the model kept and later
    freed (a buffer replaced for another shape) would be written after being handed out again."""
    for device in ("cpu", "meta"):
        with torch.device(device):
            model = build_model("hsnet", "efficientnet-lite0", "hm").eval()
            q, s, m = torch.zeros(1, 3, 32, 32), torch.zeros(1, 1, 3, 32, 32), torch.ones(1, 1, 32, 32)
            with torch.no_grad():
                model.predict_mask(q, s, m)
        assert bool(model.fast_path._buffers()) == (device == "cpu"), device


def test_benchmark_times_recorded_episodes_and_compares_their_masks():
    cfg = BenchmarkConfig(backbone="efficientnet-lite0", img_size=64, repeats=2, warmup=1, stream_queries=2,
                          naive=False, cuda_graph=True)
    torch.manual_seed(0)
    model = build_model("hsnet", "efficientnet-lite0", "hm", img_size=64).eval()
    result = run_benchmark(cfg, model, recorder=record_eager)
    assert result["graph_masks_equal"] is True and result["graph_stream_masks_equal"] is True
    assert 0 < result["graph_episode"]["min_s"] <= result["graph_episode"]["median_s"]
    assert result["graph_stream_queries_per_s"] > 0
    table = format_table(result)
    assert "s / episode, CUDA graph" in table and "queries / s, fixed support, CUDA graph" in table
    assert "graph_episode" not in run_benchmark(BenchmarkConfig(
        backbone="efficientnet-lite0", img_size=64, repeats=1, stream_queries=1, naive=False), model)

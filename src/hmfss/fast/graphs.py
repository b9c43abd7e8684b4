"""Replaying a recorded CUDA graph instead of launching an episode's kernels one by one.

At batch 1 on a GPU an episode is well over a thousand small operations; the GPU finishes
each before the Python side has issued the next, so the time is launch overhead. Recorded once for fixed
input shapes, the whole episode is one graph launch. The model runs no operation that
waits for the device or touches host memory (tests/test_graphs.py checks this on every
head with device-less meta tensors), so it can be recorded.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from hmfss.errors import HmfssError

Recorder = Callable[[Callable[[], Tensor]], tuple[Tensor, Callable[[], None]]]


class Replay:
    """Calls ``replay`` on inputs shaped like the recorded ones.

    ``inputs``: the tensors the recorded work reads; ``output``: the tensor it writes.
    A call copies its arguments into ``inputs``, replays and returns a copy of ``output``
    (the next replay overwrites it).
    """

    def __init__(self, inputs: tuple[Tensor, ...], output: Tensor, replay: Callable[[], None]):
        self.inputs, self.output, self._replay = inputs, output, replay

    def __call__(self, *args: Tensor) -> Tensor:
        if len(args) != len(self.inputs):
            raise HmfssError(f"the recorded episode takes {len(self.inputs)} tensors, got {len(args)}")
        for i, (arg, static) in enumerate(zip(args, self.inputs)):
            if _describe(arg) != _describe(static):
                raise HmfssError(f"input {i} must be {_describe(static)} (the recorded shape), got {_describe(arg)}")
        for arg, static in zip(args, self.inputs):
            static.copy_(arg)
        self._replay()
        return self.output.clone()


def _describe(t: object) -> str:
    return f"{tuple(t.shape)} {t.dtype} on {t.device}" if isinstance(t, Tensor) else type(t).__name__


def record_cuda(fn: Callable[[], Tensor], warmup: int = 3) -> tuple[Tensor, Callable[[], None]]:
    """Record ``fn`` (reading tensors that stay in place) as a CUDA graph.

    A few runs on a side stream first let cuBLAS/cuDNN set up their workspaces and the model
    fill its caches outside the recording; returns (the output it writes, replay)."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(warmup):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        output = fn()
    return output, graph.replay


def record_eager(fn: Callable[[], Tensor]) -> tuple[Tensor, Callable[[], None]]:
    """The same contract as :func:`record_cuda` on any device, without a graph: each replay
    recomputes ``fn`` into the first output (for tests of :class:`Replay` on the CPU)."""
    output = fn()
    return output, lambda: output.copy_(fn())


def cuda_graphed(fn: Callable[..., Tensor], *examples: Tensor, recorder: Recorder | None = None) -> Replay:
    """``fn(*inputs)`` recorded for inputs shaped like ``examples``; the result is called like ``fn``.

    ``fn`` must return one tensor and depend on its arguments' values only through the
    tensors (shapes are fixed at recording). Gradients are off while recording; wrap
    autocast inside ``fn`` with ``cache_enabled=False``. Default recorder: a CUDA graph,
    which needs the examples on a CUDA device. The graph reads every other tensor (the
    model's weights) where it was at recording: in-place changes such as
    ``load_state_dict`` are seen, a model moved or rebuilt needs a new recording.
    """
    for i, e in enumerate(examples):
        if not isinstance(e, Tensor):
            raise HmfssError(f"example input {i} must be a tensor, got {type(e).__name__}")
    if recorder is None:
        off_cuda = [str(e.device) for e in examples if e.device.type != "cuda"]
        if off_cuda:
            raise HmfssError(f"CUDA graphs need inputs on a CUDA device, got {off_cuda[0]}")
        recorder = record_cuda
    inputs = tuple(e.detach().clone() for e in examples)

    def run() -> Tensor:
        with torch.no_grad():
            return fn(*inputs)

    try:
        output, replay = recorder(run)
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise HmfssError(f"the episode could not be recorded as a CUDA graph: {first}") from err
    if not isinstance(output, Tensor):
        raise HmfssError(f"a recorded function must return one tensor, got {type(output).__name__}")
    return Replay(inputs, output, replay)

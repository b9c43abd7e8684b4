"""Timing pieces shared by the inference and training benchmarks: repeated timed calls with
their summary, the machine's matmul rate, FLOP counting, peak memory and the device's name."""

from __future__ import annotations

import platform
import resource
import statistics
import time
from pathlib import Path
from typing import Any, Callable

import torch

from hmfss.fast.folding import PACKED_CONVS


def synchronizer(device: torch.device) -> Callable[[], None]:
    """A function that waits for ``device``'s queued work (nothing to wait for on the CPU)."""
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


def repeat_timings(fn: Callable[[], Any], repeats: int, warmup: int, sync: Callable[[], None]) -> list[float]:
    """Seconds of each of ``repeats`` calls of ``fn`` after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    sync()
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        out.append(time.perf_counter() - start)
    return out


def summarise(times: list[float]) -> dict[str, float]:
    """Median, min, max and standard deviation of a list of seconds."""
    return {
        "median_s": statistics.median(times),
        "min_s": min(times),
        "max_s": max(times),
        "stdev_s": statistics.stdev(times) if len(times) > 1 else 0.0,
    }


PEAK_BUDGET_S = 1.0  # default time for matmul_peak (the test suite lowers it)


def matmul_peak(device: torch.device, dtype: torch.dtype = torch.float32, budget_s: float | None = None) -> float:
    """GFLOP/s of the fastest square matmul measured on ``device`` within about ``budget_s``
    (default ``PEAK_BUDGET_S``).

    The side n starts at 256 and doubles (up to 2048 on the CPU, 8192 elsewhere) while the
    next size is predicted (8x the last product) to fit in what is left of the budget, so a
    dtype the machine emulates (bf16 on CPUs without native bf16) stops at a small n instead
    of running for minutes.
    """
    budget_s = PEAK_BUDGET_S if budget_s is None else budget_s
    sync = synchronizer(device)
    largest = 2048 if device.type == "cpu" else 8192
    start, best, n, last = time.perf_counter(), 0.0, 256, 0.0
    while n <= largest and (n == 256 or 8 * last < budget_s - (time.perf_counter() - start)):
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)
        for run in range(4):  # the first run warms up
            tick = time.perf_counter()
            a @ b
            sync()
            last = time.perf_counter() - tick
            if run:
                best = max(best, 2 * n**3 / last / 1e9)
            if time.perf_counter() - start > budget_s:
                break
        n *= 2
    return best


def _count_packed_convs() -> None:
    """Give torch's FLOP counter the conv formula for oneDNN's packed conv ops (used by the CPU
    folded backbone, see fast.folding.PackedConv2d), which it does not know: the plain op takes
    (x, weight, ...), the in-place residual sum (other, x, weight, ...)."""
    from torch.utils.flop_counter import conv_flop_count, flop_registry, register_flop_formula

    if not PACKED_CONVS or torch.ops.mkldnn._convolution_pointwise in flop_registry:
        return

    @register_flop_formula(torch.ops.mkldnn._convolution_pointwise)
    def _packed_conv_flop(x_shape, w_shape, *args, out_shape=None, **kwargs) -> int:
        return conv_flop_count(x_shape, w_shape, out_shape)

    @register_flop_formula(torch.ops.mkldnn._convolution_pointwise_)
    def _packed_conv_add_flop(other_shape, x_shape, w_shape, *args, out_shape=None, **kwargs) -> int:
        return conv_flop_count(x_shape, w_shape, out_shape)


def count_flops(fn: Callable[[], Any]) -> int:
    """FLOPs of one call, backward passes run inside it included (torch.utils.flop_counter:
    2 per multiply-add; convolutions and matmuls). Compiled modules run eagerly here, so that
    every operation is counted and nothing is compiled again for the counter."""
    from torch.utils.flop_counter import FlopCounterMode

    _count_packed_convs()
    with torch.compiler.set_stance("force_eager"), FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU's with its instruction set and torch's thread count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{cpu_model()} {torch.backends.cpu.get_cpu_capability()} ({torch.get_num_threads()} threads)"


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo where there is one)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory(device: torch.device) -> dict[str, Any]:
    """Peak memory in MB: the most allocated on a GPU (since the last reset), else the
    process's peak resident set."""
    if device.type == "cuda":
        return {"peak_memory_mb": torch.cuda.max_memory_allocated(device) / 2**20,
                "peak_memory_kind": "max allocated (GPU)"}
    return {"peak_memory_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "peak_memory_kind": "peak RSS of the process"}


def table_text(rows: list[tuple[str, str]], result: dict[str, Any]) -> str:
    """Aligned ``name  value`` lines, plus a warning row when the result's bf16 autocast ran
    emulated (``config.amp`` without ``bf16_native``)."""
    if result["config"]["amp"] and not result["bf16_native"]:
        rows = rows + [("bf16", "EMULATED on this CPU (no native bf16 instructions): --amp is slower than fp32 here")]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)

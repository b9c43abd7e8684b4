"""What the machine can do natively: bf16 arithmetic on the CPU.

CPUs without native bf16 instructions (AVX-512 BF16 or AMX; AVX2-only machines such as many
AMD EPYC) emulate bf16 matmuls and convolutions, typically tens of times slower than fp32, so
bf16 autocast (``--amp``) makes them slower, not faster.
"""

from __future__ import annotations

import torch


def bf16_is_native(device: torch.device | str) -> bool:
    """True where bf16 matmuls/convolutions run in hardware: CUDA devices with bf16 support,
    CPUs where oneDNN has native bf16 kernels."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return True  # other accelerators: assume their autocast dtype is native


def bf16_warning(device: torch.device | str) -> str | None:
    """A one-line warning where bf16 autocast would be emulated on ``device``, else None."""
    if bf16_is_native(device):
        return None
    return (f"bf16 is emulated on this CPU ({torch.backends.cpu.get_cpu_capability()}, no native bf16 "
            "instructions): --amp runs much slower than fp32 here")

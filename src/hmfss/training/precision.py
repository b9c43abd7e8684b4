"""Mixed precision of a training run: the autocast dtype and the gradient scaler.

With ``amp`` the forward pass runs under autocast in bf16 where the device supports it (CPUs,
recent GPUs), else in fp16 with a gradient scaler against underflow (older GPUs).
"""

from __future__ import annotations

import contextlib

import torch


def autocast_dtype(device: torch.device) -> torch.dtype:
    """bf16 where supported (CPU, recent GPUs), else fp16 (older GPUs, with a grad scaler)."""
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return torch.float16
    return torch.bfloat16


def autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager:
    """Autocast in :func:`autocast_dtype` when ``enabled``, else nothing."""
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=autocast_dtype(device))


def grad_scaler(device: torch.device, amp: bool) -> torch.amp.GradScaler:
    """A gradient scaler, enabled only for fp16 autocast (bf16 needs none)."""
    enabled = amp and device.type == "cuda" and autocast_dtype(device) == torch.float16
    return torch.amp.GradScaler("cuda", enabled=enabled)


def describe_amp(device: torch.device, amp: bool) -> str:
    """For the log: "on (bfloat16)" or "off"."""
    return f"on ({str(autocast_dtype(device)).replace('torch.', '')})" if amp else "off"

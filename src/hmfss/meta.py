"""Shape-only runs on the meta device, made quick.

The library checks input sizes by running the backbone and a head's support masking on meta
tensors (shapes, no data). On meta, PyTorch computes bilinear and nearest resizing through a
Python decomposition of a few dozen small ops: ~30 ms a call, which is most of a meta pass
of a head that resizes many maps (VAT, ASNet). Inside :func:`quick_meta_resize` a resize of a
meta tensor returns an empty tensor of the output shape at once.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch.utils._python_dispatch import TorchDispatchMode

# resize ops whose second argument is the output size (the form F.interpolate reaches)
RESIZE_OPS = (
    torch.ops.aten.upsample_bilinear2d.default,
    torch.ops.aten.upsample_nearest2d.default,
    torch.ops.aten.upsample_bicubic2d.default,
)


def resized_like(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """An empty (..., h, w) tensor like ``x`` (N, C, H, W), in the memory format the resize
    kernels give: channels-last for a channels-last input, contiguous otherwise."""
    channels_last = x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    return torch.empty((*x.shape[:-2], *size), dtype=x.dtype, device=x.device, memory_format=layout)


class _QuickMetaResize(TorchDispatchMode):
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in RESIZE_OPS and args[0].device.type == "meta" and min(*args[0].shape[-2:], *args[1]) > 0:
            return resized_like(args[0], tuple(args[1]))  # (empty sizes: PyTorch's kernel raises)
        return func(*args, **(kwargs or {}))


@contextlib.contextmanager
def quick_meta_resize() -> Iterator[None]:
    """Within: bilinear, nearest and bicubic 2D resizes of meta tensors skip PyTorch's
    decomposition (same shapes and strides); every other op runs as usual."""
    with _QuickMetaResize():
        yield

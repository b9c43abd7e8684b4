"""CPU inference copies of a backbone: BatchNorm folded into the convs, weights packed for oneDNN."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hmfss.backbones.base import Backbone


def _has_packed_convs() -> bool:
    try:  # oneDNN's own conv ops (the ones TorchInductor uses for frozen CPU convs)
        return (torch.backends.mkldnn.is_available()
                and hasattr(torch.ops.mkldnn, "_reorder_convolution_weight")
                and hasattr(torch.ops.mkldnn, "_convolution_pointwise"))
    except (AttributeError, RuntimeError):
        return False


PACKED_CONVS = _has_packed_convs()


class PackedConv2d(nn.Module):
    """Inference conv that keeps its weights in oneDNN's own layout for channels-last CPU passes.

    ``F.conv2d`` reorders the weights into that layout at every call; here they are reordered
    once for an input shape, and again only when the shape or the weights change, so a result
    depends on the input alone. Inputs it is not for (another device or dtype, NCHW,
    autocast, autograd) go through ``F.conv2d``. Packed weights are never copied or pickled:
    a copy packs its own.
    """

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        self.weight, self.bias = conv.weight, conv.bias
        self.stride, self.padding, self.dilation, self.groups = conv.stride, conv.padding, conv.dilation, conv.groups
        self._args = (list(conv.padding), list(conv.stride), list(conv.dilation), conv.groups)  # the oneDNN ops' form
        self._packed: tuple[tuple, Tensor] | None = None  # ((weight version, input shape), packed weight)

    def _packable(self, x: Tensor) -> bool:
        return (PACKED_CONVS and x.device.type == "cpu" and x.dtype == self.weight.dtype == torch.float32
                and x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last)
                and not torch.is_autocast_enabled("cpu")
                and not (torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad)))

    def forward(self, x: Tensor) -> Tensor:
        if not self._packable(x):
            return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)
        version = None if self.weight.is_inference() else self.weight._version  # inference tensors have none
        key = (self.weight.data_ptr(), version, tuple(x.shape))
        packed = self._packed  # read once: another thread may pack for another shape meanwhile
        if packed is None or packed[0] != key:
            weight = self.weight.detach().contiguous(memory_format=torch.channels_last)
            packed = self._packed = key, torch.ops.mkldnn._reorder_convolution_weight(weight, *self._args, list(x.shape))
        return torch.ops.mkldnn._convolution_pointwise(x, packed[1], self.bias, *self._args, "none", [], "")

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_packed": None}  # oneDNN's opaque tensors cannot be copied


def fold_backbone(backbone: Backbone) -> Backbone:
    """Inference copy with every BatchNorm folded into its conv and channels-last weights.

    Same maps up to float rounding: W' = W * g / sqrt(v + eps), b' = (b - m) * g / sqrt(v + eps)
    + beta. It spares a memory pass per BatchNorm and a weight re-layout per conv in
    channels-last passes. The original is left untouched.
    """
    copied = copy.deepcopy(backbone)
    with torch.no_grad():
        for parent, conv_name, bn_name in list(copied.conv_bn_pairs()):
            conv, bn = getattr(parent, conv_name), getattr(parent, bn_name)
            scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps)
            bias = conv.bias if conv.bias is not None else torch.zeros_like(scale)
            conv.weight = nn.Parameter(conv.weight * scale.view(-1, 1, 1, 1))
            conv.bias = nn.Parameter((bias - bn.running_mean) * scale + bn.bias)
            setattr(parent, bn_name, nn.Identity())
    for param in copied.parameters():
        param.requires_grad_(False)
    copied = copied.to(memory_format=torch.channels_last)
    for parent in list(copied.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Conv2d and isinstance(child.padding, tuple):
                setattr(parent, name, PackedConv2d(child))
    return copied

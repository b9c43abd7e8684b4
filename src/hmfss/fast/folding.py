"""CPU inference copies of a backbone: BatchNorm folded into the convs, weights packed for oneDNN,
and in ResNets the ReLUs and residual sums run inside those convs."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hmfss.backbones.base import Backbone
from hmfss.backbones.resnet import Bottleneck, ResNetBackbone


def _has_packed_convs() -> bool:
    try:  # oneDNN's own conv ops (the ones TorchInductor uses for frozen CPU convs)
        return (torch.backends.mkldnn.is_available()
                and hasattr(torch.ops.mkldnn, "_reorder_convolution_weight")
                and hasattr(torch.ops.mkldnn, "_convolution_pointwise")
                and hasattr(torch.ops.mkldnn, "_convolution_pointwise_"))
    except (AttributeError, RuntimeError):
        return False


PACKED_CONVS = _has_packed_convs()


class PackedConv2d(nn.Module):
    """Inference conv that keeps its weights in oneDNN's own layout for channels-last CPU passes.

    ``F.conv2d`` reorders the weights into that layout at every call; here they are reordered
    once for an input shape, and again only when the shape or the weights change, so a result
    depends on the input alone. ``relu``: a ReLU follows, inside oneDNN's conv where packed.
    Inputs it is not for (another device or dtype, NCHW, autocast, autograd) go through
    ``F.conv2d``. Packed weights are never copied or pickled: a copy packs its own.
    """

    def __init__(self, conv: nn.Conv2d, relu: bool = False):
        super().__init__()
        self.weight, self.bias = conv.weight, conv.bias
        self.stride, self.padding, self.dilation, self.groups = conv.stride, conv.padding, conv.dilation, conv.groups
        self.relu = relu
        self._args = (list(conv.padding), list(conv.stride), list(conv.dilation), conv.groups)  # the oneDNN ops' form
        self._packed: tuple[tuple, Tensor] | None = None  # ((weight version, input shape), packed weight)

    def _packable(self, x: Tensor) -> bool:
        return (PACKED_CONVS and x.device.type == "cpu" and x.dtype == self.weight.dtype == torch.float32
                and x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last)
                and not torch.is_autocast_enabled("cpu")
                and not (torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad)))

    def _packed_weight(self, x: Tensor) -> Tensor:
        version = None if self.weight.is_inference() else self.weight._version  # inference tensors have none
        key = (self.weight.data_ptr(), version, tuple(x.shape))
        packed = self._packed  # read once: another thread may pack for another shape meanwhile
        if packed is None or packed[0] != key:
            weight = self.weight.detach().contiguous(memory_format=torch.channels_last)
            packed = self._packed = key, torch.ops.mkldnn._reorder_convolution_weight(weight, *self._args, list(x.shape))
        return packed[1]

    def forward(self, x: Tensor) -> Tensor:
        if not self._packable(x):
            out = F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)
            return F.relu_(out) if self.relu else out
        return torch.ops.mkldnn._convolution_pointwise(x, self._packed_weight(x), self.bias, *self._args,
                                                       "relu" if self.relu else "none", [], "")

    def add_to(self, x: Tensor, other: Tensor) -> Tensor:
        """conv(x) + other, (B, C_out, h, w); where packed the sum runs inside the conv and is
        written into ``other`` (same values: the conv's fp32 result plus ``other``)."""
        if self.relu or not (self._packable(x) and other.dtype == torch.float32 and other.dim() == 4
                             and other.is_contiguous(memory_format=torch.channels_last)
                             and not (torch.is_grad_enabled() and other.requires_grad)):
            return self(x).add_(other)
        return torch.ops.mkldnn._convolution_pointwise_.binary(other, x, self._packed_weight(x), self.bias,
                                                               *self._args, "add", 1.0, None, [], None)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_packed": None}  # oneDNN's opaque tensors cannot be copied


class FusedBottleneck(nn.Module):
    """A folded ResNet :class:`Bottleneck` whose ReLUs and residual sum run inside its packed
    convs: the same values, three passes over memory fewer. The sum is written into the
    identity branch, so an input without a downsample branch is overwritten."""

    def __init__(self, block: Bottleneck):
        super().__init__()
        self.conv1, self.conv2, self.conv3, self.downsample = block.conv1, block.conv2, block.conv3, block.downsample
        self.conv1.relu = self.conv2.relu = True

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        return self.conv3.add_to(self.conv2(self.conv1(x)), identity)


def _fuse_resnet(net: nn.Module) -> None:
    """Move a folded ResNet's ReLUs and residual sums into its packed convs (stem and blocks)."""
    if isinstance(net, ResNetBackbone) and isinstance(net.conv1, PackedConv2d):
        net.conv1.relu, net.relu = True, nn.Identity()  # the backbone's own ReLU is the stem's alone
    for parent in list(net.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is Bottleneck and all(isinstance(c, PackedConv2d) for c in (child.conv1, child.conv2, child.conv3)):
                setattr(parent, name, FusedBottleneck(child))


def fold_backbone(backbone: Backbone) -> Backbone:
    """Inference copy with every BatchNorm folded into its conv and channels-last weights
    (packed for oneDNN; in ResNets with the ReLUs and residual sums inside the convs).

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
    _fuse_resnet(copied)
    return copied

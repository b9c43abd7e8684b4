"""Quick resizes of meta tensors give what PyTorch's own meta kernels and real CPU tensors give."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from hmfss.meta import quick_meta_resize

MODES = [("bilinear", True), ("bilinear", False), ("bicubic", True), ("bicubic", False), ("nearest", None)]
TARGETS = [{"size": (7, 9)}, {"size": 5}, {"scale_factor": 0.37}, {"scale_factor": (2.5, 1.5)}]


def _resize(x, mode, align_corners, target):
    extra = {} if align_corners is None else {"align_corners": align_corners}
    return F.interpolate(x, mode=mode, **target, **extra)


@pytest.mark.parametrize("mode, align_corners, target, channels_last",
                         [(*m, t, c) for m, t, c in itertools.product(MODES, TARGETS, [False, True])])
def test_shapes_and_strides_equal_pytorchs_meta_kernels_and_the_cpu(mode, align_corners, target, channels_last):
    layout = torch.channels_last if channels_last else torch.contiguous_format
    meta = torch.empty(2, 3, 13, 17, device="meta").to(memory_format=layout)
    cpu = torch.rand(2, 3, 13, 17).to(memory_format=layout)
    plain = _resize(meta, mode, align_corners, target)
    with quick_meta_resize():
        quick = _resize(meta, mode, align_corners, target)
    real = _resize(cpu, mode, align_corners, target)
    assert quick.device.type == "meta" and quick.dtype == meta.dtype
    assert quick.shape == plain.shape == real.shape
    assert quick.stride() == plain.stride() == real.stride()


def test_real_tensors_and_other_ops_are_computed_as_usual_inside():
    x = torch.rand(1, 2, 6, 6)
    expected = F.interpolate(x, size=(4, 5), mode="bilinear", align_corners=True) * 2 + 1
    with quick_meta_resize():
        got = F.interpolate(x, size=(4, 5), mode="bilinear", align_corners=True) * 2 + 1
        summed = torch.empty(3, 4, device="meta").sum(0)
    assert torch.equal(got, expected)
    assert summed.shape == (4,) and summed.device.type == "meta"


@pytest.mark.parametrize("shape, size, mode", [((1, 1, 4, 4), (0, 3), "bilinear"), ((1, 1, 0, 4), (2, 3), "nearest")])
def test_empty_sizes_fail_as_they_fail_without_the_mode(shape, size, mode):
    def failure():
        try:
            F.interpolate(torch.empty(shape, device="meta"), size=size, mode=mode)
        except Exception as error:  # noqa: BLE001  (whatever PyTorch raises)
            return type(error)
        return None

    plain = failure()
    with quick_meta_resize():
        quick = failure()
    assert plain is not None and quick is plain

"""Support masking on the CPU: the rules of :mod:`hmfss.masking`, same values, less memory traffic.

Two changes, both exact (the rules are element-wise): the results are written into the
input-masked maps, which are the model's scratch; and ``hm`` computes its rule only inside
the smallest window holding the mask, since outside it FM is 0 (or NaN for an infinite
feature), never > 0, so IM is kept as it is. Outside autograd only.
"""

from __future__ import annotations

import torch
from torch import Tensor

from hmfss.masking import check_strategy, mask_support_features, needs_input_masking, resize_mask


def mask_window(resized: Tensor) -> tuple[slice, slice] | None:
    """Rows and columns of the smallest window of a resized (B, 1, h, w) mask holding every
    position where some image's mask is > 0; None where there is none. The whole map on
    accelerators (finding the window would wait for the device)."""
    if resized.device.type != "cpu":
        return slice(None), slice(None)
    inside = resized.amax(dim=(0, 1)) > 0
    rows, cols = inside.any(1).nonzero(), inside.any(0).nonzero()
    if rows.numel() == 0:
        return None
    return slice(int(rows[0]), int(rows[-1]) + 1), slice(int(cols[0]), int(cols[-1]) + 1)


def _fm_like(feat: Tensor, resized: Tensor, like: Tensor) -> Tensor:
    """FM = (B, C, h, w) features times a resized (B, 1, h, w) mask, in the memory layout of
    ``like``, the rule's other operand (a ``where`` over mixed layouts is slow)."""
    return torch.mul(feat, resized.to(feat.dtype), out=torch.empty_like(like, dtype=feat.dtype))


def _hm_in_window(feat: Tensor, im: Tensor, resized: Tensor) -> Tensor:
    """where(FM > 0, FM, IM) written into ``im``, computed inside the mask's window only."""
    window = mask_window(resized)
    if window is not None:
        box = im[(..., *window)]
        fm = _fm_like(feat[(..., *window)], resized[(..., *window)], like=box)
        torch.where(fm > 0, fm, box, out=box)
    return im


def _hm_add(feat: Tensor, im: Tensor, resized: Tensor) -> Tensor:
    return im.add_(_fm_like(feat, resized, like=im))


def _hm_reverse(feat: Tensor, im: Tensor, resized: Tensor) -> Tensor:
    return torch.where(im > 0, im, _fm_like(feat, resized, like=im), out=im)


_IN_PLACE = {"hm": _hm_in_window, "hm-add": _hm_add, "hm-reverse": _hm_reverse}


def mask_support_features_in_place(
    name: str, feats: list[Tensor], im_feats: list[Tensor] | None, mask: Tensor
) -> list[Tensor]:
    """:func:`hmfss.masking.mask_support_features`, with the hybrid rules' results written into
    ``im_feats`` (scratch maps that nothing reads afterwards). Under autograd, or for the
    other strategies, the plain operation."""
    if check_strategy(name) not in _IN_PLACE or torch.is_grad_enabled() or im_feats is None:
        return mask_support_features(name, feats, im_feats, mask)
    assert needs_input_masking(name)
    resized: dict[tuple[int, int], Tensor] = {}  # one resize per map size
    out = []
    for feat, im in zip(feats, im_feats):
        size = tuple(feat.shape[-2:])
        if size not in resized:
            resized[size] = resize_mask(mask, size)
        out.append(_IN_PLACE[name](feat, im, resized[size]))
    return out

"""Support-feature masking strategies (SPEC §2.1, §4).

Given the backbone features of the support image ``feats``, the features of the input-masked
support image ``im_feats`` (same shapes) and the binary support mask, a strategy returns the
support features that enter the correlation:

==============  ==============================================================
``none``        features unmasked (HSNet "without masking", original ASNet)
``fm``          feature masking: F * resize(mask)
``im``          input masking: features of (normalised image * mask)
``hm``          hybrid masking: where(FM > 0, FM, IM)
``hm-add``      FM + IM ("simple add" ablation)
``hm-reverse``  where(IM > 0, IM, FM) ("reverse" ablation)
==============  ==============================================================
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from hmfss.errors import HmfssError


def resize_mask(mask: Tensor, size: tuple[int, int]) -> Tensor:
    """(B, H, W) binary mask -> (B, 1, h, w) by bilinear interpolation with align_corners=True."""
    return F.interpolate(mask.unsqueeze(1).float(), size, mode="bilinear", align_corners=True)


def feature_mask(feat: Tensor, mask: Tensor) -> Tensor:
    """FM: (B, C, h, w) features times the (B, H, W) mask resized to (h, w)."""
    return _times_mask(feat, resize_mask(mask, tuple(feat.shape[-2:])))


def _times_mask(feat: Tensor, resized: Tensor, like: Tensor | None = None) -> Tensor:
    """(B, C, h, w) features times a resized (B, 1, h, w) mask.

    ``like``: a tensor of the same shape whose memory layout the result takes (the rule's
    other operand), so that the ``where`` that follows reads both operands alike (a
    channels-last / NCHW mix costs it ~3x).
    """
    resized = resized.to(feat.dtype)
    if like is None or torch.is_grad_enabled() and feat.requires_grad:
        return feat * resized
    return torch.mul(feat, resized, out=torch.empty_like(like, dtype=feat.dtype))


def mask_window(resized: Tensor) -> tuple[slice, slice] | None:
    """Rows and columns of the smallest window of a resized (B, 1, h, w) mask holding every
    position where some image's mask is > 0; None where there is none.

    On GPUs the whole map (finding the window would wait for the device).
    """
    if resized.device.type != "cpu":
        return slice(None), slice(None)
    inside = resized.amax(dim=(0, 1)) > 0
    rows, cols = inside.any(1).nonzero(), inside.any(0).nonzero()
    if rows.numel() == 0:
        return None
    return slice(int(rows[0]), int(rows[-1]) + 1), slice(int(cols[0]), int(cols[-1]) + 1)


def input_mask(images: Tensor, mask: Tensor) -> Tensor:
    """IM input: normalised (B, 3, H, W) images times the (B, H, W) mask (0 = mean colour)."""
    return images * mask.unsqueeze(1).to(images.dtype)


# Each strategy: (feats, im_feats, mask resized to the map (B, 1, h, w), out) -> masked maps;
# ``out`` (None: a new tensor) receives the result.


def _none(feat: Tensor, im: Tensor | None, resized: Tensor, out: Tensor | None = None) -> Tensor:
    return feat


def _fm(feat: Tensor, im: Tensor | None, resized: Tensor, out: Tensor | None = None) -> Tensor:
    return _times_mask(feat, resized)


def _im(feat: Tensor, im: Tensor | None, resized: Tensor, out: Tensor | None = None) -> Tensor:
    assert im is not None
    return im


def _hm(feat: Tensor, im: Tensor | None, resized: Tensor, out: Tensor | None = None) -> Tensor:
    """where(FM > 0, FM, IM). Where the mask is 0, FM is 0 (or NaN for an infinite feature) and
    never > 0, so IM is taken as it is: the rule runs only inside the mask's window, which on
    the CPU spares most of a pass over the maps when the object is small."""
    assert im is not None
    if torch.is_grad_enabled() and (feat.requires_grad or im.requires_grad):  # differentiable, whole maps
        fm = _times_mask(feat, resized)
        return torch.where(fm > 0, fm, im)
    if out is None:
        out = im.clone()
    elif out is not im:
        out.copy_(im)
    window = mask_window(resized)
    if window is not None:
        box = out[(..., *window)]
        fm = _times_mask(feat[(..., *window)], resized[(..., *window)], like=box)
        torch.where(fm > 0, fm, box, out=box)
    return out


def _hm_add(feat: Tensor, im: Tensor | None, resized: Tensor, out: Tensor | None = None) -> Tensor:
    fm = _times_mask(feat, resized, like=im)
    return torch.add(fm, im, out=out)


def _hm_reverse(feat: Tensor, im: Tensor | None, resized: Tensor, out: Tensor | None = None) -> Tensor:
    fm = _times_mask(feat, resized, like=im)
    return torch.where(im > 0, im, fm, out=out)


STRATEGIES: dict[str, Callable[[Tensor, Tensor | None, Tensor, Tensor | None], Tensor]] = {
    "none": _none,
    "fm": _fm,
    "im": _im,
    "hm": _hm,
    "hm-add": _hm_add,
    "hm-reverse": _hm_reverse,
}


def check_strategy(name: str) -> str:
    if name not in STRATEGIES:
        raise HmfssError(f"unknown masking strategy {name!r}; choose one of {', '.join(STRATEGIES)}")
    return name


def needs_input_masking(name: str) -> bool:
    """Whether the strategy needs the features of the input-masked support image."""
    return check_strategy(name) in ("im", "hm", "hm-add", "hm-reverse")


def selecting_input(name: str) -> str | None:
    """Which input's signs choose between FM and IM in a ``where`` rule: "feats" (hm),
    "im" (hm-reverse) or None. Rounding that flips such a sign near 0 swaps whole values, so
    these features must be computed exactly as the original does (see FewShotSegmenter)."""
    return {"hm": "feats", "hm-reverse": "im"}.get(check_strategy(name))


def mask_support_features(
    name: str, feats: list[Tensor], im_feats: list[Tensor] | None, mask: Tensor, overwrite_im: bool = False
) -> list[Tensor]:
    """Apply strategy ``name`` to every map: lists of (B, C_i, h_i, w_i), mask (B, H, W).

    ``overwrite_im``: the input-masked maps are scratch and receive the results (hybrid
    strategies, outside autograd): no fresh output per map, which on the CPU spares the page
    faults of ~40 MB of new memory per ResNet-50 support image at 400 px.
    """
    fn = STRATEGIES[check_strategy(name)]
    if needs_input_masking(name) and im_feats is None:
        raise ValueError(f"masking {name!r} needs the input-masked support features")
    others = im_feats if im_feats is not None else [None] * len(feats)
    reuse = overwrite_im and im_feats is not None and not torch.is_grad_enabled()
    resized: dict[tuple[int, int], Tensor] = {}  # one resize per map size
    out = []
    for f, i in zip(feats, others):
        size = tuple(f.shape[-2:])
        if size not in resized:
            resized[size] = resize_mask(mask, size)
        out.append(fn(f, i, resized[size], i if reuse else None))
    return out

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

from .errors import HmfssError


def resize_mask(mask: Tensor, size: tuple[int, int]) -> Tensor:
    """(B, H, W) binary mask -> (B, 1, h, w) by bilinear interpolation with align_corners=True."""
    return F.interpolate(mask.unsqueeze(1).float(), size, mode="bilinear", align_corners=True)


def feature_mask(feat: Tensor, mask: Tensor, like: Tensor | None = None) -> Tensor:
    """FM: (B, C, h, w) features times the mask resized to (h, w).

    ``like``: a tensor of the same shape whose memory layout the result takes (the rule's
    other operand), so that the ``where`` that follows reads both operands alike (a
    channels-last / NCHW mix costs it ~3x).
    """
    resized = resize_mask(mask, tuple(feat.shape[-2:])).to(feat.dtype)
    if like is None or torch.is_grad_enabled() and feat.requires_grad:
        return feat * resized
    return torch.mul(feat, resized, out=torch.empty_like(like, dtype=feat.dtype))


def input_mask(images: Tensor, mask: Tensor) -> Tensor:
    """IM input: normalised (B, 3, H, W) images times the (B, H, W) mask (0 = mean colour)."""
    return images * mask.unsqueeze(1).to(images.dtype)


def _none(feat: Tensor, im: Tensor | None, mask: Tensor, out: Tensor | None = None) -> Tensor:
    return feat


def _fm(feat: Tensor, im: Tensor | None, mask: Tensor, out: Tensor | None = None) -> Tensor:
    return feature_mask(feat, mask)


def _im(feat: Tensor, im: Tensor | None, mask: Tensor, out: Tensor | None = None) -> Tensor:
    assert im is not None
    return im


def _hm(feat: Tensor, im: Tensor | None, mask: Tensor, out: Tensor | None = None) -> Tensor:
    fm = feature_mask(feat, mask, like=im)
    return torch.where(fm > 0, fm, im, out=out)


def _hm_add(feat: Tensor, im: Tensor | None, mask: Tensor, out: Tensor | None = None) -> Tensor:
    fm = feature_mask(feat, mask, like=im)
    return torch.add(fm, im, out=out)


def _hm_reverse(feat: Tensor, im: Tensor | None, mask: Tensor, out: Tensor | None = None) -> Tensor:
    fm = feature_mask(feat, mask, like=im)
    return torch.where(im > 0, im, fm, out=out)


# (feats, im_feats, mask, out) -> masked maps; ``out`` (None: a new tensor) receives the result
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
    return [fn(f, i, mask, i if reuse else None) for f, i in zip(feats, others)]

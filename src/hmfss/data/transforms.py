"""Image and mask transforms of the original test loaders (see docs/protocol.md, "Inputs").

Images: PIL bilinear resize to (size, size) (aspect ratio not kept), [0, 1], ImageNet
normalisation. Masks: legacy ``F.interpolate(mode="nearest")``.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from hmfss.backbones import IMAGENET_MEAN, IMAGENET_STD

_MEAN = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
_STD = torch.tensor(IMAGENET_STD).view(3, 1, 1)


def image_to_tensor(img: Image.Image, size: int | tuple[int, int] | None) -> Tensor:
    """RGB PIL image -> normalised (3, size, size) float tensor (PIL bilinear resize)."""
    if size is not None:
        h, w = (size, size) if isinstance(size, int) else size
        img = img.resize((w, h), Image.BILINEAR)
    arr = torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1).float() / 255.0
    return (arr - _MEAN) / _STD


def denormalise(img: Tensor) -> Tensor:
    """Inverse of the ImageNet normalisation: (3, H, W) -> values in [0, 1]."""
    return (img * _STD.to(img) + _MEAN.to(img)).clamp(0, 1)


def resize_mask_nearest(mask: Tensor | np.ndarray, size: int | tuple[int, int]) -> Tensor:
    """(H, W) mask -> (size, size) float tensor with legacy nearest interpolation."""
    h, w = (size, size) if isinstance(size, int) else size
    mask = torch.as_tensor(np.asarray(mask) if isinstance(mask, np.ndarray) else mask).float()
    if tuple(mask.shape) == (h, w):
        return mask
    return F.interpolate(mask[None, None], (h, w), mode="nearest")[0, 0]

"""Photometric augmentation of training images (VAT's "CATs" set), in plain torch.

:func:`photometric_augment` applies the ops of a
:class:`~hmfss.heads.recipe.PhotometricAugmentation` to one RGB image, each with probability
``p``, in the order of ``params.ops``; every random number comes from the ``torch.Generator``
it is given, so an image's augmentation is a pure function of the generator's seed (training
seeds it per episode: resumed runs see the same images). Masks are never touched.

The ops follow the uint8 arithmetic of the albumentations 1.x / OpenCV functions the original
VAT code used:

* ``to_gray``: OpenCV's fixed-point luma ``(4899 R + 9617 G + 1868 B + 8192) >> 14`` copied to
  the three channels;
* ``posterize``: keep the top ``posterize_bits`` bits of every value;
* ``equalize``: OpenCV histogram equalisation of each channel: with ``i`` the lowest value
  present and ``n`` pixels, ``v -> round(255 * #{pixels in (i, v]} / (n - #{pixels == i}))``;
  a constant channel is unchanged;
* ``sharpen``: 3x3 kernel ``(1 - a) * identity + a * [[-1,-1,-1], [-1, 8 + l, -1], [-1,-1,-1]]``
  (a ~ U(sharpen_alpha), l ~ U(sharpen_lightness)), reflect-101 borders, rounded and clipped;
* ``brightness_contrast``: ``v -> floor(clip(v * (1 + c) + 255 * b, 0, 255))`` with
  c ~ U(±contrast_limit), b ~ U(±brightness_limit);
* ``solarize``: ``v -> 255 - v`` where ``v >= solarize_threshold``;
* ``color_jitter``: brightness ``floor(clip(v * f))``, contrast ``floor(clip(v * f + m (1 - f)))``
  (m: mean luma), saturation ``round(clip(v * f + luma * (1 - f)))``, factors
  f ~ U(max(0, 1 - x), 1 + x), and a hue rotation by h ~ U(±jitter_hue) turns, the four in a
  random order. The hue is rotated in continuous HSV (OpenCV's 8-bit HSV quantises hue to 2°
  steps), then rounded back to 8 bits.

Images are (3, H, W) tensors, uint8 or float in [0, 1] (floats are quantised to 8 bits when an
op applies and returned in their dtype and range).
"""

from __future__ import annotations

import math
from dataclasses import asdict, fields
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from hmfss.errors import HmfssError
from hmfss.heads.recipe import PhotometricAugmentation

OPS = ("to_gray", "posterize", "equalize", "sharpen", "brightness_contrast", "solarize", "color_jitter")
JITTERS = ("brightness", "contrast", "saturation", "hue")


# ---- the ops (uint8 (3, H, W) in, uint8 out) -----------------------------------------------------


def luma(img: Tensor) -> Tensor:
    """(H, W) int32 luma of a uint8 RGB image, OpenCV's fixed-point RGB->gray."""
    x = img.to(torch.int32)
    return (x[0] * 4899 + x[1] * 9617 + x[2] * 1868 + 8192) >> 14


def to_gray(img: Tensor) -> Tensor:
    """Luma on all three channels."""
    return luma(img).to(torch.uint8).expand(3, -1, -1).contiguous()


def posterize(img: Tensor, bits: int) -> Tensor:
    """Keep the ``bits`` most significant bits of every value (0: all zero, 8: unchanged)."""
    mask = (0xFF << (8 - int(bits))) & 0xFF
    return img & mask


def equalize(img: Tensor) -> Tensor:
    """OpenCV ``equalizeHist`` on each channel (see the module docstring)."""
    out = torch.empty_like(img)
    for c in range(img.shape[0]):
        channel = img[c].reshape(-1).long()
        hist = torch.bincount(channel, minlength=256)
        first = int(torch.nonzero(hist)[0])
        total = channel.numel()
        if int(hist[first]) == total:
            out[c] = img[c]
            continue
        scale = torch.tensor(255.0 / (total - int(hist[first])), dtype=torch.float32)
        cum = torch.cumsum(hist, 0) - hist[first]  # pixels in (first, v]
        lut = torch.round(cum.to(torch.float32) * scale).clamp(0, 255).to(torch.uint8)
        lut[:first] = 0
        out[c] = lut[channel].view(img.shape[1:])
    return out


def sharpen(img: Tensor, alpha: float, lightness: float) -> Tensor:
    """Blend of identity and a Laplacian-sharpening 3x3 kernel (reflect-101 borders)."""
    kernel = torch.full((3, 3), -float(alpha), dtype=torch.float32)
    kernel[1, 1] = (1.0 - alpha) + alpha * (8.0 + lightness)
    x = img.to(torch.float32)[None]
    mode = "reflect" if min(img.shape[1:]) > 1 else "replicate"
    x = F.pad(x, (1, 1, 1, 1), mode=mode)
    y = F.conv2d(x, kernel.expand(3, 1, 3, 3), groups=3)[0]
    return torch.round(y).clamp(0, 255).to(torch.uint8)


def _lut(img: Tensor, values: Tensor) -> Tensor:
    """Apply a 256-entry table (float, truncated to uint8 after clipping) to every value."""
    table = values.clamp(0, 255).floor().to(torch.uint8)
    return table[img.long()]


def brightness_contrast(img: Tensor, contrast: float, brightness: float) -> Tensor:
    """``floor(clip(v * contrast + 255 * brightness))`` (contrast is the factor 1 + c)."""
    values = torch.arange(256, dtype=torch.float32) * torch.tensor(contrast, dtype=torch.float32)
    values = values + torch.tensor(brightness * 255.0, dtype=torch.float32)
    return _lut(img, values)


def solarize(img: Tensor, threshold: int) -> Tensor:
    """Invert the values at or above ``threshold``."""
    return torch.where(img.to(torch.int16) >= int(threshold), 255 - img, img)


def adjust_brightness(img: Tensor, factor: float) -> Tensor:
    """``floor(clip(v * factor))``."""
    return _lut(img, torch.arange(256, dtype=torch.float64) * factor)


def adjust_contrast(img: Tensor, factor: float) -> Tensor:
    """``floor(clip(v * factor + m * (1 - factor)))``, m = mean luma; factor 0: round(m)."""
    if factor == 1:
        return img.clone()
    mean = float(luma(img).double().mean())
    if factor == 0:
        return torch.full_like(img, int(mean + 0.5))
    return _lut(img, torch.arange(256, dtype=torch.float64) * factor + mean * (1 - factor))


def adjust_saturation(img: Tensor, factor: float) -> Tensor:
    """``round(clip(v * factor + luma * (1 - factor)))``; factor 0: the gray image."""
    if factor == 1:
        return img.clone()
    gray = to_gray(img)
    if factor == 0:
        return gray
    mixed = img.to(torch.float32) * factor + gray.to(torch.float32) * (1 - factor)
    return torch.round(mixed).clamp(0, 255).to(torch.uint8)


def rgb_to_hsv(rgb: Tensor) -> Tensor:
    """(3, H, W) RGB in [0, 1] -> HSV with hue in turns [0, 1)."""
    r, g, b = rgb
    high, _ = rgb.max(0)
    low, _ = rgb.min(0)
    delta = high - low
    safe = torch.where(delta > 0, delta, torch.ones_like(delta))
    hue = torch.where(high == r, ((g - b) / safe) % 6,
                      torch.where(high == g, (b - r) / safe + 2, (r - g) / safe + 4)) / 6
    hue = torch.where(delta > 0, hue, torch.zeros_like(hue))
    sat = torch.where(high > 0, delta / torch.where(high > 0, high, torch.ones_like(high)), torch.zeros_like(high))
    return torch.stack([hue, sat, high])


def hsv_to_rgb(hsv: Tensor) -> Tensor:
    """Inverse of :func:`rgb_to_hsv`."""
    h, s, v = hsv
    k = lambda n: (n + h * 6) % 6  # noqa: E731
    channel = lambda n: v - v * s * torch.clamp(torch.minimum(k(n), 4 - k(n)), 0, 1)  # noqa: E731
    return torch.stack([channel(5), channel(3), channel(1)])


def adjust_hue(img: Tensor, shift: float) -> Tensor:
    """Rotate the hue by ``shift`` turns (continuous HSV), round back to uint8."""
    if shift == 0:
        return img.clone()
    hsv = rgb_to_hsv(img.to(torch.float64) / 255.0)
    hsv[0] = (hsv[0] + shift) % 1.0
    return torch.round(hsv_to_rgb(hsv) * 255.0).clamp(0, 255).to(torch.uint8)


# ---- random application ----------------------------------------------------------------------------


def _uniform(gen: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=gen, dtype=torch.float64))


def _color_jitter(img: Tensor, params: PhotometricAugmentation, gen: torch.Generator) -> Tensor:
    factors = {
        "brightness": _uniform(gen, max(0.0, 1 - params.jitter_brightness), 1 + params.jitter_brightness),
        "contrast": _uniform(gen, max(0.0, 1 - params.jitter_contrast), 1 + params.jitter_contrast),
        "saturation": _uniform(gen, max(0.0, 1 - params.jitter_saturation), 1 + params.jitter_saturation),
        "hue": _uniform(gen, -params.jitter_hue, params.jitter_hue),
    }
    steps: dict[str, Callable[[Tensor, float], Tensor]] = {
        "brightness": adjust_brightness, "contrast": adjust_contrast,
        "saturation": adjust_saturation, "hue": adjust_hue,
    }
    for k in torch.randperm(4, generator=gen).tolist():
        name = JITTERS[k]
        img = steps[name](img, factors[name])
    return img


def _apply(name: str, img: Tensor, params: PhotometricAugmentation, gen: torch.Generator) -> Tensor:
    if name == "to_gray":
        return to_gray(img)
    if name == "posterize":
        return posterize(img, params.posterize_bits)
    if name == "equalize":
        return equalize(img)
    if name == "sharpen":
        alpha = _uniform(gen, *params.sharpen_alpha)
        lightness = _uniform(gen, *params.sharpen_lightness)
        return sharpen(img, alpha, lightness)
    if name == "brightness_contrast":
        contrast = 1.0 + _uniform(gen, -params.contrast_limit, params.contrast_limit)
        brightness = _uniform(gen, -params.brightness_limit, params.brightness_limit)
        return brightness_contrast(img, contrast, brightness)
    if name == "solarize":
        return solarize(img, params.solarize_threshold)
    if name == "color_jitter":
        return _color_jitter(img, params, gen)
    raise HmfssError(f"unknown augmentation op {name!r}; choose from {', '.join(OPS)}")


def photometric_augment(image: Tensor, params: PhotometricAugmentation, generator: torch.Generator) -> Tensor:
    """Augment one (3, H, W) RGB image (uint8, or float in [0, 1]); see the module docstring.

    For every op of ``params.ops`` in order: one uniform draw decides (below ``params.p``)
    whether it applies, then its magnitudes are drawn. The result has the input's dtype; an
    image no op applied to is returned unchanged.
    """
    if image.ndim != 3 or image.shape[0] != 3:
        raise HmfssError(f"photometric augmentation expects a (3, H, W) RGB image, got shape {tuple(image.shape)}")
    is_float = image.is_floating_point()
    if not is_float and image.dtype != torch.uint8:
        raise HmfssError(f"photometric augmentation expects uint8 or float images, got {image.dtype}")
    img = torch.round(image.detach().to(torch.float32) * 255).clamp(0, 255).to(torch.uint8) if is_float else image
    changed = False
    for name in params.ops:
        if float(torch.rand((), generator=generator, dtype=torch.float64)) < params.p:
            img = _apply(name, img, params, generator)
            changed = True
    if not changed:
        return image
    return img.to(image.dtype) / 255.0 if is_float else img


# ---- configuration ---------------------------------------------------------------------------------


def check_augmentation(params: PhotometricAugmentation) -> PhotometricAugmentation:
    """Raise :class:`HmfssError` naming the first invalid parameter; return ``params``."""
    def bad(name: str, rule: str, value: Any) -> HmfssError:
        return HmfssError(f"augmentation {name} must be {rule}, got {value!r}")

    if not 0.0 <= params.p <= 1.0:
        raise bad("p", "in [0, 1]", params.p)
    unknown = [op for op in params.ops if op not in OPS]
    if unknown:
        raise HmfssError(f"unknown augmentation op {unknown[0]!r}; choose from {', '.join(OPS)}")
    if not (isinstance(params.posterize_bits, int) and 0 <= params.posterize_bits <= 8):
        raise bad("posterize_bits", "an integer in 0..8", params.posterize_bits)
    for name, upper in (("sharpen_alpha", 1.0), ("sharpen_lightness", math.inf)):
        low, high = getattr(params, name)
        if not 0.0 <= low <= high <= upper:
            raise bad(name, f"a range 0 <= low <= high <= {upper:g}", getattr(params, name))
    for name in ("brightness_limit", "contrast_limit", "jitter_brightness", "jitter_contrast", "jitter_saturation"):
        if getattr(params, name) < 0:
            raise bad(name, "non-negative", getattr(params, name))
    if not 0.0 <= params.jitter_hue <= 0.5:
        raise bad("jitter_hue", "in [0, 0.5] (turns)", params.jitter_hue)
    if not (isinstance(params.solarize_threshold, int) and 0 <= params.solarize_threshold <= 256):
        raise bad("solarize_threshold", "an integer in 0..256", params.solarize_threshold)
    return params


def augmentation_from_config(value: str | dict[str, Any] | None) -> PhotometricAugmentation | None:
    """``"none"``/None -> no augmentation; ``"photometric"`` -> the default magnitudes; a
    mapping -> those parameters over the defaults (lists become tuples). Validated."""
    if value is None or value == "none":
        return None
    if value == "photometric":
        return check_augmentation(PhotometricAugmentation())
    if not isinstance(value, dict):
        raise HmfssError(f"augmentation must be 'none', 'photometric' or a mapping of its parameters, got {value!r}")
    known = {f.name: f for f in fields(PhotometricAugmentation)}
    unknown = sorted(set(value) - set(known))
    if unknown:
        raise HmfssError(f"unknown augmentation parameter {unknown[0]!r}; known: {', '.join(known)}")
    converted: dict[str, Any] = {}
    for key, item in value.items():
        if isinstance(item, list):
            item = tuple(item)
        if key == "ops":
            item = (item,) if isinstance(item, str) else item
            if not isinstance(item, tuple) or not all(isinstance(op, str) for op in item):
                raise HmfssError(f"augmentation ops must be a list of op names, got {item!r}")
            converted[key] = item
            continue
        if isinstance(item, tuple):
            if len(item) != 2 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in item):
                raise HmfssError(f"augmentation {key} must be a pair of numbers, got {list(item)!r}")
            item = tuple(float(v) for v in item)
        elif key in ("p", "brightness_limit", "contrast_limit") or key.startswith("jitter_"):
            if not isinstance(item, (int, float)) or isinstance(item, bool):
                raise HmfssError(f"augmentation {key} must be a number, got {item!r}")
            item = float(item)
        converted[key] = item
    return check_augmentation(PhotometricAugmentation(**converted))


def augmentation_to_config(params: PhotometricAugmentation | None) -> str | dict[str, Any]:
    """The YAML-friendly form stored in a run's config (``"none"`` or every parameter)."""
    if params is None:
        return "none"
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(params).items()}


def describe_augmentation(params: PhotometricAugmentation | None) -> str:
    """One-line summary for the training log."""
    if params is None:
        return "none"
    return f"photometric, each op with p {params.p:g}: {', '.join(params.ops)}"

"""Validation of what users pass in: tensors, sizes, devices and output paths.

Each check raises :class:`~hmfss.errors.HmfssError` with one line naming the argument (or
option), what is expected and what was given. They are pure and cheap (one pass over a
tensor at most), so the public API and the CLI call them before any work starts.

Masks: the model takes binary masks as floats or integers holding only 0 and 1. A mask
holding 0 and 255 (the way mask PNGs store it) is refused with a hint to divide it by 255,
never used half-converted; the file readers (:mod:`hmfss.data.io`) already return {0, 1}.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from hmfss.errors import HmfssError

# Largest network input side: the 4D correlation of the heads grows with (side / 8) ** 4,
# so a 1024 px input already needs several GB; larger sizes are a typo rather than a wish.
MAX_IMG_SIZE = 1024


def _shape(t: Tensor) -> str:
    return "(" + ", ".join(str(s) for s in t.shape) + ")"


def _tensor(value: Any, name: str) -> Tensor:
    if not isinstance(value, Tensor):
        raise HmfssError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    return value


def check_images(images: Any, name: str = "images", ndim: int = 4) -> Tensor:
    """A float batch of RGB images, finite: (B, 3, H, W) for ``ndim`` 4, (B, K, 3, H, W) for 5."""
    images = _tensor(images, name)
    layout = "(B, 3, H, W)" if ndim == 4 else "(B, K, 3, H, W)"
    if images.dim() != ndim or images.shape[-3] != 3:
        raise HmfssError(f"{name} must have shape {layout}, got {_shape(images)}")
    if min(images.shape) < 1:
        raise HmfssError(f"{name} must not be empty, got shape {_shape(images)}")
    if not images.is_floating_point():
        raise HmfssError(f"{name} must be a float tensor (normalised images), got {images.dtype}")
    if not bool(torch.isfinite(images).all()):
        raise HmfssError(f"{name} holds NaN or infinite values")
    return images


def check_masks(masks: Any, name: str = "support_masks", allow_empty: bool = False) -> Tensor:
    """Binary masks (B, K, H, W) with K >= 1, values exactly 0 and 1 (any real dtype).

    Each mask needs a foreground pixel unless ``allow_empty`` (benchmark episodes whose tiny
    object vanished when resized are still scored, as in the original protocol).
    """
    masks = _tensor(masks, name)
    if masks.dim() != 4:
        raise HmfssError(f"{name} must have shape (B, K, H, W), got {_shape(masks)}")
    if masks.shape[1] < 1:
        raise HmfssError(f"{name} must hold at least one shot (K >= 1), got shape {_shape(masks)}")
    if min(masks.shape) < 1:
        raise HmfssError(f"{name} must not be empty, got shape {_shape(masks)}")
    if masks.is_complex():
        raise HmfssError(f"{name} must be real-valued, got {masks.dtype}")
    values = masks.float()
    if not bool(torch.isfinite(values).all()):
        raise HmfssError(f"{name} holds NaN or infinite values")
    binary = (values == 0) | (values == 1)
    if not bool(binary.all()):
        low, high = float(values.min()) + 0.0, float(values.max()) + 0.0  # + 0.0: no "-0"
        hint = "; divide 0/255 masks by 255" if bool(((values == 0) | (values == 255)).all()) else ""
        raise HmfssError(f"{name} must be binary (only 0 and 1), got values in [{low:g}, {high:g}]{hint}")
    empty = (values.flatten(2).amax(-1) == 0).nonzero()
    if len(empty) and not allow_empty:
        b, k = (int(i) for i in empty[0])
        raise HmfssError(f"{name}[{b}, {k}] is empty (no foreground pixel); every support mask needs one")
    return masks


def check_support_set(images: Any, masks: Any, query: Tensor | None = None, allow_empty: bool = False) -> None:
    """Supports (B, K, 3, H, W) and masks (B, K, H, W) that match each other and the query
    (see :func:`check_masks` for ``allow_empty``)."""
    images = check_images(images, "support_imgs", ndim=5)
    masks = check_masks(masks, "support_masks", allow_empty)
    if tuple(images.shape[:2]) != tuple(masks.shape[:2]) or images.shape[-2:] != masks.shape[-2:]:
        raise HmfssError(f"support_masks {_shape(masks)} do not match support_imgs {_shape(images)}: "
                         f"expected ({images.shape[0]}, {images.shape[1]}, {images.shape[3]}, {images.shape[4]})")
    if query is not None:
        if query.shape[0] != images.shape[0]:
            raise HmfssError(f"support_imgs {_shape(images)} hold {images.shape[0]} episode(s) but "
                             f"query_img {_shape(query)} holds {query.shape[0]}")
        if query.shape[-2:] != images.shape[-2:]:
            raise HmfssError(f"support_imgs {_shape(images)} and query_img {_shape(query)} differ in size")


def check_img_size(value: Any, name: str = "img_size", optional: bool = False) -> int | None:
    """A square input side in 1..MAX_IMG_SIZE (``None`` allowed when ``optional``)."""
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise HmfssError(f"{name} must be an integer, got {value!r}")
    if not 1 <= value <= MAX_IMG_SIZE:
        raise HmfssError(f"{name} must be between 1 and {MAX_IMG_SIZE}, got {value}")
    return value


def check_min(value: Any, option: str, minimum: int = 1) -> Any:
    """``value`` (an option, may be None = default) is at least ``minimum``."""
    if value is not None and value < minimum:
        raise HmfssError(f"{option} must be at least {minimum}, got {value}")
    return value


def check_device(name: str) -> str:
    """A device name torch knows and this build can use ("auto" allowed); returns it."""
    if name in (None, "auto"):
        return name
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise HmfssError(f"unknown device {name!r} (use cpu, cuda or cuda:N)") from None
    if device.type == "meta":
        raise HmfssError(f"device {name!r} holds no data and cannot run a model (use cpu or cuda)")
    if device.type == "mps" and not (torch.backends.mps.is_available()):
        raise HmfssError(f"device {name!r} requested but MPS is not available in this build")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise HmfssError(f"device {name!r} requested but CUDA is not available")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise HmfssError(f"device {name!r} requested but only {torch.cuda.device_count()} GPU(s) exist")
    elif device.type not in ("cpu", "mps"):
        raise HmfssError(f"device {name!r} is not supported (use cpu or cuda)")
    return name


def _writable_ancestor(path: Path, option: str) -> None:
    """The nearest existing ancestor of ``path`` is a writable folder."""
    parent = path.parent
    while not parent.exists():
        if parent == parent.parent:
            break
        parent = parent.parent
    if parent.exists() and not parent.is_dir():
        raise HmfssError(f"{option} {path}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise HmfssError(f"{option} {path}: folder {parent} is not writable")


def check_output_file(path: str | Path | None, option: str) -> Path | None:
    """``path`` can be written as a file: not a folder, inside a writable (or creatable) folder."""
    if path is None:
        return None
    path = Path(path)
    if path.is_dir():
        raise HmfssError(f"{option} {path} is a folder; give a file name")
    if path.exists() and not os.access(path, os.W_OK):
        raise HmfssError(f"{option} {path} is not writable")
    _writable_ancestor(path, option)
    return path


def check_output_dir(path: str | Path | None, option: str) -> Path | None:
    """``path`` is a writable folder or can be created as one."""
    if path is None:
        return None
    path = Path(path)
    if path.exists():
        if not path.is_dir():
            raise HmfssError(f"{option} {path} is a file; give a folder")
        if not os.access(path, os.W_OK | os.X_OK):
            raise HmfssError(f"{option} {path} is not writable")
        return path
    _writable_ancestor(path, option)
    return path

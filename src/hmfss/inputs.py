"""Validation of what users pass in: tensors, sizes, devices and output paths.

Each check raises :class:`~hmfss.errors.HmfssError` with one line naming the argument (or
option), what is expected and what was given. They are pure and cheap (one pass over a
tensor at most), so the public API and the CLI call them before any work starts.

Masks: the model takes binary masks as floats or integers holding only 0 and 1. A mask
holding 0 and 255 (the way mask PNGs store it) is refused with a hint to divide it by 255,
never used half-converted; the file readers (:mod:`hmfss.data.io`) already return {0, 1}.

Values (finite images; binary, non-empty masks) are checked on CPU tensors only. On an
accelerator reading a result back to the host would wait for every queued kernel on each
call, so there only shapes, dtypes and devices are checked.
"""

from __future__ import annotations

import numbers
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from hmfss.atomic import is_stream
from hmfss.errors import HmfssError

# Largest network input side: the 4D correlation of the heads grows with (side / 8) ** 4,
# so a 1024 px input already needs several GB; larger sizes are a typo rather than a wish.
MAX_IMG_SIZE = 1024
# Most pixels of an output mask (height x width): 32-bit indexing; the readers' own limit
# (50 megapixels by default, --max-pixels) is far below, so a larger size is a typo
MAX_OUTPUT_PIXELS = 2**31 - 1


def _shape(t: Tensor) -> str:
    return "(" + ", ".join(str(s) for s in t.shape) + ")"


def _on_cpu(t: Tensor) -> bool:
    """Whether the values of ``t`` are checked (see the module doc; not while torch.compile traces,
    where reading a value would break the graph)."""
    return t.device.type == "cpu" and not torch.compiler.is_compiling()


def _tensor(value: Any, name: str) -> Tensor:
    if not isinstance(value, Tensor):
        raise HmfssError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if value.layout != torch.strided:
        raise HmfssError(f"{name} must be a dense tensor, got layout {str(value.layout).removeprefix('torch.')}"
                         " (call .to_dense())")
    return value


def check_images(images: Any, name: str = "images", ndim: int = 4) -> Tensor:
    """A float batch of RGB images, finite: (B, 3, H, W) for ``ndim`` 4, (B, K, 3, H, W) for 5."""
    images = _tensor(images, name)
    layout = "(B, 3, H, W)" if ndim == 4 else "(B, K, 3, H, W)"
    if images.dim() != ndim or images.shape[-3] != 3:
        raise HmfssError(f"{name} must have shape {layout}, got {_shape(images)}")
    if ndim == 5 and images.shape[1] < 1:
        raise HmfssError(f"{name} must hold at least one shot (K >= 1), got shape {_shape(images)}")
    if min(images.shape) < 1:
        raise HmfssError(f"{name} must not be empty, got shape {_shape(images)}")
    if not images.is_floating_point():
        raise HmfssError(f"{name} must be a float tensor (normalised images), got {images.dtype}")
    if _on_cpu(images) and not bool(torch.isfinite(images).all()):
        raise HmfssError(f"{name} holds NaN or infinite values")
    return images


def check_masks(masks: Any, name: str = "support_masks", allow_empty: bool = False, ndim: int = 4) -> Tensor:
    """Binary masks (B, K, H, W) with K >= 1 (``ndim`` 4) or (B, H, W) (``ndim`` 3), values
    exactly 0 and 1 (any real dtype).

    Each mask needs a foreground pixel unless ``allow_empty`` (benchmark episodes whose tiny
    object vanished when resized are still scored, as in the original protocol).
    """
    masks = _tensor(masks, name)
    layout = "(B, K, H, W)" if ndim == 4 else "(B, H, W)"
    if masks.dim() != ndim:
        raise HmfssError(f"{name} must have shape {layout}, got {_shape(masks)}")
    if ndim == 4 and masks.shape[1] < 1:
        raise HmfssError(f"{name} must hold at least one shot (K >= 1), got shape {_shape(masks)}")
    if min(masks.shape) < 1:
        raise HmfssError(f"{name} must not be empty, got shape {_shape(masks)}")
    if masks.is_complex():
        raise HmfssError(f"{name} must be real-valued, got {masks.dtype}")
    if _on_cpu(masks):
        _check_binary(masks.float().reshape(masks.shape[0], -1, *masks.shape[-2:]), name, allow_empty, ndim)
    return masks


def _check_binary(values: Tensor, name: str, allow_empty: bool, ndim: int) -> None:
    """``values`` (B, K, H, W) float are finite, 0 or 1, and (unless ``allow_empty``) hold a 1 in each mask."""
    if not bool(torch.isfinite(values).all()):
        raise HmfssError(f"{name} holds NaN or infinite values")
    binary = (values == 0) | (values == 1)
    if not bool(binary.all()):
        low, high = float(values.min()) + 0.0, float(values.max()) + 0.0  # + 0.0: no "-0"
        hint = "; divide 0/255 masks by 255" if bool(((values == 0) | (values == 255)).all()) else ""
        raise HmfssError(f"{name} must be binary (only 0 and 1), got values in [{low:g}, {high:g}]{hint}")
    empty = (values.flatten(2).amax(-1) == 0).nonzero()
    if len(empty) and not allow_empty:
        index = ", ".join(str(int(i)) for i in empty[0][:ndim - 2])
        raise HmfssError(f"{name}[{index}] is empty (no foreground pixel); every support mask needs one")


def check_support_set(images: Any, masks: Any, query: Tensor | None = None, allow_empty: bool = False) -> None:
    """Supports (B, K, 3, H, W) and masks (B, K, H, W) that match each other and the query
    (see :func:`check_masks` for ``allow_empty``)."""
    images = check_images(images, "support_imgs", ndim=5)
    masks = check_masks(masks, "support_masks", allow_empty)
    _check_match(images, masks, query, "support_imgs", "support_masks")


def check_one_shot(query: Any, image: Any, mask: Any, allow_empty: bool = True) -> None:
    """The 1-shot episode of the model's forward: query and support (B, 3, H, W), mask (B, H, W)
    (empty masks allowed by default: training episodes may hold one)."""
    query = check_images(query, "query_img")
    image = check_images(image, "support_img")
    mask = check_masks(mask, "support_mask", allow_empty, ndim=3)
    _check_match(image, mask, query, "support_img", "support_mask")


def _check_match(images: Tensor, masks: Tensor, query: Tensor | None, image_name: str, mask_name: str) -> None:
    """Masks have the images' shape without the colour axis; the query their batch and size."""
    expected = (*images.shape[:-3], *images.shape[-2:])
    if tuple(masks.shape) != expected:
        raise HmfssError(f"{mask_name} {_shape(masks)} do not match {image_name} {_shape(images)}: "
                         f"expected ({', '.join(str(s) for s in expected)})")
    if query is not None:
        if query.shape[0] != images.shape[0]:
            raise HmfssError(f"{image_name} {_shape(images)} hold {images.shape[0]} episode(s) but "
                             f"query_img {_shape(query)} holds {query.shape[0]}")
        if query.shape[-2:] != images.shape[-2:]:
            raise HmfssError(f"{image_name} {_shape(images)} and query_img {_shape(query)} differ in size")


def check_query_batch(state_batch: int, query: Tensor) -> None:
    """A support set encoded for ``state_batch`` episodes serves a query batch of 1 or that size."""
    if state_batch not in (1, query.shape[0]):
        raise HmfssError(f"state holds {state_batch} support set(s) but query_img {_shape(query)} holds "
                         f"{query.shape[0]} image(s): encode 1 support set or one per query")


MAX_SEED = 2**32 - 1  # numpy's legacy seeds, which the original episode protocols use


def check_seed(value: Any, name: str = "seed") -> int:
    """A random seed: an integer from 0 to MAX_SEED."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not 0 <= value <= MAX_SEED:
        raise HmfssError(f"{name} must be an integer from 0 to {MAX_SEED}, got {value!r}")
    return int(value)


def check_threshold(value: Any, name: str = "threshold") -> float | None:
    """A probability threshold: ``None`` or a number from 0 to 1."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value <= 1:
        raise HmfssError(f"{name} must be a number from 0 to 1, got {value!r}")
    return float(value)


def check_size_pair(value: Any, name: str) -> tuple[int, int]:
    """An output (height, width): positive integers, at most MAX_OUTPUT_PIXELS pixels."""
    ok = isinstance(value, (tuple, list, torch.Size)) and len(value) == 2 and all(
        isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= 1 for v in value)
    if not ok or value[0] * value[1] > MAX_OUTPUT_PIXELS:
        raise HmfssError(f"{name} must be (height, width), positive integers with at most {MAX_OUTPUT_PIXELS} "
                         f"pixels, got {value!r}")
    return int(value[0]), int(value[1])


def check_output_size(value: Any, batch: int) -> tuple[int, int] | list[tuple[int, int]] | None:
    """``None``, one (h, w) for every query, or a list of ``batch`` (h, w) pairs (one per query)."""
    if value is None:
        return None
    if isinstance(value, (tuple, list)) and len(value) and isinstance(value[0], (tuple, list, torch.Size)):
        if len(value) != batch:
            raise HmfssError(f"output_size must hold one (h, w) per query: expected {batch}, got {len(value)}")
        return [check_size_pair(v, f"output_size[{i}]") for i, v in enumerate(value)]
    return check_size_pair(value, "output_size")


def check_device_of(tensors: dict[str, Tensor], device: torch.device) -> None:
    """Every tensor (by argument name) lives on the model's ``device``."""
    for name, tensor in tensors.items():
        if tensor.device != device:
            raise HmfssError(f"{name} is on {tensor.device} but the model is on {device}: "
                             f"move it with .to({str(device)!r})")


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


# Upper bounds of counts that start threads or processes: far above any machine's need,
# below what crashes the process (torch.set_num_threads(100000) segfaults; 100,000 loader
# processes never finish starting)
MAX_THREADS = 1024
MAX_WORKERS = 256
NAME_MAX = 255  # bytes of one file name on Linux and macOS file systems


def check_at_most(value: Any, option: str, maximum: int, why: str = "") -> Any:
    """``value`` (an option, may be None = default) is at most ``maximum``."""
    if value is not None and value > maximum:
        raise HmfssError(f"{option} must be at most {maximum}{why}, got {value}")
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
    elif device.type == "cpu" and device.index not in (None, 0):
        raise HmfssError(f"device {name!r}: the CPU takes no index (use cpu)")
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
    _try_writing_in(parent, path, option)


def _try_writing_in(folder: Path, path: Path, option: str) -> None:
    """Create and drop a file in ``folder``: what os.access does not tell (/proc, /sys, a
    read-only mount; root passes every mode check)."""
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise HmfssError(f"{option} {path}: cannot write in {folder} ({exc.strerror or exc})") from None


def check_path(value: Any, name: str) -> Path:
    """A file path given as a str or path-like object."""
    if isinstance(value, bool) or not isinstance(value, (str, os.PathLike)):
        raise HmfssError(f"{name} must be a file path (str or Path), got {type(value).__name__}")
    return Path(value)


def check_output_file(path: str | Path | None, option: str) -> Path | None:
    """``path`` can be written as a file: not a folder, inside a writable (or creatable) folder."""
    if path is None:
        return None
    path = _non_empty_path(path, option)
    if path.is_dir():
        raise HmfssError(f"{option} {path} is a folder; give a file name")
    if path.exists() and not os.access(path, os.W_OK):
        raise HmfssError(f"{option} {path} is not writable")
    if is_stream(path):  # /dev/null, /dev/stdout, a named pipe: written as it is
        return path
    if path.exists() and not path.is_file():
        raise HmfssError(f"{option} {path} is not a regular file")
    _writable_ancestor(path, option)
    return path


def check_output_dir(path: str | Path | None, option: str) -> Path | None:
    """``path`` is a writable folder or can be created as one."""
    if path is None:
        return None
    path = _non_empty_path(path, option)
    if path.exists():
        if not path.is_dir():
            raise HmfssError(f"{option} {path} is a file; give a folder")
        if not os.access(path, os.W_OK | os.X_OK):
            raise HmfssError(f"{option} {path} is not writable")
        _try_writing_in(path, path, option)
        return path
    _writable_ancestor(path, option)
    return path


def _non_empty_path(path: str | Path, option: str) -> Path:
    """``path`` as a Path: not empty, and no name in it longer than file systems take."""
    if str(path).strip() == "":
        raise HmfssError(f"{option} is empty; give a path")
    path = Path(path)
    for part in path.parts:
        if len(os.fsencode(part)) > NAME_MAX:
            raise HmfssError(f"{option} {path}: the name {part[:40]}... is longer than {NAME_MAX} bytes")
    return path

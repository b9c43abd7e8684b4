"""Reading images and masks from disk with one-line errors naming the file.

Every read applies the EXIF orientation (so images, masks and outputs are in the orientation
viewers show) and refuses images over the pixel limit (:func:`set_max_pixels`) before their
pixels are decoded. Mask rules (see :func:`read_mask_and_ignore`):

* a mask whose only values are 0 and 1, or 0 and 255, is binary whatever its PNG mode
  (palette, grayscale, RGB): 1 / 255 is the object;
* a palette or grayscale mask with other values beside 255 is a label map (VOC style):
  every index in 1..254 is the object and 255 marks pixels not scored ("ignore");
* other grayscale / RGB masks are thresholded at 128.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from hmfss.errors import HmfssError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")

# Largest image (width x height) read by default: 50 megapixels, e.g. 8660 x 5773. An RGB copy
# of it takes 150 MB; images are resized to the network size (a few hundred px) anyway.
DEFAULT_MAX_PIXELS = 50_000_000
_limit = {"pixels": DEFAULT_MAX_PIXELS}
_ORIENTATION = 0x0112  # the EXIF tag; values 5-8 swap width and height
_TRANSPOSED = (5, 6, 7, 8)


def set_max_pixels(pixels: int) -> None:
    """Refuse images of more than ``pixels`` pixels from now on (``--max-pixels``)."""
    if isinstance(pixels, bool) or not isinstance(pixels, int) or pixels < 1:
        raise HmfssError(f"--max-pixels must be a positive integer, got {pixels!r}")
    _limit["pixels"] = pixels
    # PIL refuses at twice its own limit while opening: keep it above ours.
    Image.MAX_IMAGE_PIXELS = max(pixels, Image.MAX_IMAGE_PIXELS or 0)


def max_pixels() -> int:
    """The current pixel limit (see :func:`set_max_pixels`)."""
    return _limit["pixels"]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _open(path: str | Path, draft: tuple[int, int] | None = None) -> Image.Image:
    """Check the header (:func:`check_image_file`), decode, apply the EXIF orientation.

    ``draft``: for JPEG, decode at the smallest 1/2, 1/4 or 1/8 scale still at least this
    (width, height): a large photo is never held at full resolution when it is resized anyway.
    """
    check_image_file(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(path)
            if draft is not None and img.format == "JPEG":
                img.draft("RGB", draft)
            img.load()
            return ImageOps.exif_transpose(img)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError) as exc:
        raise HmfssError(f"cannot read image {path}: {_first_line(exc)}") from None


def check_image_file(path: str | Path) -> tuple[int, int]:
    """(width, height) as displayed (EXIF rotation applied) from the header of a readable image
    under the pixel limit; nothing is decoded, so a command can check all its inputs before it
    writes anything."""
    path = Path(path)
    if not path.is_file():
        raise HmfssError(f"file not found: {path}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                width, height = img.size
                if img.getexif().get(_ORIENTATION, 1) in _TRANSPOSED:
                    width, height = height, width
    except Image.DecompressionBombError:
        raise HmfssError(f"image {path} is over the pixel limit of {max_pixels()} (raise it with --max-pixels)") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError) as exc:
        raise HmfssError(f"cannot read image {path}: {_first_line(exc)}") from None
    if width * height > max_pixels():
        raise HmfssError(f"image {path} is {width}x{height} = {width * height} pixels, over the pixel limit of "
                         f"{max_pixels()} (raise it with --max-pixels)")
    return width, height


def _to_uint8(values: np.ndarray, path: Path) -> np.ndarray:
    """Samples already on a 0..255 scale -> uint8; a wider range is stretched from its
    minimum..maximum to 0..255. NaN or infinite samples are refused."""
    values = values.astype(np.float64)
    if not np.isfinite(values).all():
        raise HmfssError(f"image {path} holds NaN or infinite values")
    if values.size and (values.min() < 0 or values.max() > 255):
        low, high = values.min(), values.max()
        values = (values - low) / (high - low) * 255.0
    return values.round().clip(0, 255).astype(np.uint8)


def _unit_float_to_255(values: np.ndarray) -> np.ndarray:
    """Float samples within [0, 1] are intensities: scale them to 0..255."""
    values = values.astype(np.float64)
    if values.size and np.isfinite(values).all() and values.min() >= 0 and values.max() <= 1:
        return values * 255.0
    return values


def read_image(path: str | Path, draft: tuple[int, int] | None = None) -> Image.Image:
    """Any image mode (grayscale, RGBA, palette, 16-bit, 32-bit integer or float) -> RGB image.

    ``draft``: see :func:`_open` (JPEG only; the result may then be smaller than the file).
    """
    img = _open(path, draft)
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        values = np.asarray(img)
        if img.mode == "F":
            img = Image.fromarray(_to_uint8(_unit_float_to_255(values), Path(path)))
        else:  # integers: kept up to 255, else scaled by the maximum (as 16-bit files)
            values = values.astype(np.float64)
            top = values.max() if values.size else 0
            values = values / top * 255.0 if top > 255 else values
            img = Image.fromarray(values.clip(0, 255).astype(np.uint8))
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (img.mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, img)
    try:
        return img.convert("RGB")
    except ValueError as exc:
        raise HmfssError(f"cannot read image {path}: mode {img.mode} is not supported ({_first_line(exc)})") from None


def _mask_values(path: str | Path) -> tuple[np.ndarray, bool]:
    """(single-channel values (H, W) uint8, whether they are palette indices) of a mask file."""
    img = _open(path)
    if img.mode in ("P", "L", "1"):
        return np.array(img, dtype=np.uint8), img.mode == "P"
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        values = np.asarray(img).astype(np.float64)
        if not (values.size and np.array_equal(values, values.round())):
            values = _unit_float_to_255(values)  # soft float mask: [0, 1] -> 0..255
        return _to_uint8(values, Path(path)), False
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        img = img.convert("RGB")
    return np.array(img.convert("L"), dtype=np.uint8), False


def read_mask_and_ignore(path: str | Path) -> tuple[np.ndarray, np.ndarray | None]:
    """(binary mask (H, W) uint8 in {0, 1}, ignore map (H, W) bool or None) of a mask file.

    See the module docstring for the rules; the ignore map exists only for label maps with
    255 beside other indices.
    """
    values, palette = _mask_values(path)
    present = np.unique(values)
    if set(present.tolist()) <= {0, 1}:
        return values.astype(np.uint8), None
    if set(present.tolist()) <= {0, 255}:
        return (values == 255).astype(np.uint8), None
    if palette or present.max() < 128:  # label map: class indices, 255 = ignore
        ignore = values == 255
        return ((values > 0) & ~ignore).astype(np.uint8), (ignore if ignore.any() else None)
    return (values >= 128).astype(np.uint8), None


def read_mask(path: str | Path) -> np.ndarray:
    """A binary object mask (H, W) uint8 in {0, 1} (see :func:`read_mask_and_ignore`)."""
    return read_mask_and_ignore(path)[0]


def read_label_map(path: str | Path) -> np.ndarray:
    """Raw single-channel label values (H, W) uint8, e.g. VOC / COCO semantic PNGs."""
    img = _open(path)
    if img.mode not in ("L", "P", "1"):
        img = img.convert("L")
    return np.array(img, dtype=np.uint8)


def list_images(folder: str | Path) -> list[Path]:
    """Image files directly inside ``folder``, sorted by name."""
    folder = Path(folder)
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def unique_stems(paths: list[Path] | tuple[Path, ...]) -> list[str]:
    """File stems for output names, with ``_1``, ``_2``... appended to repeats (a/x.png, b/x.png)."""
    seen: dict[str, int] = {}
    stems = []
    for path in paths:
        count = seen.get(path.stem, 0)
        seen[path.stem] = count + 1
        stems.append(path.stem if count == 0 else f"{path.stem}_{count}")
    return stems


def save_image_atomic(img: Image.Image, path: str | Path) -> Path:
    """Write an image (format from the suffix) atomically: never half-written."""
    from hmfss.atomic import atomic_write

    fmt = Image.registered_extensions().get(Path(path).suffix.lower(), "PNG")
    return atomic_write(path, lambda handle: img.save(handle, format=fmt))


def overlay(image: Image.Image, mask: np.ndarray, color: tuple[int, int, int] = (255, 40, 40), alpha: float = 0.5) -> Image.Image:
    """RGB image with the binary (H, W) mask tinted in ``color``."""
    base = np.asarray(image.convert("RGB"), dtype=np.float32)
    tint = np.array(color, dtype=np.float32)
    sel = mask.astype(bool)
    base[sel] = (1 - alpha) * base[sel] + alpha * tint
    return Image.fromarray(base.clip(0, 255).astype(np.uint8))


def read_gray(path: str | Path) -> np.ndarray:
    """The image converted to 8-bit grayscale (PIL ``convert("L")``), (H, W) uint8.

    This is how the original FSS-1000 loader reads masks (then thresholds at 128).
    """
    return np.array(_open(path).convert("L"), dtype=np.uint8)

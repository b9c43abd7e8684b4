"""Reading images and masks from disk with one-line errors naming the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from hmfss.errors import HmfssError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def _open(path: str | Path) -> Image.Image:
    path = Path(path)
    if not path.is_file():
        raise HmfssError(f"file not found: {path}")
    try:
        img = Image.open(path)
        img.load()
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise HmfssError(f"cannot read image {path}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    return img


def read_image(path: str | Path) -> Image.Image:
    """Any image mode (grayscale, RGBA, palette, 16-bit) -> RGB PIL image."""
    img = _open(path)
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        top = arr.max() if arr.size else 0
        arr = (arr / top * 255.0) if top > 255 else arr
        img = Image.fromarray(arr.clip(0, 255).astype(np.uint8))
    if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, img)
    return img.convert("RGB")


def read_label_map(path: str | Path) -> np.ndarray:
    """Raw single-channel label values (H, W) uint8, e.g. VOC / COCO semantic PNGs."""
    img = _open(path)
    if img.mode not in ("L", "P", "1"):
        img = img.convert("L")
    return np.array(img, dtype=np.uint8)


def read_mask(path: str | Path) -> np.ndarray:
    """A binary object mask (H, W) uint8 in {0, 1}.

    Accepts 0/255 and 0/1 grayscale, palette PNGs (index > 0 is foreground, 255 = void is
    background) and RGB(A) masks (converted to gray; >= 128 is foreground).
    """
    img = _open(path)
    if img.mode == "P":
        arr = np.array(img, dtype=np.uint8)
        return ((arr > 0) & (arr < 255)).astype(np.uint8)
    if img.mode in ("RGBA", "LA"):
        img = img.convert("RGB")
    if img.mode == "1":
        return np.array(img, dtype=np.uint8)
    if img.mode != "L":
        img = img.convert("L")
    arr = np.array(img, dtype=np.uint8)
    if arr.size and arr.max() <= 1:
        return arr
    return (arr >= 128).astype(np.uint8)


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


"""The one multi-class prediction path shared by ``hmfss predict --support-dir``, ``hmfss app``
and the Python API: support sets read and checked, encoded once per class, queries segmented
in batches (:func:`hmfss.multiclass.segment_classes`).

A support folder holds ``DIR/<class>/images/*`` with ``DIR/<class>/masks/<same stem>.png``
(the custom-folder layout of the benchmarks); classes are numbered 1.. in sorted name order.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from hmfss.data.io import list_images, read_image, read_mask
from hmfss.data.transforms import image_to_tensor, resize_mask_nearest
from hmfss.errors import HmfssError
from hmfss.model import FewShotSegmenter, SupportState
from hmfss.multiclass import ClassPrediction, encode_classes, segment_classes

MAX_SHOTS = 5  # support images per class offered by the app
MAX_CLASSES = 255  # label PNGs hold one byte per pixel, 0 being the background
BATCH_SIZE = 4  # queries per forward pass (``hmfss predict``'s default)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.+-]{0,63}$")


@dataclass
class ClassSupport:
    """A named class and its annotated examples: RGB images and (H, W) {0, 1} masks."""

    name: str
    images: list[Image.Image] = field(default_factory=list)
    masks: list[np.ndarray] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)  # where each example came from (messages)


def check_class_name(name: str, taken: Sequence[str] = ()) -> str:
    """A usable class name (it names files), stripped; HmfssError otherwise."""
    name = name.strip()
    if not _NAME.match(name) or name.lower() == "background":
        raise HmfssError(f"class name {name!r} is not allowed: use letters, digits, space, _ . + - "
                         f"(at most 64 characters, not 'background')")
    if name in taken:
        raise HmfssError(f"class {name!r} is given twice")
    return name


def check_example(image: Image.Image, mask: np.ndarray, source: str, size: int) -> None:
    """Raise HmfssError if ``mask`` does not fit ``image`` or holds nothing at ``size``."""
    if mask.shape != (image.height, image.width):
        raise HmfssError(f"mask of {source} is {mask.shape[1]}x{mask.shape[0]} but the image is "
                         f"{image.width}x{image.height}")
    if not mask.any():
        raise HmfssError(f"mask of {source} is empty (no foreground pixel)")
    if not resize_mask_nearest(mask, size).any():
        raise HmfssError(f"mask of {source} vanishes when resized to {size}x{size}; the object is too small")


def support_tensors(support: ClassSupport, size: int) -> tuple[Tensor, Tensor]:
    """A class's examples -> (1, K, 3, S, S) images and (1, K, S, S) masks, checked."""
    if not support.images:
        raise HmfssError(f"class {support.name!r} has no support image")
    for image, mask, source in zip(support.images, support.masks, support.sources):
        check_example(image, mask, source, size)
    images = torch.stack([image_to_tensor(img, size) for img in support.images])
    masks = torch.stack([resize_mask_nearest(m, size) for m in support.masks])
    return images[None], masks[None]


def read_support_dir(root: str | Path) -> list[ClassSupport]:
    """``DIR/<class>/images/*`` + ``DIR/<class>/masks/<stem>.png`` -> classes in name order
    (hidden folders such as ``.ipynb_checkpoints`` are not classes)."""
    root = Path(root)
    if not root.is_dir():
        raise HmfssError(f"support folder not found: {root}")
    classes = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        images = list_images(folder / "images") if (folder / "images").is_dir() else []
        if not images:
            raise HmfssError(f"support class folder {folder} has no images/ folder with images")
        support = ClassSupport(check_class_name(folder.name, [c.name for c in classes]))
        for path in images:
            mask_path = folder / "masks" / f"{path.stem}.png"
            if not mask_path.is_file():
                raise HmfssError(f"no mask for support image {path}: expected {mask_path}")
            support.images.append(read_image(path))
            support.masks.append(read_mask(mask_path))
            support.sources.append(str(path))
        classes.append(support)
    if not classes:
        raise HmfssError(f"support folder {root} has no class folders (DIR/<class>/images, DIR/<class>/masks)")
    return classes


@dataclass
class MultiClassSegmenter:
    """A model with its class support states, encoded once and reused for every query."""

    model: FewShotSegmenter
    names: list[str]
    states: list[SupportState]

    @classmethod
    def prepare(cls, model: FewShotSegmenter, classes: Sequence[ClassSupport]) -> "MultiClassSegmenter":
        if not classes:
            raise HmfssError("the support set has no class")
        if len(classes) > MAX_CLASSES:
            raise HmfssError(f"{len(classes)} classes: at most {MAX_CLASSES} fit the one-byte label images")
        size = model.config.img_size
        device = next(model.parameters()).device
        tensors = [tuple(t.to(device) for t in support_tensors(c, size)) for c in classes]
        with torch.inference_mode():
            states = encode_classes(model, tensors)
        return cls(model, [c.name for c in classes], states)

    def segment(
        self,
        images: Sequence[Image.Image],
        batch_size: int = BATCH_SIZE,
        threshold: float | None = None,
        on_batch: Callable[[int], None] | None = None,
    ) -> list[tuple[ClassPrediction, float]]:
        """RGB images -> (prediction at each image's size, seconds per image of its batch)."""
        size = self.model.config.img_size
        device = next(self.model.parameters()).device
        out: list[tuple[ClassPrediction, float]] = []
        for start in range(0, len(images), batch_size):
            chunk = images[start:start + batch_size]
            tick = time.perf_counter()
            batch = torch.stack([image_to_tensor(img, size) for img in chunk]).to(device)
            with torch.inference_mode():
                preds = segment_classes(self.model, batch, self.states,
                                        [(img.height, img.width) for img in chunk], threshold)
            seconds = (time.perf_counter() - tick) / len(chunk)
            out += [(ClassPrediction(p.labels.cpu(), p.probs.cpu(), p.masks.cpu()), seconds) for p in preds]
            if on_batch is not None:
                on_batch(len(out))
        return out

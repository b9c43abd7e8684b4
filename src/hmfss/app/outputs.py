"""Files of a multi-class prediction: per query a palette label PNG, a coloured overlay with a
legend and one binary mask per class; one ``labels.json`` (class index <-> name, colour).

Names: ``<stem>_labels.png`` (pixel value = class index), ``<stem>_overlay.png``,
``<stem>_mask_<class>.png`` (0/255), all at the query's original size.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw

from hmfss.atomic import atomic_write, atomic_write_text
from hmfss.data.io import save_image_atomic
from hmfss.multiclass import ClassPrediction

# background, then one distinct colour per class (repeats after ten classes)
COLORS = [(0, 0, 0), (230, 25, 75), (60, 180, 75), (0, 130, 200), (255, 225, 25), (145, 30, 180),
          (245, 130, 48), (70, 240, 240), (240, 50, 230), (128, 128, 0), (0, 128, 128)]
ALPHA = 0.5  # overlay tint strength


def color(index: int) -> tuple[int, int, int]:
    """RGB colour of class ``index`` (0 = background)."""
    return COLORS[0] if index == 0 else COLORS[1 + (index - 1) % (len(COLORS) - 1)]


def label_image(labels: np.ndarray, classes: int) -> Image.Image:
    """(H, W) class indices -> palette PNG image whose pixel values are the indices."""
    img = Image.fromarray(labels.astype(np.uint8), mode="P")
    palette = [c for i in range(classes + 1) for c in color(i)]
    img.putpalette(palette + [0] * (768 - len(palette)))
    return img


def overlay_labels(image: Image.Image, labels: np.ndarray, names: Sequence[str]) -> Image.Image:
    """The image tinted with each class's colour, with a legend strip (colour, name) below."""
    base = np.asarray(image.convert("RGB"), dtype=np.float32)
    for index in range(1, len(names) + 1):
        sel = labels == index
        base[sel] = (1 - ALPHA) * base[sel] + ALPHA * np.array(color(index), np.float32)
    tinted = Image.fromarray(base.clip(0, 255).astype(np.uint8))
    row = 14
    legend = Image.new("RGB", (tinted.width, row * len(names) + 4), (255, 255, 255))
    draw = ImageDraw.Draw(legend)
    for i, name in enumerate(names):
        y = 2 + i * row
        draw.rectangle([4, y + 1, 14, y + 11], fill=color(i + 1))
        draw.text((20, y), name, fill=(0, 0, 0))
    out = Image.new("RGB", (tinted.width, tinted.height + legend.height))
    out.paste(tinted, (0, 0))
    out.paste(legend, (0, tinted.height))
    return out


def labels_json(names: Sequence[str], threshold: float | None = None) -> dict:
    """Content of ``labels.json``: class index <-> name and colour."""
    classes = [{"index": 0, "name": "background", "color": list(color(0))}]
    classes += [{"index": i, "name": n, "color": list(color(i))} for i, n in enumerate(names, start=1)]
    return {"classes": classes, "threshold": threshold}


def output_suffixes(names: Sequence[str]) -> list[str]:
    """What follows the stem in the names of one query's files: labels, overlay, one mask per class."""
    return ["_labels.png", "_overlay.png"] + [f"_mask_{name}.png" for name in names]


def query_files(stem: str, image: Image.Image, pred: ClassPrediction, names: Sequence[str]) -> dict[str, Image.Image]:
    """File name -> image for one query's results."""
    labels = pred.labels.numpy()
    images = [label_image(labels, len(names)), overlay_labels(image, labels, names)]
    images += [Image.fromarray(((labels == index) * 255).astype(np.uint8)) for index in range(1, len(names) + 1)]
    return {f"{stem}{suffix}": img for suffix, img in zip(output_suffixes(names), images)}


def write_results(out_dir: Path, stems: Sequence[str], images: Sequence[Image.Image],
                  preds: Sequence[ClassPrediction], names: Sequence[str], threshold: float | None = None) -> list[Path]:
    """Write every query's files and ``labels.json`` into ``out_dir`` (atomically); their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for stem, image, pred in zip(stems, images, preds):
        for name, img in query_files(stem, image, pred, names).items():
            written.append(save_image_atomic(img, out_dir / name))
    written.append(atomic_write_text(out_dir / "labels.json", json.dumps(labels_json(names, threshold), indent=1) + "\n"))
    return written


def zip_folder(folder: Path, target: Path) -> Path:
    """All files of ``folder`` (flat) into the zip ``target``, written atomically."""
    def write(handle) -> None:
        with zipfile.ZipFile(handle, "w", zipfile.ZIP_DEFLATED) as archive:
            for path in sorted(folder.iterdir()):
                if path.is_file():
                    archive.write(path, path.name)
    return atomic_write(target, write)

"""What the app's buttons do, without Gradio: build a support set, segment, package results.

Every step raises :class:`HmfssError` with a one-line message for bad input; the page shows it
and keeps running. Segmentation goes through :class:`MultiClassSegmenter` and the files
through :func:`write_results`, exactly as ``hmfss predict --support-dir``.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from PIL import Image

from hmfss.app.outputs import write_results, zip_folder
from hmfss.app.pipeline import MAX_SHOTS, ClassSupport, MultiClassSegmenter, check_class_name, check_example
from hmfss.data.io import list_images, read_image, read_mask, unique_stems
from hmfss.errors import HmfssError
from hmfss.model import FewShotSegmenter


def drawn_mask(editor: dict[str, Any] | None, size: tuple[int, int]) -> np.ndarray | None:
    """The brush strokes of an image-editor value -> (H, W) {0, 1} mask at ``size`` (W, H).

    ``editor["layers"]`` are RGBA arrays; a pixel is foreground where any layer is opaque
    (the eraser makes it transparent again). None when nothing was drawn.
    """
    layers = [np.asarray(layer) for layer in (editor or {}).get("layers") or [] if layer is not None]
    if not layers:
        return None
    alpha = np.zeros(layers[0].shape[:2], bool)
    for layer in layers:
        if layer.ndim == 3 and layer.shape[2] == 4 and layer.shape[:2] == alpha.shape:
            alpha |= layer[..., 3] > 0
    if not alpha.any():
        return None
    mask = Image.fromarray(alpha.astype(np.uint8) * 255)
    if mask.size != size:
        mask = mask.resize(size, Image.NEAREST)
    return (np.asarray(mask) > 0).astype(np.uint8)


@dataclass
class Pending:
    """The example being prepared: uploaded support image and mask file paths (None: not yet)."""

    image: str | None = None
    mask: str | None = None


def check_image(path: str | None) -> str:
    """An uploaded support image's path, once it reads as an image; HmfssError otherwise."""
    if not path:
        raise HmfssError("no support image was uploaded")
    read_image(path)
    return path


def check_mask_file(path: str | None) -> str:
    """An uploaded mask file's path, once it reads as a mask; HmfssError otherwise."""
    if not path:
        raise HmfssError("no mask file was uploaded")
    read_mask(path)
    return path


def pending_text(pending: Pending, added: Pending | None = None) -> str:
    """Markdown: the example being prepared (or the one just added), naming its files."""
    if added is not None and added.image:
        how = f"mask file {Path(added.mask).name}" if added.mask else "drawn mask"
        return f"Added {Path(added.image).name} ({how}). Upload the next support image."
    if not pending.image:
        return "Next example: upload a support image."
    image = read_image(pending.image)
    how = f"mask file {Path(pending.mask).name}" if pending.mask else "draw the mask below, or upload a mask file"
    return f"Next example: support image {Path(pending.image).name} ({image.width}x{image.height} px); {how}."


def queries_text(files: Sequence[str] | None) -> str:
    """Markdown: how many query images are uploaded."""
    if not files:
        return "No query image uploaded."
    return f"{len(files)} query image(s) uploaded: " + ", ".join(Path(f).name for f in files[:8]) + \
        (", ..." if len(files) > 8 else "") + "."


def add_example(classes: list[ClassSupport], name: str, image_path: str | None,
                mask_path: str | None, editor: dict[str, Any] | None, size: int) -> list[ClassSupport]:
    """A copy of ``classes`` with one (image, mask) example added to class ``name`` (created if new).

    The mask is the uploaded mask file when given, else the brush strokes drawn over the image.
    """
    name = check_class_name(name or "")
    if not image_path:
        raise HmfssError("choose a support image first")
    image = read_image(image_path)
    source = Path(image_path).name
    mask = read_mask(mask_path) if mask_path else drawn_mask(editor, image.size)
    if mask is None:
        raise HmfssError(f"no mask for {source}: draw over the object with the brush or upload a mask file")
    check_example(image, mask, source, size)
    out = [ClassSupport(c.name, list(c.images), list(c.masks), list(c.sources)) for c in classes]
    target = next((c for c in out if c.name == name), None)
    if target is None:
        target = ClassSupport(name)
        out.append(target)
    if len(target.images) >= MAX_SHOTS:
        raise HmfssError(f"class {name!r} already has {MAX_SHOTS} examples")
    target.images.append(image)
    target.masks.append(mask)
    target.sources.append(source)
    return out


def summary(classes: Sequence[ClassSupport]) -> str:
    """Markdown list of the support set."""
    if not classes:
        return "Support set: empty. Give a class name, an image and its mask, then *Add example*."
    rows = [f"{i}. **{c.name}**: " + ", ".join(f"{s} (mask {int(m.sum())} px)" for s, m in zip(c.sources, c.masks))
            for i, c in enumerate(classes, 1)]
    return "Support set:\n\n" + "\n".join(rows)


def query_paths(files: Sequence[str] | None, folder: str | None) -> list[Path]:
    """Uploaded query files plus the images of a folder on this machine."""
    paths = [Path(f) for f in files or []]
    if folder and folder.strip():
        root = Path(folder.strip()).expanduser()
        if not root.is_dir():
            raise HmfssError(f"query folder not found: {root}")
        found = list_images(root)
        if not found:
            raise HmfssError(f"no images in folder {root}")
        paths += found
    if not paths:
        raise HmfssError("add query images (upload them or give a folder)")
    return paths


@dataclass
class RunResult:
    """One run's files: overlays with captions, a markdown table and the zip of everything."""

    gallery: list[tuple[str, str]]
    table: str
    zip_path: Path
    seconds: float


def segment_queries(model: FewShotSegmenter | None, classes: Sequence[ClassSupport], paths: Sequence[Path],
                    progress: Callable[[int, int], None] | None = None, workdir: Path | None = None) -> RunResult:
    """Segment every query against every class; write the results and their zip."""
    if model is None:
        raise HmfssError("load a model first")
    tick = time.perf_counter()
    segmenter = MultiClassSegmenter.prepare(model, classes)
    images = [read_image(p) for p in paths]
    results = segmenter.segment(images, on_batch=(lambda done: progress(done, len(images))) if progress else None)
    stems = unique_stems(paths)
    root = Path(workdir or tempfile.mkdtemp(prefix="hmfss-app-"))
    out = root / "results"
    write_results(out, stems, images, [p for p, _ in results], segmenter.names)
    gallery, rows = [], ["| image | seconds | " + " | ".join(segmenter.names) + " |",
                         "|---|---|" + "---|" * len(segmenter.names)]
    for stem, (pred, seconds) in zip(stems, results):
        areas = [100.0 * float((pred.labels == i).float().mean()) for i in range(1, len(segmenter.names) + 1)]
        text = ", ".join(f"{n} {a:.1f} %" for n, a in zip(segmenter.names, areas))
        gallery.append((str(out / f"{stem}_overlay.png"), f"{stem}: {seconds:.2f} s; {text}"))
        rows.append(f"| {stem} | {seconds:.2f} | " + " | ".join(f"{a:.1f} %" for a in areas) + " |")
    zip_path = zip_folder(out, root / "hmfss-results.zip")
    return RunResult(gallery, "\n".join(rows), zip_path, time.perf_counter() - tick)

"""Dataset preparation: standard split lists, COCO semantic masks, PASCAL SegmentationClassAug.

* :func:`download_splits` fetches the split lists of the original HSNet repository (public
  data, not shipped with hmfss) into ``OUT/{pascal,coco,fss}/...``.
* :func:`coco_masks` turns the official ``instances_*.json`` into per-image semantic PNGs:
  value 1..80 = contiguous index of the category in id order (COCO's standard order,
  person = 1 ... toothbrush = 80), 0 = background. Instances are painted in annotation order
  (a later instance overwrites an earlier one where they overlap); crowd regions are
  included unless ``skip_crowd``. Needs pycocotools.
* :func:`voc_aug` builds SegmentationClassAug PNGs (0..20, 255 = boundary/void): the VOC2012
  ``SegmentationClass`` PNGs where they exist, SBD ``cls/*.mat`` masks for the other images.
  Needs scipy.

Every output file is written atomically (temp file + rename), so an interrupted run leaves
no partial file and a rerun skips finished files.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import urllib.error
import urllib.request
import warnings
from pathlib import Path
from typing import Iterable

import numpy as np
from PIL import Image

from hmfss.atomic import atomic_write_bytes
from hmfss.data.io import max_pixels
from hmfss.errors import HmfssError

DEFAULT_SPLITS_URL = "https://raw.githubusercontent.com/juhongm999/hsnet/main/data/splits"

SPLIT_FILES: tuple[str, ...] = (
    *(f"pascal/{kind}/fold{f}.txt" for kind in ("trn", "val") for f in range(4)),
    *(f"coco/{kind}/fold{f}.pkl" for kind in ("trn", "val") for f in range(4)),
    *(f"fss/{name}.txt" for name in ("trn", "val", "test")),
)


def save_png(array: np.ndarray, path: str | Path) -> Path:
    """Single-channel uint8 array -> 8-bit grayscale PNG, written atomically."""
    import io

    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array, dtype=np.uint8), mode="L").save(buffer, format="PNG")
    return atomic_write_bytes(path, buffer.getvalue())


def _progress(iterable, total: int | None, desc: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=desc, unit="file", disable=not enabled, dynamic_ncols=True)


# ---- split lists ------------------------------------------------------------------------------


def _check_split_file(rel: str, data: bytes, url: str) -> None:
    """Refuse a download that is not a split list (an HTML error page, a code-bearing pickle)."""
    if rel.endswith(".pkl"):
        from hmfss.weights import load_plain_pickle

        fd, tmp = tempfile.mkstemp(suffix=".pkl")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            obj = load_plain_pickle(tmp)
        except HmfssError as exc:
            raise HmfssError(f"{url} is not a split list: {str(exc).split(': ', 1)[-1]}") from None
        finally:
            Path(tmp).unlink(missing_ok=True)
        if not isinstance(obj, dict):
            raise HmfssError(f"{url} is not a split list (expected a dict, got {type(obj).__name__})")
        return
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise HmfssError(f"{url} is not a split list (not UTF-8 text)") from None
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines or any("<" in ln for ln in lines[:5]):
        raise HmfssError(f"{url} is not a split list")


def download_splits(out: str | Path, base_url: str = DEFAULT_SPLITS_URL, force: bool = False,
                    progress: bool = True, timeout: float = 60.0) -> list[Path]:
    """Download the standard split lists into ``out``; existing files are kept unless ``force``.

    Returns the files written.
    """
    out = Path(out)
    base_url = base_url.rstrip("/")
    written: list[Path] = []
    for rel in _progress(SPLIT_FILES, len(SPLIT_FILES), "splits", progress):
        target = out / rel
        if target.is_file() and not force:
            continue
        url = f"{base_url}/{rel}"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                data = response.read()
        except urllib.error.HTTPError as exc:
            raise HmfssError(f"cannot download {url}: HTTP {exc.code} {exc.reason}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise HmfssError(f"cannot download {url}: {reason}") from None
        _check_split_file(rel, data, url)
        written.append(atomic_write_bytes(target, data))
    return written


# ---- COCO semantic masks ----------------------------------------------------------------------


def _require_pycocotools():
    try:
        from pycocotools import mask as mask_utils
    except ImportError:
        raise HmfssError(
            "hmfss data coco-masks needs pycocotools: pip install pycocotools (or pip install 'hmfss[coco]')"
        ) from None
    return mask_utils


def rasterize(segmentation, height: int, width: int, mask_utils=None) -> np.ndarray:
    """A COCO segmentation (polygons, uncompressed or compressed RLE) -> (H, W) uint8 {0, 1}."""
    mask_utils = mask_utils or _require_pycocotools()
    if isinstance(segmentation, list):
        polygons = [p for p in segmentation if len(p) >= 6]
        if not polygons:
            return np.zeros((height, width), dtype=np.uint8)
        rle = mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))
    elif isinstance(segmentation, dict) and isinstance(segmentation.get("counts"), list):
        rle = mask_utils.frPyObjects(segmentation, height, width)
    elif isinstance(segmentation, dict):
        rle = dict(segmentation)
        if isinstance(rle["counts"], str):
            rle["counts"] = rle["counts"].encode("ascii")
    else:
        raise ValueError(f"unknown segmentation format {type(segmentation).__name__}")
    with warnings.catch_warnings():  # pycocotools < 2.0.9 warns under NumPy 2 (harmless)
        warnings.simplefilter("ignore", DeprecationWarning)
        decoded = mask_utils.decode(rle)
    return np.asarray(decoded, dtype=np.uint8).reshape(height, width)


def coco_subdir(annotation_file: str | Path) -> str:
    """``instances_val2014.json`` -> ``val2014`` (the folder its masks go to)."""
    stem = Path(annotation_file).stem
    match = re.fullmatch(r"instances_(.+)", stem)
    return match.group(1) if match else stem


def _load_json(path: Path) -> dict:
    if not path.is_file():
        raise HmfssError(f"annotation file not found: {path}")
    try:
        with path.open("r", encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError) as exc:
        raise HmfssError(f"cannot read annotation file {path}: {exc}") from None
    if not isinstance(data, dict):
        raise HmfssError(f"{path} is not a COCO instances file (it holds a {type(data).__name__}, not an object)")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise HmfssError(f"{path} is not a COCO instances file (no '{key}' list)")
    return data


def _image_size(image: dict, ann_file: Path) -> tuple[int, int]:
    """(height, width) of a COCO image entry: positive integers within the pixel limit."""
    height, width = image["height"], image["width"]
    if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in (height, width)):
        raise HmfssError(f"{ann_file}: image {image.get('id')} has size {width!r}x{height!r}; "
                         "expected positive integers")
    if height * width > max_pixels():
        raise HmfssError(f"{ann_file}: image {image.get('id')} is {width}x{height} pixels, over the pixel limit "
                         f"of {max_pixels()}")
    return height, width


def coco_masks(annotation_files: Iterable[str | Path], out: str | Path, skip_crowd: bool = False,
               progress: bool = True) -> dict[str, int]:
    """Write ``OUT/<subdir>/<image stem>.png`` for every image of every annotation file.

    Returns counts {"written", "skipped"} (skipped = already present). A malformed entry
    (missing key, wrong type) is an error naming the file.
    """
    mask_utils = _require_pycocotools()
    counts = {"written": 0, "skipped": 0}
    for ann_file in map(Path, annotation_files):
        data = _load_json(ann_file)
        try:
            _write_masks_of(ann_file, data, Path(out), skip_crowd, progress, mask_utils, counts)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise HmfssError(f"{ann_file}: malformed COCO entry ({type(exc).__name__}: {exc})") from None
    return counts


def _write_masks_of(ann_file: Path, data: dict, out: Path, skip_crowd: bool, progress: bool, mask_utils,
                    counts: dict[str, int]) -> None:
    """The label PNGs of one annotation file's images (see :func:`coco_masks`)."""
    category_ids = sorted(int(c["id"]) for c in data["categories"])
    label_of = {cid: index + 1 for index, cid in enumerate(category_ids)}
    if len(label_of) > 255:
        raise HmfssError(f"{ann_file}: {len(label_of)} categories do not fit an 8-bit mask")
    by_image: dict[int, list[dict]] = {}
    for ann in data["annotations"]:
        by_image.setdefault(int(ann["image_id"]), []).append(ann)
    folder = out / coco_subdir(ann_file)
    images = sorted(data["images"], key=lambda im: int(im["id"]))
    for image in _progress(images, len(images), coco_subdir(ann_file), progress):
        target = folder / f"{Path(image['file_name']).stem}.png"
        if target.is_file():
            counts["skipped"] += 1
            continue
        height, width = _image_size(image, ann_file)
        label = np.zeros((height, width), dtype=np.uint8)
        for ann in by_image.get(int(image["id"]), []):
            if skip_crowd and ann.get("iscrowd", 0):
                continue
            if int(ann["category_id"]) not in label_of:
                raise HmfssError(f"{ann_file}: annotation {ann.get('id')} has unknown category {ann['category_id']}")
            label[rasterize(ann["segmentation"], height, width, mask_utils) > 0] = label_of[int(ann["category_id"])]
        save_png(label, target)
        counts["written"] += 1


# ---- PASCAL VOC SegmentationClassAug ----------------------------------------------------------


def _require_scipy_io():
    try:
        import scipy.io
    except ImportError:
        raise HmfssError("hmfss data voc-aug needs scipy: pip install scipy (or pip install 'hmfss[voc]')") from None
    return scipy.io


def read_sbd_mat(path: str | Path) -> np.ndarray:
    """The class segmentation (H, W) uint8 of an SBD ``cls/<name>.mat`` file (struct ``GTcls``)."""
    sio = _require_scipy_io()
    path = Path(path)
    try:
        mat = sio.loadmat(str(path), squeeze_me=True, struct_as_record=False)
    except Exception as exc:  # scipy raises several types for broken files
        raise HmfssError(f"cannot read SBD file {path}: {exc}") from None
    gt = mat.get("GTcls")
    seg = getattr(gt, "Segmentation", None)
    if seg is None and isinstance(gt, np.ndarray) and gt.dtype.names and "Segmentation" in gt.dtype.names:
        seg = gt["Segmentation"].item()
    if seg is None:
        raise HmfssError(f"{path} has no GTcls.Segmentation (expected an SBD cls/*.mat file)")
    seg = np.asarray(seg)
    if seg.ndim != 2:
        raise HmfssError(f"{path}: GTcls.Segmentation is not a 2-D label map")
    return seg.astype(np.uint8)


def _find_dir(root: Path, candidates: tuple[str, ...], pattern: str, what: str) -> Path:
    for sub in candidates:
        folder = root / sub if sub else root
        if folder.is_dir() and any(folder.glob(pattern)):
            return folder
    tried = ", ".join(str(root / s) if s else str(root) for s in candidates)
    raise HmfssError(f"no {what} found (looked in {tried})")


def voc_aug(sbd: str | Path | None, voc: str | Path | None, out: str | Path, progress: bool = True) -> dict[str, int]:
    """Write ``OUT/<name>.png`` for every VOC2012 SegmentationClass PNG and every SBD mask.

    ``voc``: the VOC2012 folder (or its SegmentationClass folder); ``sbd``: the SBD
    ``dataset`` folder (or its ``cls`` folder, or the SBD root). VOC annotations win where
    both exist (they carry the 255 boundaries). Returns counts {"voc", "sbd", "skipped"}.
    """
    if sbd is None and voc is None:
        raise HmfssError("give --sbd and/or --voc")
    out = Path(out)
    counts = {"voc": 0, "sbd": 0, "skipped": 0}
    done: set[str] = set()
    if voc is not None:
        voc_dir = _find_dir(Path(voc), ("SegmentationClass", "VOC2012/SegmentationClass", ""), "*.png",
                            "VOC2012 SegmentationClass PNGs")
        files = sorted(voc_dir.glob("*.png"))
        for path in _progress(files, len(files), "voc", progress):
            done.add(path.stem)
            target = out / path.name
            if target.is_file():
                counts["skipped"] += 1
                continue
            from hmfss.data.io import read_label_map

            save_png(read_label_map(path), target)
            counts["voc"] += 1
    if sbd is not None:
        _require_scipy_io()
        cls_dir = _find_dir(Path(sbd), ("cls", "dataset/cls", "benchmark_RELEASE/dataset/cls", ""), "*.mat",
                            "SBD cls/*.mat files")
        files = sorted(p for p in cls_dir.glob("*.mat") if p.stem not in done)
        for path in _progress(files, len(files), "sbd", progress):
            target = out / f"{path.stem}.png"
            if target.is_file():
                counts["skipped"] += 1
                continue
            save_png(read_sbd_mat(path), target)
            counts["sbd"] += 1
    return counts

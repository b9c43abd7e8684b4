"""Tiny benchmark datasets in the real on-disk layouts, with their split lists.

Every builder writes images with varied sizes and known label maps and returns a
``SimpleNamespace`` with the dataset root (``datapath``), the split-list folder (``splits``)
and the label maps it wrote, so that tests can compute expected values by hand.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from PIL import Image

SIZES = [(40, 56), (48, 40), (36, 44), (52, 52), (44, 36)]


def write_rgb(path: Path, h: int, w: int, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    if path.suffix.lower() in (".jpg", ".jpeg"):
        Image.fromarray(arr).save(path, quality=95)
    else:
        Image.fromarray(arr).save(path)


def write_label(path: Path, label: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(label.astype(np.uint8), mode="L").save(path)


def box_label(h: int, w: int, value: int, box: tuple[int, int, int, int], border: bool = False,
              base: np.ndarray | None = None) -> np.ndarray:
    """Label map with ``value`` inside box (y0, y1, x0, x1) and optionally a 1-px 255 ring."""
    label = np.zeros((h, w), np.uint8) if base is None else base.copy()
    y0, y1, x0, x1 = box
    if border:
        label[max(y0 - 1, 0):y1 + 1, max(x0 - 1, 0):x1 + 1] = 255
    label[y0:y1, x0:x1] = value
    return label


# ---- PASCAL-5i ------------------------------------------------------------------------------

def make_pascal(root: Path) -> SimpleNamespace:
    """Fold-0 val list over VOC classes 1 (aeroplane) and 2 (bicycle); "m0" has both.

    Also small trn lists for every fold (names only; their images are not written).
    """
    datapath, splits = root / "data", root / "splits"
    voc = datapath / "VOC2012"
    labels: dict[str, np.ndarray] = {}
    plan = {  # name: [(voc index, box)]
        "2008_000001": [(1, (4, 20, 6, 30))],
        "2008_000002": [(1, (10, 30, 10, 20))],
        "2008_000003": [(1, (2, 8, 2, 8))],
        "2009_000001": [(2, (5, 25, 5, 25))],
        "2009_000002": [(2, (20, 40, 3, 33))],
        "2010_000001": [(1, (3, 13, 3, 13)), (2, (20, 30, 20, 30))],
    }
    for i, (name, objects) in enumerate(plan.items()):
        h, w = SIZES[i % len(SIZES)]
        label = np.zeros((h, w), np.uint8)
        for value, box in objects:
            label = box_label(h, w, value, box, border=True, base=label)
        labels[name] = label
        write_rgb(voc / "JPEGImages" / f"{name}.jpg", h, w, seed=i)
        write_label(voc / "SegmentationClassAug" / f"{name}.png", label)
    val = [(n, v) for n, objs in plan.items() for v, _ in objs]
    val.sort(key=lambda e: e[0])
    lines = [f"{n}__{v:02d}" for n, v in val]
    (splits / "pascal" / "val").mkdir(parents=True)
    (splits / "pascal" / "trn").mkdir(parents=True)
    (splits / "pascal" / "val" / "fold0.txt").write_text("\n".join(lines) + "\n")
    for fold in range(4):
        first = 5 * fold + 1
        trn = [f"2011_{fold}{k:05d}__{first + k % 5:02d}" for k in range(6)]
        (splits / "pascal" / "trn" / f"fold{fold}.txt").write_text("\n".join(trn) + "\n")
        if fold:
            val_lines = [f"2012_{fold}{k:05d}__{first + k % 5:02d}" for k in range(10)]
            (splits / "pascal" / "val" / f"fold{fold}.txt").write_text("\n".join(val_lines) + "\n")
    return SimpleNamespace(datapath=datapath, splits=splits, labels=labels, val=[(n, v - 1) for n, v in val])


# ---- COCO-20i -------------------------------------------------------------------------------

def coco_name(split: str, number: int) -> str:
    return f"{split}/COCO_{split}_{number:012d}.jpg"


def make_coco(root: Path) -> SimpleNamespace:
    """Fold-0 val pkl: three val2014 images holding all 20 fold-0 classes (2-px stripes)."""
    datapath, splits = root / "data", root / "splits"
    base = datapath / "COCO2014"
    fold0 = [4 * i for i in range(20)]
    labels: dict[str, np.ndarray] = {}
    names = [coco_name("val2014", n) for n in (139, 285, 632)]
    for i, name in enumerate(names):
        h, w = SIZES[i]
        label = np.zeros((h, w), np.uint8)
        order = np.roll(np.array(fold0), i)
        for k, cid in enumerate(order):
            label[2 * k:2 * k + 2, : w // 2 + 4 * i] = cid + 1
        labels[name] = label
        write_rgb(base / name, h, w, seed=10 + i)
        write_label(base / "annotations" / name.replace(".jpg", ".png"), label)
    val = {c: [] for c in range(80)}
    for c in fold0:
        val[c] = list(names) if c % 8 else list(reversed(names))
    (splits / "coco" / "val").mkdir(parents=True)
    (splits / "coco" / "trn").mkdir(parents=True)
    with open(splits / "coco" / "val" / "fold0.pkl", "wb") as handle:
        pickle.dump(val, handle)
    trn = {c: ([] if c in fold0 else [coco_name("train2014", 1000 + c), coco_name("train2014", 2000 + c)]) for c in range(80)}
    with open(splits / "coco" / "trn" / "fold0.pkl", "wb") as handle:
        pickle.dump(trn, handle)
    return SimpleNamespace(datapath=datapath, splits=splits, labels=labels, names=names, classes=fold0)


# ---- FSS-1000 -------------------------------------------------------------------------------

def make_fss(root: Path, categories=("zebra_fish", "apple_pie"), trn=("abacus",), val=("banjo",)) -> SimpleNamespace:
    """Test categories (listed unsorted) with 1..10.jpg and gray masks (values 0/127/128/255)."""
    datapath, splits = root / "data", root / "splits"
    labels: dict[str, np.ndarray] = {}
    for ci, cat in enumerate(categories):
        for n in range(1, 11):
            h, w = (24, 24) if n % 2 else (20, 28)
            gray = np.zeros((h, w), np.uint8)
            gray[2:2 + n, 3:15] = 255
            gray[15:18, 3:10] = 127  # below the 128 threshold: background
            gray[18:19, 3:10] = 128  # exactly 128: foreground
            labels[f"{cat}/{n}.jpg"] = gray
            write_rgb(datapath / "FSS-1000" / cat / f"{n}.jpg", h, w, seed=100 * ci + n)
            write_label(datapath / "FSS-1000" / cat / f"{n}.png", gray)
    (splits / "fss").mkdir(parents=True)
    (splits / "fss" / "test.txt").write_text("\n".join(categories) + "\n")
    (splits / "fss" / "trn.txt").write_text("\n".join(trn) + "\n")
    (splits / "fss" / "val.txt").write_text("\n".join(val) + "\n")
    return SimpleNamespace(datapath=datapath, splits=splits, labels=labels, categories=sorted(categories))


# ---- custom folders -------------------------------------------------------------------------

def make_folder(root: Path) -> SimpleNamespace:
    """cat: 0/255 PNG masks; dog: 0/1 masks and a palette mask; bird: 0/255 (3 classes)."""
    datapath = root / "custom"
    masks: dict[str, np.ndarray] = {}
    spec = {
        "cat": [("a.jpg", "L255"), ("b.jpg", "L255"), ("c.png", "L255")],
        "dog": [("x.jpg", "L01"), ("y.jpg", "P")],
        "bird": [("p.jpg", "L255"), ("q.jpg", "L255")],
    }
    for ci, (cls, files) in enumerate(spec.items()):
        for k, (filename, kind) in enumerate(files):
            h, w = SIZES[(ci + k) % len(SIZES)]
            write_rgb(datapath / cls / "images" / filename, h, w, seed=200 + 10 * ci + k)
            binary = np.zeros((h, w), np.uint8)
            binary[3:3 + 5 * (k + 1), 4:20] = 1
            masks[f"{cls}/{filename}"] = binary
            target = datapath / cls / "masks" / f"{Path(filename).stem}.png"
            target.parent.mkdir(parents=True, exist_ok=True)
            if kind == "L255":
                Image.fromarray(binary * 255, mode="L").save(target)
            elif kind == "L01":
                Image.fromarray(binary, mode="L").save(target)
            else:
                pal = Image.fromarray(binary, mode="L").convert("P")
                pal.putpalette([0, 0, 0, 200, 30, 30] + [0] * 762)
                pal.save(target)
    return SimpleNamespace(datapath=datapath, masks=masks, classes=sorted(spec))

"""Benchmark split lists, class ids and fold assignment (see docs/protocol.md).

A :class:`SplitInfo` describes one split of one benchmark (which classes are evaluated, which
images belong to each class, in which order queries are taken) and is built from the split
lists alone: nothing here opens an image.

Standard lists (layout of the original HSNet repository's ``data/splits``)::

    SPLITS/pascal/{trn,val}/fold{0..3}.txt   one "<image>__<VOC class 01..20>" per line
    SPLITS/coco/{trn,val}/fold{0..3}.pkl     dict {class 0..79: [relative image paths]}
    SPLITS/fss/{trn,val,test}.txt            one category name per line

Class ids are dataset-global as in the original loaders: PASCAL 0..19 (VOC index - 1),
COCO 0..79 (standard category order), FSS-1000 0..999 (trn 0-519, val 520-759, test
760-999, alphabetical within each split), custom folders: index in the sorted class list.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hmfss.errors import HmfssError
from hmfss.data.io import IMAGE_SUFFIXES

BENCHMARKS = ("pascal", "coco", "fss", "folder")
SPLITS = ("test", "val", "trn")
NFOLDS = 4

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)  # fmt: skip

COCO_CLASSES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich",
    "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote",
    "keyboard", "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book",
    "clock", "vase", "scissors", "teddy bear", "hair drier", "toothbrush",
)  # fmt: skip

FSS_SPLIT_OFFSET = {"trn": 0, "val": 520, "test": 760}
FSS_IMAGES_PER_CLASS = 10

HOW_TO_GET_LISTS = "get the standard lists with `hmfss data splits --out DIR` and pass --splits DIR"


@dataclass
class SplitInfo:
    """One split of a benchmark, derived from the split lists alone.

    entries: (image name, class id) in the original loader's order; for "query-order"
    sampling the i-th episode's query is ``entries[i % len(entries)]``.
    classwise: class id -> candidate image names for that class (support pool; for
    "class-first" sampling also the query pool), in list order.
    sampling: "query-order" (PASCAL, FSS, folder) or "class-first" (COCO: class, then
    query, then supports).
    """

    benchmark: str
    split: str
    fold: int
    class_ids: list[int]
    class_names: list[str]  # indexed by global class id
    entries: list[tuple[str, int]]
    classwise: dict[int, list[str]]
    sampling: str = "query-order"
    default_episodes: int = 1000
    extra: dict = field(default_factory=dict)  # benchmark-specific (folder: mask paths)

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    def class_name(self, class_id: int) -> str:
        return self.class_names[class_id]

    @property
    def classes_in_use(self) -> list[int]:
        """Class ids the episodes of this split can have, ascending: ``class_ids`` for
        class-first sampling (COCO draws the class first), else the classes of ``entries``
        (a PASCAL list need not cover every class of its fold)."""
        if self.sampling == "class-first":
            return sorted(self.class_ids)
        return sorted({c for _, c in self.entries})


# ---- helpers ----------------------------------------------------------------------------------


def normalise_split(split: str) -> str:
    if split not in SPLITS:
        raise HmfssError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    return split


def check_fold(benchmark: str, fold: int) -> int:
    if benchmark in ("pascal", "coco") and not 0 <= int(fold) < NFOLDS:
        raise HmfssError(f"fold {fold} is out of range for {benchmark} (0-{NFOLDS - 1})")
    return int(fold)


def _list_file(splits_dir: str | Path | None, *parts: str) -> Path:
    if splits_dir is None:
        raise HmfssError(f"no split lists given: {HOW_TO_GET_LISTS}")
    root = Path(splits_dir)
    if not root.is_dir():
        raise HmfssError(f"split list folder not found: {root} ({HOW_TO_GET_LISTS})")
    path = root.joinpath(*parts)
    if not path.is_file():
        raise HmfssError(f"split list not found: {path} ({HOW_TO_GET_LISTS})")
    return path


def _read_lines(path: Path) -> list[str]:
    """Non-empty lines of a text list (the originals drop the empty string after the last newline)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise HmfssError(f"cannot read split list {path}: {exc}") from None
    return [line.strip() for line in text.splitlines() if line.strip()]


def pascal_class_ids(fold: int, split: str) -> list[int]:
    """Fold f tests VOC classes 5f+1..5f+5 (ids 5f..5f+4); training uses the other 15."""
    test = [fold * 5 + i for i in range(5)]
    return [c for c in range(20) if c not in test] if split == "trn" else test


def coco_class_ids(fold: int, split: str) -> list[int]:
    """Interleaved: fold f tests classes f, f+4, ..., f+76; training uses the other 60."""
    test = [fold + NFOLDS * i for i in range(20)]
    return [c for c in range(80) if c not in test] if split == "trn" else test


# ---- PASCAL-5i --------------------------------------------------------------------------------


def read_pascal_list(path: str | Path) -> list[tuple[str, int]]:
    """``<name>__<VOC index>`` lines -> [(name, class id 0..19)]."""
    path = Path(path)
    out = []
    for number, line in enumerate(_read_lines(path), 1):
        name, sep, index = line.rpartition("__")
        if not sep or not name or not index.isdigit() or not 1 <= int(index) <= 20:
            raise HmfssError(f"{path} line {number}: expected '<image>__<class 01..20>', got {line!r}")
        out.append((name, int(index) - 1))
    return out


def pascal_split(splits_dir: str | Path | None, fold: int, split: str = "test") -> SplitInfo:
    """PASCAL-5i: val/test = the fold's val list; trn = the trn lists of the other three folds."""
    split = normalise_split(split)
    fold = check_fold("pascal", fold)
    kind = "trn" if split == "trn" else "val"
    folds = [f for f in range(NFOLDS) if f != fold] if kind == "trn" else [fold]
    entries: list[tuple[str, int]] = []
    for f in folds:
        entries += read_pascal_list(_list_file(splits_dir, "pascal", kind, f"fold{f}.txt"))
    classwise: dict[int, list[str]] = {c: [] for c in range(20)}
    for name, cid in entries:
        classwise[cid].append(name)
    return SplitInfo(
        "pascal", split, fold, pascal_class_ids(fold, kind), list(VOC_CLASSES), entries, classwise,
        sampling="query-order", default_episodes=len(entries) if kind == "trn" else 1000,
    )


# ---- COCO-20i ---------------------------------------------------------------------------------


def read_coco_pkl(path: str | Path) -> dict[int, list[str]]:
    """A split ``.pkl``: {class 0..79: [relative image paths]}, read without executing code."""
    from hmfss.weights import load_plain_pickle

    path = Path(path)
    data = load_plain_pickle(path)
    if not isinstance(data, dict):
        raise HmfssError(f"{path}: expected a dict of class id -> image list, got {type(data).__name__}")
    out: dict[int, list[str]] = {}
    for key, names in data.items():
        if not isinstance(key, int) or not 0 <= key < 80:
            raise HmfssError(f"{path}: unexpected class key {key!r} (expected 0..79)")
        if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
            raise HmfssError(f"{path}: class {key} does not map to a list of image paths")
        out[key] = list(names)
    return out


def coco_split(splits_dir: str | Path | None, fold: int, split: str = "test") -> SplitInfo:
    """COCO-20i: the fold's trn or val pkl; episodes pick a class first."""
    split = normalise_split(split)
    fold = check_fold("coco", fold)
    kind = "trn" if split == "trn" else "val"
    path = _list_file(splits_dir, "coco", kind, f"fold{fold}.pkl")
    lists = read_coco_pkl(path)
    class_ids = coco_class_ids(fold, kind)
    classwise = {c: list(lists.get(c, [])) for c in range(80)}
    for c in class_ids:
        if not classwise[c]:
            raise HmfssError(f"{path}: class {c} ({COCO_CLASSES[c]}) has no images")
    unique = sorted({n for names in lists.values() for n in names})
    entries = [(name, -1) for name in unique]  # the original's img_metadata (its length = trn epoch size)
    return SplitInfo(
        "coco", split, fold, class_ids, list(COCO_CLASSES), entries, classwise,
        sampling="class-first", default_episodes=len(unique) if kind == "trn" else 1000,
    )


# ---- FSS-1000 ---------------------------------------------------------------------------------


def fss_names(category: str, datapath: str | Path | None = None) -> list[str]:
    """A category's images: the ``*.jpg`` files of ``DATAPATH/FSS-1000/<category>`` when that
    folder exists (as the original loader lists them; also serves synthetic sets with another
    image count), else the standard 10, in the order 1..10."""
    folder = Path(datapath) / "FSS-1000" / category if datapath is not None else None
    if folder is not None and folder.is_dir():
        numeric = lambda p: (not p.stem.isdigit(), int(p.stem) if p.stem.isdigit() else 0, p.name)  # noqa: E731
        return [f"{category}/{p.name}" for p in sorted(folder.glob("*.jpg"), key=numeric)]
    return [f"{category}/{i}.jpg" for i in range(1, FSS_IMAGES_PER_CLASS + 1)]


def fss_split(splits_dir: str | Path | None, split: str = "test", datapath: str | Path | None = None) -> SplitInfo:
    """FSS-1000: categories of the split sorted by name; queries = every image of every
    category in (category, lexicographic file name) order, i.e. 1, 10, 2, ..., 9."""
    split = normalise_split(split)
    path = _list_file(splits_dir, "fss", f"{split}.txt")
    categories = sorted(_read_lines(path))
    offset = FSS_SPLIT_OFFSET[split]
    names = [f"fss-{i}" for i in range(1000)]
    entries: list[tuple[str, int]] = []
    classwise: dict[int, list[str]] = {}
    for index, cat in enumerate(categories):
        cid = offset + index
        if cid >= 1000:
            raise HmfssError(f"{path}: too many categories ({len(categories)})")
        names[cid] = cat
        classwise[cid] = fss_names(cat, datapath)
        entries += [(n, cid) for n in sorted(classwise[cid])]
    class_ids = list(range(offset, offset + len(categories)))
    return SplitInfo(
        "fss", split, 0, class_ids, names, entries, classwise,
        sampling="query-order", default_episodes=len(entries),
    )


# ---- custom folders ---------------------------------------------------------------------------


def _find_mask(mask_dir: Path, stem: str) -> Path | None:
    for suffix in (".png",) + tuple(s for s in IMAGE_SUFFIXES if s != ".png"):
        candidate = mask_dir / f"{stem}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def folder_classes(root: str | Path) -> list[str]:
    """Sorted class folders of a custom dataset (those with an ``images`` sub-folder)."""
    root = Path(root)
    if not root.is_dir():
        raise HmfssError(f"dataset folder not found: {root}")
    classes = sorted(p.name for p in root.iterdir() if (p / "images").is_dir() and not p.name.startswith("."))
    if not classes:
        raise HmfssError(f"no class folders in {root} (expected {root}/<class>/images/*.jpg and {root}/<class>/masks/*.png)")
    return classes


def folder_test_classes(classes: list[str], classes_file: str | Path | None = None,
                        test_ratio: float | None = None, split_seed: int = 0) -> list[str]:
    """Test classes: those listed in ``classes_file``; else a seeded random ``test_ratio`` of
    the classes (at least one); else every class. Both at once is an error (one would be ignored)."""
    if classes_file is not None and test_ratio is not None:
        raise HmfssError(f"--classes {classes_file} and --test-ratio {test_ratio} both choose the test classes; "
                         "give one of them")
    if classes_file is not None:
        path = Path(classes_file)
        if not path.is_file():
            raise HmfssError(f"class list not found: {path}")
        wanted = _read_lines(path)
        unknown = [c for c in wanted if c not in classes]
        if unknown:
            raise HmfssError(f"{path}: class {unknown[0]!r} is not a class folder of the dataset")
        return sorted(set(wanted))
    if test_ratio is not None:
        if not 0.0 < test_ratio <= 1.0:
            raise HmfssError(f"--test-ratio must be in (0, 1], got {test_ratio}")
        count = max(1, int(round(test_ratio * len(classes))))
        order = np.random.RandomState(split_seed).permutation(len(classes))
        return sorted(classes[i] for i in order[:count])
    return list(classes)


def folder_split(root: str | Path, split: str = "test", classes_file: str | Path | None = None,
                 test_ratio: float | None = None, split_seed: int = 0) -> SplitInfo:
    """Custom data ``ROOT/<class>/images/<stem>.jpg|png`` + ``ROOT/<class>/masks/<stem>.png``.

    test / val: the test classes; trn: the other classes. Class id = index in the sorted
    list of all class folders. Only folder listings are read (no image is opened); an image
    without a mask is an error naming it.
    """
    split = normalise_split(split)
    root = Path(root)
    classes = folder_classes(root)
    test = set(folder_test_classes(classes, classes_file, test_ratio, split_seed))
    chosen = [c for c in classes if (c not in test if split == "trn" else c in test)]
    if not chosen:
        raise HmfssError(f"no {split} classes in {root} (all classes are test classes; give --classes or --test-ratio)")
    entries: list[tuple[str, int]] = []
    classwise: dict[int, list[str]] = {}
    masks: dict[str, Path] = {}
    for cls in chosen:
        cid = classes.index(cls)
        image_dir, mask_dir = root / cls / "images", root / cls / "masks"
        files = sorted(p for p in image_dir.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if len(files) < 2:
            raise HmfssError(f"class folder {image_dir} needs at least 2 images, found {len(files)}")
        classwise[cid] = []
        for path in files:
            mask = _find_mask(mask_dir, path.stem)
            if mask is None:
                raise HmfssError(f"no mask for image {path} (expected {mask_dir / (path.stem + '.png')})")
            name = f"{cls}/{path.name}"
            masks[name] = mask
            classwise[cid].append(name)
            entries.append((name, cid))
    return SplitInfo(
        "folder", split, 0, [classes.index(c) for c in chosen], list(classes), entries, classwise,
        sampling="query-order", default_episodes=len(entries), extra={"masks": masks, "root": root},
    )


# ---- dispatch ---------------------------------------------------------------------------------


def default_splits_dir(datapath: str | Path | None) -> Path | None:
    """``$HMFSS_SPLITS``, else ``DATAPATH/splits`` when it exists, else None."""
    env = os.environ.get("HMFSS_SPLITS")
    if env:
        return Path(env)
    if datapath is not None and (Path(datapath) / "splits").is_dir():
        return Path(datapath) / "splits"
    return None


def load_split(benchmark: str, splits_dir: str | Path | None = None, fold: int = 0, split: str = "test",
               datapath: str | Path | None = None, classes_file: str | Path | None = None,
               test_ratio: float | None = None, split_seed: int = 0) -> SplitInfo:
    """The :class:`SplitInfo` of any benchmark (``datapath`` is read for ``folder``, and for
    ``fss`` to list the category folders when present)."""
    if benchmark == "pascal":
        return pascal_split(splits_dir or default_splits_dir(datapath), fold, split)
    if benchmark == "coco":
        return coco_split(splits_dir or default_splits_dir(datapath), fold, split)
    if benchmark == "fss":
        return fss_split(splits_dir or default_splits_dir(datapath), split, datapath)
    if benchmark == "folder":
        if datapath is None:
            raise HmfssError("--benchmark folder needs --datapath DIR")
        return folder_split(datapath, split, classes_file, test_ratio, split_seed)
    raise HmfssError(f"unknown benchmark {benchmark!r}; choose one of {', '.join(BENCHMARKS)}")

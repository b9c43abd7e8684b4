"""Readers for the on-disk layouts of the benchmarks (see docs/protocol.md).

A reader maps an episode name (as in the split lists) to its image and mask files and loads
one (image, binary mask, ignore map) triple for a class::

    DATAPATH/VOC2012/JPEGImages/<name>.jpg            PASCAL-5i, name "2007_000033"
    DATAPATH/VOC2012/SegmentationClassAug/<name>.png    values 0..20, 255 = boundary (ignored)
    DATAPATH/COCO2014/<name>                          COCO-20i, name "val2014/COCO_val2014_<id>.jpg"
    DATAPATH/COCO2014/annotations/<name .png>           values 0..80 (class id + 1)
    DATAPATH/FSS-1000/<category>/<n>.jpg|.png         FSS-1000, name "<category>/<n>.jpg"
    DATAPATH/<class>/images/<stem>.jpg|png            custom folders, name "<class>/<file>"
    DATAPATH/<class>/masks/<stem>.png                   0/255, 0/1 or palette masks (rules: hmfss.data.io)

Images are converted to RGB; masks become {0, 1} for the episode's class.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from hmfss.errors import HmfssError
from hmfss.data import io
from hmfss.data.splits import SplitInfo


@dataclass
class Sample:
    """One loaded image with its binary mask for a class and the ignore map (or None)."""

    image: Image.Image  # RGB, (H, W) or, decoded at a reduced scale (Reader.draft), smaller
    mask: np.ndarray  # (H, W) uint8 {0, 1}
    ignore: np.ndarray | None  # (H, W) bool, True = not evaluated (PASCAL 255)

    @property
    def size(self) -> tuple[int, int]:
        return self.mask.shape[0], self.mask.shape[1]


class Reader:
    """Base class: ``paths(name)`` -> (image, mask) files; ``load(name, class_id)`` -> Sample."""

    benchmark = ""
    folders: tuple[str, ...] = ()  # required sub-folders of the dataset root

    def __init__(self, datapath: str | Path):
        self.root = Path(datapath)
        # (width, height) the images are resized to at least: large JPEGs are decoded at a
        # reduced scale (see hmfss.data.io.read_image); masks keep their full size
        self.draft: tuple[int, int] | None = None

    def check(self) -> None:
        """Raise :class:`HmfssError` naming the first missing dataset folder."""
        if not self.root.is_dir():
            raise HmfssError(f"dataset folder not found: {self.root} (--datapath)")
        for sub in self.folders:
            if not (self.root / sub).is_dir():
                raise HmfssError(f"dataset folder not found: {self.root / sub} (expected the {self.benchmark} layout)")

    def paths(self, name: str) -> tuple[Path, Path]:
        raise NotImplementedError

    def labels(self, name: str, class_id: int) -> tuple[np.ndarray, np.ndarray | None]:
        raise NotImplementedError

    def load(self, name: str, class_id: int) -> Sample:
        image_path, mask_path = self.paths(name)
        width, height = io.check_image_file(image_path)
        image = io.read_image(image_path, draft=self.draft)
        mask, ignore = self.labels(name, class_id)
        if mask.shape != (height, width):
            raise HmfssError(
                f"mask {mask_path} is {mask.shape[1]}x{mask.shape[0]} but image {image_path} is "
                f"{width}x{height}"
            )
        return Sample(image, mask, ignore)

    def missing(self, names) -> tuple[str, Path] | None:
        """The first (name, file) among ``names`` whose image or mask file does not exist."""
        for name in names:
            for path in self.paths(name):
                if not path.is_file():
                    return name, path
        return None


class PascalReader(Reader):
    benchmark = "pascal"
    folders = ("VOC2012/JPEGImages", "VOC2012/SegmentationClassAug")

    def paths(self, name: str) -> tuple[Path, Path]:
        voc = self.root / "VOC2012"
        return voc / "JPEGImages" / f"{name}.jpg", voc / "SegmentationClassAug" / f"{name}.png"

    def labels(self, name: str, class_id: int) -> tuple[np.ndarray, np.ndarray | None]:
        label = io.read_label_map(self.paths(name)[1])
        return (label == class_id + 1).astype(np.uint8), label == 255


class CocoReader(Reader):
    benchmark = "coco"
    folders = ("COCO2014", "COCO2014/annotations")

    def paths(self, name: str) -> tuple[Path, Path]:
        base = self.root / "COCO2014"
        stem = name[: name.index(".jpg")] if ".jpg" in name else str(Path(name).with_suffix(""))
        return base / name, base / "annotations" / f"{stem}.png"

    def labels(self, name: str, class_id: int) -> tuple[np.ndarray, np.ndarray | None]:
        label = io.read_label_map(self.paths(name)[1])
        return (label == class_id + 1).astype(np.uint8), None


class FssReader(Reader):
    benchmark = "fss"
    folders = ("FSS-1000",)

    def paths(self, name: str) -> tuple[Path, Path]:
        image = self.root / "FSS-1000" / name
        return image, image.with_suffix(".png")

    def labels(self, name: str, class_id: int) -> tuple[np.ndarray, np.ndarray | None]:
        gray = io.read_gray(self.paths(name)[1])
        return (gray >= 128).astype(np.uint8), None


class FolderReader(Reader):
    """Custom data; the mask of each image was found when the split was listed."""

    benchmark = "folder"

    def __init__(self, datapath: str | Path, masks: dict[str, Path] | None = None):
        super().__init__(datapath)
        self.masks = dict(masks or {})

    def paths(self, name: str) -> tuple[Path, Path]:
        cls, _, filename = name.partition("/")
        image = self.root / cls / "images" / filename
        mask = self.masks.get(name, self.root / cls / "masks" / f"{Path(filename).stem}.png")
        return image, mask

    def labels(self, name: str, class_id: int) -> tuple[np.ndarray, np.ndarray | None]:
        return io.read_mask_and_ignore(self.paths(name)[1])


READERS = {"pascal": PascalReader, "coco": CocoReader, "fss": FssReader}


def make_reader(benchmark: str, datapath: str | Path, info: SplitInfo | None = None) -> Reader:
    """The reader of a benchmark rooted at ``datapath``, with its folders checked."""
    if benchmark == "folder":
        reader: Reader = FolderReader(datapath, (info.extra.get("masks") if info is not None else None))
    elif benchmark in READERS:
        reader = READERS[benchmark](datapath)
    else:
        raise HmfssError(f"unknown benchmark {benchmark!r}")
    reader.check()
    return reader

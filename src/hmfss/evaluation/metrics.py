"""Few-shot segmentation metrics of the original test code and per-size breakdowns
(docs/protocol.md).

Per episode, the binary prediction and ground truth give intersection and union for the two
labels (0 = background, 1 = foreground), not counting ignored pixels (PASCAL 255 boundaries).
They are accumulated per class over the whole run:

* **mIoU** = 100 x mean over the evaluated classes c of inter[fg, c] / max(union[fg, c], 1)
  (a class that was never sampled counts as 0, like the originals);
* **FB-IoU** = 100 x mean over {bg, fg} of sum_c inter[b, c] / sum_c union[b, c]
  (dataset level, over the evaluated classes).

Size buckets: each episode falls in one bucket by the fraction of *all* query pixels (ignored
ones included) that are foreground in the evaluated ground truth: < 1 %, 1-5 %, 5-15 %,
>= 15 % (lower bound inclusive; an empty ground truth is in "<1%"). Within a bucket,
intersection and union are accumulated per class from that bucket's episodes only; the
bucket mIoU is the mean of those per-class IoUs over the classes that have at least one
episode in the bucket (classes absent from a bucket do not count as 0 there). An empty
bucket has mIoU ``None``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import Tensor

BUCKETS: tuple[tuple[str, float, float], ...] = (
    ("<1%", 0.0, 0.01),
    ("1-5%", 0.01, 0.05),
    ("5-15%", 0.05, 0.15),
    (">15%", 0.15, float("inf")),
)


def area_stats(pred: Tensor, gt: Tensor, ignore: Tensor | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Intersection and union, each (2,) = [background, foreground], of one episode.

    pred, gt: (H, W) with values in {0, 1}; ignore: (H, W) bool, True = not counted.
    """
    pred = torch.as_tensor(pred).detach().cpu().reshape(-1) > 0.5
    gt = torch.as_tensor(gt).detach().cpu().reshape(-1) > 0.5
    if ignore is not None:
        keep = ~torch.as_tensor(ignore).detach().cpu().reshape(-1).bool()
        pred, gt = pred[keep], gt[keep]
    total = pred.numel()
    inter_fg = int((pred & gt).sum())
    inter_bg = int((~pred & ~gt).sum())
    pred_fg, gt_fg = int(pred.sum()), int(gt.sum())
    inter = np.array([inter_bg, inter_fg], dtype=np.float64)
    area_pred = np.array([total - pred_fg, pred_fg], dtype=np.float64)
    area_gt = np.array([total - gt_fg, gt_fg], dtype=np.float64)
    return inter, area_pred + area_gt - inter


def foreground_fraction(gt: Tensor) -> float:
    """Foreground pixels / all pixels of the (evaluated) ground-truth mask."""
    gt = torch.as_tensor(gt)
    return float((gt > 0.5).sum()) / max(gt.numel(), 1)


def size_bucket(fraction: float) -> int:
    """Index into :data:`BUCKETS` of a foreground fraction."""
    for index, (_, low, high) in enumerate(BUCKETS):
        if low <= fraction < high:
            return index
    return len(BUCKETS) - 1


class SegmentationMeter:
    """Accumulates per-class intersection / union (overall and per size bucket)."""

    # the arrays that hold everything accumulated (summed over processes, saved in checkpoints)
    ACCUMULATORS = ("inter", "union", "episodes", "bucket_inter", "bucket_union", "bucket_episodes")

    def __init__(self, class_ids: Sequence[int], n_classes: int, class_names: Sequence[str] | None = None):
        self.class_ids = [int(c) for c in class_ids]
        self.n_classes = int(n_classes)
        self.class_names = list(class_names) if class_names is not None else [str(c) for c in range(n_classes)]
        nb = len(BUCKETS)
        self.inter = np.zeros((2, n_classes))
        self.union = np.zeros((2, n_classes))
        self.episodes = np.zeros(n_classes, dtype=np.int64)
        self.bucket_inter = np.zeros((nb, n_classes))
        self.bucket_union = np.zeros((nb, n_classes))
        self.bucket_episodes = np.zeros((nb, n_classes), dtype=np.int64)

    def update(self, class_id: int, inter: np.ndarray, union: np.ndarray, fg_fraction: float | None = None) -> None:
        """Add one episode (``inter``/``union`` from :func:`area_stats`)."""
        c = int(class_id)
        if not 0 <= c < self.n_classes:
            raise ValueError(f"class id {c} out of range 0..{self.n_classes - 1}")
        self.inter[:, c] += inter
        self.union[:, c] += union
        self.episodes[c] += 1
        if fg_fraction is not None:
            b = size_bucket(fg_fraction)
            self.bucket_inter[b, c] += inter[1]
            self.bucket_union[b, c] += union[1]
            self.bucket_episodes[b, c] += 1

    def add(self, class_id: int, pred: Tensor, gt: Tensor, ignore: Tensor | None = None) -> float:
        """Score one prediction; returns its foreground IoU (inter / max(union, 1))."""
        inter, union = area_stats(pred, gt, ignore)
        self.update(class_id, inter, union, foreground_fraction(gt))
        return float(inter[1] / max(union[1], 1.0))

    def add_batch(self, class_ids: Sequence[int], preds: Tensor, gts: Tensor) -> None:
        """Score a batch: preds, gts (B, H, W) with values in {0, 1}; nothing ignored."""
        preds, gts = preds.detach().cpu(), gts.detach().cpu()
        for class_id, pred, gt in zip(class_ids, preds, gts):
            self.add(int(class_id), pred, gt)

    def arrays(self) -> dict[str, np.ndarray]:
        """Copies of the accumulators, by name (see :attr:`ACCUMULATORS`)."""
        return {name: getattr(self, name).copy() for name in self.ACCUMULATORS}

    def load_arrays(self, arrays: dict) -> None:
        """Restore accumulators saved by :meth:`arrays` (any array-like values)."""
        for name in self.ACCUMULATORS:
            setattr(self, name, np.asarray(arrays[name]).astype(getattr(self, name).dtype))

    @property
    def count(self) -> int:
        return int(self.episodes.sum())

    def class_iou(self) -> np.ndarray:
        """Foreground IoU (fraction) of every evaluated class, in ``class_ids`` order."""
        ids = self.class_ids
        return self.inter[1, ids] / np.maximum(self.union[1, ids], 1.0)

    def miou(self) -> float:
        return float(100.0 * self.class_iou().mean()) if self.class_ids else 0.0

    def fb_iou(self) -> float:
        ids = self.class_ids
        inter = self.inter[:, ids].sum(axis=1)
        union = self.union[:, ids].sum(axis=1)
        return float(100.0 * (inter / np.maximum(union, 1.0)).mean())

    def bucket_miou(self) -> list[float | None]:
        out: list[float | None] = []
        ids = self.class_ids
        for b in range(len(BUCKETS)):
            present = [c for c in ids if self.bucket_episodes[b, c] > 0]
            if not present:
                out.append(None)
                continue
            ious = self.bucket_inter[b, present] / np.maximum(self.bucket_union[b, present], 1.0)
            out.append(float(100.0 * ious.mean()))
        return out

    def summary(self) -> dict:
        """All figures (percent): ``miou``, ``fb_iou``, ``classes`` and ``buckets``."""
        ious = self.class_iou()
        classes = [
            {"class_id": c, "name": self.class_names[c], "iou": float(100.0 * iou), "episodes": int(self.episodes[c])}
            for c, iou in zip(self.class_ids, ious)
        ]
        buckets = []
        for b, ((label, low, high), miou) in enumerate(zip(BUCKETS, self.bucket_miou())):
            buckets.append({
                "bucket": label,
                "min_fraction": low,
                "max_fraction": None if high == float("inf") else high,
                "miou": miou,
                "episodes": int(self.bucket_episodes[b, self.class_ids].sum()),
                "classes": int((self.bucket_episodes[b, self.class_ids] > 0).sum()),
            })
        return {"miou": self.miou(), "fb_iou": self.fb_iou(), "classes": classes, "buckets": buckets}

"""Several classes in one call: one support state per class, one label map per query.

Each class is segmented exactly as a single-class prediction (:meth:`FewShotSegmenter.segment`:
2-class argmax per shot, the original K-shot vote), and the query's backbone maps are computed
once for all classes. The per-class results are merged by :func:`combine`:

* a pixel's candidates are the classes whose own mask says foreground there (with one shot:
  foreground probability > 0.5, the argmax of the two logits), and, when ``threshold`` is
  given, whose foreground probability is also >= ``threshold``;
* the pixel gets the candidate with the highest foreground probability (ties: the lowest
  class index); no candidate: background (0). Classes are numbered from 1.

The foreground probability of a class is the softmax foreground of its logits, averaged over
the shots. With a single class and no threshold the label map equals the single-class mask.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import torch
from torch import Tensor

from hmfss.errors import HmfssError
from hmfss.inputs import check_images, check_query_batch, check_size_pair, check_threshold
from hmfss.logits import foreground, upsample_logits, vote
from hmfss.model import FewShotSegmenter, SupportState, check_segmenter


@dataclass
class ClassPrediction:
    """One query's result: label map (H, W) int64 (0 = background, i = class i), the
    per-class foreground probabilities (C, H, W) and the per-class binary masks (C, H, W)."""

    labels: Tensor
    probs: Tensor
    masks: Tensor


def combine(probs: Tensor, masks: Tensor, threshold: float | None = None) -> Tensor:
    """(C, H, W) probabilities and binary masks -> (H, W) int64 labels (see the module doc)."""
    candidate = masks.bool()
    if threshold is not None:
        candidate = candidate & (probs >= threshold)
    scores = torch.where(candidate, probs.float(), torch.full_like(probs, -1.0, dtype=torch.float32))
    best = scores.argmax(dim=0)  # argmax returns the first maximum: ties go to the lowest index
    return torch.where(candidate.any(dim=0), best + 1, torch.zeros_like(best))


def encode_classes(model: FewShotSegmenter, supports: Sequence[tuple[Tensor, Tensor]]) -> list[SupportState]:
    """One :class:`SupportState` per class from (1, K, 3, S, S) images and (1, K, S, S) masks."""
    check_segmenter(model)
    supports = _sequence(supports, "supports")
    for i, pair in enumerate(supports):
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise HmfssError(f"supports[{i}] must be an (images, masks) pair, got {type(pair).__name__}")
    return [model.encode_support(images, masks) for images, masks in supports]


def _sequence(values: Any, name: str) -> list:
    """``values`` (a list, tuple or other iterable, not a string or tensor) as a list."""
    if isinstance(values, (str, bytes, Tensor)) or not isinstance(values, Iterable):
        raise HmfssError(f"{name} must be a list, got {type(values).__name__}")
    return list(values)


def class_maps(logits: Tensor, size: Sequence[int]) -> tuple[Tensor, Tensor]:
    """One query's (K, 2, h, w) logits of one class -> (H, W) probability and binary mask."""
    full = upsample_logits(logits, size)
    mask = vote(foreground(full).unsqueeze(0))[0]
    prob = full.float().softmax(dim=1)[:, 1].mean(dim=0)
    return prob, mask


def segment_classes(
    model: FewShotSegmenter,
    query_img: Tensor,
    states: Sequence[SupportState],
    output_sizes: Sequence[Sequence[int]] | None = None,
    threshold: float | None = None,
) -> list[ClassPrediction]:
    """Queries (B, 3, S, S) against several class states -> one :class:`ClassPrediction` each.

    ``output_sizes``: one (H, W) per query (default: the input size), like the original-size
    mode of :meth:`FewShotSegmenter.segment`.
    """
    check_segmenter(model)
    check_images(query_img, "query_img")
    states = _sequence(states, "states")
    if not states:
        raise HmfssError("segment_classes needs at least one class state")
    for i, state in enumerate(states):
        if not isinstance(state, SupportState):
            raise HmfssError(f"states[{i}] must be a SupportState (from encode_classes), got {type(state).__name__}")
        check_query_batch(state.masks.shape[0], query_img)
    threshold = check_threshold(threshold)
    b = query_img.shape[0]
    if output_sizes is None:
        sizes = [tuple(query_img.shape[-2:])] * b
    elif not isinstance(output_sizes, (list, tuple)) or len(output_sizes) != b:
        raise HmfssError(f"output_sizes must hold one (h, w) per query ({b}), got {output_sizes!r}")
    else:
        sizes = [check_size_pair(size, f"output_sizes[{i}]") for i, size in enumerate(output_sizes)]
    query_feats = model.encode_query(query_img)
    per_class = [model.lowres_logits(query_feats, state) for state in states]  # each (B, K, 2, h, w)
    results = []
    for i, size in enumerate(sizes):
        maps = [class_maps(logits[i], size) for logits in per_class]
        probs = torch.stack([p for p, _ in maps])
        masks = torch.stack([m for _, m in maps])
        results.append(ClassPrediction(combine(probs, masks, threshold), probs, masks))
    return results

"""Episode dataset: loads precomputed :class:`~hmfss.data.episodes.Episode` s as tensors.

Item (a dict):

* ``query_img`` (3, S, S) normalised float; ``query_mask`` (S, S) float {0, 1};
  ``query_ignore`` (S, S) bool (PASCAL 255 pixels; all False elsewhere)
* ``support_imgs`` (K, 3, S, S); ``support_masks`` (K, S, S) float {0, 1} (255 -> 0)
* ``query_name``, ``support_names``, ``class_id`` (dataset-global), ``index`` (episode number),
  ``org_query_size`` (H0, W0)
* with ``original_size``: ``query_mask_full`` (H0, W0) float and ``query_ignore_full`` (H0, W0) bool

Images are resized with PIL bilinear, masks with legacy nearest (as the original loaders).
With an ``augmentation`` (training), the query and then each support image are augmented at
their original size, before resizing and normalisation, by one generator seeded with the
episode's entry of ``augment_seeds`` (default: its index), so items do not depend on the
worker that loads them; masks are not changed. A file that cannot be read gives
``{"index": i, "error": "<one line naming the file>"}`` instead of raising inside a worker;
:func:`collate_episodes` gathers those under ``"errors"`` so that the caller decides (fail
with the message, or skip the episode and count it).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from hmfss.errors import HmfssError
from hmfss.heads.recipe import PhotometricAugmentation
from hmfss.data.augment import photometric_augment
from hmfss.data.episodes import Episode
from hmfss.data.readers import Reader
from hmfss.data.transforms import image_to_tensor, resize_mask_nearest

_STACKED = ("query_img", "query_mask", "query_ignore", "support_imgs", "support_masks")


class EpisodeDataset(Dataset):
    """Tensors of a fixed list of episodes (the list decides everything random)."""

    def __init__(self, reader: Reader, episodes: Sequence[Episode], img_size: int,
                 original_size: bool = False, ignore_255: bool = True,
                 augmentation: PhotometricAugmentation | None = None, augment_seeds: Sequence[int] | None = None):
        self.reader = reader
        self.episodes = list(episodes)
        self.img_size = int(img_size)
        self.original_size = original_size
        self.ignore_255 = ignore_255
        self.augmentation = augmentation
        self.augment_seeds = None if augment_seeds is None else [int(s) for s in augment_seeds]
        if self.augment_seeds is not None and len(self.augment_seeds) != len(self.episodes):
            raise ValueError(f"{len(self.augment_seeds)} augmentation seeds for {len(self.episodes)} episodes")

    def __len__(self) -> int:
        return len(self.episodes)

    def __getitem__(self, index: int) -> dict[str, Any]:
        try:
            return self.load(index)
        except HmfssError as exc:
            return {"index": index, "error": str(exc)}

    def load(self, index: int) -> dict[str, Any]:
        """The episode's tensors; raises :class:`HmfssError` naming an unreadable file."""
        ep = self.episodes[index]
        size = self.img_size
        query = self.reader.load(ep.query, ep.class_id)
        supports = [self.reader.load(name, ep.class_id) for name in ep.supports]
        ignore = query.ignore if (query.ignore is not None and self.ignore_255) else None
        query_image, support_images = query.image, [s.image for s in supports]
        if self.augmentation is not None:
            gen = torch.Generator()
            gen.manual_seed(self.augment_seeds[index] if self.augment_seeds is not None else index)
            query_image = self._augment(query_image, gen)
            support_images = [self._augment(image, gen) for image in support_images]
        item: dict[str, Any] = {
            "index": index,
            "query_img": image_to_tensor(query_image, size),
            "query_mask": resize_mask_nearest(query.mask, size),
            "query_ignore": (resize_mask_nearest(ignore, size) > 0) if ignore is not None
            else torch.zeros(size, size, dtype=torch.bool),
            "query_name": ep.query,
            "class_id": ep.class_id,
            "support_imgs": torch.stack([image_to_tensor(image, size) for image in support_images]),
            "support_masks": torch.stack([resize_mask_nearest(s.mask, size) for s in supports]),
            "support_names": list(ep.supports),
            "org_query_size": query.size,
        }
        if self.original_size:
            item["query_mask_full"] = torch.from_numpy(query.mask).float()
            item["query_ignore_full"] = (torch.from_numpy(ignore) if ignore is not None
                                         else torch.zeros(query.size, dtype=torch.bool))
        return item

    def _augment(self, image: Image.Image, gen: torch.Generator) -> Image.Image:
        pixels = torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1)
        out = photometric_augment(pixels, self.augmentation, gen)
        if out is pixels:
            return image
        return Image.fromarray(out.permute(1, 2, 0).contiguous().numpy())


def collate_episodes(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack the fixed-size tensors; names, sizes and original-size masks stay lists.

    Failed items are removed and listed as ``errors`` [(episode index, message)];
    ``size`` is the number of episodes left (possibly 0).
    """
    good = [it for it in items if "error" not in it]
    batch: dict[str, Any] = {
        "errors": [(it["index"], it["error"]) for it in items if "error" in it],
        "size": len(good),
        "index": [it["index"] for it in good],
    }
    if not good:
        return batch
    for key in _STACKED:
        batch[key] = torch.stack([it[key] for it in good])
    batch["class_id"] = torch.tensor([it["class_id"] for it in good], dtype=torch.long)
    for key in ("query_name", "support_names", "org_query_size"):
        batch[key] = [it[key] for it in good]
    if "query_mask_full" in good[0]:
        batch["query_mask_full"] = [it["query_mask_full"] for it in good]
        batch["query_ignore_full"] = [it["query_ignore_full"] for it in good]
    return batch


def episode_loader(dataset: EpisodeDataset, batch_size: int = 1, workers: int = 0) -> DataLoader:
    """Batches in episode order (no shuffling); workers only change the speed."""
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers,
                      collate_fn=collate_episodes, persistent_workers=False)

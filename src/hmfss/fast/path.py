"""The fast implementation of the model's execution path (see ``hmfss.model.ExecutionPath``).

Same steps as the reference path, with the same results up to float rounding
(docs/performance.md). On every device: support masking written in place into scratch maps,
query-major correlation into reused per-thread buffers for heads that read it. On the CPU
also: backbone passes in pixel-count groups, channels-last through a BatchNorm-folded copy
for heads that accept such maps, except the images whose feature signs select values in the
masking rule (``exact_selection``); the hybrid rule inside the mask's window; one shot per
correlation + head pass. Accelerators keep one NCHW backbone pass for all images.
"""

from __future__ import annotations

import threading

import torch
from torch import Tensor, nn

from hmfss.backbones import Backbone
from hmfss.correlation import hypercorrelation
from hmfss.fast.correlation import query_major_hypercorrelation
from hmfss.fast.features import (CPU_PIXELS_PER_PASS, CPU_TRAINING_PIXELS_PER_PASS, FoldedBackboneCache,
                                 grouped_passes)
from hmfss.fast.masking import mask_support_features_in_place
from hmfss.fast.traits import fast_inputs
from hmfss.masking import selecting_input


class FastPath:
    """The default execution path. ``exact_selection`` (CPU) (default True): the images whose
    feature signs choose between FM and IM (the support for ``hm``, the input-masked support
    for ``hm-reverse``) go through the reference NCHW pass, so the rule picks exactly the
    values the reference picks; False sends them channels-last too (faster, and a feature
    within rounding of 0 may then pick the other value)."""

    def __init__(self, exact_selection: bool = True):
        self.exact_selection = exact_selection
        self._folded = FoldedBackboneCache()
        self._local = threading.local()  # per-thread correlation buffers

    def __getstate__(self) -> dict:
        return {"exact_selection": self.exact_selection}  # caches are rebuilt, never copied

    def __setstate__(self, state: dict) -> None:
        self.__init__(**state)

    def folded_backbone(self, backbone: Backbone) -> Backbone:
        """The BatchNorm-folded, packed copy of ``backbone`` used for channels-last passes."""
        return self._folded.get(backbone)

    def features(self, backbone: Backbone, images: dict[str, Tensor], head: nn.Module, masking: str) -> dict[str, list[Tensor]]:
        """Backbone maps of each named batch (B_i, 3, H, W); names as in the reference path.

        The exact images go through the reference modules, in NCHW memory; under bf16 autocast
        on the CPU in channels-last memory (oneDNN's bf16 kernels gave the same bits in both
        layouts where measured, and NCHW cost ~2.8x the time, see docs/performance.md)."""
        exact_layout = torch.contiguous_format
        if not fast_inputs(head).channels_last_maps or next(iter(images.values())).device.type != "cpu":
            exact = set(images)
        else:
            exact = {selecting_input(masking)} if self.exact_selection else set()
            if torch.is_autocast_enabled("cpu"):
                exact_layout = torch.channels_last
        # a training step's frozen backbone passes are larger batches: fewer, fuller passes pay
        pixels = CPU_TRAINING_PIXELS_PER_PASS if head.training else CPU_PIXELS_PER_PASS
        maps: dict[str, list[Tensor]] = {}
        for folded, layout, names in ((False, exact_layout, [n for n in images if n in exact]),
                                      (True, torch.channels_last, [n for n in images if n not in exact])):
            if names:
                batch = torch.cat([images[n] for n in names]) if len(names) > 1 else images[names[0]]
                net = self.folded_backbone(backbone) if folded else backbone
                maps.update(zip(names, grouped_passes(net, batch, layout, [images[n].shape[0] for n in names], pixels)))
        return maps

    def mask_support(self, head: nn.Module, feats: list[Tensor], im_feats: list[Tensor] | None, mask: Tensor,
                     masking: str) -> list[Tensor]:
        """The head's support masking; in place into the scratch ``im_feats`` where the head's is the plain one."""
        if fast_inputs(head).plain_support_masking:
            return mask_support_features_in_place(masking, feats, im_feats, mask)
        return head.support_features(feats, im_feats, mask, masking)

    def correlate(self, head: nn.Module, query_feats: list[Tensor], support_feats: list[Tensor],
                  levels: tuple[int, int, int]) -> list[Tensor]:
        """Correlation pyramid (no gradients); query-major memory for heads that read it, on
        the CPU in per-thread buffers outside autograd and training (where the head keeps its
        input). Elsewhere the device's caching allocator already reuses memory, and a recorded
        CUDA graph must own what it writes (a shared buffer could be freed under it)."""
        if not fast_inputs(head).query_major_corr:
            with torch.no_grad():
                return hypercorrelation(query_feats, support_feats, levels)
        reuse = not torch.is_grad_enabled() and not head.training and query_feats[0].device.type == "cpu"
        buffers = self._buffers() if reuse else None
        with torch.no_grad():
            return query_major_hypercorrelation(query_feats, support_feats, levels, buffers)

    def shots_per_pass(self, head: nn.Module, device: torch.device) -> int | None:
        """The head's own bound; on the CPU one shot at a time (its 4D volumes stay in cache)."""
        if head.shots_per_pass is None and device.type == "cpu":
            return 1
        return head.shots_per_pass

    def _buffers(self) -> dict:
        if not hasattr(self._local, "buffers"):
            self._local.buffers = {}
        return self._local.buffers

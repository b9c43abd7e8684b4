"""Common interface of the learners ("heads") and their registry.

A head turns the correlation pyramid into low-resolution 2-class logits. It may also adapt
how features are prepared (ASNet pools support features, VAT resizes all features) by
overriding :meth:`Head.query_features` / :meth:`Head.support_features`. Faster inputs a head
accepts on the CPU are declared in :mod:`hmfss.fast.traits`, not here.
"""

from __future__ import annotations

from typing import Any, Callable

from torch import Tensor, nn

from hmfss.masking import mask_support_features
from hmfss.heads.recipe import HSNET_RECIPE, Recipe

HEADS: dict[str, type["Head"]] = {}


def register_head(name: str) -> Callable[[type["Head"]], type["Head"]]:
    """Class decorator adding a head to :data:`HEADS` under ``name``."""

    def add(cls: type["Head"]) -> type["Head"]:
        HEADS[name] = cls
        cls.arch = name
        return cls

    return add


class Head(nn.Module):
    arch: str = ""
    original_prefix: str = ""  # head key prefix in the original checkpoints (after "module.")
    extra_shallow: bool = False  # whether the backbone must return its extra shallow map
    recipe: Recipe = HSNET_RECIPE  # the original training recipe (optimiser, sizes, augmentation)
    # memory bound of a K-shot pass: at most this many shots per correlation + head pass
    # (None: no bound); the result is the same
    shots_per_pass: int | None = None
    # smallest height and width of the masked support maps it accepts, per level (deepest,
    # middle, shallowest); smaller images raise a clear error before the head runs
    min_support_plane: tuple[int, int, int] = (1, 1, 1)

    @classmethod
    def benchmark_options(cls, benchmark: str | None = None) -> dict[str, Any]:
        """Head options that depend on the data: the defaults for a model trained or tested on
        ``benchmark`` (pascal, coco, fss, folder; None: unknown). Recorded in every model's
        config, so that checkpoints say which variant they hold."""
        return {}

    @classmethod
    def default_img_size(cls, **options: Any) -> int:
        """Square input size of the original model with these head options."""
        return 400

    def query_features(self, feats: list[Tensor]) -> list[Tensor]:
        """Prepare the query's tapped maps (B, C, h, w) before correlation."""
        return feats

    def support_features(
        self, feats: list[Tensor], im_feats: list[Tensor] | None, mask: Tensor, masking: str
    ) -> list[Tensor]:
        """Mask the support's tapped maps (B, C, h, w) with strategy ``masking``; mask (B, H, W)."""
        return mask_support_features(masking, feats, im_feats, mask)

    def forward(self, corr: list[Tensor], **context) -> Tensor:
        """[level4, level3, level2] (N, L, Hq, Wq, Hs, Ws) -> low-res logits (N, 2, h, w).

        ``context`` carries ``query_feats`` (list of (B, C, h, w)), ``shots`` (K, with
        N = B*K, episode-major) and ``support_mask`` ((N, H, W)) for heads that need them.
        """
        raise NotImplementedError

    def convert_original_state(self, state: dict[str, Tensor]) -> dict[str, Tensor]:
        """Map head keys of an original checkpoint (prefix already removed) to ours."""
        return state

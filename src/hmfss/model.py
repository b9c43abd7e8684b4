"""Model assembly: backbone -> support masking -> correlation -> head -> mask.

:func:`build_model` is the factory for every architecture; :class:`FewShotSegmenter` holds a
frozen backbone and a learnable head and offers the original 1-shot forward, K-shot
prediction with the original voting rule, and an encode-once / segment-many API.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Protocol, Sequence, runtime_checkable

import torch
from torch import Tensor, nn

from hmfss.backbones import Backbone, build_backbone
from hmfss.correlation import hypercorrelation
from hmfss.errors import HmfssError
from hmfss.fast.path import FastPath
from hmfss.heads import HEADS, Head
from hmfss.inputs import (check_device_of, check_images, check_img_size, check_one_shot, check_output_size,
                          check_query_batch, check_support_set)
from hmfss.logits import foreground, upsample_logits, vote
from hmfss.masking import check_strategy, input_mask, needs_input_masking
from hmfss.sizes import SquareSides, image_side_problem, support_plane_problem


# (arch, backbone, head options) -> smallest square input side (see min_image_size)
_MIN_IMAGE_SIZE: dict[tuple[str, str, str], int | None] = {}


@dataclass
class ModelConfig:
    """Everything needed to rebuild a model; stored in every hmfss checkpoint."""

    arch: str = "hsnet"
    backbone: str = "resnet50"
    masking: str = "hm"
    img_size: int = 400  # square input size the model was trained / is evaluated at
    options: dict[str, Any] = field(default_factory=dict)  # head-specific (e.g. VAT benchmark)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SupportState:
    """Encoded support set: masked support maps (B, K, C, h, w) and masks (B, K, H, W)."""

    feats: list[Tensor]
    masks: Tensor

    @property
    def shots(self) -> int:
        return self.masks.shape[1]

    def shot_range(self, first: int, last: int) -> "SupportState":
        """The shots ``first`` to ``last`` - 1."""
        return SupportState([f[:, first:last] for f in self.feats], self.masks[:, first:last])


@runtime_checkable
class ExecutionPath(Protocol):
    """How the model runs its steps. :class:`ReferencePath` is the plain one;
    :class:`hmfss.fast.path.FastPath` (the default) gives the same results faster."""

    def features(self, backbone: Backbone, images: dict[str, Tensor], head: Head, masking: str) -> dict[str, list[Tensor]]:
        """Backbone maps of each named image batch (B_i, 3, H, W): "feats" (supports),
        "im" (input-masked supports), "query"."""

    def mask_support(self, head: Head, feats: list[Tensor], im_feats: list[Tensor] | None, mask: Tensor,
                     masking: str) -> list[Tensor]:
        """Masked support maps (N, C, h, w) from the maps of the supports and input-masked supports."""

    def correlate(self, head: Head, query_feats: list[Tensor], support_feats: list[Tensor],
                  levels: tuple[int, int, int]) -> list[Tensor]:
        """Correlation pyramid (:func:`hmfss.correlation.hypercorrelation`), without gradients."""

    def shots_per_pass(self, head: Head, device: torch.device) -> int | None:
        """At most this many shots per correlation + head pass on ``device`` (None: all at once)."""


class ReferencePath:
    """The data path with plain operations: one NCHW backbone pass for all images, the head's
    support masking (plain rules), plain hypercorrelation, all shots in one head pass (up to
    the head's memory bound ``shots_per_pass``)."""

    def features(self, backbone: Backbone, images: dict[str, Tensor], head: Head, masking: str) -> dict[str, list[Tensor]]:
        batch = torch.cat(list(images.values())) if len(images) > 1 else next(iter(images.values()))
        maps = backbone(batch.contiguous())
        if len(images) == 1:
            return dict.fromkeys(images, maps)
        parts = zip(*(m.split([x.shape[0] for x in images.values()]) for m in maps))
        return {name: list(part) for name, part in zip(images, parts)}

    def mask_support(self, head: Head, feats: list[Tensor], im_feats: list[Tensor] | None, mask: Tensor,
                     masking: str) -> list[Tensor]:
        return head.support_features(feats, im_feats, mask, masking)

    def correlate(self, head: Head, query_feats: list[Tensor], support_feats: list[Tensor],
                  levels: tuple[int, int, int]) -> list[Tensor]:
        with torch.no_grad():
            return hypercorrelation(query_feats, support_feats, levels)

    def shots_per_pass(self, head: Head, device: torch.device) -> int | None:
        return head.shots_per_pass


class FewShotSegmenter(nn.Module):
    """Frozen backbone + support masking + 4D correlation + learnable head.

    Every step goes through an :class:`ExecutionPath`, chosen in :meth:`execution_path`:
    ``path`` if set (``model.path = ReferencePath()`` forces the plain path), otherwise
    ``fast_path`` (:class:`FastPath`, same results up to float rounding). ``exact_selection``
    is the fast path's setting of that name (a run-time setting, not saved in checkpoints).
    """

    def __init__(self, backbone: Backbone, head: Head, config: ModelConfig):
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.config = config
        self.levels = backbone.info.levels
        self.path: ExecutionPath | None = None
        self.fast_path = FastPath()

    @property
    def masking(self) -> str:
        return self.config.masking

    @property
    def exact_selection(self) -> bool:
        return self.fast_path.exact_selection

    @exact_selection.setter
    def exact_selection(self, value: bool) -> None:
        self.fast_path.exact_selection = value

    def execution_path(self) -> ExecutionPath:
        """The one place the implementation is chosen (see the class docstring)."""
        if self.path is not None:
            return self.path
        return self.fast_path

    # ---- image -> backbone features -> support masking ----------------------------------

    def _extract(self, query: Tensor | None, supports: Tensor, masks: Tensor) -> tuple[list[Tensor] | None, list[Tensor]]:
        """Prepared query maps (or None) and masked support maps (N, C, h, w) of query images
        (B, 3, H, W), supports (N, 3, H, W) and their masks (N, H, W)."""
        path = self.execution_path()
        self._check_image_sides(supports)
        supports, query = self._as_input(supports), self._as_input(query) if query is not None else None
        images = {"feats": supports}
        if needs_input_masking(self.masking):
            images["im"] = input_mask(supports, masks)
        if query is not None:
            images["query"] = query
        maps = path.features(self.backbone, images, self.head, self.masking)
        with torch.no_grad():
            masked = path.mask_support(self.head, maps["feats"], maps.get("im"), masks, self.masking)
        self._check_support_planes(masked, supports)
        query_feats = self.head.query_features(maps["query"]) if query is not None else None
        return query_feats, masked

    # ---- input sizes the backbone and head accept ---------------------------------------------

    def _too_small(self, h: int, w: int, why: str) -> HmfssError:
        side = self.min_image_size()
        hint = f"; square images need at least {side}x{side}" if side is not None else ""
        return HmfssError(f"images of {h}x{w} pixels are too small for {self.config.arch} on "
                          f"{self.config.backbone}: {why}{hint}")

    def _check_image_sides(self, images: Tensor) -> None:
        problem = image_side_problem(self.backbone, *images.shape[-2:])
        if problem is not None:
            raise self._too_small(*images.shape[-2:], problem)

    def _check_support_planes(self, masked: list[Tensor], supports: Tensor) -> None:
        problem = support_plane_problem(self.head, masked, self.levels)
        if problem is not None:
            raise self._too_small(*supports.shape[-2:], problem)

    def check_image_size(self, side: int) -> None:
        """Raise HmfssError when square inputs of ``side`` pixels are too small for the backbone
        or head; shapes only (for a command to refuse an --img-size before any work)."""
        problem = SquareSides(self.config.backbone, self.head).problem(side)
        if problem is not None:
            raise self._too_small(side, side, problem)

    def min_image_size(self) -> int | None:
        """Smallest square image side the backbone and head accept (None: none up to
        MAX_IMG_SIZE); computed once per architecture (seconds for a head with a minimum)."""
        key = (self.config.arch, self.config.backbone, repr(sorted(self.config.options.items())))
        if key not in _MIN_IMAGE_SIZE:
            _MIN_IMAGE_SIZE[key] = SquareSides(self.config.backbone, self.head).smallest()
        return _MIN_IMAGE_SIZE[key]

    def _check_device(self, **tensors: Tensor) -> None:
        """The tensors (by argument name) live where the model's parameters do."""
        param = next(self.parameters(), None)
        if param is not None:
            check_device_of(tensors, param.device)

    def encode_support(self, support_imgs: Tensor, support_masks: Tensor,
                       allow_empty_support: bool = False) -> SupportState:
        """(B, K, 3, H, W), (B, K, H, W) -> reusable :class:`SupportState`.

        Inputs are checked (:mod:`hmfss.inputs`): float finite images, masks of 0 and 1 only
        (0/255 masks are refused: divide by 255), each mask non-empty unless ``allow_empty_support``.
        """
        check_support_set(support_imgs, support_masks, allow_empty=allow_empty_support)
        self._check_device(support_imgs=support_imgs, support_masks=support_masks)
        b, k = support_masks.shape[:2]
        _, masked = self._extract(None, support_imgs.flatten(0, 1), support_masks.flatten(0, 1).float())
        return SupportState([f.unflatten(0, (b, k)) for f in masked], support_masks.float())

    def encode_query(self, query_img: Tensor) -> list[Tensor]:
        """(B, 3, H, W) float finite -> prepared query maps."""
        check_images(query_img, "query_img")
        self._check_device(query_img=query_img)
        return self._query_maps(query_img)

    def _as_input(self, images: Tensor) -> Tensor:
        """Images in the backbone's dtype (float64 or float16 images for a float32 model are
        cast rather than refused; under autocast the model stays float32)."""
        param = next(self.backbone.parameters(), None)
        return images if param is None else images.to(param.dtype)

    def _query_maps(self, query_img: Tensor) -> list[Tensor]:
        query_img = self._as_input(query_img)
        maps = self.execution_path().features(self.backbone, {"query": query_img}, self.head, self.masking)
        return self.head.query_features(maps["query"])

    # ---- correlation -> head ----------------------------------------------------------------

    def lowres_logits(self, query_feats: list[Tensor], state: SupportState) -> Tensor:
        """Head logits at the learner's resolution for every shot: (B, K, 2, h, w).

        Shots go through correlation and head in groups of the path's ``shots_per_pass``
        (the result is the same; it bounds memory and keeps volumes in cache).
        """
        path = self.execution_path()
        step = path.shots_per_pass(self.head, query_feats[0].device)
        if step is None or state.shots <= step:
            return self._shot_logits(path, query_feats, state)
        return torch.cat([self._shot_logits(path, query_feats, state.shot_range(first, first + step))
                          for first in range(0, state.shots, step)], dim=1)

    def _shot_logits(self, path: ExecutionPath, query_feats: list[Tensor], state: SupportState) -> Tensor:
        b, k = query_feats[0].shape[0], state.shots
        # a support set encoded once (batch 1) broadcasts over a batch of queries
        corr = path.correlate(self.head, [q.unsqueeze(1) for q in query_feats], state.feats, self.levels)
        corr = [c.expand(b, *c.shape[1:]).flatten(0, 1) for c in corr]
        masks = state.masks.expand(b, *state.masks.shape[1:])
        logits = self.head(corr, query_feats=query_feats, shots=k, support_mask=masks.flatten(0, 1))
        return logits.unflatten(0, (b, k))

    def forward(self, query_img: Tensor, support_img: Tensor, support_mask: Tensor) -> Tensor:
        """Original 1-shot forward: (B,3,H,W), (B,3,H,W), (B,H,W) -> logits (B,2,H,W).

        Images float and finite; the mask holds only 0 and 1 (0/255 is refused: divide by 255)
        and may be empty (training episodes can hold one).
        """
        check_one_shot(query_img, support_img, support_mask)
        self._check_device(query_img=query_img, support_img=support_img, support_mask=support_mask)
        query_feats, masked = self._extract(query_img, support_img, support_mask.float())
        state = SupportState([f.unsqueeze(1) for f in masked], support_mask.float().unsqueeze(1))
        logits = self.lowres_logits(query_feats, state)[:, 0]
        return upsample_logits(logits, support_img.shape[-2:])

    # ---- -> mask ------------------------------------------------------------------------------

    def segment(
        self,
        query_img: Tensor,
        state: SupportState,
        output_size: Sequence[int] | Sequence[Sequence[int]] | None = None,
    ) -> Tensor | list[Tensor]:
        """Binary masks for queries (B, 3, H, W) given an encoded support set.

        ``output_size`` None: (B, H, W) at the input size; one (h, w): (B, h, w); a list of
        B sizes: a list of (h_i, w_i) masks (logits upsampled straight to each size, like the
        original ``use_original_imgsize`` mode). ``state`` holds 1 support set (shared by every
        query) or B.
        """
        check_images(query_img, "query_img")
        if not isinstance(state, SupportState):
            raise HmfssError(f"state must be a SupportState (from encode_support), got {type(state).__name__}")
        check_query_batch(state.masks.shape[0], query_img)
        output_size = check_output_size(output_size, query_img.shape[0])
        self._check_device(query_img=query_img, state=state.masks)
        return self._masks_from_logits(self.lowres_logits(self._query_maps(query_img), state), query_img, output_size)

    def predict_mask(
        self,
        query_img: Tensor,
        support_imgs: Tensor,
        support_masks: Tensor,
        output_size: Sequence[int] | Sequence[Sequence[int]] | None = None,
        allow_empty_support: bool = False,
    ) -> Tensor | list[Tensor]:
        """K-shot prediction: (B,3,H,W), (B,K,3,H,W), (B,K,H,W) -> (B,H,W) in {0,1}.

        One backbone pass for query, supports and input-masked supports; query features are
        computed once whatever K. See :meth:`segment` for ``output_size``. Inputs are checked as
        in :meth:`encode_support`; benchmark episodes (whose object may vanish when resized)
        pass ``allow_empty_support=True``.
        """
        check_images(query_img, "query_img")
        check_support_set(support_imgs, support_masks, query=query_img, allow_empty=allow_empty_support)
        output_size = check_output_size(output_size, query_img.shape[0])
        self._check_device(query_img=query_img, support_imgs=support_imgs, support_masks=support_masks)
        b, k = support_masks.shape[:2]
        query_feats, masked = self._extract(query_img, support_imgs.flatten(0, 1), support_masks.flatten(0, 1).float())
        state = SupportState([f.unflatten(0, (b, k)) for f in masked], support_masks.float())
        return self._masks_from_logits(self.lowres_logits(query_feats, state), query_img, output_size)

    def _masks_from_logits(self, logits: Tensor, query_img: Tensor,
                           output_size: tuple[int, int] | list[tuple[int, int]] | None) -> Tensor | list[Tensor]:
        """Voted masks from logits (B, K, 2, h, w) at ``output_size`` (checked by check_output_size)."""
        b, k = logits.shape[:2]
        if output_size is None:
            output_size = tuple(query_img.shape[-2:])
        if isinstance(output_size, list):
            return [
                vote(foreground(upsample_logits(logits[i], size)).unsqueeze(0))[0]
                for i, size in enumerate(output_size)
            ]
        shot_masks = foreground(upsample_logits(logits.flatten(0, 1), output_size))
        return vote(shot_masks.unflatten(0, (b, k)))


def check_segmenter(model: Any, name: str = "model") -> FewShotSegmenter:
    """``model`` is a :class:`FewShotSegmenter` (from build_model or load_model)."""
    if not isinstance(model, FewShotSegmenter):
        raise HmfssError(f"{name} must be a FewShotSegmenter (from build_model or load_model), "
                         f"got {type(model).__name__}")
    return model


def build_model(
    arch: str,
    backbone: str = "resnet50",
    masking: str = "hm",
    backbone_weights: str | None = None,
    img_size: int | None = None,
    **options: Any,
) -> FewShotSegmenter:
    """Build a few-shot segmenter.

    arch: "hsnet" (and the other registered heads); backbone: "resnet50", "resnet101",
    "vgg16" or "efficientnet-lite0"; masking: none | fm | im | hm | hm-add | hm-reverse;
    backbone_weights: a torchvision-style ImageNet .pth, or "imagenet" for the weights that
    ship with EfficientNet-Lite0; options: head-specific settings.
    """
    if arch not in HEADS:
        raise HmfssError(f"unknown arch {arch!r}; choose one of {', '.join(sorted(HEADS))}")
    check_strategy(masking)
    check_img_size(img_size, optional=True)
    head_cls = HEADS[arch]
    options = {**head_cls.benchmark_options(None), **options}  # recorded: checkpoints name their variant
    net = build_backbone(backbone, backbone_weights, extra_shallow=head_cls.extra_shallow)
    head = head_cls(levels=net.info.levels, backbone_info=net.info, **options)
    img_size = img_size or head_cls.default_img_size(**options)
    config = ModelConfig(arch, backbone, masking, img_size, dict(options))
    return FewShotSegmenter(net, head, config)


def learnable_parameters(model: nn.Module) -> int:
    """Number of trainable parameters (the head's; the backbone is frozen)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)

"""Model assembly: backbone -> support masking -> correlation -> head -> mask.

:func:`build_model` is the factory for every architecture; :class:`FewShotSegmenter` holds a
frozen backbone and a learnable head and offers the original 1-shot forward, K-shot
prediction with the original voting rule, and an encode-once / segment-many API.
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hmfss.backbones import Backbone, build_backbone
from hmfss.correlation import hypercorrelation
from hmfss.fast.folding import fold_backbone
from hmfss.errors import HmfssError
from hmfss.heads import HEADS, Head
from hmfss.masking import check_strategy, input_mask, needs_input_masking, selecting_input

CPU_PIXELS_PER_PASS = 400 * 400  # backbone group size on the CPU (see FewShotSegmenter._backbone)
_BUFFERS = threading.local()  # per-thread correlation buffers (see FewShotSegmenter._corr_buffers)


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


def vote(shot_masks: Tensor) -> Tensor:
    """Original K-shot rule (SPEC §6.2): (B, K, H, W) binary -> (B, H, W) binary.

    K = 1 returns the mask; otherwise votes are normalised by the episode's maximum vote
    (at least 1) and thresholded at 0.5.
    """
    votes = shot_masks.sum(dim=1)
    if shot_masks.shape[1] == 1:
        return votes
    top = votes.flatten(1).amax(dim=1).clamp(min=1).view(-1, 1, 1)
    return (votes.float() / top >= 0.5).to(votes.dtype)


def foreground(logits: Tensor) -> Tensor:
    """``logits.argmax(dim=1)`` for 2-class logits (N, 2, H, W) -> (N, H, W) int64.

    Computed as a comparison, with argmax's rules for ties (background) and NaN (a NaN wins
    unless the other logit is NaN too): the same mask, where an argmax over a strided
    2-element dim costs ~25 ms per 400x400 mask on a CPU.
    """
    background, fg = logits.unbind(1)
    return ((fg > background) | (fg.isnan() & ~background.isnan())).long()


def _upsample(logits: Tensor, size: Sequence[int]) -> Tensor:
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits
    return F.interpolate(logits, tuple(size), mode="bilinear", align_corners=True)


class FewShotSegmenter(nn.Module):
    """Frozen backbone + support masking + 4D correlation + learnable head.

    ``exact_selection`` (default True; a run-time setting, not saved in checkpoints): on the
    CPU, with heads that take channels-last maps (HSNet; VAT and ASNet run every pass NCHW
    and ignore it), the images whose feature signs choose between FM and IM (the support for
    ``hm``) go through the reference NCHW backbone pass, so the rule picks exactly the values
    the original code picks. False sends them through the faster channels-last pass too (HM's
    extra time over FM, ResNet-50 1-shot at 400 px: about +31 % -> +21 %), and a feature
    within rounding of 0 may then pick the other value: a whole value swapped, not a rounding
    difference (3 in 19 million selecting elements measured; logits stayed within 2.4e-6 of
    the original's in 70 random-weight episodes, but once moved by 2.2e-4 relative). GPUs are
    unaffected.
    """

    def __init__(self, backbone: Backbone, head: Head, config: ModelConfig):
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.config = config
        self.levels = backbone.info.levels
        self.exact_selection = True

    @property
    def masking(self) -> str:
        return self.config.masking

    # ---- feature extraction --------------------------------------------------------------

    def _extract(self, query: Tensor | None, supports: Tensor, masks: Tensor) -> tuple[list[Tensor] | None, list[Tensor]]:
        """Backbone maps of query (B), supports (N) and, if needed, input-masked supports (N).

        Returns the prepared query maps and the masked support maps (N, C, h, w). On the CPU,
        images go through the backbone channels-last where the head accepts such maps (about
        20 % faster, same values up to rounding), except the images whose feature signs select
        values in the masking rule (:func:`selecting_input`): those keep the reference NCHW
        layout, so that HM picks exactly the values the original picks (unless
        ``exact_selection`` is off). On GPUs all images share one NCHW pass (at small batches
        a second pass costs more than it saves).
        """
        images = {"feats": supports}
        if needs_input_masking(self.masking):
            images["im"] = input_mask(supports, masks)
        if query is not None:
            images["query"] = query
        if not self._cpu_layouts(supports):
            exact = set(images)
        else:
            exact = {selecting_input(self.masking)} if self.exact_selection else set()
        maps: dict[str, list[Tensor]] = {}
        for layout, names in ((torch.contiguous_format, [n for n in images if n in exact]),
                              (torch.channels_last, [n for n in images if n not in exact])):
            if names:
                batch = torch.cat([images[n] for n in names]) if len(names) > 1 else images[names[0]]
                parts = self._backbone_parts(batch, layout, [images[n].shape[0] for n in names])
                maps.update(zip(names, parts))
        query_feats = self.head.query_features(maps["query"]) if query is not None else None
        with torch.no_grad():
            masked = self.head.support_features(maps["feats"], maps.get("im"), masks, self.masking)
        return query_feats, masked

    def _cpu_layouts(self, images: Tensor) -> bool:
        """Whether backbone passes may run channels-last (CPU, and a head that accepts it)."""
        return self.head.channels_last_features and images.device.type == "cpu"

    def _backbone(self, images: Tensor, layout: torch.memory_format = torch.contiguous_format) -> list[Tensor]:
        """Backbone maps of a batch computed in memory ``layout`` (see :meth:`_backbone_parts`)."""
        return self._backbone_parts(images, layout, [images.shape[0]])[0]

    def _backbone_parts(self, images: Tensor, layout: torch.memory_format, sizes: list[int]) -> list[list[Tensor]]:
        """Backbone maps of consecutive parts of a batch (``sizes`` images each), in ``layout``.

        On the CPU the batch goes in groups of at most ``CPU_PIXELS_PER_PASS`` pixels (one
        400x400 image): measured faster than one large batch, whose activations overflow the
        caches, while small images still share a pass. A part that is one group takes that
        group's maps as they are (no concatenation). Channels-last passes (CPU only) use the
        BatchNorm-folded copy of the backbone. On GPUs the batch goes in one pass.
        """
        images = images.contiguous(memory_format=layout)
        n, _, h, w = images.shape
        per_pass = n if images.device.type != "cpu" else max(1, CPU_PIXELS_PER_PASS // (h * w))
        backbone = self._folded_backbone() if layout == torch.channels_last else self.backbone
        groups = [(start, backbone(images[start:start + per_pass])) for start in range(0, n, per_pass)]
        parts, first = [], 0
        for size in sizes:
            last = first + size
            pieces = [[m[max(first, start) - start:min(last, start + per_pass) - start] for m in maps]
                      for start, maps in groups if start < last and start + per_pass > first]
            parts.append(pieces[0] if len(pieces) == 1 else [torch.cat(p) for p in zip(*pieces)])
            first = last
        return parts

    def _folded_backbone(self) -> Backbone:
        """:meth:`Backbone.folded` copy for channels-last passes, cached and rebuilt whenever
        the backbone's tensors change (load_state_dict, ``.to()``, in-place edits)."""
        key = tuple((t.data_ptr(), t._version, t.dtype) for t in (*self.backbone.parameters(), *self.backbone.buffers()))
        cached = self.__dict__.get("_folded_cache")  # a plain attribute: not a submodule, not saved
        if cached is None or cached[0] != key:
            cached = self.__dict__["_folded_cache"] = (key, fold_backbone(self.backbone))
        return cached[1]

    def encode_support(self, support_imgs: Tensor, support_masks: Tensor) -> SupportState:
        """(B, K, 3, H, W), (B, K, H, W) -> reusable :class:`SupportState`."""
        b, k = support_masks.shape[:2]
        _, masked = self._extract(None, support_imgs.flatten(0, 1), support_masks.flatten(0, 1).float())
        return SupportState([f.unflatten(0, (b, k)) for f in masked], support_masks.float())

    def encode_query(self, query_img: Tensor) -> list[Tensor]:
        """(B, 3, H, W) -> prepared query maps."""
        layout = torch.channels_last if self._cpu_layouts(query_img) else torch.contiguous_format
        return self.head.query_features(self._backbone(query_img, layout))

    # ---- head -----------------------------------------------------------------------------

    def _corr_buffers(self) -> dict | None:
        """Per-thread, per-model correlation buffers reused across inference calls (None under
        autograd, where the head keeps its input for the backward pass)."""
        if torch.is_grad_enabled() or self.training:
            return None
        if not hasattr(_BUFFERS, "by_model"):
            _BUFFERS.by_model = weakref.WeakKeyDictionary()
        return _BUFFERS.by_model.setdefault(self, {})

    def lowres_logits(self, query_feats: list[Tensor], state: SupportState) -> Tensor:
        """Head logits at the learner's resolution for every shot: (B, K, 2, h, w).

        Heads with large 4D volumes (VAT) set ``shots_per_pass``: the shots then go through
        correlation and head in groups of that many, bounding the memory of a K-shot pass by
        that of a ``shots_per_pass``-shot one (the result is the same).
        """
        step = self.head.shots_per_pass
        if step is None and query_feats[0].device.type == "cpu":
            step = 1  # CPU: one shot at a time keeps the 4D volumes in cache (measured faster)
        if step is None or state.shots <= step:
            return self._lowres_logits(query_feats, state)
        parts = []
        for first in range(0, state.shots, step):
            part = SupportState([f[:, first:first + step] for f in state.feats], state.masks[:, first:first + step])
            parts.append(self._lowres_logits(query_feats, part))
        return torch.cat(parts, dim=1)

    def _lowres_logits(self, query_feats: list[Tensor], state: SupportState) -> Tensor:
        b, k = query_feats[0].shape[0], state.shots
        buffers = self._corr_buffers() if self.head.query_major_corr else None  # only that layout reuses them
        with torch.no_grad():
            # a support set encoded once (batch 1) broadcasts over a batch of queries
            corr = hypercorrelation([q.unsqueeze(1) for q in query_feats], state.feats, self.levels,
                                    query_major=self.head.query_major_corr, buffers=buffers)
        corr = [c.expand(b, *c.shape[1:]).flatten(0, 1) for c in corr]
        masks = state.masks.expand(b, *state.masks.shape[1:])
        logits = self.head(corr, query_feats=query_feats, shots=k, support_mask=masks.flatten(0, 1))
        return logits.unflatten(0, (b, k))

    def forward(self, query_img: Tensor, support_img: Tensor, support_mask: Tensor) -> Tensor:
        """Original 1-shot forward: (B,3,H,W), (B,3,H,W), (B,H,W) -> logits (B,2,H,W)."""
        query_feats, masked = self._extract(query_img, support_img, support_mask.float())
        state = SupportState([f.unsqueeze(1) for f in masked], support_mask.float().unsqueeze(1))
        logits = self.lowres_logits(query_feats, state)[:, 0]
        return _upsample(logits, support_img.shape[-2:])

    # ---- prediction -----------------------------------------------------------------------

    def segment(
        self,
        query_img: Tensor,
        state: SupportState,
        output_size: Sequence[int] | Sequence[Sequence[int]] | None = None,
    ) -> Tensor | list[Tensor]:
        """Binary masks for queries (B, 3, H, W) given an encoded support set.

        ``output_size`` None: (B, H, W) at the input size; one (h, w): (B, h, w); a list of
        B sizes: a list of (h_i, w_i) masks (logits upsampled straight to each size, like the
        original ``use_original_imgsize`` mode).
        """
        return self._masks_from_logits(self.lowres_logits(self.encode_query(query_img), state), query_img, output_size)

    def predict_mask(
        self,
        query_img: Tensor,
        support_imgs: Tensor,
        support_masks: Tensor,
        output_size: Sequence[int] | Sequence[Sequence[int]] | None = None,
    ) -> Tensor | list[Tensor]:
        """K-shot prediction: (B,3,H,W), (B,K,3,H,W), (B,K,H,W) -> (B,H,W) in {0,1}.

        One backbone pass for query, supports and input-masked supports; query features are
        computed once whatever K. See :meth:`segment` for ``output_size``.
        """
        b, k = support_masks.shape[:2]
        query_feats, masked = self._extract(query_img, support_imgs.flatten(0, 1), support_masks.flatten(0, 1).float())
        state = SupportState([f.unflatten(0, (b, k)) for f in masked], support_masks.float())
        return self._masks_from_logits(self.lowres_logits(query_feats, state), query_img, output_size)

    def _masks_from_logits(self, logits: Tensor, query_img: Tensor, output_size) -> Tensor | list[Tensor]:
        b, k = logits.shape[:2]
        if output_size is None:
            output_size = tuple(query_img.shape[-2:])
        if len(output_size) and isinstance(output_size[0], (tuple, list, torch.Size)):
            if len(output_size) != b:
                raise ValueError(f"expected {b} output sizes, got {len(output_size)}")
            return [
                vote(foreground(_upsample(logits[i], size)).unsqueeze(0))[0]
                for i, size in enumerate(output_size)
            ]
        shot_masks = foreground(_upsample(logits.flatten(0, 1), output_size))
        return vote(shot_masks.unflatten(0, (b, k)))


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

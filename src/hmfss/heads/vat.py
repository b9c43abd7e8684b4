"""VAT learner (volumetric aggregation transformer) and its feature handling.

Pipeline per 1-shot episode (N = B * shots correlation volumes):

* every tapped map is bilinearly resized (align_corners=True) to a fixed size whatever the
  input size: layer1's extra map 128x128, the shallow level 64x64, the middle level 32x32, the
  deep level 16x16, so the correlation pyramid is (N, L, 16^4), (N, L, 32^4), (N, L, 64^4);
* "volume embedding": VAT 4D convolutions (:class:`VolumeConv4d`) with GroupNorm + ReLU reduce
  query and support dims: level 4 -> (N, 128, 8, 8, 8, 8), level 3 -> (N, 128, 16, 16, 8, 8),
  level 2 -> (N, 128, 32, 32, 8, 8);
* each level gets ``x + T(x)`` from a 4D shifted-window transformer (window 4, 4 heads), the
  coarser level is upsampled on its query dims and added to the next one (coarse to fine);
* the support dims are averaged out, and a three-stage 2D Swin decoder (32 -> 64 -> 128) with
  skip features projected from the query's backbone maps produces (N, 2, 128, 128) logits.

Support masking happens where the published models put it: with masking ``fm``
(original VAT) the support maps are masked after the fixed-size resize; the hybrid family
(``hm`` and its ablations) masks at the backbone's own resolution and resizes afterwards
(VAT-HM). The option ``mask_at`` ("auto", "resized", "raw") overrides this.

The original creates modules it never uses (the skip projections switched off by the
benchmark's affinity flags, the 4D transformers' final norms, a third 4D upscaler); they do
not exist here and their checkpoint keys are ignored on load. Relative-position indices and
shift masks are non-persistent buffers; loading an original checkpoint checks the stored
ones against them and drops them.
"""

from __future__ import annotations

import re
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hmfss.backbones import BackboneInfo
from hmfss.errors import HmfssError
from hmfss.masking import mask_support_features
from hmfss.heads.base import Head, register_head
from hmfss.heads.recipe import VAT_RECIPE
from hmfss.heads.swin import SwinStage
from hmfss.heads.volume import max_pool_blocks, resize_query_dims

# skip features concatenated at decoder stage 0 / 1 / 2, per benchmark
AFFINITY = {"pascal": (False, True, True), "coco": (False, False, True), "fss": (True, True, True)}
FEATURE_SIZES = (128, 64, 32, 16)  # extra (layer1), shallow (layer2), middle (layer3), deep (layer4)
SKIP_CHANNELS = (64, 32, 16)  # projected query skip features for decoder stages 0, 1, 2
DECODER_WIDTHS = (128, 96, 48)  # decoder stage widths before the skip features
EMBED_DIM = 128


def resize_map(feat: Tensor, size: int) -> Tensor:
    if tuple(feat.shape[-2:]) == (size, size):
        return feat
    return F.interpolate(feat, (size, size), mode="bilinear", align_corners=True)


def _pool(x: Tensor, dims: tuple[int, int], size: int) -> Tensor:
    """Max-pool (kernel = stride = ``size``, ceil mode) over two dims of a 4D/5D tensor: PyTorch's
    pooling under autograd and on accelerators, :func:`max_pool_blocks` (same values) for CPU
    inference."""
    if x.device.type == "cpu" and not (torch.is_grad_enabled() and x.requires_grad):
        return max_pool_blocks(x, dims, size)
    if x.dim() == 4:
        return F.max_pool2d(x, size, size, ceil_mode=True)
    return F.max_pool3d(x, (size, size, 1), (size, size, 1), ceil_mode=True)


class VolumeConv4d(nn.Module):
    """VAT's 4D convolution: two 3x3 2D convolutions, one per plane, with separate strides.

    The query-plane conv runs over (Hq, Wq) with stride ``sq`` at every support position of
    the input max-pooled (kernel = stride = ``ss``, ceil mode) over the support dims; the
    support-plane conv runs over (Hs, Ws) with stride ``ss`` at every query position of the
    input max-pooled by ``sq`` over the query dims. The two results are summed:
    (N, Cin, Hq, Wq, Hs, Ws) -> (N, Cout, ceil(Hq/sq), ceil(Wq/sq), ceil(Hs/ss), ceil(Ws/ss)).

    Both convs are evaluated as 3D convolutions whose kernel is 1 along the flattened other
    plane, directly on views of the 6D tensor (no transposed copies).
    """

    def __init__(self, in_channels: int, out_channels: int, query_stride: int, support_stride: int):
        super().__init__()
        self.query_stride, self.support_stride = query_stride, support_stride
        self.query_conv = nn.Conv2d(in_channels, out_channels, 3, stride=query_stride, padding=1)
        self.supp_conv = nn.Conv2d(in_channels, out_channels, 3, stride=support_stride, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        n, c, hq, wq, hs, ws = x.shape
        sq, ss = self.query_stride, self.support_stride
        # query plane: pool the support dims, then convolve over (Hq, Wq)
        pooled = x
        if ss > 1:
            pooled = _pool(x.reshape(n, c * hq * wq, hs, ws), (2, 3), ss)
        hs2, ws2 = pooled.shape[-2:]
        query = F.conv3d(
            pooled.reshape(n, c, hq, wq, hs2 * ws2),
            self.query_conv.weight.unsqueeze(-1),
            self.query_conv.bias,
            stride=(sq, sq, 1),
            padding=(1, 1, 0),
        )
        # support plane: pool the query dims, then convolve over (Hs, Ws)
        pooled = x
        if sq > 1:
            pooled = _pool(x.reshape(n, c, hq, wq, hs * ws), (2, 3), sq)
        hq2, wq2 = pooled.shape[2:4]
        support = F.conv3d(
            pooled.reshape(n, c, hq2 * wq2, hs, ws),
            self.supp_conv.weight.unsqueeze(2),
            self.supp_conv.bias,
            stride=(1, ss, ss),
            padding=(0, 1, 1),
        )
        cout = support.shape[1]
        query = query.view(n, cout, *query.shape[2:4], hs2, ws2)
        support = support.view(n, cout, hq2, wq2, *support.shape[-2:])
        return support.add_(query)  # in place: one volume fewer alive at the peak


class VolumeEmbeddingLayer(nn.Module):
    """VolumeConv4d -> GroupNorm -> ReLU."""

    def __init__(self, cin: int, cout: int, query_stride: int, support_stride: int, groups: int):
        super().__init__()
        self.conv = VolumeConv4d(cin, cout, query_stride, support_stride)
        self.norm = nn.GroupNorm(groups, cout)

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu_(self.norm(self.conv(x)))


def volume_embedding(cin: int, layers: list[tuple[int, int, int, int]]) -> nn.Sequential:
    """Layers given as (Cout, query stride, support stride, GroupNorm groups)."""
    modules = []
    for cout, sq, ss, groups in layers:
        modules.append(VolumeEmbeddingLayer(cin, cout, sq, ss, groups))
        cin = cout
    return nn.Sequential(*modules)


class VolumeTransformer(nn.Module):
    """``x + T(x)`` with T a 4D shifted-window transformer over (Hq, Wq, Hs, Ws)."""

    def __init__(self, sizes: tuple[int, int, int, int], depth: int):
        super().__init__()
        self.swin = SwinStage(EMBED_DIM, sizes, depth, heads=4, window=4)

    def forward(self, x: Tensor) -> Tensor:
        # T's output gets the stage input added once more (the original wraps the transformer
        # and adds its input again outside; the blocks have their own residuals)
        out = self.swin(x.permute(0, 2, 3, 4, 5, 1).contiguous())
        return out.permute(0, 5, 1, 2, 3, 4) + x


class DecoderStage(nn.Module):
    """``x + Swin2d(x)`` (two blocks, window 8, final LayerNorm), then an optional 1x1 conv."""

    def __init__(self, dim: int, size: int, out_dim: int | None):
        super().__init__()
        self.swin = SwinStage(dim, (size, size), depth=2, heads=4, window=8, final_norm=True)
        self.proj = nn.Conv2d(dim, out_dim, 1) if out_dim is not None else None

    def forward(self, x: Tensor) -> Tensor:
        out = self.swin(x.permute(0, 2, 3, 1).contiguous())
        x = out.permute(0, 3, 1, 2) + x
        return self.proj(x) if self.proj is not None else x


@register_head("vat")
class VATHead(Head):
    """VAT learner. Options: ``benchmark`` ("pascal" | "coco" | "fss": which query skip
    features the decoder uses, and the default image size 473 / 417 / 473) and ``mask_at``
    ("auto" | "resized" | "raw": where support masking happens, see the module docstring).

    ``levels``: the backbone's tapped maps per correlation level (deepest first), i.e. the
    channels L_i of the input. Input: [level4, level3, level2] of (N, L_i, S, S, S, S) with
    S = 16, 32, 64; output (N, 2, 128, 128).
    """

    original_prefix = "hpn_learner.ours."
    extra_shallow = True
    recipe = VAT_RECIPE
    # one shot at a time, like the original's K-shot loop: a shot's 4D volumes and attention
    # maps take ~1 GB per episode
    shots_per_pass = 1

    def __init__(
        self,
        levels: tuple[int, int, int],
        backbone_info: BackboneInfo | None = None,
        benchmark: str = "pascal",
        mask_at: str = "auto",
        **options: Any,
    ):
        super().__init__()
        if options:
            raise HmfssError(f"unknown VAT option(s): {', '.join(sorted(options))}")
        if benchmark not in AFFINITY:
            raise HmfssError(f"unknown VAT benchmark {benchmark!r}; choose one of {', '.join(AFFINITY)}")
        if mask_at not in ("auto", "resized", "raw"):
            raise HmfssError(f"unknown VAT mask_at {mask_at!r}; choose auto, resized or raw")
        if backbone_info is None:  # ResNet-50 layout
            backbone_info = BackboneInfo((512,) * 4 + (1024,) * 6 + (2048,) * 3, (3, 6, 4), 256)
        if backbone_info.extra_channels is None:
            raise HmfssError("VAT needs a backbone with an extra shallow map (a ResNet)")
        self.benchmark, self.mask_at = benchmark, mask_at
        self.affinity = AFFINITY[benchmark]
        self.levels = tuple(levels)
        l4, l3, l2 = self.levels
        channels = backbone_info.channels
        # query maps per level: [extra, shallow (l2), middle (l3), deep (l4)]
        self.map_sizes = [FEATURE_SIZES[0]] + [FEATURE_SIZES[1]] * l2 + [FEATURE_SIZES[2]] * l3 + [FEATURE_SIZES[3]] * l4
        # skip sources: last map of the middle level, last of the shallow level, the extra map
        self.skip_index = (-(l4 + 1), -(l4 + l3 + 1), -(l4 + l3 + l2 + 1))
        skip_in = (channels[-(l4 + 1)], channels[-(l4 + l3 + 1)], backbone_info.extra_channels)

        self.encoders = nn.ModuleList([
            volume_embedding(l4, [(64, 2, 1, 4), (128, 1, 2, 8)]),
            volume_embedding(l3, [(64, 2, 2, 4), (128, 1, 2, 8)]),
            volume_embedding(l2, [(32, 2, 2, 2), (64, 1, 2, 4), (128, 1, 2, 8)]),
        ])
        self.transformers = nn.ModuleList([
            VolumeTransformer((8, 8, 8, 8), depth=4),
            VolumeTransformer((16, 16, 8, 8), depth=2),
            VolumeTransformer((32, 32, 8, 8), depth=2),
        ])
        self.skip_proj = nn.ModuleDict({
            str(i): nn.Conv2d(skip_in[i], SKIP_CHANNELS[i], 1) for i in range(3) if self.affinity[i]
        })
        self.skip_dropout = nn.Dropout2d(p=0.5)
        widths = [w + (s if a else 0) for w, s, a in zip(DECODER_WIDTHS, SKIP_CHANNELS, self.affinity)]
        self.decoder_stages = nn.ModuleList([
            DecoderStage(widths[0], 32, DECODER_WIDTHS[1]),
            DecoderStage(widths[1], 64, DECODER_WIDTHS[2]),
            DecoderStage(widths[2], 128, None),
        ])
        self.decoder = nn.Sequential(
            nn.Conv2d(widths[2], 32, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(32, 2, 3, padding=1)
        )

    @classmethod
    def benchmark_options(cls, benchmark: str | None = None) -> dict[str, Any]:
        """``benchmark``: the data's own (pascal, coco, fss); PASCAL's variant for anything
        else (custom folders, unknown data)."""
        return {"benchmark": benchmark if benchmark in AFFINITY else "pascal"}

    @classmethod
    def default_img_size(cls, benchmark: str = "pascal", **options: Any) -> int:
        return cls.recipe.image_size(benchmark)

    # ---- feature preparation ------------------------------------------------------------

    def _resize(self, feats: list[Tensor]) -> list[Tensor]:
        if len(feats) != len(self.map_sizes):
            raise HmfssError(f"VAT expects {len(self.map_sizes)} tapped maps, got {len(feats)}")
        return [resize_map(f, s) for f, s in zip(feats, self.map_sizes)]

    def query_features(self, feats: list[Tensor]) -> list[Tensor]:
        return self._resize(feats)

    def mask_after_resize(self, masking: str) -> bool:
        if self.mask_at == "auto":
            return masking == "fm"  # original VAT; VAT-HM and the hybrid family mask first
        return self.mask_at == "resized"

    def support_features(
        self, feats: list[Tensor], im_feats: list[Tensor] | None, mask: Tensor, masking: str
    ) -> list[Tensor]:
        # The extra shallow map of the support is never correlated: an empty placeholder keeps
        # the list aligned with the query's without carrying it around.
        first = feats[0]
        placeholder = first.new_empty((first.shape[0], 0, FEATURE_SIZES[0], FEATURE_SIZES[0]))
        feats, im_feats = feats[1:], im_feats[1:] if im_feats is not None else None
        sizes = self.map_sizes[1:]
        if self.mask_after_resize(masking):
            feats = [resize_map(f, s) for f, s in zip(feats, sizes)]
            if im_feats is not None:
                im_feats = [resize_map(f, s) for f, s in zip(im_feats, sizes)]
            masked = mask_support_features(masking, feats, im_feats, mask)
        else:
            masked = mask_support_features(masking, feats, im_feats, mask)
            masked = [resize_map(f, s) for f, s in zip(masked, sizes)]
        return [placeholder] + masked

    # ---- learner ----------------------------------------------------------------------------

    def _skips(self, query_feats: list[Tensor], shots: int) -> list[Tensor | None]:
        skips: list[Tensor | None] = []
        for i in range(3):
            if not self.affinity[i]:
                skips.append(None)
                continue
            skip = torch.relu(self.skip_proj[str(i)](query_feats[self.skip_index[i]]))
            if shots > 1:
                skip = skip.repeat_interleave(shots, dim=0)
            if i < 2:  # the original drops channels of the two coarser skips only
                skip = self.skip_dropout(skip)
            skips.append(skip)
        return skips

    def forward(self, corr: list[Tensor], *, query_feats: list[Tensor], shots: int = 1, **context) -> Tensor:
        x = self.transformers[0](self.encoders[0](corr[0]))
        x = resize_query_dims(x, (16, 16))
        x += self.encoders[1](corr[1])
        x = self.transformers[1](x)
        x = resize_query_dims(x, (32, 32))
        x += self.encoders[2](corr[2])
        x = self.transformers[2](x)
        x = x.mean(dim=(-2, -1))  # (N, 128, 32, 32)
        for i, (stage, skip) in enumerate(zip(self.decoder_stages, self._skips(query_feats, shots))):
            if skip is not None:
                x = torch.cat((x, skip), dim=1)
            x = stage(x)
            if i < 2:
                x = F.interpolate(x, (x.shape[-2] * 2, x.shape[-1] * 2), mode="bilinear", align_corners=True)
        return self.decoder(x)

    # ---- original checkpoints -----------------------------------------------------------

    _RENAMES = (
        (re.compile(r"^encoders\.(\d)\.conv4d\.(\d)\.0\."), r"encoders.\1.\2.conv."),
        (re.compile(r"^encoders\.(\d)\.conv4d\.(\d)\.1\."), r"encoders.\1.\2.norm."),
        (re.compile(r"^transformer\.(\d)\.transformer\.layer\.blocks\."), r"transformers.\1.swin.blocks."),
        (re.compile(r"^swin_decoder\.(\d)\.0\.transformer\.layers\.0\.blocks\."), r"decoder_stages.\1.swin.blocks."),
        (re.compile(r"^swin_decoder\.(\d)\.0\.transformer\.norm\."), r"decoder_stages.\1.swin.norm."),
        (re.compile(r"^swin_decoder\.(\d)\.1\."), r"decoder_stages.\1.proj."),
        (re.compile(r"^proj_query_feat\.(\d)\.0\."), r"skip_proj.\1."),
    )
    _DEAD = re.compile(r"^transformer\.\d\.transformer\.norm\.")
    _BUFFER = re.compile(r"^(.*\.swin)\.blocks\.(\d+)\.(attn\.relative_position_index|attn_mask)$")

    def convert_original_state(self, state: dict[str, Tensor]) -> dict[str, Tensor]:
        own_buffers = dict(self.named_buffers())
        out: dict[str, Tensor] = {}
        for key, value in state.items():
            if self._DEAD.match(key):
                continue
            for pattern, repl in self._RENAMES:
                key, hits = pattern.subn(repl, key)
                if hits:
                    break
            if key.startswith("skip_proj.") and not self.affinity[int(key.split(".")[1])]:
                continue  # projection the original builds but never uses for this benchmark
            buffer = self._BUFFER.match(key)
            if buffer:
                stage, _, name = buffer.groups()
                name = "relative_position_index" if name.endswith("index") else "attn_mask"
                mine = own_buffers.get(f"{stage}.{name}")
                if mine is None or tuple(mine.shape) != tuple(value.shape) or not torch.equal(
                    mine.to(value.device, value.dtype), value
                ):
                    raise HmfssError(
                        f"original VAT buffer {key} differs from the one computed for this model "
                        f"(not a VAT checkpoint of this configuration?)"
                    )
                continue
            out[key] = value
        return out

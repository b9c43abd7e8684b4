import itertools

import pytest
import torch
import torch.nn.functional as F

from helpers import on_meta
from hmfss import build_model, learnable_parameters
from hmfss.backbones import BackboneInfo
from hmfss.errors import HmfssError
from hmfss.heads.swin import EXP_FLOOR, SwinBlock, SwinStage, WindowAttention
from hmfss.heads.vat import VATHead, VolumeConv4d
from hmfss.heads.volume import max_pool_blocks

R50 = BackboneInfo((512,) * 4 + (1024,) * 6 + (2048,) * 3, (3, 6, 4), 256)
R101 = BackboneInfo((512,) * 4 + (1024,) * 23 + (2048,) * 3, (3, 23, 4), 256)

@pytest.fixture(scope="module")
def pascal_head():
    torch.manual_seed(0)
    return VATHead(R50.levels, backbone_info=R50)


# The original VAT's parameter counts include modules it never uses:
# proj_query_feat.0 = 1024*64 + 64 = 65,600 (unused for PASCAL and COCO),
# proj_query_feat.1 = 512*32 + 32 = 16,416 (unused for COCO), three 4D-Swin final norms 3 * 256 = 768.
ORIGINAL_TOTAL = {
    ("pascal", "resnet50"): 3_180_954,
    ("pascal", "resnet101"): 3_200_538,
    ("coco", "resnet50"): 3_006_490,
    ("fss", "resnet50"): 3_680_410,
    ("fss", "resnet101"): 3_699_994,
}
DEAD = {"pascal": 65_600 + 768, "coco": 65_600 + 16_416 + 768, "fss": 768}


@pytest.mark.parametrize("bench,backbone", list(ORIGINAL_TOTAL))
def test_parameter_counts_are_the_original_minus_its_unused_modules(bench, backbone):
    expected = ORIGINAL_TOTAL[bench, backbone] - DEAD[bench]
    info = R50 if backbone == "resnet50" else R101
    with torch.device("meta"):
        head = VATHead(info.levels, backbone_info=info, benchmark=bench)
    assert sum(p.numel() for p in head.parameters()) == expected
    # the stated numbers, for the record
    assert expected in (3_114_586, 3_134_170, 2_923_706, 3_679_642, 3_699_226)


def test_build_model_counts_only_the_head_and_picks_the_image_size():
    with torch.device("meta"):  # no compute needed for the configuration checks
        model = build_model("vat", "resnet50", "fm")
        assert learnable_parameters(model) == 3_114_586
        assert model.config.img_size == 473 and model.backbone.extra_shallow
        assert build_model("vat", "resnet50", "fm", benchmark="coco").config.img_size == 417
        assert build_model("vat", "resnet50", "fm", benchmark="fss").config.img_size == 473
        assert build_model("vat", "resnet50", "fm", img_size=321, benchmark="coco").config.img_size == 321


def test_bad_options_are_refused():
    with pytest.raises(HmfssError, match="benchmark"):
        build_model("vat", "resnet50", benchmark="ade")
    with pytest.raises(HmfssError, match="mask_at"):
        build_model("vat", "resnet50", mask_at="later")
    with pytest.raises(HmfssError, match="shallow"):
        build_model("vat", "vgg16")


def test_recipe(pascal_head):
    recipe = VATHead.recipe
    assert (recipe.optimizer, recipe.lr, recipe.weight_decay) == ("adamw", 5e-4, 0.0)
    assert recipe.image_size("pascal") == 473 and recipe.image_size("coco") == 417
    assert recipe.augmentation is not None and recipe.augmentation.p == 0.2
    groups = recipe.param_groups(pascal_head)
    names = [n for n, _ in pascal_head.named_parameters()]
    assert len(groups) == 2 and sum(len(g["params"]) for g in groups) == len(names)
    assert len(groups[1]["params"]) == sum("decoder" in n for n in names)
    assert all(g["lr"] == 5e-4 and g["weight_decay"] == 0.0 for g in groups)


# ---- geometry: buffers against naive constructions ------------------------------------------


def naive_relative_index(window, ndim):
    """Pairwise index by the Swin formula (offsets shifted to >= 0, mixed radix 2w-1), token
    coordinates from divmod."""
    tokens = list(itertools.product(range(window), repeat=ndim))
    base = 2 * window - 1
    index = torch.zeros(len(tokens), len(tokens), dtype=torch.long)
    for i, a in enumerate(tokens):
        for j, b in enumerate(tokens):
            value = 0
            for d in range(ndim):
                value = value * base + (a[d] - b[d] + window - 1)
            index[i, j] = value
    return index


def naive_shift_mask(sizes, window, shift, windows=None):
    """Windows in row-major grid order, tokens row-major; region of a rolled coordinate c in a
    dim of size S: 0 if c < S - window, 1 if c < S - shift, else 2."""
    def region(c, size):
        return 0 if c < size - window else (1 if c < size - shift else 2)

    cells = list(itertools.product(*[range(s // window) for s in sizes]))
    masks = []
    for w in windows if windows is not None else range(len(cells)):
        labels = []
        for tok in itertools.product(range(window), repeat=len(sizes)):
            labels.append(hash(tuple(region(c * window + t, s) for c, t, s in zip(cells[w], tok, sizes))))
        lab = torch.tensor(labels)
        masks.append(torch.where(lab[:, None] == lab[None, :], 0.0, -100.0))
    return torch.stack(masks)


def test_relative_position_index_2d_and_4d(pascal_head):
    idx4 = naive_relative_index(4, 4)
    assert idx4.max() == 7**4 - 1
    for stage in pascal_head.transformers:
        assert torch.equal(stage.swin.relative_position_index, idx4)
    idx2 = naive_relative_index(8, 2)
    for stage in pascal_head.decoder_stages:
        assert torch.equal(stage.swin.relative_position_index, idx2)
    # (dHq+3)*343 + (dWq+3)*49 + (dHs+3)*7 + (dWs+3); token 0 vs token 255 = (-3,-3,-3,-3)
    assert idx4[0, 255] == 0 and idx4[255, 0] == 2400


def test_shift_masks_equal_naive_region_masks(pascal_head):
    expected_shapes = [(16, 256, 256), (64, 256, 256), (256, 256, 256), (16, 64, 64), (64, 64, 64), (256, 64, 64)]
    stages = [t.swin for t in pascal_head.transformers] + [d.swin for d in pascal_head.decoder_stages]
    for stage, shape in zip(stages, expected_shapes):
        assert tuple(stage.attn_mask.shape) == shape
        windows = None if shape[0] * shape[1] <= 64 * 256 else [0, 1, 7, 100, 200, 255]  # spot-check the largest
        expected = naive_shift_mask(stage.sizes, stage.window, stage.shift, windows)
        got = stage.attn_mask if windows is None else stage.attn_mask[windows]
        assert torch.equal(got, expected)
    # the buffers are shared by a stage's blocks and never saved
    assert not any("attn_mask" in k or "relative_position_index" in k for k in pascal_head.state_dict())


# ---- blocks against naive computations ----------------------------------------------------------


def naive_swin_block(block, x, window, shift):
    """Pre-norm block computed token by token: attention over the token's window of the rolled
    grid, bias from the table by coordinate differences, -100 across regions."""
    b, *sizes, c = x.shape
    d = len(sizes)
    heads = block.attn.heads
    h = F.layer_norm(x, (c,), block.norm1.weight, block.norm1.bias)
    h = torch.roll(h, [-shift] * d, list(range(1, d + 1)))
    out = torch.zeros_like(h)
    qkv = F.linear(h, block.attn.qkv.weight, block.attn.qkv.bias)
    q, k, v = qkv.split(c, dim=-1)
    table = block.attn.relative_position_bias_table
    base = 2 * window - 1

    def region(coord, size):
        return 0 if coord < size - window else (1 if coord < size - shift else 2)

    for batch in range(b):
        for cell in itertools.product(*[range(s // window) for s in sizes]):
            pos = [tuple(ci * window + t for ci, t in zip(cell, tok)) for tok in itertools.product(range(window), repeat=d)]
            for head in range(heads):
                sl = slice(head * c // heads, (head + 1) * c // heads)
                qs = torch.stack([q[(batch, *p)][sl] for p in pos]) * (c // heads) ** -0.5
                ks = torch.stack([k[(batch, *p)][sl] for p in pos])
                vs = torch.stack([v[(batch, *p)][sl] for p in pos])
                logits = qs @ ks.T
                rows, cross = [], []
                for pi in pos:
                    for pj in pos:
                        row = 0
                        for dim in range(d):
                            row = row * base + (pi[dim] - pj[dim] + window - 1)
                        rows.append(row)
                        cross.append(bool(shift) and any(region(a, s) != region(bb, s) for a, bb, s in zip(pi, pj, sizes)))
                logits = logits + table[rows, head].view(len(pos), len(pos))
                logits = logits - 100.0 * torch.tensor(cross, dtype=logits.dtype).view(len(pos), len(pos))
                attended = logits.softmax(-1) @ vs
                for i, p in enumerate(pos):
                    out[(batch, *p)][sl] = attended[i]
    attn = F.linear(out, block.attn.proj.weight, block.attn.proj.bias)
    attn = torch.roll(attn, [shift] * d, list(range(1, d + 1)))
    y = x + attn
    z = F.layer_norm(y, (c,), block.norm2.weight, block.norm2.bias)
    return y + block.mlp.fc2(F.gelu(block.mlp.fc1(z)))


@pytest.mark.parametrize("sizes,window", [((4, 4, 4, 4), 2), ((8, 8), 4), ((6, 4, 4, 4), 2)])
def test_shifted_window_stage_equals_naive_attention(sizes, window):
    torch.manual_seed(0)
    stage = SwinStage(8, sizes, depth=2, heads=2, window=window)
    with torch.no_grad():
        for p in stage.parameters():  # non-trivial norms and bias tables
            p.add_(0.3 * torch.randn_like(p))
        x = torch.randn(1, *sizes, 8)
        expected = naive_swin_block(stage.blocks[0], x, window, 0)
        expected = naive_swin_block(stage.blocks[1], expected, window, window // 2)
        got = stage(x)
    assert isinstance(stage.blocks[1], SwinBlock) and stage.blocks[1].shift == window // 2
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_in_place_attention_equals_softmax_where_logits_fall_far_below_the_row_maximum():
    # inference normalises in place and floors the shifted logits at EXP_FLOOR before exp (CPU
    # exp is slow below it); the weights it drops there are < 1e-37: same output as softmax
    torch.manual_seed(3)
    attn = WindowAttention(8, 2, 2, 2)
    with torch.no_grad():
        attn.qkv.weight.mul_(40.0)  # logit spreads of hundreds
    x = torch.randn(3, 4, 8)
    mask = torch.zeros(3, 4, 4)
    mask[:, :2, 2:] = -1e4  # far below the floor, as the shift mask's -100 is
    index = torch.zeros(4, 4, dtype=torch.long)
    with torch.no_grad():
        got = attn(x, index, mask)
    want = attn(x.requires_grad_(), index, mask)  # the autograd path: softmax
    assert want.grad_fn is not None and EXP_FLOOR < -80
    torch.testing.assert_close(got, want.detach(), rtol=1e-5, atol=1e-6)


def naive_volume_conv(conv, x):
    """Per-plane loops: max-pool one plane pair (ceil mode), 2D conv over the other."""
    n, c, hq, wq, hs, ws = x.shape
    sq, ss = conv.query_stride, conv.support_stride
    pooled_s = torch.stack([
        torch.stack([F.max_pool2d(x[:, :, i, j], ss, ss, ceil_mode=True) for j in range(wq)], 2) for i in range(hq)
    ], 2)  # (n, c, hq, wq, hs', ws')
    hs2, ws2 = pooled_s.shape[-2:]
    query = torch.stack([
        torch.stack([conv.query_conv(pooled_s[..., a, b]) for b in range(ws2)], -1) for a in range(hs2)
    ], -2)
    pooled_q = torch.stack([
        torch.stack([F.max_pool2d(x[..., a, b], sq, sq, ceil_mode=True) for b in range(ws)], -1) for a in range(hs)
    ], -2)  # (n, c, hq', wq', hs, ws)
    hq2, wq2 = pooled_q.shape[2:4]
    support = torch.stack([
        torch.stack([conv.supp_conv(pooled_q[:, :, i, j]) for j in range(wq2)], 2) for i in range(hq2)
    ], 2)
    return query + support


@pytest.mark.parametrize("strides", [(2, 1), (1, 2), (2, 2), (1, 1)])
def test_volume_conv4d_equals_pooled_plane_convolutions(strides):
    torch.manual_seed(1)
    conv = VolumeConv4d(3, 5, *strides)
    x = torch.rand(2, 3, 6, 5, 7, 4)  # odd sizes exercise ceil-mode pooling
    with torch.no_grad():
        got, expected = conv(x), naive_volume_conv(conv, x)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("size", [2, 3, 4])
def test_max_pool_blocks_equals_ceil_mode_pooling_bit_for_bit(size):
    torch.manual_seed(size)
    x = torch.randn(2, 3, 7, 9, 5).round()  # odd sizes (ceil mode) and many ties
    x[0, 0, 1, 2, 0] = float("nan")
    x[1, 2, 6, 8, :] = float("-inf")  # a last, one-element block holding only -inf
    planes = x[..., 0]
    want2 = torch.nn.functional.max_pool2d(planes, size, size, ceil_mode=True)
    want3 = torch.nn.functional.max_pool3d(x, (size, size, 1), (size, size, 1), ceil_mode=True)
    for got, want in ((max_pool_blocks(planes, (2, 3), size), want2), (max_pool_blocks(x, (2, 3), size), want3)):
        assert got.shape == want.shape
        assert torch.equal(got.nan_to_num(nan=7.5), want.nan_to_num(nan=7.5))
    assert want2.isnan().sum() == 1


def test_volume_conv4d_training_pools_as_pytorch_does():
    # under autograd VolumeConv4d keeps PyTorch's pooling: its gradient picks one element of a tie
    torch.manual_seed(2)
    conv = VolumeConv4d(2, 3, 2, 2)
    x = torch.rand(1, 2, 4, 4, 4, 4).round().requires_grad_()  # ties of 0s and 1s in every block
    got = torch.autograd.grad(conv(x).sum(), x)[0]
    want = torch.autograd.grad(naive_volume_conv(conv, x).sum(), x)[0]
    torch.testing.assert_close(got, want)


# ---- full-size shape bookkeeping (meta tensors: no compute) --------------------------------------


def meta_feats(info, batch, sizes=(128, 64, 32, 16)):
    l4, l3, l2 = info.levels
    spec = [(info.extra_channels, sizes[0])] + [(512, sizes[1])] * l2 + [(1024, sizes[2])] * l3 + [(2048, sizes[3])] * l4
    return [torch.empty(batch, c, s, s, device="meta") for c, s in spec]


@pytest.mark.parametrize("bench", ["pascal", "coco", "fss"])
def test_layer_shapes_at_full_size(bench):
    with torch.device("meta"):
        head = VATHead(R50.levels, backbone_info=R50, benchmark=bench)
    shapes = {}
    for name, module in head.named_modules():
        if type(module).__name__ in ("VolumeEmbeddingLayer", "VolumeTransformer", "DecoderStage"):
            module.register_forward_hook(lambda m, i, o, name=name: shapes.__setitem__(name, tuple(o.shape[1:])))
    corr = [torch.empty(6, 3, 16, 16, 16, 16, device="meta"), torch.empty(6, 6, 32, 32, 32, 32, device="meta"),
            torch.empty(6, 4, 64, 64, 64, 64, device="meta")]
    logits = head(corr, query_feats=meta_feats(R50, 2), shots=3)
    assert logits.shape == (6, 2, 128, 128)
    assert shapes == {
        "encoders.0.0": (64, 8, 8, 16, 16), "encoders.0.1": (128, 8, 8, 8, 8), "transformers.0": (128, 8, 8, 8, 8),
        "encoders.1.0": (64, 16, 16, 16, 16), "encoders.1.1": (128, 16, 16, 8, 8), "transformers.1": (128, 16, 16, 8, 8),
        "encoders.2.0": (32, 32, 32, 32, 32), "encoders.2.1": (64, 32, 32, 16, 16), "encoders.2.2": (128, 32, 32, 8, 8),
        "transformers.2": (128, 32, 32, 8, 8),
        "decoder_stages.0": (96, 32, 32), "decoder_stages.1": (48, 64, 64), "decoder_stages.2": (64, 128, 128),  # 48 + the layer1 skip (16), every benchmark
    }
    widths = {"pascal": (128, 128, 64), "coco": (128, 96, 64), "fss": (192, 128, 64)}[bench]
    assert tuple(s.swin.blocks[0].norm1.normalized_shape[0] for s in head.decoder_stages) == widths


def test_feature_preparation_and_masking_order(pascal_head):
    torch.manual_seed(0)
    head = pascal_head
    raw = [torch.randn(2, 8, 30, 30)] + [torch.randn(2, 8, 15, 15)] * 4 + [torch.randn(2, 8, 8, 8)] * 6 + [torch.randn(2, 8, 4, 4)] * 3
    im = [f.flip(0) for f in raw]
    mask = (torch.rand(2, 120, 120) > 0.5).float()

    def resize(f, s):
        return F.interpolate(f, (s, s), mode="bilinear", align_corners=True)

    def fm(f):
        return f * F.interpolate(mask[:, None], f.shape[-2:], mode="bilinear", align_corners=True)

    sizes = [64] * 4 + [32] * 6 + [16] * 3
    q = head.query_features(raw)
    assert [tuple(f.shape[-2:]) for f in q] == [(128, 128)] + [(s, s) for s in sizes]
    # original VAT: resize, then feature-mask
    fm_out = head.support_features(raw, None, mask, "fm")
    assert fm_out[0].shape == (2, 0, 128, 128)  # the support's layer1 map is never correlated
    for got, f, s in zip(fm_out[1:], raw[1:], sizes):
        torch.testing.assert_close(got, fm(resize(f, s)))
    # VAT-HM: hybrid rule at the backbone's resolution, then resize
    hm_out = head.support_features(raw, im, mask, "hm")
    for got, f, i, s in zip(hm_out[1:], raw[1:], im[1:], sizes):
        torch.testing.assert_close(got, resize(torch.where(fm(f) > 0, fm(f), i), s))
    # mask_at overrides the order
    with torch.device("meta"):
        late_head = VATHead(R50.levels, backbone_info=R50, mask_at="resized")
    late = late_head.support_features(raw, im, mask, "hm")
    for got, f, i, s in zip(late[1:], raw[1:], im[1:], sizes):
        r = fm(resize(f, s))
        torch.testing.assert_close(got, torch.where(r > 0, r, resize(i, s)))


def test_skip_features_are_projected_once_per_episode_and_repeated_per_shot(pascal_head):
    torch.manual_seed(0)
    head = VATHead(R50.levels, backbone_info=R50, benchmark="fss").eval()
    feats = [torch.randn(2, 256, 8, 8)] + [torch.randn(2, 512, 4, 4)] * 4 + [torch.randn(2, 1024, 2, 2)] * 6 + [torch.randn(2, 2048, 1, 1)] * 3
    with torch.no_grad():
        one = head._skips(feats, shots=1)
        three = head._skips(feats, shots=3)
    for a, b in zip(one, three):
        assert torch.equal(b, a.repeat_interleave(3, 0))
    assert torch.equal(one[1], torch.relu(head.skip_proj["1"](feats[4])))  # last layer2 map
    assert torch.equal(one[0], torch.relu(head.skip_proj["0"](feats[10])))  # last layer3 map
    assert sorted(pascal_head.skip_proj) == ["1", "2"] and pascal_head._skips(feats, 1)[0] is None


def test_model_k_shot_bookkeeping_on_meta_tensors():
    """predict_mask / encode_support with a VAT head: shapes through backbone, masking, correlation
    and the learner for B=2, K=3 (values are checked against the original in the reference harness)."""
    with on_meta():
        model = build_model("vat", "resnet50", "hm")
        query = torch.empty(2, 3, 97, 97)
        supports = torch.empty(2, 3, 3, 97, 97)
        masks = torch.empty(2, 3, 97, 97)
        state = model.encode_support(supports, masks)
        assert [tuple(f.shape) for f in state.feats[:2]] == [(2, 3, 0, 128, 128), (2, 3, 512, 64, 64)]
        logits = model.lowres_logits(model.encode_query(query), state)
        assert logits.shape == (2, 3, 2, 128, 128)
        assert model(query, supports[:, 0], masks[:, 0]).shape == (2, 2, 97, 97)

import pytest
import torch
import torch.nn.functional as F

from helpers import make_episode
from hmfss import build_model, learnable_parameters, vote
from hmfss.errors import HmfssError
from hmfss.heads.asnet import ASNetHead, AttentiveSqueeze, AttentiveSqueezeLayer


@pytest.mark.parametrize(
    "backbone,count", [("resnet50", 1_320_610), ("resnet101", 1_354_610), ("vgg16", 1_310_146)]
)
def test_learnable_parameter_counts_equal_the_original(backbone, count):
    model = build_model("asnet", backbone, "none")
    assert learnable_parameters(model) == count
    assert model.config.img_size == 400 and not model.backbone.extra_shallow


def test_recipe_and_options():
    assert (ASNetHead.recipe.optimizer, ASNetHead.recipe.lr, ASNetHead.recipe.image_size()) == ("adam", 1e-3, 400)
    with pytest.raises(HmfssError, match="unknown ASNet option"):
        build_model("asnet", "resnet50", benchmark="coco")


def test_state_dict_keys_follow_the_original_learner():
    """The original ASNet learner has 222 keys for R50; identity shortcut in the first mixing layers."""
    keys = list(ASNetHead((3, 6, 4)).state_dict())
    assert len(keys) == 222
    assert "encoder_layer4to3.0.attn.short_cut.0.weight" not in keys
    assert "encoder_layer4to3.1.attn.short_cut.0.weight" in keys
    for key in ("encoder_layer3.0.attn.qhead.weight", "encoder_layer2.1.attn.agg.3.bias",
                "encoder_layer4.0.ff.ff.3.weight", "encoder_layer3to2.1.ff.out_norm.weight", "decoder2.2.bias"):
        assert key in keys


def test_layer_shapes_resnet50_at_400():
    with torch.device("meta"):
        head = ASNetHead((3, 6, 4))
    shapes = []
    for module in head.modules():
        if isinstance(module, AttentiveSqueezeLayer):
            module.register_forward_hook(lambda m, i, o: shapes.append(tuple(o.shape[1:])))
    corr = [torch.empty(1, 3, 13, 13, 13, 13, device="meta"), torch.empty(1, 6, 25, 25, 25, 25, device="meta"),
            torch.empty(1, 4, 50, 50, 25, 25, device="meta")]
    logits = head(corr, support_mask=torch.empty(1, 400, 400, device="meta"))
    assert shapes == [
        (32, 13, 13, 4, 4), (128, 13, 13, 2, 2),
        (32, 25, 25, 7, 7), (128, 25, 25, 2, 2),
        (32, 50, 50, 7, 7), (128, 50, 50, 2, 2),
        (128, 25, 25, 2, 2), (128, 25, 25, 1, 1),
        (128, 50, 50, 2, 2), (128, 50, 50, 1, 1),
    ]
    assert logits.shape == (1, 2, 100, 100)


def naive_attention(layer: AttentiveSqueeze, x, mask):
    """Per episode, head and query position: softmax over the key plane of (q . k) without
    scaling, keys blanked where the bilinearly resized mask is exactly 0."""
    q, k, v = layer.qhead(x), layer.khead(x), layer.vhead(x)
    n, hidden, t, hq, wq = q.shape
    hk, wk = k.shape[-2:]
    keymask = F.interpolate(mask[:, None], (hk, wk), mode="bilinear", align_corners=True)[:, 0].flatten(1)
    heads, d = 8, hidden // 8
    out = torch.zeros(n, hidden, t, hq * wq)
    for b in range(n):
        for g in range(heads):
            ch = slice(g * d, (g + 1) * d)
            for pos in range(t):
                qs = q[b, ch, pos].flatten(1).T  # (Lq, d)
                ks = k[b, ch, pos].flatten(1)  # (d, Lk)
                vs = v[b, ch, pos].flatten(1).T  # (Lk, d)
                logits = qs @ ks
                logits[:, keymask[b] == 0] = -1e9
                out[b, ch, pos] = (torch.softmax(logits, -1) @ vs).T
    out = out.view(n, hidden, t, hq, wq)
    return layer.out_norm(layer.agg(out) + layer.short_cut(x))


@pytest.mark.parametrize("kernel,stride,pool_kv", [(5, 4, False), (5, 4, True), (3, 2, False), (2, 1, False)])
def test_attention_equals_naive_per_position_softmax(kernel, stride, pool_kv):
    torch.manual_seed(0)
    padding = kernel // 2 if kernel > 2 else 0
    cin = 16 if kernel == 2 else 3
    layer = AttentiveSqueeze(cin, 16, kernel, stride, padding, pool_kv).eval()
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(0.2 * torch.randn_like(p))
        x = torch.rand(2, cin, 6, 9, 9)
        mask = torch.zeros(2, 40, 40)
        mask[0, 5:30, 10:35] = 1
        mask[1, 30:, :8] = 1  # small object: most keys blanked
        torch.testing.assert_close(layer(x, mask), naive_attention(layer, x, mask), rtol=1e-4, atol=1e-5)


def test_fully_masked_keys_attend_uniformly():
    torch.manual_seed(0)
    layer = AttentiveSqueeze(3, 16, 5, 4, 2, True).eval()
    x = torch.rand(1, 3, 4, 9, 9)
    empty = torch.zeros(1, 33, 33)
    with torch.no_grad():
        got = layer(x, empty)
        v = layer.vhead(x)  # uniform weights: every query sees the mean value of its plane
        mean = v.mean(dim=(-2, -1), keepdim=True).expand(-1, -1, -1, 3, 3)
        expected = layer.out_norm(layer.agg(mean) + layer.short_cut(x))
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_support_maps_are_pooled_before_masking():
    torch.manual_seed(0)
    head = ASNetHead((3, 6, 4))
    feats = [torch.randn(2, 4, 50, 50), torch.randn(2, 4, 25, 25), torch.randn(2, 4, 13, 13)]
    im = [torch.randn_like(f) for f in feats]
    mask = (torch.rand(2, 400, 400) > 0.4).float()

    def pool(f):
        return F.avg_pool2d(f, 3, 2, 1) if f.shape[-1] >= 50 else f

    def fm(f):
        return f * F.interpolate(mask[:, None], f.shape[-2:], mode="bilinear", align_corners=True)

    none = head.support_features(feats, im, mask, "none")
    assert [tuple(f.shape[-2:]) for f in none] == [(25, 25), (25, 25), (13, 13)]
    for got, f in zip(none, feats):
        assert torch.equal(got, pool(f))
    for got, f, i in zip(head.support_features(feats, im, mask, "hm"), feats, im):
        torch.testing.assert_close(got, torch.where(fm(pool(f)) > 0, fm(pool(f)), pool(i)))
    # the threshold is an option
    for got, f in zip(ASNetHead((3, 6, 4), pool_threshold=10_000).support_features(feats, None, mask, "none"), feats):
        assert torch.equal(got, f)


@pytest.fixture(scope="module")
def small_model():
    torch.manual_seed(0)
    # pool_threshold 32 pools the 33-wide stride-8 maps of a 257 px input, as 50 does at 400 px
    model = build_model("asnet", "efficientnet-lite0", "fm", pool_threshold=32).eval()
    with torch.no_grad():
        for p in model.head.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


def test_k_shot_equals_k_independent_forwards_and_voting(small_model):
    # 257 px: the smallest kind of input whose support planes survive the mixing layers
    q, s, m = make_episode(batch=1, shots=2, size=257, seed=1)
    with torch.no_grad():
        per_shot = torch.stack([small_model(q, s[:, k], m[:, k]).argmax(1) for k in range(2)], 1)
        pred = small_model.predict_mask(q, s, m)
    assert 0 < per_shot.float().mean() < 1  # mixed predictions
    assert torch.equal(pred, vote(per_shot))
    assert pred.shape == (1, 257, 257)


def test_shots_in_groups_give_the_same_logits(small_model):
    """``shots_per_pass`` (VAT uses 1) only bounds memory."""
    q, s, m = make_episode(batch=1, shots=3, size=257, seed=3)
    with torch.no_grad():
        state = small_model.encode_support(s, m)
        feats = small_model.encode_query(q)
        together = small_model.lowres_logits(feats, state)
        small_model.head.shots_per_pass = 2
        try:
            grouped = small_model.lowres_logits(feats, state)
        finally:
            del small_model.head.shots_per_pass
    assert grouped.shape == (1, 3, 2, 66, 66)
    # same arithmetic per volume; only the batch composition of the kernels differs
    assert ((grouped - together).abs().max() / together.abs().max()) < 1e-5


def test_every_head_parameter_gets_a_gradient():
    torch.manual_seed(0)
    head = ASNetHead((3, 6, 4)).train()
    corr = [torch.rand(1, 3, 9, 9, 9, 9), torch.rand(1, 6, 17, 17, 17, 17), torch.rand(1, 4, 33, 33, 17, 17)]
    # the left half, corners included: the 2x2 key planes of the coarse layers sample the mask
    # at the image corners (align_corners), so at least two keys stay unblanked everywhere
    mask = torch.zeros(1, 257, 257)
    mask[:, :, :150] = 1
    logits = head(corr, support_mask=mask)
    assert logits.shape == (1, 2, 66, 66)
    F.cross_entropy(logits, torch.randint(0, 2, (1, 66, 66))).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in head.parameters())

import pytest
import torch

from helpers import make_episode
from hmfss import build_model, vote
from hmfss.errors import HmfssError


def test_vote_on_hand_made_votes():
    # three shots over four pixels: votes 3, 2, 1, 0 -> max 3 -> keep votes/3 >= 0.5
    shots = torch.tensor([[[[1, 1, 1, 0]], [[1, 1, 0, 0]], [[1, 0, 0, 0]]]])
    assert vote(shots).tolist() == [[[1, 1, 0, 0]]]
    # five shots, at most one vote anywhere: normalised by the max vote (1), not by K
    five = torch.zeros(1, 5, 1, 4, dtype=torch.long)
    five[0, 0, 0, 1] = five[0, 3, 0, 2] = 1
    assert vote(five).tolist() == [[[0, 1, 1, 0]]]
    # no vote at all: max clamps to 1, nothing is foreground
    assert vote(torch.zeros(2, 3, 2, 2, dtype=torch.long)).sum() == 0
    # one shot: the mask itself
    one = torch.tensor([[[[0, 1], [1, 1]]]])
    assert vote(one).tolist() == [[[0, 1], [1, 1]]]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model("hsnet", "resnet50", "hm").eval()


def test_forward_shapes(model):
    q, s, m = make_episode(batch=2, shots=1, size=64)
    logits = model(q, s[:, 0], m[:, 0])
    assert logits.shape == (2, 2, 64, 64)


def test_k_shot_equals_k_independent_forwards_and_voting(model):
    q, s, m = make_episode(batch=2, shots=3, size=64, seed=1)
    with torch.no_grad():
        per_shot = torch.stack([model(q, s[:, k], m[:, k]).argmax(1) for k in range(3)], 1)
        pred = model.predict_mask(q, s, m)
    assert torch.equal(pred, vote(per_shot))
    assert pred.shape == (2, 64, 64) and set(pred.unique().tolist()) <= {0, 1}


def test_encode_support_then_segment_equals_predict_mask(model):
    q, s, m = make_episode(batch=2, shots=2, size=64, seed=2)
    with torch.no_grad():
        state = model.encode_support(s, m)
        assert state.shots == 2
        assert torch.equal(model.segment(q, state), model.predict_mask(q, s, m))


def test_support_encoded_once_serves_a_batch_of_queries(model):
    q, s, m = make_episode(batch=3, shots=2, size=64, seed=3)
    with torch.no_grad():
        state = model.encode_support(s[:1], m[:1])
        batched = model.segment(q, state)
        single = torch.cat([model.predict_mask(q[i:i + 1], s[:1], m[:1]) for i in range(3)])
    assert torch.equal(batched, single)


def test_per_item_output_sizes(model):
    q, s, m = make_episode(batch=2, shots=1, size=64, seed=4)
    with torch.no_grad():
        masks = model.predict_mask(q, s, m, output_size=[(50, 70), (64, 64)])
        state = model.encode_support(s, m)
        lowres = model.lowres_logits(model.encode_query(q), state)
    assert [tuple(x.shape) for x in masks] == [(50, 70), (64, 64)]
    expected = torch.nn.functional.interpolate(lowres[0], (50, 70), mode="bilinear", align_corners=True).argmax(1)[0]
    assert torch.equal(masks[0], expected)


@pytest.mark.parametrize("masking", ["none", "fm", "im", "hm-add", "hm-reverse"])
def test_every_masking_strategy_runs(masking):
    model = build_model("hsnet", "efficientnet-lite0", masking).eval()
    q, s, m = make_episode(batch=1, shots=2, size=64)
    with torch.no_grad():
        assert model.predict_mask(q, s, m).shape == (1, 64, 64)


def test_factory_rejects_unknown_names():
    with pytest.raises(HmfssError, match="unknown arch"):
        build_model("unet")
    with pytest.raises(HmfssError, match="unknown masking"):
        build_model("hsnet", masking="blur")


def test_training_updates_only_the_head():
    model = build_model("hsnet", "efficientnet-lite0", "hm")
    model.train()
    assert not model.backbone.training and model.head.training
    q, s, m = make_episode(batch=1, shots=1, size=64)
    loss = torch.nn.functional.cross_entropy(model(q, s[:, 0], m[:, 0]), m[:, 0].long())
    loss.backward()
    assert all(p.grad is not None for p in model.head.parameters())
    assert all(p.grad is None for p in model.backbone.parameters())


@pytest.mark.parametrize("masking,exact", [("hm", "support"), ("hm-reverse", "im"), ("fm", None)])
def test_cpu_backbone_keeps_only_the_selecting_images_in_nchw(model, masking, exact):
    """HSNet on the CPU: channels-last passes, except the images whose feature signs choose
    between FM and IM, which keep the reference layout (so the choice is bit-identical)."""
    q, s, m = make_episode(batch=1, shots=2, size=32, seed=5)
    named = {"query": q, "support": s[0], "im": s[0] * m[0].unsqueeze(1)}
    calls = []
    forward = model.backbone.forward
    model.backbone.forward = lambda images: calls.append(images) or forward(images)
    old_masking, model.config.masking = model.config.masking, masking
    try:
        with torch.no_grad():
            model.predict_mask(q, s, m)
    finally:
        model.backbone.forward = forward
        model.config.masking = old_masking
    layouts = {}
    for images in calls:
        for name, ref in named.items():
            for row in images:
                if row.shape == ref.shape[1:] and any(torch.equal(row, r) for r in ref):
                    layouts[name] = "nchw" if images.is_contiguous() else "channels_last"
    expected = {n: "nchw" if n == exact else "channels_last" for n in ("query", "support")}
    if masking != "fm":
        expected["im"] = "nchw" if exact == "im" else "channels_last"
    assert layouts == expected


def test_hm_takes_bit_identical_fm_values_where_the_reference_selects_them(model):
    q, s, m = make_episode(batch=1, shots=1, size=64, seed=6)
    with torch.no_grad():
        ours = model.encode_support(s, m).feats
        feats = model.backbone(s[:, 0])  # reference: every map from a plain NCHW pass
        im = model.backbone(s[:, 0] * m[:, 0].unsqueeze(1))
    selected = 0
    for got, f, i in zip(ours, feats, im):
        fm = f * torch.nn.functional.interpolate(m[:, :1], f.shape[-2:], mode="bilinear", align_corners=True)
        chosen = fm > 0
        selected += int(chosen.sum())
        assert torch.equal(got[:, 0][chosen], fm[chosen])
        torch.testing.assert_close(got[:, 0][~chosen], i[~chosen], rtol=1e-4, atol=1e-4)
    assert selected > 1000  # the check above covered many FM values

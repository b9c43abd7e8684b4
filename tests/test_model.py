import pytest
import torch

from helpers import make_episode
from helpers.golden import init_by_name
from hmfss import build_model, vote
from hmfss.errors import HmfssError
from hmfss.checkpoint import load_checkpoint, load_model
from hmfss.fast.traits import FastInputs
from hmfss.inputs import check_images, check_masks
from hmfss.masking import STRATEGIES
from hmfss.model import ExecutionPath, ReferencePath, foreground


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


@pytest.mark.parametrize("masking,exact,exact_selection,cl_head,amp", [
    ("hm", "support", True, True, False), ("hm-reverse", "im", True, True, False), ("fm", None, True, True, False),
    ("hm", None, False, True, False), ("hm-reverse", None, False, True, False), ("hm", "all", False, False, False),
    ("hm", "support", True, True, True), ("hm", "all", False, False, True),
])
def test_cpu_backbone_keeps_only_the_selecting_images_in_nchw(model, masking, exact, exact_selection, cl_head,
                                                              amp, monkeypatch):
    """HSNet on the CPU: channels-last passes through the BatchNorm-folded copy, except the
    images whose feature signs choose between FM and IM, which keep the reference layout and
    modules (so the choice is bit-identical), unless ``exact_selection`` is off; under bf16
    autocast they keep the reference modules in channels-last memory. Heads that take no
    channels-last maps (VAT, ASNet) get every image from the reference NCHW pass."""
    q, s, m = make_episode(batch=1, shots=2, size=32, seed=5)
    named = {"query": q, "support": s[0], "im": s[0] * m[0].unsqueeze(1)}
    calls = []
    spied = [model.backbone, model.fast_path.folded_backbone(model.backbone)]
    for which, net in zip(("reference", "folded"), spied):
        net.forward = lambda images, which=which, forward=net.forward: calls.append((which, images)) or forward(images)
    old_masking, model.config.masking = model.config.masking, masking
    model.exact_selection = exact_selection
    if not cl_head:  # a head that declares no fast inputs
        monkeypatch.setattr("hmfss.fast.path.fast_inputs", lambda head: FastInputs())
    try:
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            model.predict_mask(q, s, m)
    finally:
        for net in spied:
            del net.forward
        model.config.masking = old_masking
        model.exact_selection = True
    layouts = {}
    for which, images in calls:
        for name, ref in named.items():
            for row in images:
                if row.shape == ref.shape[1:] and any(torch.equal(row, r) for r in ref):
                    layouts[name] = (which, "nchw" if images.is_contiguous() else "channels_last")
    reference = ("reference", "channels_last" if amp and cl_head else "nchw")
    fast = ("folded", "channels_last")
    expected = {n: reference if exact in (n, "all") else fast for n in ("query", "support")}
    if masking != "fm":
        expected["im"] = reference if exact in ("im", "all") else fast
    assert layouts == expected


def test_folded_backbone_is_rebuilt_when_the_backbone_changes():
    torch.manual_seed(1)
    model = build_model("hsnet", "resnet50", "hm").eval()
    folded = model.fast_path.folded_backbone(model.backbone)
    assert model.fast_path.folded_backbone(model.backbone) is folded  # cached
    assert len(model.state_dict()) == len(model.backbone.state_dict()) + len(model.head.state_dict())
    state = {k: v + 0.01 if k.endswith("running_mean") else v for k, v in model.backbone.state_dict().items()}
    model.backbone.load_state_dict(state)
    rebuilt = model.fast_path.folded_backbone(model.backbone)
    assert rebuilt is not folded
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = model.backbone(x)
        got = rebuilt(x.contiguous(memory_format=torch.channels_last))
    for e, g in zip(expected, got):
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-4)


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


def test_foreground_equals_argmax_with_ties_and_nan():
    nan = float("nan")
    pairs = [(0.0, 1.0), (1.0, 0.0), (0.5, 0.5), (nan, 1.0), (1.0, nan), (nan, nan), (-1.0, -1.0 - 1e-7)]
    logits = torch.tensor(pairs).t().reshape(1, 2, 1, len(pairs))
    assert foreground(logits).tolist() == [[[1, 0, 0, 0, 1, 0, 0]]]
    random = torch.randn(3, 2, 17, 9)
    random[0, :, 0, 0] = 0.25  # a tie
    assert torch.equal(foreground(random), random.argmax(dim=1))
    assert torch.equal(foreground(logits), logits.argmax(dim=1))


@pytest.mark.parametrize("masking", ["hm", "fm"])
def test_fast_fast_path_equals_the_plain_modules_composed_step_by_step(masking):
    """The inference path (BatchNorm-folded channels-last passes, query-major correlation,
    channels-last 4D layers, dense small-plane convs) against the same modules run plainly:
    NCHW backbone passes, masking, plain correlation, each head block as an nn.Sequential."""
    from hmfss.correlation import hypercorrelation
    from hmfss.heads.volume import resize_query_dims
    from hmfss.heads.hsnet import decode
    from hmfss.masking import input_mask, mask_support_features

    torch.manual_seed(7)
    model = build_model("hsnet", "resnet50", masking).eval()
    for norm in model.backbone.modules():
        if isinstance(norm, torch.nn.BatchNorm2d):  # non-trivial statistics, as in trained weights
            norm.running_mean.normal_(0, 0.1)
            norm.running_var.uniform_(0.5, 1.5)
            norm.weight.data.uniform_(0.5, 1.5)
            norm.bias.data.normal_(0, 0.1)
    q, s, m = make_episode(batch=1, shots=1, size=96, seed=8)
    h = model.head
    with torch.no_grad():
        got = model(q, s[:, 0], m[:, 0])
        feats, im = model.backbone(s[:, 0]), model.backbone(input_mask(s[:, 0], m[:, 0]))
        masked = mask_support_features(masking, feats, im, m[:, 0])
        corr = hypercorrelation(model.backbone(q), masked, model.levels)
        sqz4, sqz3, sqz2 = h.encoder_layer4(corr[0]), h.encoder_layer3(corr[1]), h.encoder_layer2(corr[2])
        mix43 = h.encoder_layer4to3(resize_query_dims(sqz4, sqz3.shape[2:4]) + sqz3)
        mix432 = h.encoder_layer3to2(resize_query_dims(mix43, sqz2.shape[2:4]) + sqz2)
        lowres = decode(h.decoder1, h.decoder2, mix432.mean(dim=(-2, -1)))
        expected = torch.nn.functional.interpolate(lowres, (96, 96), mode="bilinear", align_corners=True)
    scale = float(expected.abs().max())
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4 * scale)
    margin = (expected[:, 1] - expected[:, 0]).abs()
    differ = foreground(got) != foreground(expected)
    assert not differ[margin > 1e-3 * scale].any()  # masks agree wherever the logits are not tied


def _assert_same_prediction(got, expected):
    """Logits equal to float rounding; masks equal wherever the two logits are not tied."""
    scale = float(expected.abs().max())
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4 * scale)
    margin = (expected[:, 1] - expected[:, 0]).abs()
    differ = foreground(got) != foreground(expected)
    assert not differ[margin > 1e-3 * scale].any()


# VAT (slow on a CPU) with HM only: it declares no fast inputs, so its two paths differ only in
# how the backbone batches go (and every masking takes the same route through its head)
# HSNet takes every fast input, so every masking; ASNet and VAT mask support features their own
# way and take no fast input (only the backbone grouping and shots per pass differ): their
# published maskings
CASES = [("hsnet", m) for m in STRATEGIES] + [("asnet", "none"), ("asnet", "hm"), ("vat", "hm")]
SIZES = {"hsnet": 64, "asnet": 257, "vat": 64}


@pytest.mark.slow
@pytest.mark.parametrize("arch,masking", CASES)
def test_cpu_fast_path_equals_the_reference_path(arch, masking):
    """The default path on the CPU (folded channels-last passes, in-place masking, query-major
    correlation, one shot per pass) against ``model.path = ReferencePath()``."""
    model = build_model(arch, "resnet50", masking).eval()
    init_by_name(model)  # non-trivial BatchNorm statistics, so that folding changes the arithmetic
    q, s, m = make_episode(batch=1, shots=1 if arch == "vat" else 2, size=SIZES[arch], seed=9)
    seen = _head_inputs_instead_of_logits(model) if arch in HEAD_INPUTS_ONLY else None

    def logits():
        with torch.no_grad():
            return model.lowres_logits(model.encode_query(q), model.encode_support(s, m)).flatten(0, 1)

    assert model.execution_path() is model.fast_path
    fast = logits()
    model.path = ReferencePath()  # the one-line switch
    reference = logits()
    if seen is None:
        _assert_same_prediction(fast, reference)
        return
    (fast_inputs, reference_inputs) = seen
    assert len(fast_inputs) == len(reference_inputs) > 0
    for got, expected in zip(fast_inputs, reference_inputs):
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4 * float(expected.abs().max()))


# heads whose forward pass takes seconds and reads no fast input: the same code runs on both
# paths, so the test compares what each path gives it (correlation pyramid and query maps)
HEAD_INPUTS_ONLY = {"vat"}


def _head_inputs_instead_of_logits(model) -> tuple[list, list]:
    """Replace the head's forward pass by one that records its tensor inputs (first call into
    the first list, second call into the second) and returns zero logits."""
    calls: tuple[list, list] = ([], [])
    count = iter(calls)

    def record(corr, *, query_feats, **context):
        next(count).extend(t.clone() for t in [*corr, *query_feats] if t.numel())
        return corr[0].new_zeros(corr[0].shape[0], 2, 8, 8)

    model.head.forward = record
    return calls


def test_the_path_is_chosen_in_one_place():
    model = build_model("hsnet", "efficientnet-lite0", "hm")
    assert isinstance(model.fast_path, ExecutionPath) and isinstance(ReferencePath(), ExecutionPath)
    assert model.execution_path() is model.fast_path
    model.path = forced = ReferencePath()
    assert model.execution_path() is forced
    model.exact_selection = False
    assert model.fast_path.exact_selection is False


def test_a_copied_model_keeps_its_settings_and_rebuilds_its_caches():
    import copy

    model = build_model("hsnet", "efficientnet-lite0", "hm").eval()
    model.exact_selection = False
    q, s, m = make_episode(batch=1, shots=1, size=32, seed=10)
    with torch.no_grad():
        expected = model(q, s[:, 0], m[:, 0])  # fills the folded-backbone and buffer caches
    twin = copy.deepcopy(model)
    assert twin.exact_selection is False and twin.fast_path is not model.fast_path
    with torch.no_grad():
        assert torch.equal(twin(q, s[:, 0], m[:, 0]), expected)


def test_fast_path_keeps_one_pass_and_all_shots_off_the_cpu():
    """On accelerators the fast path runs one NCHW backbone pass for all images and leaves the
    shots per pass to the head (checked with a device-less stand-in: meta tensors)."""
    from hmfss.fast.features import grouped_passes
    from hmfss.fast.masking import mask_window

    model = build_model("hsnet", "efficientnet-lite0", "hm")
    calls = []
    net = lambda x: calls.append(x.shape[0]) or [x]  # noqa: E731 (records each pass's batch)
    parts = grouped_passes(net, torch.empty(3, 3, 400, 400, device="meta"), torch.contiguous_format, [1, 2])
    assert calls == [3] and [p[0].shape[0] for p in parts] == [1, 2]
    calls.clear()
    grouped_passes(net, torch.empty(3, 3, 400, 400), torch.contiguous_format, [3])
    assert calls == [1, 1, 1]  # CPU: one 400x400 image per pass
    assert model.fast_path.shots_per_pass(model.head, torch.device("meta")) is None
    assert model.fast_path.shots_per_pass(model.head, torch.device("cpu")) == 1
    assert mask_window(torch.zeros(1, 1, 4, 4, device="meta")) == (slice(None), slice(None))


def test_fast_path_runs_on_the_meta_device():
    """Shapes only, no data (a device type without autocast): HSNet's query-major correlation
    must not ask for the meta device's autocast state."""
    with torch.device("meta"):
        model = build_model("hsnet", "resnet50", "hm").eval()
        images, masks = torch.empty(2, 3, 64, 64), torch.empty(2, 64, 64)
        with torch.no_grad():
            logits = model(images, images, masks)
    assert model.execution_path() is model.fast_path
    assert logits.shape == (2, 2, 64, 64) and logits.device.type == "meta"


def test_training_sends_each_layout_through_the_backbone_in_fuller_passes(monkeypatch):
    """On the CPU an eval-mode model passes 400x400 pixels at a time, a training one 8x as many
    (scaled down here to 32 px images): HM's 3 supports go through the exact NCHW pass, the 3
    queries and 3 masked supports through the channels-last copy."""
    import hmfss.fast.path as fast_path
    from hmfss.fast.features import grouped_passes

    monkeypatch.setattr(fast_path, "CPU_PIXELS_PER_PASS", 32 * 32)
    monkeypatch.setattr(fast_path, "CPU_TRAINING_PIXELS_PER_PASS", 8 * 32 * 32)
    model = build_model("hsnet", "efficientnet-lite0", "hm")
    q, s, m = make_episode(batch=3, shots=1, size=32, seed=11)
    passes: list[tuple[str, int]] = []

    def record(name):
        return lambda module, args: passes.append((name, args[0].shape[0]))

    model.fast_path.folded_backbone(model.backbone).register_forward_pre_hook(record("channels-last"))
    model.backbone.register_forward_pre_hook(record("nchw"))  # after the copy is made
    for mode, expected in (("eval", [("channels-last", 1)] * 6 + [("nchw", 1)] * 3),
                           ("train", [("channels-last", 6), ("nchw", 3)])):
        getattr(model, mode)()
        passes.clear()
        with torch.no_grad():
            model(q, s[:, 0], m[:, 0])
        assert sorted(passes) == expected, mode
    # the group changes channels-last maps by rounding at most (none with AVX-512; with AVX2 only,
    # Lite0's by ~2e-7 relative); the training step's exact NCHW pass takes the batch's supports
    # whole, as the original's step does
    net = model.fast_path.folded_backbone(model.backbone)
    with torch.no_grad():
        one, all_ = (grouped_passes(net, torch.cat([q, s[:, 0]]), torch.channels_last, [6], pixels)[0]
                     for pixels in (32 * 32, 6 * 32 * 32))
    for a, b in zip(one, all_, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5 * float(b.abs().max()))


# ---- the public API refuses invalid inputs with an HmfssError naming the argument ---------------

Q, S, M = make_episode(batch=1, shots=2, size=32, seed=7)


def _with(**changes):
    """(query_img, support_imgs, support_masks) of a good 2-shot episode, with some replaced."""
    args = {"query_img": Q, "support_imgs": S, "support_masks": M}
    return {**args, **changes}


BAD_EPISODES = {
    "0/255 masks": (_with(support_masks=M * 255),
                    r"support_masks must be binary \(only 0 and 1\), got values in \[0, 255\]; "
                    r"divide 0/255 masks by 255"),
    "negative mask": (_with(support_masks=-M), r"support_masks must be binary .* got values in \[-1, 0\]$"),
    "soft mask": (_with(support_masks=M * 0.7), r"support_masks must be binary .* got values in \[0, 0.7\]$"),
    "empty mask": (_with(support_masks=torch.cat([M[:, :1], torch.zeros_like(M[:, 1:])], 1)),
                   r"support_masks\[0, 1\] is empty \(no foreground pixel\)"),
    "NaN mask": (_with(support_masks=M * float("nan")), "support_masks holds NaN or infinite values"),
    "uint8 query": (_with(query_img=(Q * 255).clamp(0, 255).to(torch.uint8)),
                    r"query_img must be a float tensor \(normalised images\), got torch.uint8"),
    "uint8 supports": (_with(support_imgs=torch.zeros(1, 2, 3, 32, 32, dtype=torch.uint8)),
                       "support_imgs must be a float tensor .* got torch.uint8"),
    "NaN query": (_with(query_img=Q.clone().index_fill_(3, torch.tensor([5]), float("nan"))),
                  "query_img holds NaN or infinite values"),
    "inf supports": (_with(support_imgs=S.clone().fill_(float("inf"))), "support_imgs holds NaN or infinite values"),
    "K = 0": (_with(support_imgs=S[:, :0], support_masks=M[:, :0]),
              r"support_imgs must hold at least one shot \(K >= 1\), got shape \(1, 0, 3, 32, 32\)"),
    "K = 0 masks only": (_with(support_masks=M[:, :0]), r"support_masks must hold at least one shot \(K >= 1\)"),
    "3D query": (_with(query_img=Q[0]), r"query_img must have shape \(B, 3, H, W\), got \(3, 32, 32\)"),
    "4D supports": (_with(support_imgs=S[:, 0]),
                    r"support_imgs must have shape \(B, K, 3, H, W\), got \(1, 3, 32, 32\)"),
    "3D masks": (_with(support_masks=M[:, 0]), r"support_masks must have shape \(B, K, H, W\), got \(1, 32, 32\)"),
    "masks of another size": (_with(support_masks=M[..., :16, :16]),
                              r"support_masks \(1, 2, 16, 16\) do not match support_imgs \(1, 2, 3, 32, 32\): "
                              r"expected \(1, 2, 32, 32\)"),
    "fewer masks than shots": (_with(support_masks=M[:, :1]), r"support_masks \(1, 1, 32, 32\) do not match"),
    "query batch differs": (_with(query_img=Q.expand(2, -1, -1, -1)),
                            r"hold 1 episode\(s\) but query_img \(2, 3, 32, 32\)"),
    "query size differs": (_with(query_img=Q[..., :16, :16]),
                           r"support_imgs .* and query_img \(1, 3, 16, 16\) differ in size"),
    "a list, not a tensor": (_with(support_masks=M.tolist()), "support_masks must be a torch.Tensor, got list"),
    "tensors on another device": (_with(query_img=Q.to("meta")), "query_img is on meta but the model is on cpu"),
}


@pytest.mark.parametrize("case", sorted(BAD_EPISODES))
def test_predict_mask_refuses_bad_inputs(model, case):
    args, message = BAD_EPISODES[case]
    with pytest.raises(HmfssError, match=message):
        model.predict_mask(**args)


@pytest.mark.parametrize("case", ["0/255 masks", "soft mask", "empty mask", "uint8 supports", "K = 0",
                                  "masks of another size", "a list, not a tensor"])
def test_encode_support_refuses_bad_supports(model, case):
    args, message = BAD_EPISODES[case]
    with pytest.raises(HmfssError, match=message):
        model.encode_support(args["support_imgs"], args["support_masks"])


def test_empty_support_masks_only_where_allowed(model):
    empty = torch.zeros_like(M)
    with pytest.raises(HmfssError, match=r"support_masks\[0, 0\] is empty"):
        model.predict_mask(Q, S, empty)
    with torch.no_grad():
        pred = model.predict_mask(Q, S, empty, allow_empty_support=True)
        state = model.encode_support(S, empty, allow_empty_support=True)
        assert torch.equal(model.segment(Q, state), pred)
    assert pred.shape == (1, 32, 32)


def test_forward_checks_its_one_shot_episode_and_allows_an_empty_mask(model):
    with pytest.raises(HmfssError, match=r"support_mask must be binary .* \[0, 255\]; divide 0/255 masks by 255"):
        model(Q, S[:, 0], M[:, 0] * 255)
    with pytest.raises(HmfssError, match=r"support_mask must have shape \(B, H, W\), got \(1, 2, 32, 32\)"):
        model(Q, S[:, 0], M)
    with pytest.raises(HmfssError, match=r"support_img must have shape \(B, 3, H, W\), got \(1, 2, 3, 32, 32\)"):
        model(Q, S, M[:, 0])
    with pytest.raises(HmfssError, match="query_img holds NaN"):
        model(Q * float("nan"), S[:, 0], M[:, 0])
    with pytest.raises(HmfssError, match=r"support_mask \(1, 16, 16\) do not match support_img \(1, 3, 32, 32\)"):
        model(Q, S[:, 0], M[:, 0, :16, :16])
    with torch.no_grad():  # training episodes may hold an empty support mask; bool and int masks are binary too
        assert model(Q, S[:, 0], torch.zeros_like(M[:, 0])).shape == (1, 2, 32, 32)
        as_float = model(Q, S[:, 0], M[:, 0])
        assert torch.equal(model(Q, S[:, 0], M[:, 0].bool()), as_float)
        assert torch.equal(model(Q, S[:, 0], M[:, 0].long()), as_float)


def test_segment_and_encode_query_check_the_query_and_the_state(model):
    with torch.no_grad():
        state = model.encode_support(S.expand(2, -1, -1, -1, -1), M.expand(2, -1, -1, -1))
    with pytest.raises(HmfssError, match=r"state holds 2 support set\(s\) but query_img \(3, 3, 32, 32\) holds 3"):
        model.segment(Q.expand(3, -1, -1, -1), state)
    with pytest.raises(HmfssError, match="state must be a SupportState .*, got tuple"):
        model.segment(Q, (S, M))
    with pytest.raises(HmfssError, match="query_img must be a float tensor"):
        model.segment(Q.to(torch.uint8), state)
    with pytest.raises(HmfssError, match="query_img holds NaN"):
        model.encode_query(Q * float("inf") * 0)
    with pytest.raises(HmfssError, match=r"output_size must hold one \(h, w\) per query: expected 1, got 2"):
        model.predict_mask(Q, S, M, output_size=[(8, 8), (9, 9)])


@pytest.mark.parametrize("img_size", [-1, 0, 100000, 2.5, "400"])
def test_build_model_refuses_bad_img_size(img_size):
    with pytest.raises(HmfssError, match="img_size must be"):
        build_model("hsnet", "efficientnet-lite0", img_size=img_size)


def test_values_are_checked_on_the_cpu_only():
    """Off the CPU only shapes and dtypes are checked: reading a value back would wait for the device."""
    nan = torch.full((1, 3, 4, 4), float("nan"), device="meta")
    assert check_images(nan) is nan
    assert check_masks(torch.empty(1, 1, 4, 4, device="meta")) is not None
    with pytest.raises(HmfssError, match="must be a float tensor"):
        check_images(torch.empty(1, 3, 4, 4, dtype=torch.uint8, device="meta"))


def test_checkpoint_loaders_name_their_bad_arguments(model, tmp_path):
    with pytest.raises(HmfssError, match="model must be a FewShotSegmenter .*, got str"):
        load_checkpoint(str(tmp_path / "x.pt"), model)
    with pytest.raises(HmfssError, match="device 'meta' holds no data"):
        load_model(tmp_path / "x.pt", device="meta")
    with pytest.raises(HmfssError, match=r"img_size \(--img-size\) must be between 1 and 1024, got -1"):
        load_model(tmp_path / "x.pt", "hsnet", "resnet50", img_size=-1)


def test_a_model_run_under_inference_mode_runs_again_under_no_grad():
    """The fast path's reusable correlation memory must not tie the model to the first
    call's grad mode (it did: RuntimeError on the no_grad call)."""
    model = build_model("hsnet", "efficientnet-lite0", "hm").eval()
    q, s, m = make_episode(size=48, shots=2)
    with torch.inference_mode():
        first = model.predict_mask(q, s, m)
    with torch.no_grad():
        assert torch.equal(model.predict_mask(q, s, m), first)


def test_images_of_another_float_dtype_are_cast_to_the_model_s():
    """float64 or float16 images (and a mix) give the mask of the same images in float32."""
    model = build_model("hsnet", "efficientnet-lite0", "hm").eval()
    q, s, m = make_episode(size=48, shots=2)
    q16, s16 = q.half(), s.half()
    with torch.no_grad():
        expected = model.predict_mask(q, s, m)
        assert torch.equal(model.predict_mask(q.double(), s.double(), m.double()), expected)
        assert torch.equal(model.predict_mask(q, s.double(), m), expected)
        assert torch.equal(model.predict_mask(q16, s16, m), model.predict_mask(q16.float(), s16.float(), m))
        assert torch.equal(model(q.double(), s[:, 0], m[:, 0]), model(q, s[:, 0], m[:, 0]))


@pytest.mark.parametrize("size, message", [
    ((0, 5), r"output_size must be \(height, width\), positive integers with at most 2147483647 pixels, "
             r"got \(0, 5\)"),
    ((-1, 5), "got \\(-1, 5\\)"),
    ((10**6, 10**6), "got \\(1000000, 1000000\\)"),
    ((2**16, 2**15), "got \\(65536, 32768\\)"),  # 2**31 pixels: one more than 32-bit indexing holds
    ((10.5, 5), "got \\(10.5, 5\\)"),
    ((True, 5), "got \\(True, 5\\)"),
    ("ab", "got 'ab'"),
    ((1, 2, 3), "got \\(1, 2, 3\\)"),
    ([(5, 5), (6, 6)], r"one \(h, w\) per query: expected 1, got 2"),
    ([[5, 0]], r"output_size\[0\] must be \(height, width\)"),
])
def test_bad_output_sizes_are_refused_before_any_work(size, message, monkeypatch):
    model = build_model("hsnet", "efficientnet-lite0", "hm").eval()
    q, s, m = make_episode(size=32, shots=1)
    monkeypatch.setattr(model, "_extract", lambda *args: pytest.fail("ran the backbone"))
    with torch.no_grad(), pytest.raises(HmfssError, match=message):
        model.predict_mask(q, s, m, output_size=size)

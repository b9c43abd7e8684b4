"""The contract every model must keep: one parametrised matrix over every registered head
(``hmfss.heads.HEADS``) x backbone (``hmfss.backbones.BACKBONES``) x masking strategy
(``hmfss.masking.STRATEGIES``). Registering a head, backbone or strategy adds it here.

Rules (what runs where, to keep the module well under a minute on a 2-core CPU):

* ``REFUSED`` lists the (head, backbone) pairs the library refuses: building one must raise
  HmfssError. Every other combination must build.
* Every valid combination runs the 1-shot forward and gets (B, 2, S, S) logits: heads in
  ``SLOW`` (seconds per head pass on a CPU whatever the image size) on the meta device, which
  runs every line with shapes only; the other heads on real tensors. On meta a head sees the
  same input shapes whatever the masking, so for a slow head the reference masking runs the
  whole forward and every other masking runs up to the head, whose inputs must have the
  reference masking's shapes (a pass of the head on meta costs about a second).
* The numeric checks (K-shot ``predict_mask``, ``encode_support`` + ``segment`` against it,
  checkpoint round trip) run on real tensors. Fast heads: every backbone with
  ``REFERENCE_MASKING`` and every masking with the head's first valid backbone. Heads in
  ``SLOW``: that first backbone with ``REFERENCE_MASKING`` only, and their checkpoint round
  trip compared module by module and tensor by tensor rather than by two forward passes;
  heads in ``ROUND_TRIP_ONLY`` (VAT: several seconds per shot) only that round trip, their
  K-shot bookkeeping being checked on meta tensors in their own test module.
  ``HMFSS_FULL_CONTRACT=1`` runs every check on every valid combination (minutes).
* Learnable parameter counts are compared where the original models' numbers are known
  (``KNOWN_PARAMETERS``; built on the meta device, no weights are computed).
"""

from __future__ import annotations

import os
from functools import cached_property

import pytest
import torch

from helpers import assert_same_tensors, make_episode, on_meta
from hmfss import build_model, learnable_parameters, load_model, save_checkpoint
from hmfss.backbones import BACKBONES
from hmfss.errors import HmfssError
from hmfss.heads import HEADS
from hmfss.masking import STRATEGIES

SLOW = {"vat", "asnet"}
ROUND_TRIP_ONLY = {"vat"}
REFUSED = {("vat", "vgg16")}  # VAT needs the extra shallow map only the ResNets and Lite0 give
REFERENCE_MASKING = "hm"
IMAGE_SIZE = {"asnet": 272}  # ASNet's smallest input on every backbone (model.min_image_size()); others: 32
SHOTS = 2
FULL = os.environ.get("HMFSS_FULL_CONTRACT") == "1"

# (head, backbone, VAT benchmark option) -> learnable parameters of the original model
# (VAT: the original's count minus the modules it builds but never uses)
KNOWN_PARAMETERS = {
    ("hsnet", "resnet50", None): 2_573_794,
    ("hsnet", "resnet101", None): 2_587_394,
    ("hsnet", "vgg16", None): 2_570_018,
    ("vat", "resnet50", "pascal"): 3_114_586,
    ("vat", "resnet101", "pascal"): 3_134_170,
    ("vat", "resnet50", "coco"): 2_923_706,
    ("vat", "resnet50", "fss"): 3_679_642,
    ("vat", "resnet101", "fss"): 3_699_226,
    ("asnet", "resnet50", None): 1_320_610,
    ("asnet", "resnet101", None): 1_354_610,
    ("asnet", "vgg16", None): 1_310_146,
}


def valid(arch: str, backbone: str) -> bool:
    return (arch, backbone) not in REFUSED


def reference_backbone(arch: str) -> str:
    return next(b for b in BACKBONES if valid(arch, b))


def image_size(arch: str) -> int:
    return IMAGE_SIZE.get(arch, 32)


def checked_numerically(arch: str, backbone: str, masking: str) -> bool:
    """Whether the numeric checks run on this combination (see the module docstring)."""
    if FULL:
        return True
    on_reference = (backbone == reference_backbone(arch), masking == REFERENCE_MASKING)
    return all(on_reference) if arch in SLOW else any(on_reference)


VALID = [(a, b, m) for a in HEADS for b in BACKBONES for m in STRATEGIES if valid(a, b)]
NUMERIC = [combo for combo in VALID if checked_numerically(*combo)]


def combo_id(combo) -> str:
    return "/".join(combo)


def test_tables_name_registered_things():
    assert {a for a, _ in REFUSED} <= set(HEADS) and {b for _, b in REFUSED} <= set(BACKBONES)
    assert set(IMAGE_SIZE) <= set(HEADS) and ROUND_TRIP_ONLY <= SLOW <= set(HEADS)
    assert REFERENCE_MASKING in STRATEGIES
    assert {(a, b) for a, b, _ in KNOWN_PARAMETERS} <= {(a, b) for a, b, _ in VALID}


@pytest.mark.parametrize("arch,backbone", sorted(REFUSED))
def test_refused_combinations_raise(arch, backbone):
    with torch.device("meta"), pytest.raises(HmfssError, match=backbone):
        build_model(arch, backbone, REFERENCE_MASKING)


class BeforeHead(Exception):
    """Raised by :func:`head_input_shapes`' hook: the head's inputs are known, it need not run."""


def head_input_shapes(model, episode, run_head: bool):
    """Shapes of every tensor the head receives in ``model(*episode)``, and the logits' shape
    (None when ``run_head`` is False: the forward stops before the head)."""
    seen = []

    def shapes(value):
        if isinstance(value, torch.Tensor):
            return tuple(value.shape)
        return [shapes(v) for v in value] if isinstance(value, (list, tuple)) else value

    def record(module, args, kwargs):
        seen.append((shapes(args), {name: shapes(v) for name, v in kwargs.items()}))
        if not run_head:
            raise BeforeHead

    handle = model.head.register_forward_pre_hook(record, with_kwargs=True)
    try:
        with torch.no_grad():
            logits = model(*episode)
    except BeforeHead:
        logits = None
    finally:
        handle.remove()
    return seen, None if logits is None else tuple(logits.shape)


def meta_episode(size: int):
    return torch.empty(1, 3, size, size), torch.empty(1, 3, size, size), torch.empty(1, size, size)


_REFERENCE_HEAD_INPUTS: dict[tuple[str, str], list] = {}


def reference_head_inputs(arch: str, backbone: str) -> list:
    """Head input shapes of the reference masking's whole forward on meta tensors, which must
    give (1, 2, S, S) logits; once per process and (head, backbone)."""
    if (arch, backbone) not in _REFERENCE_HEAD_INPUTS:
        size = image_size(arch)
        with on_meta():
            model = build_model(arch, backbone, REFERENCE_MASKING).eval()
            seen, shape = head_input_shapes(model, meta_episode(size), run_head=True)
        assert shape == (1, 2, size, size)
        _REFERENCE_HEAD_INPUTS[arch, backbone] = seen
    return _REFERENCE_HEAD_INPUTS[arch, backbone]


@pytest.mark.parametrize("combo", VALID, ids=combo_id)
def test_builds_and_forward_gives_two_class_logits(combo):
    arch, backbone, masking = combo
    size = image_size(arch)
    if arch in SLOW:
        expected = reference_head_inputs(arch, backbone)
        with on_meta():
            model = build_model(arch, backbone, masking).eval()
            seen, _ = head_input_shapes(model, meta_episode(size), run_head=False)
        assert (model.config.arch, model.config.backbone, model.config.masking) == combo
        assert seen == expected and len(seen) == 1
        return
    torch.manual_seed(0)
    model = build_model(arch, backbone, masking).eval()
    query, supports, masks = make_episode(batch=1, shots=1, size=size)
    assert (model.config.arch, model.config.backbone, model.config.masking) == combo
    with torch.no_grad():
        logits = model(query, supports[:, 0], masks[:, 0])
    assert logits.shape == (1, 2, size, size)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("arch,backbone,variant", sorted(KNOWN_PARAMETERS, key=str))
def test_learnable_parameters_equal_the_originals(arch, backbone, variant):
    options = {"benchmark": variant} if variant else {}  # VAT's decoder differs per benchmark
    with torch.device("meta"):
        model = build_model(arch, backbone, REFERENCE_MASKING, **options)
    assert learnable_parameters(model) == KNOWN_PARAMETERS[arch, backbone, variant]


class Case:
    """One combination on real tensors, with each expensive result computed once."""

    def __init__(self, combo):
        self.combo = combo
        torch.manual_seed(0)
        self.model = build_model(*combo).eval()
        self.query, self.supports, self.masks = make_episode(batch=1, shots=SHOTS, size=image_size(combo[0]))

    @cached_property
    def logits(self) -> torch.Tensor:
        with torch.no_grad():
            return self.model(self.query, self.supports[:, 0], self.masks[:, 0])

    @cached_property
    def predicted(self) -> torch.Tensor:
        with torch.no_grad():
            return self.model.predict_mask(self.query, self.supports, self.masks)


@pytest.fixture(scope="module", params=NUMERIC, ids=combo_id)
def case(request):
    # module scope: pytest runs every numeric test of one combination before building the next
    return Case(request.param)


def skip_if_round_trip_only(case) -> None:
    if case.combo[0] in ROUND_TRIP_ONLY and not FULL:
        pytest.skip(f"{case.combo[0]}: round trip only (HMFSS_FULL_CONTRACT=1 runs this check)")


def test_k_shot_predict_mask_is_binary_at_the_query_size(case):
    skip_if_round_trip_only(case)
    size = image_size(case.combo[0])
    assert case.predicted.shape == (1, size, size)
    assert set(case.predicted.unique().tolist()) <= {0, 1}


def test_encode_support_then_segment_equals_predict_mask(case):
    skip_if_round_trip_only(case)
    with torch.no_grad():
        state = case.model.encode_support(case.supports, case.masks)
        assert state.shots == SHOTS
        assert torch.equal(case.model.segment(case.query, state), case.predicted)


def test_checkpoint_round_trip_gives_equal_logits(case, tmp_path):
    path = save_checkpoint(case.model, tmp_path / "model.pt")
    loaded = load_model(path)
    assert loaded.config == case.model.config
    if case.combo[0] in SLOW and not FULL:
        # a forward pass of this head costs seconds: the same modules in the same mode with
        # equal tensors (persistent or not) give equal logits
        assert [type(m) for m in loaded.modules()] == [type(m) for m in case.model.modules()]
        assert not loaded.training and not case.model.training
        assert_same_tensors(dict(loaded.named_parameters()), dict(case.model.named_parameters()))
        assert_same_tensors(dict(loaded.named_buffers()), dict(case.model.named_buffers()))
        return
    with torch.no_grad():
        logits = loaded(case.query, case.supports[:, 0], case.masks[:, 0])
    assert torch.equal(logits, case.logits)

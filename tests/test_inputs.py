"""Validation helpers of the public API: each bad argument gives an HmfssError naming it."""

import os
from pathlib import Path

import pytest
import torch

from hmfss import build_model, encode_classes, load_model, save_checkpoint, segment_classes, vote
from hmfss.errors import HmfssError
from hmfss.inputs import (MAX_IMG_SIZE, check_device, check_images, check_img_size, check_masks, check_min,
                          check_output_dir, check_output_file, check_support_set)


def masks(b=1, k=1, s=8):
    m = torch.zeros(b, k, s, s)
    m[..., 2:5, 2:5] = 1
    return m


def test_good_inputs_pass_unchanged():
    images = torch.randn(2, 3, 8, 8)
    assert check_images(images) is images
    m = masks(2, 3)
    assert check_masks(m) is m
    assert check_masks(m.bool()) is not None and check_masks(m.to(torch.uint8)) is not None
    check_support_set(torch.randn(2, 3, 3, 8, 8), m, query=images)


@pytest.mark.parametrize("images, message", [
    ([[1.0]], "images must be a torch.Tensor, got list"),
    (torch.randn(3, 8, 8), r"images must have shape \(B, 3, H, W\), got \(3, 8, 8\)"),
    (torch.randn(1, 4, 8, 8), r"got \(1, 4, 8, 8\)"),
    (torch.randn(0, 3, 8, 8), "must not be empty"),
    (torch.zeros(1, 3, 8, 8, dtype=torch.uint8), "must be a float tensor .* got torch.uint8"),
    (torch.full((1, 3, 8, 8), float("nan")), "images holds NaN or infinite values"),
    (torch.full((1, 3, 8, 8), float("inf")), "images holds NaN or infinite values"),
])
def test_bad_images(images, message):
    with pytest.raises(HmfssError, match=message):
        check_images(images)


@pytest.mark.parametrize("value, message", [
    (masks() * 255, r"binary \(only 0 and 1\), got values in \[0, 255\]; divide 0/255 masks by 255"),
    (masks() * 0.5, r"got values in \[0, 0.5\]$"),
    (-masks(), r"got values in \[-1, 0\]"),
    (torch.zeros(1, 1, 8, 8), r"support_masks\[0, 0\] is empty"),
    (torch.zeros(1, 0, 8, 8), r"at least one shot \(K >= 1\)"),
    (torch.ones(1, 8, 8), r"\(B, K, H, W\), got \(1, 8, 8\)"),
    (masks() * float("nan"), "NaN"),
])
def test_bad_masks(value, message):
    with pytest.raises(HmfssError, match=message):
        check_masks(value)


def test_empty_masks_pass_when_allowed():
    empty = torch.zeros(1, 2, 8, 8)
    assert check_masks(empty, allow_empty=True) is empty
    check_support_set(torch.randn(1, 2, 3, 8, 8), empty, allow_empty=True)
    with pytest.raises(HmfssError, match=r"support_masks\[0, 0\] is empty"):
        check_support_set(torch.randn(1, 2, 3, 8, 8), empty)


def test_support_set_shapes_must_match():
    with pytest.raises(HmfssError, match=r"support_masks \(1, 2, 8, 8\) do not match support_imgs \(1, 1, 3, 8, 8\)"):
        check_support_set(torch.randn(1, 1, 3, 8, 8), masks(1, 2))
    with pytest.raises(HmfssError, match="hold 1 episode.* query_img .* holds 2"):
        check_support_set(torch.randn(1, 1, 3, 8, 8), masks(), query=torch.randn(2, 3, 8, 8))
    with pytest.raises(HmfssError, match="differ in size"):
        check_support_set(torch.randn(1, 1, 3, 8, 8), masks(), query=torch.randn(1, 3, 9, 8))


@pytest.mark.parametrize("value", [-5, 0, MAX_IMG_SIZE + 1, 100000, 2.5, "400", True])
def test_bad_img_size(value):
    with pytest.raises(HmfssError, match="img_size must be"):
        check_img_size(value)


def test_img_size_bounds():
    assert check_img_size(1) == 1 and check_img_size(MAX_IMG_SIZE) == MAX_IMG_SIZE
    assert check_img_size(None, optional=True) is None
    with pytest.raises(HmfssError):
        check_img_size(None)
    assert check_min(None, "--threads") is None
    with pytest.raises(HmfssError, match="--threads must be at least 1, got -1"):
        check_min(-1, "--threads")


@pytest.mark.parametrize("name, message", [
    ("meta", "holds no data"),
    ("nonsense", "unknown device"),
    ("cuda:99" if torch.cuda.is_available() else "cuda", "CUDA is not available|only"),
])
def test_bad_device(name, message):
    with pytest.raises(HmfssError, match=message):
        check_device(name)


@pytest.mark.skipif(torch.backends.mps.is_available(), reason="this build has MPS")
def test_mps_unavailable_is_refused():
    with pytest.raises(HmfssError, match="'mps' requested but MPS is not available"):
        check_device("mps")


def test_cpu_and_auto_devices_pass():
    assert check_device("cpu") == "cpu" and check_device("auto") == "auto"


def test_output_paths(tmp_path):
    (tmp_path / "f").write_text("x")
    (tmp_path / "d").mkdir()
    assert check_output_file(tmp_path / "new" / "deeper" / "r.json", "--json") is not None
    assert check_output_dir(tmp_path / "new" / "out", "--out") is not None
    with pytest.raises(HmfssError, match="--json .*/d is a folder; give a file name"):
        check_output_file(tmp_path / "d", "--json")
    with pytest.raises(HmfssError, match="--out .*/f is a file; give a folder"):
        check_output_dir(tmp_path / "f", "--out")
    with pytest.raises(HmfssError, match="--out .*/f/sub: .*/f is a file, not a folder"):
        check_output_dir(tmp_path / "f" / "sub", "--out")


def test_output_paths_that_cannot_be_written_are_refused_before_any_work(tmp_path):
    with pytest.raises(HmfssError, match="--out is empty; give a path"):
        check_output_dir("", "--out")
    with pytest.raises(HmfssError, match="--json is empty; give a path"):
        check_output_file(" ", "--json")
    with pytest.raises(HmfssError, match=f"the name {'a' * 40}... is longer than 255 bytes"):
        check_output_file(tmp_path / ("a" * 256 + ".json"), "--json")
    assert check_output_file(tmp_path / ("a" * 250 + ".json"), "--json") is not None  # 255 bytes: fine
    if Path("/proc/self").is_dir():  # a folder every mode check lets through, where nothing can be created
        # root passes the mode check and fails creating a file; other users fail the mode check
        with pytest.raises(HmfssError, match="--out /proc/x: (cannot write in /proc|folder /proc is not writable)"):
            check_output_dir("/proc/x", "--out")
        with pytest.raises(HmfssError, match="--out /proc(: cannot write in /proc| is not writable)"):
            check_output_dir("/proc", "--out")
    os.mkfifo(tmp_path / "pipe")  # a stream is written as it is, not replaced
    assert check_output_file(tmp_path / "pipe", "--json") == tmp_path / "pipe"
    assert check_output_file("/dev/null", "--json") == Path("/dev/null")


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_unwritable_output_folder(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    with pytest.raises(HmfssError, match="not writable"):
        check_output_dir(locked / "out", "--out")


@pytest.mark.parametrize("call, message", [
    (lambda: load_model(None), r"checkpoint must be a file path \(str or Path\), got NoneType"),
    (lambda: load_model(5), r"checkpoint must be a file path \(str or Path\), got int"),
    (lambda: build_model("hsnet", "efficientnet-lite0", backbone_weights=b"x.pth"),
     r"backbone weights must be a file path \(str or Path\), got bytes"),
    (lambda: build_model("asnet", "efficientnet-lite0", pool_threshold="a"),
     "ASNet option pool_threshold must be a positive integer, got 'a'"),
    (lambda: build_model("asnet", "efficientnet-lite0", pool_threshold=0),
     "ASNet option pool_threshold must be a positive integer, got 0"),
])
def test_bad_model_arguments_are_one_line_errors(call, message):
    with torch.device("meta"), pytest.raises(HmfssError, match=message):
        call()


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return build_model("hsnet", "efficientnet-lite0", "hm", img_size=32)


@pytest.mark.parametrize("call, message", [
    (lambda m, tmp: save_checkpoint(torch.nn.Linear(2, 2), tmp / "x.pt"),
     r"model must be a FewShotSegmenter \(from build_model or load_model\), got Linear"),
    (lambda m, tmp: save_checkpoint(m, tmp), "cannot write .*: it is a folder"),
    (lambda m, tmp: save_checkpoint(m, tmp / "f" / "x.pt"), "cannot write .*f/x.pt: "),  # f is a file
    (lambda m, tmp: segment_classes(None, torch.zeros(1, 3, 32, 32), []), "got NoneType"),
    (lambda m, tmp: segment_classes(m, torch.zeros(1, 3, 32, 32), "ab"), "states must be a list, got str"),
    (lambda m, tmp: encode_classes(m, "x"), "supports must be a list, got str"),
    (lambda m, tmp: encode_classes(m, [torch.zeros(2)]), r"supports\[0\] must be an \(images, masks\) pair"),
    (lambda m, tmp: vote("x"), r"vote takes \(B, K, H, W\) binary masks, got str"),
    (lambda m, tmp: m.predict_mask(torch.zeros(1, 3, 32, 32), torch.zeros(1, 1, 3, 32, 32),
                                   masks(s=32).to_sparse()), r"support_masks must be a dense tensor, got layout sparse_coo"),
])
def test_bad_api_arguments_are_hmfss_errors(tiny_model, tmp_path, call, message):
    (tmp_path / "f").write_text("a file")
    with pytest.raises(HmfssError, match=message):
        call(tiny_model, tmp_path)


def test_class_states_may_come_from_any_iterable(tiny_model):
    support = (torch.rand(1, 1, 3, 32, 32), masks(s=32))
    states = encode_classes(tiny_model, iter([support, support]))
    query = torch.rand(1, 3, 32, 32)
    from_generator = segment_classes(tiny_model, query, (s for s in states))
    from_list = segment_classes(tiny_model, query, states)
    assert torch.equal(from_generator[0].labels, from_list[0].labels) and from_list[0].probs.shape[0] == 2

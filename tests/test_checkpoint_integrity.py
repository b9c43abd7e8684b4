"""Checkpoints whose weights are damaged or of the wrong kind: one HmfssError naming the file
and what is wrong, never a model predicting with garbage weights, never a torch traceback."""

import io
import struct
import zipfile

import pytest
import torch

from helpers import saved_tiny_model

from hmfss import build_model, load_model
from hmfss.checkpoint import load_checkpoint, read_checkpoint
from hmfss.errors import HmfssError
from hmfss.weights import check_archive_crc, load_state


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return saved_tiny_model(tmp_path_factory.mktemp("ckpt"))


def largest_member_data(path) -> tuple[str, int, int]:
    """(name, offset of its data in the file, size) of the archive's largest member, read from
    its local header (30 fixed bytes, then the name and the extra field, then the data)."""
    with zipfile.ZipFile(path) as archive:
        info = max(archive.infolist(), key=lambda i: i.file_size)
    with open(path, "rb") as handle:
        handle.seek(info.header_offset)
        header = handle.read(30)
    assert header[:4] == b"PK\x03\x04"
    name_len, extra_len = struct.unpack("<HH", header[26:30])
    return info.filename, info.header_offset + 30 + name_len + extra_len, info.file_size


def flip_middle(path, out, count: int = 2000) -> str:
    """Copy ``path`` to ``out`` with ``count`` bytes inverted in the middle of the largest
    tensor's data; returns that member's name."""
    name, start, size = largest_member_data(path)
    assert size > count
    data = bytearray(path.read_bytes())
    middle = start + size // 2 - count // 2
    data[middle:middle + count] = bytes(b ^ 0xFF for b in data[middle:middle + count])
    out.write_bytes(bytes(data))
    return name


def test_flipped_tensor_bytes_are_refused_naming_file_and_member(tiny, tmp_path):
    model, path, _ = tiny
    bad = tmp_path / "flipped.pt"
    member = flip_middle(path, bad)
    # independent oracle: zipfile itself sees the CRC failure in that member ...
    assert zipfile.ZipFile(bad).testzip() == member
    # ... which torch.load does not check: it loads the damaged weights
    loaded = torch.load(bad, weights_only=True)["model"]
    assert sum(not torch.equal(v, loaded[k]) for k, v in model.state_dict().items()) == 1
    message = f"checkpoint {bad} is damaged: CRC mismatch in {member} (re-download or re-save it)"
    for load in (lambda: load_model(bad), lambda: load_checkpoint(model, bad), lambda: read_checkpoint(bad)):
        with pytest.raises(HmfssError) as exc:
            load()
        assert str(exc.value) == message


def test_the_untouched_file_passes_the_crc_check(tiny):
    model, path, _ = tiny
    check_archive_crc(path)  # nothing raised
    loaded = load_model(path)
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in model.state_dict().items())


def test_crc_check_of_weight_files_names_the_kind(tiny, tmp_path):
    _, path, _ = tiny
    bad = tmp_path / "weights.pth"
    member = flip_middle(path, bad, count=16)
    with pytest.raises(HmfssError, match=f"backbone weights {bad} is damaged: CRC mismatch in {member}"):
        check_archive_crc(bad, kind="backbone weights")


def test_a_legacy_file_has_no_crc_and_still_loads(tiny, tmp_path):
    model, _, payload = tiny
    buffer = io.BytesIO()
    torch.save(payload, buffer, _use_new_zipfile_serialization=False)
    (tmp_path / "legacy.pt").write_bytes(buffer.getvalue())
    check_archive_crc(tmp_path / "legacy.pt")
    loaded = load_model(tmp_path / "legacy.pt")
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in model.state_dict().items())


def first_float_key(state) -> str:
    return next(k for k, v in state.items() if v.is_floating_point())


@pytest.mark.parametrize("cast, message", [
    (lambda v: v.to(torch.int64), r"holds integer values \(int64\), the model expects floating ones \(float32\)"),
    (lambda v: v.to(torch.complex64), r"holds complex numbers \(complex64\)"),
    (lambda v: v.to_sparse(), r"is a sparse_coo tensor, not a dense one"),
], ids=["int64", "complex64", "sparse"])
def test_weights_of_the_wrong_dtype_or_layout_are_refused_naming_the_key(tiny, tmp_path, cast, message):
    model, _, payload = tiny
    state = {k: (cast(v) if v.is_floating_point() else v) for k, v in payload["model"].items()}
    key = first_float_key(payload["model"])
    path = tmp_path / "cast.pt"
    torch.save({**payload, "model": state}, path)
    for load in (lambda: load_model(path), lambda: load_checkpoint(model, path)):
        with pytest.raises(HmfssError, match=f"{key} {message}") as exc:
            load()
        assert str(path) in str(exc.value) and "\n" not in str(exc.value)


def test_one_integer_weight_among_float_ones_is_refused(tiny, tmp_path):
    model, _, payload = tiny
    state = dict(payload["model"])
    key = [k for k, v in state.items() if v.is_floating_point()][-1]
    state[key] = state[key].round().to(torch.int32)
    torch.save({**payload, "model": state}, tmp_path / "one.pt")
    with pytest.raises(HmfssError, match=f"{key} holds integer values \\(int32\\)"):
        load_model(tmp_path / "one.pt")


def test_integer_buffers_stay_integer_but_refuse_floats(tiny):
    model, _, payload = tiny
    counters = [k for k, v in payload["model"].items() if k.endswith("num_batches_tracked")]
    assert counters and all(payload["model"][k].dtype == torch.int64 for k in counters)
    fresh = build_model("hsnet", "efficientnet-lite0", "hm", img_size=32)
    load_state(fresh, dict(payload["model"]), "x.pt")  # int64 counters into int64 buffers: accepted
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in payload["model"].items())
    state = {**payload["model"], counters[0]: payload["model"][counters[0]].double()}
    with pytest.raises(HmfssError, match=f"x.pt does not fit hsnet/efficientnet-lite0: {counters[0]} holds "
                                         r"floating values \(float64\), the model expects integer ones \(int64\)"):
        load_state(fresh, state, "x.pt")


def test_backbone_weight_files_are_checked_too(tmp_path):
    backbone = build_model("hsnet", "efficientnet-lite0", "hm", img_size=32).backbone
    state = {k: (v.to(torch.complex64) if v.is_floating_point() else v) for k, v in backbone.state_dict().items()}
    torch.save(state, tmp_path / "lite0.pth")
    with pytest.raises(HmfssError, match=r"backbone weights .*lite0.pth does not fit .*holds complex numbers"):
        backbone.load_weights(tmp_path / "lite0.pth")


def test_a_damaged_backbone_weight_file_is_refused(tmp_path):
    backbone = build_model("hsnet", "efficientnet-lite0", "hm", img_size=32).backbone
    torch.save(backbone.state_dict(), tmp_path / "lite0.pth")
    member = flip_middle(tmp_path / "lite0.pth", tmp_path / "flipped.pth")
    with pytest.raises(HmfssError, match=f"backbone weights .*flipped.pth is damaged: CRC mismatch in {member}"):
        backbone.load_weights(tmp_path / "flipped.pth")
    backbone.load_weights(tmp_path / "lite0.pth")  # the intact file loads

"""Checkpoint files of the wrong kind or structure: one HmfssError naming the file, never a
KeyError/AttributeError, never torch's advice to turn the safe loader off, bounded memory."""

import io
import pickle
import resource
import zipfile

import pytest
import torch

from helpers import saved_tiny_model

from hmfss import build_model, load_model, save_checkpoint
from hmfss.checkpoint import load_checkpoint, read_checkpoint
from hmfss.errors import HmfssError


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return saved_tiny_model(tmp_path_factory.mktemp("ckpt"))


def write(tmp_path, name, obj):
    torch.save(obj, tmp_path / name)
    return tmp_path / name


@pytest.mark.parametrize("change, message", [
    (lambda c: c.pop("model"), "hmfss checkpoint without its 'model' entry"),
    (lambda c: c.__setitem__("model", [1, 2]), "'model' is a list, not a state_dict"),
    (lambda c: c["model"].__setitem__("head.extra", "text"), "'model' entry 'head.extra' is a str, not a tensor"),
    (lambda c: c.__setitem__("config", "hsnet"), "'config' is a str, not a mapping"),
    (lambda c: c["config"].__setitem__("img_size", -5), "its img_size must be between 1 and 1024, got -5"),
    (lambda c: c["config"].__setitem__("img_size", "big"), "its img_size must be an integer, got 'big'"),
    (lambda c: c["config"].__setitem__("options", [1]), "'options' is a list, not a mapping"),
], ids=["no-model", "model-list", "foreign-entry", "config-str", "img-size-negative", "img-size-str",
        "options-list"])
def test_wrong_structure_is_refused_naming_the_file(tiny, tmp_path, change, message):
    _, _, payload = tiny
    payload = {**payload, "model": dict(payload["model"]), "config": dict(payload["config"])}
    change(payload)
    path = write(tmp_path, "bad.pt", payload)
    with pytest.raises(HmfssError, match=message) as exc:
        load_model(path)
    assert str(path) in str(exc.value)


def test_a_list_is_not_a_checkpoint(tmp_path):
    path = write(tmp_path, "list.pt", [torch.zeros(2)])
    with pytest.raises(HmfssError, match=r"list.pt holds a list, not a state_dict or an hmfss checkpoint"):
        read_checkpoint(path)


@pytest.mark.parametrize("content, message", [
    (b"hello, this is text\n", "is not a PyTorch checkpoint"),
    (b"", "is not a PyTorch checkpoint"),
    (pickle.dumps({"a": 1}), "damaged or not a PyTorch checkpoint"),
    (pickle.dumps(zipfile.ZipInfo("x")), "damaged or not a PyTorch checkpoint"),
], ids=["text", "empty", "plain-pickle", "pickled-object"])
def test_non_checkpoint_files_never_relay_the_weights_only_advice(tmp_path, content, message):
    path = tmp_path / "thing.pt"
    path.write_bytes(content)
    with pytest.raises(HmfssError, match=message) as exc:
        read_checkpoint(path)
    text = str(exc.value)
    assert "thing.pt" in text and "weights_only" not in text and "\n" not in text


def test_a_zip_that_is_not_a_checkpoint(tmp_path):
    with zipfile.ZipFile(tmp_path / "a.pt", "w") as archive:
        archive.writestr("readme.txt", "hi")
    with pytest.raises(HmfssError, match="a.pt is a zip archive but not a PyTorch checkpoint"):
        read_checkpoint(tmp_path / "a.pt")


def test_nan_weights_are_refused_naming_file_and_key(tiny, tmp_path):
    model, _, payload = tiny
    state = dict(payload["model"])
    key = next(k for k, v in state.items() if k.startswith("head.") and v.is_floating_point())
    state[key] = state[key].clone()
    state[key].view(-1)[0] = float("nan")
    path = write(tmp_path, "nan.pt", {**payload, "model": state})
    with pytest.raises(HmfssError, match=f"nan.pt holds NaN or infinite weights \\({key}\\)"):
        load_model(path)
    with pytest.raises(HmfssError, match="NaN or infinite"):
        load_checkpoint(model, path)


def test_compressed_archive_is_refused_before_it_fills_memory(tiny, tmp_path):
    # a 400 MB zero tensor deflates to well under 1 MB: torch.load would inflate all of it
    buffer = io.BytesIO()
    torch.save({"w": torch.zeros(100_000_000)}, buffer)
    bomb = tmp_path / "bomb.pt"
    with zipfile.ZipFile(io.BytesIO(buffer.getvalue())) as src, \
            zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info.filename))
    del buffer
    assert bomb.stat().st_size < 2_000_000
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(HmfssError, match=r"bomb.pt declares \d+ bytes of data in a \d+-byte file"):
        read_checkpoint(bomb)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 100_000  # KiB


def test_vat_checkpoint_with_arch_hsnet_names_the_file(tmp_path):
    vat = build_model("vat", "efficientnet-lite0", "hm", img_size=32, benchmark="fss")
    path = save_checkpoint(vat, tmp_path / "vat.pt")
    with pytest.raises(HmfssError, match=r"vat.pt is a vat/efficientnet-lite0 model, not hsnet/efficientnet-lite0"):
        load_model(path, arch="hsnet")


def test_load_model_refuses_bad_img_size(tiny):
    _, path, _ = tiny
    for value in (-5, 100000):
        with pytest.raises(HmfssError, match=f"img_size .*must be between 1 and 1024, got {value}"):
            load_model(path, img_size=value)


def test_good_checkpoint_still_loads_memory_mapped(tiny):
    model, path, _ = tiny
    loaded = load_model(path)
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value)


def _legacy(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer, _use_new_zipfile_serialization=False)
    return buffer.getvalue()


def test_legacy_format_checkpoint_still_loads(tiny, tmp_path):
    model, path, payload = tiny
    (tmp_path / "legacy.pt").write_bytes(_legacy(payload))
    loaded = load_model(tmp_path / "legacy.pt")
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in model.state_dict().items())


def test_legacy_file_declaring_more_data_than_it_holds_is_refused(tmp_path):
    data = _legacy({"w": torch.zeros(123)})
    # numel 123 (BININT1 "K{") becomes 10**9 (BININT): 4 GB declared in a file of under 1 kB
    crafted = data.replace(b"K{", b"J" + (10**9).to_bytes(4, "little"))
    assert crafted != data
    (tmp_path / "crafted.pt").write_bytes(crafted)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(HmfssError, match=r"crafted.pt declares 4000000000 bytes of tensor data in a \d+-byte file"):
        read_checkpoint(tmp_path / "crafted.pt")
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 100_000  # KiB

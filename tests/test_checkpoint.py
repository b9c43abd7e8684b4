import os
import re
import zipfile

import pytest
import torch

from helpers import make_episode
from hmfss import build_model, load_checkpoint, load_model, save_checkpoint
from hmfss.checkpoint import read_checkpoint
from hmfss.errors import HmfssError


@pytest.fixture(scope="module")
def trained():
    torch.manual_seed(0)
    model = build_model("hsnet", "resnet50", "hm", img_size=64).eval()
    for p in model.head.parameters():  # not default init, so a fresh model differs
        p.data.normal_(0, 0.05)
    return model


def to_original_layout(model):
    """Our state_dict written the way the original HSNet code saves it (DataParallel)."""
    state = {}
    for key, value in model.state_dict().items():
        key = key.replace("head.", "hpn_learner.", 1)
        state[f"module.{key}"] = value.clone()
    state["module.backbone.fc.weight"] = torch.zeros(1000, 2048)
    state["module.backbone.fc.bias"] = torch.zeros(1000)
    return state


def test_round_trip_rebuilds_the_same_model(trained, tmp_path):
    path = save_checkpoint(trained, tmp_path / "ckpt.pt", epoch=3)
    assert not list(tmp_path.glob(".*tmp"))  # no temp file left behind
    model = load_model(path)
    assert model.config == trained.config and not model.training
    q, s, m = make_episode(shots=2, size=64)
    with torch.no_grad():
        assert torch.equal(model.predict_mask(q, s, m), trained.predict_mask(q, s, m))
    assert read_checkpoint(path)["epoch"] == 3


def test_original_key_layout_matches_the_reference_and_loads(trained, tmp_path, shared_reference):
    state = to_original_layout(trained)
    expected = {}
    for line in (shared_reference / "hsnet_resnet50_checkpoint_keys.txt").read_text().splitlines():
        key, shape = line.split(" ", 1)
        expected[key] = tuple(int(x) for x in re.findall(r"\d+", shape))
    assert {k: tuple(v.shape) for k, v in state.items()} == expected
    path = tmp_path / "best_model.pt"
    torch.save(state, path)
    fresh = build_model("hsnet", "resnet50", "hm")
    load_checkpoint(fresh, path)
    for key, value in trained.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key


def test_checkpoint_saved_on_cuda_loads_on_cpu(trained, tmp_path):
    """Rewrite the storage locations of a saved file to 'cuda:0', as in the original files."""
    path = tmp_path / "cpu.pt"
    torch.save(to_original_layout(trained), path)
    cuda_path = tmp_path / "cuda.pt"
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(cuda_path, "w", zipfile.ZIP_STORED) as dst:
        for item in src.infolist():
            data = src.read(item.filename)
            if item.filename.endswith("data.pkl"):
                assert b"X\x03\x00\x00\x00cpu" in data  # pickle protocol 2 BINUNICODE
                data = data.replace(b"X\x03\x00\x00\x00cpu", b"X\x06\x00\x00\x00cuda:0")
            dst.writestr(item, data)
    with pytest.raises(RuntimeError):
        torch.load(cuda_path, weights_only=True)  # no CUDA here: a plain load fails
    fresh = build_model("hsnet", "resnet50", "hm")
    load_checkpoint(fresh, cuda_path)
    assert torch.equal(fresh.head.decoder2[2].weight, trained.head.decoder2[2].weight)


def test_strict_loading_names_the_offending_key(trained, tmp_path):
    state = to_original_layout(trained)
    missing = dict(state)
    del missing["module.hpn_learner.encoder_layer3.4.weight"]
    torch.save(missing, tmp_path / "missing.pt")
    with pytest.raises(HmfssError, match=r"missing.pt does not fit hsnet/resnet50: missing key 'head.encoder_layer3.4.weight'"):
        load_checkpoint(build_model("hsnet", "resnet50"), tmp_path / "missing.pt")
    extra = dict(state)
    extra["module.hpn_learner.bonus.weight"] = torch.zeros(1)
    torch.save(extra, tmp_path / "extra.pt")
    with pytest.raises(HmfssError, match="unexpected key 'head.bonus.weight'"):
        load_checkpoint(build_model("hsnet", "resnet50"), tmp_path / "extra.pt")


def test_checkpoint_for_another_backbone_is_refused(trained, tmp_path):
    torch.save(to_original_layout(trained), tmp_path / "r50.pt")
    with pytest.raises(HmfssError, match="r50.pt does not fit hsnet/resnet101"):
        load_checkpoint(build_model("hsnet", "resnet101"), tmp_path / "r50.pt")
    save_checkpoint(trained, tmp_path / "ours.pt")
    with pytest.raises(HmfssError, match="is a hsnet/resnet50 model, not hsnet/vgg16"):
        load_checkpoint(build_model("hsnet", "vgg16"), tmp_path / "ours.pt")


def test_head_shape_mismatch_is_reported(trained, tmp_path):
    state = to_original_layout(trained)
    state["module.hpn_learner.decoder2.2.weight"] = torch.zeros(3, 64, 3, 3)
    torch.save(state, tmp_path / "bad.pt")
    with pytest.raises(HmfssError, match=r"decoder2.2.weight has shape \(3, 64, 3, 3\)"):
        load_checkpoint(build_model("hsnet", "resnet50"), tmp_path / "bad.pt")


class Evil:
    def __reduce__(self):
        return (os.system, ("touch hmfss_pwned",))


def test_pickled_code_is_never_executed(trained, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    payload = {"state_dict": to_original_layout(trained), "callbacks": {"cb": Evil()}}
    torch.save(payload, tmp_path / "evil.pt")
    fresh = build_model("hsnet", "resnet50")
    load_checkpoint(fresh, tmp_path / "evil.pt")
    assert not (tmp_path / "hmfss_pwned").exists()
    assert torch.equal(fresh.head.decoder1[0].bias, trained.head.decoder1[0].bias)


def test_unreadable_files_are_clear_errors(tmp_path):
    with pytest.raises(HmfssError, match="checkpoint not found"):
        load_model(tmp_path / "nope.pt")
    (tmp_path / "junk.pt").write_bytes(b"\x00garbage")
    with pytest.raises(HmfssError, match="junk.pt"):
        load_model(tmp_path / "junk.pt", arch="hsnet", backbone="resnet50")
    torch.save({"a": torch.zeros(1)}, tmp_path / "orig.pt")
    with pytest.raises(HmfssError, match="give the architecture and backbone"):
        load_model(tmp_path / "orig.pt")

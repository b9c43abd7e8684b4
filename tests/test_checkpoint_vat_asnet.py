"""Original VAT (torch.save'd dict) and ASNet (PyTorch-Lightning 1.3) checkpoints, and hmfss
round trips of both heads."""

import collections
import io
import re
import sys
import types
import zipfile

import pytest
import torch

from hmfss import build_model, load_checkpoint, load_model, save_checkpoint
from hmfss.checkpoint import read_checkpoint
from hmfss.errors import HmfssError


def randomise(model, seed=0):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.head.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    return model


def as_cuda_file(data: bytes, path):
    """Rewrite a torch.save zip so that every storage claims to live on 'cuda:0'."""
    src = zipfile.ZipFile(io.BytesIO(data))
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as dst:
        for item in src.infolist():
            blob = src.read(item.filename)
            if item.filename.endswith("data.pkl"):
                assert b"X\x03\x00\x00\x00cpu" in blob
                blob = blob.replace(b"X\x03\x00\x00\x00cpu", b"X\x06\x00\x00\x00cuda:0")
            dst.writestr(item, blob)


# ---- VAT ---------------------------------------------------------------------------------------

# our head key -> the original key (docs/checkpoints.md), written independently of the head's own mapping
TO_ORIGINAL = [
    (r"^encoders\.(\d)\.(\d)\.conv\.", r"encoders.\1.conv4d.\2.0."),
    (r"^encoders\.(\d)\.(\d)\.norm\.", r"encoders.\1.conv4d.\2.1."),
    (r"^transformers\.(\d)\.swin\.blocks\.", r"transformer.\1.transformer.layer.blocks."),
    (r"^decoder_stages\.(\d)\.swin\.blocks\.", r"swin_decoder.\1.0.transformer.layers.0.blocks."),
    (r"^decoder_stages\.(\d)\.swin\.norm\.", r"swin_decoder.\1.0.transformer.norm."),
    (r"^decoder_stages\.(\d)\.proj\.", r"swin_decoder.\1.1."),
    (r"^skip_proj\.(\d)\.", r"proj_query_feat.\1.0."),
]


def vat_original_state(model, buffers=True):
    """``model`` written the way VAT's train.py saves it (DataParallel keys, dead modules, buffers)."""
    state = {}
    for key, value in model.state_dict().items():
        if key.startswith("head."):
            key = key[len("head."):]
            for pattern, repl in TO_ORIGINAL:
                key = re.sub(pattern, repl, key)
            key = "hpn_learner.ours." + key
        state[f"module.{key}"] = value.clone()
    learner = "module.hpn_learner.ours."
    head = model.head
    for i in range(len(head.transformers)):  # unused final norms of the 4D transformers
        state[f"{learner}transformer.{i}.transformer.norm.weight"] = torch.ones(128)
        state[f"{learner}transformer.{i}.transformer.norm.bias"] = torch.zeros(128)
    channels, (l4, l3, _) = model.backbone.info.channels, model.backbone.info.levels
    dims = {"0": (64, channels[-l4 - 1]), "1": (32, channels[-l4 - l3 - 1]), "2": (16, model.backbone.info.extra_channels)}
    for j, (cout, cin) in dims.items():  # projections built for every benchmark
        if j not in head.skip_proj:
            state[f"{learner}proj_query_feat.{j}.0.weight"] = torch.randn(cout, cin, 1, 1)
            state[f"{learner}proj_query_feat.{j}.0.bias"] = torch.randn(cout)
    stages = [(f"transformer.{i}.transformer.layer", t.swin) for i, t in enumerate(head.transformers)]
    stages += [(f"swin_decoder.{i}.0.transformer.layers.0", d.swin) for i, d in enumerate(head.decoder_stages)]
    for prefix, swin in stages if buffers else []:  # persistent buffers of every block
        for b in range(len(swin.blocks)):
            state[f"{learner}{prefix}.blocks.{b}.attn.relative_position_index"] = swin.relative_position_index.clone()
            if b % 2:
                state[f"{learner}{prefix}.blocks.{b}.attn_mask"] = swin.attn_mask.clone()
    if model.config.backbone.startswith("resnet"):
        state["module.backbone.fc.weight"] = torch.zeros(1000, 2048)
        state["module.backbone.fc.bias"] = torch.zeros(1000)
    return state


def vat_checkpoint(model, buffers=True):
    """{epoch, state_dict, optimizer, scheduler, val_miou} as VAT's train.py writes it."""
    params = [p.detach().clone().requires_grad_() for p in list(model.head.parameters())[:6]]
    opt = torch.optim.AdamW([{"params": params[:3], "lr": 5e-4}, {"params": params[3:], "lr": 5e-4}])
    for p in params:  # some optimiser state (exp_avg, ...) like a trained run's
        p.grad = torch.ones_like(p)
    opt.step()
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[], gamma=1.0)
    assert isinstance(sched.state_dict()["milestones"], collections.Counter)
    return {"epoch": 12, "state_dict": vat_original_state(model, buffers), "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(), "val_miou": torch.tensor(61.2)}


@pytest.fixture(scope="module")
def vat_pascal():
    torch.manual_seed(0)
    return randomise(build_model("vat", "resnet50", "fm"))


@pytest.fixture(scope="module")
def vat_small():
    """VAT on the small EfficientNet-Lite0 backbone: same head layout, light files."""
    torch.manual_seed(5)
    return randomise(build_model("vat", "efficientnet-lite0", "fm"), seed=5)


def test_vat_original_layout_has_the_documented_learner_keys(vat_pascal):
    state = vat_original_state(vat_pascal)
    learner = {k[len("module.hpn_learner.ours."):]: v for k, v in state.items() if "hpn_learner" in k}
    assert len(learner) == 271  # the original VAT learner, PASCAL R50
    shapes = {
        "encoders.0.conv4d.0.0.query_conv.weight": (64, 3, 3, 3),
        "encoders.2.conv4d.2.1.weight": (128,),
        "transformer.0.transformer.layer.blocks.3.attn.relative_position_bias_table": (2401, 4),
        "transformer.2.transformer.layer.blocks.1.attn_mask": (256, 256, 256),
        "transformer.1.transformer.layer.blocks.0.attn.qkv.weight": (384, 128),
        "swin_decoder.2.0.transformer.layers.0.blocks.1.attn_mask": (256, 64, 64),
        "swin_decoder.0.0.transformer.layers.0.blocks.0.attn.relative_position_bias_table": (225, 4),
        "swin_decoder.1.1.weight": (48, 128, 1, 1),
        "decoder.0.weight": (32, 64, 3, 3),
        "proj_query_feat.0.0.weight": (64, 1024, 1, 1),
        "proj_query_feat.2.0.weight": (16, 256, 1, 1),
    }
    for key, shape in shapes.items():
        assert tuple(learner[key].shape) == shape, key
    buffers = [k for k in learner if k.endswith(("relative_position_index", "attn_mask"))]
    assert len(buffers) == 21


def test_vat_original_checkpoint_loads(vat_pascal, tmp_path):
    path = tmp_path / "best_model.pt"
    buffer = io.BytesIO()
    torch.save(vat_checkpoint(vat_pascal), buffer)
    as_cuda_file(buffer.getvalue(), path)
    fresh = build_model("vat", "resnet50", "fm")
    obj = load_checkpoint(fresh, path)
    assert obj["epoch"] == 12
    for key, value in vat_pascal.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key


def test_vat_stored_buffers_must_match(vat_small, tmp_path):
    ckpt = vat_checkpoint(vat_small, buffers=False)
    key = "module.hpn_learner.ours.transformer.0.transformer.layer.blocks.1.attn_mask"
    bad = vat_small.head.transformers[0].swin.attn_mask.clone()
    bad[3, 0, 5] += 1.0
    ckpt["state_dict"][key] = bad
    torch.save(ckpt, tmp_path / "bad.pt")
    with pytest.raises(HmfssError, match="blocks.1.attn_mask differs"):
        load_checkpoint(build_model("vat", "efficientnet-lite0", "fm"), tmp_path / "bad.pt")


def test_vat_checkpoint_of_another_benchmark_is_refused(vat_small, tmp_path):
    torch.save(vat_checkpoint(vat_small, buffers=False), tmp_path / "pascal.pt")
    with pytest.raises(HmfssError, match="pascal.pt does not fit vat/efficientnet-lite0"):
        load_checkpoint(build_model("vat", "efficientnet-lite0", "fm", benchmark="coco"), tmp_path / "pascal.pt")


def test_vat_coco_original_checkpoint_drops_both_unused_projections(tmp_path):
    torch.manual_seed(1)
    coco = randomise(build_model("vat", "efficientnet-lite0", "hm", benchmark="coco"), seed=1)
    state = vat_original_state(coco, buffers=False)
    assert "module.hpn_learner.ours.proj_query_feat.1.0.weight" in state
    torch.save({"epoch": 1, "state_dict": state}, tmp_path / "coco.pt")
    model = load_model(tmp_path / "coco.pt", arch="vat", backbone="efficientnet-lite0", masking="hm", benchmark="coco")
    assert model.config.img_size == 417 and model.config.masking == "hm"
    for key, value in coco.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key


def test_vat_round_trip_keeps_options_and_stores_no_buffers(tmp_path):
    torch.manual_seed(2)
    model = randomise(build_model("vat", "efficientnet-lite0", "hm", benchmark="coco"), seed=2)
    path = save_checkpoint(model, tmp_path / "vat.pt")
    stored = read_checkpoint(path)["model"]
    assert not any(k.endswith(("attn_mask", "relative_position_index")) for k in stored)
    loaded = load_model(path)
    assert loaded.config == model.config and loaded.config.img_size == 417
    assert loaded.head.benchmark == "coco"
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


# ---- ASNet (PyTorch-Lightning 1.3.8 .ckpt) -------------------------------------------------------


@pytest.fixture(scope="module")
def asnet_r50():
    torch.manual_seed(3)
    return randomise(build_model("asnet", "resnet50", "none"), seed=3)


class Marker:
    """Unpickling it for real would create the file ``path``."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (exec, (f"open({self.path!r}, 'w').close()",))


def lightning_checkpoint(model, marker_path=None) -> bytes:
    """A Lightning-1.3-style checkpoint whose callbacks are keyed by a class of the original
    project and whose hyper-parameters hold an object of another such class."""
    project = types.ModuleType("asnet_project_callbacks")

    class CustomCheckpoint:
        pass

    class RunArgs:
        def __init__(self, **kw):
            self.__dict__.update(kw)

    for cls in (CustomCheckpoint, RunArgs):
        cls.__module__, cls.__qualname__ = project.__name__, cls.__name__
        setattr(project, cls.__name__, cls)
    state = {}
    for key, value in model.state_dict().items():
        state[key.replace("head.", "learner.", 1)] = value.clone()
    if model.config.backbone.startswith("resnet"):
        state["backbone.fc.weight"] = torch.zeros(1000, 2048)
        state["backbone.fc.bias"] = torch.zeros(1000)
    opt = torch.optim.Adam(model.head.parameters(), lr=1e-3)
    ckpt = {
        "epoch": 41,
        "global_step": 1234,
        "pytorch-lightning_version": "1.3.8",
        "state_dict": state,
        "callbacks": {CustomCheckpoint: {"monitor": "val/miou", "best_model_score": torch.tensor(55.5),
                                         "best_model_path": "best_model.ckpt", "current_score": torch.tensor(55.5)}},
        "optimizer_states": [opt.state_dict()],
        "lr_schedulers": [],
        "hparams_name": "args",
        "hyper_parameters": {"args": RunArgs(backbone="resnet50", lr=1e-3)},
    }
    if marker_path is not None:
        ckpt["hyper_parameters"]["marker"] = Marker(marker_path)
    sys.modules[project.__name__] = project
    try:
        buffer = io.BytesIO()
        torch.save(ckpt, buffer)
    finally:
        del sys.modules[project.__name__]  # the classes do not exist at load time
    return buffer.getvalue()


def test_asnet_lightning_checkpoint_loads_without_lightning_or_pickled_code(asnet_r50, tmp_path):
    path = tmp_path / "best_model.ckpt"
    marker = tmp_path / "executed"
    as_cuda_file(lightning_checkpoint(asnet_r50, marker), path)
    with pytest.raises(Exception):
        torch.load(path, weights_only=True)  # refused: foreign classes (and CUDA storages here)
    assert "pytorch_lightning" not in sys.modules
    fresh = build_model("asnet", "resnet50", "none")
    obj = load_checkpoint(fresh, path)
    assert not marker.exists()  # nothing pickled was called
    assert obj["epoch"] == 41 and obj["pytorch-lightning_version"] == "1.3.8"
    (callback_key,) = obj["callbacks"]
    assert "CustomCheckpoint" in repr(callback_key)
    for key, value in asnet_r50.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key
    model = load_model(path, arch="asnet", backbone="resnet50", masking="hm")
    assert model.config.masking == "hm" and model.config.img_size == 400


def test_asnet_lightning_checkpoint_for_another_backbone_is_refused(asnet_r50, tmp_path):
    torch.manual_seed(4)
    other = build_model("asnet", "efficientnet-lite0", "none")
    (tmp_path / "lite0.ckpt").write_bytes(lightning_checkpoint(other))
    with pytest.raises(HmfssError, match="lite0.ckpt does not fit asnet/resnet50"):
        load_checkpoint(asnet_r50, tmp_path / "lite0.ckpt")


def test_asnet_round_trip(asnet_r50, tmp_path):
    path = save_checkpoint(asnet_r50, tmp_path / "asnet.pt", epoch=5)
    loaded = load_model(path)
    assert loaded.config == asnet_r50.config
    for key, value in asnet_r50.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key

"""A table of bad inputs through the CLI: each ends with exit status 2 and exactly one line on
stderr naming the problem, no traceback, and no output file left behind.

Every command belongs in this table; a new command adds its bad inputs here.
"""

from __future__ import annotations

import io
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import one_thread  # noqa: F401  (autouse fixture)
from helpers.bad_input import assert_refused
from helpers.tiny_data import make_folder, make_pascal
from PIL import Image

from hmfss import build_model, save_checkpoint
from hmfss.data import io as hio
from hmfss.data.synthetic import SyntheticParams, generate


def _checkpoints(root: Path, model) -> None:
    good = save_checkpoint(model, root / "ckpt.pt")
    payload = torch.load(good, weights_only=True)
    torch.save([torch.zeros(2)], root / "list.pt")
    torch.save({k: v for k, v in payload.items() if k != "model"}, root / "nomodel.pt")
    torch.save({**payload, "model": {**payload["model"], "head.x": "text"}}, root / "foreign.pt")
    torch.save({**payload, "config": {**payload["config"], "img_size": -5}}, root / "badsize.pt")
    torch.save({**payload, "version": 999}, root / "future.pt")
    state = {k: (v.clone().fill_(float("nan")) if v.is_floating_point() else v) for k, v in payload["model"].items()}
    torch.save({**payload, "model": state}, root / "nan.pt")
    torch.save({"module.learner.x": torch.zeros(1)}, root / "original.pt")
    (root / "text.pt").write_text("not a checkpoint\n")
    (root / "pickle.pt").write_bytes(pickle.dumps({"a": 1}))
    with zipfile.ZipFile(root / "zip.pt", "w") as archive:
        archive.writestr("readme.txt", "hi")
    buffer = io.BytesIO()
    torch.save({"w": torch.zeros(10_000_000)}, buffer)
    with zipfile.ZipFile(io.BytesIO(buffer.getvalue())) as src, \
            zipfile.ZipFile(root / "bomb.pt", "w", compression=zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info.filename))
    legacy = io.BytesIO()
    torch.save({"w": torch.zeros(123)}, legacy, _use_new_zipfile_serialization=False)
    (root / "legacy_bomb.pt").write_bytes(legacy.getvalue().replace(b"K{", b"J" + (10**9).to_bytes(4, "little")))
    vat = build_model("vat", "efficientnet-lite0", "hm", img_size=32, benchmark="fss")
    save_checkpoint(vat, root / "vat.pt")


def _images(root: Path) -> None:
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (40, 50, 3), np.uint8)).save(root / "s.jpg")
    mask = np.zeros((40, 50), np.uint8)
    mask[10:30, 15:35] = 255
    Image.fromarray(mask).save(root / "s.png")
    Image.fromarray(mask[:30]).save(root / "small.png")
    Image.fromarray(np.zeros((40, 50), np.uint8)).save(root / "empty.png")
    Image.fromarray(np.zeros((40, 50), np.uint8)).convert("P").save(root / "empty_p.png")
    Image.fromarray(rng.integers(0, 255, (30, 30, 3), np.uint8)).save(root / "q.jpg")
    (root / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (root / "text.png").write_text("hello")
    (root / "emptydir").mkdir()
    nan = np.full((8, 8), np.nan, np.float32)
    Image.fromarray(nan, "F").save(root / "nan.tif")
    Image.new("L", (200, 100)).save(root / "wide.png")
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (300, 300, 3), np.uint8)).save(buffer, "JPEG")
    (root / "cut.jpg").write_bytes(buffer.getvalue()[:len(buffer.getvalue()) * 9 // 10])  # header intact
    for name, (h, w) in {"y_overlay": (40, 50), "cat": (40, 50)}.items():  # support-dir classes
        (root / "sd" / name / "masks").mkdir(parents=True)
        (root / "sd" / name / "images").mkdir()
        Image.fromarray(rng.integers(0, 255, (h, w, 3), np.uint8)).save(root / "sd" / name / "images" / "a.jpg")
        Image.fromarray(mask).save(root / "sd" / name / "masks" / "a.png")
    (root / "sdq").mkdir()
    for stem in ("x", "x_mask_y"):  # x's mask for class y_overlay and x_mask_y's overlay share a name
        Image.fromarray(rng.integers(0, 255, (30, 30, 3), np.uint8)).save(root / "sdq" / f"{stem}.jpg")


def _data(root: Path) -> dict:
    bench = root / "bench"
    generate(bench, SyntheticParams(classes=8, images_per_class=3, size=32, seed=2, test_ratio=0.25, val_ratio=0.25))
    empty_splits = root / "empty_splits"
    (empty_splits / "fss").mkdir(parents=True)
    for split in ("trn", "val"):
        (empty_splits / "fss" / f"{split}.txt").write_text((bench / "splits" / "fss" / f"{split}.txt").read_text())
    (empty_splits / "fss" / "test.txt").write_text("")
    pascal = make_pascal(root / "pascal")
    folder = make_folder(root / "folder")
    bird = folder.datapath / "bird" / "masks" / "p.png"
    Image.fromarray(np.zeros(np.array(Image.open(bird)).shape, np.uint8)).save(bird)
    (root / "bad.yaml").write_text("epochs: [1\n")
    (root / "classes.txt").write_text("bird\n")
    (root / "unknown.yaml").write_text("colour: red\n")
    (root / "list.yaml").write_text("- 1\n- 2\n")
    return {"bench": bench, "empty_splits": empty_splits, "pascal": pascal.datapath, "psplits": pascal.splits,
            "folder": folder.datapath}


# one process builds the module's world (a second would build it again)
pytestmark = pytest.mark.xdist_group("bad_inputs")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad-inputs")
    torch.manual_seed(0)
    _checkpoints(root, build_model("hsnet", "efficientnet-lite0", "hm", img_size=32))
    _images(root)
    paths = _data(root)
    out = root / "out"
    out.mkdir()
    (out / "taken").write_text("a file that must stay as it is")
    (out / "adir").mkdir()
    (out / "qdir").mkdir()  # queries x.png and x_mask.png: x's mask would replace the second query
    for stem in ("x", "x_mask"):
        Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(out / "qdir" / f"{stem}.png")
    return {"root": root, "out": out, **{k: str(v) for k, v in paths.items()}}


P = "predict --checkpoint {root}/ckpt.pt --support {root}/s.jpg {root}/s.png --query {root}/q.jpg --out {out}/p"
T = ("test --benchmark pascal --datapath {pascal} --splits {psplits} --checkpoint {root}/ckpt.pt --workers 0 "
     "--no-progress --episodes 1")
TF = "test --benchmark folder --datapath {folder} --checkpoint {root}/ckpt.pt --workers 0 --no-progress"
B = "benchmark --backbone efficientnet-lite0 --img-size 32 --repeats 1 --warmup 0 --no-naive --stream-queries 1"
BT = "benchmark --train --backbone efficientnet-lite0 --img-size 32 --batch 1 --repeats 1 --warmup 0"
E = "episodes --benchmark pascal --splits {psplits}"
R = ("train --benchmark fss --datapath {bench} --splits {bench}/splits --backbone efficientnet-lite0 --img-size 32 "
     "--bsz 2 --episodes-per-epoch 2 --val-episodes 1 --epochs 1 --workers 0 --no-tensorboard --no-progress "
     "--logdir {out}/run")


# root passes the mode check and fails creating a file; other users fail the mode check
NO_PROC = r"cannot write in /proc|folder /proc is not writable"


def _predict(**swap) -> str:
    cmd = P
    for old, new in swap.items():
        cmd = cmd.replace({"ckpt": "{root}/ckpt.pt", "support": "{root}/s.jpg {root}/s.png",
                           "query": "--query {root}/q.jpg"}[old], new)
    return cmd


CASES = {
    # predict: inputs
    "predict-query-missing": (_predict(query="--query {root}/nope.jpg"), "query not found"),
    "predict-query-broken-jpeg": (_predict(query="--query {root}/broken.jpg"), "cannot read image"),
    "predict-query-text-as-png": (_predict(query="--query {root}/text.png"), "cannot read image"),
    "predict-query-empty-folder": (_predict(query="--query {root}/emptydir"), "no images in folder"),
    "predict-query-nan-tiff": (_predict(query="--query {root}/nan.tif"), "holds NaN"),
    "predict-query-truncated-after-a-good-one": (_predict(query="--query {root}/q.jpg {root}/cut.jpg"),
                                                 "cannot read image .*cut.jpg: image file is truncated"),
    "predict-query-over-pixel-limit": (_predict(query="--query {root}/wide.png") + " --max-pixels 19999",
                                       "over the pixel limit of 19999"),
    "predict-threshold-nan": (P + " --threshold nan", "--threshold must be a number from 0 to 1, got nan"),
    "predict-threshold-above-one": (P + " --threshold 2", "--threshold must be a number from 0 to 1, got 2.0"),
    "predict-threshold-without-classes": (P + " --threshold 0.5", "--threshold applies to several classes"),
    "predict-max-pixels-zero": (P + " --max-pixels 0", "--max-pixels must be a positive integer"),
    "predict-support-mask-wrong-size": (_predict(support="{root}/s.jpg {root}/small.png"), "is 50x30 but its image"),
    "predict-support-mask-empty": (_predict(support="{root}/s.jpg {root}/empty.png"), "empty.png is empty"),
    "predict-support-mask-empty-palette": (_predict(support="{root}/s.jpg {root}/empty_p.png"), "is empty"),
    "predict-support-image-missing": (_predict(support="{root}/nope.jpg {root}/s.png"), "file not found"),
    "predict-support-mask-broken": (_predict(support="{root}/s.jpg {root}/text.png"), "cannot read image"),
    "predict-support-mask-is-folder": (_predict(support="{root}/s.jpg {root}/emptydir"), "file not found"),
    "predict-support-one-path": (_predict(support="{root}/s.jpg"), "expected 2 arguments"),
    # predict: checkpoints
    "predict-ckpt-missing": (_predict(ckpt="{root}/nope.pt"), "checkpoint not found"),
    "predict-ckpt-text": (_predict(ckpt="{root}/text.pt"), "is not a PyTorch checkpoint"),
    "predict-ckpt-list": (_predict(ckpt="{root}/list.pt"), "holds a list"),
    "predict-ckpt-no-model": (_predict(ckpt="{root}/nomodel.pt"), "without its 'model' entry"),
    "predict-ckpt-foreign-entry": (_predict(ckpt="{root}/foreign.pt"), "'head.x' is a str, not a tensor"),
    "predict-ckpt-bad-img-size": (_predict(ckpt="{root}/badsize.pt"), "img_size must be between 1 and 1024"),
    "predict-ckpt-nan": (_predict(ckpt="{root}/nan.pt"), "holds NaN or infinite weights"),
    "predict-ckpt-future-version": (_predict(ckpt="{root}/future.pt"), "has format version 999; this hmfss reads "
                                    "versions 1 to 1"),
    "predict-ckpt-plain-pickle": (_predict(ckpt="{root}/pickle.pt"), "damaged or not a PyTorch checkpoint"),
    "predict-ckpt-zip-not-torch": (_predict(ckpt="{root}/zip.pt"), "zip archive but not a PyTorch checkpoint"),
    "predict-ckpt-compressed-bomb": (_predict(ckpt="{root}/bomb.pt"), "bytes of data in a"),
    "predict-ckpt-legacy-bomb": (_predict(ckpt="{root}/legacy_bomb.pt"), "declares 4000000000 bytes"),
    "predict-ckpt-vat-as-hsnet": (_predict(ckpt="{root}/vat.pt") + " --arch hsnet", "vat.pt is a vat/"),
    "predict-ckpt-original-without-arch": (_predict(ckpt="{root}/original.pt"), "--arch"),
    "predict-ckpt-other-backbone": (P + " --backbone resnet50", "is a hsnet/efficientnet-lite0 model, not hsnet/resnet50"),
    "predict-ckpt-original-unknown-arch": (_predict(ckpt="{root}/original.pt") + " --arch unet --backbone resnet50",
                                           "unet"),
    # predict: options
    "predict-img-size-negative": (P + " --img-size -5", "--img-size must be between 1 and 1024, got -5"),
    "predict-img-size-zero": (P + " --img-size 0", "--img-size must be between 1 and 1024, got 0"),
    "predict-img-size-huge": (P + " --img-size 100000", "got 100000"),
    "predict-img-size-text": (P + " --img-size abc", "invalid int value: 'abc'"),
    "predict-batch-size-zero": (P + " --batch-size 0", "--batch-size must be at least 1"),
    "predict-device-meta": (P + " --device meta", "'meta' holds no data"),
    "predict-device-unknown": (P + " --device abacus", "unknown device 'abacus'"),
    "predict-device-cpu-index": (P + " --device cpu:1", "device 'cpu:1': the CPU takes no index"),
    "predict-masking-unknown": (P + " --masking sideways", "sideways"),
    "predict-unknown-flag": (P + " --colour red", "unrecognized arguments: --colour red"),
    # predict: output paths
    "predict-out-is-file": (P.replace("{out}/p", "{out}/taken"), "--out .*taken is a file; give a folder"),
    "predict-out-under-file": (P.replace("{out}/p", "{out}/taken/sub"), "taken is a file, not a folder"),
    "predict-out-in-proc": (P.replace("{out}/p", "/proc/hmfss-out"), NO_PROC),
    "predict-out-would-replace-a-query": (_predict(query="--query {out}/qdir").replace("{out}/p", "{out}/qdir"),
                                          "the output .*qdir/x_mask.png for .*x.png would overwrite an input file"),
    "predict-outputs-of-two-queries-share-a-name": (
        "predict --checkpoint {root}/ckpt.pt --support-dir {root}/sd --query {root}/sdq --out {out}/p",
        "two outputs would be named .*x_mask_y_overlay.png: one for .*x.jpg, one for .*x_mask_y.jpg"),
    # test
    "test-json-is-folder": (T + " --json {out}/adir", "--json .*adir is a folder; give a file name"),
    "test-json-under-file": (T + " --json {out}/taken/r.json", "taken is a file, not a folder"),
    "test-visualize-is-file": (T + " --visualize {out}/taken", "--visualize .*taken is a file; give a folder"),
    "test-fold-out-of-range": (T + " --fold 7", "fold 7 is out of range"),
    "test-device-meta": (T + " --device meta", "'meta' holds no data"),
    "test-img-size-negative": (T + " --img-size -5", "--img-size must be between 1 and 1024, got -5"),
    "test-bsz-zero": (T + " --bsz 0", "--batch-size must be at least 1"),
    "test-workers-negative": (T + " --workers -1", "--workers must be >= 0"),
    "test-datapath-missing": (T.replace("{pascal}", "{root}/nowhere"), "dataset folder not found"),
    "test-no-split-lists": (T.replace(" --splits {psplits}", ""), "hmfss data splits"),
    "test-fss-empty-test-list": ("test --benchmark fss --datapath {bench} --splits {empty_splits} --checkpoint "
                                 "{root}/ckpt.pt --workers 0", "split has no images: its list in"),
    "test-episodes-zero": (T.replace("--episodes 1", "--episodes 0"), "--episodes must be between 1 and 1000000 .*got 0"),
    "test-episodes-huge": (T.replace("--episodes 1", "--episodes 99999999999999"),
                           "--episodes must be between 1 and 1000000 .*got 99999999999999"),
    "test-workers-huge": (T + " --workers 100000", "--workers must be at most 256, got 100000"),
    "test-json-in-proc": (T + " --json /proc/hmfss.json", NO_PROC),
    "test-ckpt-nan": (T.replace("{root}/ckpt.pt", "{root}/nan.pt"), "holds NaN or infinite weights"),
    "test-ckpt-text": (T.replace("{root}/ckpt.pt", "{root}/text.pt"), "is not a PyTorch checkpoint"),
    "test-classes-and-test-ratio": (TF + " --classes {root}/classes.txt --test-ratio 0.5",
                                    "--classes .*classes.txt and --test-ratio 0.5 both choose the test classes"),
    "test-strict-empty-ground-truth": (TF + " --strict --json {out}/strict.json", "is empty or entirely ignored"),
    "test-benchmark-unknown": (T.replace("pascal --datapath", "ade --datapath"), "invalid choice: 'ade'"),
    "test-max-pixels-negative": (T + " --max-pixels -1", "--max-pixels must be a positive integer"),
    # benchmark
    "benchmark-img-size-huge": (B.replace("--img-size 32", "--img-size 100000"), "got 100000"),
    "benchmark-img-size-negative": (B.replace("--img-size 32", "--img-size -5"), "got -5"),
    "benchmark-threads-negative": (B + " --threads -1", "--threads must be at least 1, got -1"),
    "benchmark-threads-huge": (B + " --threads 100000", "--threads must be at most 1024, got 100000"),
    "benchmark-batch-huge": (B + " --batch 100000", "--batch must be at most 1024 .*got 100000"),
    "benchmark-device-meta": (B + " --device meta", "'meta' holds no data"),
    "benchmark-json-is-folder": (B + " --json {out}/adir", "--json .*adir is a folder"),
    "benchmark-nshot-zero": (B + " --nshot 0", "--nshot must be at least 1"),
    "benchmark-warmup-negative": (B + " --warmup -1", "--warmup must be at least 0"),
    "benchmark-img-size-too-small-for-the-head": (B.replace("--backbone efficientnet-lite0 --img-size 32",
                                                             "--arch asnet --backbone vgg16 --img-size 64"),
                                                   "images of 64x64 pixels are too small for asnet on vgg16: .* "
                                                   "square images need at least 272x272"),
    "benchmark-cuda-graph-on-cpu": (B + " --cuda-graph", "--cuda-graph times inference on a CUDA device: "
                                    "it needs --device cuda and no --train"),
    "benchmark-train-nshot": (BT + " --nshot 2", "--train times 1-shot training episodes; --nshot must be 1, got 2"),
    "benchmark-train-stream-queries": (BT + " --stream-queries 4", "--stream-queries applies to inference only, "
                                       "not with --train"),
    "benchmark-train-no-naive-fast-selection": (BT + " --no-naive --fast-selection",
                                                "--no-naive, --fast-selection apply to inference only"),
    # app (refused before Gradio is imported or a server starts)
    "app-port-out-of-range": ("app --port 99999", "--port must be from 1 to 65535, got 99999"),
    "app-host-unknown": ("app --host no-such-host.invalid", "--host 'no-such-host.invalid' is not an address"),
    "app-host-not-this-machine": ("app --host 192.0.2.1", "cannot listen on 192.0.2.1: "),
    "app-checkpoint-missing": ("app --checkpoint {root}/nope.pt", "checkpoint not found: .*nope.pt"),
    # episodes
    "episodes-out-is-folder": (E + " --out {out}/adir", "--out .*adir is a folder; give a file name"),
    "episodes-out-under-file": (E + " --out {out}/taken/e.jsonl", "taken is a file, not a folder"),
    "episodes-seed-negative": (E + " --seed -1", "--seed must be an integer from 0 to 4294967295, got -1"),
    "episodes-split-seed-too-large": (E + " --split-seed 4294967296", "--split-seed must be an integer from 0 to "),
    "episodes-fold-out-of-range": (E + " --fold 9", "fold 9 is out of range"),
    "episodes-nshot-huge": (E + " --nshot 100000000 --episodes 1", "--nshot must be between 1 and 1000, got 100000000"),
    "episodes-out-in-proc": (E + " --out /proc/hmfss.jsonl", NO_PROC),
    "episodes-fss-empty-list": ("episodes --benchmark fss --splits {empty_splits}", "split has no images"),
    "episodes-splits-missing": (E.replace("{psplits}", "{root}/nowhere"), "split list folder not found"),
    "episodes-protocol-unknown": (E + " --protocol other", "invalid choice: 'other'"),
    # data
    "data-synthetic-out-is-file": ("data synthetic --out {out}/taken --classes 4", "--out .*taken is a file"),
    "data-synthetic-classes-zero": ("data synthetic --out {out}/syn --classes 0", "classes"),
    "data-synthetic-seed-negative": ("data synthetic --out {out}/syn --seed -1",
                                     "--seed must be an integer from 0 to 4294967295, got -1"),
    "data-splits-out-is-file": ("data splits --out {out}/taken", "--out .*taken is a file"),
    "data-voc-aug-out-is-file": ("data voc-aug --voc {root} --sbd {root} --out {out}/taken", "--out .*taken is a file"),
    "data-unknown-tool": ("data weave", "invalid choice: 'weave'"),
    # train (checks that already hold; NaN losses and resume cases are tested with the training code)
    "train-config-bad-yaml": (R + " --config {root}/bad.yaml", "is not valid YAML"),
    "train-config-missing": (R + " --config {root}/nope.yaml", "config file not found"),
    "train-config-unknown-setting": (R + " --config {root}/unknown.yaml", "unknown setting 'colour'"),
    "train-config-not-a-mapping": (R + " --config {root}/list.yaml", "must hold a mapping"),
    "train-bsz-zero": (R + " --bsz 0", "bsz must be at least 1"),
    "train-workers-huge": (R + " --workers 100000", "workers must be at most 256, got 100000"),
    "train-lr-negative": (R + " --lr -1", "lr must be positive"),
    "train-optimizer-unknown": (R + " --optimizer sgd", "optimizer must be one of"),
    "train-heldout-ratio": (R + " --val-split heldout --heldout-ratio 1.5", "heldout_ratio must be in (0, 1)"),
    "train-epochs-text": (R + " --epochs many", "invalid int value: 'many'"),
    "train-resume-missing": ("train --resume {out}/none", "run directory not found"),
    "train-arch-unknown": (R + " --arch unet", "unknown arch 'unet'"),
    "train-model-option-bad": (R + " --model-option colour", "--model-option expects KEY=VALUE"),
}


def test_the_table_is_large_enough():
    assert len(CASES) >= 60


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input(world, case, capsys):
    template, message = CASES[case]
    try:
        assert_refused([part.format(**world) for part in template.split()], message, world["out"], capsys)
    finally:
        hio.set_max_pixels(hio.DEFAULT_MAX_PIXELS)


@pytest.mark.parametrize("error, code, message", [
    (OSError(28, "No space left on device", "/data/out.jsonl"), 2, "hmfss: error: No space left on device: /data/out.jsonl"),
    (OSError(36, "File name too long"), 2, "hmfss: error: File name too long"),
    (BrokenPipeError(32, "Broken pipe"), 141, None),  # `hmfss episodes | head`: the reader left; no message
])
def test_file_system_errors_are_one_line(monkeypatch, capsys, error, code, message):
    import hmfss.cli.episodes
    from hmfss.cli.main import main

    def fail(args):
        raise error

    monkeypatch.setattr(hmfss.cli.episodes, "run", fail)
    assert main(["episodes", "--benchmark", "fss"]) == code
    err = capsys.readouterr().err
    assert err.splitlines() == ([message] if message else [])


def _allocate_too_much_with_torch():
    torch.empty(2**62, dtype=torch.uint8)  # the allocator refuses at once; nothing is touched


def _allocate_too_much_with_numpy():
    np.empty(2**62, dtype=np.uint8)


def _cuda_out_of_memory():
    raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 7.6 GiB")


@pytest.mark.parametrize("fail, size", [
    (_allocate_too_much_with_torch, "4611686018.4 GB"),
    (_allocate_too_much_with_numpy, "4.00 EiB"),
    (_cuda_out_of_memory, "2.00 GiB"),
])
def test_an_input_too_large_for_memory_is_one_line(monkeypatch, capsys, fail, size):
    import hmfss.cli.episodes
    from hmfss.cli.main import main

    monkeypatch.setattr(hmfss.cli.episodes, "run", lambda args: fail())
    assert main(["episodes", "--benchmark", "fss"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"hmfss: error: out of memory (could not allocate {size}): smaller images or batches need less"]


def test_other_runtime_errors_keep_their_traceback(monkeypatch):
    import hmfss.cli.episodes
    from hmfss.cli.main import main

    def fail(args):
        raise RuntimeError("a bug, not the input")

    monkeypatch.setattr(hmfss.cli.episodes, "run", fail)
    with pytest.raises(RuntimeError, match="a bug"):
        main(["episodes", "--benchmark", "fss"])


@pytest.mark.parametrize("error, line", [
    (RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 20000000 bytes."),
     "out of memory (could not allocate 20.0 MB)"),
    (RuntimeError("DefaultCPUAllocator: not enough memory: you tried to allocate 512 bytes."),  # Windows
     "out of memory (could not allocate 512 bytes)"),
    (RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`"), "out of memory"),
    (RuntimeError("unable to write to file </torch_1_2>: Cannot allocate memory (12)"), "out of memory"),  # shared memory
    (MemoryError(), "out of memory"),
    (RuntimeError("mat1 and mat2 shapes cannot be multiplied"), None),
    (ValueError("out of memory"), None),  # only allocator errors count
])
def test_allocator_messages_are_recognised(error, line):
    from hmfss.errors import out_of_memory

    assert out_of_memory(error) == line

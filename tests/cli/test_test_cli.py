import json

import pytest
import torch
from helpers import one_thread  # noqa: F401  (autouse fixture)
from helpers.tiny_data import make_coco, make_folder, make_fss, make_pascal

from hmfss import build_model, load_model, save_checkpoint
from hmfss.cli.main import main
from hmfss.data.dataset import EpisodeDataset
from hmfss.data.episodes import make_episodes
from hmfss.data.readers import make_reader
from hmfss.data.splits import pascal_split
from hmfss.evaluation.metrics import SegmentationMeter


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    torch.manual_seed(0)
    model = build_model("hsnet", "efficientnet-lite0", "hm", img_size=32)
    return save_checkpoint(model, tmp_path_factory.mktemp("ckpt") / "tiny.pt")


@pytest.fixture(scope="module")
def pascal(tmp_path_factory):
    return make_pascal(tmp_path_factory.mktemp("pascal"))


def args(data, bench, ckpt, *extra):
    out = ["test", "--benchmark", bench, "--datapath", str(data.datapath), "--checkpoint", str(ckpt),
           "--workers", "0", "--no-progress"]
    if hasattr(data, "splits"):
        out += ["--splits", str(data.splits)]
    return out + [str(e) for e in extra]


def test_pascal_end_to_end(pascal, ckpt, tmp_path, capsys):
    out = tmp_path / "res.json"
    rc = main(args(pascal, "pascal", ckpt, "--fold", 0, "--nshot", 2, "--episodes", 3,
                   "--json", out, "--visualize", tmp_path / "vis"))
    printed = capsys.readouterr().out
    assert rc == 0
    res = json.loads(out.read_text())
    assert {"miou", "fb_iou", "per_class", "buckets", "episodes", "protocol", "evaluated", "skipped"} <= set(res)
    assert res["episodes"] == res["evaluated"] == 3 and res["skipped"] == 0
    assert res["protocol"]["name"] == "hsnet" and res["protocol"]["seed"] == 0
    assert res["protocol"]["img_size"] == 32 and res["protocol"]["ignore_255"] is True
    assert res["model"]["backbone"] == "efficientnet-lite0" and res["model"]["exact_selection"] is True
    assert [c["name"] for c in res["per_class"]] == ["aeroplane", "bicycle", "bird", "boat", "bottle"]
    assert sum(c["episodes"] for c in res["per_class"]) == 3
    assert [b["bucket"] for b in res["buckets"]] == ["<1%", "1-5%", "5-15%", ">15%"]
    assert sum(b["episodes"] for b in res["buckets"]) == 3
    assert len(list((tmp_path / "vis").glob("*.jpg"))) == 3
    assert f"mIoU {res['miou']:6.2f}" in printed and "aeroplane" in printed and "5-15%" in printed

    # the same figures, computed step by step with the library
    model = load_model(ckpt)
    info = pascal_split(pascal.splits, 0)
    eps = make_episodes(info, 2, 3)
    dataset = EpisodeDataset(make_reader("pascal", pascal.datapath), eps, 32)
    meter = SegmentationMeter(info.class_ids, 20)
    with torch.no_grad():
        for i in range(len(eps)):
            item = dataset[i]
            pred = model.predict_mask(item["query_img"][None], item["support_imgs"][None], item["support_masks"][None])
            meter.add(item["class_id"], pred[0], item["query_mask"], item["query_ignore"])
    assert res["miou"] == pytest.approx(meter.miou()) and res["fb_iou"] == pytest.approx(meter.fb_iou())


def test_original_size_and_flags_override(pascal, ckpt, tmp_path):
    out = tmp_path / "res.json"
    rc = main(args(pascal, "pascal", ckpt, "--episodes", 3, "--use-original-imgsize", "--bsz", 2,
                   "--img-size", 48, "--masking", "fm", "--protocol", "seeded", "--seed", 3, "--fast-selection",
                   "--json", out))
    assert rc == 0
    res = json.loads(out.read_text())
    assert res["protocol"]["original_imgsize"] is True and res["protocol"]["img_size"] == 48
    assert res["protocol"]["name"] == "seeded" and res["protocol"]["seed"] == 3
    assert res["model"]["masking"] == "fm" and res["evaluated"] == 3 and res["model"]["exact_selection"] is False


@pytest.mark.parametrize("bench", ["coco", "fss", "folder"])
def test_other_benchmarks_at_original_size(bench, ckpt, tmp_path):
    data = {"coco": make_coco, "fss": make_fss, "folder": make_folder}[bench](tmp_path)
    out = tmp_path / "res.json"
    rc = main(args(data, bench, ckpt, "--episodes", 3, "--nshot", 2, "--use-original-imgsize", "--bsz", 3,
                   "--json", out))
    assert rc == 0
    res = json.loads(out.read_text())
    assert res["evaluated"] == 3 and res["protocol"]["ignore_255"] is False
    names = {"coco": "person", "fss": "apple_pie", "folder": "bird"}
    assert res["per_class"][0]["name"] == names[bench]


def test_corrupt_image_error_and_skip(tmp_path, ckpt, capsys):
    data = make_pascal(tmp_path)
    (data.datapath / "VOC2012" / "JPEGImages" / "2008_000002.jpg").write_bytes(b"broken")
    rc = main(args(data, "pascal", ckpt, "--episodes", 3))
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1
    assert "cannot read image" in err and "2008_000002.jpg" in err
    out = tmp_path / "res.json"
    rc = main(args(data, "pascal", ckpt, "--episodes", 3, "--skip-bad-images", "--json", out))
    captured = capsys.readouterr()
    res = json.loads(out.read_text())
    eps = make_episodes(pascal_split(data.splits, 0), 1, 3)
    bad = sum("2008_000002" in (e.query, *e.supports) for e in eps)
    assert rc == 0 and bad and res["skipped"] == bad and res["evaluated"] == 3 - bad
    assert f"skipped {bad} episode" in captured.err and f"({bad} skipped)" in captured.out


def test_bad_input_errors(tmp_path, ckpt, pascal, capsys):
    def error(argv):
        assert main(argv) == 2
        return capsys.readouterr().err.strip()

    assert "dataset folder not found" in error(
        ["test", "--benchmark", "pascal", "--datapath", str(tmp_path / "none"), "--splits", str(pascal.splits),
         "--checkpoint", str(ckpt)])
    assert "out of range" in error(args(pascal, "pascal", ckpt, "--fold", 7))
    if not torch.cuda.is_available():
        assert "CUDA is not available" in error(args(pascal, "pascal", ckpt, "--device", "cuda:0"))
    assert "unknown device" in error(args(pascal, "pascal", ckpt, "--device", "abacus"))
    assert "hmfss data splits" in error(
        ["test", "--benchmark", "pascal", "--datapath", str(pascal.datapath), "--checkpoint", str(ckpt)])
    # a split list naming a file that does not exist
    data = make_pascal(tmp_path / "p")
    (data.datapath / "VOC2012" / "SegmentationClassAug" / "2009_000001.png").unlink()
    msg = error(args(data, "pascal", ckpt, "--episodes", 6))
    assert "file not found" in msg and "2009_000001.png" in msg and "--skip-bad-images" in msg
    # an original (non-hmfss) checkpoint needs the architecture flags
    plain = tmp_path / "plain.pt"
    torch.save({"module.learner.x": torch.zeros(1)}, plain)
    assert "--arch" in error(args(pascal, "pascal", plain, "--episodes", 1))


def test_table_lists_only_the_extremes_of_long_class_lists():
    from hmfss.cli.test import format_table

    res = {"benchmark": "fss", "split": "test", "fold": 0, "nshot": 1, "evaluated": 30, "skipped": 0,
           "miou": 12.5, "fb_iou": 60.0, "protocol": {"name": "hsnet", "seed": 0, "img_size": 400, "original_imgsize": False},
           "per_class": [{"name": f"c{i:02d}", "iou": float((7 * i) % 30), "episodes": 1} for i in range(30)],
           "buckets": [{"bucket": "<1%", "miou": None, "episodes": 0, "classes": 0}]}
    text = format_table(res)
    assert "mIoU  12.50   FB-IoU  60.00" in text and "(20 more classes; all in --json)" in text
    shown = [line.split()[0] for line in text.splitlines() if line[:2] in {f"c{d}" for d in range(10)}]
    # the 5 lowest (IoU 0..4) and 5 highest (25..29) classes: c{i} has IoU 7i mod 30
    assert shown == ["c00", "c13", "c26", "c09", "c22", "c25", "c08", "c21", "c04", "c17"]
    assert "400x400" in text and "  -  " not in text.splitlines()[0]


# ---- checkpoints of the VAT and ASNet heads -----------------------------------------------------


@pytest.mark.parametrize("arch, size, options", [("vat", 473, {"benchmark": "fss"}), ("asnet", 257, {})])
def test_trained_vat_and_asnet_checkpoints(trained_head, tmp_path, arch, size, options):
    run = trained_head(arch)
    assert run.rc == 0
    out = tmp_path / "res.json"
    assert main(args(run.data, "fss", run.run / "best.pt", "--episodes", 1, "--json", out)) == 0
    res = json.loads(out.read_text())
    assert res["evaluated"] == 1 and res["protocol"]["img_size"] == size
    assert res["model"]["arch"] == arch and res["model"]["options"] == options
    assert res["per_class"][0]["name"] == "apple_pie"  # the test classes, not the training ones


def test_vat_checkpoint_without_its_benchmark_option_gets_the_tested_one(trained_head, tmp_path, capsys):
    from hmfss.errors import HmfssError

    run = trained_head("vat")
    obj = torch.load(run.run / "best.pt", weights_only=True)
    del obj["config"]["options"]["benchmark"]  # as written before options were recorded
    legacy = tmp_path / "legacy.pt"
    torch.save(obj, legacy)
    # an FSS-1000 VAT has a skip projection the PASCAL layout (the default) lacks
    with pytest.raises(HmfssError, match="does not fit vat/efficientnet-lite0"):
        load_model(legacy)
    assert load_model(legacy, benchmark="fss").config.options == {"benchmark": "fss"}
    # the CLI passes --benchmark: the model loads, then every episode is skipped (no image files
    # here), which stops the run after loading without paying for a VAT forward pass
    empty = tmp_path / "empty"
    (empty / "FSS-1000").mkdir(parents=True)
    argv = ["test", "--benchmark", "fss", "--datapath", str(empty), "--splits", str(run.data.splits),
            "--checkpoint", str(legacy), "--arch", "vat", "--episodes", "1", "--workers", "0", "--no-progress",
            "--skip-bad-images"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "no episode could be evaluated" in err and len(err.splitlines()) == 1, err
    argv[argv.index("fss", 2)] = "pascal"  # the same file as a PASCAL model does not fit
    data = make_pascal(tmp_path / "p")
    argv[argv.index("--datapath") + 1] = str(data.datapath)
    argv[argv.index("--splits") + 1] = str(data.splits)
    assert main(argv) == 2
    assert "does not fit vat/efficientnet-lite0" in capsys.readouterr().err


def _palette_0_255(path, binary):
    """A mask as PIL's convert("P") writes a 0/255 mask: the object is palette index 255."""
    import numpy as np
    from PIL import Image

    Image.fromarray(binary.astype(np.uint8) * 255, "L").convert("P").save(path)


def test_palette_0_255_ground_truth_is_scored_as_objects(tmp_path, ckpt, capsys):
    data = make_folder(tmp_path)
    out_before = tmp_path / "before.json"
    assert main(args(data, "folder", ckpt, "--episodes", 4, "--json", out_before)) == 0
    for name, binary in data.masks.items():
        cls, filename = name.split("/")
        _palette_0_255(data.datapath / cls / "masks" / f"{filename.rsplit('.', 1)[0]}.png", binary)
    out = tmp_path / "res.json"
    assert main(args(data, "folder", ckpt, "--episodes", 4, "--json", out)) == 0
    before, after = json.loads(out_before.read_text()), json.loads(out.read_text())
    assert after["empty_ground_truth"] == [] and "empty or entirely ignored" not in capsys.readouterr().out
    assert (after["miou"], after["fb_iou"], after["buckets"]) == (before["miou"], before["fb_iou"], before["buckets"])


def test_empty_ground_truth_is_counted_and_refused_with_strict(tmp_path, ckpt, capsys):
    import numpy as np
    from PIL import Image

    data = make_folder(tmp_path)
    empty = data.datapath / "bird" / "masks" / "p.png"
    Image.fromarray(np.zeros(np.array(Image.open(empty)).shape, np.uint8)).save(empty)
    out = tmp_path / "res.json"
    assert main(args(data, "folder", ckpt, "--json", out)) == 0
    printed = capsys.readouterr().out
    assert json.loads(out.read_text())["empty_ground_truth"] == ["bird/p.jpg"]
    assert "note: 1 query with an empty or entirely ignored ground truth was scored (first: bird/p.jpg)" in printed
    assert main(args(data, "folder", ckpt, "--strict", "--json", tmp_path / "strict.json")) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "p.jpg is empty or entirely ignored" in err and "--strict" in err
    assert not (tmp_path / "strict.json").exists()


@pytest.mark.parametrize("flag, make, message", [
    ("--json", "dir", "--json .* is a folder; give a file name"),
    ("--visualize", "file", "--visualize .* is a file; give a folder"),
])
def test_output_paths_are_checked_before_the_evaluation(tmp_path, ckpt, pascal, capsys, monkeypatch, flag, make,
                                                        message):
    import hmfss.evaluation.evaluate

    target = tmp_path / "target"
    target.mkdir() if make == "dir" else target.write_text("x")
    monkeypatch.setattr(hmfss.evaluation.evaluate, "evaluate", lambda *a, **k: pytest.fail("evaluated"))
    assert main(args(pascal, "pascal", ckpt, "--episodes", 1, flag, target)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and __import__("re").search(message, err)

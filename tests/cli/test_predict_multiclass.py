"""``hmfss predict --support-dir``: files written, equal to the Python API, bad input."""

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from hmfss import build_model, load_model, save_checkpoint
from hmfss.app.pipeline import MultiClassSegmenter, read_support_dir
from hmfss.cli.main import main
from hmfss.data.io import read_image


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("mc")
    torch.manual_seed(0)
    save_checkpoint(build_model("hsnet", "efficientnet-lite0", "hm", img_size=64), root / "tiny.pt")
    rng = np.random.default_rng(1)
    for name, shots in (("apple", 2), ("pear", 1)):
        for sub in ("images", "masks"):
            (root / "sup" / name / sub).mkdir(parents=True)
        for k in range(shots):
            Image.fromarray(rng.integers(0, 255, (48, 56, 3), np.uint8)).save(root / "sup" / name / "images" / f"{k}.jpg")
            mask = np.zeros((48, 56), np.uint8)
            mask[8 + 4 * k:30, 10:40 - 5 * k] = 255
            Image.fromarray(mask).save(root / "sup" / name / "masks" / f"{k}.png")
    (root / "q").mkdir()
    for i, shape in enumerate(((40, 50, 3), (33, 61, 3), (64, 64, 3))):
        Image.fromarray(rng.integers(0, 255, shape, np.uint8)).save(root / "q" / f"img{i}.png")
    return root


def test_support_dir_writes_every_file_and_matches_the_api(folder, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["predict", "--checkpoint", str(folder / "tiny.pt"), "--support-dir", str(folder / "sup"),
                 "--query", str(folder / "q"), "--out", str(out), "--batch-size", "2"]) == 0
    labels = json.loads((out / "labels.json").read_text())
    assert [(c["index"], c["name"]) for c in labels["classes"]] == [(0, "background"), (1, "apple"), (2, "pear")]
    model = load_model(folder / "tiny.pt")
    segmenter = MultiClassSegmenter.prepare(model, read_support_dir(folder / "sup"))
    queries = sorted((folder / "q").iterdir())
    images = [read_image(p) for p in queries]
    preds = segmenter.segment(images, batch_size=2)
    for path, image, (pred, _) in zip(queries, images, preds):
        label_png = Image.open(out / f"{path.stem}_labels.png")
        assert label_png.mode == "P" and label_png.size == image.size
        assert np.array_equal(np.array(label_png), pred.labels.numpy())
        for index, name in ((1, "apple"), (2, "pear")):
            mask = np.array(Image.open(out / f"{path.stem}_mask_{name}.png"))
            assert set(np.unique(mask)) <= {0, 255}
            assert np.array_equal(mask == 255, pred.labels.numpy() == index)
        overlay = Image.open(out / f"{path.stem}_overlay.png")
        assert overlay.width == image.width and overlay.height > image.height  # legend strip below
    assert len(list(out.iterdir())) == 3 * 4 + 1


def test_one_class_folder_equals_the_single_class_form(folder, tmp_path):
    one = tmp_path / "one"
    shutil.copytree(folder / "sup" / "apple", one / "apple")
    sup = folder / "sup" / "apple"
    pairs = [a for k in range(2) for a in ("--support", str(sup / "images" / f"{k}.jpg"), str(sup / "masks" / f"{k}.png"))]
    args = ["predict", "--checkpoint", str(folder / "tiny.pt"), "--query", str(folder / "q")]
    assert main(args + pairs + ["--out", str(tmp_path / "single")]) == 0
    assert main(args + ["--support-dir", str(one), "--out", str(tmp_path / "multi")]) == 0
    for i in range(3):
        single = np.array(Image.open(tmp_path / "single" / f"img{i}_mask.png"))
        multi = np.array(Image.open(tmp_path / "multi" / f"img{i}_mask_apple.png"))
        assert np.array_equal(single, multi)


@pytest.mark.parametrize("breakage, message", [
    ("no_mask", "no mask for support image"),
    ("empty_mask", "is empty"),
    ("no_classes", "has no class folders"),
    ("bad_name", "is not allowed"),
])
def test_bad_support_folders_exit_2_with_one_line(folder, tmp_path, capsys, breakage, message):
    sup = tmp_path / "sup"
    shutil.copytree(folder / "sup", sup)
    if breakage == "no_mask":
        (sup / "pear" / "masks" / "0.png").unlink()
    elif breakage == "empty_mask":
        Image.fromarray(np.zeros((48, 56), np.uint8)).save(sup / "pear" / "masks" / "0.png")
    elif breakage == "no_classes":
        shutil.rmtree(sup)
        sup.mkdir()
    else:
        (sup / "pear").rename(sup / "background")
    code = main(["predict", "--checkpoint", str(folder / "tiny.pt"), "--support-dir", str(sup),
                 "--query", str(folder / "q"), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_hidden_folders_are_not_classes(folder, tmp_path):
    sup = tmp_path / "sup"
    shutil.copytree(folder / "sup", sup)
    shutil.copytree(sup / "pear", sup / ".ipynb_checkpoints")  # a notebook's or an editor's folder
    assert [c.name for c in read_support_dir(sup)] == ["apple", "pear"]


def test_more_classes_than_a_label_image_holds_are_refused():
    from hmfss.app.pipeline import MAX_CLASSES, ClassSupport, MultiClassSegmenter
    from hmfss.errors import HmfssError

    assert MAX_CLASSES == 255  # label PNGs: one byte per pixel, 0 for the background
    classes = [ClassSupport(f"c{i}") for i in range(256)]
    with pytest.raises(HmfssError, match="256 classes: at most 255 fit the one-byte label images"):
        MultiClassSegmenter.prepare(None, classes)

import numpy as np
import pytest
import torch
from PIL import Image

from hmfss import build_model, load_model, save_checkpoint
from hmfss.cli.main import main
from hmfss.cli.predict import load_support_set
from hmfss.data.io import read_image, read_mask
from hmfss.data.transforms import image_to_tensor


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    torch.manual_seed(0)
    model = build_model("hsnet", "efficientnet-lite0", "hm", img_size=64)
    return save_checkpoint(model, tmp_path_factory.mktemp("ckpt") / "tiny.pt")


def _blob(h, w, fg=255):
    arr = np.zeros((h, w), np.uint8)
    arr[h // 4: 3 * h // 4, w // 3: 2 * w // 3] = fg
    return arr


@pytest.fixture()
def files(tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "q").mkdir()
    Image.fromarray(rng.integers(0, 255, (40, 50, 3), np.uint8)).save(tmp_path / "s1.jpg")
    Image.fromarray(_blob(40, 50)).save(tmp_path / "s1.png")  # 0/255
    Image.fromarray(rng.integers(0, 255, (30, 30), np.uint8)).save(tmp_path / "s2.png")  # grayscale
    pal = Image.fromarray(_blob(30, 30, fg=1), mode="L").convert("P")
    pal.putpalette([0, 0, 0, 128, 0, 0] + [0] * 762)
    pal.save(tmp_path / "s2_mask.png")  # palette mask, index 1
    Image.fromarray(rng.integers(0, 255, (33, 47, 4), np.uint8), "RGBA").save(tmp_path / "q" / "a.png")
    Image.fromarray(rng.integers(0, 255, (21, 60, 3), np.uint8)).convert("P").save(tmp_path / "q" / "b.png")
    Image.fromarray(rng.integers(0, 255, (25, 25, 3), np.uint8)).save(tmp_path / "c.jpg")
    return tmp_path


def test_predict_writes_masks_at_original_size_for_files_and_folders(ckpt, files):
    out = files / "out"
    code = main(["predict", "--checkpoint", str(ckpt), "--support", str(files / "s1.jpg"), str(files / "s1.png"),
                 "--support", str(files / "s2.png"), str(files / "s2_mask.png"),
                 "--query", str(files / "q"), str(files / "c.jpg"), "--out", str(out), "--batch-size", "2"])
    assert code == 0
    for stem, (h, w) in {"a": (33, 47), "b": (21, 60), "c": (25, 25)}.items():
        mask = np.array(Image.open(out / f"{stem}_mask.png"))
        assert mask.shape == (h, w) and set(np.unique(mask)) <= {0, 255}
        assert Image.open(out / f"{stem}_overlay.png").size == (w, h)
    # the written mask is what the Python API gives for the same inputs
    model = load_model(ckpt)
    imgs, masks = load_support_set([[files / "s1.jpg", files / "s1.png"], [files / "s2.png", files / "s2_mask.png"]], 64)
    q = read_image(files / "q" / "b.png")
    with torch.no_grad():
        expected = model.predict_mask(image_to_tensor(q, 64)[None], imgs, masks, output_size=[(21, 60)])[0]
    assert np.array_equal(np.array(Image.open(out / "b_mask.png")) // 255, expected.numpy())


@pytest.mark.parametrize("flag,exact", [([], True), (["--fast-selection"], False)])
def test_fast_selection_flag_reaches_the_model(ckpt, files, monkeypatch, flag, exact):
    from hmfss.model import FewShotSegmenter

    seen, extract = [], FewShotSegmenter._extract
    monkeypatch.setattr(FewShotSegmenter, "_extract", lambda self, *a: seen.append(self.exact_selection) or extract(self, *a))
    code = main(["predict", "--checkpoint", str(ckpt), "--support", str(files / "s1.jpg"), str(files / "s1.png"),
                 "--query", str(files / "c.jpg"), "--out", str(files / "out"), *flag])
    assert code == 0 and seen and set(seen) == {exact}


def test_mask_formats_are_read_as_binary(files):
    assert read_mask(files / "s1.png").max() == 1
    assert read_mask(files / "s2_mask.png").sum() == _blob(30, 30, 1).sum()
    Image.fromarray(_blob(8, 8, fg=1)).save(files / "01.png")
    assert np.array_equal(read_mask(files / "01.png"), _blob(8, 8, 1))


def _run(ckpt, files, *extra, support=("s1.jpg", "s1.png"), query="c.jpg"):
    return main(["predict", "--checkpoint", str(ckpt), "--support", str(files / support[0]), str(files / support[1]),
                 "--query", str(files / query), "--out", str(files / "o"), *extra])


def test_bad_inputs_are_one_line_errors(ckpt, files, capsys):
    (files / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    Image.fromarray(np.zeros((40, 50), np.uint8)).save(files / "empty.png")
    cases = [
        (dict(query="missing.jpg"), "query not found"),
        (dict(query="broken.jpg"), "cannot read image"),
        (dict(support=("s1.jpg", "s2_mask.png")), "is 30x30 but its image"),
        (dict(support=("s1.jpg", "empty.png")), "empty.png is empty"),
        (dict(support=("nothere.jpg", "s1.png")), "file not found"),
    ]
    for kwargs, message in cases:
        assert _run(ckpt, files, **kwargs) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err


def test_checkpoint_that_does_not_fit_the_flags(ckpt, files, capsys):
    assert _run(ckpt, files, "--backbone", "resnet50") == 2
    assert "is a hsnet/efficientnet-lite0 model, not hsnet/resnet50" in capsys.readouterr().err


def test_support_needs_image_and_mask(ckpt, files, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["predict", "--checkpoint", str(ckpt), "--support", str(files / "s1.jpg"), "--query", str(files / "c.jpg"), "--out", "x"])
    assert exc.value.code == 2
    assert "expected 2 arguments" in capsys.readouterr().err

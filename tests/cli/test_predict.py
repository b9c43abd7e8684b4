import os

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


def test_queries_with_the_same_stem_get_distinct_outputs(ckpt, files, capsys):
    rng = np.random.default_rng(3)
    for sub, (h, w) in {"a": (20, 30), "b": (24, 18)}.items():
        (files / sub).mkdir()
        Image.fromarray(rng.integers(0, 255, (h, w, 3), np.uint8)).save(files / sub / "x.jpg")
    Image.fromarray(rng.integers(0, 255, (16, 16, 3), np.uint8)).save(files / "a" / "x.png")
    out = files / "out"
    code = main(["predict", "--checkpoint", str(ckpt), "--support", str(files / "s1.jpg"), str(files / "s1.png"),
                 "--query", str(files / "a" / "x.jpg"), str(files / "b" / "x.jpg"), str(files / "a" / "x.png"),
                 str(files / "b" / "x.jpg"), "--out", str(out)])
    assert code == 0
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*_mask.png"))
    assert written == ["x_jpg_mask.png", "x_mask.png", "x_png_mask.png"]
    assert Image.open(out / "x_jpg_mask.png").size == (30, 20)
    assert Image.open(out / "x_mask.png").size == (18, 24)
    assert Image.open(out / "x_png_mask.png").size == (16, 16)
    assert "wrote 6 files" in capsys.readouterr().out
    # a second run says that it replaced the files of the first
    assert main(["predict", "--checkpoint", str(ckpt), "--support", str(files / "s1.jpg"), str(files / "s1.png"),
                 "--query", str(files / "b" / "x.jpg"), "--out", str(out)]) == 0
    assert "(2 of them replaced files of an earlier run)" in capsys.readouterr().out


def test_output_names_keep_just_enough_of_the_folders():
    from pathlib import Path

    from hmfss.cli.outputs import output_names

    paths = [Path("/d/p/a/x.jpg"), Path("/d/q/a/x.jpg"), Path("/d/y.jpg"), Path("/d/z.jpg"), Path("/d/r/x.jpg")]
    assert output_names(paths) == ["p/a/x", "q/a/x", "y", "z", "d/r/x"]  # one depth per group
    assert output_names([Path("/e/a/x.jpg"), Path("/e/b/x.jpg"), Path("/e/b/x.png")]) == ["x", "x_jpg", "x_png"]


def test_output_names_are_distinct_whatever_the_letter_case_and_stay_inside_out():
    from pathlib import Path

    from hmfss.cli.outputs import output_names

    # x.JPG beside x.jpg, and a file already called x_jpg: numbered where still taken
    assert output_names([Path("/c/x.jpg"), Path("/c/x.JPG"), Path("/c/x_jpg.png"), Path("/c/x.png")]) == [
        "x_jpg", "x_jpg_2", "x_jpg_3", "x_png"]
    assert output_names([Path("/c/X.jpg"), Path("/d/x.jpg")]) == ["c/X", "d/x"]  # X and x clash on macOS
    # one folder at the root of the file system: no name starts with "/" (it would leave --out)
    assert output_names([Path("/a/x.jpg"), Path("/b/a/x.jpg")]) == ["a/x", "b/a/x"]


def test_predict_writes_one_pair_of_files_per_query_when_names_differ_only_by_case(ckpt, files):
    (files / "c").mkdir()
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(files / "c" / "x.jpg")
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(files / "c" / "x.JPG")
    out = files / "out"
    assert _run(ckpt, files, "--query", str(files / "c"), "--out", str(out)) == 0
    sizes = {p.name: Image.open(p).size for p in out.glob("*_mask.png")}
    assert sizes == {"x_jpg_mask.png": (16, 16), "x_jpg_2_mask.png": (30, 20)}  # sorted: x.JPG first


def test_check_output_files_refuses_clashes_and_inputs(tmp_path):
    from pathlib import Path

    from hmfss.cli.outputs import check_output_files
    from hmfss.errors import HmfssError

    q1, q2 = Path("/q/a.jpg"), Path("/q/b.jpg")
    check_output_files(tmp_path, [("a_mask.png", q1), ("a_overlay.png", q1), ("b_mask.png", q2)], [q1, q2])
    with pytest.raises(HmfssError, match="two outputs would be named .*A_mask.png: one for /q/a.jpg, one for /q/b.jpg"):
        check_output_files(tmp_path, [("a_mask.png", q1), ("A_mask.png", q2)], [q1, q2])
    with pytest.raises(HmfssError, match="the output .*/b.jpg for /q/a.jpg would overwrite an input file"):
        check_output_files(tmp_path, [("b.jpg", q1)], [tmp_path / "b.jpg"])


def test_exif_rotated_query_gives_mask_in_displayed_orientation(ckpt, files):
    exif = Image.Exif()
    exif[0x0112] = 6  # displayed rotated by 90 degrees
    Image.fromarray(np.zeros((20, 50, 3), np.uint8)).save(files / "rot.jpg", exif=exif)
    Image.fromarray(_blob(50, 20)).save(files / "rot_support.png")  # drawn on the displayed image
    out = files / "out"
    assert main(["predict", "--checkpoint", str(ckpt), "--support", str(files / "rot.jpg"),
                 str(files / "rot_support.png"), "--query", str(files / "rot.jpg"), "--out", str(out)]) == 0
    assert Image.open(out / "rot_mask.png").size == (20, 50)
    assert Image.open(out / "rot_overlay.png").size == (20, 50)


def test_bad_output_folder_is_refused_before_any_work(ckpt, files, capsys, monkeypatch):
    import hmfss.checkpoint

    (files / "taken").write_text("a file")
    monkeypatch.setattr(hmfss.checkpoint, "read_checkpoint", lambda *a: pytest.fail("loaded the model"))
    code = main(["predict", "--checkpoint", str(ckpt), "--support", str(files / "s1.jpg"), str(files / "s1.png"),
                 "--query", str(files / "c.jpg"), "--out", str(files / "taken")])
    assert code == 2
    assert "--out" in capsys.readouterr().err and (files / "taken").read_text() == "a file"


def test_stale_temp_files_in_the_output_folder_are_removed(ckpt, files):
    out = files / "out"
    out.mkdir()
    (out / ".c_mask.png.abcd1234.tmp").write_bytes(b"half")
    os.utime(out / ".c_mask.png.abcd1234.tmp", (1e9, 1e9))  # long untouched
    (out / "mine.txt").write_text("kept")
    assert _run(ckpt, files, "--out", str(out)) == 0  # the later --out wins
    assert sorted(p.name for p in out.iterdir()) == ["c_mask.png", "c_overlay.png", "mine.txt"]

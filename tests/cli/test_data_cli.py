import functools
import http.server
import json
import os
import pickle
import sys
import threading

import numpy as np
import pytest
from PIL import Image

from hmfss.cli.main import main
from hmfss.data.splits import coco_split, fss_split, pascal_split
from hmfss.data.tools import SPLIT_FILES, rasterize


# ---- hmfss data splits (against a local HTTP server) ------------------------------------------

class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture()
def server(tmp_path, monkeypatch):
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    root = tmp_path / "remote"
    tree = root / "data" / "splits"
    for rel in SPLIT_FILES:
        path = tree / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if rel.startswith("pascal"):
            fold = int(rel[-5])
            path.write_text("".join(f"2007_{fold}{k:05d}__{5 * fold + 1 + k % 5:02d}\n" for k in range(10)))
        elif rel.startswith("coco"):
            path.write_bytes(pickle.dumps({c: [f"val2014/COCO_val2014_{c:012d}.jpg", f"val2014/COCO_val2014_{c + 100:012d}.jpg"]
                                           for c in range(80)}))
        else:
            path.write_text("abacus\nbanjo\n")
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield tree, f"http://127.0.0.1:{httpd.server_address[1]}/data/splits"
    httpd.shutdown()
    httpd.server_close()


def test_download_splits(server, tmp_path, capsys):
    tree, url = server
    out = tmp_path / "splits"
    assert main(["data", "splits", "--out", str(out), "--base-url", url]) == 0
    assert "19 split list(s) downloaded" in capsys.readouterr().out
    for rel in SPLIT_FILES:
        assert (out / rel).read_bytes() == (tree / rel).read_bytes()
    # the downloaded lists are usable
    assert len(pascal_split(out, 2).entries) == 10
    assert coco_split(out, 1).classwise[1][0] == "val2014/COCO_val2014_000000000001.jpg"
    assert fss_split(out, "test").class_names[760] == "abacus"
    # resumable: nothing downloaded again unless --force
    (tree / "fss" / "test.txt").write_text("zebra\nyak\n")
    assert main(["data", "splits", "--out", str(out), "--base-url", url]) == 0
    assert "0 split list(s) downloaded, 19 already present" in capsys.readouterr().out
    assert main(["data", "splits", "--out", str(out), "--base-url", url, "--force"]) == 0
    assert (out / "fss" / "test.txt").read_text() == "zebra\nyak\n"


def test_download_errors_leave_no_partial_files(server, tmp_path, capsys):
    tree, url = server
    out = tmp_path / "splits"
    (tree / "coco" / "val" / "fold2.pkl").unlink()
    assert main(["data", "splits", "--out", str(out), "--base-url", url]) == 2
    err = capsys.readouterr().err
    assert "cannot download" in err and "coco/val/fold2.pkl" in err and "404" in err
    assert not (out / "coco" / "val" / "fold2.pkl").exists()
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]


def test_download_refuses_code_in_pickles_and_html(server, tmp_path, capsys):
    tree, url = server
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    (tree / "coco" / "trn" / "fold0.pkl").write_bytes(pickle.dumps({0: Evil()}))
    out = tmp_path / "splits"
    assert main(["data", "splits", "--out", str(out), "--base-url", url]) == 2
    assert "not a split list" in capsys.readouterr().err
    assert not marker.exists() and not (out / "coco" / "trn" / "fold0.pkl").exists()
    (tree / "coco" / "trn" / "fold0.pkl").write_bytes(pickle.dumps({0: []}))
    (tree / "fss" / "val.txt").write_text("<html><body>rate limited</body></html>\n")
    assert main(["data", "splits", "--out", str(out), "--base-url", url]) == 2
    assert "fss/val.txt is not a split list" in capsys.readouterr().err


# ---- hmfss data coco-masks -------------------------------------------------------------------

def uncompressed_rle(mask):
    """COCO uncompressed RLE: run lengths over the column-major flattening, starting with 0s."""
    flat = mask.flatten(order="F")
    counts, value, run = [], 0, 0
    for v in flat:
        if v == value:
            run += 1
        else:
            counts.append(run)
            value, run = v, 1
    counts.append(run)
    return {"counts": counts, "size": list(mask.shape)}


@pytest.fixture()
def coco_json(tmp_path):
    h, w = 20, 30
    a = np.zeros((h, w), np.uint8)
    a[2:10, 3:15] = 1
    b = np.zeros((h, w), np.uint8)
    b[6:16, 10:25] = 1
    crowd = np.zeros((h, w), np.uint8)
    crowd[17:20, 0:5] = 1
    data = {
        "images": [
            {"id": 7, "file_name": "COCO_val2014_000000000007.jpg", "height": h, "width": w},
            {"id": 3, "file_name": "COCO_val2014_000000000003.jpg", "height": 8, "width": 9},
        ],
        "categories": [{"id": 90, "name": "toothbrush"}, {"id": 1, "name": "person"}, {"id": 2, "name": "bicycle"}],
        "annotations": [
            {"id": 1, "image_id": 7, "category_id": 2, "iscrowd": 0, "segmentation": uncompressed_rle(a)},
            # a later instance overwrites the overlap
            {"id": 2, "image_id": 7, "category_id": 1, "iscrowd": 0, "segmentation": uncompressed_rle(b)},
            {"id": 3, "image_id": 7, "category_id": 90, "iscrowd": 1, "segmentation": uncompressed_rle(crowd)},
        ],
    }
    path = tmp_path / "instances_val2014.json"
    path.write_text(json.dumps(data))
    return path, a, b, crowd


def test_coco_masks(coco_json, tmp_path, capsys):
    pytest.importorskip("pycocotools")
    path, a, b, crowd = coco_json
    out = tmp_path / "annotations"
    assert main(["data", "coco-masks", "--annotations", str(path), "--out", str(out)]) == 0
    assert "2 mask(s) written" in capsys.readouterr().out
    label = np.array(Image.open(out / "val2014" / "COCO_val2014_000000000007.png"))
    expected = np.zeros_like(a)
    expected[a > 0] = 2  # bicycle = 2nd category by id
    expected[b > 0] = 1  # person
    expected[crowd > 0] = 3  # id 90 -> 3rd
    np.testing.assert_array_equal(label, expected)
    empty = Image.open(out / "val2014" / "COCO_val2014_000000000003.png")
    assert empty.mode == "L" and empty.size == (9, 8) and not np.array(empty).any()
    # resumable
    assert main(["data", "coco-masks", "--annotations", str(path), "--out", str(out)]) == 0
    assert "0 mask(s) written, 2 already present" in capsys.readouterr().out
    # crowd regions can be left out
    out2 = tmp_path / "nocrowd"
    assert main(["data", "coco-masks", "--annotations", str(path), "--out", str(out2), "--skip-crowd"]) == 0
    assert 3 not in np.array(Image.open(out2 / "val2014" / "COCO_val2014_000000000007.png"))


def test_rasterize_polygons_and_compressed_rle():
    mask_utils = pytest.importorskip("pycocotools.mask")
    poly = rasterize([[2.0, 2.0, 12.0, 2.0, 12.0, 10.0, 2.0, 10.0]], 16, 16)
    assert poly.shape == (16, 16) and poly[4:9, 4:11].all() and not poly[12:, :].any() and not poly[:, 14:].any()
    m = np.zeros((6, 7), np.uint8, order="F")
    m[1:4, 2:6] = 1
    rle = mask_utils.encode(np.asfortranarray(m))
    rle["counts"] = rle["counts"].decode("ascii")  # as stored in json
    np.testing.assert_array_equal(rasterize(rle, 6, 7), m)
    assert not rasterize([[1.0, 1.0, 2.0]], 5, 5).any()  # degenerate polygon


def test_coco_masks_errors(coco_json, tmp_path, monkeypatch, capsys):
    path = coco_json[0]
    monkeypatch.setitem(sys.modules, "pycocotools", None)
    assert main(["data", "coco-masks", "--annotations", str(path), "--out", str(tmp_path / "o")]) == 2
    assert "needs pycocotools" in capsys.readouterr().err
    monkeypatch.undo()
    pytest.importorskip("pycocotools")
    bad = tmp_path / "instances_x.json"
    bad.write_text(json.dumps({"images": []}))
    assert main(["data", "coco-masks", "--annotations", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert "is not a COCO instances file" in capsys.readouterr().err


@pytest.mark.parametrize("content, message", [
    ([1, 2], "is not a COCO instances file (it holds a list, not an object)"),
    ({"images": [{"id": 1, "file_name": "a.jpg", "height": 0, "width": -5}], "annotations": [], "categories": []},
     "image 1 has size -5x0; expected positive integers"),
    ({"images": [{"id": 1, "file_name": "a.jpg", "height": 10**8, "width": 10**8}], "annotations": [],
      "categories": []}, "image 1 is 100000000x100000000 pixels, over the pixel limit"),
    ({"images": [{"id": 1, "file_name": "a.jpg", "height": 4, "width": 4}], "annotations": [{"id": 7}],
      "categories": []}, "malformed COCO entry (KeyError: 'image_id')"),
])
def test_coco_masks_malformed_files_are_one_line_errors(tmp_path, capsys, content, message):
    pytest.importorskip("pycocotools")
    bad = tmp_path / "instances_x.json"
    bad.write_text(json.dumps(content))
    assert main(["data", "coco-masks", "--annotations", str(bad), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and message in err and str(bad) in err, err
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").rglob("*.png"))


# ---- hmfss data voc-aug ----------------------------------------------------------------------

def test_voc_aug(tmp_path, capsys):
    sio = pytest.importorskip("scipy.io")
    sbd = tmp_path / "benchmark_RELEASE" / "dataset" / "cls"
    sbd.mkdir(parents=True)
    seg_a = np.zeros((10, 12), np.uint8)
    seg_a[2:6, 3:9] = 15
    seg_b = np.full((10, 12), 7, np.uint8)
    for name, seg in (("2008_000001", seg_a), ("2008_000002", seg_b)):
        sio.savemat(sbd / f"{name}.mat", {"GTcls": {"Segmentation": seg, "Boundaries": np.zeros(1),
                                                     "CategoriesPresent": np.array([1])}})
    voc = tmp_path / "VOC2012" / "SegmentationClass"
    voc.mkdir(parents=True)
    voc_b = np.zeros((10, 12), np.uint8)
    voc_b[3:7, 3:7] = 7
    voc_b[2, 2:8] = 255
    voc_c = np.full((5, 5), 20, np.uint8)
    for name, arr in (("2008_000002", voc_b), ("2007_000032", voc_c)):
        pal = Image.fromarray(arr, mode="L").convert("P")
        pal.putpalette([(i * 37) % 256 for i in range(768)])  # colours differ from indices
        pal.save(voc / f"{name}.png")
    out = tmp_path / "SegmentationClassAug"
    assert main(["data", "voc-aug", "--sbd", str(tmp_path / "benchmark_RELEASE"), "--voc",
                 str(tmp_path / "VOC2012"), "--out", str(out)]) == 0
    assert "2 mask(s) from VOC2012, 1 from SBD" in capsys.readouterr().out
    for name, expected in (("2008_000001", seg_a), ("2008_000002", voc_b), ("2007_000032", voc_c)):
        img = Image.open(out / f"{name}.png")
        assert img.mode == "L"
        np.testing.assert_array_equal(np.array(img), expected)
    assert main(["data", "voc-aug", "--sbd", str(sbd), "--voc", str(voc), "--out", str(out)]) == 0
    assert "3 already present" in capsys.readouterr().out
    (sbd / "2009_000009.mat").write_bytes(b"not a mat file")
    assert main(["data", "voc-aug", "--sbd", str(sbd), "--out", str(out)]) == 2
    assert "cannot read SBD file" in capsys.readouterr().err
    assert main(["data", "voc-aug", "--out", str(out)]) == 2
    assert "give --sbd and/or --voc" in capsys.readouterr().err


def test_data_synthetic_is_wired_into_the_cli(tmp_path):
    from hmfss.cli.main import main
    from hmfss.data.splits import load_split

    out = tmp_path / "synth"
    assert main(["data", "synthetic", "--out", str(out), "--classes", "6", "--images-per-class", "3",
                 "--size", "32", "--seed", "1"]) == 0
    info = load_split("fss", out / "splits", split="test", datapath=out)
    assert info.entries and all(len(v) == 3 for v in info.classwise.values())

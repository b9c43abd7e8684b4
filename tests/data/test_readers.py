import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers.tiny_data import make_coco, make_folder, make_fss, make_pascal
from PIL import Image

from hmfss.backbones import IMAGENET_MEAN, IMAGENET_STD
from hmfss.data.dataset import EpisodeDataset, collate_episodes
from hmfss.data.episodes import Episode, make_episodes
from hmfss.data.readers import make_reader
from hmfss.data.splits import coco_split, folder_split, fss_split, pascal_split
from hmfss.errors import HmfssError


@pytest.fixture()
def pascal(tmp_path):
    return make_pascal(tmp_path)


def test_pascal_reader_binary_mask_and_ignore(pascal):
    reader = make_reader("pascal", pascal.datapath)
    label = pascal.labels["2010_000001"]  # classes 1 and 2 with 255 rings
    for cid in (0, 1):
        sample = reader.load("2010_000001", cid)
        assert sample.image.mode == "RGB" and sample.size == label.shape
        np.testing.assert_array_equal(sample.mask, (label == cid + 1).astype(np.uint8))
        np.testing.assert_array_equal(sample.ignore, label == 255)
        assert sample.mask[sample.ignore].sum() == 0  # 255 is background in the binary mask


def test_pascal_grayscale_jpeg_becomes_rgb(pascal):
    path = pascal.datapath / "VOC2012" / "JPEGImages" / "2008_000001.jpg"
    h, w = pascal.labels["2008_000001"].shape
    Image.fromarray(np.full((h, w), 77, np.uint8), mode="L").save(path)
    sample = make_reader("pascal", pascal.datapath).load("2008_000001", 0)
    assert sample.image.mode == "RGB"
    assert np.abs(np.asarray(sample.image).astype(int) - 77).max() <= 1


def test_coco_reader(tmp_path):
    coco = make_coco(tmp_path)
    reader = make_reader("coco", coco.datapath)
    name = coco.names[1]
    image, mask = reader.paths(name)
    assert image == coco.datapath / "COCO2014" / "val2014" / "COCO_val2014_000000000285.jpg"
    assert mask == coco.datapath / "COCO2014" / "annotations" / "val2014" / "COCO_val2014_000000000285.png"
    sample = reader.load(name, 8)
    np.testing.assert_array_equal(sample.mask, coco.labels[name] == 9)
    assert sample.ignore is None and sample.mask.sum() > 0


def test_fss_reader_thresholds_gray_at_128(tmp_path):
    fss = make_fss(tmp_path)
    reader = make_reader("fss", fss.datapath)
    sample = reader.load("apple_pie/3.jpg", 760)
    gray = fss.labels["apple_pie/3.jpg"]
    np.testing.assert_array_equal(sample.mask, (gray >= 128).astype(np.uint8))
    assert sample.mask[16, 5] == 0 and sample.mask[18, 5] == 1  # 127 -> 0, 128 -> 1


def test_folder_reader_accepts_0_255_0_1_and_palette(tmp_path):
    data = make_folder(tmp_path)
    info = folder_split(data.datapath)
    reader = make_reader("folder", data.datapath, info)
    for name, expected in data.masks.items():
        np.testing.assert_array_equal(reader.load(name, 0).mask, expected)


def test_reader_errors(tmp_path, pascal):
    with pytest.raises(HmfssError, match=r"dataset folder not found: .*nowhere \(--datapath\)"):
        make_reader("pascal", tmp_path / "nowhere")
    (tmp_path / "root").mkdir()
    with pytest.raises(HmfssError, match=r"dataset folder not found: .*root/VOC2012/JPEGImages"):
        make_reader("pascal", tmp_path / "root")
    (tmp_path / "root" / "VOC2012" / "JPEGImages").mkdir(parents=True)
    with pytest.raises(HmfssError, match=r"dataset folder not found: .*SegmentationClassAug"):
        make_reader("pascal", tmp_path / "root")
    with pytest.raises(HmfssError, match=r"dataset folder not found: .*FSS-1000"):
        make_reader("fss", tmp_path / "root")
    reader = make_reader("pascal", pascal.datapath)
    assert reader.missing(["2008_000001", "2099_000000"]) == (
        "2099_000000", pascal.datapath / "VOC2012" / "JPEGImages" / "2099_000000.jpg")
    # a mask whose size differs from its image
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(pascal.datapath / "VOC2012" / "SegmentationClassAug" / "2008_000002.png")
    with pytest.raises(HmfssError, match=r"mask .*2008_000002.png is 10x10 but image .*2008_000002.jpg is 40x48"):
        reader.load("2008_000002", 0)


# ---- episode dataset --------------------------------------------------------------------------

def legacy_nearest(arr, size):
    return F.interpolate(torch.as_tensor(arr).float()[None, None], (size, size), mode="nearest")[0, 0]


def normalised(img, size):
    arr = np.asarray(img.convert("RGB").resize((size, size), Image.BILINEAR), dtype=np.float32) / 255.0
    arr = (arr - np.array(IMAGENET_MEAN, np.float32)) / np.array(IMAGENET_STD, np.float32)
    return torch.from_numpy(arr).permute(2, 0, 1)


def test_dataset_item(pascal):
    info = pascal_split(pascal.splits, 0)
    reader = make_reader("pascal", pascal.datapath)
    ep = Episode("2010_000001", ("2008_000001", "2008_000003"), 0)
    item = EpisodeDataset(reader, [ep], 32, original_size=True)[0]
    label = pascal.labels["2010_000001"]
    assert item["query_img"].shape == (3, 32, 32)
    jpg = Image.open(pascal.datapath / "VOC2012" / "JPEGImages" / "2010_000001.jpg")
    torch.testing.assert_close(item["query_img"], normalised(jpg, 32), atol=1e-5, rtol=0)
    resized = legacy_nearest(label, 32)
    assert torch.equal(item["query_mask"], (resized == 1).float())
    assert torch.equal(item["query_ignore"], resized == 255)
    assert item["query_ignore"].any()
    assert item["support_imgs"].shape == (2, 3, 32, 32)
    assert torch.equal(item["support_masks"][1], (legacy_nearest(pascal.labels["2008_000003"], 32) == 1).float())
    assert item["org_query_size"] == label.shape
    assert torch.equal(item["query_mask_full"], torch.from_numpy(label == 1).float())
    assert torch.equal(item["query_ignore_full"], torch.from_numpy(label == 255))
    assert item["class_id"] == 0 and item["support_names"] == list(ep.supports)
    plain = EpisodeDataset(reader, [ep], 32, ignore_255=False)[0]
    assert not plain["query_ignore"].any() and "query_mask_full" not in plain
    assert info.class_ids[0] == item["class_id"]


def test_dataset_on_every_benchmark(tmp_path):
    coco, fss = make_coco(tmp_path / "c"), make_fss(tmp_path / "f")
    for bench, data, info in (("coco", coco, coco_split(coco.splits, 0)), ("fss", fss, fss_split(fss.splits))):
        eps = make_episodes(info, 2, 3)
        items = [EpisodeDataset(make_reader(bench, data.datapath), eps, 24, original_size=True)[i] for i in range(3)]
        batch = collate_episodes(items)
        assert batch["size"] == 3 and not batch["errors"]
        assert batch["query_img"].shape == (3, 3, 24, 24) and batch["support_masks"].shape == (3, 2, 24, 24)
        assert not batch["query_ignore"].any()
        assert [tuple(m.shape) for m in batch["query_mask_full"]] == [tuple(s) for s in batch["org_query_size"]]
        for i, ep in enumerate(eps):
            label = data.labels[ep.query]
            expected = (label == ep.class_id + 1) if bench == "coco" else (label >= 128)
            assert torch.equal(batch["query_mask_full"][i], torch.from_numpy(expected).float())


def test_unreadable_files_become_error_items(pascal):
    (pascal.datapath / "VOC2012" / "JPEGImages" / "2008_000002.jpg").write_bytes(b"not a jpeg")
    reader = make_reader("pascal", pascal.datapath)
    eps = [Episode("2008_000001", ("2008_000003",), 0), Episode("2008_000003", ("2008_000002",), 0)]
    dataset = EpisodeDataset(reader, eps, 16)
    bad = dataset[1]
    assert bad["index"] == 1 and "cannot read image" in bad["error"] and "2008_000002.jpg" in bad["error"]
    batch = collate_episodes([dataset[0], bad])
    assert batch["size"] == 1 and batch["index"] == [0] and batch["errors"][0][0] == 1
    assert batch["query_img"].shape[0] == 1
    empty = collate_episodes([bad])
    assert empty["size"] == 0 and "query_img" not in empty
    with pytest.raises(HmfssError, match="2008_000002.jpg"):
        dataset.load(1)

import os
import pickle

import pytest
from helpers.tiny_data import make_coco, make_folder, make_fss, make_pascal

from hmfss.data.splits import (
    COCO_CLASSES,
    VOC_CLASSES,
    coco_class_ids,
    coco_split,
    folder_split,
    fss_split,
    load_split,
    pascal_class_ids,
    pascal_split,
    read_coco_pkl,
    read_pascal_list,
)
from hmfss.errors import HmfssError


@pytest.fixture(scope="module")
def pascal(tmp_path_factory):
    return make_pascal(tmp_path_factory.mktemp("pascal"))


@pytest.fixture(scope="module")
def coco(tmp_path_factory):
    return make_coco(tmp_path_factory.mktemp("coco"))


def test_fold_class_assignment():
    assert pascal_class_ids(0, "test") == [0, 1, 2, 3, 4]
    assert pascal_class_ids(3, "val") == [15, 16, 17, 18, 19]
    assert pascal_class_ids(1, "trn") == [0, 1, 2, 3, 4] + list(range(10, 20))
    assert coco_class_ids(0, "test") == [0, 4, 8, 12, 16, 20, 24, 28, 32, 36, 40, 44, 48, 52, 56, 60, 64, 68, 72, 76]
    assert coco_class_ids(3, "test")[:3] == [3, 7, 11]
    assert len(coco_class_ids(2, "trn")) == 60 and 2 not in coco_class_ids(2, "trn")
    # class names of the folds' test classes (PASCAL fold 2; COCO folds 0 and 3)
    assert [VOC_CLASSES[c] for c in pascal_class_ids(2, "test")] == ["diningtable", "dog", "horse", "motorbike", "person"]
    assert [COCO_CLASSES[c] for c in coco_class_ids(0, "test")][:4] == ["person", "airplane", "boat", "parking meter"]
    assert [COCO_CLASSES[c] for c in coco_class_ids(3, "test")][-3:] == ["sink", "vase", "toothbrush"]


def test_pascal_val_split(pascal):
    info = pascal_split(pascal.splits, 0, "test")
    assert info.class_ids == [0, 1, 2, 3, 4]
    assert info.entries == pascal.val  # file order, one entry per (image, class)
    assert info.classwise[0] == ["2008_000001", "2008_000002", "2008_000003", "2010_000001"]
    assert info.classwise[1] == ["2009_000001", "2009_000002", "2010_000001"]
    assert info.default_episodes == 1000 and info.sampling == "query-order"
    assert pascal_split(pascal.splits, 0, "val").entries == info.entries  # val = test, as the originals


def test_classes_in_use(pascal, coco):
    # the fold-0 val list of the tiny PASCAL set holds aeroplane and bicycle only
    assert pascal_split(pascal.splits, 0, "test").classes_in_use == [0, 1]
    # fold 1's training lists: folds 0, 2 and 3, each with all five of its classes
    assert pascal_split(pascal.splits, 1, "trn").classes_in_use == [0, 1, 2, 3, 4] + list(range(10, 20))
    # COCO draws the class first: every class of the fold, whatever the image lists hold
    assert coco_split(coco.splits, 0, "test").classes_in_use == coco_class_ids(0, "test")


def test_pascal_trn_split_concatenates_the_other_folds(pascal):
    info = pascal_split(pascal.splits, 1, "trn")
    names = [n for n, _ in info.entries]
    assert names[:6] == [f"2011_0{k:05d}" for k in range(6)]  # fold 0 first
    assert names[6:12] == [f"2011_2{k:05d}" for k in range(6)]  # then fold 2 (fold 1 skipped)
    assert len(names) == 18 and info.default_episodes == 18
    assert {c for _, c in info.entries} <= set(info.class_ids)


def test_pascal_list_errors_name_file_and_line(tmp_path):
    bad = tmp_path / "fold0.txt"
    bad.write_text("2007_000032__01\n2007_000033_01\n")
    with pytest.raises(HmfssError, match=r"fold0.txt line 2"):
        read_pascal_list(bad)
    bad.write_text("2007_000032__21\n")
    with pytest.raises(HmfssError, match="line 1"):
        read_pascal_list(bad)


def test_missing_lists_say_how_to_get_them(tmp_path, pascal):
    with pytest.raises(HmfssError, match="hmfss data splits"):
        pascal_split(None, 0)
    with pytest.raises(HmfssError, match=r"split list not found: .*fold2\.txt.*hmfss data splits"):
        pascal_split(tmp_path, 2)
    with pytest.raises(HmfssError, match="out of range"):
        pascal_split(pascal.splits, 4)
    with pytest.raises(HmfssError, match="out of range"):
        coco_split(pascal.splits, -1)


def test_coco_split(coco):
    info = coco_split(coco.splits, 0, "test")
    assert info.class_ids == coco.classes and info.sampling == "class-first"
    assert info.classwise[4] == coco.names and info.classwise[8] == list(reversed(coco.names))
    assert info.default_episodes == 1000
    trn = coco_split(coco.splits, 0, "trn")
    assert len(trn.class_ids) == 60 and trn.default_episodes == 120  # unique trn images


def test_coco_pkl_must_be_plain_data(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "fold0.pkl"
    path.write_bytes(pickle.dumps({0: ["a.jpg"], 1: Evil()}))
    with pytest.raises(HmfssError, match="refusing to load global"):
        read_coco_pkl(path)
    assert not marker.exists()
    path.write_bytes(pickle.dumps({"person": ["a.jpg"]}))
    with pytest.raises(HmfssError, match="unexpected class key"):
        read_coco_pkl(path)
    path.write_bytes(pickle.dumps([1, 2]))
    with pytest.raises(HmfssError, match="expected a dict"):
        read_coco_pkl(path)


def test_fss_split(tmp_path):
    fss = make_fss(tmp_path)
    info = fss_split(fss.splits, "test")
    assert info.class_ids == [760, 761]
    assert info.class_names[760] == "apple_pie" and info.class_names[761] == "zebra_fish"  # sorted
    queries = [n for n, _ in info.entries]
    assert queries[:3] == ["apple_pie/1.jpg", "apple_pie/10.jpg", "apple_pie/2.jpg"]  # lexicographic
    assert len(queries) == 20 and info.default_episodes == 20
    assert info.classwise[761] == [f"zebra_fish/{i}.jpg" for i in range(1, 11)]
    assert fss_split(fss.splits, "val").class_ids == [520]
    assert fss_split(fss.splits, "trn").class_ids == [0]


def test_folder_split(tmp_path):
    data = make_folder(tmp_path)
    info = folder_split(data.datapath)
    assert info.class_names == ["bird", "cat", "dog"] and info.class_ids == [0, 1, 2]
    assert info.entries[:3] == [("bird/p.jpg", 0), ("bird/q.jpg", 0), ("cat/a.jpg", 1)]
    assert info.default_episodes == 7
    classes = tmp_path / "test_classes.txt"
    classes.write_text("dog\n")
    test = folder_split(data.datapath, "test", classes_file=classes)
    trn = folder_split(data.datapath, "trn", classes_file=classes)
    assert test.class_ids == [2] and trn.class_ids == [0, 1]
    # a seeded ratio: deterministic, disjoint from trn, at least one class
    a = folder_split(data.datapath, "test", test_ratio=0.34, split_seed=1).class_ids
    b = folder_split(data.datapath, "test", test_ratio=0.34, split_seed=1).class_ids
    c = folder_split(data.datapath, "trn", test_ratio=0.34, split_seed=1).class_ids
    assert a == b and len(a) == 1 and sorted(a + c) == [0, 1, 2]
    classes.write_text("horse\n")
    with pytest.raises(HmfssError, match="'horse' is not a class folder"):
        folder_split(data.datapath, classes_file=classes)


def test_folder_split_errors(tmp_path):
    data = make_folder(tmp_path)
    (data.datapath / "cat" / "masks" / "b.png").unlink()
    with pytest.raises(HmfssError, match=r"no mask for image .*cat/images/b\.jpg"):
        folder_split(data.datapath)
    with pytest.raises(HmfssError, match="dataset folder not found"):
        folder_split(tmp_path / "nope")
    with pytest.raises(HmfssError, match="needs --datapath"):
        load_split("folder")
    lonely = tmp_path / "lonely"
    (lonely / "one" / "images").mkdir(parents=True)
    (data.datapath / "dog" / "images" / "x.jpg").rename(lonely / "one" / "images" / "x.jpg")
    with pytest.raises(HmfssError, match="at least 2 images"):
        folder_split(lonely)


# ---- the real lists of the original repository (../shared/reference/splits) ------------------

def test_real_pascal_lists(shared_reference):
    splits = shared_reference / "splits"
    val_counts = [len(pascal_split(splits, f, "test").entries) for f in range(4)]
    assert val_counts == [346, 451, 725, 346]
    trn = [len(read_pascal_list(splits / "pascal" / "trn" / f"fold{f}.txt")) for f in range(4)]
    assert trn == [2286, 3425, 5883, 2086]
    assert [len(pascal_split(splits, f, "trn").entries) for f in range(4)] == [11394, 10255, 7797, 11594]
    fold0 = pascal_split(splits, 0, "test")
    assert [len(fold0.classwise[c]) for c in range(5)] == [80, 57, 86, 58, 65]
    assert fold0.entries[0] == ("2007_000033", 0)


def test_real_coco_lists(shared_reference):
    splits = shared_reference / "splits"
    for fold, unique in zip(range(4), (62040, 74381, 73035, 73808)):
        trn = coco_split(splits, fold, "trn")
        assert trn.default_episodes == unique
        assert all(not trn.classwise[c] for c in coco_class_ids(fold, "test"))
    val = coco_split(splits, 0, "test")
    assert len(val.entries) == 26052
    assert val.classwise[0][0] == "val2014/COCO_val2014_000000429717.jpg"
    assert len(val.classwise[32]) == 142  # sports ball


def test_real_fss_lists(shared_reference):
    splits = shared_reference / "splits"
    sizes = {s: len(fss_split(splits, s).class_ids) for s in ("trn", "val", "test")}
    assert sizes == {"trn": 520, "val": 240, "test": 240}
    test = fss_split(splits, "test")
    assert test.class_ids[0] == 760 and test.class_ids[-1] == 999 and len(test.entries) == 2400

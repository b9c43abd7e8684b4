import argparse
import hashlib
import json

import numpy as np
import pytest
from PIL import Image

from hmfss.data.synthetic import (
    SHAPES,
    SyntheticParams,
    choose_classes,
    generate,
    render_shape,
)
from hmfss.errors import HmfssError

TINY = SyntheticParams(classes=9, images_per_class=3, size=48, seed=3, test_ratio=0.34, val_ratio=0.12, small_ratio=0.5)


def _digest(root):
    out = {}
    for path in sorted(root.rglob("*")):
        if path.is_file():
            out[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    root = tmp_path_factory.mktemp("syn")
    meta = generate(root, TINY)
    return root, meta


def test_same_seed_gives_byte_identical_files_and_another_seed_differs(bench, tmp_path):
    root, _ = bench
    generate(tmp_path / "again", TINY)
    assert _digest(root) == _digest(tmp_path / "again")
    generate(tmp_path / "other", SyntheticParams(**{**TINY.__dict__, "seed": 4}))
    assert _digest(root) != _digest(tmp_path / "other")


def test_fss_layout_and_disjoint_class_splits(bench):
    root, meta = bench
    lists = {s: (root / "splits" / "fss" / f"{s}.txt").read_text().split() for s in ("trn", "val", "test")}
    assert [len(lists[s]) for s in ("trn", "val", "test")] == [5, 1, 3]
    everything = lists["trn"] + lists["val"] + lists["test"]
    assert len(set(everything)) == 9  # disjoint, distinct appearances
    for name in everything:
        shape, texture, colour = name.split("-")
        assert shape in SHAPES
        for n in range(1, 4):
            img = Image.open(root / "FSS-1000" / name / f"{n}.jpg")
            mask = np.array(Image.open(root / "FSS-1000" / name / f"{n}.png"))
            assert img.size == (48, 48) and img.mode == "RGB"
            assert mask.shape == (48, 48) and set(np.unique(mask)) <= {0, 255} and mask.max() == 255
    assert json.loads((root / "synthetic.json").read_text())["counts"] == {"trn": 5, "val": 1, "test": 3}


def test_objects_vary_in_size_including_small_ones(bench):
    _, meta = bench
    fractions = [f for c in meta["classes"] for f in c["foreground_fraction"]]
    assert min(fractions) < 0.02 and max(fractions) > 0.05
    assert all(f > 0 for f in fractions)


def test_the_fss_reader_serves_the_benchmark(bench):
    from hmfss.data.dataset import EpisodeDataset
    from hmfss.data.episodes import make_episodes
    from hmfss.data.readers import make_reader
    from hmfss.data.splits import load_split

    root, _ = bench
    info = load_split("fss", root / "splits", split="test", datapath=root)
    assert len(info.entries) == 9 and all(len(v) == 3 for v in info.classwise.values())
    episodes = make_episodes(info, nshot=2, seed=0, protocol="seeded")
    item = EpisodeDataset(make_reader("fss", root, info), episodes, 32)[0]
    assert item["query_img"].shape == (3, 32, 32) and item["support_masks"].shape == (2, 32, 32)
    assert 0 < float(item["query_mask"].sum()) < 32 * 32


def test_ten_images_per_class_listed_like_the_standard_names(tmp_path):
    from hmfss.data.splits import load_split

    generate(tmp_path, SyntheticParams(classes=4, images_per_class=10, size=32, seed=0, test_ratio=0.25, val_ratio=0.25))
    on_disk = load_split("fss", tmp_path / "splits", split="trn", datapath=tmp_path)
    assert on_disk == load_split("fss", tmp_path / "splits", split="trn")  # 1, 10, 2, ..., 9 either way
    assert all((tmp_path / "FSS-1000" / n).is_file() for n, _ in on_disk.entries)


def test_classes_are_a_seeded_choice():
    a = choose_classes(SyntheticParams(classes=20, seed=1))
    b = choose_classes(SyntheticParams(classes=20, seed=1))
    c = choose_classes(SyntheticParams(classes=20, seed=2))
    assert a == b and a != c


def test_shapes_render_inside_their_box():
    for shape in SHAPES:
        cov = render_shape(shape, 24, 0.3, 0.8)
        assert cov.shape == (24, 24) and 0.1 < cov.mean() < 0.9, shape


@pytest.mark.parametrize("change, message", [
    (dict(classes=1), "--classes"),
    (dict(images_per_class=1), "--images-per-class"),
    (dict(size=8), "--size"),
    (dict(test_ratio=0.6, val_ratio=0.5), "--test-ratio"),
])
def test_bad_parameters_are_one_line_errors(tmp_path, change, message):
    with pytest.raises(HmfssError, match=message):
        generate(tmp_path, SyntheticParams(**{**TINY.__dict__, **change}))


def test_cli_function_writes_data_and_lists(tmp_path, capsys):
    from hmfss.cli.synthetic import register_synthetic, run_synthetic

    parser = argparse.ArgumentParser()
    register_synthetic(parser.add_subparsers())
    args = parser.parse_args(["synthetic", "--out", str(tmp_path / "s"), "--classes", "6", "--images-per-class", "2",
                              "--size", "32"])
    assert run_synthetic(args) == 0
    assert "3 trn / 1 val / 2 test" in capsys.readouterr().out
    assert (tmp_path / "s" / "splits" / "fss" / "test.txt").read_text().count("\n") == 2

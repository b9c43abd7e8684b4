import json
import os
import re
from pathlib import Path

import pytest
from helpers.tiny_data import make_coco, make_folder

from hmfss.cli.main import main
from hmfss.data.episodes import make_episodes
from hmfss.data.splits import coco_split, folder_split


def lines(text):
    return [json.loads(line) for line in text.splitlines()]


def test_prints_the_hsnet_episodes_of_the_real_lists(shared_reference, capsys):
    rc = main(["episodes", "--benchmark", "pascal", "--splits", str(shared_reference / "splits"),
               "--fold", "0", "--nshot", "1", "--episodes", "2"])
    assert rc == 0
    assert lines(capsys.readouterr().out) == [
        {"query": "2007_000033", "supports": ["2010_001174"], "class_id": 0},
        {"query": "2007_000061", "supports": ["2007_005705"], "class_id": 3},
    ]


def test_coco_and_out_file(tmp_path, capsys):
    data = make_coco(tmp_path)
    argv = ["episodes", "--benchmark", "coco", "--splits", str(data.splits), "--fold", "0", "--nshot", "3"]
    assert main(argv) == 0
    printed = lines(capsys.readouterr().out)
    expected = [e.to_dict() for e in make_episodes(coco_split(data.splits, 0), 3)]
    assert printed == expected and len(printed) == 1000  # the standard COCO count
    out = tmp_path / "sub" / "eps.jsonl"
    assert main(argv + ["--episodes", "5", "--out", str(out)]) == 0
    assert capsys.readouterr().out == ""
    assert lines(out.read_text()) == expected[:5]


def test_folder_defaults_to_seeded_protocol(tmp_path, capsys):
    data = make_folder(tmp_path)
    (tmp_path / "classes.txt").write_text("cat\ndog\n")
    argv = ["episodes", "--benchmark", "folder", "--datapath", str(data.datapath), "--nshot", "2",
            "--classes", str(tmp_path / "classes.txt")]
    assert main(argv) == 0
    printed = lines(capsys.readouterr().out)
    info = folder_split(data.datapath, classes_file=tmp_path / "classes.txt")
    assert printed == [e.to_dict() for e in make_episodes(info, 2, protocol="seeded")]
    assert [p["query"] for p in printed] == ["cat/a.jpg", "cat/b.jpg", "cat/c.png", "dog/x.jpg", "dog/y.jpg"]
    assert all(p["query"] not in p["supports"] and len(set(p["supports"])) == 2 for p in printed[:3])
    assert main(argv + ["--split", "trn"]) == 0
    assert {p["class_id"] for p in lines(capsys.readouterr().out)} == {0}  # bird


def test_errors(tmp_path, capsys):
    assert main(["episodes", "--benchmark", "fss"]) == 2
    assert "hmfss data splits" in capsys.readouterr().err
    data = make_coco(tmp_path)
    assert main(["episodes", "--benchmark", "coco", "--splits", str(data.splits), "--fold", "9"]) == 2
    assert "fold 9 is out of range" in capsys.readouterr().err


REF_DUMPS = os.environ.get("HMFSS_REF_EPISODES")  # folder of {bench}_..._{k}shot.jsonl dumps of the originals


@pytest.mark.skipif(not REF_DUMPS, reason="set HMFSS_REF_EPISODES to compare with dumps of the original loaders")
@pytest.mark.parametrize("name", [f"pascal_fold{f}" for f in range(4)] + ["coco_fold0", "coco_fold3", "fss"])
@pytest.mark.parametrize("shot", [1, 5])
def test_matches_reference_dumps(name, shot, shared_reference, capsys):
    dump = Path(REF_DUMPS) / f"{name}_{shot}shot.jsonl"
    if not dump.is_file():
        pytest.skip(f"{dump} not present")
    bench, _, fold = name.partition("_fold")
    argv = ["episodes", "--benchmark", bench, "--splits", str(shared_reference / "splits"), "--nshot", str(shot)]
    assert main(argv + (["--fold", fold] if fold else [])) == 0
    # the FSS loader names files by their full path (DATAPATH/FSS-1000/<category>/<n>.jpg); hmfss by
    # "<category>/<n>.jpg"
    expected = re.sub(r'[^"]*FSS-1000/', "", dump.read_text())
    assert lines(capsys.readouterr().out) == lines(expected)

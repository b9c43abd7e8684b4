import json

import numpy as np
import pytest
import torch
from PIL import Image

from hmfss.cli.main import main
from helpers import one_thread  # noqa: F401  (autouse fixture)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "d"
    assert main(["demo", "--quick", "--out", str(out), "--threads", "1"]) == 0
    return out


def test_quick_demo_writes_report_figures_and_results(demo, capsys):
    report = (demo / "report.md").read_text()
    for section in ("## Results", "## mIoU by object size", "## Training curves", "## Examples"):
        assert section in report
    for name in ("loss.png", "val_miou.png", "size_buckets.png", "examples.png"):
        img = Image.open(demo / "figures" / name)
        assert img.size[0] > 100 and np.asarray(img).std() > 0  # not blank
        assert f"figures/{name}" in report
    results = json.loads((demo / "results.json").read_text())
    for m in ("fm", "hm"):
        for shots in (1, 5):
            test = results["models"][m][f"test_{shots}shot"]
            assert 0 <= test["miou"] <= 100 and len(test["buckets"]) == 4 and test["episodes"] == 4
            assert f"{test['miou']:.2f}" in report
    assert results["stage_seconds"]["total"] > 0


def test_demo_checkpoints_work_with_predict(demo, tmp_path):
    results = json.loads((demo / "results.json").read_text())
    cls = results["example_class"]
    folder = demo / "data" / "FSS-1000" / cls
    for m in ("fm", "hm"):
        ckpt = demo / f"hsnet-{m}-efficientnet-lite0.pt"
        assert main(["predict", "--checkpoint", str(ckpt), "--support", str(folder / "1.jpg"), str(folder / "1.png"),
                     "--query", str(folder / "2.jpg"), "--out", str(tmp_path / m)]) == 0
        mask = np.array(Image.open(tmp_path / m / "2_mask.png"))
        assert mask.shape == (32, 32)
        assert torch.load(ckpt, weights_only=True)["config"]["masking"] == m


def test_demo_refuses_a_foreign_non_empty_folder(tmp_path, capsys):
    (tmp_path / "keep.txt").write_text("mine")
    assert main(["demo", "--quick", "--out", str(tmp_path)]) == 2
    assert "is not empty and holds no earlier demo" in capsys.readouterr().err
    assert (tmp_path / "keep.txt").read_text() == "mine"


@pytest.mark.parametrize("argv, message", [
    (["--budget-minutes", "nan"], "--budget-minutes must be a positive number, got nan"),
    (["--budget-minutes", "0"], "--budget-minutes must be a positive number, got 0.0"),
    (["--threads", "0"], "--threads must be at least 1, got 0"),
    (["--threads", "100000"], "--threads must be at most 1024, got 100000"),  # was a segfault
    (["--seed", "-1"], "--seed must be an integer from 0 to 4294967295, got -1"),
    (["--size", "3"], "--size must be between 32 and 1024, got 3"),
    (["--bsz", "0"], "--bsz must be at least 1, got 0"),
])
def test_bad_options_are_one_line_errors_before_anything_is_written(tmp_path, capsys, argv, message):
    assert main(["demo", "--quick", "--no-reexec", "--out", str(tmp_path / "d"), *argv]) == 2
    captured = capsys.readouterr()
    assert captured.err == f"hmfss: error: {message}\n" and captured.out == ""
    assert not (tmp_path / "d").exists()


def test_demo_budget_planning_scales_episodes_down_equally():
    from hmfss.demo.budget import plan
    from hmfss.demo.settings import DemoSettings

    s = DemoSettings()
    fast = {"train_fm": 0.01, "train_hm": 0.012, "eval1_fm": 0.005, "eval1_hm": 0.006, "eval5_fm": 0.02,
            "eval5_hm": 0.03}
    planned, predicted = plan(s, fast, 20.0)
    assert planned.episodes_per_epoch == s.episodes_per_epoch and predicted < 60 * s.budget_minutes
    slow = {k: v * 20 for k, v in fast.items()}
    planned, predicted = plan(s, slow, 20.0)
    assert s.min_episodes_per_epoch <= planned.episodes_per_epoch < s.episodes_per_epoch
    assert planned.episodes_per_epoch % s.bsz == 0


def test_evaluation_shrinks_when_training_ran_slower_than_measured():
    from hmfss.demo.budget import fit_test
    from hmfss.demo.settings import DemoSettings

    s = DemoSettings()
    t = {"train_fm": 0.05, "train_hm": 0.06, "eval1_fm": 0.02, "eval1_hm": 0.03, "eval5_fm": 0.1, "eval5_hm": 0.15}
    assert fit_test(s, t, 1.0, 1000.0) == s
    smaller = fit_test(s, t, 2.0, 60.0)
    assert 60 <= smaller.test_episodes < s.test_episodes and 30 <= smaller.test_episodes_5shot < s.test_episodes_5shot
    assert fit_test(s, {}, 3.0, 0.0) == s

"""``hmfss study`` at a tiny size: pairing of the runs, resume, parallel runs, the CLI."""

import json
import shutil
import sys
from dataclasses import replace
from unittest import mock

import pytest
import torch
from PIL import Image

from hmfss.cli.main import main
from hmfss.study import runs as study_runs
from hmfss.study.settings import QUICK, StudySettings, run_config
from helpers import one_thread  # noqa: F401  (autouse fixture)

# seconds per test: scheduled first (tests/conftest.py); one process makes the shared study once
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("study")]

QUICK_SETTINGS = replace(StudySettings(), **QUICK)
NOT_RESULTS = ("settings", "machine", "timing", "command")  # how and where it ran, not what it found


def results_of(summary: dict) -> dict:
    return {k: v for k, v in summary.items() if k not in NOT_RESULTS}


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """The tiny study (2 seeds x FM, HM, 32 px, 8 training episodes), run once through the CLI."""
    out = tmp_path_factory.mktemp("study") / "s"
    argv = ["study", "--quick", "--out", str(out), "--threads", "1", "--no-reexec"]
    with mock.patch.object(sys, "argv", ["hmfss", *argv]):  # as typed: the report quotes the command
        assert main(argv) == 0
    return out


def test_cli_writes_report_summary_and_figures(study):
    report = (study / "report.md").read_text()
    for section in ("## Answers", "## Test mIoU", "## Paired differences to FM", "## By object size",
                    "## Convergence", "## Every run"):
        assert section in report
    for name in ("val_curves.png", "train_loss.png", "size_buckets_1shot.png", "size_buckets_5shot.png"):
        image = Image.open(study / "figures" / name)
        assert image.size[0] > 100 and len(image.getcolors(1 << 16)) > 2  # drawn, not blank
        assert f"figures/{name}" in report
    summary = json.loads((study / "summary.json").read_text())
    assert summary["seeds"] == [0, 1] and summary["variants"] == ["fm", "hm"]
    assert {r["variant"] + str(r["seed"]) for r in summary["runs"]} == {"fm0", "fm1", "hm0", "hm1"}
    d = summary["test"]["1shot"]["paired"]["hm"]["fb_iou"]
    assert d["n"] == 2 and f"{d['mean']:+.2f}" in report
    findings = summary["findings"]
    assert findings["size"] == 32 and set(findings["1shot"]["minus_fm"]) == {"hm"}
    for v in ("fm", "hm"):
        for seed in (0, 1):
            run = study / "runs" / f"hsnet-{v}-seed{seed}"
            assert (run / "result.json").is_file() and (run / "best.pt").is_file()
            assert not (run / "last.pt").exists()  # removed once the run is tested
    assert summary["command"] == f"hmfss study --quick --out {study} --threads 1 --no-reexec"
    assert f"`{summary['command']}`" in report


@pytest.mark.parametrize("argv, message", [
    (["--variants", "im", "hm"], "include fm"),
    (["--variants", "fm", "xm"], "unknown masking 'xm'"),
    (["--seeds", "0", "0"], "distinct"),
    (["--jobs", "0"], "--jobs must be at least 1"),
    (["--threads", "100000"], "--threads must be at most 1024, got 100000"),  # was a segfault
    (["--val-thresholds", "0"], "--val-thresholds"),
    (["--size", "5"], "--size must be between 32 and 1024, got 5"),
    (["--seeds", "4294967296"], "--seeds must be an integer from 0 to 4294967295, got 4294967296"),
])
def test_bad_options_are_one_line_errors(tmp_path, capsys, argv, message):
    assert main(["study", "--quick", "--out", str(tmp_path / "s"), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "s").exists()


def test_refuses_a_foreign_folder_and_a_study_of_another_design(tmp_path, study, capsys):
    (tmp_path / "keep.txt").write_text("mine")
    assert main(["study", "--quick", "--out", str(tmp_path)]) == 2
    assert "is not empty and holds no earlier study" in capsys.readouterr().err
    assert main(["study", "--quick", "--out", str(study), "--epochs", "3"]) == 2
    assert "holds a study with epochs 2, not 3" in capsys.readouterr().err


def _first_steps(tmp_path, monkeypatch, study, variant, seed):
    """The learnable weights at the first training step and the episodes of the first three
    steps of a run configured as the study does (the steps themselves are not taken)."""
    import hmfss.training.loop as loop

    seen = {"episodes": []}

    class Stop(Exception):
        pass

    def record(parts, batch):
        if not seen["episodes"]:
            seen["weights"] = {k: p.detach().clone() for k, p in parts.model.named_parameters() if p.requires_grad}
        seen["episodes"].append(list(zip(batch["query_name"], batch["support_names"])))
        if len(seen["episodes"]) == 3:  # into the second epoch
            raise Stop
        return 0.5, None

    monkeypatch.setattr(loop, "train_step", record)
    cfg = replace(run_config(study, QUICK_SETTINGS, variant, seed), logdir=str(tmp_path / f"{variant}{seed}"))
    with pytest.raises(Stop):
        loop.train(cfg, console=False)
    return seen


def test_a_seed_gives_every_variant_the_same_initial_weights_and_episodes(tmp_path, monkeypatch, study):
    base = _first_steps(tmp_path, monkeypatch, study, "fm", 0)
    assert len(base["weights"]) > 10
    for variant in ("hm", "im", "hm-add"):
        other = _first_steps(tmp_path, monkeypatch, study, variant, 0)
        assert other["episodes"] == base["episodes"]
        assert other["weights"].keys() == base["weights"].keys()
        assert all(torch.equal(other["weights"][k], w) for k, w in base["weights"].items())
    seed1 = _first_steps(tmp_path, monkeypatch, study, "fm", 1)
    assert seed1["episodes"] != base["episodes"]
    assert not all(torch.equal(seed1["weights"][k], w) for k, w in base["weights"].items())


def _copy_results(study, out):
    """A copy of the study folder without its checkpoints (what a rerun reads of finished runs)."""
    shutil.copytree(study, out, ignore=shutil.ignore_patterns("*.pt", "figures", "report.md", "summary.json"))


def test_an_interrupted_study_resumes_and_ends_as_an_uninterrupted_one(tmp_path, monkeypatch, study, capsys):
    out = tmp_path / "s"
    _copy_results(study, out)
    shutil.rmtree(out / "runs" / "hsnet-hm-seed1")  # a run still to do
    real, trained = study_runs.train, []

    def interrupted(cfg, **kwargs):  # hm seed 1 stops inside its second epoch (its last.pt: epoch 1)
        trained.append(cfg.logdir)
        return real(cfg, stop_after_steps=3, **kwargs)

    monkeypatch.setattr(study_runs, "train", interrupted)
    assert main(["study", "--quick", "--out", str(out), "--threads", "1"]) == 2
    assert "1 of 1 runs failed (hsnet-hm-seed1" in capsys.readouterr().err
    run = out / "runs" / "hsnet-hm-seed1"
    assert (run / "last.pt").is_file() and not (run / "result.json").exists()
    monkeypatch.setattr(study_runs, "train", lambda cfg, **kw: (trained.append(cfg.logdir), real(cfg, **kw))[1])
    done_before = {p: p.stat().st_mtime_ns for p in (out / "runs").glob("*/result.json")}
    assert main(["study", "--quick", "--out", str(out), "--threads", "1"]) == 0
    assert trained == [str(run), str(run)]  # only the unfinished run trained, twice
    assert "resumed" in (run / "log.txt").read_text()
    assert {p: p.stat().st_mtime_ns for p in done_before} == done_before  # finished runs untouched
    resumed = json.loads((out / "summary.json").read_text())
    assert results_of(resumed) == results_of(json.loads((study / "summary.json").read_text()))
    trained.clear()
    assert main(["study", "--quick", "--out", str(out), "--threads", "1"]) == 0  # all done: nothing trains
    assert trained == []


def test_parallel_runs_give_the_same_numbers(tmp_path, study):
    out = tmp_path / "s"
    _copy_results(study, out)
    for seed in (0, 1):  # the runs of seed 0 stay: two runs train at once, each in its own process
        shutil.rmtree(out / "runs" / f"hsnet-hm-seed{seed}")
    assert main(["study", "--quick", "--out", str(out), "--threads", "1", "--jobs", "2"]) == 0
    parallel = json.loads((out / "summary.json").read_text())
    assert parallel["machine"]["jobs"] == 2
    assert results_of(parallel) == results_of(json.loads((study / "summary.json").read_text()))

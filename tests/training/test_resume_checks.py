"""`hmfss train --resume RUN` on a damaged or edited run folder: one clear error naming the
file or setting, never a run that goes on with the wrong model or names a missing best.pt."""

import contextlib
import io
import json
import shutil

import pytest
import torch

from hmfss.data.synthetic import SyntheticParams, generate
from hmfss.errors import HmfssError
from hmfss.training.config import TrainConfig
from hmfss.training.loop import train
from hmfss.training.rundir import resume_config
from helpers import one_thread  # noqa: F401  (autouse fixture)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished 1-epoch run (2 episodes of 32 px) on a tiny synthetic benchmark."""
    root = tmp_path_factory.mktemp("resume")
    bench = root / "bench"
    generate(bench, SyntheticParams(classes=10, images_per_class=4, size=48, seed=0, test_ratio=0.2, val_ratio=0.2))
    cfg = TrainConfig(benchmark="fss", datapath=str(bench), splits=str(bench / "splits"), backbone="efficientnet-lite0",
                      img_size=32, bsz=2, epochs=1, episodes_per_epoch=2, val_episodes=2, workers=0,
                      logdir=str(root / "run"), progress=False, tensorboard=False)
    train(cfg, console=False)
    return root / "run"


@pytest.fixture
def run(finished, tmp_path):
    """A copy of the finished run to damage."""
    return shutil.copytree(finished, tmp_path / "run")


def resume(run, epochs=2):
    return train(resume_config(run, {"epochs": epochs}), resume=True, console=False)


def edit_config(run, old: str, new: str) -> None:
    path = run / "config.yaml"
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


def test_an_intact_run_resumes(run):
    assert resume(run).epochs == 2
    assert [json.loads(r)["epoch"] for r in (run / "history.jsonl").read_text().splitlines()] == [1, 2]


def test_missing_best_checkpoint_is_refused_before_training(run):
    (run / "best.pt").unlink()
    last = torch.load(run / "last.pt", weights_only=True)
    assert last["best_epoch"] == 1
    with pytest.raises(HmfssError, match=f"cannot resume: {run / 'best.pt'} is missing .*at epoch 1\\); "
                                         "put it back or start a new run"):
        resume(run)
    assert torch.load(run / "last.pt", weights_only=True)["epoch"] == 1  # nothing trained, nothing written
    assert not (run / "best.pt").exists()


def test_cli_never_names_a_missing_best_checkpoint(run, capsys):
    from hmfss.cli.main import main

    (run / "best.pt").unlink()
    with contextlib.redirect_stderr(io.StringIO()) as err:
        rc = main(["train", "--resume", str(run), "--epochs", "2"])
    assert rc == 2
    assert "best checkpoint" not in capsys.readouterr().out
    lines = [line for line in err.getvalue().splitlines() if line.startswith("hmfss: error:")]
    assert len(lines) == 1 and "best.pt is missing" in lines[0]


@pytest.mark.parametrize("old, new, message", [
    ("masking: hm\n", "masking: fm\n", "holds a model with masking 'hm', but .*config.yaml gives masking 'fm'"),
    ("img_size: 32\n", "img_size: 64\n", "holds a model with img_size 32, but .*config.yaml gives img_size 64"),
    ("lr: 0.001\n", "lr: 0.01\n", "was trained with lr=0.001, but .*config.yaml gives lr=0.01"),
], ids=["masking", "img-size", "lr"])
def test_edited_config_is_refused_naming_the_setting_and_both_values(run, old, new, message):
    edit_config(run, old, new)
    with pytest.raises(HmfssError, match=f"cannot resume: {run / 'last.pt'} {message}; restore config.yaml"):
        resume(run)


def test_resumable_settings_may_still_change_in_config_yaml(run):
    edit_config(run, "checkpoint_every: 0\n", "checkpoint_every: 1\n")
    assert resume(run).epochs == 2


@pytest.mark.parametrize("name", ["log.txt", "history.jsonl", "best.pt"])
def test_a_folder_in_place_of_a_run_file_is_one_error(run, name):
    (run / name).unlink()
    (run / name).mkdir()
    with pytest.raises(HmfssError, match=f"{run / name} is not a file \\(a folder\\?\\); the run directory is damaged"):
        resume(run)


def test_garbage_history_is_rewritten_from_last_pt(run):
    expected = {name: (run / name).read_text() for name in ("history.jsonl", "history.csv")}
    (run / "history.jsonl").write_text("garbage\n{not json\n")
    (run / "history.csv").write_bytes(b"\xff\x00junk")
    resume(run, epochs=1)  # nothing left to train: only the files are put right
    assert {name: (run / name).read_text() for name in expected} == expected
    assert "rewrote history.jsonl and history.csv from last.pt (1 finished epoch(s))" in (run / "log.txt").read_text()


@pytest.mark.parametrize("history", ["text", [1, 2], [{"loss": 0.5}], {"epoch": 1}, [{"epoch": True}],
                                     [{"epoch": 1, "train_loss": torch.tensor(0.5)}]])
def test_a_last_pt_with_a_damaged_history_is_one_error_and_changes_nothing(run, history):
    saved = torch.load(run / "last.pt", weights_only=True)
    assert [row["epoch"] for row in saved["history"]] == [1]
    torch.save({**saved, "history": history}, run / "last.pt")
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    with pytest.raises(HmfssError, match=f"cannot resume: {run / 'last.pt'} is damaged \\(its 'history' entry"):
        resume(run)
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before  # log.txt included

import pytest
import torch

from hmfss.cli.main import main
from hmfss.data.synthetic import SyntheticParams, generate
from helpers import one_thread  # noqa: F401  (autouse fixture)


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    generate(root, SyntheticParams(classes=8, images_per_class=3, size=32, seed=2, test_ratio=0.25, val_ratio=0.25))
    return root


def _args(bench, run, *extra):
    return ["train", "--benchmark", "fss", "--datapath", str(bench), "--splits", str(bench / "splits"),
            "--backbone", "efficientnet-lite0", "--img-size", "32", "--bsz", "2", "--episodes-per-epoch", "4",
            "--val-episodes", "3", "--workers", "0", "--no-tensorboard", "--logdir", str(run), *extra]


def test_train_from_a_config_file_with_overrides(bench, tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("epochs: 5\nmasking: fm\nlr: 0.002\n")
    assert main(_args(bench, tmp_path / "run", "--config", str(cfg), "--epochs", "1")) == 0
    out = capsys.readouterr()
    assert "best val mIoU" in out.out and str(tmp_path / "run" / "best.pt") in out.out
    saved = (tmp_path / "run" / "config.yaml").read_text()
    assert "epochs: 1\n" in saved and "masking: fm\n" in saved and "lr: 0.002\n" in saved
    assert "epoch 1/1" in out.err  # the log goes to stderr too


def test_simulated_crash_then_resume(bench, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(_args(bench, run, "--epochs", "2", "--stop-after-steps", "3")) == 3
    assert f"hmfss train --resume {run}" in capsys.readouterr().out
    assert main(["train", "--resume", str(run), "--workers", "0"]) == 0
    assert "epoch 2/2" in (run / "log.txt").read_text()
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--masking", "fm"]) == 2
    err = capsys.readouterr().err.strip()
    assert "cannot change 'masking' when resuming" in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("extra, message", [
    (("--config", "BAD"), "is not valid YAML"),
    (("--backbone-weights", "/nonexistent/lite0.pth"), "backbone weights file not found: /nonexistent/lite0.pth"),
    (("--val-split", "heldout", "--heldout-ratio", "1.5"), "heldout_ratio must be in (0, 1)"),
    (("--bsz", "0"), "bsz must be at least 1"),
])
def test_bad_input_is_a_one_line_error(bench, tmp_path, capsys, extra, message):
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochs: [1\n")
    extra = tuple(str(bad) if e == "BAD" else e for e in extra)
    assert main(_args(bench, tmp_path / "run", *extra)) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err


def test_missing_run_directory_and_missing_logdir(bench, tmp_path, capsys):
    assert main(["train", "--resume", str(tmp_path / "nope")]) == 2
    assert "run directory not found" in capsys.readouterr().err
    args = _args(bench, tmp_path / "x")
    args = args[: args.index("--logdir")]
    assert main(args) == 2
    assert "--logdir RUN" in capsys.readouterr().err

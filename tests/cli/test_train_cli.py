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


def test_a_diverging_run_stops_with_one_line_and_saves_no_checkpoint(bench, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(_args(bench, run, "--epochs", "2", "--lr", "1e6", "--no-progress")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("hmfss: error: training diverged at epoch 1 step ") and "lr 1e+06" in err[-1], err
    assert "Traceback" not in "\n".join(err)
    assert not (run / "best.pt").exists() and not (run / "last.pt").exists()
    assert "stopped: training diverged" in (run / "log.txt").read_text()


def test_running_out_of_memory_mid_run_is_one_line_logged_and_resumable(bench, tmp_path, capsys, monkeypatch):
    from hmfss.training import loop

    run, steps = tmp_path / "run", []
    real_step = loop.train_step

    def step_then_too_large(parts, batch):
        steps.append(1)
        if len(steps) == 3:  # epoch 2's first step (2 steps per epoch)
            torch.empty(2**62, dtype=torch.uint8)  # the allocator refuses at once
        return real_step(parts, batch)

    monkeypatch.setattr(loop, "train_step", step_then_too_large)
    assert main(_args(bench, run, "--epochs", "2", "--no-progress")) == 2
    line = "out of memory (could not allocate 4611686018.4 GB)"
    assert capsys.readouterr().err.strip().splitlines()[-1] == f"hmfss: error: {line}: smaller images or batches need less"
    assert f"stopped: {line}" in (run / "log.txt").read_text()
    monkeypatch.setattr(loop, "train_step", real_step)
    assert main(["train", "--resume", str(run), "--workers", "0"]) == 0  # epoch 1's checkpoint stands
    assert "epoch 2/2" in (run / "log.txt").read_text()


def test_the_command_line_resolves_the_settings_once(bench, tmp_path, monkeypatch):
    from hmfss.training import config, loop

    calls = []
    real = config.resolve
    monkeypatch.setattr(config, "resolve", lambda cfg: calls.append(cfg) or real(cfg))
    monkeypatch.setattr(loop, "resolve", lambda cfg: pytest.fail("the trainer resolved the config again"))
    run = tmp_path / "run"
    assert main(_args(bench, run, "--epochs", "1", "--augmentation", "photometric")) == 0
    assert main(["train", "--resume", str(run), "--epochs", "2"]) == 0
    assert len(calls) == 2  # once per command
    assert "augmentation photometric" in (run / "log.txt").read_text()


# ---- VAT and ASNet with their recipes (the originals' optimisers and image sizes) ----------------


def _config(run):
    from hmfss.training.config import read_config_file

    return read_config_file(run / "config.yaml")


def _trainable_names(arch, **options):
    from hmfss import build_model

    model = build_model(arch, "efficientnet-lite0", "hm", **options)
    return [n for n, p in model.named_parameters() if p.requires_grad]


def test_train_vat_uses_its_recipe(trained_head):
    vat = trained_head("vat")
    assert vat.rc == 0
    cfg = _config(vat.run)
    assert (cfg["optimizer"], cfg["lr"], cfg["decoder_lr"], cfg["weight_decay"]) == ("adamw", 5e-4, 5e-4, 0.0)
    assert cfg["img_size"] == 473 and cfg["model_options"] == {"benchmark": "fss"}
    assert cfg["augmentation"]["p"] == 0.2 and len(cfg["augmentation"]["ops"]) == 7
    last = torch.load(vat.run / "last.pt", weights_only=True)
    assert last["optimizer_kind"] == "AdamW"
    groups = last["optimizer"]["param_groups"]
    assert [(g["lr"], g["weight_decay"]) for g in groups] == [(5e-4, 0.0), (5e-4, 0.0)]
    # group sizes: VAT-FSS's decoder modules (decoder_stages.*, decoder.*) vs the rest of the head
    names = _trainable_names("vat", benchmark="fss")
    decoder = [n for n in names if n.startswith(("head.decoder_stages.", "head.decoder."))]
    assert [len(g["params"]) for g in groups] == [len(names) - len(decoder), len(decoder)]
    best = torch.load(vat.run / "best.pt", weights_only=True)
    assert best["config"]["img_size"] == 473 and best["config"]["options"] == {"benchmark": "fss"}
    log = (vat.run / "log.txt").read_text()
    assert "img 473" in log and "AdamW, 2 groups" in log and "augmentation photometric" in log


def test_train_asnet_uses_its_recipe_and_resumes(trained_head, tmp_path):
    import shutil

    from hmfss.cli.main import main

    asnet = trained_head("asnet")
    assert asnet.rc == 0
    cfg = _config(asnet.run)
    assert (cfg["optimizer"], cfg["lr"], cfg["decoder_lr"], cfg["augmentation"], cfg["img_size"]) == \
        ("adam", 1e-3, None, "none", 257)
    last = torch.load(asnet.run / "last.pt", weights_only=True)
    assert last["optimizer_kind"] == "Adam"
    (group,) = last["optimizer"]["param_groups"]
    assert (group["lr"], group["weight_decay"], len(group["params"])) == (1e-3, 0.0, len(_trainable_names("asnet")))
    # resume for a second epoch: the Adam state goes on from step 1 (a fresh optimiser would restart at 1)
    run = tmp_path / "run"
    shutil.copytree(asnet.run, run)
    assert main(["train", "--resume", str(run), "--epochs", "2", "--workers", "0"]) == 0
    state = torch.load(run / "last.pt", weights_only=True)
    assert state["epoch"] == 2 and state["optimizer_kind"] == "Adam"
    assert {float(s["step"]) for s in state["optimizer"]["state"].values()} == {2.0}
    assert _config(run)["lr"] == 1e-3


def test_resuming_vat_rebuilds_its_optimizer(trained_head, tmp_path, capsys):
    import shutil

    from hmfss.cli.main import main

    run = tmp_path / "run"
    shutil.copytree(trained_head("vat").run, run)
    # nothing left to train: the resumed run loads the AdamW state into an AdamW with 2 groups and stops
    assert main(["train", "--resume", str(run), "--workers", "0"]) == 0
    log = (run / "log.txt").read_text()
    assert log.count("AdamW, 2 groups") == 2 and "resumed" in log
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--lr", "0.1"]) == 2
    err = capsys.readouterr().err.strip()
    assert "cannot change 'lr' when resuming" in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("extra, message", [
    (("--arch", "vat", "--model-option", "colour=red"), "unknown VAT option(s): colour"),
    (("--arch", "asnet", "--model-option", "benchmark=fss"), "unknown ASNet option(s): benchmark"),
    (("--model-option", "benchmark=fss"), "unknown HSNet option(s): benchmark"),
    (("--arch", "vat", "--model-option", "benchmark=ade"), "unknown VAT benchmark 'ade'"),
    (("--arch", "unet",), "unknown arch 'unet'"),
    (("--optimizer", "sgd",), "optimizer must be one of adam, adamw, got 'sgd'"),
    (("--augmentation", "strong",), "augmentation must be 'none', 'photometric' or a mapping"),
    (("--decoder-lr", "-1",), "decoder_lr must be positive"),
])
def test_bad_head_settings_are_one_line_errors(bench, tmp_path, capsys, extra, message):
    assert main(_args(bench, tmp_path / "run", *extra)) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err


def test_compile_reaches_the_step_s_forward_module(bench, tmp_path, monkeypatch):
    """`hmfss train --compile` builds its forward module with the head compiled (what that
    does is tested with the training benchmark, which builds it the same way)."""
    from hmfss.training import loop

    seen = []
    real = loop.forward_module

    def spy(model, info, compile=False, find_unused_parameters=False):
        seen.append(compile)
        return real(model, info, False, find_unused_parameters)  # no compile: seconds saved

    monkeypatch.setattr(loop, "forward_module", spy)
    args = _args(bench, tmp_path / "run", "--epochs", "1", "--compile", "--no-progress", "--episodes-per-epoch", "2",
                 "--val-episodes", "1")
    assert main(args) == 0 and seen == [True]
    assert _config(tmp_path / "run")["compile"] is True

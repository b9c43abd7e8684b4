"""A table of bad inputs to ``hmfss train``: each ends with exit status 2 and exactly one line
on stderr naming the problem, no traceback, and no output file created or changed (a refused
new run leaves no run directory; a refused resumption leaves the run as it was).

Runs that fail later, while training (a diverging loss), are tested in tests/cli/test_train_cli.py.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import torch
from helpers import one_thread  # noqa: F401  (autouse fixture)
from helpers.bad_input import assert_refused

from hmfss.cli.main import main
from hmfss.data.synthetic import SyntheticParams, generate

R = ("train --benchmark fss --datapath {bench} --splits {bench}/splits --backbone efficientnet-lite0 --img-size 32 "
     "--bsz 2 --episodes-per-epoch 2 --val-episodes 1 --epochs 1 --workers 0 --no-tensorboard --no-progress "
     "--logdir {out}/run")

CONFIGS = {
    "nan_lr.yaml": "lr: .nan\n",
    "inf_wd.yaml": "weight_decay: .inf\n",
    "nan_aug.yaml": "augmentation:\n  brightness_limit: .nan\n",
    "tag.yaml": "lr: !!python/object/apply:os.system ['echo hi']\n",
    "bad.json": '{"lr": 0.1,}\n',
    "string_lr.yaml": "lr: fast\n",
    "huge.yaml": "img_size: 5000\n",
}


def _runs(root: Path, bench: Path) -> None:
    """A finished tiny run, and copies of it with a damaged last.pt."""
    good = root / "good"
    assert main(R.format(bench=bench, out=root).replace(f"{root}/run", str(good)).split()) == 0
    for name, damage in {
        "best_as_last": lambda run: shutil.copy(run / "best.pt", run / "last.pt"),
        "text_last": lambda run: (run / "last.pt").write_text("not a checkpoint\n"),
        "truncated_last": lambda run: (run / "last.pt").write_bytes((good / "last.pt").read_bytes()[:1000]),
        "nan_last": lambda run: torch.save(_nan_weights(torch.load(good / "last.pt", weights_only=True)),
                                           run / "last.pt"),
        "folder_last": lambda run: ((run / "last.pt").unlink(), (run / "last.pt").mkdir()),
    }.items():
        shutil.copytree(good, root / name)
        damage(root / name)


def _nan_weights(payload: dict) -> dict:
    state = {k: v.clone().fill_(float("nan")) if v.is_floating_point() else v for k, v in payload["model"].items()}
    return {**payload, "model": state}


# one process builds the module's world (a second would build it again)
pytestmark = pytest.mark.xdist_group("bad_train_inputs")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad-train")
    bench = root / "bench"
    generate(bench, SyntheticParams(classes=8, images_per_class=3, size=32, seed=2, test_ratio=0.25, val_ratio=0.25))
    for name, text in CONFIGS.items():
        (root / name).write_text(text)
    out = root / "out"
    out.mkdir()
    (out / "taken").write_text("a file that must stay as it is")
    (out / "not_a_run").mkdir()
    _runs(out, bench)
    return {"root": str(root), "bench": str(bench), "out": str(out)}


CASES = {
    # numbers that are not finite, or out of range
    "lr-nan": (R + " --lr nan", "lr must be a finite number, got nan"),
    "lr-inf": (R + " --lr inf", "lr must be a finite number, got inf"),
    "lr-minus-inf": (R + " --lr=-inf", "lr must be a finite number, got -inf"),
    "lr-zero": (R + " --lr 0", "lr must be positive, got 0.0"),
    "decoder-lr-nan": (R + " --decoder-lr nan", "decoder_lr must be a finite number, got nan"),
    "weight-decay-inf": (R + " --weight-decay inf", "weight_decay must be a finite number, got inf"),
    "decoder-weight-decay-negative": (R + " --decoder-weight-decay -1", "decoder_weight_decay must not be negative"),
    "heldout-ratio-nan": (R + " --val-split heldout --heldout-ratio nan", "heldout_ratio must be a finite number"),
    "test-ratio-inf": (R + " --test-ratio inf", "test_ratio must be a finite number, got inf"),
    "epochs-zero": (R + " --epochs 0", "epochs must be at least 1, got 0"),
    "img-size-negative": (R + " --img-size -5", "img_size must be at least 1, got -5"),
    "workers-negative": (R + " --workers -1", "workers and checkpoint_every must not be negative"),
    "img-size-too-large": (R + " --img-size 100000", "img_size must be between 1 and 1024, got 100000"),
    "img-size-too-small-for-the-head": (R.replace("--img-size 32", "--img-size 64") + " --arch asnet",
                                        "images of 64x64 pixels are too small for asnet on efficientnet-lite0: "
                                        "its middle support maps are 4x4"),
    "seed-negative": (R + " --seed -1", "seed must be an integer from 0 to 4294967295, got -1"),
    "val-seed-too-large": (R + " --val-seed 4294967296", "val_seed must be an integer from 0 to 4294967295"),
    "device-meta": (R + " --device meta", "device 'meta' holds no data"),
    "device-unknown": (R + " --device nonsense", "unknown device 'nonsense'"),
    "device-missing-gpu": (R + " --device cuda:99", "'cuda:99' requested but (CUDA is not available|only)"),
    "max-pixels-zero": (R + " --max-pixels 0", "--max-pixels must be a positive integer, got 0"),
    "config-img-size-too-large": (R.replace(" --img-size 32", "") + " --config {root}/huge.yaml",
                                  "img_size must be between 1 and 1024, got 5000"),
    # config files
    "config-lr-nan": (R + " --config {root}/nan_lr.yaml", "lr must be a finite number, got nan"),
    "config-weight-decay-inf": (R + " --config {root}/inf_wd.yaml", "weight_decay must be a finite number"),
    "config-augmentation-nan": (R + " --config {root}/nan_aug.yaml",
                                "augmentation brightness_limit must be a finite number, got nan"),
    "config-python-tag": (R + " --config {root}/tag.yaml", "tag.yaml is not valid YAML"),
    "config-bad-json": (R + " --config {root}/bad.json", "bad.json is not valid JSON"),
    "config-string-lr": (R + " --config {root}/string_lr.yaml", "lr must be float or null, got 'fast'"),
    "config-is-folder": (R + " --config {out}/not_a_run", "config file not found"),
    # data
    "datapath-missing": (R.replace("--datapath {bench}", "--datapath {root}/nowhere"), "dataset folder not found"),
    "splits-missing": (R.replace("--splits {bench}/splits", "--splits {root}/nowhere"), "split list folder not found"),
    # run directories
    "logdir-is-a-file": (R.replace("{out}/run", "{out}/taken"), "run directory .*taken is a file, not a folder"),
    "logdir-under-a-file": (R.replace("{out}/run", "{out}/taken/run"), "cannot create run directory"),
    "logdir-holds-a-run": (R.replace("{out}/run", "{out}/good"), "already holds a training run; continue it"),
    "resume-not-a-run": ("train --resume {out}/not_a_run", "not_a_run is not a training run \\(no config.yaml\\)"),
    "resume-missing": ("train --resume {out}/nowhere", "run directory not found"),
    "resume-with-config": ("train --resume {out}/good --config {root}/nan_lr.yaml", "do not pass --config"),
    "resume-change-lr": ("train --resume {out}/good --lr 0.5", "cannot change 'lr' when resuming"),
    "resume-epochs-zero": ("train --resume {out}/good --epochs 0", "epochs must be at least 1, got 0"),
    "resume-best-pt-as-last-pt": ("train --resume {out}/best_as_last",
                                  "best_as_last/last.pt is not the last.pt of a training run"),
    "resume-text-last-pt": ("train --resume {out}/text_last", "text_last/last.pt"),
    "resume-truncated-last-pt": ("train --resume {out}/truncated_last", "truncated_last/last.pt"),
    "resume-nan-last-pt": ("train --resume {out}/nan_last", "nan_last/last.pt holds NaN or infinite weights"),
    "resume-last-pt-is-a-folder": ("train --resume {out}/folder_last", "folder_last/last.pt is not a file"),
}


def test_the_table_is_large_enough():
    assert len(CASES) >= 10


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_train_input(world, case, capsys):
    template, message = CASES[case]
    assert_refused([part.format(**world) for part in template.split()], message, world["out"], capsys)


def test_an_image_over_the_pixel_limit_stops_the_run_and_resume_may_raise_the_limit(world, tmp_path, capsys):
    """The limit is met only when an image is read: one error line last, exit 2, no traceback;
    --max-pixels is a run-time option, so the resumed run may raise it."""
    argv = R.format(bench=world["bench"], out=tmp_path).split()
    assert main(argv + ["--max-pixels", "100"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert re.search(r"hmfss: error: image .*\.jpg is 32x32 = 1024 pixels, over the pixel limit of 100 "
                     r"\(raise it with --max-pixels\)$", err.strip().splitlines()[-1])
    assert re.search(r"stopped: image .*\.jpg is 32x32 = 1024 pixels", (tmp_path / "run" / "log.txt").read_text())
    assert main(["train", "--resume", str(tmp_path / "run"), "--max-pixels", "1024"]) == 0
    assert (tmp_path / "run" / "best.pt").is_file()

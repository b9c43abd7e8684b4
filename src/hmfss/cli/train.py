"""``hmfss train``: episodic training (1-shot episodes, 2-class cross-entropy, frozen backbone,
each head's original recipe), single process or DDP under ``torchrun``.

Settings come from the defaults, then ``--config FILE`` (YAML or JSON), then the flags given
on the command line. ``--resume RUN`` continues RUN from its ``last.pt`` with RUN's saved
config (only run-time settings such as --epochs or --workers may be changed); a run stopped
before its first ``last.pt`` starts again from the beginning. A run whose loss or weights
become NaN or infinite stops with one line (exit status 2) and saves nothing of that step.
"""

from __future__ import annotations

import argparse

import yaml

from hmfss.cli.predict import add_max_pixels_argument
from hmfss.errors import HmfssError

S = argparse.SUPPRESS


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a few-shot segmenter (1-shot episodes; DDP via torchrun)",
        description="Episodic 1-shot training (2-class cross-entropy, frozen backbone) with each head's original "
                    "recipe: HSNet Adam lr 1e-3; VAT AdamW lr 5e-4 (decoder group), photometric augmentation, "
                    "473 px (COCO 417); ASNet Adam lr 1e-3. Validation every epoch, best-mIoU checkpoint. "
                    "Multi-GPU / multi-node: "
                    "torchrun --nproc_per_node N -m hmfss.cli.main train ... (--bsz is the global batch).",
        argument_default=S,
    )
    p.add_argument("--config", default=None, metavar="FILE", help="YAML or JSON settings (flags override them)")
    p.add_argument("--resume", default=None, metavar="RUN", help="continue the run in RUN from RUN/last.pt")
    add_max_pixels_argument(p)
    for add_group in (_data_arguments, _model_arguments, _optimisation_arguments, _validation_arguments,
                      _run_arguments):
        add_group(p)
    p.set_defaults(func=run)


def _data_arguments(p: argparse.ArgumentParser) -> None:
    d = p.add_argument_group("data")
    d.add_argument("--benchmark", choices=("pascal", "coco", "fss", "folder"), help="benchmark (default fss)")
    d.add_argument("--datapath", help="dataset root (VOC2012/, COCO2014/, FSS-1000/; folder: DIR/<class>/images|masks)")
    d.add_argument("--splits", help="split-list folder (default $HMFSS_SPLITS or DATAPATH/splits)")
    d.add_argument("--fold", type=int, help="fold 0-3 (pascal, coco; default 0)")
    d.add_argument("--classes", metavar="FILE", help="folder: file listing the test classes")
    d.add_argument("--test-ratio", type=float, help="folder: seeded fraction of test classes")
    d.add_argument("--split-seed", type=int, help="folder: seed of --test-ratio (default 0)")
    d.add_argument("--img-size", type=int,
                   help="input size (default: the head's, 400 hsnet/asnet, 473 vat, 417 vat on coco)")


def _model_arguments(p: argparse.ArgumentParser) -> None:
    m = p.add_argument_group("model")
    m.add_argument("--arch", help="head: hsnet (default), vat or asnet")
    m.add_argument("--backbone", help="resnet50 (default) | resnet101 | vgg16 | efficientnet-lite0")
    m.add_argument("--backbone-weights", metavar="PTH",
                   help="ImageNet weights: a torchvision .pth, or 'imagenet' for efficientnet-lite0")
    m.add_argument("--masking", help="none | fm | im | hm (default) | hm-add | hm-reverse")
    m.add_argument("--model-option", action="append", dest="model_option", metavar="KEY=VALUE",
                   help="head-specific option (repeatable); vat: benchmark=pascal|coco|fss (default: the "
                        "training benchmark's, pascal for folders), mask_at=auto|resized|raw")


def _optimisation_arguments(p: argparse.ArgumentParser) -> None:
    o = p.add_argument_group("optimisation")
    o.add_argument("--optimizer", help="adam | adamw (default: the head's; adamw for vat)")
    o.add_argument("--lr", type=float, help="learning rate (default: the head's; 1e-3 hsnet/asnet, 5e-4 vat)")
    o.add_argument("--weight-decay", type=float, help="weight decay (default: the head's, 0)")
    o.add_argument("--decoder-lr", type=float,
                   help="learning rate of the parameters named *decoder* (vat's second group; default: --lr "
                        "if given, else the head's)")
    o.add_argument("--decoder-weight-decay", type=float, help="weight decay of the decoder group")
    o.add_argument("--augmentation", metavar="none|photometric",
                   help="training-image augmentation (default: the head's; photometric for vat, none otherwise); "
                        "a config file may give a mapping of its parameters")
    o.add_argument("--bsz", type=int, help="episodes per step over all processes (default 20)")
    o.add_argument("--epochs", "--niter", type=int, dest="epochs", help="number of epochs (default 100)")
    o.add_argument("--episodes-per-epoch", type=int,
                   help="training episodes per epoch (default: the benchmark's epoch size)")
    o.add_argument("--seed", type=int, help="training seed (default 0)")


def _validation_arguments(p: argparse.ArgumentParser) -> None:
    v = p.add_argument_group("validation")
    v.add_argument("--val-split", choices=("val", "test", "heldout"),
                   help="model selection on: val (default; the original's: pascal/coco val = the test "
                        "episodes, fss = its val classes), test, or heldout (a seeded subset of the "
                        "training classes, removed from training)")
    v.add_argument("--heldout-ratio", type=float, help="fraction of training classes held out (default 0.1)")
    v.add_argument("--heldout-seed", type=int, help="seed of the held-out classes (default 0)")
    v.add_argument("--val-episodes", type=int, help="validation episodes (default: the split's standard count)")
    v.add_argument("--val-seed", type=int, help="validation episode seed (default 0)")
    v.add_argument("--val-protocol", choices=("hsnet", "asnet", "seeded"), help="validation episode protocol")


def _run_arguments(p: argparse.ArgumentParser) -> None:
    r = p.add_argument_group("run")
    r.add_argument("--logdir", metavar="RUN", help="run directory (config, log, history, best.pt, last.pt)")
    r.add_argument("--workers", type=int, help="data-loading worker processes per rank (default 4)")
    r.add_argument("--device", help="auto (default: this rank's GPU, else CPU) | cpu | cuda | cuda:N")
    r.add_argument("--amp", action="store_true", dest="amp", help="mixed precision (bf16 where supported)")
    r.add_argument("--no-amp", action="store_false", dest="amp", help="full precision (default)")
    r.add_argument("--compile", action="store_true", dest="compile", help="torch.compile the head (the frozen backbone runs eagerly)")
    r.add_argument("--checkpoint-every", type=int, metavar="STEPS",
                   help="also write last.pt every STEPS steps inside an epoch (default: epoch end only)")
    r.add_argument("--no-tensorboard", action="store_false", dest="tensorboard", help="no TensorBoard scalars")
    r.add_argument("--no-progress", action="store_false", dest="progress", help="no progress bars")
    r.add_argument("--skip-bad-images", action="store_true", dest="skip_bad_images",
                   help="skip episodes with unreadable files (counted in the log) instead of stopping")
    r.add_argument("--find-unused-parameters", action="store_true", dest="find_unused_parameters",
                   help="DDP: allow head parameters that get no gradient")
    r.add_argument("--stop-after-steps", type=int, dest="stop_after_steps", help=S)  # debug: simulated crash


def overrides_from_args(args: argparse.Namespace, names: set[str]) -> dict:
    """The settings given on the command line (``names``: the config's fields)."""
    out = {k: v for k, v in vars(args).items() if k in names}
    if getattr(args, "model_option", None):
        options = {}
        for item in args.model_option:
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise HmfssError(f"--model-option expects KEY=VALUE, got {item!r}")
            try:
                options[key] = yaml.safe_load(value)
            except yaml.YAMLError:
                options[key] = value
        out["model_options"] = options
    return out


def run(args: argparse.Namespace) -> int:
    # imported here, not at the top: `hmfss --help` imports every command and should not wait for torch
    from hmfss.data.io import set_max_pixels
    from hmfss.training.config import config_fields, resolve, resolve_settings
    from hmfss.training.distributed import launch_rank
    from hmfss.training.loop import TrainingStopped, train
    from hmfss.training.rundir import resume_config

    set_max_pixels(args.max_pixels)
    overrides = overrides_from_args(args, set(config_fields()))
    if args.resume:
        if args.config:
            raise HmfssError("--resume uses the run's own config.yaml; do not pass --config")
        settings = resolve(resume_config(args.resume, overrides))
    else:
        settings = resolve_settings(args.config, overrides)
        if not settings.config.logdir:
            raise HmfssError("give a run directory with --logdir RUN (or --resume RUN)")
    try:
        result = train(settings, resume=bool(args.resume), stop_after_steps=getattr(args, "stop_after_steps", None))
    except TrainingStopped as exc:
        print(f"hmfss: {exc}; continue with: hmfss train --resume {settings.config.logdir}")
        return 3
    if launch_rank() == 0:
        print(f"best val mIoU {result.best_miou:.2f} (epoch {result.best_epoch}); best checkpoint "
              f"{result.run_dir / 'best.pt'}")
    return 0

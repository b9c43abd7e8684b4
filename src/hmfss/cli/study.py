"""``hmfss study``: the demo's FM / IM / HM comparison over several seeds, with its spread.

Trains HSNet with each masking variant and seed (same initial weights and training episodes for
every variant of a seed), evaluates each on the held-out test classes and writes ``report.md`` and
``summary.json``; rerun the same command to resume (see :mod:`hmfss.study.pipeline`).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from dataclasses import asdict, replace
from pathlib import Path

from hmfss.cli.demo import maybe_reexec

S = argparse.SUPPRESS


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "study",
        help="repeat the demo's FM/IM/HM comparison over seeds and report means, spreads and paired differences",
        description="Train HSNet with several masking variants and seeds on the demo's synthetic benchmark and "
                    "budget (the same initial weights and episodes for every variant of a seed), evaluate each on "
                    "the held-out classes (1- and 5-shot, by object size) and write report.md and summary.json. "
                    "Rerunning on the same --out resumes: finished runs are kept, interrupted ones continue.",
    )
    p.add_argument("--out", required=True, help="study folder (new, or an earlier study's to resume it)")
    p.add_argument("--seeds", type=int, nargs="+", default=S, help="training seeds (default 0 1 2)")
    p.add_argument("--variants", nargs="+", default=S,
                   help="maskings to compare, fm included (default fm im hm; also hm-add, hm-reverse)")
    p.add_argument("--jobs", type=int, default=S, help="runs trained at once, one process each (default 1)")
    p.add_argument("--threads", type=int, default=S, help="torch threads per process (default 1)")
    p.add_argument("--val-thresholds", type=float, nargs="+", default=S,
                   help="validation mIoU levels for the convergence comparison (default 10 20 30)")
    p.add_argument("--size", type=int, default=S, help="image size (default 96, the demo's)")
    for name, text in (("epochs", "6"), ("episodes-per-epoch", "400"), ("classes", "100"),
                       ("images-per-class", "10"), ("val-episodes", "60"), ("test-episodes", "300"),
                       ("test-episodes-5shot", "150"), ("bsz", "8")):
        p.add_argument(f"--{name}", type=int, default=S, help=f"default {text}, the demo's")
    p.add_argument("--quick", action="store_true", help=S)
    p.add_argument("--no-reexec", action="store_true", help=S)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    maybe_reexec(args, "study")
    # imported here, not at the top: `hmfss --help` imports every command and should not wait for torch
    from hmfss.study.pipeline import run_study

    command = shlex.join(["hmfss", *sys.argv[1:]]) if sys.argv[1:2] == ["study"] else None
    print(run_study(Path(args.out), settings_from_args(args), command))
    return 0


def settings_from_args(args: argparse.Namespace):
    """The study's settings: defaults, then --quick's, then the flags given."""
    from hmfss.study.settings import QUICK, StudySettings  # see run()

    settings = StudySettings()
    if getattr(args, "quick", False):
        settings = replace(settings, **QUICK)
    names = set(asdict(settings))
    given = {k: tuple(v) if isinstance(v, list) else v for k, v in vars(args).items() if k in names}
    return replace(settings, **given)

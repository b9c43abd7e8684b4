"""``hmfss demo``: HSNet-FM vs HSNet-HM on the embedded synthetic benchmark, offline, on a CPU.

With no arguments it takes about 6-7 minutes on 2 CPU cores and prints the path of the
report; the steps are described in :mod:`hmfss.demo.pipeline`.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import asdict, replace
from pathlib import Path

S = argparse.SUPPRESS


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="train and compare HSNet-FM and HSNet-HM on a synthetic benchmark (offline, CPU, ~7 min)",
        description="Generate the synthetic benchmark, train HSNet-FM and HSNet-HM (EfficientNet-Lite0) with the "
                    "same budget, evaluate both on held-out classes (1- and 5-shot) and write a report with "
                    "charts and two checkpoints usable by `hmfss predict`.",
    )
    p.add_argument("--out", default="hmfss-demo", help="output folder (default ./hmfss-demo)")
    p.add_argument("--budget-minutes", type=float, default=S, help="time budget (default 6.5)")
    p.add_argument("--threads", type=int, default=S, help="CPU threads (default: min(2, CPU cores))")
    p.add_argument("--seed", type=int, default=S, help="seed of the benchmark and the training (default 0)")
    # advanced / testing knobs (hidden)
    for name, kind in (("classes", int), ("images-per-class", int), ("size", int), ("bsz", int), ("epochs", int),
                       ("episodes-per-epoch", int), ("val-episodes", int), ("test-episodes", int),
                       ("test-episodes-5shot", int)):
        p.add_argument(f"--{name}", type=kind, default=S, help=S)
    p.add_argument("--quick", action="store_true", help=S)
    p.add_argument("--no-calibrate", action="store_false", dest="calibrate", default=S, help=S)
    p.add_argument("--no-reexec", action="store_true", help=S)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    maybe_reexec(args, "demo")
    # imported here, not at the top: `hmfss --help` imports every command and should not wait for torch
    from hmfss.demo.pipeline import run_demo

    print(run_demo(Path(args.out), settings_from_args(args)))
    return 0


def settings_from_args(args: argparse.Namespace):
    """The demo's settings: defaults, then --quick's, then the flags given."""
    from hmfss.demo.settings import QUICK, DemoSettings  # see run()

    settings = DemoSettings(threads=max(1, min(2, os.cpu_count() or 1)))
    if getattr(args, "quick", False):
        settings = replace(settings, **QUICK)
    names = set(asdict(settings))
    return replace(settings, **{k: v for k, v in vars(args).items() if k in names})


def maybe_reexec(args: argparse.Namespace, command: str) -> None:
    """Restart ``hmfss COMMAND`` once with OMP_WAIT_POLICY=PASSIVE: OpenMP threads that spin while
    waiting are many times slower on a CPU shared with other work. The variable must be set before
    the OpenMP runtime starts, i.e. before the process imports torch."""
    if os.environ.get("OMP_WAIT_POLICY") or getattr(args, "no_reexec", False):
        return
    if sys.argv[1:2] != [command]:  # called as a library function (tests): no restart
        return
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE")
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, "-m", "hmfss.cli.main", *sys.argv[1:]], env)

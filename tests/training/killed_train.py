"""Run ``hmfss train ARGS`` in this process and SIGKILL it at a chosen point (crash tests).

    python killed_train.py step N -- ARGS...        killed just before its N-th optimisation step
    python killed_train.py write:NAME N -- ARGS...  killed after the N-th temp file of NAME (e.g.
                                                    last.pt) is written and fsynced, before its rename

The kill is a real SIGKILL: no Python cleanup runs, exactly like ``kill -9``.
"""

from __future__ import annotations

import os
import signal
import sys

import torch


def _killer(n: int):
    calls = 0

    def hit() -> None:
        nonlocal calls
        calls += 1
        if calls == n:
            os.kill(os.getpid(), signal.SIGKILL)

    return hit


def main() -> int:
    point, n, sep, *args = sys.argv[1:]
    assert sep == "--", "usage: killed_train.py POINT N -- ARGS..."
    torch.set_num_threads(1)
    hit = _killer(int(n))
    if point == "step":
        from hmfss.training import loop

        real_step = loop.train_step

        def step(*a, **k):
            hit()
            return real_step(*a, **k)

        loop.train_step = step
    elif point.startswith("write:"):
        name, real_replace = point[len("write:"):], os.replace

        def replace(src, dst, *a, **k):  # atomic writes end with os.replace(temp, target)
            if os.path.basename(dst) == name:
                hit()
            return real_replace(src, dst, *a, **k)

        os.replace = replace
    else:
        raise SystemExit(f"unknown kill point {point!r}")
    from hmfss.cli.main import main as cli

    return cli(args)


if __name__ == "__main__":
    sys.exit(main())

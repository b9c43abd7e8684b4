"""``hmfss`` entry point.

Each command lives in ``hmfss.cli.<name>`` and exposes ``register(subparsers)``, which adds
its parser with ``set_defaults(func=run)``. Heavy imports stay inside ``run`` so that
``hmfss --help`` is fast. A :class:`~hmfss.errors.HmfssError` becomes one line on stderr and
exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from hmfss.errors import HmfssError

COMMANDS = ("predict", "test", "episodes", "data", "train", "demo", "study", "benchmark", "app")


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose errors are one line on stderr (exit status 2), like every
    other hmfss error; ``--help`` still prints the usage."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="hmfss", description="Few-shot semantic segmentation with hybrid masking."
    )
    from hmfss import __version__

    parser.add_argument("--version", action="version", version=f"hmfss {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"hmfss.cli.{name.replace('-', '_')}")
        except ModuleNotFoundError as exc:
            if exc.name == f"hmfss.cli.{name}":
                continue  # command not available in this build
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result = args.func(args)
    except HmfssError as exc:
        print(f"hmfss: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("hmfss: interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())

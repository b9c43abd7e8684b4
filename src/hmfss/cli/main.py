"""``hmfss`` entry point.

Each command lives in ``hmfss.cli.<name>`` and exposes ``register(subparsers)``, which adds
its parser with ``set_defaults(func=run)``. Heavy imports stay inside ``run`` so that
``hmfss --help`` is fast. A :class:`~hmfss.errors.HmfssError`, an error of the file system or
a failed memory allocation becomes one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from hmfss.errors import HmfssError, out_of_memory

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
        sys.stdout.flush()  # a full or closed stdout fails here, not in the interpreter's exit
    except HmfssError as exc:
        print(f"hmfss: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("hmfss: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`hmfss episodes ... | head`): stop quietly
        _discard_stdout()
        return 141
    except (MemoryError, RuntimeError) as exc:  # torch's allocators raise RuntimeError subclasses
        message = out_of_memory(exc)
        if message is None:
            raise
        print(f"hmfss: error: {message}: smaller images or batches need less", file=sys.stderr)
        return 2
    except OSError as exc:  # the file system or a stream refused (disk full, name too long, ...)
        where = f": {exc.filename}" if exc.filename else ""
        print(f"hmfss: error: {exc.strerror or exc}{where}", file=sys.stderr)
        _discard_stdout()
        return 2
    return int(result or 0)


def _discard_stdout() -> None:
    """Point stdout at /dev/null if it can no longer be written, so that the interpreter's
    final flush does not fail a second time."""
    try:
        sys.stdout.flush()
    except OSError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


if __name__ == "__main__":
    sys.exit(main())

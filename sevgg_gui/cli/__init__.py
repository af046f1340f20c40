"""`sevgg`: the command-line face of the core.

One module per command group (``inspection``, ``training``, ``deploy``, ``diff``); this file only builds the
parser and dispatches. Imports are lazy so ``sevgg --help`` answers instantly; bad inputs give one line
on stderr naming the file and the reason, a batch goes on past a bad file, and the exit code says
whether all went well.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

from . import deploy, diff, explain, inspection, training
from .common import err, expand_inputs

__all__ = ["build_parser", "expand_inputs", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sevgg", description="VGG16-SE: inspect the model, classify images, record SE excitations."
    )
    parser.add_argument("--version", action="version", version=f"sevgg_gui {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in (inspection, training, deploy, explain, diff):
        group.register(sub)
    return parser


def _version() -> str:
    from .. import __version__

    return __version__


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        err("interrupted")
        return 130
    except Exception as exc:  # a last resort: one line, never a traceback
        from ..checkpoints import CheckpointError

        if isinstance(exc, CheckpointError | ValueError | RuntimeError | OSError):
            err(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        else:
            err(f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
        if os.environ.get("SEVGG_DEBUG"):
            raise
        return 1

"""The `bsnas` command line: a thin shell over the library.

Each sub-command lives in its own module of this package with two functions,
`add_parser(subparsers)` and `run(args) -> int`; `COMMANDS` lists them.
User errors (`BsnasError`) become one line on stderr and exit status 2, a failed storage (`StorageFault`) one line
and status 1. Ctrl-C and SIGTERM (a service
manager's stop) end a command the same way, through KeyboardInterrupt: a running training is given back and the
worker processes are stopped (`bsnas.search.processes`); the exit status is 130 or 143.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys

from bsnas import __version__
from bsnas.environment import environment_problem
from bsnas.errors import BsnasError, StorageFault, Terminated

__all__ = ["main"]

COMMANDS = ("zoo", "profile", "train", "space", "search", "worker", "report", "export", "retrain", "calibrate",
            "analyze", "latency")


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad command line is one line (`bsnas: error: search: ...`) and exit status 2 like every user
    error, not a usage block; it names the sub-command whose help to read, also for arguments it does not know."""

    commands: dict[str, argparse.ArgumentParser] = {}

    def error(self, message: str):
        command = self.prog.removeprefix("bsnas").strip()
        raise BsnasError(f"{command + ': ' if command else ''}{message} (see {self.prog} --help)")

    def parse_args(self, args=None, namespace=None):
        parsed, unknown = self.parse_known_args(args, namespace)
        if unknown:
            self.commands.get(getattr(parsed, "command", None), self).error(
                f"unrecognized arguments: {' '.join(unknown)}")
        return parsed


def build_parser() -> argparse.ArgumentParser:
    """Return the top-level parser with every sub-command registered."""
    parser = _Parser(prog="bsnas", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"bsnas {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        module = importlib.import_module(f"bsnas.cli.{name}")
        module.add_parser(subparsers)
    parser.commands = subparsers.choices
    return parser


def _terminate(signum, frame) -> None:
    raise Terminated


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit status (0 ok, 1 a storage fault or a Python without bsnas's dependencies, 2 user
    error, 130 Ctrl-C, 143 SIGTERM)."""
    if problem := environment_problem():  # before the commands' modules import torch
        print(f"bsnas: error: {problem}", file=sys.stderr)
        return 1
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        args = build_parser().parse_args(argv)
        return int(args.run(args) or 0)
    except BsnasError as error:
        print(f"bsnas: error: {error}", file=sys.stderr)
        return 2
    except StorageFault as error:
        print(f"bsnas: error: {error}", file=sys.stderr)
        return 1
    except Terminated:
        print("bsnas: terminated", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print("bsnas: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader of stdout went away (`bsnas zoo list | head`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous)

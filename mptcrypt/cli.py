"""`mptcrypt` command line: one subcommand per module, each registering itself with `register(sub)`."""

from __future__ import annotations

import argparse
import os
import sys

from mptcrypt import __version__
from mptcrypt.errors import MptcryptError

# Subcommand modules: each has register(subparsers) that adds its parser(s) and sets `func`.
SUBCOMMAND_MODULES = (
    "mptcrypt.daemon.cli",
    "mptcrypt.topo.cli",
    "mptcrypt.attacks.cli",
    "mptcrypt.handover.cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mptcrypt",
        description=(
            "Opportunistic encryption for TCP and MPTCP (tcpcrypt made MPTCP-aware). Run `mptcrypt daemon` "
            "on both hosts; every TCP/MPTCP connection between them is then encrypted and authenticated, "
            "extra MPTCP subflows are keyed without public-key work, and forged joins are refused."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Run `mptcrypt COMMAND --help` for the options of one command.",
    )
    parser.add_argument("--version", action="version", version=f"mptcrypt {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    import importlib

    for name in SUBCOMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:  # a subcommand whose package is not installed: leave it out
            if not exc.name or not (name == exc.name or name.startswith(exc.name + ".")):
                raise  # a real import error inside the module
            continue
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except MptcryptError as exc:
        print(f"mptcrypt: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `mptcrypt sessions | head`: the reader left; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())

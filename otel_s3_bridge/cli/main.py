"""The command line's entry: one parser with a sub-command per family module (`serve`, `read`,
`spool`, `records`), each command listing only the flags of the settings it uses.

`--help-all` also lists the advanced settings (limits, processes, the join, the S3 client).
Must not print a traceback for a user error or a token.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .. import __version__
from . import read, records, serve, spool
from .command import EXIT_CONFIG, help_layout, load


def parser(advanced: bool = False) -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="otel-s3-bridge", formatter_class=help_layout,
        description="Receive OTLP traces (HTTP JSON/protobuf and gRPC) and store LLM trace records in S3. "
                    "Without a command: serve. Each command's --help lists its own flags.")
    top.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = top.add_subparsers(dest="command", metavar="COMMAND")
    for family in (serve, read, spool, records):
        family.register(commands, advanced)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    advanced = "--help-all" in argv
    args = parser(advanced).parse_args(["--help" if arg == "--help-all" else arg for arg in argv])
    if args.command is None:
        args = parser(advanced).parse_args(["serve", *argv])
    config = load(args, args.command)
    if config is None:
        return EXIT_CONFIG
    return args.run(args, config, argv)

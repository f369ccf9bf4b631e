"""What every command shares: how a command is added (its help layout), loading the configuration a
command uses, its problems told one line each.

Must not print a token, or a traceback for a user error.
"""

from __future__ import annotations

import argparse
import shutil
import sys

from ..config import BridgeConfig, load_config
from ..errors import ConfigError

EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2


def help_layout(prog: str) -> argparse.HelpFormatter:
    """Flags and their help side by side, as wide as the terminal allows (at most 110 columns)."""
    return argparse.HelpFormatter(prog, max_help_position=34, width=min(110, shutil.get_terminal_size().columns))


def load(args: argparse.Namespace, command: str) -> BridgeConfig | None:
    """The configuration `command` uses, from its flags, the environment and `--config`; None
    (the problems printed) when it is not valid."""
    try:
        return load_config(vars(args), command=command)
    except ConfigError as error:
        print("otel-s3-bridge: invalid configuration:", file=sys.stderr)
        for problem in error.problems:
            print(f"  - {problem}", file=sys.stderr)
        return None


def add_command(commands: argparse._SubParsersAction, name: str, summary: str, usage: str = "",
                description: str = "") -> argparse.ArgumentParser:
    """A sub-command: `summary` in the commands' list, `description` (else the summary) atop its help."""
    return commands.add_parser(name, help=summary, usage=f"%(prog)s {usage}[FLAG ...]", formatter_class=help_layout,
                               description=description or summary[0].upper() + summary[1:] + ".")

"""`spool status` and `spool retry`: what waits in the spool (every worker's, with `--workers`),
what is quarantined and why, and quarantined records moved back to be uploaded again.

Works on the files alone, with or without a running bridge. Must not delete anything.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from ..config import BridgeConfig, add_config_arguments
from ..deliver.spool_commands import retry_quarantined, stats
from .command import EXIT_OK, add_command, help_layout


def register(commands: argparse._SubParsersAction, advanced: bool) -> None:
    spool = commands.add_parser("spool", help="inspect the spool, or retry what is quarantined",
                                formatter_class=help_layout)
    actions = spool.add_subparsers(dest="spool_command", metavar="ACTION", required=True)
    for action, text in (("status", "what is waiting for upload and what is quarantined"),
                         ("retry", "move quarantined records back into the spool")):
        parser = add_command(actions, action, text)
        add_config_arguments(parser, "spool", advanced=advanced)
    spool.set_defaults(run=run_spool)


def run_spool(args: argparse.Namespace, config: BridgeConfig, argv: list[str]) -> int:
    base = Path(config.spool_dir)
    # With --workers N every worker has its own spool below the base directory.
    roots = [root for root in (base, *sorted(base.glob("worker-*"))) if (root / "segments").is_dir()] or [base]
    for root in roots:
        if args.spool_command == "retry":
            moved = retry_quarantined(str(root))
            print(f"moved {moved} quarantined record(s) back into {root / 'segments'}; a running bridge uploads "
                  "them within seconds, a stopped one at its next start")
        else:
            _print_spool_status(root, config.spool_max_bytes)
    return EXIT_OK


def _print_spool_status(root: Path, max_bytes: int) -> None:
    waiting, quarantined = stats(root / "segments"), stats(root / "quarantine")
    print(f"spool {root.resolve()}")
    print(f"  waiting for upload: {waiting.entries} record(s), {_size(waiting.bytes)}{_age(waiting.oldest_unix_nano)}")
    print(f"  quarantined:        {quarantined.entries} record(s), {_size(quarantined.bytes)}"
          f"{_age(quarantined.oldest_unix_nano)}")
    print(f"  budget:             {_size(waiting.bytes + quarantined.bytes)} of {_size(max_bytes)}")
    reasons = root / "quarantine" / "reasons.log"
    if quarantined.entries and reasons.exists():
        print("  quarantine causes:")
        for line in reasons.read_text().splitlines()[-10:]:
            print(f"    {line}")
    for damaged in waiting.damaged_files + quarantined.damaged_files:
        print(f"  damaged (the readable part is uploaded): {damaged}")


def _size(count: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:.1f} {unit}" if unit != "B" else f"{count} B"
        count /= 1024
    raise AssertionError("unreachable")


def _age(unix_nano: int | None) -> str:
    if unix_nano is None:
        return ""
    seconds = max(0, int((time.time_ns() - unix_nano) / 1e9))
    return f", oldest {seconds // 3600}h{seconds // 60 % 60:02d}m{seconds % 60:02d}s ago"

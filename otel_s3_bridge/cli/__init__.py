"""Command line: `serve`, `check`, `health` (`serve`), `report`, `query`, `compact` (`read`),
`spool status|retry` (`spool`), `decode` and `send-test-trace` (`records`), put together in `main`.

Receives argv; hands each command a `BridgeConfig` of the settings it uses. Turns config errors
and sink diagnoses into one plain message and an exit code; never prints a traceback for a user
error or a token.
"""

from .main import main

__all__ = ["main"]

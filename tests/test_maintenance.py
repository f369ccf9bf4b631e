"""The maintenance loop (every two seconds: token, prices and TLS files re-read, join expiry, spool
adoption, state): one chore that fails never stops the others, and the loop never holds the event
loop in proportion to what lies on disk. Real bridges on loopback; what they do is read from the
outside: answers, metrics, and the system calls strace sees."""

from __future__ import annotations

import re
import subprocess

import requests

from conftest import TOKENS, BridgeProcess, eventually

SEEN_KEY = "tok-added-later-6d1f0c2a9b"


def _maintained(bridge: BridgeProcess) -> float:
    return bridge.metrics().get(("otel_s3_bridge_maintenance_last_success_timestamp_seconds", ()), 0.0)


def test_a_surprise_in_the_spool_never_stops_the_token_file_being_reread(tmp_path):
    """A directory named like a segment in the spool (or a file `spool retry` moves away while it
    is read) made the maintenance loop raise once and end for good: a key added to the token file
    afterwards was never accepted."""
    tokens = tmp_path / "tokens"
    tokens.write_text(f"openrouter={TOKENS['openrouter']}\n")
    spool = tmp_path / "spool"
    bridge = BridgeProcess(["--output-dir", str(tmp_path / "out"), "--spool-dir", str(spool),
                            "--token-file", str(tokens)], tmp_path / "bridge.log")
    try:
        (spool / "segments" / "00000000000000000000-trap.seg").mkdir()
        eventually(lambda: "cannot be read" in bridge.log, 30, lambda: bridge.log)
        tokens.write_text(f"openrouter={TOKENS['openrouter']}\nlater={SEEN_KEY}\n")
        headers = {"Authorization": f"Bearer {SEEN_KEY}", "Content-Type": "application/json"}
        eventually(lambda: requests.post(bridge.url, data=b"{}", headers=headers, timeout=10).status_code == 200,
                   30, lambda: bridge.log)
        first = _maintained(bridge)
        eventually(lambda: _maintained(bridge) > first > 0)  # every chore succeeds, again and again
    finally:
        assert bridge.stop() == 0
    assert bridge.log.count("cannot be read") == 1  # once, not every two seconds


def test_a_large_quarantine_is_not_read_again_every_two_seconds(tmp_path):
    """With 20,000 files in the quarantine, every maintenance pass stat()ed each of them in the
    event loop (~200 ms here, 1.2 s with 100,000): now the quarantine is counted when it changes
    (or every 30 s, in a thread). strace counts the stat calls on quarantine files over several
    passes of an unchanged quarantine."""
    spool = tmp_path / "spool"
    quarantine = spool / "quarantine"
    quarantine.mkdir(parents=True)
    for number in range(20_000):
        (quarantine / f"{number:020d}-x.seg").touch()
    bridge = BridgeProcess(["--output-dir", str(tmp_path / "out"), "--spool-dir", str(spool)],
                           tmp_path / "bridge.log")
    trace = tmp_path / "strace.out"
    try:
        eventually(lambda: _maintained(bridge) > 0)
        tracer = subprocess.Popen(["strace", "-f", "-qq", "-e", "trace=%%stat,epoll_wait,epoll_pwait", "-o", str(trace),
                                   "-p", str(bridge.process.pid)])
        try:
            eventually(lambda: trace.exists() and trace.stat().st_size > 0)  # attached: the loop's waits show
            started = _maintained(bridge)
            eventually(lambda: _maintained(bridge) >= started + 3 * 2, 30)  # three passes or more
        finally:
            tracer.terminate()
            tracer.wait(10)
        assert bridge.metrics()[("otel_s3_bridge_quarantined_entries", ())] == 20_000  # counted, at start
    finally:
        assert bridge.stop() == 0
    quarantine_stats = [line for line in trace.read_text().splitlines()
                        if re.search(r"quarantine/\d{20}-x\.seg", line)]
    assert quarantine_stats == []

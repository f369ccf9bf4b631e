"""The spool on a real directory: entry format, group commit, replay, torn tails, budget,
quarantine and retry. (End-to-end crash and fault tests are in test_durability.py.)"""

from __future__ import annotations

import asyncio
import fcntl
import os
import signal
import subprocess
import sys
import threading

import pytest

from otel_s3_bridge.deliver.spool import Spool, SpoolFull
from otel_s3_bridge.deliver.spool_commands import retry_quarantined, stats
from otel_s3_bridge.deliver.spool_format import encode_entry, read_entries
from otel_s3_bridge.durable import IOV_BATCH, write_all
from otel_s3_bridge.lake.object_controls import ObjectControls


def run(coroutine):
    return asyncio.run(coroutine)


def test_entries_round_trip_and_a_torn_tail_is_reported():
    data = encode_entry("a/b.json", b'{"x":1}', 5) + encode_entry("c.json", b"{}", 6)
    entries, end, problem = read_entries(data)
    assert [(e.key, e.body, e.enqueued_unix_nano) for e in entries] == [("a/b.json", b'{"x":1}', 5), ("c.json", b"{}", 6)]
    assert end == len(data) and problem is None
    for cut in (3, len(data) - 1):
        entries, end, problem = read_entries(data[:cut] if cut == 3 else data[:cut])
        assert problem and end <= cut
    corrupted = bytearray(data)
    corrupted[-1] ^= 0xFF
    entries, _, problem = read_entries(bytes(corrupted))
    assert len(entries) == 1 and "checksum" in problem


def _short_writes(pieces: list[bytes], write) -> tuple[bytes, int, object]:
    """`write(fd, pieces)` into a 4 KiB pipe that a thread drains, while a timer signal every 50 µs
    interrupts the writes: a blocked writev then returns what it wrote so far (a short write).
    Returns what came out of the pipe, how many signals arrived and what `write` returned."""
    read_end, write_end = os.pipe()
    fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, 4096)  # the smallest pipe, so that writes block often
    received = bytearray()

    def drain_pipe() -> None:
        for chunk in iter(lambda: os.read(read_end, 1000), b""):
            received.extend(chunk)

    drain = threading.Thread(target=drain_pipe)
    drain.start()
    signals = 0

    def count(*_):
        nonlocal signals
        signals += 1

    previous = signal.signal(signal.SIGALRM, count)
    signal.setitimer(signal.ITIMER_REAL, 0.00005, 0.00005)
    try:
        result = write(write_end, pieces)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        os.close(write_end)
        drain.join(30)
        os.close(read_end)
    return bytes(received), signals, result


def test_write_all_goes_on_from_where_a_short_write_stopped():
    """The spool writes an append's entries with writev, IOV_BATCH buffers a call; a short write
    (a signal, a pipe, a full disk's last block) must go on from the byte where it stopped."""
    pieces = [bytes([n % 251]) * (1 + n * 37 % 3000) for n in range(1500)]  # 3 writev batches, 2.2 MB
    # the premise: under these conditions a single writev is cut short
    _, signals, written = _short_writes(pieces, lambda fd, pieces: os.writev(fd, pieces[:IOV_BATCH]))
    assert signals and written < sum(map(len, pieces[:IOV_BATCH]))
    received, signals, _ = _short_writes(pieces, write_all)
    assert signals and received == b"".join(pieces)


def test_batch_layout_entries_carry_their_partition_and_flags():
    data = (encode_entry("a.json", b"{}", 5, "b1", "p/lake/dt=2026-01-02/hour=03", trace_object=False)
            + encode_entry("c.json", b"[]", 6, None, "p/lake/dt=2026-01-02/hour=04")
            + encode_entry("d.json", b"1", 7))
    entries, end, problem = read_entries(data)
    assert end == len(data) and problem is None
    assert [(e.key, e.bucket, e.body, e.partition, e.trace_object) for e in entries] == [
        ("a.json", "b1", b"{}", "p/lake/dt=2026-01-02/hour=03", False),
        ("c.json", None, b"[]", "p/lake/dt=2026-01-02/hour=04", True),
        ("d.json", None, b"1", None, True)]
    assert data[:4] == b"OSB3" and data[-len(encode_entry("d.json", b"1", 7)):][:4] == b"OSB2"


def test_entries_keep_the_object_controls_they_were_accepted_with_through_a_restart_and_the_quarantine(tmp_path):
    controls = ObjectControls("aws:kms", "key-1", "STANDARD_IA", (("team", "a"), ("source", "gen_ai"))).encode()
    data = (encode_entry("a.json", b"{}", 5, "b1", "p/lake/dt=2026-01-02/hour=03", trace_object=False,
                         controls=controls)
            + encode_entry("c.json", b"[]", 6, None, None, controls=controls) + encode_entry("d.json", b"1", 7))
    entries, end, problem = read_entries(data)
    assert end == len(data) and problem is None and data[:4] == b"OSB4"
    assert [(e.key, e.bucket, e.body, e.partition, e.trace_object) for e in entries] == [
        ("a.json", "b1", b"{}", "p/lake/dt=2026-01-02/hour=03", False), ("c.json", None, b"[]", None, True),
        ("d.json", None, b"1", None, True)]
    assert [ObjectControls.decode(e.controls) for e in entries] == [
        ObjectControls("aws:kms", "key-1", "STANDARD_IA", (("team", "a"), ("source", "gen_ai")))] * 2 + [
        ObjectControls()]

    async def first_run():
        spool = Spool(str(tmp_path), max_bytes=1 << 30)
        spool.open()
        await spool.append([("k1", b"{}", None), ("k2", b"{}", None)], controls=[controls, b""])
        await spool.quarantine(await spool.next(), b"{}", "refused for good")
        await spool.close()

    async def second_run():
        spool = Spool(str(tmp_path), max_bytes=1 << 30)
        replayed = spool.open()
        refs = [await spool.next() for _ in range(replayed)]
        await spool.close()
        return refs

    run(first_run())
    assert [ref.controls for ref in run(second_run())] == [b""]  # k2; k1 is in the quarantine
    retry_quarantined(str(tmp_path))
    assert [(ref.key, ref.controls) for ref in run(second_run())] == [("k2", b""), ("k1", controls)]


def test_concurrent_appends_share_fsyncs(tmp_path):
    async def scenario():
        spool = Spool(str(tmp_path), max_bytes=1 << 30)
        spool.open()
        await asyncio.gather(*(spool.append([(f"k{n}", b"x" * 100, None)]) for n in range(50)))
        assert spool.pending == 50
        syncs = spool.syncs_total
        await spool.close()
        return syncs

    assert 1 <= run(scenario()) < 25


FIRST_RUN = """
import asyncio, os, sys
from otel_s3_bridge.deliver.spool import Spool

async def first_run():
    spool = Spool(sys.argv[1], max_bytes=1 << 30, segment_max_bytes=300)
    spool.open()
    for n in range(6):
        await spool.append([(f"key-{n}", b"body-%d" % n + b"." * 60, None)])
    for _ in range(2):  # two uploaded, four still waiting
        spool.done(await spool.next())
    os._exit(0)  # the process dies without closing anything

asyncio.run(first_run())
"""


def test_a_restart_replays_what_was_not_uploaded(tmp_path):

    async def second_run():
        spool = Spool(str(tmp_path), max_bytes=1 << 30)
        replayed = spool.open()
        keys = [(await spool.next()).key for _ in range(replayed)]
        await spool.close()
        return replayed, keys

    subprocess.run([sys.executable, "-c", FIRST_RUN, str(tmp_path)], check=True, timeout=60)
    replayed, keys = run(second_run())
    assert replayed == 4 and keys == ["key-2", "key-3", "key-4", "key-5"]


def test_budget_refuses_and_frees_on_upload(tmp_path):
    async def scenario():
        spool = Spool(str(tmp_path), max_bytes=4096)
        spool.open()
        await spool.append([("a", b"x" * 3000, None)])
        with pytest.raises(SpoolFull):
            await spool.append([("b", b"x" * 3000, None)])
        assert not spool.has_room
        spool.done(await spool.next())
        assert spool.has_room
        await spool.append([("b", b"x" * 3000, None)])
        await spool.close()

    run(scenario())


def test_quarantine_status_and_retry(tmp_path):
    async def scenario():
        spool = Spool(str(tmp_path), max_bytes=1 << 30)
        spool.open()
        await spool.append([("k1", b"one", None), ("k2", b"two", None)])
        for _ in range(2):
            ref = await spool.next()
            await spool.quarantine(ref, spool.body_of(ref), "bucket 'b' does not exist")
        assert spool.pending == 0
        await spool.close()

    run(scenario())
    quarantined = stats(tmp_path / "quarantine")
    assert quarantined.entries == 2 and stats(tmp_path / "segments").entries == 0
    assert "does not exist" in (tmp_path / "quarantine" / "reasons.log").read_text()
    assert retry_quarantined(str(tmp_path)) == 2
    assert stats(tmp_path / "quarantine").entries == 0 and stats(tmp_path / "segments").entries == 2

    async def replay():
        spool = Spool(str(tmp_path), max_bytes=1 << 30)
        assert spool.open() == 2
        refs = [await spool.next(), await spool.next()]
        bodies = sorted(spool.body_of(ref) for ref in refs)
        await spool.close()
        return bodies

    assert run(replay()) == [b"one", b"two"]


def test_a_fully_uploaded_spool_leaves_no_segment_behind(tmp_path):
    async def scenario():
        spool = Spool(str(tmp_path), max_bytes=1 << 30, segment_max_bytes=1000)
        spool.open()
        for n in range(20):
            await spool.append([(f"k{n}", b"y" * 200, None)])
        while spool.pending:
            spool.done(await spool.next())
        await spool.close()

    run(scenario())
    assert list((tmp_path / "segments").iterdir()) == []


def test_one_spool_directory_per_process(tmp_path):
    first = Spool(str(tmp_path), max_bytes=1 << 30)
    first.open()
    with pytest.raises(OSError, match="in use"):
        Spool(str(tmp_path), max_bytes=1 << 30).open()
    run(first.close())


def test_spool_commands_cover_every_worker_directory(tmp_path):
    async def quarantine_one(directory):
        spool = Spool(str(directory), max_bytes=1 << 30)
        spool.open()
        await spool.append([("k", b"body", None)])
        ref = await spool.next()
        await spool.quarantine(ref, spool.body_of(ref), "access denied")
        await spool.close()

    for worker in (0, 1):
        run(quarantine_one(tmp_path / f"worker-{worker}"))
    command = [sys.executable, "-m", "otel_s3_bridge", "spool"]
    status = subprocess.run([*command, "status", "--spool-dir", str(tmp_path)], capture_output=True, text=True,
                            timeout=60)
    assert status.stdout.count("quarantined:        1 record(s)") == 2
    retried = subprocess.run([*command, "retry", "--spool-dir", str(tmp_path)], capture_output=True, text=True,
                             timeout=60)
    assert retried.stdout.count("moved 1 quarantined") == 2
    assert all(stats(tmp_path / f"worker-{n}" / "segments").entries == 1 for n in (0, 1))


def test_taking_a_ready_entry_without_waiting_never_passes_one_that_waits_out_its_backoff(tmp_path):
    """`ready_now` (the uploaders' path without a coroutine) gives entries in order, and stands
    aside while any entry waits out a backoff, so that `next` puts a due one back in its turn."""

    async def scenario():
        spool = Spool(str(tmp_path), max_bytes=1 << 30)
        spool.open()
        await spool.append([(f"key-{n}", b"{}", None) for n in range(3)])
        queue = spool.queue
        first = queue.ready_now()
        queue.retry_later(first, 0.01)  # failed: waits out a backoff
        while_delayed = queue.ready_now()
        order = [(await spool.next()).key for _ in range(3)]  # waits for the delayed one when it is all that is left
        left = queue.ready_now()
        await spool.close()
        return first.key, while_delayed, sorted(order), left

    first, while_delayed, order, left = run(scenario())
    assert first == "key-0" and while_delayed is None
    assert order == ["key-0", "key-1", "key-2"] and left is None

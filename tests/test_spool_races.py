"""The spool and its uploaders under forced interleavings and failures, deterministically.

The spool's `SegmentFiles` seam lets a test hold a new segment's creation (it runs in a thread)
while the event loop does what it does every two seconds (`adopt_segments`), or make the creation
fail; a memory sink (the sink seam) fails the ways a real one does, and in ways only a bug would.
Real files, real threads, no patching."""

from __future__ import annotations

import asyncio
import errno
import subprocess
import sys
import threading
from pathlib import Path

from otel_s3_bridge.errors import SinkError
from otel_s3_bridge.deliver.spool import SegmentFiles, Spool
from otel_s3_bridge.deliver.spool_commands import retry_quarantined
from otel_s3_bridge.deliver.spool_format import read_entries
from otel_s3_bridge.deliver.uploader import Uploader


def run(coroutine):
    return asyncio.run(coroutine)


class HeldFiles(SegmentFiles):
    """Creates segments for real; the `hold`-th creation waits, file made, until released."""

    def __init__(self, hold: int) -> None:
        self.calls = 0
        self.hold = hold
        self.created = threading.Event()
        self.release = threading.Event()

    def create(self, path: Path) -> int:
        self.calls += 1
        fd = super().create(path)
        if self.calls == self.hold:
            self.created.set()
            self.release.wait(30)
        return fd


class FailingFiles(SegmentFiles):
    """The `fail`-th creation fails as a full disk would."""

    def __init__(self, fail: int) -> None:
        self.calls = 0
        self.fail = fail

    def create(self, path: Path) -> int:
        self.calls += 1
        if self.calls == self.fail:
            raise OSError(errno.ENOSPC, "No space left on device")
        return super().create(path)


def _segment_keys(directory: Path) -> list[str]:
    return [entry.key for path in sorted((directory / "segments").glob("*.seg"))
            for entry in read_entries(path.read_bytes())[0]]


def test_a_new_segment_is_never_adopted_while_it_is_being_created(tmp_path):
    """adopt_segments ran while rotation created the next segment in a thread: it took the new,
    empty file for a finished one and deleted it, and appends went on into an unlinked file."""
    files = HeldFiles(hold=2)

    async def scenario():
        spool = Spool(str(tmp_path), max_bytes=1 << 30, segment_max_bytes=200, files=files)
        spool.open()
        await spool.append([("first", b"x" * 150, None)])
        rotating = asyncio.create_task(spool.append([("second", b"y" * 150, None)]))
        await asyncio.to_thread(files.created.wait, 30)
        adopted = spool.adopt_segments()  # what the maintenance loop does every two seconds
        files.release.set()
        await rotating
        await spool.append([("third", b"z" * 10, None)])
        on_disk = _segment_keys(tmp_path)
        await spool.close()
        return adopted, on_disk

    adopted, on_disk = run(scenario())
    assert adopted == 0
    assert on_disk == ["first", "second", "third"]  # acknowledged entries are in files that exist


def test_a_failed_rotation_keeps_the_active_segment_and_loses_nothing(tmp_path):
    """Rotation sealed the old segment before the new one existed: when creating the new one
    failed, the still-active segment was deleted once its entries were uploaded, later appends
    went to an unlinked file, and a later call raised KeyError inside an uploader."""
    files = FailingFiles(fail=2)

    async def scenario():
        spool = Spool(str(tmp_path), max_bytes=1 << 30, segment_max_bytes=200, files=files)
        spool.open()
        await spool.append([("a", b"x" * 150, None)])
        await spool.append([("b", b"x" * 150, None)])  # rotation fails: appended to the active segment
        for _ in range(2):
            spool.done(await spool.next())  # everything uploaded: the active segment must stay
        await spool.append([("c", b"x" * 10, None)])  # rotation works again: the finished segment goes
        on_disk = _segment_keys(tmp_path)
        await spool.close()
        return on_disk

    assert run(scenario()) == ["c"]  # the acknowledged entry is on disk, in a file that exists

    async def restart():
        again = Spool(str(tmp_path), max_bytes=1 << 30)
        replayed = again.open()
        keys = [(await again.next()).key for _ in range(replayed)]
        await again.close()
        return keys

    assert run(restart()) == ["c"]


class MemorySink:
    """A sink seam: stores bodies; `behaviour(key, attempt)` may raise before storing."""

    description = "memory sink"

    def __init__(self, behaviour) -> None:
        self.objects: dict[str, bytes] = {}
        self.attempts: dict[str, int] = {}
        self.behaviour = behaviour

    async def put(self, key: str, body: bytes, content_type: str, *, bucket: str | None = None,
                  controls: bytes = b"") -> None:
        attempt = self.attempts[key] = self.attempts.get(key, 0) + 1
        self.behaviour(key, attempt)
        self.objects[key] = body


def _misbehave(key: str, attempt: int) -> None:
    if key == "always-503":
        raise SinkError("503 SlowDown", retryable=True)
    if key == "cancelled-inside" and attempt == 1:
        raise asyncio.CancelledError()  # e.g. a client library's own timeout leaking out
    if key == "bug" and attempt <= 2:
        raise KeyError("a bug in a sink")
    if key == "refused":
        raise SinkError("access denied \udcff (an undecodable byte from the server)", retryable=False)


def test_one_bad_entry_never_holds_a_worker_and_no_worker_dies(tmp_path):
    """With one worker: an entry that always fails (retryably), one whose upload is cancelled from
    within, one that hits a bug and one refused for good with an undecodable message (which used
    to crash the quarantine and kill the worker silently) must not stop the others."""
    sink = MemorySink(_misbehave)
    keys = ["always-503", "cancelled-inside", "bug", "refused", *(f"ok-{n}" for n in range(20))]

    async def scenario():
        return await asyncio.wait_for(uploads(), 60)

    async def uploads():
        spool = Spool(str(tmp_path), max_bytes=1 << 30)
        spool.open()
        uploader = Uploader(spool, sink, concurrency=1, retry_max_seconds=0.5)
        uploader.start()
        for key in keys:
            await spool.append([(key, key.encode(), None)])
        while not all(key in sink.objects for key in keys[4:] + ["cancelled-inside", "bug"]):
            await asyncio.sleep(0.01)
        while spool.quarantined_total < 1:
            await asyncio.sleep(0.01)
        # Retried with its own backoff (random, up to 0.4 s here): the others may all be done first.
        while sink.attempts.get("always-503", 0) < 2:
            await asyncio.sleep(0.01)
        pending = spool.pending
        await uploader.stop()
        await spool.close()
        return pending

    assert run(scenario()) == 1  # only always-503 still waits (retried with its own backoff)
    assert sink.attempts["always-503"] >= 2 and "refused" not in sink.objects
    assert "access denied" in (tmp_path / "quarantine" / "reasons.log").read_text(errors="replace")


def test_an_entry_that_cannot_be_read_back_is_quarantined_not_dropped(tmp_path):
    sink = MemorySink(lambda key, attempt: None)

    async def write():
        spool = Spool(str(tmp_path), max_bytes=1 << 30, body_cache_bytes=0)  # bodies read back from disk
        spool.open()
        await spool.append([("good-1", b"one", None), ("damaged", b"two" * 50, None), ("good-2", b"three", None)])
        return spool

    spool = run(write())
    [segment] = (tmp_path / "segments").glob("*.seg")
    data = bytearray(segment.read_bytes())
    data[data.index(b"twotwo") + 10] ^= 0xFF  # bit rot inside the second entry
    segment.write_bytes(bytes(data))

    async def upload():
        uploader = Uploader(spool, sink, concurrency=2, retry_max_seconds=0.1)
        uploader.start()
        await uploader.drain(30)
        await uploader.stop()
        await spool.close()

    run(upload())
    assert sorted(sink.objects) == ["good-1", "good-2"]  # the damaged body was never uploaded
    [kept] = (tmp_path / "quarantine").glob("unreadable-*.seg")
    assert "cannot be read back" in (tmp_path / "quarantine" / "reasons.log").read_text()
    assert [entry.key for entry in read_entries(kept.read_bytes())[0]] == ["good-1"]  # the bytes are kept as they are
    assert retry_quarantined(str(tmp_path)) == 1


def test_the_local_sink_makes_each_rename_durable_before_the_spool_forgets_it(tmp_path):
    """After os.replace the directory must be fsynced, or a crash can lose an object the spool
    has already forgotten. Traced with strace: every rename is followed by an fsync of a directory."""
    script = (
        "import asyncio, sys\n"
        "from otel_s3_bridge.deliver.sink_local import LocalDirectorySink\n"
        "asyncio.run(LocalDirectorySink(sys.argv[1], 'p').put('p/2026-01-01/a.json', b'{}', 'application/json'))\n")
    traced = subprocess.run(["strace", "-f", "-e", "trace=rename,renameat,renameat2,fsync,openat", sys.executable,
                             "-c", script, str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert traced.returncode == 0, traced.stderr[-2000:]
    lines = traced.stderr.splitlines()
    renamed = next(n for n, line in enumerate(lines) if "rename" in line and "a.json" in line)
    directory_opened = [line for line in lines[renamed:] if "O_DIRECTORY" in line and "2026-01-01" in line]
    assert directory_opened and any(line.startswith(("fsync", "[pid")) and "fsync" in line for line in lines[renamed:])
    assert (tmp_path / "p" / "2026-01-01" / "a.json").read_bytes() == b"{}"


def test_each_queued_entry_wakes_one_waiting_uploader_and_no_wake_up_is_lost():
    """16 uploaders wait in `next`: an entry queued wakes one of them (an event woke all 16 on every
    append), and an uploader stopped between being woken and running hands its wake-up on, so no
    entry is left waiting while others sleep."""
    from otel_s3_bridge.deliver.spool_queue import Ref, UploadQueue

    async def settled() -> None:  # let every task that can run, run
        for _ in range(10):
            await asyncio.sleep(0)

    async def scenario() -> None:
        queue = UploadQueue(1 << 20)
        waiters = [asyncio.create_task(queue.next()) for _ in range(16)]
        await settled()
        assert not any(task.done() for task in waiters)

        queue.put(Ref(None, 0, 1, "a", None, b"a", 1))
        await settled()
        woken = [task for task in waiters if task.done()]
        assert [task.result().key for task in woken] == ["a"]  # one woken, fifteen sleep on

        asleep = [task for task in waiters if not task.done()]
        queue.put(Ref(None, 0, 1, "b", None, b"b", 2))  # wakes the first to wait of them...
        asleep[0].cancel()  # ...which is stopped before it runs
        await settled()
        assert asleep[0].cancelled()
        taken = [task for task in asleep[1:] if task.done()]
        assert [task.result().key for task in taken] == ["b"]

        queue.put_written(None, 0, [("c", b"c", None), ("d", b"d", None)], [1, 1], 3, None, None, True, None)
        await settled()
        taken = [task for task in asleep[1:] if task.done()]
        assert sorted(task.result().key for task in taken) == ["b", "c", "d"]  # one each
        for task in waiters:
            task.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)

    run(scenario())


def test_an_export_cancelled_while_it_waits_for_the_group_commit_leaves_the_fdatasync_to_the_others(tmp_path):
    """A client gone mid-append (its task cancelled while its entries await the shared fdatasync):
    the export next to it is still made durable and answered, and the cancelled one's entries,
    written already, are queued for the sink all the same (nothing written is left unqueued)."""
    async def scenario() -> tuple[list, list[str], list[str]]:
        spool = Spool(str(tmp_path), max_bytes=1 << 30)
        spool.open()

        async def export(key: str, cancel_once_written: bool) -> None:
            task = asyncio.current_task()
            await spool.append([(key, b"{}", None)], on_written=task.cancel if cancel_once_written else None)

        first = asyncio.ensure_future(export("gone", True))
        second = asyncio.ensure_future(export("kept", False))
        outcomes = await asyncio.gather(first, second, return_exceptions=True)
        queued = [ref.key for ref in spool.queue.take(lambda ref: True)]
        await spool.close()
        again = Spool(str(tmp_path), max_bytes=1 << 30)
        again.open()
        replayed = sorted(ref.key for ref in again.queue.take(lambda ref: True))
        await again.close()
        return outcomes, sorted(queued), replayed

    outcomes, queued, replayed = run(scenario())
    assert isinstance(outcomes[0], asyncio.CancelledError)
    assert outcomes[1] is None  # the export beside it: durable and answered, not "the fdatasync was cancelled"
    assert queued == ["gone", "kept"] and replayed == ["gone", "kept"]

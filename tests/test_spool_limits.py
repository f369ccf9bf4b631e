"""Readiness and the spool at their limits, end to end: an export larger than the whole spool,
object keys from hostile ids on the local sink, a sink that refuses an object for good with
`--ack upload`, and a disk that fills up and frees again while nothing is left to upload."""

from __future__ import annotations

import asyncio
import gzip
import json
import subprocess
import time
import uuid

import orjson
import requests

from conftest import BridgeProcess, S3Bridge, eventually, list_keys, new_bucket
from otel_s3_bridge.sample import sample_delivery
from otel_s3_bridge.deliver.spool import Spool
from test_durability import Proxy


def _delivery(trace_id: str | None = None, prompt_bytes: int = 0, generation: str = "gen") -> bytes:
    now = time.time_ns()
    generation = f"{generation}-{now // 10**9}-{uuid.uuid4().hex[:20]}"
    delivery = sample_delivery(generation, now)
    attributes = delivery["resourceSpans"][0]["resource"]["attributes"]
    if trace_id is not None:
        for attribute in attributes:
            if attribute["key"] == "openrouter.trace.id":
                attribute["value"] = {"stringValue": trace_id}
    if prompt_bytes:
        for attribute in delivery["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["attributes"]:
            if attribute["key"] == "gen_ai.prompt":
                attribute["value"] = {"stringValue": json.dumps({"messages": [{"role": "user",
                                                                               "content": "p" * prompt_bytes}]})}
    return orjson.dumps(delivery)


def test_an_export_larger_than_the_whole_spool_is_413_and_the_bridge_stays_ready(moto, s3, tmp_path):
    bridge = S3Bridge(moto, new_bucket(s3), tmp_path / "bridge.log",
                      ["--ack", "spool", "--spool-max-bytes", str(1024 * 1024)])
    try:
        response = bridge.post(_delivery(prompt_bytes=1_500_000))
        assert response.status_code == 413 and "Retry-After" not in response.headers
        assert "spool" in response.json()["message"]
        ready = requests.get(f"http://127.0.0.1:{bridge.http_port}/readyz", timeout=10)
        assert ready.status_code == 200, ready.text
        assert bridge.post(_delivery()).status_code == 200
    finally:
        bridge.stop()


def test_hostile_ids_never_hold_an_upload_worker_on_the_local_sink(tmp_path):
    output = tmp_path / "objects"
    bridge = BridgeProcess(["--output-dir", str(output), "--spool-dir", str(tmp_path / "spool"),
                            "--upload-retry-max-seconds", "1"], tmp_path / "bridge.log")
    try:
        hostile = [f"gen-{'x' * 196}{n:02d}" for n in range(16)] + ["😀" * 200 + str(n) for n in range(16)]
        for trace_id in hostile:
            assert requests.post(bridge.url, data=_delivery(trace_id), timeout=30).status_code == 200
        for _ in range(20):
            assert requests.post(bridge.url, data=_delivery(), timeout=30).status_code == 200
        bridge.wait_until_uploaded(60)
        assert requests.get(f"http://127.0.0.1:{bridge.http_port}/readyz", timeout=10).status_code == 200
        stored = [path for path in output.rglob("*.json")]
        assert len(stored) == 52, len(stored)  # 32 distinct hostile ids + 20, none overwriting another
        assert all(len(path.name.encode()) <= 200 for path in stored)
        assert not list((tmp_path / "spool").rglob("quarantine/*.seg"))
    finally:
        bridge.stop()


def test_with_ack_auto_an_export_larger_than_the_whole_spool_is_stored_or_told_to_retry(moto, s3, tmp_path):
    """Put first, it is stored; when the bucket does not take it now, a retry may be put first:
    503 + Retry-After, not the 413 that tells a client to give it up."""
    proxy = Proxy(moto.url).start("--fail-bodies-without", "gen-stored")
    bridge = S3Bridge(proxy, new_bucket(s3), tmp_path / "bridge.log", ["--spool-max-bytes", str(1024 * 1024)])
    try:
        response = bridge.post(_delivery(prompt_bytes=1_500_000, generation="gen-stored"))
        assert response.status_code == 200, response.text
        assert [item["Size"] > 1_500_000 for item in s3.list_objects_v2(Bucket=bridge.bucket)["Contents"]] == [True]
        refused = bridge.post(_delivery(prompt_bytes=1_500_000))  # the bucket fails this one (503 SlowDown)
        assert refused.status_code == 503 and "Retry-After" in refused.headers, refused.text
        assert "spool" in refused.json()["message"]
        assert requests.get(f"http://127.0.0.1:{bridge.http_port}/readyz", timeout=10).status_code == 200
    finally:
        bridge.stop()


def test_with_ack_upload_an_object_refused_for_good_is_reported_not_retried(moto, s3, tmp_path):
    proxy = Proxy(moto.url).start("--refuse-keys", "denied")
    try:
        bridge = S3Bridge(proxy, new_bucket(s3), tmp_path / "bridge.log", ["--ack", "upload"])
        try:
            response = bridge.post(_delivery("gen-denied-by-policy"))
            assert response.status_code == 200
            partial = response.json()["partialSuccess"]
            assert int(partial["rejectedSpans"]) >= 1 and "access denied" in partial["errorMessage"]
            assert bridge.post(_delivery()).status_code == 200
        finally:
            bridge.stop()
    finally:
        proxy.stop()


def test_readiness_comes_back_when_a_full_disk_frees_with_nothing_to_upload(moto, tmp_path):
    disk = tmp_path / "small-disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)], check=True)
    try:
        unreachable = Proxy(moto.url)  # never started: nothing can be uploaded
        bridge = S3Bridge(unreachable, "no-such-upload", tmp_path / "bridge.log",
                          ["--spool-dir", str(disk / "spool")])
        try:
            filler = disk / "filler"
            with open(filler, "wb") as handle:  # someone else fills the disk
                try:
                    while True:
                        handle.write(b"\0" * 65536)
                        handle.flush()
                except OSError:
                    pass
            refused = bridge.post(_delivery(prompt_bytes=100_000))
            assert refused.status_code == 503 and "full" in refused.json()["message"]
            assert requests.get(f"http://127.0.0.1:{bridge.http_port}/readyz", timeout=10).status_code == 503
            filler.unlink()
            eventually(lambda: requests.get(f"http://127.0.0.1:{bridge.http_port}/readyz", timeout=10)
                       .status_code == 200, 30, lambda: bridge.log)
            assert bridge.post(_delivery()).status_code == 200
        finally:
            bridge.stop()
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


class SmallDisk:
    """A tmpfs of `size` mounted for the test (the suite runs as root, as CI does)."""

    def __init__(self, path, size: str) -> None:
        self.path = path
        path.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)
        self.filler = path / "filler"

    def fill(self) -> None:
        """Someone else fills the disk, to the last page."""
        with open(self.filler, "ab", buffering=0) as handle:
            for chunk in (65536, 4096):
                try:
                    while True:
                        handle.write(b"\0" * chunk)
                except OSError:
                    pass

    def free(self) -> None:
        self.filler.unlink()

    def unmount(self) -> None:
        subprocess.run(["umount", "-l", str(self.path)], check=False)


def test_a_disk_full_blip_never_quarantines_a_batch(moto, s3, tmp_path):
    """The disk under the spool is full for a moment while a batch file is made: its staging
    file and manifest cannot be written. Three quick failures sent the whole batch to the
    quarantine (and the log blamed the sink for a file named None); now the batch is tried again
    with backoff and written once the disk has room."""
    disk = SmallDisk(tmp_path / "small-disk", "4m")
    bucket = new_bucket(s3)
    try:
        bridge = S3Bridge(moto, bucket, tmp_path / "bridge.log",
                          ["--spool-dir", str(disk.path / "spool"), "--layout", "batch", "--batch-max-age-seconds", "2",
                           "--batch-format", "ndjson"])
        try:
            for _ in range(10):
                assert bridge.post(_delivery()).status_code == 200
            disk.fill()  # before the batch is flushed (2 s after its first record)
            eventually(lambda: "cannot write a batch file's parts" in bridge.log or "failed unexpectedly" in bridge.log,
                       30, lambda: bridge.log)
            time.sleep(1.5)  # the blip lasts a second and a half: longer than the old burst of three tries
            disk.free()
            bridge.wait_until_uploaded()
            assert bridge.readiness()["quarantined_total"] == 0
        finally:
            assert bridge.stop() == 0
        rows = sum(len(gzip.decompress(s3.get_object(Bucket=bucket, Key=key)["Body"].read()).splitlines())
                   for key in list_keys(s3, bucket, "openrouter-traces/lake/"))
        assert rows == 10
        assert "None" not in bridge.log.split("ready:", 1)[1]
    finally:
        disk.unmount()


def test_a_done_mark_a_full_disk_refused_is_never_reported_durable(tmp_path):
    """A batch file's members are marked done, the marks fsynced, and only then is its manifest
    deleted. A mark the full disk refused was swallowed and the marks reported durable: the
    manifest went, and after a crash the same records landed in a second file."""
    disk = SmallDisk(tmp_path / "small-disk", "1m")

    async def scenario() -> tuple[bool, bool]:
        spool = Spool(str(disk.path / "spool"), max_bytes=1 << 30)
        spool.open()
        await spool.append([(f"k{n}", b"x", None) for n in range(513)])
        refs = [await spool.next() for _ in range(513)]
        first = await spool.done_durably(refs[:512])  # the done file is one full page now
        disk.fill()
        last = await spool.done_durably(refs[512:])  # its mark needs a page the disk has not got
        disk.free()
        await spool.close()
        return first, last

    try:
        assert asyncio.run(scenario()) == (True, False)
    finally:
        disk.unmount()

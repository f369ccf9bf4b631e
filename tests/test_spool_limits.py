"""Readiness and the spool at their limits, end to end: an export larger than the whole spool,
object keys from hostile ids on the local sink, a sink that refuses an object for good with
`--ack upload`, and a disk that fills up and frees again while nothing is left to upload."""

from __future__ import annotations

import json
import subprocess
import time
import uuid

import orjson
import requests

from conftest import BridgeProcess, S3Bridge, eventually, new_bucket
from otel_s3_bridge.sample import sample_delivery
from test_durability import Proxy


def _delivery(trace_id: str | None = None, prompt_bytes: int = 0) -> bytes:
    now = time.time_ns()
    generation = f"gen-{now // 10**9}-{uuid.uuid4().hex[:20]}"
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
    bridge = S3Bridge(moto, new_bucket(s3), tmp_path / "bridge.log", ["--spool-max-bytes", str(1024 * 1024)])
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

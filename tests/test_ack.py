"""When an export is answered (`--ack auto`, the default): once its objects are in the bucket, or,
when the bucket is slow, failing or refusing, once they are fsynced in the spool (and uploaded,
retried or quarantined from there). The bridge runs as a process, S3 is moto (behind the fault
proxy where it must misbehave); what was answered is read back with boto3 and the bridge's metrics."""

from __future__ import annotations

import time
import uuid

import orjson
import requests

from conftest import Proxy, S3Bridge, eventually, key_for, new_bucket
from otel_s3_bridge.sample import sample_delivery
from test_admission import openinference_export

ACKNOWLEDGED = "otel_s3_bridge_acknowledged_objects_total"


def delivery(marker: str = "gen") -> tuple[bytes, str]:
    now = time.time_ns()
    generation_id = f"{marker}-{uuid.uuid4().hex[:20]}"
    return orjson.dumps(sample_delivery(generation_id, now)), key_for(generation_id, now)


def acknowledged(bridge: S3Bridge) -> dict[str, float]:
    return {dict(labels)["held_in"]: value for (name, labels), value in bridge.metrics().items()
            if name == ACKNOWLEDGED}


def test_by_default_an_export_is_answered_once_its_objects_are_in_the_bucket(moto, s3, tmp_path):
    bridge = S3Bridge(moto, new_bucket(s3), tmp_path / "bridge.log", [])
    try:
        for _ in range(5):
            body, key = delivery()
            assert bridge.post(body).status_code == 200
            s3.head_object(Bucket=bridge.bucket, Key=key)  # there at the answer: not waited for
        response = requests.post(bridge.url, data=openinference_export(40), timeout=60,
                                 headers=bridge.headers(content_type="application/x-protobuf"))
        assert response.status_code == 200 and not response.content.strip(b"\x00")  # no partial success
        assert s3.list_objects_v2(Bucket=bridge.bucket)["KeyCount"] == 45
        assert acknowledged(bridge) == {"bucket": 45.0}
        assert not list((tmp_path / "spool").glob("*.seg")), "the spool was written"
    finally:
        assert bridge.stop() == 0


def test_a_bucket_slower_than_the_wait_gets_the_export_spooled_and_uploaded_later(moto, s3, tmp_path):
    proxy = Proxy(moto.url).start("--fail-rate", "1", "--kinds", "stall", "--stall-seconds", "1.5")
    bridge = S3Bridge(proxy, new_bucket(s3), tmp_path / "bridge.log", ["--ack-wait-seconds", "0.2"])
    try:
        keys = set()
        for _ in range(3):
            body, key = delivery()
            assert bridge.post(body).status_code == 200
            keys.add(key)
        held = acknowledged(bridge)
        assert held.get("spool") == 3.0 and not held.get("bucket"), held
        bridge.wait_until_uploaded(60)
        stored = {item["Key"] for item in s3.list_objects_v2(Bucket=bridge.bucket).get("Contents", [])}
        assert stored == keys
    finally:
        assert bridge.stop() == 0


def test_a_bucket_that_refuses_an_object_for_good_gets_it_quarantined_not_reported(moto, s3, tmp_path):
    proxy = Proxy(moto.url).start("--refuse-keys", "denied")
    bridge = S3Bridge(proxy, new_bucket(s3), tmp_path / "bridge.log", [])
    try:
        body, _ = delivery("gen-denied")
        response = bridge.post(body)
        assert response.status_code == 200 and "partialSuccess" not in response.json()
        eventually(lambda: bridge.readiness().get("quarantined_total") == 1,
                   message=lambda: f"not quarantined: {bridge.readiness()}")
        assert acknowledged(bridge) == {"spool": 1.0}
    finally:
        assert bridge.stop() == 0


def test_after_a_failed_put_exports_are_spooled_for_a_while_without_trying_first(moto, s3, tmp_path):
    """While the bucket fails, each export is not held up by a put that fails too: after one has
    failed, the next ones go to the spool at once, and puts first are tried again later."""
    proxy = Proxy(moto.url).start("--split-error-keys", "gen-fails-once")  # its first PUT: 400 RequestTimeout
    bridge = S3Bridge(proxy, new_bucket(s3), tmp_path / "bridge.log", [])
    try:
        assert bridge.post(delivery("gen-fails-once")[0]).status_code == 200
        assert bridge.post(delivery()[0]).status_code == 200  # the bucket would take this one
        assert acknowledged(bridge) == {"spool": 2.0}

        def put_first_again() -> bool:
            assert bridge.post(delivery()[0]).status_code == 200
            return acknowledged(bridge).get("bucket", 0) >= 1

        eventually(put_first_again, 60, interval=0.5)
        bridge.wait_until_uploaded(60)
    finally:
        assert bridge.stop() == 0


def test_a_failing_bucket_sends_its_own_exports_to_the_spool_not_other_keys(moto, s3, tmp_path):
    """Keys may have buckets of their own: one that fails does not stop the others being put first."""
    proxy = Proxy(moto.url).start("--split-error-keys", "gen-fails-once")
    own_bucket = new_bucket(s3)
    bridge = S3Bridge(proxy, new_bucket(s3), tmp_path / "bridge.log", ["--key-bucket", f"sdk={own_bucket}"])
    try:
        assert bridge.post(delivery("gen-fails-once")[0]).status_code == 200  # the default bucket fails it
        body, key = delivery()
        assert bridge.post(body, key="sdk").status_code == 200
        s3.head_object(Bucket=own_bucket, Key=key)  # put first: there at the answer
        assert bridge.post(delivery()[0]).status_code == 200  # the default bucket's window: spooled
        assert acknowledged(bridge) == {"spool": 2.0, "bucket": 1.0}
        bridge.wait_until_uploaded(60)
    finally:
        assert bridge.stop() == 0

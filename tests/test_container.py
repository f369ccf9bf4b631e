"""The container image (`deploy/Dockerfile`), built with podman on a Debian bookworm base made with
mmdebstrap and run for real: read-only root filesystem, a non-root user, the spool on a mounted
volume, against the S3 server on the host network; exports land in the bucket, HEALTHCHECK passes,
and SIGTERM drains the spool before the container exits 0."""

from __future__ import annotations

import json
import os
import socket
import time
import uuid

import orjson
import pytest
import requests

from conftest import TOKENS, Proxy, eventually, free_port, key_for, list_keys, new_bucket
from otel_s3_bridge.sample import new_generation_id, sample_delivery
from podman import Podman, missing_tools

pytestmark = pytest.mark.slow
IMAGE_USER = 10001


@pytest.fixture(scope="session")
def podman(tmp_path_factory) -> Podman:
    missing = missing_tools()
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed (.ci/run installs them from Debian's packages)")
    return Podman(tmp_path_factory.mktemp("podman"))


@pytest.fixture(scope="session")
def bridge_image(podman: Podman) -> str:
    return podman.build_bridge_image()


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def deliveries(count: int) -> list[tuple[bytes, str]]:
    out = []
    for _ in range(count):
        now = time.time_ns()
        generation = new_generation_id(now // 1_000_000_000)
        out.append((orjson.dumps(sample_delivery(generation, now)), key_for(generation, now)))
    return out


def metric(port: int, name: str) -> float:
    for line in requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


def test_image_runs_read_only_as_non_root_and_drains_on_sigterm(moto, s3, tmp_path, podman, bridge_image):
    inspected = json.loads(podman("image", "inspect", bridge_image).stdout)[0]
    config = inspected["Config"]
    assert config["User"] == f"{IMAGE_USER}:{IMAGE_USER}"
    assert config["StopSignal"] == "SIGTERM"
    assert config["Entrypoint"] == ["otel-s3-bridge"] and config["Cmd"][:3] == ["serve", "--host", "0.0.0.0"]
    assert inspected["Healthcheck"]["Test"] == ["CMD", "otel-s3-bridge", "health"], "HEALTHCHECK kept (Docker format)"

    bucket = new_bucket(s3)
    proxy = Proxy(moto.url).start("--fail-rate", "1.0", "--kinds", "503")  # S3 refuses until the drain
    volume = tmp_path / "volume"
    volume.mkdir()
    os.chown(volume, IMAGE_USER, IMAGE_USER)
    http_port, grpc_port, metrics_port = free_port(), free_port(), free_port()
    name = f"bridge-{uuid.uuid4().hex[:8]}"
    environment = {
        "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1",
        "OTEL_S3_BRIDGE_TOKENS": f"openrouter={TOKENS['openrouter']}", "OTEL_S3_BRIDGE_BUCKET": bucket,
        "OTEL_S3_BRIDGE_ENDPOINT_URL": proxy.url, "OTEL_S3_BRIDGE_HTTP_PORT": str(http_port),
        "OTEL_S3_BRIDGE_GRPC_PORT": str(grpc_port), "OTEL_S3_BRIDGE_METRICS_PORT": str(metrics_port),
        "OTEL_S3_BRIDGE_UPLOAD_RETRY_MAX_SECONDS": "1", "OTEL_S3_BRIDGE_DRAIN_SECONDS": "60",
    }
    podman("run", "-d", "--name", name, "--network", "host", "--read-only", "--cap-drop", "ALL",
           "--security-opt", "no-new-privileges", "-v", f"{volume}:/var/lib/otel-s3-bridge",
           *[arg for key, value in environment.items() for arg in ("-e", f"{key}={value}")], bridge_image)
    stopping = None
    try:
        eventually(lambda: port_open(http_port) or podman("inspect", name, "--format", "{{.State.Running}}")
                   .stdout.strip() != "true", 60)
        sent = deliveries(10)
        headers = {"Authorization": f"Bearer {TOKENS['openrouter']}", "Content-Type": "application/json"}
        for body, _ in sent:
            assert requests.post(f"http://127.0.0.1:{http_port}/v1/traces", data=body, headers=headers,
                                 timeout=30).status_code == 200
        assert podman("healthcheck", "run", name, check=False).returncode == 0
        eventually(lambda: metric(metrics_port, "otel_s3_bridge_spool_entries") == len(sent))
        assert list_keys(s3, bucket) == []

        stopping = podman.popen("stop", "--time", "90", name)  # SIGTERM, then the drain
        eventually(lambda: "draining: uploading 10 spooled entries" in podman("logs", name).stderr, 60)
        proxy.stop()
        proxy.start()  # S3 answers again, during the drain
        assert stopping.wait(120) == 0, stopping.stdout.read()
        state = json.loads(podman("inspect", name).stdout)[0]["State"]
        assert state["ExitCode"] == 0
        logs = podman("logs", name).stderr
        assert "stopped" in logs and "drain deadline reached" not in logs
        assert sorted(list_keys(s3, bucket)) == sorted(key for _, key in sent)
        assert TOKENS["openrouter"] not in logs
        # The spool is on the volume, owned by the image's user; nothing else was written.
        assert (volume / "spool").stat().st_uid == IMAGE_USER
    finally:
        if stopping is not None and stopping.poll() is None:
            stopping.kill()
        podman("rm", "-f", name, check=False)
        proxy.stop()

"""Real parts for the tests: an S3 server (moto in server mode, a subprocess on 127.0.0.1) and the
bridge itself as a subprocess (`python -m otel_s3_bridge serve`) on free loopback ports."""

from __future__ import annotations

import os
import pathlib
import resource
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator

import boto3
import orjson
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

ROOT = pathlib.Path(__file__).resolve().parents[1]
CAPTURES = ROOT / "tests" / "data" / "openrouter-captures"
sys.path.insert(0, str(ROOT))  # bench: the hostile requests and /proc readings tests and benchmarks share
from bench.procfs import memory_mb, process_tree  # noqa: E402

# Credentials for the local S3 server only; the bridge finds them through the standard AWS chain.
os.environ.update({"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                   "AWS_REGION": "us-east-1", "AWS_DEFAULT_REGION": "us-east-1"})
for name in list(os.environ):
    if name.startswith("OTEL_S3_BRIDGE_") or name.startswith("OTEL_EXPORTER_"):
        del os.environ[name]

TOKENS = {"openrouter": "tok-openrouter-5f1b6c0e9a", "sdk": "tok-sdk-77d2a4b3c1"}
# Tokens tests present that are nobody's key: they must not reach a log line either.
PRESENTED_TOKENS = ("not-a-configured-token", "wrong-token-3b9d1e", "rotated-away-token-8c2f")
BRIDGE_LOGS: list[pathlib.Path] = []  # every bridge log the suite wrote, searched for tokens at the end


@pytest.fixture(scope="session", autouse=True)
def no_token_in_any_log():
    """After the whole suite: no test token, configured or merely presented, is in any bridge log."""
    yield
    leaks = [f"{path}: {token}" for path in BRIDGE_LOGS if path.exists()
             for token in (*TOKENS.values(), *PRESENTED_TOKENS) if token in path.read_text(errors="replace")]
    assert not leaks, f"tokens in logs: {leaks}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port} after {timeout}s")


def eventually(condition, timeout: float = 30.0, message=lambda: "condition not met", interval: float = 0.05):
    """Poll `condition` until it is true (the bridge uploads after acknowledging); fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, message()
        time.sleep(interval)


PROXY = pathlib.Path(__file__).with_name("faulty_s3_proxy.py")


class Proxy:
    """The fault-injecting proxy in front of moto; `port` may be reserved before it is started.
    Every one started is stopped after its test (`_stop_proxies`), whatever happened in it."""

    started: list[Proxy] = []

    def __init__(self, upstream: str, port: int | None = None, *, tls: tuple[str, str, str] | None = None) -> None:
        """`tls`: (certificate chain, key, CA file) to speak HTTPS only."""
        self.upstream = upstream
        self.port = port or free_port()
        self.tls = tls
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self, *faults: str) -> Proxy:
        tls = ["--tls-cert", self.tls[0], "--tls-key", self.tls[1]] if self.tls else []
        self.process = subprocess.Popen([sys.executable, str(PROXY), "--port", str(self.port),
                                         "--upstream", self.upstream, *tls, *faults],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        Proxy.started.append(self)
        wait_for_port(self.port, self.process)
        return self

    def counters(self) -> dict:
        return requests.get(f"{self.url}/__faults__", timeout=10, verify=self.tls[2] if self.tls else True).json()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:  # a request it holds back on purpose keeps it from ending
                self.process.kill()
                self.process.wait(10)
        self.process = None



@pytest.fixture(autouse=True)
def _stop_proxies() -> Iterator[None]:
    """A test whose bridge failed to start never reached the `proxy.stop()` in its `finally`: its
    proxy would outlive the run."""
    yield
    while Proxy.started:
        Proxy.started.pop().stop()


class MotoServer:
    """moto's S3-protocol server as a subprocess on 127.0.0.1."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(self.port, self.process)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


@pytest.fixture(scope="session")
def moto() -> Iterator[MotoServer]:
    server = MotoServer()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def s3(moto: MotoServer):
    return boto3.client("s3", endpoint_url=moto.url, region_name="us-east-1")


def new_bucket(s3) -> str:
    name = f"traces-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    return name


def list_keys(s3, bucket: str, prefix: str = "") -> list[str]:
    keys: list[str] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys.extend(item["Key"] for item in page.get("Contents", ()))
    return keys


def stored_keys(s3, bucket: str) -> list[str]:
    """The bucket's keys but the bridge's own check probe: a bridge that started with the store
    down checks it again in the background, and its probe may be there at the moment of listing."""
    return [key for key in list_keys(s3, bucket) if "/.otel-s3-bridge-check-" not in key]


def read_json(s3, bucket: str, key: str, wait_seconds: float = 30.0) -> dict:
    """The object's record; waits for it, since with the spool an upload follows the acknowledgement."""
    deadline = time.monotonic() + wait_seconds
    while True:
        try:
            return orjson.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
        except s3.exceptions.NoSuchKey:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _descriptor_limit(count: int):
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (count, count))
    return apply


class BridgeProcess:
    """`python -m otel_s3_bridge serve ARGS` on free ports, its log kept in a file."""

    def __init__(self, args: list[str], log_path: pathlib.Path, *, cwd: pathlib.Path | None = None,
                 env: dict[str, str] | None = None, grpc: bool = True, descriptors: int | None = None) -> None:
        self.http_port = free_port()
        self.grpc_port = free_port() if grpc else 0
        self.metrics_port = free_port()
        self.url = f"http://127.0.0.1:{self.http_port}/v1/traces"
        self.grpc_target = f"127.0.0.1:{self.grpc_port}"
        self.log_path = log_path
        BRIDGE_LOGS.append(log_path)
        command = [sys.executable, "-m", "otel_s3_bridge", "serve", "--http-port", str(self.http_port),
                   "--grpc-port", str(self.grpc_port), "--metrics-port", str(self.metrics_port), *args]
        with open(log_path, "wb") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=cwd,
                                            env={**os.environ, **(env or {})},
                                            preexec_fn=_descriptor_limit(descriptors) if descriptors else None)
        wait_for_port(self.http_port, self.process)
        deadline = time.monotonic() + 30  # the port opens just before the ready line is logged
        while "ready:" not in self.log and self.process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)

    @property
    def log(self) -> str:
        return self.log_path.read_text()

    def metrics(self) -> dict[tuple[str, tuple], float]:
        """One scrape of /metrics: {(sample name, sorted labels): value}, parsed by prometheus-client."""
        text = requests.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10).text
        return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
                for family in text_string_to_metric_families(text) for sample in family.samples}

    def readiness(self) -> dict:
        return requests.get(f"http://127.0.0.1:{self.http_port}/readyz", timeout=10).json()

    def tree(self) -> list[int]:
        """The bridge's process and all its descendants (decode processes, ...)."""
        return process_tree(self.process.pid)

    def memory_mb(self, field: str = "VmHWM") -> dict[int, float]:
        """`VmHWM` (peak) or `VmRSS` (now) of every process of the tree, in MB."""
        return memory_mb(self.tree(), field)

    def wait_until_uploaded(self, wait_seconds: float = 60.0) -> None:
        """Until the spool holds nothing: every acknowledged record is in the sink (or quarantined)."""
        eventually(lambda: not self.readiness().get("spool_pending", 0), wait_seconds,
                   lambda: f"spool not drained after {wait_seconds}s: {self.readiness()}")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(60)


class S3Bridge(BridgeProcess):
    def __init__(self, moto, bucket: str, log_path: pathlib.Path, extra: list[str] = (), **options) -> None:
        self.bucket = bucket
        token_args = [arg for name, token in TOKENS.items() for arg in ("--token", f"{name}={token}")]
        spool_args = [] if "--spool-dir" in extra else ["--spool-dir", str(log_path.parent / "spool")]
        super().__init__(["--bucket", bucket, "--endpoint-url", moto.url, *token_args, *spool_args, *extra],
                         log_path, **options)

    def headers(self, key: str = "openrouter", content_type: str = "application/json") -> dict[str, str]:
        return {"Authorization": f"Bearer {TOKENS[key]}", "Content-Type": content_type}

    def post(self, body: bytes, key: str = "openrouter", **kwargs) -> requests.Response:
        headers = {**self.headers(key), **kwargs.pop("headers", {})}
        return requests.post(self.url, data=body, headers=headers, **{"timeout": 30, **kwargs})


@pytest.fixture(scope="module")
def bridge(moto: MotoServer, s3, tmp_path_factory) -> Iterator[S3Bridge]:
    """The bridge with two named keys, writing to a fresh bucket on the S3 server, 2 MiB body limit,
    acknowledging after upload so that what a test reads back is there at once."""
    process = S3Bridge(moto, new_bucket(s3), tmp_path_factory.mktemp("bridge") / "bridge.log",
                       ["--max-request-bytes", str(2 * 1024 * 1024), "--grpc-max-message-bytes", str(2 * 1024 * 1024),
                        "--ack", "upload"])
    yield process
    assert process.stop() == 0
    for token in TOKENS.values():
        assert token not in process.log, "a token appeared in the bridge's log"


def capture_lines(name: str) -> list[bytes]:
    return [line for line in (CAPTURES / name).read_bytes().splitlines() if line.strip()]


def key_for(generation_id: str, start_unix_nano: int, prefix: str = "openrouter-traces") -> str:
    date = time.strftime("%Y-%m-%d", time.gmtime(start_unix_nano // 1_000_000_000))
    return f"{prefix}/{date}/{generation_id}-{start_unix_nano // 1_000_000_000}.json"


def root_span(delivery: dict) -> dict:
    return next(span for rs in delivery["resourceSpans"] for ss in rs["scopeSpans"] for span in ss["spans"]
                if not span.get("parentSpanId"))


def attribute(span: dict, key: str):
    for item in span["attributes"]:
        if item["key"] == key:
            return next(iter(item["value"].values()))
    return None

"""Every benchmark of bench/RESULTS.md, end to end: `bash bench/run` (or `python -m bench.suite`).

Each figure is the median of RUNS runs. The bridge runs as its own process(es); its CPU time is
that of every process it starts (a cpuacct cgroup of its own where the host allows, else /proc),
peak RSS from VmHWM; load comes from wrk (HTTP) or
a multi-process grpc.aio client, acknowledgement latency from the load generator.
"""

from __future__ import annotations

import argparse
import datetime
import gzip
import importlib.util
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

from bench import payloads
from bench.loadgen import run_grpc, run_wrk, write_lua
from bench.procfs import memory_mb, process_tree, stat_fields

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "bench-token-0123456789"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
START = time.time_ns()


# The batch layout's defaults but the age: files close on size at this rate, and the run waits out
# the age of the last one.
BATCH_OPTIONS = ("--layout", "batch", "--batch-max-age-seconds", "5")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_port(port: int, process: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args} exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


CPUACCT = Path("/sys/fs/cgroup/cpuacct")  # cgroup v1's CPU accounting, where the host mounts it


def own_cpuacct_group(pid: int) -> Path | None:
    """A cpuacct cgroup of the process's own, when this host lets the bench make one (else None):
    the CPU of the process and of all it starts, in nanoseconds, exited threads and children
    included. /proc counts in 10 ms ticks (±5 % of a 0.2 s figure) and loses children that exit."""
    _remove_groups_left_behind()
    group = CPUACCT / f"otel-s3-bench-{pid}"
    try:
        group.mkdir()
    except OSError:
        return None
    try:
        (group / "cgroup.procs").write_text(str(pid))  # (the whole process; what it starts later joins)
        return group
    except OSError:
        group.rmdir()
        return None


def _remove_groups_left_behind() -> None:
    """The groups of benches killed before they stopped their processes: a group is named after
    the process it was made for, and one whose process is gone measures nothing any more."""
    for group in CPUACCT.glob("otel-s3-bench-*"):
        if not Path(f"/proc/{group.name.rpartition('-')[2]}").exists():
            try:
                group.rmdir()  # (refused while a process of it is alive: it is then left as it is)
            except OSError:
                pass


class Process:
    """A subprocess measured as a whole tree: CPU seconds and peak RSS of it and its children."""

    def __init__(self, command: list[str], port: int, log: Path, env: dict | None = None,
                 start_seconds: float = 60) -> None:
        self.log = log
        with open(log, "wb") as handle:
            self.popen = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, cwd=ROOT,
                                          env={**os.environ, **(env or {})})
        self.cpu_group = own_cpuacct_group(self.popen.pid)  # before it starts a thread or a child
        wait_port(port, self.popen, start_seconds)

    def tree(self) -> list[int]:
        return process_tree(self.popen.pid)

    def cpu_seconds(self) -> float:
        if self.cpu_group is not None:
            return int((self.cpu_group / "cpuacct.usage").read_text()) / 1e9
        total = 0
        for pid in self.tree():
            try:
                fields = stat_fields(f"/proc/{pid}/stat")
            except OSError:
                continue
            total += int(fields[11]) + int(fields[12])  # utime + stime
        return total / CLOCK_TICKS

    def peak_rss_bytes(self) -> int:
        return int(sum(memory_mb(self.tree(), "VmHWM").values()) * 1024 * 1024)

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(60)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(10)
        if self.cpu_group is not None:
            deadline = time.monotonic() + 10
            while True:  # empty once its last process is gone (a child may outlive the parent briefly)
                try:
                    self.cpu_group.rmdir()
                    break
                except OSError:
                    if time.monotonic() > deadline:  # a process left behind: the empty group stays too
                        break
                    time.sleep(0.05)
            self.cpu_group = None


class Stack:
    """Mock S3 (or moto) + the bridge, in a scratch directory."""

    def __init__(self, scratch: Path, *, park_uploads: bool = False, workers: int = 1, moto: bool = False,
                 extra: tuple[str, ...] = (), pure: bool = False, wrapper: tuple[str, ...] = ()) -> None:
        """`wrapper`: a command the bridge runs under (valgrind, for bench.instructions)."""
        self.dir = Path(tempfile.mkdtemp(dir=scratch))
        self._probe: requests.Session | None = None
        self.s3_port = free_port()
        if moto:
            command = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.s3_port)]
        else:
            command = [sys.executable, "-m", "bench.mock_s3", "--port", str(self.s3_port)]
            command += ["--hold-puts-after", "1"] if park_uploads else []
        self.s3 = Process(command, self.s3_port, self.dir / "s3.log")
        if moto:
            import boto3
            boto3.client("s3", endpoint_url=f"http://127.0.0.1:{self.s3_port}", region_name="us-east-1",
                         aws_access_key_id="bench", aws_secret_access_key="bench").create_bucket(Bucket="bench")
        self.http_port, self.grpc_port, self.metrics_port = free_port(), free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.http_port}/v1/traces"
        self.bridge = Process(
            [*wrapper, sys.executable, "-m", "otel_s3_bridge", "serve", "--http-port", str(self.http_port),
             "--grpc-port", str(self.grpc_port), "--metrics-port", str(self.metrics_port),
             "--bucket", "bench", "--endpoint-url",
             f"http://127.0.0.1:{self.s3_port}", "--region", "us-east-1", "--token", f"bench={TOKEN}",
             "--spool-dir", str(self.dir / "spool"), "--spool-max-bytes", str(16 * 1024 ** 3),
             "--drain-seconds", "0", "--log-level", "warning", "--workers", str(workers),
             # parked uploads: the ingest path alone, to the spool (a put first would wait out --ack-wait-seconds)
             *(("--ack", "spool") if park_uploads else ()), *extra],
            self.http_port, self.dir / "bridge.log",
            env={"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
                 **({"OTEL_S3_BRIDGE_PURE": "1"} if pure else {})},  # the decode core's pure-Python build
            start_seconds=600 if wrapper else 60)
        deadline = time.monotonic() + 60
        while workers > 1 and len(self.bridge.tree()) < workers + 1 and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.5 if workers == 1 else 2.0)

    def pending(self) -> int:
        # One kept-alive connection: a new one per probe cost the bridge more CPU (~0.65 ms), which
        # the CPU figures count.
        if self._probe is None:
            self._probe = requests.Session()
        return self._probe.get(f"http://127.0.0.1:{self.http_port}/readyz", timeout=10).json().get("spool_pending", 0)

    def wait_drained(self, timeout: float = 600, poll_seconds: float = 0.05) -> None:
        """Until the spool is empty. Each probe costs the bridge ~0.2-0.5 ms of CPU (more the longer
        it idled before): a CPU figure that waits out a batch age polls slowly."""
        deadline = time.monotonic() + timeout
        quiet = 0
        while quiet < 3:  # with several workers, each answers for itself: ask until three say 0
            quiet = quiet + 1 if self.pending() == 0 else 0
            if time.monotonic() > deadline:
                raise RuntimeError("the spool did not drain")
            time.sleep(poll_seconds)

    def s3_requests(self) -> int:
        return int(requests.get(f"http://127.0.0.1:{self.s3_port}/__requests__", timeout=10).text)

    def wait_stored(self, requests_before: int, timeout: float = 600) -> None:
        """Until the S3 endpoint has had more than `requests_before` requests (a batch file's put:
        the mock counts a request once its body is in), then until the spool is empty. The mock is
        asked, not the bridge, while a batch age runs out: each probe of an idle bridge costs it
        ~0.4 ms of CPU (20 probes 0.25 s apart: 11.5-12.8 ms against 3.6-4.3 idle, /proc schedstat),
        ~0.9 µs a span of bench.cpu_floor's load when it polled through the 5 s age; a poll of the
        mock costs the bridge nothing (2.9-3.2 ms for 20). Nothing waiting in the spool at first
        (all put before the answers, or all refused): as `wait_drained`."""
        deadline = time.monotonic() + timeout
        if self.pending() == 0:
            self.wait_drained(timeout)
            return
        while self.s3_requests() <= requests_before:
            if time.monotonic() > deadline:
                raise RuntimeError("nothing was stored")
            time.sleep(0.05)
        self.wait_drained(max(deadline - time.monotonic(), 1.0))

    def close(self) -> None:
        if self._probe is not None:
            self._probe.close()
        self.bridge.stop()
        self.s3.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


# --- workloads ----------------------------------------------------------------------------------------

def http_script(scratch: Path, name: str, *, kind: str, spans: int = 1, encoding: str = "json",
                compress: bool = False, pace_ms: float | None = None) -> Path:
    document = (payloads.openrouter_template(START) if kind == "openrouter"
                else payloads.batch_template(spans, START, content=kind == "batch-content"))
    protobuf = encoding == "protobuf"
    body = payloads.to_protobuf(document) if protobuf else payloads.to_json(document)
    markers = payloads.MARKERS_PROTOBUF if protobuf else payloads.MARKERS_JSON
    headers = {"Content-Type": "application/x-protobuf" if protobuf else "application/json",
               "Authorization": f"Bearer {TOKEN}"}
    if compress:
        headers["Content-Encoding"] = "gzip"
        bodies = [gzip.compress(payloads.fill(body, markers, 9, n), 6) for n in range(3000)]
        return write_lua(scratch, name, template=None, markers=[], headers=headers, bodies=bodies)
    return write_lua(scratch, name, template=body, markers=payloads.marker_positions(body, markers),
                     headers=headers, pace_ms=pace_ms)


def measure_ingest(scratch: Path, label: str, *, transport: str, kind: str, spans: int, compress: bool = False,
                   seconds: float, runs: int) -> dict:
    """Receive, authenticate, decode, spool (fsynced), acknowledge; uploads parked by the mock S3."""
    outcomes = []
    for run in range(runs):
        stack = Stack(scratch, park_uploads=True)
        try:
            if transport == "grpc":
                document = (payloads.openrouter_template(START) if kind == "openrouter"
                            else payloads.batch_template(spans, START, content=kind == "batch-content"))
                template = payloads.to_protobuf(document)
                target = f"127.0.0.1:{stack.grpc_port}"
                run_grpc(target, TOKEN, template, payloads.MARKERS_PROTOBUF, seconds=1)  # warm-up
                cpu = stack.bridge.cpu_seconds()
                result = run_grpc(target, TOKEN, template, payloads.MARKERS_PROTOBUF, seconds=seconds)
            else:
                script = http_script(scratch, f"{label}-{run}".replace(" ", "_").replace("/", "_"), kind=kind,
                                     spans=spans, encoding=transport, compress=compress)
                run_wrk(stack.url, script, connections=16, seconds=1)  # warm-up
                cpu = stack.bridge.cpu_seconds()
                result = run_wrk(stack.url, script, connections=16, seconds=seconds)
            cpu = stack.bridge.cpu_seconds() - cpu
            accepted = result["ok"] * (3 if kind == "openrouter" else spans)
            calls = result["ok"]
            outcomes.append({"spans_per_second": accepted / (result["duration_us"] / 1e6),
                             "calls_per_second": calls / (result["duration_us"] / 1e6),
                             "cpu_us_per_span": cpu / accepted * 1e6, "cpu_us_per_call": cpu / calls * 1e6,
                             "errors": result["errors_status"], "p99_ms": result["p99_us"] / 1000})
        finally:
            stack.close()
    return _median(outcomes, label=label)


def _median(outcomes: list[dict], **extra) -> dict:
    keys = outcomes[0].keys()
    # Text has no mean of two: with an even number of runs only numbers get a median.
    numeric = [key for key in keys if all(isinstance(o[key], (int, float)) for o in outcomes)]
    return {**extra, "runs": outcomes, **{key: statistics.median(o[key] for o in outcomes) for key in numeric}}


def measure_end_to_end(scratch: Path, *, seconds: float, runs: int, workers: int = 1, moto: bool = False,
                       extra: tuple[str, ...] = ()) -> dict:
    """OpenRouter deliveries over HTTP/JSON into the trace layout: ingest and upload, until drained."""
    outcomes = []
    for run in range(runs):
        stack = Stack(scratch, workers=workers, moto=moto, extra=extra)
        try:
            script = http_script(scratch, f"e2e-{workers}-{run}-{int(moto)}-{len(extra)}", kind="openrouter")
            run_wrk(stack.url, script, connections=8, seconds=1)  # warm-up, then drain it
            stack.wait_drained()
            cpu, started = stack.bridge.cpu_seconds(), time.perf_counter()
            result = run_wrk(stack.url, script, connections=16, seconds=seconds)
            stack.wait_drained()
            wall = time.perf_counter() - started
            cpu = stack.bridge.cpu_seconds() - cpu
            outcomes.append({"deliveries_per_second": result["ok"] / wall,
                             "cpu_ms_per_delivery": cpu / result["ok"] * 1e3,
                             "errors": result["errors_status"], "peak_rss_mb": stack.bridge.peak_rss_bytes() / 2**20})
        finally:
            stack.close()
    return _median(outcomes, workers=workers, s3="moto" if moto else "mock", options=" ".join(extra))


def measure_batch_layout(scratch: Path, *, seconds: float, runs: int) -> dict:
    """100-span protobuf batches of LLM spans (each its own call, content on the span) into the
    batch layout (Parquet), S3 upload included: spans per CPU-second of the bridge's process tree,
    from the first request until every record is in a file, and S3 requests per record."""
    outcomes = []
    for run in range(runs):
        stack = Stack(scratch, extra=BATCH_OPTIONS)
        try:
            script = http_script(scratch, f"batch-{run}", kind="batch-content", spans=100, encoding="protobuf")
            run_wrk(stack.url, script, connections=16, seconds=1)  # warm-up, then drain it
            stack.wait_drained()
            cpu, calls = stack.bridge.cpu_seconds(), stack.s3_requests()
            result = run_wrk(stack.url, script, connections=16, seconds=seconds)
            stack.wait_drained()
            cpu = stack.bridge.cpu_seconds() - cpu
            spans = result["ok"] * 100
            outcomes.append({"spans_per_cpu_second": spans / cpu, "cpu_us_per_span": cpu / spans * 1e6,
                             "spans_acknowledged_per_second": spans / (result["duration_us"] / 1e6),
                             "s3_requests_per_million": (stack.s3_requests() - calls) / spans * 1e6,
                             "errors": result["errors_status"], "p99_ms": result["p99_us"] / 1000,
                             "peak_rss_mb": stack.bridge.peak_rss_bytes() / 2**20})
        finally:
            stack.close()
    return _median(outcomes, options=" ".join(BATCH_OPTIONS))


def measure_report(records: int, layout: str, runs: int) -> dict:
    done = subprocess.run([sys.executable, "-m", "bench.lake_bench", "--records", str(records), "--layout", layout,
                           "--runs", str(runs)], capture_output=True, text=True, check=True, cwd=ROOT)
    return json.loads(done.stdout)


def measure_latency(scratch: Path, rate: float, *, seconds: float, runs: int) -> dict:
    """Acknowledgement latency of OpenRouter deliveries offered at `rate` per second (paced wrk)."""
    outcomes = []
    connections = 8
    for run in range(runs):
        stack = Stack(scratch)
        try:
            pace = 1000.0 * connections / rate
            script = http_script(scratch, f"lat-{int(rate)}-{run}", kind="openrouter", pace_ms=pace)
            run_wrk(stack.url, script, connections=connections, seconds=1)
            stack.wait_drained()
            cpu = stack.bridge.cpu_seconds()
            result = run_wrk(stack.url, script, connections=connections, seconds=seconds)
            stack.wait_drained()
            cpu = stack.bridge.cpu_seconds() - cpu
            outcomes.append({"offered_per_second": rate,
                             "achieved_per_second": result["ok"] / (result["duration_us"] / 1e6),
                             "p50_ms": result["p50_us"] / 1000, "p99_ms": result["p99_us"] / 1000,
                             "cpu_ms_per_delivery": cpu / result["ok"] * 1e3,
                             "peak_rss_mb": stack.bridge.peak_rss_bytes() / 2**20})
        finally:
            stack.close()
    return _median(outcomes)


def measure_bare_http(scratch: Path, *, seconds: float, runs: int) -> dict:
    outcomes = []
    for run in range(runs):
        port = free_port()
        server = Process([sys.executable, "-m", "bench.bare_http", "--port", str(port)], port, scratch / "bare.log")
        try:
            script = http_script(scratch, f"bare-{run}", kind="openrouter")
            url = f"http://127.0.0.1:{port}/v1/traces"
            run_wrk(url, script, connections=16, seconds=1)
            cpu = server.cpu_seconds()
            result = run_wrk(url, script, connections=16, seconds=seconds)
            cpu = server.cpu_seconds() - cpu
            outcomes.append({"requests_per_second": result["ok"] / (result["duration_us"] / 1e6),
                             "cpu_us_per_request": cpu / result["ok"] * 1e6})
        finally:
            server.stop()
    return _median(outcomes)


def measure_bare_put(scratch: Path, *, runs: int, moto: bool = False, path: str = "aiobotocore",
                     body_bytes: int = 23_000) -> dict:
    """One process putting objects 16 at a time (`bench/bare_put.py`) by `path`: a bare aiobotocore
    `put_object` loop, the bridge's own write path (`S3Sink.put`), or obstore."""
    outcomes = []
    for _ in range(runs):
        stack_dir = Path(tempfile.mkdtemp(dir=scratch))
        port = free_port()
        command = ([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)] if moto
                   else [sys.executable, "-m", "bench.mock_s3", "--port", str(port)])
        server = Process(command, port, stack_dir / "s3.log")
        try:
            if moto:
                import boto3
                boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
                             aws_access_key_id="bench", aws_secret_access_key="bench").create_bucket(Bucket="bench")
            command = [sys.executable, "-m", "bench.bare_put", "--endpoint-url", f"http://127.0.0.1:{port}",
                       "--puts", "1000" if moto else "3000", "--path", path, "--body-bytes", str(body_bytes)]
            for attempt in range(3):  # obstore's process now and then aborts on its way out (SIGABRT)
                out = subprocess.run(command, capture_output=True, text=True, cwd=ROOT,
                                     env={**os.environ, "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench"})
                if out.stdout.strip():
                    break
                print(f"[bench] {path} PUT loop ended with {out.returncode}: {out.stderr[-300:]}", file=sys.stderr)
            outcomes.append(json.loads(out.stdout))
        finally:
            server.stop()
    return _median(outcomes, s3="moto" if moto else "mock", path=path, body_bytes=body_bytes)


def measure_trace_ratio(scratch: Path, *, seconds: float, runs: int) -> dict:
    """The trace layout's figures side by side, a run of each in turn (bare aiobotocore PUT, bare
    aiohttp echo, the bridge end to end), so that each run's ratio compares the three at the same
    moment of this shared host (measured section after section, the bare PUT alone moved from 0.96
    to 1.48 ms between runs). Returns the three results and each run's ratio."""
    puts, echoes, bridges = [], [], []
    for _ in range(runs):
        puts.append(measure_bare_put(scratch, runs=1)["runs"][0])
        echoes.append(measure_bare_http(scratch, seconds=seconds, runs=1)["runs"][0])
        bridges.append(measure_end_to_end(scratch, seconds=seconds, runs=1)["runs"][0])
    ratios = [bridge["cpu_ms_per_delivery"] * 1000 / (echo["cpu_us_per_request"] + put["cpu_us_per_put"])
              for put, echo, bridge in zip(puts, echoes, bridges)]
    return {"bare_put": _median(puts, s3="mock", path="aiobotocore", body_bytes=23_000),
            "bare_http": _median(echoes), "end_to_end": _median(bridges, workers=1, s3="mock", options=""),
            "trace_ratio": {"runs": ratios, "median": statistics.median(ratios)}}


def measure_put_paths(scratch: Path, *, runs: int) -> list[dict]:
    """The write paths side by side, same endpoint, same run, a small and a large record."""
    paths = ["aiobotocore", "bridge"] + (["obstore"] if importlib.util.find_spec("obstore") else [])
    return [measure_bare_put(scratch, runs=runs, path=path, body_bytes=size)
            for size in (1_200, 25_000) for path in paths]


def measure_decode(runs: int) -> list[dict]:
    results = [json.loads(subprocess.run([sys.executable, "-m", "bench.decode_bench"], check=True, cwd=ROOT,
                                         capture_output=True, text=True).stdout) for _ in range(runs)]
    return [_median([run[index] for run in results], payload=results[0][index]["payload"])
            for index in range(len(results[0]))]


def measure_metrics(runs: int) -> list[dict]:
    """bench.metrics_bench, medians of `runs` runs: what the Prometheus series cost per export."""
    results = [json.loads(subprocess.run([sys.executable, "-m", "bench.metrics_bench"], check=True, cwd=ROOT,
                                         capture_output=True, text=True).stdout) for _ in range(runs)]
    numeric = ("prepare_us", "metrics_us")
    return [_median([{key: run[index][key] for key in numeric} for run in results],
                    **{key: value for key, value in results[0][index].items() if key not in numeric})
            for index in range(len(results[0]))]


def measure_answers(runs: int) -> dict:
    """bench.answers_bench: join halves against spans with content, pricing per call, dedupe."""
    done = subprocess.run([sys.executable, "-m", "bench.answers_bench", "--runs", str(max(runs, 5))], check=True,
                          cwd=ROOT, capture_output=True, text=True)
    return json.loads(done.stdout)


def measure_governance() -> dict:
    """bench.governance_bench: each content policy per KiB of message text, identities, sampling, rates."""
    done = subprocess.run([sys.executable, "-m", "bench.governance_bench"], check=True, cwd=ROOT,
                          capture_output=True, text=True)
    return json.loads(done.stdout)


def machine() -> dict:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    wrk = subprocess.run(["wrk", "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    return {"nproc": os.cpu_count(), "cpu": model, "python": platform.python_version(),
            "kernel": platform.release(), "wrk": wrk.split(" [")[0],
            "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "cpu_clock": "cgroup" if os.access(CPUACCT, os.W_OK) else "proc"}  # see `own_cpuacct_group`


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results.json"))
    parser.add_argument("--only-ratios", action="store_true",
                        help="measure again, in one run, only the figures issue 21's ratios are made of (sections 1 "
                             "(1 and 2 workers) and 4's bare echo and PUT, 11's CPU against the floor and beside "
                             "Phoenix) and put "
                             "them into the existing --out file, each section dated")
    args = parser.parse_args()
    from bench import capacity, cpu_floor, instructions, phoenix  # they run their servers with this module's Stack
    if args.only_ratios:
        return _ratios_again(args, cpu_floor, phoenix, instructions)
    scratch = Path(tempfile.mkdtemp(prefix="otel-s3-bench-"))
    results: dict = {"machine": machine(), "command": " ".join(["python -m bench.suite", *sys.argv[1:]]),
                     "runs": args.runs, "seconds": args.seconds}
    step = lambda name: print(f"[bench] {name}", file=sys.stderr, flush=True)  # noqa: E731
    try:
        step("decode alone")
        results["decode"] = measure_decode(args.runs)
        step("metrics cost")
        results["metrics"] = measure_metrics(args.runs)
        step("the answers: join halves against content, pricing, counting once")
        results["answers"] = measure_answers(args.runs)
        step("the trace layout beside the machine's ceiling: bare aiobotocore PUT, bare aiohttp echo, the "
             "bridge end to end, a run of each in turn")
        results.update(measure_trace_ratio(scratch, seconds=args.seconds, runs=args.runs))
        step("the write paths side by side")
        results["put_paths"] = measure_put_paths(scratch, runs=args.runs)
        results["bare_put_moto"] = measure_bare_put(scratch, runs=1, moto=True)
        step("end to end through other paths")
        # What the bridge did before issue 12 (aiobotocore's put_object on asyncio's loop), and the new
        # write path on asyncio's loop: uvloop's share apart from the write path's.
        results["end_to_end_aiobotocore"] = measure_end_to_end(
            scratch, seconds=args.seconds, runs=args.runs,
            extra=("--s3-put-path", "aiobotocore", "--event-loop", "asyncio"))
        results["end_to_end_asyncio"] = measure_end_to_end(scratch, seconds=args.seconds, runs=args.runs,
                                                           extra=("--event-loop", "asyncio"))
        results["end_to_end_moto"] = measure_end_to_end(scratch, seconds=args.seconds, runs=1, moto=True)
        results["end_to_end_workers2"] = measure_end_to_end(scratch, seconds=args.seconds, runs=args.runs, workers=2)
        sustained = results["end_to_end"]["deliveries_per_second"]
        step("latency at 50% and 90% of the sustained rate")
        results["latency"] = [measure_latency(scratch, sustained * share, seconds=args.seconds, runs=args.runs)
                              for share in (0.5, 0.9)]
        step("ingest ceilings")
        ingest = []
        for label, transport, kind, spans, compress in (
                ("OpenRouter delivery, HTTP/JSON", "json", "openrouter", 3, False),
                ("OpenRouter delivery, gRPC (one per call)", "grpc", "openrouter", 3, False),
                ("1 span, HTTP/JSON", "json", "batch", 1, False),
                ("100 spans, HTTP/JSON", "json", "batch", 100, False),
                ("1 span, HTTP/protobuf", "protobuf", "batch", 1, False),
                ("100 spans, HTTP/protobuf", "protobuf", "batch", 100, False),
                ("100 spans with content on the span, HTTP/protobuf", "protobuf", "batch-content", 100, False),
                ("1 span, HTTP/protobuf+gzip", "protobuf", "batch", 1, True),
                ("100 spans, HTTP/protobuf+gzip", "protobuf", "batch", 100, True),
                ("1 span, gRPC", "grpc", "batch", 1, False),
                ("100 spans, gRPC", "grpc", "batch", 100, False)):
            step(f"ingest: {label}")
            ingest.append(measure_ingest(scratch, label, transport=transport, kind=kind, spans=spans,
                                         compress=compress, seconds=min(args.seconds, 5), runs=args.runs))
        results["ingest"] = ingest
        step("batch layout end to end")
        results["batch_layout"] = measure_batch_layout(scratch, seconds=args.seconds, runs=args.runs)
        step("CPU per span against the same-run floor")
        results["cpu_floor"] = cpu_floor.measure(args.runs)
        step("instructions per span, both builds of the decode core (callgrind)")
        results["instructions"] = instructions.measure()
        step("capacity: admission under concurrency, /healthz during the largest export")
        results["capacity"] = capacity.measure()
        step("beside Arize Phoenix, same load")
        results["phoenix"] = (phoenix.measure() if phoenix.PHOENIX.exists()
                              else {"missing": f"{phoenix.PHOENIX} (bash bench/run installs it)"})
        step("governance: what each key policy costs")
        results["governance"] = measure_governance()
        step("report over 1 million records, batch layout")
        results["report_batch"] = measure_report(1_000_000, "batch", args.runs)
        step("report over 1 million records, trace layout (one run)")
        results["report_trace"] = measure_report(1_000_000, "trace", 1)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        Path(args.out).write_text(json.dumps(results, indent=1))
    from bench.report import write_report
    write_report(results, ROOT / "bench" / "RESULTS.md")
    step("wrote bench/RESULTS.md")


def _ratios_again(args, cpu_floor, phoenix, instructions) -> None:
    results = json.loads(Path(args.out).read_text())
    scratch = Path(tempfile.mkdtemp(prefix="otel-s3-bench-"))
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    try:
        side_by_side = measure_trace_ratio(scratch, seconds=args.seconds, runs=args.runs)
        results.update({name: {**value, "when": when} for name, value in side_by_side.items()})
        # the --workers 2 target compares it with the figure above: the same run's, not another day's
        results["end_to_end_workers2"] = {**measure_end_to_end(scratch, seconds=args.seconds, runs=args.runs,
                                                               workers=2), "when": when}
        results["cpu_floor"] = cpu_floor.measure(args.runs)
        results["instructions"] = instructions.measure()
        if phoenix.PHOENIX.exists():
            results["phoenix"] = phoenix.measure()
        results["ratios_machine"] = machine()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    Path(args.out).write_text(json.dumps(results, indent=1))
    from bench.report import write_report
    write_report(results, ROOT / "bench" / "RESULTS.md")


if __name__ == "__main__":
    main()

"""Load generators, each its own process: wrk (with a generated Lua script that splices distinct ids
into a template body per request) for OTLP/HTTP, and a multi-process grpc.aio client for OTLP/gRPC.
Both report requests, errors and acknowledgement latency percentiles as JSON."""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import subprocess
import time
from pathlib import Path

LUA = r"""
local markers = {MARKERS}
local headers = {HEADERS}
local pace_ms = {PACE}
local template_path = "{TEMPLATE}"
local bodies_path = "{BODIES}"
local out_path = "{OUT}"
local chunks, kinds, cycle = {}, {}, {}
local counter, tid = 0, 0
local threads = {}

function setup(thread)
  table.insert(threads, thread)
  thread:set("thread_number", #threads)
end

local function hex_to_raw(h)
  return (h:gsub("..", function(cc) return string.char(tonumber(cc, 16)) end))
end

function init(args)
  tid = thread_number or 1
  if bodies_path ~= "" then
    local f = io.open(bodies_path, "rb"); local data = f:read("*a"); f:close()
    local pos = 1
    while pos <= #data do
      local nl = data:find("\n", pos, true)
      local size = tonumber(data:sub(pos, nl - 1))
      table.insert(cycle, data:sub(nl + 1, nl + size))
      pos = nl + size + 1
    end
    counter = tid * 7919
    return
  end
  local f = io.open(template_path, "rb"); local body = f:read("*a"); f:close()
  local pos = 1
  for i, m in ipairs(markers) do
    table.insert(chunks, body:sub(pos, m[1]))
    table.insert(kinds, m[3])
    pos = m[1] + m[2] + 1
  end
  table.insert(chunks, body:sub(pos))
end

function request()
  counter = counter + 1
  local body
  if #cycle > 0 then
    body = cycle[(counter % #cycle) + 1]
  else
    local hex16 = string.format("%08x%08x", tid, counter)
    local values = {
      gen20 = string.format("%04d%016d", tid, counter), hex16 = hex16, hex32 = hex16 .. "0123456789abcdef",
      raw8 = hex_to_raw(hex16), raw16 = hex_to_raw(hex16 .. "0123456789abcdef"),
    }
    local parts = {chunks[1]}
    for i, kind in ipairs(kinds) do
      parts[#parts + 1] = values[kind]
      parts[#parts + 1] = chunks[i + 1]
    end
    body = table.concat(parts)
  end
  return wrk.format("POST", nil, headers, body)
end

if pace_ms then
  function delay() return pace_ms end
end

function done(summary, latency, requests)
  local f = io.open(out_path, "w")
  f:write(string.format(
    '{"requests": %d, "duration_us": %d, "errors_status": %d, "errors_connect": %d, "errors_read": %d, ' ..
    '"errors_write": %d, "errors_timeout": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, "mean_us": %.1f}',
    summary.requests, summary.duration, summary.errors.status, summary.errors.connect, summary.errors.read,
    summary.errors.write, summary.errors.timeout, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.mean))
  f:close()
end
"""


def _lua_string(value: str) -> str:
    return json.dumps(value)  # a JSON string literal is a valid Lua string literal here


def write_lua(directory: Path, name: str, *, template: bytes | None, markers: list[tuple[int, int, str]],
              headers: dict[str, str], pace_ms: float | None = None, bodies: list[bytes] | None = None) -> Path:
    template_path, bodies_path = directory / f"{name}.template", directory / f"{name}.bodies"
    if template is not None:
        template_path.write_bytes(template)
    if bodies is not None:
        bodies_path.write_bytes(b"".join(b"%d\n" % len(body) + body for body in bodies))
    script = (LUA.replace("{MARKERS}", "{" + ", ".join(f'{{{o}, {n}, "{k}"}}' for o, n, k in markers) + "}")
              .replace("{HEADERS}", "{" + ", ".join(f"[{_lua_string(k)}] = {_lua_string(v)}"
                                                    for k, v in headers.items()) + "}")
              .replace("{PACE}", "nil" if pace_ms is None else f"{pace_ms:.3f}")
              .replace("{TEMPLATE}", str(template_path) if template is not None else "")
              .replace("{BODIES}", str(bodies_path) if bodies is not None else "")
              .replace("{OUT}", str(directory / f"{name}.result.json")))
    path = directory / f"{name}.lua"
    path.write_text(script)
    return path


def run_wrk(url: str, script: Path, *, connections: int, seconds: float, threads: int = 1) -> dict:
    result_path = script.with_suffix(".result.json")
    result_path.unlink(missing_ok=True)
    duration = f"{max(1, round(seconds))}s"  # wrk takes whole seconds only
    subprocess.run(["wrk", "-t", str(threads), "-c", str(connections), "-d", duration, "--timeout", "30s",
                    "-s", str(script), url], check=True, capture_output=True, timeout=seconds + 120)
    result = json.loads(result_path.read_text())
    result["ok"] = result["requests"] - result["errors_status"]
    return result


# --- OTLP/gRPC --------------------------------------------------------------------------------------

EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


def _grpc_worker(target: str, token: str, template: bytes, markers: dict, seconds: float, concurrency: int,
                 process: int, out: multiprocessing.Queue) -> None:
    import grpc

    from bench.payloads import fill

    async def run() -> dict:
        latencies, errors = [], 0
        counter = iter(range(10**9))
        deadline = time.perf_counter() + seconds
        async with grpc.aio.insecure_channel(target) as channel:
            export = channel.unary_unary(EXPORT, request_serializer=None, response_deserializer=None)
            metadata = (("authorization", f"Bearer {token}"),)

            async def loop() -> None:
                nonlocal errors
                while time.perf_counter() < deadline:
                    body = fill(template, markers, 100 + process, next(counter))
                    start = time.perf_counter()
                    try:
                        await export(body, metadata=metadata, timeout=30)
                        latencies.append(time.perf_counter() - start)
                    except grpc.RpcError:
                        errors += 1

            await asyncio.gather(*(loop() for _ in range(concurrency)))
        return {"ok": len(latencies), "errors": errors, "latencies": latencies}

    out.put(asyncio.run(run()))


def run_grpc(target: str, token: str, template: bytes, markers: dict, *, seconds: float, processes: int = 2,
             concurrency: int = 8) -> dict:
    queue: multiprocessing.Queue = multiprocessing.Queue()
    workers = [multiprocessing.Process(target=_grpc_worker, args=(target, token, template, markers, seconds,
                                                                  concurrency, n, queue))
               for n in range(processes)]
    for worker in workers:
        worker.start()
    results = [queue.get(timeout=seconds + 120) for _ in workers]
    for worker in workers:
        worker.join(30)
    latencies = sorted(latency for result in results for latency in result["latencies"])

    def percentile(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p / 100 * len(latencies)))] * 1e6 if latencies else 0.0

    return {"ok": sum(r["ok"] for r in results), "errors_status": sum(r["errors"] for r in results),
            "duration_us": seconds * 1e6, "p50_us": percentile(50), "p99_us": percentile(99)}

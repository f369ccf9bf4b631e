"""Renders bench/results.json (written by bench/suite.py) as bench/RESULTS.md, with the targets of
the performance issue checked against the figures, and bench/analysis.md (hand-written profile
notes) appended."""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _f(value: float, digits: int = 1) -> str:
    return f"{value:,.{digits}f}"


def _runs(entry: dict, key: str, digits: int = 1) -> str:
    return " / ".join(_f(run[key], digits) for run in entry["runs"])


def _ingest(results: dict, label: str) -> dict:
    return next(entry for entry in results["ingest"] if entry["label"] == label)


def write_report(results: dict, path: Path) -> None:
    m = results["machine"]
    e2e, e2e_moto, e2e_w2 = results["end_to_end"], results["end_to_end_moto"], results["end_to_end_workers2"]
    half, ninety = results["latency"]
    put, put_moto, bare_http = results["bare_put"], results["bare_put_moto"], results["bare_http"]
    openrouter_json = _ingest(results, "OpenRouter delivery, HTTP/JSON")
    openrouter_grpc = _ingest(results, "OpenRouter delivery, gRPC (one per call)")
    pb100, grpc100 = _ingest(results, "100 spans, HTTP/protobuf"), _ingest(results, "100 spans, gRPC")
    decode_or, decode_batch = results["decode"][0], results["decode"][1]
    upload_cpu_ms = e2e["cpu_ms_per_delivery"] - openrouter_json["cpu_us_per_call"] / 1000

    def verdict(ok: bool) -> str:
        return "met" if ok else "**missed**"

    lines = [
        "# Benchmark results",
        "",
        f"Produced by `{results['command']}` (what `bash bench/run` runs once it has installed wrk and the "
        f"dependencies) on {m['date']}: {m['nproc']} CPUs ({m['cpu']}), Python {m['python']}, "
        f"Linux {m['kernel']}, {m['wrk']}. Load generators run on the same machine as the bridge. Every figure is "
        f"the median of {results['runs']} runs (each run's value follows in the tables; raw data in "
        "`bench/results.json`). Runs last "
        f"{_f(results['seconds'], 0)} s (ingest runs 5 s), after a 1 s warm-up. Bridge CPU is the user+system time "
        f"of the bridge's whole process tree {_cpu_clock(m)} over the measured window; peak RSS is "
        "`VmHWM` summed over that tree.",
        "",
        *_ratios_again_note(results),
        "## Targets",
        "",
        "| target | figure | |",
        "|---|---|---|",
        f"| ingest ≤ 40 µs bridge CPU per span, 100-span protobuf batches | HTTP/protobuf {_f(pb100['cpu_us_per_span'])} µs, "
        f"gRPC {_f(grpc100['cpu_us_per_span'])} µs | {verdict(max(pb100['cpu_us_per_span'], grpc100['cpu_us_per_span']) <= 40)} |",
        f"| ingest ≤ 0.4 ms per OpenRouter delivery over HTTP/JSON | {_f(openrouter_json['cpu_us_per_call'] / 1000, 3)} ms "
        f"| {verdict(openrouter_json['cpu_us_per_call'] <= 400)} |",
        f"| ingest ≤ 0.6 ms per single-delivery gRPC call | {_f(openrouter_grpc['cpu_us_per_call'] / 1000, 3)} ms "
        f"| {verdict(openrouter_grpc['cpu_us_per_call'] <= 600)} |",
        f"| end to end ≤ 2.0 ms bridge CPU per delivery, S3 PUT included | {_f(e2e['cpu_ms_per_delivery'], 3)} ms "
        f"| {verdict(e2e['cpu_ms_per_delivery'] <= 2.0)} |",
        f"| ack latency p99 ≤ 50 ms at 50 % of the sustained rate | {_f(half['p99_ms'])} ms "
        f"| {verdict(half['p99_ms'] <= 50)} |",
        f"| peak RSS ≤ 200 MB under that load | {_f(half['peak_rss_mb'])} MB | {verdict(half['peak_rss_mb'] <= 200)} |",
        f"| JSON decode ≥ 15× the `json_format` baseline | OpenRouter delivery: parsing {_f(decode_or['parse_ratio'])}×, "
        f"to records {_f(decode_or['records_ratio'])}×; 100-span GenAI batch: parsing "
        f"{_f(decode_batch['parse_ratio'])}×, to records {_f(decode_batch['records_ratio'])}× "
        f"| {verdict(decode_or['parse_ratio'] >= 15)} for OpenRouter deliveries, "
        f"{verdict(decode_batch['parse_ratio'] >= 15)} for small GenAI spans |",
        *_batch_targets(results, verdict),
        *_put_targets(results, verdict),
        *_answers_targets(results, verdict),
        *_capacity_targets(results, verdict),
        f"| `--workers 2`: CPU per delivery does not grow (within 10 %, the run-to-run spread here) "
        f"| 1 worker {_f(e2e['cpu_ms_per_delivery'], 3)} ms, 2 workers {_f(e2e_w2['cpu_ms_per_delivery'], 3)} ms "
        f"| {verdict(e2e_w2['cpu_ms_per_delivery'] <= e2e['cpu_ms_per_delivery'] * 1.1)} |",
        "",
        "## 1. OpenRouter deliveries, end to end",
        "",
        "OTLP/JSON posts shaped like the reference captures (an `LLM Generation` root with its attempt and "
        "`generation` children, ~10 KB of prompt and ~10 KB of completion, 24.5 KB per body), each with a distinct "
        "generation id, into the `trace` layout on the mock S3 endpoint (section 5). wrk, 16 connections, "
        "closed loop, default settings (`--ack auto`: each delivery is put to the bucket before its answer, "
        "the spool used only when the bucket is slow or failing); the run ends when everything is stored (the "
        "spool drained, had it been used), so the rate is what the bridge sustains end to end.",
        "",
        "| | deliveries/s | bridge CPU ms/delivery | peak RSS MB |",
        "|---|---|---|---|",
        f"| 1 process | {_f(e2e['deliveries_per_second'], 0)} ({_runs(e2e, 'deliveries_per_second', 0)}) "
        f"| {_f(e2e['cpu_ms_per_delivery'], 3)} ({_runs(e2e, 'cpu_ms_per_delivery', 3)}) "
        f"| {_f(e2e['peak_rss_mb'])} |",
        f"| `--workers 2` | {_f(e2e_w2['deliveries_per_second'], 0)} ({_runs(e2e_w2, 'deliveries_per_second', 0)}) "
        f"| {_f(e2e_w2['cpu_ms_per_delivery'], 3)} ({_runs(e2e_w2, 'cpu_ms_per_delivery', 3)}) "
        f"| {_f(e2e_w2['peak_rss_mb'])} |",
        "",
        "Acknowledgement latency, wrk with 8 connections paced to the offered rate:",
        "",
        "| offered | achieved/s | ack p50 ms | ack p99 ms | bridge CPU ms/delivery | peak RSS MB |",
        "|---|---|---|---|---|---|",
    ]
    for share, entry in (("50 %", half), ("90 %", ninety)):
        lines.append(f"| {share} ({_f(entry['offered_per_second'], 0)}/s) | {_f(entry['achieved_per_second'], 0)} "
                     f"| {_f(entry['p50_ms'], 2)} ({_runs(entry, 'p50_ms', 2)}) "
                     f"| {_f(entry['p99_ms'], 2)} ({_runs(entry, 'p99_ms', 2)}) "
                     f"| {_f(entry['cpu_ms_per_delivery'], 3)} | {_f(entry['peak_rss_mb'])} |")
    lines += [
        "",
        "## 2. Ingest ceiling per transport",
        "",
        "Receive, authenticate, decode, append to the spool with its fsync, acknowledge. Uploads are parked (the "
        "mock S3 holds every PUT after the start-up check open, so uploader workers cost nothing): this is the "
        "ingest path alone. GenAI chat spans (11 attributes each, every span its own trace, so every span becomes a "
        "record and a spool entry) without prompt and completion, as OpenTelemetry's instrumentation sends them by "
        "default (the content goes as log records): each record also leaves a half in the join store, one batch "
        "file and one link per span per export; the *with content on the span* row is the same spans with two "
        "message attributes more and no join half. The OpenRouter rows post the deliveries of section 1 (3 spans, 1 record). "
        "HTTP: wrk, 16 connections; gRPC: 2 processes × 8 concurrent grpc.aio calls. The gzip rows cycle through "
        "3,000 distinct pre-compressed bodies; the others splice distinct ids into every request.",
        "",
        "| payload and transport | spans/s | calls/s | bridge CPU µs/span | bridge CPU µs/call | ack p99 ms |",
        "|---|---|---|---|---|---|",
    ]
    for entry in results["ingest"]:
        lines.append(f"| {entry['label']} | {_f(entry['spans_per_second'], 0)} | {_f(entry['calls_per_second'], 0)} "
                     f"| {_f(entry['cpu_us_per_span'])} ({_runs(entry, 'cpu_us_per_span')}) "
                     f"| {_f(entry['cpu_us_per_call'], 0)} | {_f(entry['p99_ms'])} |")
    lines += [
        "",
        "## 3. Decode alone (in-process)",
        "",
        "`python -m bench.decode_bench`: spans per second of one core. *Parse* is bytes → the normalised spans "
        "(`otlp.parse_json` with orjson, `otlp.parse_protobuf`); *to records* adds `decode`. The naive baseline "
        "feeds the same request (ids converted to base64 first, as `json_format` requires) through protobuf's "
        "`json_format.Parse`.",
        "",
        "| payload | JSON parse | `json_format` parse | ratio | protobuf parse | JSON → records | `json_format` → records | ratio | protobuf → records |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for entry in results["decode"]:
        lines.append(f"| {entry['payload']} | {_f(entry['json_parse'], 0)} | {_f(entry['json_format_parse'], 0)} "
                     f"| {_f(entry['parse_ratio'])}× | {_f(entry['protobuf_parse'], 0)} | {_f(entry['json_to_records'], 0)} "
                     f"| {_f(entry['json_format_to_records'], 0)} | {_f(entry['records_ratio'])}× "
                     f"| {_f(entry['protobuf_to_records'], 0)} |")
    lines += [
        "",
        "## 4. The ceiling of the machine",
        "",
        "The same wrk load (OpenRouter deliveries, 16 connections) against a bare aiohttp handler that reads the "
        "body and answers `{}` (`bench/bare_http.py`), and a bare aiobotocore `put_object` loop, 16 concurrent "
        "(`bench/bare_put.py`), with bodies of the size of one record.",
        "",
        "| | bare | bridge | bridge as a fraction of bare |",
        "|---|---|---|---|",
        f"| OTLP/HTTP requests/s (ingest) | {_f(bare_http['requests_per_second'], 0)} "
        f"| {_f(openrouter_json['calls_per_second'], 0)} "
        f"| {_f(openrouter_json['calls_per_second'] / bare_http['requests_per_second'] * 100, 0)} % |",
        f"| CPU per request, µs | {_f(bare_http['cpu_us_per_request'], 0)} | {_f(openrouter_json['cpu_us_per_call'], 0)} "
        f"| bare is {_f(bare_http['cpu_us_per_request'] / openrouter_json['cpu_us_per_call'] * 100, 0)} % of the bridge's |",
        f"| PUT CPU µs (mock S3) | {_f(put['cpu_us_per_put'], 0)} ({_runs(put, 'cpu_us_per_put', 0)}) "
        f"| ~{_f(upload_cpu_ms * 1000, 0)} (end-to-end minus ingest, per delivery) "
        f"| bare is {_f(put['cpu_us_per_put'] / (upload_cpu_ms * 1000) * 100, 0)} % of the bridge's upload |",
        f"| PUTs/s, one process (mock S3) | {_f(put['puts_per_second'], 0)} | {_f(e2e['deliveries_per_second'], 0)} "
        f"deliveries/s end to end | {_f(e2e['deliveries_per_second'] / put['puts_per_second'] * 100, 0)} % |",
        "",
        "## 5. S3 endpoints",
        "",
        "`bench/mock_s3.py` is a raw asyncio S3 endpoint that answers every request at once and stores nothing "
        "(the Collector testbed's mock backend), so the bridge is what is measured. moto in server mode, "
        "for reference (one run each):",
        "",
        "| S3 endpoint | bare PUT CPU µs | bare PUTs/s | bridge deliveries/s end to end | bridge CPU ms/delivery |",
        "|---|---|---|---|---|",
        f"| mock | {_f(put['cpu_us_per_put'], 0)} | {_f(put['puts_per_second'], 0)} | {_f(e2e['deliveries_per_second'], 0)} "
        f"| {_f(e2e['cpu_ms_per_delivery'], 3)} |",
        f"| moto | {_f(put_moto['cpu_us_per_put'], 0)} | {_f(put_moto['puts_per_second'], 0)} "
        f"| {_f(e2e_moto['deliveries_per_second'], 0)} | {_f(e2e_moto['cpu_ms_per_delivery'], 3)} |",
        "",
    ]
    hardening = HERE / "hardening.json"
    if hardening.exists():
        lines += _hardening_section(json.loads(hardening.read_text()))
    if "metrics" in results:
        lines += _metrics_section(results["metrics"])
    if "batch_layout" in results:
        lines += _batch_section(results)
    if "put_paths" in results:
        lines += _put_section(results)
    if "answers" in results:
        lines += _answers_section(results)
    if "cpu_floor" in results:
        lines += _capacity_section(results)
    if "governance" in results:
        lines += _governance_section(results["governance"])
    analysis = HERE / "analysis.md"
    if analysis.exists():
        lines += [analysis.read_text().rstrip(), ""]
    path.write_text("\n".join(lines))


def _batch_targets(results: dict, verdict) -> list[str]:
    if "batch_layout" not in results:
        return []
    batch, lake_batch, lake_trace = results["batch_layout"], results["report_batch"], results["report_trace"]
    return [
        f"| batch layout end to end ≥ 25,000 spans/s per core, 100-span protobuf batches, S3 upload included "
        f"| {_f(batch['spans_per_cpu_second'], 0)} spans per CPU-second ({_f(batch['cpu_us_per_span'])} µs/span) "
        f"| {verdict(batch['spans_per_cpu_second'] >= 25_000)} |",
        f"| batch layout ≤ 100 S3 requests per million records | {_f(batch['s3_requests_per_million'], 0)} "
        f"| {verdict(batch['s3_requests_per_million'] <= 100)} |",
        f"| `report --by model,day` over 1 million records ≤ 5 s, batch layout "
        f"| {_f(lake_batch['report_seconds_median'], 2)} s (trace layout: {_f(lake_trace['report_seconds_median'], 0)} s) "
        f"| {verdict(lake_batch['report_seconds_median'] <= 5)} |",
    ]


def _put_targets(results: dict, verdict) -> list[str]:
    if "put_paths" not in results:
        return []
    paths = {(entry["path"], entry["body_bytes"]): entry for entry in results["put_paths"]}
    sizes = sorted({size for _, size in paths})
    bridge = [paths[("bridge", size)]["cpu_us_per_put"] for size in sizes]
    shares = [paths[("bridge", size)]["cpu_us_per_put"] / paths[("aiobotocore", size)]["cpu_us_per_put"]
              for size in sizes]
    # A plain install has no uvloop: its figures are the new path on asyncio's loop.
    new, old = results["end_to_end_asyncio"], results["end_to_end_aiobotocore"]
    return [
        f"| bridge CPU per object written ≤ 0.3 ms, 1–25 KB bodies "
        f"| {', '.join(f'{_f(us / 1000, 3)} ms ({size:,} B)' for us, size in zip(bridge, sizes))} "
        f"| {verdict(max(bridge) <= 300)} |",
        f"| … and ≤ 25 % of bare aiobotocore `put_object`, same run "
        f"| {', '.join(f'{_f(share * 100, 0)} % ({size:,} B)' for share, size in zip(shares, sizes))} "
        f"| {verdict(max(shares) <= 0.25)} |",
        f"| OpenRouter delivery end to end ≤ 0.6 ms bridge CPU | {_f(new['cpu_ms_per_delivery'], 3)} ms "
        f"(before, aiobotocore's put_object on asyncio's loop: {_f(old['cpu_ms_per_delivery'], 3)} ms) "
        f"| {verdict(new['cpu_ms_per_delivery'] <= 0.6)} |",
        f"| … and ≥ 2× the deliveries/s of before, same run "
        f"| {_f(new['deliveries_per_second'], 0)} against {_f(old['deliveries_per_second'], 0)} "
        f"({_f(new['deliveries_per_second'] / old['deliveries_per_second'], 2)}×) "
        f"| {verdict(new['deliveries_per_second'] >= 2 * old['deliveries_per_second'])} |",
    ]


JOIN, CONTENT = "without content (a join half each)", "with content on the span"


def _answers_targets(results: dict, verdict) -> list[str]:
    if "answers" not in results:
        return []
    join = results["answers"]["join"]
    without, carrying = _ingest(results, "100 spans, HTTP/protobuf"), \
        _ingest(results, "100 spans with content on the span, HTTP/protobuf")
    return [
        f"| a GenAI span without content (its join half kept) costs no more than one carrying its content, "
        f"100-span protobuf batches | HTTP: {_f(without['cpu_us_per_span'])} against "
        f"{_f(carrying['cpu_us_per_span'])} µs/span; in-process: {_f(join[JOIN]['cpu_us_per_span'])} against "
        f"{_f(join[CONTENT]['cpu_us_per_span'])} µs/span "
        f"| {verdict(without['cpu_us_per_span'] <= carrying['cpu_us_per_span'] and join[JOIN]['cpu_us_per_span'] <= join[CONTENT]['cpu_us_per_span'])} |",
    ]


def _answers_section(results: dict) -> list[str]:
    answers = results["answers"]
    join = answers["join"]
    without, carrying = _ingest(results, "100 spans, HTTP/protobuf"), \
        _ingest(results, "100 spans with content on the span, HTTP/protobuf")
    return [
        "## 10. The answers: join halves, prices, one row per call",
        "",
        "`python -m bench.answers_bench` (in-process: the ingest path `Ingestor.export` with a real spool and "
        "join store, no HTTP and no uploads, 16 exports at a time, "
        f"{answers['exports']} exports of {answers['spans_per_export']} spans a run; CPU of the whole process, "
        "every thread), beside section 2's HTTP rows (wrk, the bridge as its own process, uploads parked):",
        "",
        "| 100-span protobuf batches | in-process µs/span | HTTP µs/span (section 2) |",
        "|---|---|---|",
        f"| GenAI spans without content: each keeps a half in the join store | {_f(join[JOIN]['cpu_us_per_span'])} "
        f"({' / '.join(_f(v) for v in join[JOIN]['runs'])}) | {_f(without['cpu_us_per_span'])} |",
        f"| the same spans carrying their prompt and completion: no half | {_f(join[CONTENT]['cpu_us_per_span'])} "
        f"({' / '.join(_f(v) for v in join[CONTENT]['runs'])}) | {_f(carrying['cpu_us_per_span'])} |",
        f"| the join store alone (`JoinStore.put_spans`) | "
        f"{_f(join['join store alone (put_spans, 100 halves an export)']['cpu_us_per_span'], 2)} | |",
        "",
        f"- Pricing a call that reports no cost (`pricing.price_record`, genai-prices' table): "
        f"{_f(answers['pricing_us_per_call'], 2)} µs ({' / '.join(_f(v, 2) for v in answers['pricing_runs'])}).",
        f"- Keeping the newest version of each call over a million rows of `report`'s columns "
        f"(`lake.read.newest_versions`, DuckDB): {_f(answers['dedupe_seconds_per_million'], 2)} s "
        f"({' / '.join(_f(v, 2) for v in answers['dedupe_runs'])}); section 8's `report` over a million records "
        "includes it.",
        "",
    ]


def _put_section(results: dict) -> list[str]:
    uvloop, old, plain = results["end_to_end"], results["end_to_end_aiobotocore"], results["end_to_end_asyncio"]
    lines = [
        "## 9. The S3 write path",
        "",
        "`python -m bench.bare_put --path P --body-bytes N`: one process putting 3,000 objects, 16 at a time, "
        "to the mock S3 endpoint; CPU of that process per PUT. *aiobotocore*: a bare `put_object` loop (the "
        "client the bridge wrote with before); *bridge*: the bridge's own `S3Sink.put` (`s3_put`: SigV4 signed "
        "by `sigv4`, the body's CRC-32 in `x-amz-checksum-crc32` as botocore sends it, one HTTP/1.1 request on "
        "its own kept-alive connections, `s3_connections`, the endpoint resolved once per bucket); *obstore*: Rust's "
        "object_store through its Python binding, for reference.",
        "",
        "| body | path | CPU µs per PUT | PUTs/s | share of aiobotocore's CPU |",
        "|---|---|---|---|---|",
    ]
    paths = {(entry["path"], entry["body_bytes"]): entry for entry in results["put_paths"]}
    for entry in results["put_paths"]:
        base = paths[("aiobotocore", entry["body_bytes"])]["cpu_us_per_put"]
        lines.append(f"| {entry['body_bytes']:,} B | {entry['path']} | {_f(entry['cpu_us_per_put'], 0)} "
                     f"({_runs(entry, 'cpu_us_per_put', 0)}) | {_f(entry['puts_per_second'], 0)} "
                     f"| {_f(entry['cpu_us_per_put'] / base * 100, 0)} % |")
    lines += [
        "",
        "OpenRouter deliveries end to end (section 1's load, whose figures are the first row), the same bridge "
        "with each write path and event loop:",
        "",
        "| write path | deliveries/s | bridge CPU ms/delivery | peak RSS MB |",
        "|---|---|---|---|",
        f"| direct (`s3_put`) on uvloop (`auto` with the `[uvloop]` extra, as installed here) "
        f"| {_f(uvloop['deliveries_per_second'], 0)} "
        f"({_runs(uvloop, 'deliveries_per_second', 0)}) | {_f(uvloop['cpu_ms_per_delivery'], 3)} "
        f"({_runs(uvloop, 'cpu_ms_per_delivery', 3)}) | {_f(uvloop['peak_rss_mb'])} |",
        f"| direct on asyncio's loop (a plain install) | {_f(plain['deliveries_per_second'], 0)} "
        f"({_runs(plain, 'deliveries_per_second', 0)}) | {_f(plain['cpu_ms_per_delivery'], 3)} "
        f"({_runs(plain, 'cpu_ms_per_delivery', 3)}) | {_f(plain['peak_rss_mb'])} |",
        f"| `--s3-put-path aiobotocore --event-loop asyncio` (before) | {_f(old['deliveries_per_second'], 0)} "
        f"({_runs(old, 'deliveries_per_second', 0)}) | {_f(old['cpu_ms_per_delivery'], 3)} "
        f"({_runs(old, 'cpu_ms_per_delivery', 3)}) | {_f(old['peak_rss_mb'])} |",
        "",
    ]
    return lines


def _batch_section(results: dict) -> list[str]:
    batch, lake_batch, lake_trace = results["batch_layout"], results["report_batch"], results["report_trace"]
    ingest = _ingest(results, "100 spans with content on the span, HTTP/protobuf")
    lines = [
        "## 8. The batch layout, and reading the lake",
        "",
        f"`serve {batch['options']}` (the defaults but the age: at this rate files close on --batch-max-bytes, "
        "and the run waits out the age of the last one) on the mock S3 endpoint. wrk posts 100-span OTLP/protobuf "
        "batches of GenAI spans with content on the span (each span its own call; section 2's *with content* "
        "payload) with 16 connections; CPU is counted from the first request until every record is in a Parquet "
        "file in S3 (the spool is empty), and so are the S3 requests (PUTs, and the parts of multipart uploads).",
        "",
        "| | spans per CPU-second | bridge CPU µs/span | spans acknowledged/s | S3 requests per million records "
        "| ack p99 ms | peak RSS MB |",
        "|---|---|---|---|---|---|---|",
        f"| batch layout, end to end | {_f(batch['spans_per_cpu_second'], 0)} ({_runs(batch, 'spans_per_cpu_second', 0)}) "
        f"| {_f(batch['cpu_us_per_span'])} | {_f(batch['spans_acknowledged_per_second'], 0)} "
        f"| {_f(batch['s3_requests_per_million'], 0)} ({_runs(batch, 's3_requests_per_million', 0)}) "
        f"| {_f(batch['p99_ms'])} | {_f(batch['peak_rss_mb'])} |",
        f"| ingest alone, same payload (section 2) | {_f(1e6 / ingest['cpu_us_per_span'], 0)} "
        f"| {_f(ingest['cpu_us_per_span'])} | {_f(ingest['spans_per_second'], 0)} | (uploads parked) "
        f"| {_f(ingest['p99_ms'])} | |",
        "",
        "The trace layout makes one PUT per record: 1,000,000 requests per million records.",
        "",
        "`python -m bench.lake_bench --records 1000000 --layout batch|trace`: one million LLM records over 7 "
        "days (8 models, 500 customers, 2 % errors) in a local directory, as the batch layout's hourly Parquet "
        "files or as the trace layout's JSON objects; then `otel-s3-bridge report --by model,day` in a new "
        "process (interpreter start and imports included), its call count checked.",
        "",
        "| layout | files | bytes on disk | report seconds |",
        "|---|---|---|---|",
    ]
    for entry in (lake_batch, lake_trace):
        seconds = " / ".join(_f(value, 2) for value in entry["report_seconds"])
        lines.append(f"| {entry['layout']} | {entry['files']:,} | {entry['bytes']:,} "
                     f"| {_f(entry['report_seconds_median'], 2)} ({seconds}) |")
    return lines + [""]


def _peak(entry: dict) -> str:
    """Main process first, then the others (decode processes, the resource tracker), MB."""
    values = list(entry["peak_mb"].values())
    return f"{values[0]:.0f} (others: {', '.join(f'{v:.0f}' for v in values[1:]) or '-'})"


def _metrics_section(entries: list[dict]) -> list[str]:
    lines = [
        "## 7. What the Prometheus metrics cost",
        "",
        "`python -m bench.metrics_bench`, in-process: the metric updates one accepted export makes (its request; "
        "spans, rejections, records and LLM usage by model; one timed PUT per record) against preparing the same "
        "export (parse, decode, key, encode), for one process and for prometheus-client's multiprocess mode "
        "(`--workers N`: every update goes to a memory-mapped file). Both are in the end-to-end figures above.",
        "",
        "| mode | payload | prepare µs/export | metrics µs/export | metrics µs/record | share of prepare |",
        "|---|---|---|---|---|---|",
    ]
    for entry in entries:
        lines.append(f"| {entry['mode']} | {entry['payload']} | {_f(entry['prepare_us'], 0)} "
                     f"| {_f(entry['metrics_us'])} ({_runs(entry, 'metrics_us')}) "
                     f"| {_f(entry['metrics_us'] / entry['records'], 2)} "
                     f"| {_f(100 * entry['metrics_us'] / entry['prepare_us'])} % |")
    return lines + [""]


def _hardening_section(h: dict) -> list[str]:
    rows = [
        ("largest OTLP/JSON export (20 MiB, ~2,000 spans with 9 KB prompts), decode processes", h["largest_json"]),
        ("the same with `--decode-processes 0` (decoded in a thread)", h["largest_json_in_a_thread"]),
        ("100,000 spans in one OTLP/protobuf export (413: more records than one export may hold)",
         h["many_spans_protobuf"]),
        ("the same with `--decode-processes 0` (decoded in a thread)", h["many_spans_protobuf_in_a_thread"]),
        ("30 KiB gzip: a 4 MiB resource attribute shared by 600 spans", h["amplified_gzip"]),
        ("2.1 MiB: a 2 MiB resource attribute shared by 600 spans", h["amplified_plain"]),
        ("8 MiB of empty gzip members", h["empty_gzip_members_8_mib"]),
    ]
    lines = [
        "## 6. Limits under attack",
        "",
        f"`{h['command']}` on {h['date']}: {h['machine']}. Every scenario starts a fresh bridge with its "
        "default limits (local-directory sink) and sends the requests of `bench/attacks.py` (the hardening "
        "tests send the same). /healthz is polled back to back on one connection while the export is in "
        "flight. Memory is `VmHWM` (peak) and `VmRSS` (after) from /proc for each process of the bridge's "
        "tree, the bridge's own process first.",
        "",
        "| export | status | s | /healthz answers | p50 ms | p99 ms | max ms | peak MB | after MB (main) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for label, entry in rows:
        health = entry["healthz"]
        after = list(entry["after_mb"].values())[0]
        lines.append(f"| {label} | {entry['status']} | {entry['request_seconds']} | {health['answers']} | "
                     f"{health['p50_ms']} | {health['p99_ms']} | {health['max_ms']} | {_peak(entry)} | {after:.0f} |")
    sixteen, grpc_auth, slow = h["sixteen_concurrent"], h["unauthenticated_grpc_24x60mib"], h["slowloris"]
    inflate = ", ".join(f"{size}: {seconds} s" for size, seconds in h["gzip_members_inflate_seconds"].items())
    lines += [
        "",
        f"* **16 concurrent worst-case exports** (the largest JSON, the amplified gzip and 20,000-span protobuf, "
        f"each retried on 503 as OTLP clients do): statuses {sorted(set(sixteen['statuses']))}, "
        f"{sixteen['retried_503']} answers 503 on the way, {sixteen['seconds']} s; peak of the whole tree "
        f"{sixteen['peak_sum_mb']:.0f} MB ({_peak(sixteen)}).",
        f"* **24 concurrent unauthenticated 60 MiB gRPC messages**: {', '.join(grpc_auth['codes'])}; peak of the "
        f"whole tree {grpc_auth['peak_sum_mb']:.0f} MB ({_peak(grpc_auth)}).",
        f"* **Empty gzip members**, inflating alone: {inflate} (before: 1.1 / 3.8 / 15.3 / 128.7 s).",
        f"* **Slowloris**: {slow['connections']} idle, partial-header and slow-body connections; a valid export "
        f"meanwhile answered {slow['valid_export_status']} in {slow['valid_export_ms']} ms; the last connection "
        f"was closed after {slow['last_closed_after_s']} s (header timeout 10 s, body timeout 30 s), "
        f"{slow['still_open_after_120_s']} left open; {slow['log_bytes']} bytes of log.",
        "",
    ]
    return lines


def _put_share(results: dict) -> float:
    """The trace layout's bridge CPU per delivery over (bare aiohttp echo + bare aiobotocore PUT):
    the median of each run's ratio when the three were measured a run of each in turn."""
    if "trace_ratio" in results:
        return results["trace_ratio"]["median"]
    machine_us = results["bare_http"]["cpu_us_per_request"] + results["bare_put"]["cpu_us_per_put"]
    return results["end_to_end"]["cpu_ms_per_delivery"] * 1000 / machine_us


def _capacity_targets(results: dict, verdict) -> list[str]:
    if "cpu_floor" not in results:
        return []
    floor, capacity = results["cpu_floor"], results["capacity"]
    refused = sum(level["refused"] for level in capacity["admission"])
    largest = capacity["largest_export"]
    rows = [
        f"| CPU per span ≤ 4× the same-run Python floor, batch layout, 100 × 100 spans at concurrency 2 "
        f"| {_f(floor['bridge_us_per_span'])} µs against a floor of {_f(floor['floor_us_per_span'])} µs: "
        f"{_f(floor['ratio'])}× ({_f(floor['spans_per_cpu_second'], 0)} spans per CPU-second)"
        f"{_warm_aside(floor)}{_instructions_aside(results.get('instructions'))} | {verdict(floor['ratio'] <= 4)} |",
        f"| trace layout CPU per delivery ≤ 0.45 × (bare aiohttp echo + bare aiobotocore PUT) "
        f"| {_f(_put_share(results), 2)}× | {verdict(_put_share(results) <= 0.45)} |",
        f"| every honest export admitted: 8/16/64 concurrent 153 KB, 16 × 0.9 MB, 16 gRPC "
        f"| {refused} refused of {sum(sum(level['codes'].values()) for level in capacity['admission'])} "
        f"| {verdict(refused == 0)} |",
        f"| a 20 MiB OTLP/JSON export accepted, /healthz p99 ≤ 100 ms meanwhile "
        f"| {largest['code']}, p99 {_f(largest['healthz_p99_ms'])} ms | "
        f"{verdict(largest['code'] == 200 and largest['healthz_p99_ms'] <= 100)} |",
    ]
    phoenix = results.get("phoenix", {})
    if "bridge_batch" in phoenix:
        share = phoenix["bridge_batch"]["share_of_phoenix"]
        trace_share = phoenix["bridge_trace"]["share_of_phoenix"]
        both = (f"{verdict(share <= 0.01)} for the batch layout, {verdict(trace_share <= 0.01)} for the trace layout"
                if (share <= 0.01) != (trace_share <= 0.01) else verdict(share <= 0.01))
        rows.append(f"| CPU per span ≤ 1 % of Arize Phoenix's, same load, same run | batch layout "
                    f"{_f(share * 100, 2)} %, trace layout {_f(trace_share * 100, 2)} % | {both} |")
    return rows


def _cpu_clock(machine: dict) -> str:
    if machine.get("cpu_clock") == "cgroup":
        return ("read from a cpuacct cgroup of its own (`cpuacct.usage`, nanoseconds; every process it starts, "
                "exited ones included)")
    return "read from `/proc/<pid>/stat` (10 ms ticks)"


def _ratios_again_note(results: dict) -> list[str]:
    if "ratios_machine" not in results:
        return []
    m = results["ratios_machine"]
    return [f"**Measured again on {m['date']}** by `python -m bench.suite --only-ratios` ({m['nproc']} CPUs, "
            f"{m['cpu']}; the bridge's CPU {_cpu_clock(m)}), in one run: the end-to-end OpenRouter figures of "
            "section 1's first table (1 and 2 "
            "workers), the bare "
            "aiohttp echo and aiobotocore PUT of section 4, and section 11's CPU per span against the floor and "
            "beside Arize Phoenix (every figure issue 21's ratios are made of, and the targets that quote them; "
            "section 11 dates each of its measurements). "
            + _put_paths_again(results)
            + "The other sections are the run above: compare ratios across the two runs, not µs.", ""]


def _put_paths_again(results: dict) -> str:
    """Section 9 measured on its own after a change of the write path (its entries then carry `when`)."""
    when = {entry.get("when") for entry in results.get("put_paths", [])} - {None}
    if not when:
        return ""
    return (f"Section 9 (the write paths, and end to end through each) was measured again on {max(when)}, "
            "with the same functions of `bench.suite`, after the write path changed. ")


def _instructions(counted: dict | None) -> list[str]:
    if not counted:
        return []
    if "missing" in counted:
        return [f"Instructions per span not counted: {counted['missing']} is missing.", ""]
    rows = [f"| `prepare_export`, decode core {name} | {_f(value / 1000, 0)} k | {_f(counted['prepare_over_floor'][name], 2)}× |"
            for name, value in counted["prepare_per_span"].items()]
    return [
        f"`python -m bench.instructions` ({counted['when']}): instructions per span counted by valgrind's callgrind "
        f"(a difference of differences over {counted['exports']} exports: start-up, imports and building the bodies "
        "cancel out). Unlike CPU seconds on this shared machine, these counts repeat from run to run; they are not "
        "time (a cache miss costs more than an addition).",
        "",
        "| work per span | instructions | over the floor |",
        "|---|---|---|",
        f"| the floor (parse, read each attribute, orjson) | {_f(counted['floor_per_span'] / 1000, 0)} k | 1× |",
        *rows,
        *_bridge_instructions(counted),
        "",
    ]


def _warm_aside(floor: dict) -> str:
    """The same bridge's steady state beside its first pass (older results have none)."""
    if "warm_ratio" not in floor:
        return ""
    return (f"; its next loads, the least disturbed of {floor.get('warm_passes', 2)} as the floor's is: "
            f"{_f(floor['warm_us_per_span'])} µs, {_f(floor['warm_ratio'])}×")


def _instructions_aside(counted: dict | None) -> str:
    """The same load's whole-bridge instructions over the floor's, beside the CPU-seconds ratio
    it does not replace (section 11 says why the two differ)."""
    if not counted or "bridge_over_floor" not in counted:
        return ""
    return f"; in instructions (callgrind, user space): {_f(counted['bridge_over_floor'], 2)}×"


def _bridge_instructions(counted: dict) -> list[str]:
    if "bridge_per_span" not in counted:
        return []
    return [f"| the whole bridge, every thread, for `bench.cpu_floor`'s load ({counted['bridge_exports']} exports: "
            "answered, spooled, built into Parquet, uploaded; user space only) | "
            f"{_f(counted['bridge_per_span'] / 1000, 0)} k | {_f(counted['bridge_over_floor'], 2)}× |"]


def _builds(floor: dict) -> list[str]:
    """The decode core's two builds side by side, when the run measured both."""
    if "pure_us_per_span" not in floor:
        return []
    return [
        f"The figures above are the bridge as installed (decode core: {floor['build']}). The same run, on the "
        "decode core's pure-Python build (`OTEL_S3_BRIDGE_PURE=1`), and `prepare_export` alone in-process "
        "(parse, decode, price, key, encode; the least disturbed of 5 passes over 3,000 spans):",
        "",
        "| decode core | bridge µs/span (runs) | ratio to the floor (runs) | `prepare_export` µs/span |",
        "|---|---|---|---|",
        f"| {floor['build']} | {_f(floor['bridge_us_per_span'])} ({_runs(floor, 'bridge_us_per_span')}) "
        f"| {_f(floor['ratio'])}× ({_runs(floor, 'ratio')}) | {_f(floor['prepare_us_per_span'])} |",
        f"| pure Python | {_f(floor['pure_us_per_span'])} ({_runs(floor, 'pure_us_per_span')}) "
        f"| {_f(floor['pure_ratio'])}× ({_runs(floor, 'pure_ratio')}) | {_f(floor['pure_prepare_us_per_span'])} |",
        "",
    ]


def _warm_rows(floor: dict) -> list[str]:
    if "warm_ratio" not in floor:
        return []
    return [f"| the same bridge's next loads (median of the runs' least disturbed pass; runs) "
            f"| {_f(floor['warm_us_per_span'])} ({_runs(floor, 'warm_us_per_span')}) | "
            f"| {_f(floor['warm_ratio'])}× ({_runs(floor, 'warm_ratio')}) | | |"]


def _trace_ratio_line(results: dict) -> str:
    medians = (f"{_f(results['end_to_end']['cpu_ms_per_delivery'], 3)} ms / "
               f"({_f(results['bare_http']['cpu_us_per_request'] / 1000, 3)} + "
               f"{_f(results['bare_put']['cpu_us_per_put'] / 1000, 3)}) ms")
    line = ("The trace layout's CPU per OpenRouter delivery (section 1) over bare aiohttp echo + bare aiobotocore PUT "
            "(section 4): ")
    if "trace_ratio" not in results:
        return f"{line}{medians} = {_f(_put_share(results), 2)}×."
    runs = " / ".join(_f(ratio, 2) for ratio in results["trace_ratio"]["runs"])
    return (f"{line}measured a run of each in turn, so that each run's ratio compares the three at the same moment "
            f"of this shared host: {_f(_put_share(results), 2)}× (runs {runs}; the medians alone: {medians}).")


def _floor_passes(floor: dict) -> str:
    passes = [run["floor_passes"] for run in floor["runs"] if "floor_passes" in run]
    if not passes:
        return "the least disturbed of 5 passes"
    return (f"the least disturbed of its {passes[0]} passes in each run, one right before each of the bridge's "
            "loads while the bridge is idle, so that both sides are read over the same minutes of this shared host")


def _capacity_section(results: dict) -> list[str]:
    floor, capacity, phoenix = results["cpu_floor"], results["capacity"], results.get("phoenix", {})
    largest = capacity["largest_export"]
    lines = [
        "## 11. Capacity: CPU per span against the floor, admission, beside Phoenix",
        "",
        f"`python -m bench.cpu_floor`{' (' + floor['when'] + ')' if 'when' in floor else ''}: "
        f"{floor['exports']} OTLP/HTTP protobuf exports of {floor['spans_per_export']} "
        "GenAI chat spans (each its own trace, prompt and completion on the span), "
        f"{floor['concurrency']} at a time, into the batch layout (Parquet) on the mock S3, until every record is "
        "in a file. The floor is measured in the same run on the same bodies: parse with protobuf, read each "
        f"attribute once into a dict, encode it with orjson ({_floor_passes(floor)}).",
        "",
        "| | bridge µs/span | floor µs/span | ratio | spans per CPU-second | peak RSS MB |",
        "|---|---|---|---|---|---|",
        f"| median | {_f(floor['bridge_us_per_span'])} | {_f(floor['floor_us_per_span'])} | {_f(floor['ratio'])}× "
        f"| {_f(floor['spans_per_cpu_second'], 0)} | {_f(floor['peak_rss_mb'])} |",
        f"| runs | {_runs(floor, 'bridge_us_per_span')} | {_runs(floor, 'floor_us_per_span')} "
        f"| {_runs(floor, 'ratio')} | {_runs(floor, 'spans_per_cpu_second', 0)} | {_runs(floor, 'peak_rss_mb')} |",
        *_warm_rows(floor),
        "",
        *_builds(floor),
        *_instructions(results.get("instructions")),
        _trace_ratio_line(results),
        "",
        "`python -m bench.capacity`, default settings (one run): the answers to honest loads sent side by side, "
        "counted per level, and the bridge's process tree peak RSS.",
        "",
        "| load | body | answers | refused | tree peak RSS MB |",
        "|---|---|---|---|---|",
        *(f"| {level['load']} | {level['body_bytes']:,} B | "
          f"{', '.join(f'{count} × {code}' for code, count in sorted(level['codes'].items()))} | {level['refused']} "
          f"| {_f(level['peak_rss_mb'])} |" for level in capacity["admission"]),
        "",
        f"The largest valid export, {largest['export_bytes']:,} B of OTLP/JSON ({largest['spans']:,} spans, records "
        f"beyond `--max-decoded-bytes`, stored a chunk at a time): answered {largest['code']} in "
        f"{_f(largest['export_seconds'], 2)} s; meanwhile /healthz (its own connection, in a loop) answered "
        f"{largest['healthz_answers']:,} times, p50 {_f(largest['healthz_p50_ms'], 2)} ms, p99 "
        f"{_f(largest['healthz_p99_ms'], 2)} ms, max {_f(largest['healthz_max_ms'], 2)} ms; peak RSS per process "
        f"{', '.join(f'{mb:.0f}' for mb in largest['peak_rss_mb_per_process'].values())} MB.",
        "",
    ]
    if "bridge_batch" in phoenix:
        other = phoenix["phoenix"]
        lines += [
            f"`python -m bench.phoenix`{' (' + phoenix['when'] + ')' if 'when' in phoenix else ''}: Arize Phoenix {phoenix['phoenix_version']} (`phoenix serve`, SQLite, its "
            f"own virtualenv from bench/phoenix.lock) and the bridge receive the same {phoenix['exports']} exports "
            f"of {phoenix['spans_per_export']} spans, {phoenix['concurrency']} at a time; CPU of each whole "
            "process tree until everything is stored (Phoenix: its CPU quiet, its REST API counting "
            f"{other['stored_spans']:,} spans); the bridge's figure is the median of its runs, each a fresh bridge.",
            "",
            "| server | answers | CPU µs/span | share of Phoenix | peak RSS MB |",
            "|---|---|---|---|---|",
            f"| Arize Phoenix | {other['codes']} | {_f(other['us_per_span'], 0)} | 100 % "
            f"| {_f(other['peak_rss_mb'])} |",
            *(_bridge_beside_phoenix(layout, run)
              for layout, run in (("batch", phoenix["bridge_batch"]), ("trace", phoenix["bridge_trace"]))),
            "",
        ]
    elif phoenix:
        lines += [f"Arize Phoenix not measured: {phoenix['missing']}.", ""]
    return lines



def _governance_section(g: dict) -> list[str]:
    sizes = g["sizes"]
    lines = [
        "## 12. What each key's policy costs (issue 22)",
        "",
        f"`python -m bench.governance_bench`{' (' + g['when'] + ')' if 'when' in g else ''}"
        + (f", on a machine where ten million Python additions took {_f(g['python_loop_seconds'], 2)} s of CPU "
           "(machines and days differ: compare the ratios, not the µs)" if "python_loop_seconds" in g else "")
        + ": `prepare_export` "
        f"in-process over {g['exports']} OTLP/protobuf exports of {g['spans_per_export']} GenAI chat spans whose "
        "prompt and completion each hold about 1 KiB or 8 KiB of text, process CPU, the least disturbed of 5 "
        "passes. Content policies per KiB of message text (the difference to `keep` on the same bodies); the "
        "others per span.",
        "",
        "| message text per span | keep µs/span | drop µs/KiB | hash µs/KiB | redact µs/KiB "
        "| redact ÷ decode | identities hmac µs/span | identities drop µs/span | sample 0.5 µs/span |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, size in sizes.items():
        content = size["content_us_per_kib"]
        lines.append(
            f"| {_f(size['message_kib_per_span'])} KiB | {_f(size['us_per_span']['keep'])} "
            f"| {_f(content['drop'], 2)} | {_f(content['hash'], 2)} | {_f(content.get('redact'), 2)} "
            f"| {_f(size.get('redact_over_decode'), 2)} "
            f"| {_f(size['identities_us_per_span']['identities_hmac'])} "
            f"| {_f(size['identities_us_per_span']['identities_drop'])} | {_f(size['sample_half_us_per_span'])} |")
    lines += ["", f"The per-key rate limiter (admit + charge): {_f(g['rate_limit_us_per_export'], 2)} µs per export, "
              f"{_f(g['rate_limit_us_per_span'], 3)} µs per span of a 100-span export.", ""]
    if "redact_dense" in g:
        lines += ["`redact` on text dense with what it replaces (the labelled corpus's documents, one finding per "
                  "~60 characters; each phone number and IBAN is checked by phonenumbers / stdnum, ~0.1–0.2 ms "
                  "the first time a value is seen):", "",
                  "| message text per span | keep µs/span | redact µs/span | redact µs/KiB | redact ÷ decode |",
                  "|---|---|---|---|---|"]
        for size in g["redact_dense"].values():
            lines.append(f"| {_f(size['message_kib_per_span'])} KiB | {_f(size['us_per_span']['keep'])} "
                         f"| {_f(size['us_per_span']['redact'])} | {_f(size['redact_us_per_kib'], 1)} "
                         f"| {_f(size['redact_over_decode'], 2)} |")
        lines += ["", "The goal (redact adds at most the decode cost of the same span) holds for ordinary text (the "
                  "first table) and not for text this dense: each finding costs a call into RE2's Python binding "
                  "(2–3 µs, whatever the text's length) and its check (a Luhn sum, a numbering plan, an address "
                  "parse), and one KiB of the corpus holds ~25 candidates. Prompts that dense are rare; a faster "
                  "path would hand RE2 all patterns at once and read every match in one call (RE2::Set gives which "
                  "patterns match, not where), or move the loop into compiled code.", ""]
    if "redact_quality" in g:
        quality = g["redact_quality"]
        lines += ["`redact`'s detectors on the labelled corpus (tests/redact_corpus/labelled.txt; a label is found when "
                  "findings of its kind cover all of it):", "",
                  "| kind | labels | recall | findings | precision |", "|---|---|---|---|---|"]
        for kind, row in quality["kinds"].items():
            lines.append(f"| {kind} | {row['labels']} | {_f(row['recall'], 3)} | {row['findings'] or '—'} "
                         f"| {_f(row['precision'], 3) if row['findings'] else '—'} |")
        lines += ["", f"Ordinary prompts (tests/redact_corpus/ordinary.txt, {quality['ordinary_documents']} documents "
                  f"of numbers, dates, UUIDs, hashes, versions and code): {quality['ordinary_findings']} findings.", ""]
    return lines


if __name__ == "__main__":
    source = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE / "results.json"
    write_report(json.loads(source.read_text()), HERE / "RESULTS.md")


def _bridge_beside_phoenix(layout: str, run: dict) -> str:
    runs = run.get("runs_us_per_span")
    figure = _f(run["us_per_span"]) + (f" (runs {' / '.join(_f(us) for us in runs)})" if runs else "")
    return (f"| the bridge, {layout} layout | {run['codes']} | {figure} "
            f"| {_f(run['share_of_phoenix'] * 100, 2)} % | {_f(run['peak_rss_mb'])} |")

"""The bridge's Prometheus series: every one is defined here, other modules call the functions
below and never prometheus-client directly.

One process (`--workers 1`) keeps its series in memory and serves them itself. With `--workers N`
the supervisor points `PROMETHEUS_MULTIPROC_DIR` at a fresh directory before starting the workers
(prometheus-client reads it at import), every worker writes its series there, and worker 0
serves a scrape that sums them all (`scrape_registry`), so one scrape reflects every worker.
Gauges say how they combine across workers (`multiprocess_mode`).

LLM usage is labelled by model and provider, which come from senders: label values are cut to
`MAX_LABEL_CHARS`, and at most `MAX_MODEL_SERIES` (model, provider) pairs per process get series
of their own; later ones are counted as `other`. Must not decide anything; only count.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
    multiprocess,
)

disable_created_metrics()  # `*_created` series double the exposition and no dashboard here reads them

MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"
MAX_MODEL_SERIES = 500
MAX_LABEL_CHARS = 128
OTHER = "other"
UNKNOWN = "unknown"
CONTENT_TYPE = CONTENT_TYPE_LATEST

SPANS_RECEIVED = Counter("otel_s3_bridge_spans_received", "Spans in accepted trace exports", ["transport"])
SPANS_REJECTED = Counter(
    "otel_s3_bridge_spans_rejected",
    "Spans of accepted exports not stored (partial_success): invalid, non_llm (--non-llm-spans drop), "
    "refused (the sink refused them for good, --ack upload)", ["reason"])
LOG_RECORDS_RECEIVED = Counter("otel_s3_bridge_log_records_received", "Log records in accepted logs exports",
                               ["transport"])
LOG_RECORDS_REJECTED = Counter(
    "otel_s3_bridge_log_records_rejected",
    "Log records of accepted exports not kept: invalid, not_genai (not a GenAI event of a span)", ["reason"])
REQUESTS = Counter("otel_s3_bridge_requests", "Export requests answered, by transport, signal and status "
                   "(HTTP status code, or gRPC status name)", ["transport", "signal", "code"])
CALLS_SAMPLED_OUT = Counter("otel_s3_bridge_calls_sampled_out", "LLM calls acknowledged and not stored: their "
                            "key's policy samples their trace out (key: the key's name)", ["key"])
EXPORTS_RATE_LIMITED = Counter("otel_s3_bridge_exports_rate_limited", "Exports answered 429 / RESOURCE_EXHAUSTED: "
                               "their key sent more than its max_spans_per_second or max_bytes_per_second", ["key"])
RECORDS = Counter("otel_s3_bridge_records", "LLM trace records stored, by convention", ["source"])
OBJECTS_UPLOADED = Counter("otel_s3_bridge_objects_uploaded", "Objects written to the sink")
OBJECTS_ACKNOWLEDGED = Counter(
    "otel_s3_bridge_acknowledged_objects", "Objects of answered exports, by where each was when the "
    "export was answered: in the bucket (put first, --ack auto or upload) or in the spool", ["held_in"])
BATCH_FILES = Counter("otel_s3_bridge_batch_files", "Files of the batch layout written, by format", ["format"])
BATCH_RECORDS = Counter("otel_s3_bridge_batch_records", "Records written in files of the batch layout")
UPLOAD_FAILURES = Counter("otel_s3_bridge_upload_failures", "Failed object writes (retryable: retried later; "
                          "otherwise quarantined or refused)", ["retryable"])
UPLOAD_DURATION = Histogram("otel_s3_bridge_upload_duration_seconds", "Time of one object write to the sink",
                            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
SPOOL_ENTRIES = Gauge("otel_s3_bridge_spool_entries", "Acknowledged records waiting in the spool for upload",
                      multiprocess_mode="livesum")
SPOOL_BYTES = Gauge("otel_s3_bridge_spool_bytes", "Spool bytes counted against --spool-max-bytes "
                    "(waiting and quarantined)", multiprocess_mode="livesum")
SPOOL_MAX_BYTES = Gauge("otel_s3_bridge_spool_max_bytes", "The spool's byte budget (--spool-max-bytes)",
                        multiprocess_mode="livesum")
SPOOL_OLDEST_AGE = Gauge("otel_s3_bridge_spool_oldest_age_seconds",
                         "Age of the oldest spool segment holding records not yet uploaded (0: none)",
                         multiprocess_mode="livemax")
QUARANTINED = Gauge("otel_s3_bridge_quarantined_entries", "Records the sink refused for good, kept in the "
                    "spool's quarantine until `otel-s3-bridge spool retry`", multiprocess_mode="livesum")
LAST_UPLOAD_SUCCESS = Gauge("otel_s3_bridge_last_upload_success_timestamp_seconds",
                            "Unix time of the last object written to the sink", multiprocess_mode="max")
MAINTENANCE_SUCCESS = Gauge("otel_s3_bridge_maintenance_last_success_timestamp_seconds",
                            "Unix time the maintenance loop (key, prices and TLS files re-read, join expiry, spool "
                            "adoption, state) last ran every chore without a failure", multiprocess_mode="livemin")
INFLIGHT_BYTES = Gauge("otel_s3_bridge_inflight_bytes", "Request bytes held in memory "
                       "(against --max-inflight-bytes)", multiprocess_mode="livesum")
JOIN_BYTES = Gauge("otel_s3_bridge_join_bytes", "Bytes the join store holds (against --join-max-bytes)",
                   multiprocess_mode="livemax")
LLM_TOKENS = Counter("otel_s3_bridge_llm_tokens", "Tokens of stored LLM calls (kind: input, output, cached, "
                     "reasoning)", ["model", "provider", "kind"])
LLM_COST = Counter("otel_s3_bridge_llm_cost_usd", "Cost in USD of stored LLM calls (source: reported by the "
                   "sender, or estimated from the tokens)", ["model", "provider", "source"])
LLM_CALLS = Counter("otel_s3_bridge_llm_calls", "Stored LLM calls, by status (ok, error, unset)",
                    ["model", "provider", "status"])

TOKEN_KINDS = ("input", "output", "cached", "reasoning")
_model_series: set[tuple[str, str]] = set()
# Each labelled series once looked up: `labels()` validates and locks on every call, which cost more
# than the increments themselves on the export path. Bounded as the label values are.
_children: dict[tuple, Any] = {}


def _series(metric: Any, *labels: str) -> Any:
    child = _children.get((metric, *labels))
    if child is None:
        child = _children[(metric, *labels)] = metric.labels(*labels)
    return child


def _label(value: str | None) -> str:
    return value[:MAX_LABEL_CHARS] if value else UNKNOWN


def _model_labels(model: str | None, provider: str | None) -> tuple[str, str]:
    labels = (_label(model), _label(provider))
    if labels in _model_series:
        return labels
    if len(_model_series) >= MAX_MODEL_SERIES:
        return OTHER, OTHER
    _model_series.add(labels)
    return labels


def count_request(transport: str, signal: str, code: str | int) -> None:
    _series(REQUESTS, transport, signal, str(code)).inc()


def count_trace_export(transport: str, received: int, rejections: Mapping[str, int],
                       usage: Mapping[tuple, list]) -> None:
    """An accepted trace export: its spans, what was not stored and why, and its records' usage
    (`prepare.Usage`: (source, model, provider, status) -> [calls, input, output, cached, reasoning,
    reported cost, estimated cost])."""
    _series(SPANS_RECEIVED, transport).inc(received)
    for reason, count in rejections.items():
        if count:
            _series(SPANS_REJECTED, reason).inc(count)
    for (source, model, provider, status), (calls, *tokens, reported, estimated) in usage.items():
        _series(RECORDS, source).inc(calls)
        if source == "otlp":  # traces without an LLM call (--non-llm-spans keep): no usage
            continue
        model_label, provider_label = _model_labels(model, provider)
        _series(LLM_CALLS, model_label, provider_label, status or UNKNOWN).inc(calls)
        for kind, count in zip(TOKEN_KINDS, tokens):
            if count:
                _series(LLM_TOKENS, model_label, provider_label, kind).inc(count)
        for cost_source, cost in (("reported", reported), ("estimated", estimated)):
            if cost:
                _series(LLM_COST, model_label, provider_label, cost_source).inc(cost)


def count_sampled_out(key: str | None, calls: int) -> None:
    if calls:
        CALLS_SAMPLED_OUT.labels(key or "").inc(calls)


def count_rate_limited(key: str | None) -> None:
    EXPORTS_RATE_LIMITED.labels(key or "").inc()


def count_refused_spans(count: int) -> None:
    if count:
        _series(SPANS_REJECTED, "refused").inc(count)


def count_acknowledged(in_bucket: int, in_spool: int) -> None:
    if in_bucket:
        _series(OBJECTS_ACKNOWLEDGED, "bucket").inc(in_bucket)
    if in_spool:
        _series(OBJECTS_ACKNOWLEDGED, "spool").inc(in_spool)


def count_logs_export(transport: str, received: int, rejections: Mapping[str, int]) -> None:
    _series(LOG_RECORDS_RECEIVED, transport).inc(received)
    for reason, count in rejections.items():
        if count:
            _series(LOG_RECORDS_REJECTED, reason).inc(count)


def observe_put(seconds: float, failure_retryable: bool | None) -> None:
    """One object write: `failure_retryable` None when it succeeded."""
    UPLOAD_DURATION.observe(seconds)
    if failure_retryable is None:
        OBJECTS_UPLOADED.inc()
        LAST_UPLOAD_SUCCESS.set(time.time())
    else:
        _series(UPLOAD_FAILURES, "true" if failure_retryable else "false").inc()


def maintenance_succeeded() -> None:
    MAINTENANCE_SUCCESS.set(time.time())


def count_batch_file(file_format: str, records: int) -> None:
    _series(BATCH_FILES, file_format).inc()
    BATCH_RECORDS.inc(records)


def set_state(*, inflight_bytes: int, join_bytes: int | None, spool_entries: int | None = None,
              spool_bytes: int | None = None, spool_max_bytes: int | None = None,
              spool_oldest_age_seconds: float | None = None, quarantined_entries: int | None = None) -> None:
    INFLIGHT_BYTES.set(inflight_bytes)
    if join_bytes is not None:
        JOIN_BYTES.set(join_bytes)
    if spool_entries is not None:
        SPOOL_ENTRIES.set(spool_entries)
        SPOOL_BYTES.set(spool_bytes)
        SPOOL_MAX_BYTES.set(spool_max_bytes)
        SPOOL_OLDEST_AGE.set(spool_oldest_age_seconds)
        QUARANTINED.set(quarantined_entries)


def multiprocess_directory() -> str | None:
    return os.environ.get(MULTIPROCESS_ENV) or None


def scrape() -> bytes:
    """The exposition of every series: this process's, or every worker's with `--workers N`."""
    directory = multiprocess_directory()
    if directory is None:
        return generate_latest(REGISTRY)
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=directory)
    return generate_latest(registry)


def forget_process(pid: int, directory: str) -> None:
    """A worker writing to `directory` ended: its live gauges no longer count (its counters still do)."""
    multiprocess.mark_process_dead(pid, directory)

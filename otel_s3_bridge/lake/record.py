"""The output record, schema v1: its name and its field list, in output order.

The canonical, commented definition is `proto/otel_s3_bridge/v1/trace_record.proto`; a test keeps
this list and that file identical. This module must not compute anything.
"""

SCHEMA = "otel-s3-bridge.trace.v1"

SOURCES = ("openrouter", "gen_ai", "openinference", "openllmetry", "vercel_ai", "langfuse", "otlp")

RECORD_FIELDS = (
    "schema",
    "trace_id",
    "otel_trace_id",
    "span_id",
    "parent_span_id",
    "generation_id",
    "name",
    "span_name",
    "timestamp",
    "start_time_unix_nano",
    "end_time_unix_nano",
    "duration_ms",
    "model",
    "requested_model",
    "provider",
    "model_author",
    "input_tokens",
    "output_tokens",
    "total_tokens",
    "cached_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
    "input_cost",
    "output_cost",
    "cost",
    "cost_source",
    "session_id",
    "customer_id",
    "api_key_name",
    "finish_reason",
    "native_finish_reason",
    "time_to_first_token_ms",
    "status",
    "status_message",
    "prompt",
    "completion",
    "content_policy",
    "metadata",
    "observations",
    "events",
    "links",
    "attributes",
    "resource",
    "scope",
    "source",
    "ingest",
)

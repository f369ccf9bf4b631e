-- Athena (or Glue) table over the batch layout's Parquet files: {prefix}/lake/dt=YYYY-MM-DD/hour=HH/*.parquet
-- Replace my-llm-traces (bucket) and openrouter-traces (--prefix). Partition projection: no crawler and
-- no MSCK REPAIR; a query that filters on dt (and hour) reads only those folders.
-- The columns are otel_s3_bridge/lake/schema.py's SCHEMA (tests/test_athena_ddl.py keeps the two equal);
-- prompt, completion, metadata, observations, events, links, attributes and resource are JSON text:
--   SELECT json_extract_scalar(prompt, '$[0].role') FROM llm_traces WHERE dt = '2026-12-01'
-- Only Parquet is described here; gzip NDJSON batch files are read by DuckDB and
-- `otel-s3-bridge report`, or by a JSON SerDe table like trace-layout.sql.
-- cost_source, ingest_completed_at and content_policy came last: a table made before them takes them with
--   ALTER TABLE llm_traces ADD COLUMNS (cost_source string, ingest_completed_at timestamp, content_policy string)
-- and files written before them read them as null.
--
-- One call may be stored more than once (a client resending an export whose answer it lost, a record
-- completed later by its GenAI event logs, --layout both beside compact): query the view llm_calls
-- below, which keeps the newest version of each call, rather than the raw table.
CREATE EXTERNAL TABLE IF NOT EXISTS llm_traces (
  `schema` string,
  `trace_id` string,
  `otel_trace_id` string,
  `span_id` string,
  `parent_span_id` string,
  `generation_id` string,
  `name` string,
  `span_name` string,
  `timestamp` timestamp,
  `start_time_unix_nano` bigint,
  `end_time_unix_nano` bigint,
  `duration_ms` double,
  `model` string,
  `requested_model` string,
  `provider` string,
  `model_author` string,
  `input_tokens` bigint,
  `output_tokens` bigint,
  `total_tokens` bigint,
  `cached_tokens` bigint,
  `cache_write_tokens` bigint,
  `reasoning_tokens` bigint,
  `input_cost` double,
  `output_cost` double,
  `cost` double,
  `session_id` string,
  `customer_id` string,
  `api_key_name` string,
  `finish_reason` string,
  `native_finish_reason` string,
  `time_to_first_token_ms` double,
  `status` string,
  `status_message` string,
  `prompt` string,
  `completion` string,
  `metadata` string,
  `observations` string,
  `events` string,
  `links` string,
  `attributes` string,
  `resource` string,
  `scope_name` string,
  `scope_version` string,
  `source` string,
  `ingest_received_at` timestamp,
  `ingest_key_name` string,
  `ingest_transport` string,
  `cost_source` string,
  `ingest_completed_at` timestamp,
  `content_policy` string
)
PARTITIONED BY (`dt` string, `hour` string)
STORED AS PARQUET
LOCATION 's3://my-llm-traces/openrouter-traces/lake/'
TBLPROPERTIES (
  'projection.enabled' = 'true',
  'projection.dt.type' = 'date',
  'projection.dt.format' = 'yyyy-MM-dd',
  'projection.dt.range' = '2025-01-01,NOW',
  'projection.dt.interval' = '1',
  'projection.dt.interval.unit' = 'DAYS',
  'projection.hour.type' = 'integer',
  'projection.hour.range' = '0,23',
  'projection.hour.digits' = '2',
  'storage.location.template' = 's3://my-llm-traces/openrouter-traces/lake/dt=${dt}/hour=${hour}/'
);

-- One row per LLM call: of the versions of a call (trace_id, span_id), the one completed last by its
-- GenAI events, else the one received last (otel_s3_bridge/lake/schema.py's NEWEST_FIRST; the bridge's
-- report, query and compact keep the same). Every version of a call is in its span start's partition,
-- so ranking within dt and hour is the same and lets a filter on dt (and hour) prune partitions.
-- (A view is Trino SQL: identifiers in double quotes, not the DDL's backticks.)
CREATE OR REPLACE VIEW llm_calls AS
SELECT "schema", "trace_id", "otel_trace_id", "span_id", "parent_span_id", "generation_id", "name",
       "span_name", "timestamp", "start_time_unix_nano", "end_time_unix_nano", "duration_ms", "model",
       "requested_model", "provider", "model_author", "input_tokens", "output_tokens", "total_tokens",
       "cached_tokens", "cache_write_tokens", "reasoning_tokens", "input_cost", "output_cost", "cost",
       "session_id", "customer_id", "api_key_name", "finish_reason", "native_finish_reason", "time_to_first_token_ms",
       "status", "status_message", "prompt", "completion", "metadata", "observations", "events", "links",
       "attributes", "resource", "scope_name", "scope_version", "source", "ingest_received_at", "ingest_key_name",
       "ingest_transport", "cost_source", "ingest_completed_at", "content_policy", "dt", "hour"
FROM (
  SELECT *, row_number() OVER (PARTITION BY dt, hour, trace_id, span_id
                               ORDER BY ingest_completed_at DESC NULLS LAST, ingest_received_at DESC NULLS LAST)
            AS version_rank
  FROM llm_traces
)
WHERE version_rank = 1;

-- Spend per model and day, and how much of it is estimated from tokens:
-- SELECT dt, model, count(*) AS calls, sum(cost) AS cost,
--        sum(cost) FILTER (WHERE cost_source = 'estimated') AS estimated
-- FROM llm_calls WHERE dt >= '2026-11-01' GROUP BY 1, 2 ORDER BY 1, 4 DESC;

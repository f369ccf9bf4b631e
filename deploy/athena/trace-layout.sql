-- Athena (or Glue) table over the trace layout, OpenRouter's own: one JSON record per object,
-- {prefix}/{date}/{traceId}-{timestamp}.json (the default --path-template {prefix}/{date}).
-- Replace my-llm-traces (bucket) and openrouter-traces (--prefix). Partition projection on the date
-- folder. Every object is a request for Athena: for more than a few days, compact them
-- (`otel-s3-bridge compact --date D`) and query batch-layout.sql's table instead.
-- The columns are the record's top-level fields (proto/otel_s3_bridge/v1/trace_record.proto;
-- tests/test_athena_ddl.py keeps them equal). The open-ended parts are declared string, read as their
-- JSON text by the OpenX JSON SerDe; timestamps are RFC 3339 text: from_iso8601_timestamp(timestamp).
-- This DDL was not run here (no AWS account): the tests check its columns, not Athena's answer.
CREATE EXTERNAL TABLE IF NOT EXISTS llm_traces_json (
  `schema` string,
  `trace_id` string,
  `otel_trace_id` string,
  `span_id` string,
  `parent_span_id` string,
  `generation_id` string,
  `name` string,
  `span_name` string,
  `timestamp` string,
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
  `cost_source` string,
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
  `content_policy` string,
  `metadata` string,
  `observations` string,
  `events` string,
  `links` string,
  `attributes` string,
  `resource` string,
  `scope` struct<name:string,version:string>,
  `source` string,
  `ingest` struct<received_at:string,key_name:string,transport:string,completed_at:string>
)
PARTITIONED BY (`dt` string)
ROW FORMAT SERDE 'org.openx.data.jsonserde.JsonSerDe'
WITH SERDEPROPERTIES ('ignore.malformed.json' = 'true')
LOCATION 's3://my-llm-traces/openrouter-traces/'
TBLPROPERTIES (
  'projection.enabled' = 'true',
  'projection.dt.type' = 'date',
  'projection.dt.format' = 'yyyy-MM-dd',
  'projection.dt.range' = '2025-01-01,NOW',
  'projection.dt.interval' = '1',
  'projection.dt.interval.unit' = 'DAYS',
  'storage.location.template' = 's3://my-llm-traces/openrouter-traces/${dt}/'
);

-- SELECT dt, model, count(*) AS calls, sum(cost) AS cost FROM llm_traces_json
-- WHERE dt = '2026-12-01' GROUP BY 1, 2;

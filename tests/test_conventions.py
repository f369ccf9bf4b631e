"""Golden tests: one hand-built OTLP/JSON export request per LLM span convention (from each
convention's documentation) and the exact records it must decode to, field by field. For the
OpenTelemetry GenAI, OpenInference and OpenLLMetry conventions the same spans are also produced by
the OpenTelemetry SDK with the attribute names of each convention's own package, and must decode
to the same records."""

from __future__ import annotations

import pathlib

import orjson
import pytest
from openinference.semconv.trace import MessageAttributes, MessageContentAttributes, SpanAttributes, ToolCallAttributes
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as GenAI
from opentelemetry.semconv_ai import SpanAttributes as Traceloop
from opentelemetry.trace import SpanKind, set_span_in_context

from conftest import CAPTURES, capture_lines
from otel_s3_bridge.decode.records import decode
from otel_s3_bridge.decode.otlp import parse_json, parse_protobuf
from otel_s3_bridge.lake.record import RECORD_FIELDS, SOURCES

CONVENTIONS = pathlib.Path(__file__).parent / "data" / "conventions"
NAMES = sorted(path.name.removesuffix(".request.json") for path in CONVENTIONS.glob("*.request.json"))
RECEIVED_AT = 1795000000000000000
T0 = 1790000000000000000


def _decode(spans, **options) -> list[dict]:
    records = decode(spans, key_name="golden", transport="http/json", received_at_unix_nano=RECEIVED_AT,
                     **options).records
    return orjson.loads(orjson.dumps(records))  # as stored: JSON types


def _expected(name: str) -> list[dict]:
    return orjson.loads((CONVENTIONS / f"{name}.expected.json").read_bytes())


def _assert_records(actual: list[dict], expected: list[dict]) -> None:
    assert len(actual) == len(expected)
    for got, want in zip(actual, expected):
        assert tuple(want) == RECORD_FIELDS
        for name in RECORD_FIELDS:
            assert got[name] == want[name], f"field {name}"


@pytest.mark.parametrize("name", NAMES)
def test_golden_request_decodes_to_the_expected_records(name):
    request = (CONVENTIONS / f"{name}.request.json").read_bytes()
    _assert_records(_decode(parse_json(request).spans, non_llm_spans="keep"), _expected(name))


def test_every_source_has_a_golden_fixture():
    sources = {record["source"] for name in NAMES for record in _expected(name)}
    assert sources == set(SOURCES)


def test_non_llm_spans_can_be_dropped_and_are_counted():
    spans = parse_json((CONVENTIONS / "otlp.request.json").read_bytes()).spans
    result = decode(spans, key_name=None, transport="http/json", received_at_unix_nano=RECEIVED_AT,
                    non_llm_spans="drop")
    assert result.records == [] and result.dropped_spans == 2
    llm = parse_json((CONVENTIONS / "gen_ai.request.json").read_bytes()).spans
    kept = decode(llm, key_name=None, transport="http/json", received_at_unix_nano=RECEIVED_AT,
                  non_llm_spans="drop")
    assert len(kept.records) == 1 and kept.dropped_spans == 0  # observations of an LLM trace stay


# --- the OpenRouter captures: no attribute left unmapped by mistake ---------------------------------

# OpenRouter attributes that no record field stands for: kept, on purpose, in `attributes`.
OPENROUTER_UNMAPPED = {
    "span.type", "span.level", "span.metadata.device_id", "span.metadata.provider_responses",
    "gen_ai.operation.name", "gen_ai.usage.input_tokens.cache_write_5m", "gen_ai.usage.input_tokens.cache_write_1h",
    "gen_ai.usage.output_tokens.image", "gen_ai.completion.rawRequest", "gen_ai.completion.tools",
    "trace.metadata.openrouter.source", "trace.metadata.openrouter.entity_id",
    "trace.metadata.openrouter.creator_user_id", "trace.metadata.openrouter.user_id",
    "trace.metadata.openrouter.router_latency_ms", "trace.metadata.openrouter.provider_request_ms",
    "trace.metadata.openrouter.provider_headers_ms", "trace.metadata.openrouter.provider_body_end_ms",
    "trace.metadata.openrouter.provider_time_to_first_token_ms", "trace.metadata.openrouter.inter_token_latency_ms",
    "trace.metadata.openrouter.provider_slug", "trace.metadata.openrouter.input_unit_price",
    "trace.metadata.openrouter.output_unit_price",
}
CAPTURE_LINES = [line for name in ("claude-code.ndjson", "codex.ndjson", "pi.ndjson") for line in capture_lines(name)]
CAPTURE_LINES.append((CAPTURES / "codex-error-span.json").read_bytes())


@pytest.mark.parametrize("line", CAPTURE_LINES, ids=range(len(CAPTURE_LINES)))
def test_captures_leave_only_known_attributes_unmapped(line):
    [record] = _decode(parse_json(line).spans)
    assert set(record["attributes"]) <= OPENROUTER_UNMAPPED
    assert record["source"] == "openrouter" and record["generation_id"].startswith("gen-")
    assert record["model"] and record["provider"] and record["api_key_name"] == "fixture key"


# --- the same spans from the OpenTelemetry SDK and each convention's attribute package ---------------

class FixedIds(IdGenerator):
    def __init__(self, trace_id: str, span_ids: list[str]) -> None:
        self._trace_id = int(trace_id, 16)
        self._span_ids = [int(span_id, 16) for span_id in span_ids]

    def generate_trace_id(self) -> int:
        return self._trace_id

    def generate_span_id(self) -> int:
        return self._span_ids.pop(0)


def _sdk_spans(resource: dict, scope: str, trace_id: str, plan: list[tuple]) -> list:
    """plan: (span id, parent index or None, name, kind, start offset ns, duration ns, attributes)."""
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource(resource), id_generator=FixedIds(trace_id, [p[0] for p in plan]))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer(scope)
    started = []
    for _, parent, name, kind, offset, _, attributes in plan:
        context = set_span_in_context(started[parent]) if parent is not None else None
        started.append(tracer.start_span(name, context=context, kind=kind, attributes=attributes,
                                         start_time=T0 + offset))
    for span, (_, _, _, _, offset, duration, _) in zip(started, plan):
        span.end(end_time=T0 + offset + duration)
    finished = sorted(memory.get_finished_spans(), key=lambda span: span.start_time)
    return parse_protobuf(encode_spans(finished).SerializeToString()).spans


def _json(value) -> str:
    return orjson.dumps(value).decode()


def test_opentelemetry_genai_semconv_package():
    chat = {
        GenAI.GEN_AI_OPERATION_NAME: "chat",
        GenAI.GEN_AI_PROVIDER_NAME: "aws.bedrock",
        GenAI.GEN_AI_REQUEST_MODEL: "anthropic.claude-sonnet-4",
        GenAI.GEN_AI_RESPONSE_MODEL: "anthropic.claude-sonnet-4-20250514-v1:0",
        GenAI.GEN_AI_RESPONSE_ID: "msg_bdrk_01",
        GenAI.GEN_AI_REQUEST_TEMPERATURE: 0.3,
        GenAI.GEN_AI_REQUEST_MAX_TOKENS: 1024,
        GenAI.GEN_AI_USAGE_INPUT_TOKENS: 2100,
        GenAI.GEN_AI_USAGE_OUTPUT_TOKENS: 180,
        GenAI.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS: 1800,
        GenAI.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS: 200,
        GenAI.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS: 60,
        GenAI.GEN_AI_RESPONSE_FINISH_REASONS: ("tool_call",),
        GenAI.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK: 0.42,
        GenAI.GEN_AI_CONVERSATION_ID: "conv_5b8a",
        "user.id": "traveller-3",
        GenAI.GEN_AI_SYSTEM_INSTRUCTIONS: _json([{"type": "text", "content": "You plan trips."}]),
        GenAI.GEN_AI_INPUT_MESSAGES: _json([{"role": "user", "parts": [{"type": "text",
                                                                        "content": "Book me a train to Lyon."}]}]),
        GenAI.GEN_AI_OUTPUT_MESSAGES: _json([{"role": "assistant", "finish_reason": "tool_call", "parts": [
            {"type": "reasoning", "content": "Need the timetable."},
            {"type": "text", "content": "Checking trains."},
            {"type": "tool_call", "id": "call_9", "name": "search_trains", "arguments": {"to": "Lyon"}}]}]),
    }
    spans = _sdk_spans({"service.name": "travel-agent"}, "travel.agent", "5b8aa5a2d2c872e8321cf37308d69df2", [
        ("051581bf3cb55c13", None, "invoke_agent planner", SpanKind.INTERNAL, 0, 3_000_000_000,
         {GenAI.GEN_AI_OPERATION_NAME: "invoke_agent", GenAI.GEN_AI_AGENT_NAME: "planner"}),
        ("6b3a1e2f4c5d6e7f", 0, "chat claude-sonnet-4", SpanKind.CLIENT, 100_000_000, 2_000_000_000, chat),
        ("7c4b2f3a5d6e7f80", 0, "execute_tool search_trains", SpanKind.INTERNAL, 2_200_000_000, 300_000_000,
         {GenAI.GEN_AI_OPERATION_NAME: "execute_tool", GenAI.GEN_AI_TOOL_NAME: "search_trains",
          GenAI.GEN_AI_TOOL_CALL_ID: "call_9"}),
    ])
    _assert_records(_decode(spans), _expected("gen_ai"))


def _oi_message(index: int, direction: str, **fields) -> dict:
    prefix = f"{direction}.{index}."
    return {prefix + key: value for key, value in fields.items()}


def test_openinference_semconv_package():
    inputs, outputs = SpanAttributes.LLM_INPUT_MESSAGES, SpanAttributes.LLM_OUTPUT_MESSAGES
    role, content = MessageAttributes.MESSAGE_ROLE, MessageAttributes.MESSAGE_CONTENT
    part = f"{MessageAttributes.MESSAGE_CONTENTS}.0."
    call = f"{MessageAttributes.MESSAGE_TOOL_CALLS}.0."
    llm = {
        SpanAttributes.OPENINFERENCE_SPAN_KIND: "LLM",
        SpanAttributes.LLM_MODEL_NAME: "gpt-4.1-mini-2025-04-14",
        SpanAttributes.LLM_PROVIDER: "openai",
        SpanAttributes.LLM_SYSTEM: "openai",
        SpanAttributes.LLM_INVOCATION_PARAMETERS: _json({"temperature": 0}),
        **_oi_message(0, inputs, **{role: "system", content: "Use the context."}),
        **_oi_message(1, inputs, **{role: "user", part + MessageContentAttributes.MESSAGE_CONTENT_TYPE: "text",
                                    part + MessageContentAttributes.MESSAGE_CONTENT_TEXT: "What is OTLP?"}),
        **_oi_message(2, inputs, **{role: "assistant", call + ToolCallAttributes.TOOL_CALL_ID: "call_a",
                                    call + ToolCallAttributes.TOOL_CALL_FUNCTION_NAME: "search_docs",
                                    call + ToolCallAttributes.TOOL_CALL_FUNCTION_ARGUMENTS_JSON: _json({"q": "OTLP"})}),
        **_oi_message(3, inputs, **{role: "tool", MessageAttributes.MESSAGE_TOOL_CALL_ID: "call_a",
                                    content: "OTLP is the OpenTelemetry protocol."}),
        **_oi_message(0, outputs, **{role: "assistant", content: "OTLP is OpenTelemetry's wire protocol."}),
        SpanAttributes.LLM_TOKEN_COUNT_PROMPT: 410,
        SpanAttributes.LLM_TOKEN_COUNT_COMPLETION: 12,
        SpanAttributes.LLM_TOKEN_COUNT_TOTAL: 422,
        SpanAttributes.LLM_TOKEN_COUNT_PROMPT_DETAILS_CACHE_READ: 256,
        SpanAttributes.LLM_TOKEN_COUNT_COMPLETION_DETAILS_REASONING: 0,
        SpanAttributes.LLM_COST_PROMPT: 0.000164,
        SpanAttributes.LLM_COST_COMPLETION: 0.0000192,
        SpanAttributes.LLM_COST_TOTAL: 0.0001832,
        SpanAttributes.LLM_FINISH_REASON: "stop",
        SpanAttributes.INPUT_VALUE: _json({"messages": [{"role": "user", "content": "What is OTLP?"}]}),
        SpanAttributes.INPUT_MIME_TYPE: "application/json",
        SpanAttributes.OUTPUT_VALUE: "OTLP is OpenTelemetry's wire protocol.",
        SpanAttributes.OUTPUT_MIME_TYPE: "text/plain",
        SpanAttributes.SESSION_ID: "phoenix-session-1",
        SpanAttributes.USER_ID: "analyst-8",
        SpanAttributes.METADATA: _json({"experiment": "rag-v2", "tenant": "acme"}),
        SpanAttributes.TAG_TAGS: ("rag", "docs"),
    }
    spans = _sdk_spans({"service.name": "rag-app"}, "openinference.instrumentation.openai",
                       "c0ffee00c0ffee00c0ffee00c0ffee00", [
        ("0c0c0c0c0c0c0c0c", None, "RunnableSequence", SpanKind.INTERNAL, 0, 2_000_000_000,
         {SpanAttributes.OPENINFERENCE_SPAN_KIND: "CHAIN", SpanAttributes.INPUT_VALUE: "What is OTLP?"}),
        ("1d1d1d1d1d1d1d1d", 0, "ChatCompletion", SpanKind.INTERNAL, 500_000_000, 1_200_000_000, llm),
    ])
    _assert_records(_decode(spans), _expected("openinference"))


def test_openllmetry_semconv_package():
    prompt, completion = Traceloop.LLM_PROMPTS, Traceloop.LLM_COMPLETIONS
    attributes = {
        "llm.request.type": "chat",
        "gen_ai.system": "openai",
        "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.response.model": "gpt-4o-mini-2024-07-18",
        "gen_ai.response.id": "chatcmpl-tl-1",
        f"{prompt}.0.role": "system", f"{prompt}.0.content": "You handle invoices.",
        f"{prompt}.1.role": "user", f"{prompt}.1.content": "Resend invoice 12.",
        f"{completion}.0.role": "assistant", f"{completion}.0.content": "",
        f"{completion}.0.finish_reason": "tool_calls",
        f"{completion}.0.tool_calls.0.id": "call_inv",
        f"{completion}.0.tool_calls.0.name": "resend_invoice",
        f"{completion}.0.tool_calls.0.arguments": _json({"invoice": 12}),
        Traceloop.LLM_USAGE_PROMPT_TOKENS: 88,
        Traceloop.LLM_USAGE_COMPLETION_TOKENS: 17,
        Traceloop.LLM_USAGE_TOTAL_TOKENS: 105,
        Traceloop.LLM_USAGE_CACHE_READ_INPUT_TOKENS: 0,
        f"{Traceloop.TRACELOOP_ASSOCIATION_PROPERTIES}.customer_tier": "gold",
        f"{Traceloop.TRACELOOP_ASSOCIATION_PROPERTIES}.ticket": "T-9",
        "traceloop.workflow.name": "billing",
    }
    spans = _sdk_spans({"service.name": "billing-bot"}, "opentelemetry.instrumentation.openai.v1",
                       "7e1d0c9b8a7f6e5d7e1d0c9b8a7f6e5d", [
        ("5e5e5e5e5e5e5e5e", None, "openai.chat", SpanKind.CLIENT, 0, 700_000_000, attributes),
    ])
    _assert_records(_decode(spans), _expected("openllmetry"))

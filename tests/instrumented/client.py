"""An app instrumented by one real library, exporting OTLP to the bridge: the official `openai`
client against the local fake server (`fake_openai.py`), three calls (a chat with a system
prompt, a streamed chat, a call to a missing model), set up the way that library's docs say.

Run in its own process (each library sets global providers):
  python client.py LIBRARY MODE --fake URL --bridge URL --token TOKEN
LIBRARY: openai-v2 | genai-util | openinference | openllmetry | langfuse
MODE: simple (every span exported as it ends) | batch (one export at shutdown)
Prints one JSON line: the trace ids of the calls, in order.
"""

from __future__ import annotations

import argparse
import json
import os

QUESTION = "What is the capital of France?"
SYSTEM = "You are terse."
SESSION_ID, USER_ID = "session-7f3a", "customer-42"
MISSING_MODEL = "no-such-model"


def _otlp_providers(bridge: str, token: str, mode: str, *, logs: bool):
    """SDK tracer (and logger) providers exporting OTLP/HTTP protobuf to the bridge."""
    from opentelemetry import _logs, trace
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor, SimpleLogRecordProcessor
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    headers = {"Authorization": f"Bearer {token}"}
    resource = Resource.create({"service.name": "instrumented-app"})
    tracer_provider = TracerProvider(resource=resource)
    spans = OTLPSpanExporter(endpoint=f"{bridge}/v1/traces", headers=headers)
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans) if mode == "simple" else
                                       BatchSpanProcessor(spans, schedule_delay_millis=600_000))
    trace.set_tracer_provider(tracer_provider)
    providers = [tracer_provider]
    if logs:
        logger_provider = LoggerProvider(resource=resource)
        records = OTLPLogExporter(endpoint=f"{bridge}/v1/logs", headers=headers)
        logger_provider.add_log_record_processor(SimpleLogRecordProcessor(records) if mode == "simple" else
                                                 BatchLogRecordProcessor(records, schedule_delay_millis=600_000))
        _logs.set_logger_provider(logger_provider)
        providers.append(logger_provider)
    return providers


def _calls(client, around=lambda: _nothing()) -> list[str]:
    """The three calls, each in its own trace; returns their trace ids."""
    trace_ids = []
    for call in ("chat", "stream", "missing"):
        with around():
            trace_ids.append(_one_call(client, call))
    return trace_ids


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _one_call(client, call: str) -> str:
    """One call; the trace id is read back from the response's own span context where the
    library made one, else from the id of the call's span captured by `_TraceIds`."""
    import openai

    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": f"{QUESTION} ({call})"}]
    try:
        if call == "chat":
            client.chat.completions.create(model="gpt-4o-mini", messages=messages, temperature=0.2)
        elif call == "stream":
            for _ in client.chat.completions.create(model="gpt-4o-mini", messages=messages, stream=True,
                                                    stream_options={"include_usage": True}):
                pass
        else:
            client.chat.completions.create(model=MISSING_MODEL, messages=messages)
    except openai.NotFoundError:
        pass
    return _TraceIds.take()


class _TraceIds:
    """A span processor that remembers the trace id of the last span ended (the call's)."""

    last: str | None = None

    @classmethod
    def processor(cls):
        from opentelemetry.sdk.trace import SpanProcessor

        class Remember(SpanProcessor):
            def on_end(self, span):
                cls.last = format(span.context.trace_id, "032x")

        return Remember()

    @classmethod
    def take(cls) -> str:
        found, cls.last = cls.last, None
        return found


class _GenAIUtilClient:
    """The `openai` client's chat completions, instrumented with `opentelemetry-util-genai`'s
    TelemetryHandler (as an instrumentation built on it does)."""

    def __init__(self, client, providers) -> None:
        from opentelemetry.util.genai.handler import TelemetryHandler

        self._client = client
        self._handler = TelemetryHandler(tracer_provider=providers[0], logger_provider=providers[1])
        self.chat = self
        self.completions = self

    def create(self, *, model: str, messages: list[dict], stream: bool = False, **options):
        from opentelemetry.util.genai.types import InputMessage, OutputMessage, TextPart

        invocation = self._handler.inference("openai", request_model=model, operation_name="chat")
        with invocation:
            invocation.system_instruction = [TextPart(content=m["content"]) for m in messages if m["role"] == "system"]
            invocation.input_messages = [InputMessage(role=m["role"], parts=[TextPart(content=m["content"])])
                                         for m in messages if m["role"] != "system"]
            response = self._client.chat.completions.create(model=model, messages=messages, stream=stream, **options)
            if stream:
                chunks = list(response)
                text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
                usage, served, response_id = chunks[-1].usage, chunks[-1].model, chunks[-1].id
            else:
                text, usage = response.choices[0].message.content, response.usage
                served, response_id = response.model, response.id
            invocation.response_model_name, invocation.response_id = served, response_id
            invocation.input_tokens, invocation.output_tokens = usage.prompt_tokens, usage.completion_tokens
            invocation.cache_read_input_tokens = usage.prompt_tokens_details.cached_tokens
            invocation.thinking_tokens = usage.completion_tokens_details.reasoning_tokens
            invocation.finish_reasons = ["stop"]
            invocation.output_messages = [OutputMessage(role="assistant", parts=[TextPart(content=text)],
                                                        finish_reason="stop")]
        return iter(()) if stream else response


def run(library: str, mode: str, fake: str, bridge: str, token: str) -> list[str]:
    import openai

    if library == "openai-v2":
        from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor

        # content captured, sent as GenAI events (OTLP log records), as the instrumentation's docs say
        os.environ["OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"] = "true"
        providers = _otlp_providers(bridge, token, mode, logs=True)
        providers[0].add_span_processor(_TraceIds.processor())
        OpenAIInstrumentor().instrument()
        trace_ids = _calls(openai.OpenAI(base_url=fake, api_key="sk-fake"))
    elif library == "genai-util":
        # The newer shape: OpenTelemetry's GenAI utility (what openai-v2 moves to) with content as
        # one `gen_ai.client.inference.operation.details` event, opted in as its docs say.
        os.environ["OTEL_SEMCONV_STABILITY_OPT_IN"] = "gen_ai_latest_experimental"
        os.environ["OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"] = "EVENT_ONLY"
        providers = _otlp_providers(bridge, token, mode, logs=True)
        providers[0].add_span_processor(_TraceIds.processor())
        trace_ids = _calls(_GenAIUtilClient(openai.OpenAI(base_url=fake, api_key="sk-fake"), providers))
    elif library == "openinference":
        from openinference.instrumentation import using_attributes
        from openinference.instrumentation.openai import OpenAIInstrumentor

        providers = _otlp_providers(bridge, token, mode, logs=False)
        providers[0].add_span_processor(_TraceIds.processor())
        OpenAIInstrumentor().instrument(tracer_provider=providers[0])
        trace_ids = _calls(openai.OpenAI(base_url=fake, api_key="sk-fake"),
                           lambda: using_attributes(session_id=SESSION_ID, user_id=USER_ID))
    elif library == "openllmetry":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
        from traceloop.sdk import Traceloop

        exporter = OTLPSpanExporter(endpoint=f"{bridge}/v1/traces", headers={"Authorization": f"Bearer {token}"})
        processor = (SimpleSpanProcessor(exporter) if mode == "simple"
                     else BatchSpanProcessor(exporter, schedule_delay_millis=600_000))
        from traceloop.sdk.instruments import Instruments

        Traceloop.init(app_name="instrumented-app", processor=[processor, _TraceIds.processor()],
                       instruments={Instruments.OPENAI},
                       telemetry_enabled=False, should_enrich_metrics=False)
        Traceloop.set_association_properties({"session_id": SESSION_ID, "user_id": USER_ID})
        trace_ids = _calls(openai.OpenAI(base_url=fake, api_key="sk-fake"))
        from opentelemetry import trace
        providers = [trace.get_tracer_provider()]
    elif library == "langfuse":
        # Langfuse's own exporter, pointed at the bridge by one URL: it posts to
        # {host}/api/public/otel/v1/traces with Basic auth (public key = the bridge key's name).
        os.environ.update(LANGFUSE_PUBLIC_KEY="sdk", LANGFUSE_SECRET_KEY=token, LANGFUSE_BASE_URL=bridge,
                          LANGFUSE_FLUSH_AT="1" if mode == "simple" else "1000", LANGFUSE_FLUSH_INTERVAL="600")
        from langfuse import get_client, propagate_attributes
        from langfuse.openai import OpenAI

        langfuse = get_client()
        from opentelemetry import trace
        trace.get_tracer_provider().add_span_processor(_TraceIds.processor())
        trace_ids = _calls(OpenAI(base_url=fake, api_key="sk-fake"),
                           lambda: propagate_attributes(session_id=SESSION_ID, user_id=USER_ID))
        langfuse.shutdown()
        providers = []
    else:
        raise SystemExit(f"unknown library {library}")
    for provider in providers:
        provider.shutdown()
    return trace_ids


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("library")
    parser.add_argument("mode", choices=("simple", "batch"))
    parser.add_argument("--fake", required=True)
    parser.add_argument("--bridge", required=True)
    parser.add_argument("--token", required=True)
    args = parser.parse_args()
    print(json.dumps(run(args.library, args.mode, args.fake, args.bridge, args.token)))


if __name__ == "__main__":
    main()

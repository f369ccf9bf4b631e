// An app using the Vercel AI SDK (`ai` with `@ai-sdk/openai`) against the local fake OpenAI
// server, its telemetry exported by the OpenTelemetry JS SDK as OTLP/HTTP JSON to the bridge.
// Usage: node vercel_ai.mjs simple|batch FAKE_BASE_URL BRIDGE_BASE_URL TOKEN
// simple: every span exported as it ends (the call's `ai.generateText.doGenerate` span reaches
// the bridge in an export before its `ai.generateText` wrapper); batch: one export at shutdown.
// Prints one JSON line: the trace ids of the three calls (chat, stream, missing model).
import { createOpenAI } from "@ai-sdk/openai";
import { generateText, streamText } from "ai";
import { OTLPTraceExporter } from "@opentelemetry/exporter-trace-otlp-http";
import { resourceFromAttributes } from "@opentelemetry/resources";
import { BatchSpanProcessor, SimpleSpanProcessor } from "@opentelemetry/sdk-trace-base";
import { NodeTracerProvider } from "@opentelemetry/sdk-trace-node";

const [mode, fake, bridge, token] = process.argv.slice(2);
const QUESTION = "What is the capital of France?";
const exporter = new OTLPTraceExporter({ url: `${bridge}/v1/traces`, headers: { Authorization: `Bearer ${token}` } });
let lastTraceId = null;
const remember = { onStart() {}, onEnd(span) { lastTraceId = span.spanContext().traceId; },
                   forceFlush: async () => {}, shutdown: async () => {} };
const provider = new NodeTracerProvider({
  resource: resourceFromAttributes({ "service.name": "vercel-ai-app" }),
  spanProcessors: [mode === "simple" ? new SimpleSpanProcessor(exporter)
                                     : new BatchSpanProcessor(exporter, { scheduledDelayMillis: 600000 }), remember],
});
provider.register();

const openai = createOpenAI({ baseURL: fake, apiKey: "sk-fake" });
const telemetry = { isEnabled: true, functionId: "capital-question",
                    metadata: { sessionId: "session-7f3a", userId: "customer-42" } };
const messages = (call) => [{ role: "system", content: "You are terse." },
                            { role: "user", content: `${QUESTION} (${call})` }];
const traceIds = [];

await generateText({ model: openai.chat("gpt-4o-mini"), messages: messages("chat"), temperature: 0.2,
                     experimental_telemetry: telemetry });
traceIds.push(lastTraceId);
const streamed = streamText({ model: openai.chat("gpt-4o-mini"), messages: messages("stream"),
                              experimental_telemetry: telemetry });
for await (const _ of streamed.textStream) { /* read it all */ }
await streamed.usage;
traceIds.push(lastTraceId);
try {
  await generateText({ model: openai.chat("no-such-model"), messages: messages("missing"), maxRetries: 0,
                       experimental_telemetry: telemetry });
} catch { /* the model does not exist: the span records the error */ }
traceIds.push(lastTraceId);
await provider.shutdown();
console.log(JSON.stringify(traceIds));

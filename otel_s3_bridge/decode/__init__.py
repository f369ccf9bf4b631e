"""Decode: an export's bytes -> LLM trace records, keyed and encoded.

Inflation (`compression`), the OTLP wire formats for traces (`otlp`: `otlp_json` and
`otlp_protobuf`, both to the one form of `spans`) and for logs (`otlp_logs`), the
span conventions (`conventions/`, one module per convention) and message shapes (`messages`),
the record builder (`records`), `prepare` (the one pure path: bytes -> objects to store, run in
the loop or in a decode process from `pool`), and the join of GenAI event logs to their span
(`join`, a store on disk shared by the workers).

Receives raw request bytes and an `ExportContext`; hands back a `PreparedExport`: object keys and
JSON bodies (priced by `enrich`), halves for the join store, usage for the metrics. Must not open
sockets or touch the spool or the sink; apart from `join`'s store and `pool`'s processes it does no
I/O and reads no clock.
"""

"""Receive: from bytes on a socket to an acknowledged export.

The OTLP/HTTP and OTLP/gRPC receivers (`http`, `grpc`), their connection bounds (`connections`),
TLS (`tls`), key checks on headers before any body byte is read (`auth`), and `ingest`, the one
consume path every receiver calls: prepare (decode), keep join halves, spool (deliver), answer
(`responses`: export responses and `google.rpc.Status` bodies). Also the metrics endpoint
(`metrics_server`), which shares the connection bounds.

Receives bytes and headers from the network; hands an export's bytes to `decode` and its prepared
objects to `deliver`'s spool, and answers the client once they are durable. Must not parse LLM
conventions, decide object keys or talk to S3: those are the stages below.
"""

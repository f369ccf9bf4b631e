"""otel-s3-bridge: an OTLP receiver that lands LLM trace records in your own S3-compatible bucket."""

__version__ = "0.1.0"

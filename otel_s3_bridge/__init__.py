"""otel-s3-bridge: an OTLP receiver that lands LLM trace records in your own S3-compatible bucket."""

from .compiled import choose_build

__version__ = "0.1.0"
# Before any module of the decode core is imported: its compiled build, if built from these sources.
BUILD = choose_build()

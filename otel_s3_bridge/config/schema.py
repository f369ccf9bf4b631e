"""The one configuration object: a frozen dataclass of every setting, each field carrying its
parser, its help text, its heading in `--help` and the commands that use it.

Every CLI flag and `OTEL_S3_BRIDGE_*` variable is derived from these fields, never listed by
hand (`config.load`). This module must not read files, the environment or flags.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..govern.policy import CONTENT_MODES, IDENTITY_MODES, KeyPolicy
from ..lake.keys import KeyTemplate, compile_template, validate_prefix
from ..lake.object_controls import SSE_MODES, ObjectControls, parse_storage_class, parse_tags
from . import parsers
from .tokens import NamedToken

SERVE = ("serve",)
CHECK = ("serve", "check")
READ = ("serve", "check", "report", "query", "compact")  # where the records lie, and how to reach it
NAMING = (*READ, "decode", "send-test-trace")  # what objects are called
COMMANDS = ("serve", "check", "health", "report", "query", "compact", "spool", "decode", "send-test-trace")

# Headings of `--help`, in order; the advanced ones are shown by `--help-all` only.
LISTEN, KEYS, PRIVACY, STORAGE, LAYOUT, DELIVERY, TLS, LOGGING = (
    "where it listens", "keys (Bearer tokens) and their namespaces",
    "privacy and tenancy: every key's policy unless its [keys.NAME] table says otherwise",
    "where records are stored", "what is stored, and how", "delivery", "TLS", "logging")
TUNING, PROCESSES, LIMITS, JOIN, S3_CLIENT = (
    "batch files, uploads, records", "processes", "limits on what clients may hold (memory, time, connections)",
    "joining spans and GenAI event logs sent apart", "the S3 client")
ADVANCED = (PRIVACY, TUNING, PROCESSES, LIMITS, JOIN, S3_CLIENT)


def _option(default: Any, help: str, parse: Callable[[str], Any] = parsers.text, *, group: str,
            commands: tuple[str, ...] = SERVE, flag: str | None = None, metavar: str | None = None,
            repeatable: bool = False) -> Any:
    metavar = metavar or "|".join(getattr(parse, "allowed", ())) or None
    return field(default=default, metadata={
        "help": help, "parse": parse, "group": group, "commands": commands, "flag": flag, "metavar": metavar,
        "repeatable": repeatable})


@dataclass(frozen=True)
class BridgeConfig:
    """Everything the bridge needs to run, validated. Field order is the order of `--help`."""

    host: str = _option("127.0.0.1", "bind address of both receivers", group=LISTEN, commands=("serve", "health"))
    http_port: int = _option(4318, "OTLP/HTTP port", parsers.integer(1, 65535), group=LISTEN,
                             commands=("serve", "health"), metavar="PORT")
    grpc_port: int = _option(4317, "OTLP/gRPC port; 0 disables gRPC", parsers.integer(0, 65535), group=LISTEN,
                             metavar="PORT")
    metrics_port: int = _option(9464, "/metrics, /healthz and /readyz port; 0 disables it",
                                parsers.integer(0, 65535), group=LISTEN, commands=("serve", "health"),
                                metavar="PORT")

    tokens: tuple[NamedToken, ...] = _option(
        (), "an accepted Bearer token and its name (repeatable)", parsers.tokens,
        group=KEYS, commands=CHECK, flag="--token", metavar="NAME=TOKEN", repeatable=True)
    token_file: str | None = _option(
        None, "'name=token' or 'name=sha256:<hex>' lines; re-read on change", parsers.optional_path, group=KEYS,
        commands=CHECK, metavar="FILE")
    key_prefixes: tuple[tuple[str, str], ...] = _option(
        (), "a key's own {prefix}: tenants never share one (repeatable)", parsers.key_prefixes, group=KEYS,
        commands=CHECK, flag="--key-prefix", metavar="NAME=PREFIX", repeatable=True)
    key_buckets: tuple[tuple[str, str], ...] = _option(
        (), "a key's own bucket (repeatable)", parsers.key_buckets, group=KEYS, commands=CHECK,
        flag="--key-bucket", metavar="NAME=BUCKET", repeatable=True)
    keys: tuple[KeyPolicy, ...] = _option(
        (), "per-key policies as JSON {\"NAME\": {\"content\": \"drop\", ...}}; in --config: [keys.NAME] tables of "
        "prefix, bucket, content, identities, sample, max_spans_per_second, max_bytes_per_second, s3_sse, "
        "s3_sse_kms_key_id, s3_storage_class, s3_tags", parsers.key_policies, group=KEYS, commands=CHECK,
        metavar="JSON")

    content: str = _option(
        "keep", "prompts and completions: keep, drop, hash (sha256:<hex>:<length>) or redact ([EMAIL], [PHONE], "
        "[CARD], [IBAN], [SSN], [IP], [SECRET] in place of what is found)", parsers.choice(*CONTENT_MODES),
        group=PRIVACY, commands=CHECK)
    redact_patterns: tuple[tuple[str, str], ...] = _option(
        (), "content = redact also replaces what this RE2 pattern matches by [LABEL] (repeatable; in the "
        "environment one per line)", parsers.redact_patterns, group=PRIVACY, commands=CHECK,
        flag="--redact-pattern", metavar="LABEL=REGEX", repeatable=True)
    redact_phone_region: str = _option(
        "US", "content = redact: the country (ISO 3166 code) of phone numbers written without +<country code>",
        parsers.phone_region, group=PRIVACY, commands=CHECK, metavar="CC")
    identities: str = _option(
        "keep", "customer_id, session_id and user attributes: keep, hmac (pseudonyms, --pseudonym-key-file) "
        "or drop", parsers.choice(*IDENTITY_MODES), group=PRIVACY, commands=CHECK)
    pseudonym_key_file: str | None = _option(
        None, "the secret (>= 16 bytes) of identities = hmac; re-read on change", parsers.optional_path,
        group=PRIVACY, commands=CHECK, metavar="FILE")
    sample: float = _option(1.0, "share of calls stored, decided per trace id; errored calls always stored",
                            parsers.number(0.0, 1.0, "a share"), group=PRIVACY, commands=CHECK, metavar="SHARE")
    max_spans_per_second: float = _option(
        0.0, "spans one key may send per second (0: unlimited); beyond, 429 + Retry-After",
        parsers.number(0.0, 1e12, "0: unlimited"), group=PRIVACY, commands=CHECK, metavar="N")
    max_bytes_per_second: float = _option(
        0.0, "request bytes one key may send per second (0: unlimited); beyond, 429 + Retry-After",
        parsers.number(0.0, 1e15, "0: unlimited"), group=PRIVACY, commands=CHECK, metavar="BYTES")

    bucket: str | None = _option(None, "S3 bucket; unset: the local directory --output-dir", parsers.bucket,
                                 group=STORAGE, commands=READ)
    endpoint_url: str | None = _option(
        None, "S3 endpoint of Cloudflare R2, MinIO, GCS interop, ...", parsers.endpoint_url, group=STORAGE,
        commands=READ, metavar="URL")
    region: str | None = _option(None, "S3 region (default: AWS_REGION, AWS_DEFAULT_REGION)",
                                 parsers.optional_text, group=STORAGE, commands=READ)
    output_dir: str = _option("./otel-s3-data", "local directory the objects go to without a bucket",
                              group=STORAGE, commands=READ, metavar="DIR")
    prefix: str = _option("openrouter-traces", "the {prefix} of the path template", validate_prefix,
                          group=STORAGE, commands=NAMING)
    path_template: KeyTemplate = _option(
        compile_template("{prefix}/{date}"),
        "an object's folder: {prefix} {date} {year} {month} {day} {hour} {keyName}", compile_template,
        group=STORAGE, commands=NAMING, metavar="TEMPLATE")

    layout: str = _option(
        "trace", "trace: a JSON object per call; batch: files under {prefix}/lake/",
        parsers.choice("trace", "batch", "both"), group=LAYOUT)
    batch_format: str = _option("parquet", "the batch layout's files: Parquet (zstd) or NDJSON (gzip)",
                                parsers.choice("parquet", "ndjson"), group=LAYOUT)
    prices: str | None = _option(
        None, "TOML of your own rates, for calls sent without a cost", parsers.optional_path, group=LAYOUT,
        commands=("serve", "decode"), metavar="FILE")
    non_llm_spans: str = _option(
        "drop", "spans of traces without an LLM call: drop, or keep as a record", parsers.choice("keep", "drop"),
        group=LAYOUT, commands=("serve", "decode"))

    ack: str = _option(
        "auto", "auto: answer once uploaded, or spooled if S3 is slow; spool; upload",
        parsers.choice("auto", "spool", "upload"), group=DELIVERY)
    spool_dir: str = _option("./otel-s3-data/spool", "the durable spool (one per bridge)", group=DELIVERY,
                             commands=("serve", "spool"), metavar="DIR")
    spool_max_bytes: int = _option(1024 ** 3, "spool budget; when reached, exports get 503 + Retry-After",
                                   parsers.integer(1024 * 1024, 2 ** 50), group=DELIVERY,
                                   commands=("serve", "spool"), metavar="BYTES")

    tls_cert_file: str | None = _option(
        None, "PEM certificate chain: HTTPS and gRPC over TLS; re-read on change", parsers.optional_path, group=TLS,
        commands=("serve", "health"), metavar="FILE")
    tls_key_file: str | None = _option(None, "PEM private key of --tls-cert-file", parsers.optional_path, group=TLS,
                                       metavar="FILE")
    tls_client_ca_file: str | None = _option(
        None, "PEM CA certificates of the clients allowed (mutual TLS)", parsers.optional_path, group=TLS,
        metavar="FILE")

    log_level: str = _option("info", "debug, info, warning or error",
                             parsers.choice("debug", "info", "warning", "error"), group=LOGGING, commands=CHECK,
                             metavar="LEVEL")
    log_format: str = _option("text", "text, or one JSON object per line", parsers.choice("text", "json"),
                              group=LOGGING, commands=CHECK)

    batch_max_records: int = _option(100_000, "records in one batch file at most", parsers.integer(1, 10_000_000),
                                     group=TUNING, metavar="N")
    batch_max_bytes: int = _option(
        64 * 1024 * 1024, "records (as JSON) in one batch file at most, in bytes; the file itself is smaller",
        parsers.integer(64 * 1024, 5 * 1024 ** 3), group=TUNING, metavar="BYTES")
    batch_max_age_seconds: int = _option(
        60, "a batch file is written at the latest this long after its first record was spooled",
        parsers.integer(1, 86_400), group=TUNING, metavar="SECONDS")
    ack_wait_seconds: float = _option(
        1.0, "--ack auto: how long the bucket has to take an export's objects before they are spooled instead",
        parsers.number(0.01, 60.0, "seconds"), group=TUNING, metavar="SECONDS")
    upload_concurrency: int = _option(16, "parallel uploads to the sink", parsers.integer(1, 1024), group=TUNING,
                                      metavar="N")
    upload_retry_max_seconds: int = _option(30, "longest wait between two retries of one upload",
                                            parsers.integer(1, 3600), group=TUNING, metavar="SECONDS")
    drain_seconds: int = _option(20, "on SIGTERM, time to upload what the spool holds before exiting",
                                 parsers.integer(0, 3600), group=TUNING, metavar="SECONDS")
    max_resource_bytes: int = _option(
        16 * 1024, "resource attributes copied into each record (JSON bytes); beyond, attributes are left out "
        "and counted", parsers.integer(256, 16 * 1024 * 1024), group=TUNING, metavar="BYTES")

    workers: int = _option(1, "processes sharing the ports (SO_REUSEPORT), each with its own spool "
                              "directory <spool-dir>/worker-<n>", parsers.integer(1, 64), group=PROCESSES, metavar="N")
    decode_processes: int = _option(2, "processes that decode large exports off the event loop (0: a thread)",
                                    parsers.integer(0, 64), group=PROCESSES, metavar="N")
    event_loop: str = _option(
        "auto", "auto: uvloop when it is installed (pip install 'otel-s3-bridge[uvloop]')",
        parsers.choice("auto", "asyncio", "uvloop"), group=PROCESSES)
    metrics_host: str | None = _option(None, "bind address of the metrics port (default: --host)",
                                       parsers.optional_text, group=PROCESSES, commands=("serve", "health"))

    max_request_bytes: int = _option(20 * 1024 * 1024, "largest accepted OTLP/HTTP body, also after decompression",
                                     parsers.integer(1024, 1024 * 1024 * 1024), group=LIMITS, metavar="BYTES")
    grpc_max_message_bytes: int = _option(
        4 * 1024 * 1024, "largest accepted OTLP/gRPC message, after decompression",
        parsers.integer(1024, 1024 * 1024 * 1024), group=LIMITS, metavar="BYTES")
    max_inflight_bytes: int = _option(
        128 * 1024 * 1024, "request bodies and the records decoded from them held in memory at once; one export "
        "beyond it gets 413, more than fit now get 503", parsers.integer(1024 * 1024, 2 ** 40), group=LIMITS,
        metavar="BYTES")
    max_decoded_bytes: int = _option(
        32 * 1024 * 1024, "JSON bytes of records one chunk of whole traces may decode to (larger exports "
        "are taken in chunks; at most --max-inflight-bytes); beyond, 413", parsers.integer(64 * 1024, 2 ** 40),
        group=LIMITS, metavar="BYTES")
    grpc_max_concurrent_rpcs: int = _option(
        64, "gRPC exports handled at once; more get UNAVAILABLE + RetryInfo", parsers.integer(1, 100_000),
        group=LIMITS, metavar="N")
    max_connections: int = _option(1024, "open connections per receiver; beyond, idle ones are closed first",
                                   parsers.integer(1, 1_000_000), group=LIMITS, metavar="N")
    header_timeout_seconds: float = _option(
        10.0, "time to send a request's headers (and the HTTP/2 handshake)", parsers.seconds, group=LIMITS,
        metavar="SECONDS")
    body_timeout_seconds: float = _option(
        30.0, "longest pause while a request body (or gRPC message) arrives", parsers.seconds, group=LIMITS,
        metavar="SECONDS")
    keepalive_timeout_seconds: float = _option(
        60.0, "how long an idle connection is kept open between requests", parsers.seconds, group=LIMITS,
        metavar="SECONDS")

    join_dir: str | None = _option(
        None, "where the halves of LLM calls sent apart (spans, GenAI event logs) wait for each other; "
        "default: SPOOL_DIR/join, shared by --workers", parsers.optional_path, group=JOIN, metavar="DIR")
    join_window_seconds: int = _option(
        600, "how long a stored record waits for its GenAI event logs (and they for it)",
        parsers.integer(1, 7 * 86400), group=JOIN, metavar="SECONDS")
    join_max_bytes: int = _option(
        256 * 1024 * 1024, "bytes the join store may hold; beyond, log exports get 503 + Retry-After until halves "
        "expire", parsers.integer(1024 * 1024, 2 ** 50), group=JOIN, metavar="BYTES")

    s3_addressing_style: str = _option(
        "auto", "S3 addressing: auto (path-style when --endpoint-url is set), path or virtual",
        parsers.choice("auto", "path", "virtual"), group=S3_CLIENT, commands=READ)
    s3_timeout_seconds: int = _option(30, "S3 connect and read timeout of one request", parsers.integer(1, 600),
                                      group=S3_CLIENT, commands=READ, metavar="SECONDS")
    s3_put_path: str = _option(
        "direct", "how objects are put: direct (signed and sent by the bridge: about a tenth of the CPU) or "
        "aiobotocore (put_object, for a store the direct path does not suit)",
        parsers.choice("direct", "aiobotocore"), group=S3_CLIENT, commands=CHECK)
    s3_sse: str = _option("off", "server-side encryption of every object: off, AES256 or aws:kms",
                          parsers.choice(*SSE_MODES), group=S3_CLIENT, commands=CHECK, metavar="|".join(SSE_MODES))
    s3_sse_kms_key_id: str | None = _option(None, "the KMS key of --s3-sse aws:kms (default: the bucket's)",
                                            parsers.optional_text, group=S3_CLIENT, commands=CHECK, metavar="KEY_ID")
    s3_storage_class: str | None = _option(
        None, "storage class of every object (STANDARD_IA, INTELLIGENT_TIERING, ...)", parse_storage_class,
        group=S3_CLIENT, commands=CHECK, metavar="CLASS")
    s3_tags: tuple[tuple[str, str], ...] = _option(
        (), "tags of every object, for lifecycle rules and cost reports; a value may hold {keyName} (the sending "
        "key) and {source} (the record's instrumentation)", parse_tags, group=S3_CLIENT,
        commands=CHECK, metavar="KEY=VALUE,...")
    s3_multipart_bytes: int = _option(
        16 * 1024 * 1024, "objects larger than this go up as multipart uploads, in parts of this size",
        parsers.integer(5 * 1024 * 1024, 5 * 1024 ** 3), group=S3_CLIENT, commands=CHECK, metavar="BYTES")

    def for_worker(self, index: int) -> BridgeConfig:
        """The configuration of worker `index` of `--workers N`: its own spool directory; worker 0
        serves the metrics of all."""
        return replace(self, spool_dir=str(Path(self.spool_dir) / f"worker-{index}"), join_dir=self.join_directory,
                       metrics_port=self.metrics_port if index == 0 else 0)

    @property
    def object_controls(self) -> ObjectControls:
        return ObjectControls(self.s3_sse, self.s3_sse_kms_key_id, self.s3_storage_class, self.s3_tags)

    @property
    def routed_buckets(self) -> dict[str, str]:
        """Each key's own bucket, from --key-bucket or its [keys.NAME] table."""
        buckets = dict(self.key_buckets)
        buckets.update((policy.name, policy.bucket) for policy in self.keys if policy.bucket)
        return buckets

    def object_controls_of(self, name: str | None) -> ObjectControls:
        """Key `name`'s object controls: its [keys.NAME] settings over the flags' (tags merged by name)."""
        own = next((policy for policy in self.keys if policy.name == name), None)
        if own is None:
            return self.object_controls
        return ObjectControls(own.s3_sse, own.s3_sse_kms_key_id, own.s3_storage_class,
                              own.s3_tags or ()).over(self.object_controls)

    @property
    def default_policy(self) -> KeyPolicy:
        return KeyPolicy("", content=self.content, identities=self.identities, sample=self.sample,
                         max_spans_per_second=self.max_spans_per_second,
                         max_bytes_per_second=self.max_bytes_per_second)

    def policy_of(self, name: str | None) -> KeyPolicy:
        """Key `name`'s whole policy: its [keys.NAME] table, --key-prefix / --key-bucket, the defaults."""
        if name is None:
            return replace(self.default_policy, prefix=self.prefix)
        own = next((policy for policy in self.keys if policy.name == name), KeyPolicy(name))
        own = replace(own, prefix=own.prefix or dict(self.key_prefixes).get(name),
                      bucket=own.bucket or dict(self.key_buckets).get(name))
        return own.over(replace(self.default_policy, prefix=self.prefix))

    @property
    def metrics_address(self) -> str:
        return self.metrics_host or self.host

    @property
    def tls(self) -> bool:
        return self.tls_cert_file is not None

    @property
    def join_directory(self) -> str:
        return self.join_dir or str(Path(self.spool_dir) / "join")

    @property
    def decoded_bytes_limit(self) -> int:
        return min(self.max_decoded_bytes, self.max_inflight_bytes)

    @property
    def uses_s3(self) -> bool:
        return self.bucket is not None

    @property
    def writes_objects(self) -> bool:
        return self.layout in ("trace", "both")

    @property
    def writes_batches(self) -> bool:
        return self.layout in ("batch", "both")

    @property
    def puts_first(self) -> bool:
        """Objects are put before the answer, and spooled only when the bucket is slow or failing
        (--ack auto; the batch layout's files are built from the spool, so only the trace layout)."""
        return self.ack == "auto" and self.layout == "trace"

    @property
    def addressing_style(self) -> str:
        if self.s3_addressing_style == "auto":
            return "path" if self.endpoint_url else "virtual"
        return self.s3_addressing_style

    @property
    def destination(self) -> str:
        """Where objects go, for humans: never contains a secret."""
        if not self.uses_s3:
            return f"local directory {self.output_dir}"
        where = f" at {self.endpoint_url}" if self.endpoint_url else ""
        return f"s3://{self.bucket}{where}"

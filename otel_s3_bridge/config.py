"""The one configuration object: a frozen dataclass, loaded from defaults < file < environment < flags.

Every CLI flag and `OTEL_S3_BRIDGE_*` variable is derived from the fields below, never listed by
hand. `load_config` validates everything once and raises one `ConfigError` naming every bad
field. This module must not exit the process, open sockets or print a token.
"""

from __future__ import annotations

import argparse
import importlib.util
import ipaddress
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .receive.auth import TokenFileError, read_token_file
from .errors import ConfigError
from .lake.keys import KeyTemplate, compile_template, validate_prefix
from .enrich.pricing import PriceFileError, read_price_file
from .values import bounded_int

ENV_PREFIX = "OTEL_S3_BRIDGE_"


@dataclass(frozen=True)
class NamedToken:
    """An accepted Bearer token and the name records carry for it (`ingest.key_name`)."""

    name: str
    token: str = field(repr=False)


def _text(raw: str) -> str:
    if not raw.strip():
        raise ValueError("must not be empty")
    return raw.strip()


def _optional_text(raw: str) -> str | None:
    return raw.strip() or None


def _integer(low: int, high: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        return bounded_int(raw, low, high)

    return parse


def _choice(*allowed: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        if raw not in allowed:
            raise ValueError(f"{raw!r} is not one of {', '.join(allowed)}")
        return raw

    return parse


def _endpoint_url(raw: str) -> str | None:
    if not raw.strip():
        return None
    parts = urlsplit(raw.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{raw!r} is not an http:// or https:// URL")
    return raw.strip().rstrip("/")


def _bucket(raw: str) -> str | None:
    name = raw.strip()
    if not name:
        return None
    if "/" in name or name.startswith("s3:") or not 3 <= len(name) <= 63:
        raise ValueError(f"{name!r} is not a bucket name (3-63 characters, no 's3://' and no '/')")
    return name


def _prefix(raw: str) -> str:
    return validate_prefix(raw)


def _path_template(raw: str) -> KeyTemplate:
    return compile_template(raw)


def _named(entries: list[str], parse_value: Callable[[str], Any], what: str) -> list[tuple[str, Any]]:
    """Parse `name=value` entries. Problems name the entry's position, never its value."""
    named: list[tuple[str, Any]] = []
    problems: list[str] = []
    for position, entry in enumerate(entries, start=1):
        name, sep, raw = entry.partition("=")
        name, raw = name.strip(), raw.strip()
        if sep and raw.startswith("="):  # `VALUE==`: a bare base64 value, not one named VALUE
            problems.append(f"entry {position} has no name: a value ending in '=' needs one (NAME={what})")
        elif not sep or not name or not raw:
            problems.append(f"entry {position} is not NAME={what}")
        elif any(existing == name for existing, _ in named):
            problems.append(f"entry {position} repeats the name {name!r}")
        else:
            try:
                named.append((name, parse_value(raw)))
            except ValueError as exc:
                problems.append(f"entry {position} ({name}): {exc}")
    if problems:
        raise ValueError("; ".join(problems))
    return named


def _token(raw: str) -> str:
    if any(ch.isspace() for ch in raw):
        raise ValueError("the token has whitespace in it")
    return raw


def _tokens(entries: list[str]) -> tuple[NamedToken, ...]:
    return tuple(NamedToken(name, token) for name, token in _named(entries, _token, "TOKEN"))


def _key_prefixes(entries: list[str]) -> tuple[tuple[str, str], ...]:
    return tuple(_named(entries, validate_prefix, "PREFIX"))


def _key_buckets(entries: list[str]) -> tuple[tuple[str, str], ...]:
    return tuple((name, bucket) for name, bucket in _named(entries, _bucket, "BUCKET") if bucket)


def _optional_path(raw: str) -> str | None:
    return raw.strip() or None


def _seconds(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{raw!r} is not a number of seconds") from None
    if not 0.1 <= value <= 86_400:
        raise ValueError(f"{value} is outside 0.1..86400 seconds")
    return value


def _option(default: Any, help: str, parse: Callable[[str], Any] = _text, *, flag: str | None = None,
            metavar: str | None = None, repeatable: bool = False) -> Any:
    return field(default=default, metadata={
        "help": help, "parse": parse, "flag": flag, "metavar": metavar, "repeatable": repeatable})


@dataclass(frozen=True)
class BridgeConfig:
    """Everything the bridge needs to run, validated. Field order is the order of `--help`."""

    host: str = _option("127.0.0.1", "bind address for both receivers")
    http_port: int = _option(4318, "OTLP/HTTP port", _integer(1, 65535))
    grpc_port: int = _option(4317, "OTLP/gRPC port; 0 disables gRPC", _integer(0, 65535))
    tokens: tuple[NamedToken, ...] = _option(
        (), "accepted Bearer token with its name (repeatable; env: name=token,name2=token2)", _tokens,
        flag="--token", metavar="NAME=TOKEN", repeatable=True)
    token_file: str | None = _option(
        None, "file of accepted keys, one 'name=token' or 'name=sha256:<hex>' per line; re-read when it changes",
        _optional_path, metavar="FILE")
    key_prefixes: tuple[tuple[str, str], ...] = _option(
        (), "a key's own {prefix}, so that tenants never share a namespace (repeatable; env: name=prefix,...)",
        _key_prefixes, flag="--key-prefix", metavar="NAME=PREFIX", repeatable=True)
    key_buckets: tuple[tuple[str, str], ...] = _option(
        (), "a key's own bucket (repeatable; env: name=bucket,...; a subdirectory with the local sink)",
        _key_buckets, flag="--key-bucket", metavar="NAME=BUCKET", repeatable=True)
    bucket: str | None = _option(None, "S3 bucket; unset writes to the local directory sink", _bucket)
    endpoint_url: str | None = _option(
        None, "custom S3 endpoint (Cloudflare R2, MinIO, GCS interop)", _endpoint_url, metavar="URL")
    region: str | None = _option(None, "S3 region (AWS_REGION and AWS_DEFAULT_REGION also honoured)",
                                 _optional_text)
    prefix: str = _option("openrouter-traces", "value of {prefix} in the path template", _prefix)
    path_template: KeyTemplate = _option(
        compile_template("{prefix}/{date}"),
        "object folder template; variables {prefix} {date} {year} {month} {day} {hour} {apiKeyName} {keyName}",
        _path_template, metavar="TEMPLATE")
    prices: str | None = _option(
        None, "TOML file of the deployment's own rates ([models.\"NAME\"] input_per_million = …), which win "
        "over genai-prices' table for calls whose senders report no cost; re-read when it changes", _optional_path,
        metavar="FILE")
    layout: str = _option(
        "trace", "trace: one JSON object per LLM call (OpenRouter's layout); batch: Parquet or gzip NDJSON files "
        "under {prefix}/lake/dt=YYYY-MM-DD/hour=HH/; both", _choice("trace", "batch", "both"))
    batch_format: str = _option("parquet", "the batch layout's files: parquet (zstd) or ndjson (gzip)",
                                _choice("parquet", "ndjson"))
    batch_max_records: int = _option(100_000, "records in one batch file at most", _integer(1, 10_000_000),
                                     metavar="N")
    batch_max_bytes: int = _option(
        64 * 1024 * 1024, "records (as JSON) in one batch file at most, in bytes; the file itself is smaller",
        _integer(64 * 1024, 5 * 1024 ** 3), metavar="BYTES")
    batch_max_age_seconds: int = _option(60, "a batch file is written at the latest this long after its first "
                                             "record was spooled", _integer(1, 86_400), metavar="SECONDS")
    output_dir: str = _option("./otel-s3-data", "local directory sink root (used when no bucket is set)",
                              metavar="DIR")
    s3_addressing_style: str = _option(
        "auto", "S3 addressing: auto (path-style when --endpoint-url is set), path or virtual",
        _choice("auto", "path", "virtual"))
    ack: str = _option(
        "spool", "acknowledge an export once its records are fsynced in the spool (spool) or once uploaded (upload)",
        _choice("spool", "upload"))
    spool_dir: str = _option("./otel-s3-data/spool", "durable spool directory (one per bridge process)",
                             metavar="DIR")
    spool_max_bytes: int = _option(1024 ** 3, "spool byte budget; when reached, exports get 503 + Retry-After",
                                   _integer(1024 * 1024, 2 ** 50), metavar="BYTES")
    join_dir: str | None = _option(
        None, "where the halves of LLM calls sent apart (spans, GenAI event logs) wait for each other; "
        "default: SPOOL_DIR/join, shared by --workers", _optional_path, metavar="DIR")
    join_window_seconds: int = _option(
        600, "how long a stored record waits for its GenAI event logs (and they for it)", _integer(1, 7 * 86400),
        metavar="SECONDS")
    join_max_bytes: int = _option(
        256 * 1024 * 1024, "bytes the join store may hold; beyond, log exports get 503 + Retry-After until halves "
        "expire", _integer(1024 * 1024, 2 ** 50), metavar="BYTES")
    drain_seconds: int = _option(20, "on SIGTERM, time to upload what the spool holds before exiting",
                                 _integer(0, 3600), metavar="SECONDS")
    upload_concurrency: int = _option(16, "parallel uploads to the sink", _integer(1, 1024), metavar="N")
    upload_retry_max_seconds: int = _option(30, "longest wait between two retries of one upload",
                                            _integer(1, 3600), metavar="SECONDS")
    s3_multipart_bytes: int = _option(
        16 * 1024 * 1024, "objects larger than this go up as multipart uploads, in parts of this size",
        _integer(5 * 1024 * 1024, 5 * 1024 ** 3), metavar="BYTES")
    s3_put_path: str = _option(
        "direct", "how objects are put: direct (signed and sent by the bridge: about a tenth of the CPU) or "
        "aiobotocore (put_object, for a store the direct path does not suit)", _choice("direct", "aiobotocore"))
    s3_timeout_seconds: int = _option(30, "S3 connect and read timeout of one request", _integer(1, 600),
                                      metavar="SECONDS")
    max_inflight_bytes: int = _option(
        128 * 1024 * 1024, "request bodies and the records decoded from them held in memory at once; one export "
        "beyond it gets 413, more than fit now get 503", _integer(1024 * 1024, 2 ** 40), metavar="BYTES")
    max_decoded_bytes: int = _option(
        32 * 1024 * 1024, "JSON bytes of records one export may decode to (at most --max-inflight-bytes, "
        "which holds them); beyond, 413", _integer(64 * 1024, 2 ** 40), metavar="BYTES")
    non_llm_spans: str = _option(
        "drop", "spans of traces without an LLM call: drop (counted as rejected in partial_success) or keep "
        "(one source 'otlp' record per trace in each export)",
        _choice("keep", "drop"))
    max_request_bytes: int = _option(20 * 1024 * 1024, "largest accepted OTLP/HTTP body, also after decompression",
                                     _integer(1024, 1024 * 1024 * 1024), metavar="BYTES")
    grpc_max_message_bytes: int = _option(4 * 1024 * 1024, "largest accepted OTLP/gRPC message, after decompression",
                                          _integer(1024, 1024 * 1024 * 1024), metavar="BYTES")
    grpc_max_concurrent_rpcs: int = _option(64, "gRPC exports handled at once; more get UNAVAILABLE + RetryInfo",
                                            _integer(1, 100_000), metavar="N")
    max_connections: int = _option(1024, "open connections per receiver; beyond, idle ones are closed first",
                                   _integer(1, 1_000_000), metavar="N")
    header_timeout_seconds: float = _option(10.0, "time to send a request's headers (and the HTTP/2 handshake)",
                                            _seconds, metavar="SECONDS")
    body_timeout_seconds: float = _option(30.0, "longest pause while a request body (or gRPC message) arrives",
                                          _seconds, metavar="SECONDS")
    keepalive_timeout_seconds: float = _option(60.0, "how long an idle connection is kept open between requests",
                                               _seconds, metavar="SECONDS")
    decode_processes: int = _option(2, "processes that decode large exports off the event loop (0: a thread)",
                                    _integer(0, 64), metavar="N")
    max_resource_bytes: int = _option(16 * 1024, "resource attributes copied into each record (JSON bytes); "
                                      "beyond, attributes are left out and counted", _integer(256, 16 * 1024 * 1024),
                                      metavar="BYTES")
    workers: int = _option(1, "processes sharing the ports (SO_REUSEPORT), each with its own spool "
                              "directory <spool-dir>/worker-<n>", _integer(1, 64), metavar="N")
    tls_cert_file: str | None = _option(
        None, "PEM certificate (chain) to serve HTTPS and gRPC over TLS with; re-read when it changes",
        _optional_path, metavar="FILE")
    tls_key_file: str | None = _option(None, "PEM private key of --tls-cert-file", _optional_path, metavar="FILE")
    tls_client_ca_file: str | None = _option(
        None, "PEM CA certificates clients must present a certificate from (mutual TLS)", _optional_path,
        metavar="FILE")
    metrics_port: int = _option(9464, "Prometheus metrics port (GET /metrics); 0 disables it", _integer(0, 65535))
    metrics_host: str | None = _option(None, "bind address of the metrics port (default: --host)", _optional_text)
    event_loop: str = _option(
        "auto", "auto (uvloop when it is installed), asyncio or uvloop (pip install 'otel-s3-bridge[uvloop]')",
        _choice("auto", "asyncio", "uvloop"))
    log_level: str = _option("info", "debug, info, warning or error", _choice("debug", "info", "warning", "error"))
    log_format: str = _option("text", "text, or json: one JSON object per line", _choice("text", "json"))

    def for_worker(self, index: int) -> BridgeConfig:
        """The configuration of worker `index` of `--workers N`: its own spool directory; worker 0
        serves the metrics of all."""
        return replace(self, spool_dir=str(Path(self.spool_dir) / f"worker-{index}"), join_dir=self.join_directory,
                       metrics_port=self.metrics_port if index == 0 else 0)

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


def flag_of(f: Any) -> str:
    return f.metadata["flag"] or "--" + f.name.replace("_", "-")


def env_of(f: Any) -> str:
    return ENV_PREFIX + f.name.upper()


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one flag per config field (defaults stay None so that 'unset' is visible)."""
    parser.add_argument("--config", metavar="FILE", help=f"TOML config file (env {ENV_PREFIX}CONFIG)")
    for f in fields(BridgeConfig):
        parser.add_argument(
            flag_of(f), dest=f.name, metavar=f.metadata["metavar"], default=None,
            action="append" if f.metadata["repeatable"] else "store",
            help=f"{f.metadata['help']} (env {env_of(f)})")


def _file_values(path: str, problems: list[str]) -> dict[str, Any]:
    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except OSError as exc:
        problems.append(f"--config: cannot read {path}: {exc.strerror}")
        return {}
    except tomllib.TOMLDecodeError as exc:
        problems.append(f"--config: {path} is not valid TOML: {exc}")
        return {}
    known = {f.name for f in fields(BridgeConfig)}
    for key in sorted(set(data) - known):
        problems.append(f"--config: unknown key {key!r} in {path} (known: {', '.join(sorted(known))})")
    return {key: value for key, value in data.items() if key in known}


def _file_entries(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [f"{name}={token}" for name, token in value.items()]
    if isinstance(value, list):
        return [str(entry) for entry in value]
    return [str(value)]


def load_config(flags: Mapping[str, Any], env: Mapping[str, str] = os.environ) -> BridgeConfig:
    """Resolve every field (flag > environment > file > default) and validate the whole."""
    problems: list[str] = []
    config_path = flags.get("config") or env.get(ENV_PREFIX + "CONFIG")
    from_file = _file_values(config_path, problems) if config_path else {}

    values: dict[str, Any] = {}
    for f in fields(BridgeConfig):
        parse = f.metadata["parse"]
        flag_value = flags.get(f.name)
        if flag_value is not None:
            source, raw = flag_of(f), flag_value
        elif env.get(env_of(f)) is not None:
            source, raw = env_of(f), env[env_of(f)]
            if f.metadata["repeatable"]:
                raw = [entry for entry in raw.split(",") if entry.strip()]
        elif f.name in from_file:
            source, raw = f"{f.name} in {config_path}", from_file[f.name]
            raw = _file_entries(raw) if f.metadata["repeatable"] else str(raw)
        else:
            continue
        try:
            values[f.name] = parse(raw)
        except ValueError as exc:
            problems.append(f"{source}: {exc}")

    if "region" not in values:
        values["region"] = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or None
    config = BridgeConfig(**values)

    problems.extend(_key_problems(config))
    if not config.tokens and not config.token_file and not _is_loopback(config.host):
        problems.append(
            f"--host: {config.host!r} is not a loopback address and no --token is set; "
            "the bridge accepts unauthenticated traffic only on loopback (add --token NAME=TOKEN)")
    problems.extend(_tls_problems(config))
    if config.prices:
        try:
            read_price_file(config.prices)
        except PriceFileError as error:
            problems.append(f"--prices: {error}")
    if config.grpc_port and config.grpc_port == config.http_port:
        problems.append(f"--grpc-port: {config.grpc_port} is also --http-port; give each receiver its own port, "
                        "or 0 to disable gRPC")
    if config.metrics_port and config.metrics_port in (config.http_port, config.grpc_port) \
            and config.metrics_address == config.host:
        problems.append(f"--metrics-port: {config.metrics_port} is also a receiver's port; choose another, or 0")
    if config.event_loop == "uvloop" and importlib.util.find_spec("uvloop") is None:
        problems.append("--event-loop: uvloop is not installed (pip install 'otel-s3-bridge[uvloop]'), or use auto")
    if config.layout != "trace" and config.ack == "upload":
        problems.append(f"--layout: {config.layout!r} builds files from the spool; it needs --ack spool")
    if config.endpoint_url and not config.uses_s3:
        problems.append("--endpoint-url: set --bucket too (without a bucket the bridge writes to a local directory)")
    if problems:
        raise ConfigError(problems)
    return config


def _tls_problems(config: BridgeConfig) -> list[str]:
    problems = []
    if bool(config.tls_cert_file) != bool(config.tls_key_file):
        problems.append("--tls-cert-file and --tls-key-file: set both, or neither")
    if config.tls_client_ca_file and not config.tls_cert_file:
        problems.append("--tls-client-ca-file: set --tls-cert-file and --tls-key-file too (mutual TLS needs TLS)")
    for flag, path in (("--tls-cert-file", config.tls_cert_file), ("--tls-key-file", config.tls_key_file),
                       ("--tls-client-ca-file", config.tls_client_ca_file)):
        if path and not os.access(path, os.R_OK):
            problems.append(f"{flag}: cannot read {path}")
    return problems


def _key_problems(config: BridgeConfig) -> list[str]:
    """Keys from --token and --token-file, and their routes: unique names, no route for an unknown
    key, and prefixes that keep routed keys' namespaces apart (none inside another, per bucket)."""
    problems: list[str] = []
    names = [token.name for token in config.tokens]
    if config.token_file:
        try:
            from_file = [name for name, _ in read_token_file(config.token_file)]
        except TokenFileError as exc:
            problems.append(f"--token-file: {exc}")
            from_file = []
        problems.extend(f"--token-file: the key name {name!r} is also given by --token"
                        for name in from_file if name in names)
        names += from_file
    for flag, routes in (("--key-prefix", config.key_prefixes), ("--key-bucket", config.key_buckets)):
        problems.extend(f"{flag}: {name!r} is not the name of a key (--token or --token-file)"
                        for name, _ in routes if name not in names)
    if config.key_prefixes and not str(config.path_template).startswith("{prefix}"):
        problems.append("--key-prefix: the path template must start with {prefix}, or keys' namespaces can overlap")
    prefixes, buckets = dict(config.key_prefixes), dict(config.key_buckets)
    spaces = [(buckets.get(name), prefixes.get(name, config.prefix), name) for name in names
              if name in prefixes or name in buckets]
    if spaces and any(name not in prefixes and name not in buckets for name in names):
        spaces.append((None, config.prefix, "the keys without a route (--prefix)"))
    for index, (bucket, prefix, owner) in enumerate(spaces):
        for other_bucket, other_prefix, other in spaces[index + 1:]:
            if bucket == other_bucket and _overlaps(prefix, other_prefix):
                problems.append(f"--key-prefix: {owner} ({prefix!r}) and {other} ({other_prefix!r}) would share a "
                                "namespace; give each key a prefix of its own")
    return problems


def _overlaps(prefix: str, other: str) -> bool:
    first, second = prefix.split("/"), other.split("/")
    shorter = min(len(first), len(second))
    return first[:shorter] == second[:shorter]


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False

"""The one configuration object: a frozen dataclass, loaded from defaults < file < environment < flags.

Every CLI flag and `OTEL_S3_BRIDGE_*` variable is derived from the fields below, never listed by
hand. `load_config` validates everything once and raises one `ConfigError` naming every bad
field. This module must not exit the process, open sockets or print a token.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .errors import ConfigError
from .keys import KeyTemplate, compile_template, validate_prefix

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
        try:
            value = int(raw)
        except ValueError:
            raise ValueError(f"{raw!r} is not an integer between {low} and {high}") from None
        if not low <= value <= high:
            raise ValueError(f"{value} is outside {low}..{high}")
        return value

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


def _tokens(entries: list[str]) -> tuple[NamedToken, ...]:
    """Parse `name=token` entries. Problems name the entry's position, never its value."""
    tokens: list[NamedToken] = []
    problems: list[str] = []
    for position, entry in enumerate(entries, start=1):
        name, sep, token = entry.partition("=")
        name, token = name.strip(), token.strip()
        if not sep or not name or not token:
            problems.append(f"entry {position} is not NAME=TOKEN")
        elif any(ch.isspace() for ch in token):
            problems.append(f"entry {position} ({name}) has whitespace in its token")
        elif any(t.name == name for t in tokens):
            problems.append(f"entry {position} repeats the name {name!r}")
        else:
            tokens.append(NamedToken(name, token))
    if problems:
        raise ValueError("; ".join(problems))
    return tuple(tokens)


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
    drain_seconds: int = _option(20, "on SIGTERM, time to upload what the spool holds before exiting",
                                 _integer(0, 3600), metavar="SECONDS")
    upload_concurrency: int = _option(16, "parallel uploads to the sink", _integer(1, 1024), metavar="N")
    upload_retry_max_seconds: int = _option(30, "longest wait between two retries of one upload",
                                            _integer(1, 3600), metavar="SECONDS")
    s3_timeout_seconds: int = _option(30, "S3 connect and read timeout of one request", _integer(1, 600),
                                      metavar="SECONDS")
    max_inflight_bytes: int = _option(128 * 1024 * 1024, "request bytes held in memory at once; beyond, 503",
                                      _integer(1024 * 1024, 2 ** 40), metavar="BYTES")
    non_llm_spans: str = _option(
        "keep", "traces without LLM attributes: keep (as source 'otlp' records) or drop (counted as rejected)",
        _choice("keep", "drop"))
    max_request_bytes: int = _option(64 * 1024 * 1024, "largest accepted request body, after decompression",
                                     _integer(1024, 1024 * 1024 * 1024), metavar="BYTES")
    workers: int = _option(1, "processes sharing the ports (SO_REUSEPORT), each with its own spool "
                              "directory <spool-dir>/worker-<n>", _integer(1, 64), metavar="N")
    log_level: str = _option("info", "debug, info, warning or error", _choice("debug", "info", "warning", "error"))

    def for_worker(self, index: int) -> BridgeConfig:
        """The configuration of worker `index` of `--workers N`: its own spool directory."""
        return replace(self, spool_dir=str(Path(self.spool_dir) / f"worker-{index}"))

    @property
    def uses_s3(self) -> bool:
        return self.bucket is not None

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


def _file_token_entries(value: Any) -> list[str]:
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
            raw = _file_token_entries(raw) if f.metadata["repeatable"] else str(raw)
        else:
            continue
        try:
            values[f.name] = parse(raw)
        except ValueError as exc:
            problems.append(f"{source}: {exc}")

    if "region" not in values:
        values["region"] = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or None
    config = BridgeConfig(**values)

    if not config.tokens and not _is_loopback(config.host):
        problems.append(
            f"--host: {config.host!r} is not a loopback address and no --token is set; "
            "the bridge accepts unauthenticated traffic only on loopback (add --token NAME=TOKEN)")
    if config.endpoint_url and not config.uses_s3:
        problems.append("--endpoint-url: set --bucket too (without a bucket the bridge writes to a local directory)")
    if problems:
        raise ConfigError(problems)
    return config


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False

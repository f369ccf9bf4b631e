"""Loading the configuration: defaults < TOML file < `OTEL_S3_BRIDGE_*` environment < flags.

`load_config` resolves the fields a command uses (a file or the environment may carry the rest:
they are ignored, but for unknown keys), validates them once and raises one `ConfigError` naming
every bad field. `add_config_arguments` gives a command the flags of its own fields, under their
headings. This module must not exit the process, open sockets or print a token.
"""

from __future__ import annotations

import argparse
import importlib.util
import ipaddress
import os
import tomllib
from collections.abc import Mapping
from dataclasses import Field, fields
from typing import Any

from ..enrich.pricing import PriceFileError, read_price_file
from ..errors import ConfigError
from ..govern.identities import read_pseudonym_key
from ..lake.object_controls import MAX_TAGS
from .schema import ADVANCED, BridgeConfig
from .tokens import TokenFileError, read_token_file

ENV_PREFIX = "OTEL_S3_BRIDGE_"


def fields_of(command: str) -> list[Field]:
    """The fields `command` uses, in the order of `--help`."""
    return [f for f in fields(BridgeConfig) if command in f.metadata["commands"]]


def flag_of(f: Any) -> str:
    return f.metadata["flag"] or "--" + f.name.replace("_", "-")


def env_of(f: Any) -> str:
    return ENV_PREFIX + f.name.upper()


def add_config_arguments(parser: argparse.ArgumentParser, command: str, *, advanced: bool = True) -> None:
    """Add `--config` and one flag per field `command` uses, under its heading (defaults stay None
    so that 'unset' is visible). Without `advanced` the flags of the advanced headings are
    accepted but not listed (`--help-all` lists them)."""
    parser.add_argument("--config", metavar="FILE",
                        help=f"TOML file of flag_name = value (env {ENV_PREFIX}CONFIG; any flag as "
                             f"{ENV_PREFIX}FLAG_NAME)")
    if any(f.metadata["group"] in ADVANCED for f in fields_of(command)):
        parser.add_argument("--help-all", action="help", help="show this help with the advanced flags too")
    groups: dict[str, Any] = {}
    for f in fields_of(command):
        title = f.metadata["group"]
        if title not in groups:
            groups[title] = parser.add_argument_group(title)
        hidden = not advanced and title in ADVANCED
        groups[title].add_argument(
            flag_of(f), dest=f.name, metavar=f.metadata["metavar"], default=None,
            action="append" if f.metadata["repeatable"] else "store",
            help=argparse.SUPPRESS if hidden else f.metadata["help"])


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


def load_config(flags: Mapping[str, Any], env: Mapping[str, str] = os.environ, command: str = "serve") -> BridgeConfig:
    """Resolve the fields `command` uses (flag > environment > file > default; the others keep
    their defaults) and validate them as a whole."""
    problems: list[str] = []
    config_path = flags.get("config") or env.get(ENV_PREFIX + "CONFIG")
    from_file = _file_values(config_path, problems) if config_path else {}

    values: dict[str, Any] = {}
    used = fields_of(command)
    for f in used:
        parse = f.metadata["parse"]
        flag_value = flags.get(f.name)
        if flag_value is not None:
            source, raw = flag_of(f), flag_value
        elif env.get(env_of(f)) is not None:
            source, raw = env_of(f), env[env_of(f)]
            if f.metadata["repeatable"]:  # patterns hold commas: one per line
                separator = "\n" if f.name == "redact_patterns" else ","
                raw = [entry for entry in raw.split(separator) if entry.strip()]
        elif f.name in from_file:
            source, raw = f"{f.name} in {config_path}", from_file[f.name]
            raw = _file_entries(raw) if f.metadata["repeatable"] else raw if isinstance(raw, dict) else str(raw)
        else:
            continue
        try:
            values[f.name] = parse(raw)
        except ValueError as exc:
            problems.append(f"{source}: {exc}")

    if "region" not in values and any(f.name == "region" for f in used):
        values["region"] = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or None
    config = BridgeConfig(**values)

    problems.extend(_key_problems(config))
    if command == "serve":
        problems.extend(_serve_problems(config))
    if config.prices:
        try:
            read_price_file(config.prices)
        except PriceFileError as error:
            problems.append(f"--prices: {error}")
    if config.endpoint_url and not config.uses_s3:
        problems.append("--endpoint-url: set --bucket too (without a bucket the bridge writes to a local directory)")
    if problems:
        raise ConfigError(problems)
    return config


def _serve_problems(config: BridgeConfig) -> list[str]:
    """What only a serving bridge can get wrong: exposure, TLS, ports, processes."""
    problems = []
    if not config.tokens and not config.token_file and not _is_loopback(config.host):
        problems.append(
            f"--host: {config.host!r} is not a loopback address and no --token is set; "
            "the bridge accepts unauthenticated traffic only on loopback (add --token NAME=TOKEN)")
    problems.extend(_tls_problems(config))
    if config.grpc_port and config.grpc_port == config.http_port:
        problems.append(f"--grpc-port: {config.grpc_port} is also --http-port; give each receiver its own port, "
                        "or 0 to disable gRPC")
    if config.metrics_port and config.metrics_port in (config.http_port, config.grpc_port) \
            and config.metrics_address == config.host:
        problems.append(f"--metrics-port: {config.metrics_port} is also a receiver's port; choose another, or 0")
    if config.event_loop == "uvloop" and importlib.util.find_spec("uvloop") is None:
        problems.append("--event-loop: uvloop is not installed (pip install 'otel-s3-bridge[uvloop]'), or use auto")
    if config.layout != "trace" and config.ack == "upload":
        problems.append(f"--layout: {config.layout!r} builds files from the spool; it needs --ack auto or spool")
    return problems


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
    for flag, routes in (("--key-prefix", config.key_prefixes), ("--key-bucket", config.key_buckets),
                         ("keys", [(policy.name, None) for policy in config.keys])):
        problems.extend(f"{flag}: {name!r} is not the name of a key (--token or --token-file)"
                        for name, _ in routes if name not in names)
    prefixes, buckets = dict(config.key_prefixes), dict(config.key_buckets)
    for policy in config.keys:
        for flag, setting, routed in (("--key-prefix", "prefix", prefixes), ("--key-bucket", "bucket", buckets)):
            value = getattr(policy, setting)
            if value is not None and routed.setdefault(policy.name, value) != value:
                problems.append(f"{flag}: {policy.name!r} has another {setting} in keys.{policy.name}; give one")
    if prefixes and not str(config.path_template).startswith("{prefix}"):
        problems.append("--key-prefix: the path template must start with {prefix}, or keys' namespaces can overlap")
    problems.extend(_pseudonym_problems(config, names))
    problems.extend(f"keys.{policy.name}.s3_tags: with --s3-tags that makes more than {MAX_TAGS} tags per object"
                    for policy in config.keys if len(config.object_controls_of(policy.name).tags) > MAX_TAGS)
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


def _pseudonym_problems(config: BridgeConfig, names: list[str]) -> list[str]:
    """identities = hmac needs a usable secret; the secret itself is never quoted."""
    hmac_keys = [name for name in [None, *names] if config.policy_of(name).identities == "hmac"]
    if not hmac_keys:
        return []
    if not config.pseudonym_key_file:
        return ["--pseudonym-key-file: identities = hmac needs a secret; give the file that holds it"]
    try:
        read_pseudonym_key(config.pseudonym_key_file)
    except ValueError as exc:
        return [f"--pseudonym-key-file: {exc}"]
    return []


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

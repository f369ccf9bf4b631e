"""Key rendering is pure: table-driven, UTC, sanitised, confined to the prefix."""

from __future__ import annotations

import pytest

from otel_s3_bridge.keys import compile_template, object_key, sanitize, validate_prefix

START = 1790606294318000000  # 2026-09-28T14:38:14.318Z
ZERO_HOUR = 1790553600000000000  # 2026-09-28T00:00:00Z


def record(trace_id="gen-1790606294-sdYHTGXUVyDKWCLqX5Op", generation_id="gen-1790606294-sdYHTGXUVyDKWCLqX5Op",
           start=START, api_key_name="fixture key", key_name="openrouter"):
    return {"trace_id": trace_id, "generation_id": generation_id, "span_id": "9b1de41a703bf6c7",
            "start_time_unix_nano": start, "api_key_name": api_key_name, "ingest": {"key_name": key_name}}


@pytest.mark.parametrize("template,fields,expected", [
    ("{prefix}/{date}", {}, "openrouter-traces/2026-09-28/gen-1790606294-sdYHTGXUVyDKWCLqX5Op-1790606294.json"),
    ("traces/{year}/{month}/{day}/{hour}", {}, "traces/2026/09/28/14/gen-1790606294-sdYHTGXUVyDKWCLqX5Op-1790606294.json"),
    ("{apiKeyName}/{date}", {}, "fixture key/2026-09-28/gen-1790606294-sdYHTGXUVyDKWCLqX5Op-1790606294.json"),
    ("{apiKeyName}/{date}", {"api_key_name": None}, "openrouter/2026-09-28/gen-1790606294-sdYHTGXUVyDKWCLqX5Op-1790606294.json"),
    ("{apiKeyName}/{date}", {"api_key_name": None, "key_name": None}, "unknown/2026-09-28/gen-1790606294-sdYHTGXUVyDKWCLqX5Op-1790606294.json"),
    ("{keyName}/{date}", {"key_name": None}, "anonymous/2026-09-28/gen-1790606294-sdYHTGXUVyDKWCLqX5Op-1790606294.json"),
    ("{prefix}/{date}", {"start": ZERO_HOUR}, "openrouter-traces/2026-09-28/gen-1790606294-sdYHTGXUVyDKWCLqX5Op-1790553600.json"),
    ("{prefix}/{date}", {"start": ZERO_HOUR - 1}, "openrouter-traces/2026-09-27/gen-1790606294-sdYHTGXUVyDKWCLqX5Op-1790553599.json"),
    # a caller-chosen trace id is not unique per call: the span id keeps calls apart
    ("{prefix}/{date}", {"trace_id": "agent-run-7"}, "openrouter-traces/2026-09-28/agent-run-7-1790606294-9b1de41a703bf6c7.json"),
    # payload values cannot climb out of the prefix
    ("{prefix}/{apiKeyName}", {"api_key_name": "../../etc"}, "openrouter-traces/______etc/gen-1790606294-sdYHTGXUVyDKWCLqX5Op-1790606294.json"),
    ("{prefix}/{date}", {"trace_id": "../x\n/y", "generation_id": "../x\n/y"}, "openrouter-traces/2026-09-28/___x__y-1790606294.json"),
])
def test_object_key(template, fields, expected):
    assert object_key(compile_template(template), record(**fields), prefix="openrouter-traces",
                      fallback_unix_nano=0) == expected


def test_missing_start_time_uses_the_fallback():
    key = object_key(compile_template("{prefix}/{date}"), record(start=None), prefix="p", fallback_unix_nano=START)
    assert key == "p/2026-09-28/gen-1790606294-sdYHTGXUVyDKWCLqX5Op-1790606294.json"


@pytest.mark.parametrize("value,expected", [
    ("plain", "plain"), ("a/b", "a_b"), ("..", "__"), (".", "_"), ("", "_"), ("a\\b", "a_b"),
    ("x\x00y\x7f", "x_y_"), ("v1.2", "v1.2"), ("x" * 500, "x" * 200),
])
def test_sanitize(value, expected):
    assert sanitize(value) == expected


@pytest.mark.parametrize("template,problem", [
    ("{prefix}/{traceId}", "unknown variable"),
    ("{prefix}/{date:%Y}", "format spec"),
    ("../{date}", "'..'"),
    ("/abs/{date}", "must not start"),
    ("{prefix}/\\{date}", "backslash"),
    ("  ", "empty"),
    ("{prefix", "not a valid template"),
])
def test_bad_templates_are_rejected(template, problem):
    with pytest.raises(ValueError, match=problem):
        compile_template(template)


@pytest.mark.parametrize("prefix,expected", [("openrouter-traces", "openrouter-traces"),
                                             ("/production/llm-traces/", "production/llm-traces")])
def test_prefix(prefix, expected):
    assert validate_prefix(prefix) == expected


@pytest.mark.parametrize("prefix", ["a/../b", "", "x\ny"])
def test_bad_prefix(prefix):
    with pytest.raises(ValueError):
        validate_prefix(prefix)

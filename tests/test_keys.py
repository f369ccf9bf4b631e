"""Key rendering is pure: table-driven, UTC, sanitised, confined to the prefix, injective, and
within S3's and file systems' byte limits."""

from __future__ import annotations

import hashlib

import pytest

from otel_s3_bridge.lake.keys import compile_template, object_key, sanitize, validate_prefix


def marked(cleaned: str, original: str) -> str:
    """What a changed value renders to: cleaned text, `~`, the first 16 hex digits of its sha256."""
    return f"{cleaned}~{hashlib.sha256(original.encode()).hexdigest()[:16]}"

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
    ("{prefix}/{apiKeyName}", {"api_key_name": "../../etc"},
     f"openrouter-traces/{marked('______etc', '../../etc')}/gen-1790606294-sdYHTGXUVyDKWCLqX5Op-1790606294.json"),
    ("{prefix}/{date}", {"trace_id": "../x\n/y", "generation_id": "../x\n/y"},
     f"openrouter-traces/2026-09-28/{marked('___x__y', '../x' + chr(10) + '/y')}-1790606294.json"),
])
def test_object_key(template, fields, expected):
    assert object_key(compile_template(template), record(**fields), prefix="openrouter-traces",
                      fallback_unix_nano=0) == expected


def test_missing_start_time_uses_the_fallback():
    key = object_key(compile_template("{prefix}/{date}"), record(start=None), prefix="p", fallback_unix_nano=START)
    assert key == "p/2026-09-28/gen-1790606294-sdYHTGXUVyDKWCLqX5Op-1790606294.json"


@pytest.mark.parametrize("value,expected", [
    ("plain", "plain"), ("v1.2", "v1.2"), ("gen-1790606294-sdYHTGXUVyDKWCLqX5Op", "gen-1790606294-sdYHTGXUVyDKWCLqX5Op"),
    ("a/b", marked("a_b", "a/b")), ("..", marked("__", "..")), (".", marked(".", ".")), ("", marked("", "")),
    ("a\\b", marked("a_b", "a\\b")), ("x\x00y\x7f", marked("x_y_", "x\x00y\x7f")), ("a~b", marked("a_b", "a~b")),
    # Unicode line separators, NEL and bidi overrides cannot reach a key either
    ("x\u2028y", marked("x_y", "x\u2028y")), ("x\x85y", marked("x_y", "x\x85y")), ("x\u202ey", marked("x_y", "x\u202ey")),
    ("x" * 500, marked("x" * 83, "x" * 500)),
])
def test_sanitize(value, expected):
    assert sanitize(value) == expected


@pytest.mark.parametrize("ids", [
    ("gen-col/1", "gen-col_1", "gen-col\\1"),  # cleaned alike, kept apart by the hash
    ("gen-dd..1", "gen-dd__1"),
    ("a" * 200 + "1", "a" * 200 + "2"),  # cut alike
    ("gen-1~" + hashlib.sha256(b"gen-1/").hexdigest()[:16], "gen-1/"),  # a forged mark is changed too
])
def test_different_ids_never_share_a_key(ids):
    template = compile_template("{prefix}/{date}")
    keys = {object_key(template, record(trace_id=i, generation_id=i), prefix="p", fallback_unix_nano=0) for i in ids}
    assert len(keys) == len(ids)


@pytest.mark.parametrize("trace_id", ["😀" * 200, "é" * 1000, "x" * 5000, "\u202e" * 300])
def test_keys_fit_s3_and_file_system_byte_limits(trace_id):
    template = compile_template("{prefix}/{apiKeyName}/{keyName}/{date}")
    key = object_key(template, record(trace_id=trace_id, generation_id=None, api_key_name="🔑" * 300,
                                      key_name="k" * 400), prefix="p" * 255, fallback_unix_nano=0)
    assert len(key.encode()) <= 1024
    segments = key.split("/")
    assert all(len(segment.encode()) <= 255 for segment in segments)
    assert len(segments[-1].encode()) <= 200  # room for the local sink's temporary name
    assert segments[0] == "p" * 255 and all(segment not in ("", ".", "..") for segment in segments)


def test_a_template_that_could_render_over_1024_bytes_is_refused():
    with pytest.raises(ValueError, match="1024 bytes"):
        compile_template("{prefix}/" + "/".join(["x" * 200] * 2) + "/{apiKeyName}/{keyName}/{apiKeyName}")


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


def test_folders_differ_by_hour_and_by_name_whatever_came_before():
    """Folders are remembered per hour and name: one rendered earlier never stands in for another."""
    template = compile_template("{prefix}/{date}/{hour}/{apiKeyName}")
    seen = {}
    for hours in (0, 1, 24, 0):
        for name in ("a", "b", None):
            key = object_key(template, record(start=ZERO_HOUR + hours * 3600 * 10**9 + 59 * 60 * 10**9,
                                              api_key_name=name), prefix="p", fallback_unix_nano=0)
            folder = key.rsplit("/", 1)[0]
            day = "2026-09-29" if hours == 24 else "2026-09-28"
            assert folder == f"p/{day}/{hours % 24:02d}/{name or 'openrouter'}"
            seen.setdefault(folder, key)
    assert len(seen) == 9
    # the same hour through two templates and two prefixes
    assert object_key(compile_template("{prefix}/{hour}"), record(), prefix="q", fallback_unix_nano=0).startswith("q/14/")
    assert object_key(compile_template("{prefix}/{date}"), record(), prefix="q", fallback_unix_nano=0).startswith(
        "q/2026-09-28/")

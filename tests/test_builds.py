"""The decode core's two builds, both tested: compiled with mypyc (what .ci/run installs, with
OTEL_S3_BRIDGE_COMPILE=1) and the pure-Python sources it is built from (what a plain install runs,
and the fallback). The whole suite runs on the build the checkout has; the core's own tests run
again here on the pure sources, in a child pytest with OTEL_S3_BRIDGE_PURE=1."""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
import subprocess
import sys
from pathlib import Path

import otel_s3_bridge
from otel_s3_bridge import compiled
from otel_s3_bridge.decode.prepare import ExportContext, PreparedExport, SpanHalf
from otel_s3_bridge.decode.spans import ParsedRequest, Span
from otel_s3_bridge.enrich.pricing import PriceBook, Rates
from otel_s3_bridge.govern.policy import RecordPolicy
from otel_s3_bridge.lake.keys import compile_template

ROOT = Path(__file__).resolve().parent.parent
# The in-process tests of parsing, decoding, pricing, keys, encoding and the spool's entries and
# queue (no server, no S3).
CORE_TESTS = ("tests/test_totality.py", "tests/test_decode.py", "tests/test_conventions.py", "tests/test_keys.py",
              "tests/test_poison_input.py", "tests/test_lake.py", "tests/test_schema.py", "tests/test_spool.py",
              "tests/test_builds.py::test_the_running_build_is_the_one_chosen",
              "tests/test_builds.py::test_what_crosses_to_a_decode_process_pickles_and_comes_back_equal")


def test_the_running_build_is_the_one_chosen():
    modules = compiled.running_build()
    expected = "compiled" if otel_s3_bridge.BUILD == "compiled" else "pure"
    assert set(modules.values()) == {expected}, modules
    if os.environ.get(compiled.PURE_VARIABLE) == "1":
        assert otel_s3_bridge.BUILD == "pure (asked)"
    elif os.environ.get("OTEL_S3_BRIDGE_COMPILE") == "1":
        # .ci/run compiled the core: a silent fallback to the sources would leave the build untested.
        assert otel_s3_bridge.BUILD == "compiled"


def test_what_crosses_to_a_decode_process_pickles_and_comes_back_equal():
    """Frozen dataclasses compiled by mypyc refuse pickle's field-by-field restore (an export
    prepared in a decode process then failed with 503): each one that crosses the pipe, both ways."""
    context = ExportContext(encoding="protobuf", coding="gzip", key_name="sdk", transport="http/protobuf",
                            received_at_unix_nano=1, non_llm_spans="drop",
                            template=compile_template("{prefix}/{apiKeyName}/{date}"), prefix="p",
                            max_request_bytes=10, max_resource_bytes=11, max_output_bytes=12, lake=True,
                            prices=PriceBook({"m": Rates(1.0, 2.0, 0.5, 1.5, 2.0)}),
                            policy=RecordPolicy(content="hash"))
    span = Span(trace_id="a" * 32, span_id="b" * 16, parent_span_id=None, name="chat", kind=3,
                start_time_unix_nano=1, end_time_unix_nano=2, status_code=0, status_message="",
                attributes={"gen_ai.request.model": "m"}, events=[], links=[], resource={}, scope_name="s",
                scope_version="1")
    prepared = PreparedExport(objects=[("k", b"{}", 1)], input_bytes=3, output_bytes=2, rejected_spans=0, problems=[],
                              halves=[SpanHalf(index=0, pair="ab", key="k", document=b"{}")])
    for value in (context, context.template, context.prices, PriceBook(), ParsedRequest(spans=[span]), prepared):
        again = pickle.loads(pickle.dumps(value))
        assert again == value and type(again) is type(value)


def test_the_pure_sources_pass_the_core_tests():
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *CORE_TESTS],
                         cwd=ROOT, env={**os.environ, compiled.PURE_VARIABLE: "1"}, capture_output=True, text=True,
                         timeout=1800)
    summary = run.stdout.strip().splitlines()[-1] if run.stdout.strip() else run.stderr[-2000:]
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    passed = re.search(r"(\d+) passed", summary)
    assert passed and int(passed.group(1)) >= 150 and "skipped" not in summary, summary


def _package_copy(tmp_path: Path) -> Path:
    """The package (and mypyc's shared module, if built) copied elsewhere, to edit a source."""
    shutil.copytree(ROOT / "otel_s3_bridge", tmp_path / "otel_s3_bridge",
                    ignore=shutil.ignore_patterns("__pycache__"))
    for shared in ROOT.glob("otel_s3_bridge_core__mypyc*"):
        shutil.copy2(shared, tmp_path / shared.name)
    if not (tmp_path / "otel_s3_bridge" / compiled.BUILT_FROM).exists():
        # No compiled build here: say the sources are what one was built from, to test the choice.
        (tmp_path / "otel_s3_bridge" / compiled.BUILT_FROM).write_text(
            json.dumps(compiled.source_digests(tmp_path / "otel_s3_bridge")))
    return tmp_path


def _build_in(folder: Path) -> str:
    program = ("import otel_s3_bridge, json; from otel_s3_bridge.compiled import running_build; "
               "print(json.dumps([otel_s3_bridge.BUILD, sorted(set(running_build().values()))]))")
    env = {key: value for key, value in os.environ.items() if key != compiled.PURE_VARIABLE}
    return subprocess.run([sys.executable, "-c", program], cwd=folder, env={**env, "PYTHONPATH": str(folder)},
                          capture_output=True, text=True, check=True).stdout.strip()


def test_a_compiled_build_is_used_only_with_the_sources_it_was_built_from(tmp_path):
    copy = _package_copy(tmp_path)
    built = list((copy / "otel_s3_bridge").rglob("*.so"))
    as_built = _build_in(copy)
    assert as_built == ('["compiled", ["compiled"]]' if built else '["compiled", ["pure"]]'), as_built
    records = copy / "otel_s3_bridge" / "decode" / "records.py"
    records.write_text(records.read_text() + "\n# an edit after the build\n")
    assert _build_in(copy) == '["pure (compiled build is stale)", ["pure"]]'

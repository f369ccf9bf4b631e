"""Real instrumentation libraries, exported the way apps export, through the running bridge.

Each case runs an app (`instrumented/client.py`, or `instrumented/vercel_ai.mjs` in Node) that
uses the official `openai` client (or the Vercel AI SDK) against a local fake OpenAI server
(`instrumented/fake_openai.py`), instrumented by one library's real, pinned package, exporting
OTLP to the bridge span by span (`simple`) and in one batch (`batch`). The records read back from
the bucket are compared with what the fake server answered (its own log of answers, not
constants of this test): one record per call, model, usage, prompt, completion, error, session
and user, as far as each library sends them (`SENDS` says what each does, from its docs).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import TOKENS, S3Bridge, eventually, free_port, list_keys, new_bucket, read_json, wait_for_port

HERE = Path(__file__).parent / "instrumented"
QUESTION = "What is the capital of France?"

# What each library puts on its records (beyond model, input/output tokens and status, which all send).
SENDS = {
    "openai-v2": {"content": "events"},  # prompt and completion as GenAI event log records
    "genai-util": {"content": "events", "cached": True, "reasoning": True},  # the operation-details event
    "openinference": {"content": "span", "cached": True, "reasoning": True, "session": True},
    "openllmetry": {"content": "span", "cached": True, "reasoning": "not streamed", "session": True},
    "langfuse": {"content": "span", "cached": True, "reasoning": True, "session": True},
    "vercel-ai": {"content": "span", "cached": True, "reasoning": True, "session": True},
}
SESSION_ID, USER_ID = "session-7f3a", "customer-42"


@pytest.fixture(scope="module")
def fake_openai(tmp_path_factory):
    answers = tmp_path_factory.mktemp("fake-openai") / "answers.ndjson"
    answers.touch()
    port = free_port()
    process = subprocess.Popen([sys.executable, str(HERE / "fake_openai.py"), "--port", str(port),
                                "--answers", str(answers)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    wait_for_port(port, process)
    yield f"http://127.0.0.1:{port}/v1", answers
    process.terminate()
    process.wait(10)


@pytest.fixture(scope="module")
def library_bridge(moto, s3, tmp_path_factory):
    # --ack spool (the default): completing a record overwrites an object that may already be uploaded
    bridge = S3Bridge(moto, new_bucket(s3), tmp_path_factory.mktemp("libraries") / "bridge.log")
    yield bridge
    assert bridge.stop() == 0


def _run_app(library: str, mode: str, fake: str, bridge: S3Bridge) -> list[str]:
    base = f"http://127.0.0.1:{bridge.http_port}"
    if library == "vercel-ai":
        command = ["node", str(HERE / "vercel_ai.mjs"), mode, fake, base, TOKENS["sdk"]]
    else:
        command = [sys.executable, str(HERE / "client.py"), library, mode, "--fake", fake, "--bridge", base,
                   "--token", TOKENS["sdk"]]
    finished = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=HERE)
    assert finished.returncode == 0, finished.stderr[-3000:]
    return json.loads(finished.stdout.strip().splitlines()[-1])


def _answers(path: Path, count: int) -> list[dict]:
    lines = path.read_text().splitlines()
    return [json.loads(line) for line in lines[-count:]]


def _records_by_trace(s3, bucket: str, trace_ids: list[str]) -> dict[str, list[dict]]:
    found: dict[str, list[dict]] = {trace_id: [] for trace_id in trace_ids}
    for key in list_keys(s3, bucket):
        record = read_json(s3, bucket, key)
        if record["otel_trace_id"] in found:
            found[record["otel_trace_id"]].append(record)
    return found


def _text_of(prompt) -> str:
    return json.dumps(prompt)


@pytest.mark.parametrize("mode", ["simple", "batch"])
@pytest.mark.parametrize("library", list(SENDS))
def test_library_records_match_what_the_server_answered(library, mode, fake_openai, library_bridge, s3):
    if library == "vercel-ai":
        assert shutil.which("node") and (HERE / "node_modules").is_dir(), \
            "Node.js and tests/instrumented/node_modules are needed: .ci/run installs them (npm ci)"
    fake, answers_path = fake_openai
    sends = SENDS[library]
    trace_ids = _run_app(library, mode, fake, library_bridge)
    answers = _answers(answers_path, 3)
    assert [a["request_model"] for a in answers] == ["gpt-4o-mini", "gpt-4o-mini", "no-such-model"]

    def complete() -> bool:
        library_bridge.wait_until_uploaded()
        records = _records_by_trace(s3, library_bridge.bucket, trace_ids)
        if any(len(found) != 1 for found in records.values()):
            return False
        return sends["content"] != "events" or all(r[0]["prompt"] is not None for r in records.values())

    eventually(complete, 60, lambda: f"records: {_records_by_trace(s3, library_bridge.bucket, trace_ids)}")
    found = _records_by_trace(s3, library_bridge.bucket, trace_ids)
    records = {trace_id: only[0] for trace_id, only in found.items()}
    chat, stream, missing = (records[trace_id] for trace_id in trace_ids)

    for record, answer, call in ((chat, answers[0], "chat"), (stream, answers[1], "stream")):
        usage = answer["usage"]
        assert record["model"] == answer["model"], record
        assert record["status"] in ("ok", "unset")
        assert (record["input_tokens"], record["output_tokens"], record["total_tokens"]) == (
            usage["prompt_tokens"], usage["completion_tokens"], usage["total_tokens"])
        if sends.get("cached"):
            assert record["cached_tokens"] == usage["prompt_tokens_details"]["cached_tokens"]
        reasoning = sends.get("reasoning")
        if reasoning is True or (reasoning == "not streamed" and call == "chat"):
            assert record["reasoning_tokens"] == usage["completion_tokens_details"]["reasoning_tokens"]
        assert f"{QUESTION} ({call})" in _text_of(record["prompt"]), record["prompt"]
        assert record["completion"]["text"] == answer["text"], record["completion"]
        if sends.get("session"):
            assert (record["session_id"], record["customer_id"]) == (SESSION_ID, USER_ID)
        assert record["ingest"]["key_name"] == "sdk"

    assert missing["status"] == "error" and "no-such-model" in (missing["status_message"] or "")
    assert missing["model"] == "no-such-model" or missing["requested_model"] == "no-such-model"
    assert f"{QUESTION} (missing)" in _text_of(missing["prompt"]), missing["prompt"]
    assert missing["completion"] is None

"""What each key policy costs, in-process: `prepare_export` (parse, decode, govern, price, key,
encode) over OTLP/protobuf exports of 100 GenAI chat spans whose prompt and completion hold about
1 KiB and 8 KiB of text, under each content policy, identities = hmac, sampling, and the per-key
rate limiter's admit + charge. Content costs are given per KiB of message text (the difference
to `keep` over the same bodies); the others per span. `redact` is also measured on message text
taken from the labelled corpus (tests/redact_corpus: something to replace every ~60 characters),
and its detectors' precision and recall per kind on that corpus are reported. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from bench import payloads
from otel_s3_bridge.decode.otlp import PROTOBUF
from otel_s3_bridge.decode.prepare import ExportContext, prepare_export
from otel_s3_bridge.govern.limits import KeyRates
from otel_s3_bridge.govern.policy import PseudonymKey, RecordPolicy
from otel_s3_bridge.lake.keys import compile_template
from tests.redact_corpus import corpus

SPANS = 100
EXPORTS = 20
START = 1_790_000_000_000_000_000
WORDS = "The quarterly report for account 4471 shows revenue up 12 % on the prior period, driven by "


def bodies(text_bytes: int, words: str = WORDS) -> tuple[list[bytes], int]:
    """Exports whose every span carries a prompt and a completion of about `text_bytes` each;
    returns them and the message text per span in bytes."""
    text = (words * (text_bytes // len(words) + 1))[:text_bytes]
    out = []
    for index in range(EXPORTS):
        document = payloads.genai_batch(index, SPANS, START, content=True)
        for span in document["resourceSpans"][0]["scopeSpans"][0]["spans"]:
            for attribute in span["attributes"]:
                value = attribute["value"].get("stringValue", "")
                if "Capital of France?" in value or "Paris." in value:
                    attribute["value"]["stringValue"] = value.replace("Capital of France?", text).replace(
                        "Paris.", text)
        out.append(payloads.to_protobuf(document))
    return out, 2 * text_bytes


def context(policy: RecordPolicy) -> ExportContext:
    return ExportContext(encoding=PROTOBUF, coding="", key_name="bench", transport="http/protobuf",
                         received_at_unix_nano=START, non_llm_spans="drop",
                         template=compile_template("{prefix}/{date}"), prefix="bench", max_request_bytes=1 << 30,
                         max_resource_bytes=16384, max_output_bytes=1 << 30, policy=policy)


def us_per_span(all_bodies: list[bytes], policy: RecordPolicy, repeats: int) -> float:
    ctx = context(policy)
    timings = []
    for _ in range(repeats):
        started = time.process_time()
        for body in all_bodies:
            prepare_export(body, ctx)
        timings.append((time.process_time() - started) / (len(all_bodies) * SPANS) * 1e6)
    return min(timings)  # the least disturbed


def limiter_us_per_export(exports: int = 100_000) -> float:
    rates = KeyRates(lambda name: (1e12, 1e15))
    started = time.process_time()
    for _ in range(exports):
        rates.admit("bench")
        rates.charge("bench", SPANS, 150_000)
    return (time.process_time() - started) / exports * 1e6


def python_loop_seconds() -> float:
    """CPU seconds of ten million additions: this machine's speed today, beside the figures."""
    started = time.process_time()
    total = 0
    for number in range(10_000_000):
        total += number
    return time.process_time() - started


def redact_quality() -> dict:
    """Precision and recall per kind on the labelled corpus; findings in the ordinary one."""
    from otel_s3_bridge.govern.redact import Redactor
    labelled = corpus.score(corpus.documents(corpus.LABELLED), Redactor().find)
    ordinary = corpus.score(corpus.documents(corpus.ORDINARY), Redactor().find)
    return {"kinds": {kind: {"labels": labelled.labels[kind], "recall": labelled.recall(kind),
                             "findings": labelled.findings[kind], "precision": labelled.precision(kind)}
                      for kind in sorted(labelled.labels | labelled.findings)},
            "ordinary_documents": len(corpus.documents(corpus.ORDINARY)),
            "ordinary_findings": sum(ordinary.findings.values())}


def measure(repeats: int) -> dict:
    key = PseudonymKey("kbench", b"0123456789abcdef0123456789abcdef")
    policies = {"keep": RecordPolicy(), "drop": RecordPolicy(content="drop"), "hash": RecordPolicy(content="hash"),
                "redact": RecordPolicy(content="redact"),
                "identities_hmac": RecordPolicy(identities="hmac", pseudonym=key),
                "identities_drop": RecordPolicy(identities="drop"), "sample_0.5": RecordPolicy(sample=0.5)}
    sizes = {}
    for text_bytes in (1024, 8192):
        all_bodies, content_bytes = bodies(text_bytes)
        per_span = {name: us_per_span(all_bodies, policy, repeats) for name, policy in policies.items()}
        kib = content_bytes / 1024
        sizes[f"{text_bytes // 1024}KiB"] = {
            "message_kib_per_span": kib, "us_per_span": per_span,
            "content_us_per_kib": {name: (per_span[name] - per_span["keep"]) / kib
                                   for name in ("drop", "hash", "redact")},
            "redact_over_decode": (per_span["redact"] - per_span["keep"]) / per_span["keep"],
            "identities_us_per_span": {name: per_span[name] - per_span["keep"]
                                       for name in ("identities_hmac", "identities_drop")},
            "sample_half_us_per_span": per_span["sample_0.5"] - per_span["keep"]}
    dense = {}
    corpus_text = "\n".join(document.text for document in corpus.documents(corpus.LABELLED))
    for text_bytes in (1024, 8192):
        all_bodies, content_bytes = bodies(text_bytes, corpus_text)
        per_span = {name: us_per_span(all_bodies, policies[name], repeats) for name in ("keep", "redact")}
        dense[f"{text_bytes // 1024}KiB"] = {
            "message_kib_per_span": content_bytes / 1024, "us_per_span": per_span,
            "redact_us_per_kib": (per_span["redact"] - per_span["keep"]) / (content_bytes / 1024),
            "redact_over_decode": (per_span["redact"] - per_span["keep"]) / per_span["keep"]}
    limiter = statistics.median(limiter_us_per_export() for _ in range(3))
    return {"when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "spans_per_export": SPANS, "exports": EXPORTS,
            "sizes": sizes, "redact_dense": dense, "redact_quality": redact_quality(),
            "python_loop_seconds": python_loop_seconds(),
            "rate_limit_us_per_export": limiter, "rate_limit_us_per_span": limiter / SPANS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    print(json.dumps(measure(parser.parse_args().repeats), indent=1))


if __name__ == "__main__":
    main()

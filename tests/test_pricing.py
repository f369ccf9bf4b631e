"""A price for every call: records whose senders report no cost are priced from their tokens, by
genai-prices' table or the deployment's own `--prices` file, through a real bridge into S3 (moto).

Every expected figure below is computed here from the providers' published prices (USD per million
tokens), not from the bridge or the table:
- OpenAI gpt-4o-mini: $0.15 input, $0.075 cached input, $0.60 output; gpt-4o: $2.50 / $10.00
- Anthropic Claude Sonnet 4.5: $3 input, $3.75 5-minute cache writes, $0.30 cache hits, $15 output
  (the same on Google Vertex AI); Claude 3.5 Sonnet on Amazon Bedrock: $3 / $15
- DeepSeek deepseek-chat: $0.27 input, $1.10 output from 00:30 to 16:30 UTC, half that off-peak
"""

from __future__ import annotations

import datetime
import json
import random
import threading
import uuid

import pytest

from conftest import S3Bridge, attribute, capture_lines, eventually, list_keys, new_bucket, read_json, \
    root_span
from otel_s3_bridge.enrich import pricing
from otlp_builders import request, span
from test_report import _cli

M = 1_000_000
DAY = datetime.datetime(2026, 11, 20, tzinfo=datetime.UTC)


def _ns(hour: int, minute: int = 0) -> int:
    return int((DAY + datetime.timedelta(hours=hour, minutes=minute)).timestamp()) * 10 ** 9


def _gen_ai(model: str, provider: str, input_tokens: int | None, output_tokens: int | None, *,
            response_model: str | None = None, start: int | None = None, **usage) -> dict:
    trace = uuid.uuid4().hex
    tokens = {"input_tokens": input_tokens, "output_tokens": output_tokens, **usage}
    attributes = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": provider, "gen_ai.request.model": model,
                  **{f"gen_ai.usage.{name}": value for name, value in tokens.items() if value is not None}}
    if response_model:
        attributes["gen_ai.response.model"] = response_model
    return span(trace, trace[:16], f"chat {model}", attributes, start=start or _ns(10))


def _openinference(model: str, provider: str, input_tokens: int, output_tokens: int, **extra) -> dict:
    trace = uuid.uuid4().hex
    return span(trace, trace[:16], "ChatCompletion", {
        "openinference.span.kind": "LLM", "llm.model_name": model, "llm.provider": provider,
        "llm.token_count.prompt": input_tokens, "llm.token_count.completion": output_tokens, **extra}, start=_ns(11))


def _openllmetry(model: str, system: str, input_tokens: int, output_tokens: int) -> dict:
    trace = uuid.uuid4().hex
    return span(trace, trace[:16], "openai.chat", {
        "llm.request.type": "chat", "gen_ai.system": system, "gen_ai.request.model": model,
        "gen_ai.usage.prompt_tokens": input_tokens, "gen_ai.usage.completion_tokens": output_tokens}, start=_ns(12))


def _published(input_tokens, output_tokens, input_rate, output_rate, *, cached=0, cached_rate=0.0, written=0,
               written_rate=0.0):
    """(input cost, output cost, cost) from published rates per million tokens."""
    input_cost = ((input_tokens - cached - written) * input_rate + cached * cached_rate + written * written_rate) / M
    output_cost = output_tokens * output_rate / M
    return input_cost, output_cost, input_cost + output_cost


PRICES = """# negotiated rates
[models."acme/my-finetune-7b"]
input_per_million = 1.0
output_per_million = 2.0

[models."gpt-4o"]   # a discount on the list price
input_per_million = 2.0
output_per_million = 8.0
cache_read_per_million = 1.0
"""


@pytest.fixture(scope="module")
def priced(moto, s3, tmp_path_factory):
    directory = tmp_path_factory.mktemp("priced")
    prices = directory / "prices.toml"
    prices.write_text(PRICES)
    bridge = S3Bridge(moto, new_bucket(s3), directory / "bridge.log", ["--prices", str(prices), "--ack", "upload"])
    bridge.prices = prices
    yield bridge
    assert bridge.stop() == 0


def _store(bridge, s3, *spans: dict) -> dict[str, dict]:
    """Post the spans in one export; the stored records by span id."""
    answer = bridge.post(json.dumps(request(*spans)).encode())
    assert answer.status_code == 200, answer.text
    wanted = {body["spanId"] for body in spans}
    records = {}
    for key in list_keys(s3, bridge.bucket):
        record = read_json(s3, bridge.bucket, key)
        if record["span_id"] in wanted:
            records[record["span_id"]] = record
    assert set(records) == wanted
    return records


def _costs(record: dict) -> tuple:
    return record["input_cost"], record["output_cost"], record["cost"]


def test_calls_without_a_reported_cost_are_priced_from_their_tokens(priced, s3):
    cases = {
        # OTel GenAI (openai-v2): the response model's dated name, tried first
        "dated": (_gen_ai("gpt-4o-mini", "openai", 2000, 1000, response_model="gpt-4o-mini-2024-07-18"),
                  _published(2000, 1000, 0.15, 0.60)),
        # the example: OpenInference, claude-sonnet-4-5, 2,000 in and 1,000 out: $0.021
        "openinference": (_openinference("claude-sonnet-4-5", "anthropic", 2000, 1000), _published(2000, 1000, 3, 15)),
        # OpenLLMetry, a gateway's vendor/model name
        "vendor/model": (_openllmetry("openai/gpt-4o-mini", "openai", 2000, 1000), _published(2000, 1000, 0.15, 0.60)),
        # cache reads and writes at their own rates
        "cache": (_gen_ai("claude-sonnet-4-5", "anthropic", 2000, 1000, **{"cache_read.input_tokens": 500,
                                                                         "cache_creation.input_tokens": 1000}),
                  _published(2000, 1000, 3, 15, cached=500, cached_rate=0.30, written=1000, written_rate=3.75)),
        "cached": (_gen_ai("gpt-4o-mini", "openai", 2000, 1000, **{"cache_read.input_tokens": 1000}),
                   _published(2000, 1000, 0.15, 0.60, cached=1000, cached_rate=0.075)),
        # cloud ids: Bedrock, Vertex AI
        "bedrock": (_gen_ai("anthropic.claude-3-5-sonnet-20240620-v1:0", "aws.bedrock", 2000, 1000),
                    _published(2000, 1000, 3, 15)),
        "vertex": (_gen_ai("claude-sonnet-4-5@20250929", "gcp.vertex_ai", 2000, 1000), _published(2000, 1000, 3, 15)),
        # a response model (an Azure deployment's name) no table knows: the requested model's price
        "requested": (_gen_ai("gpt-4o-mini", "openai", 2000, 1000, response_model="my-deployment-7"),
                      _published(2000, 1000, 0.15, 0.60)),
        # the call's time: DeepSeek's peak and off-peak hours
        "peak": (_gen_ai("deepseek-chat", "deepseek", 2000, 1000, start=_ns(10)), _published(2000, 1000, 0.27, 1.10)),
        "off-peak": (_gen_ai("deepseek-chat", "deepseek", 2000, 1000, start=_ns(20)),
                     _published(2000, 1000, 0.135, 0.55)),
    }
    records = _store(priced, s3, *(body for body, _ in cases.values()))
    for name, (body, expected) in cases.items():
        record = records[body["spanId"]]
        assert record["cost_source"] == "estimated", name
        assert _costs(record) == pytest.approx(expected, rel=1e-9, abs=1e-15), name
    assert records[cases["openinference"][0]["spanId"]]["cost"] == 0.021  # to the digit


def test_a_model_no_table_knows_keeps_a_null_cost_and_a_reported_cost_is_kept(priced, s3):
    unknown = _gen_ai("acme-llm-9000", "acme", 2000, 1000)
    no_tokens = _gen_ai("gpt-4o-mini", "openai", None, None)
    reported = _openinference("claude-sonnet-4-5", "anthropic", 2000, 1000, **{"llm.cost.total": 0.5})
    records = _store(priced, s3, unknown, no_tokens, reported)
    assert _costs(records[unknown["spanId"]]) == (None, None, None)
    assert records[unknown["spanId"]]["cost_source"] is None
    assert records[no_tokens["spanId"]]["cost"] is None and records[no_tokens["spanId"]]["cost_source"] is None
    assert records[reported["spanId"]]["cost"] == 0.5  # the sender's figure, never the table's $0.021
    assert records[reported["spanId"]]["cost_source"] == "reported"
    assert records[reported["spanId"]]["input_cost"] is None


def test_an_openrouter_delivery_keeps_its_reported_cost(priced, s3):
    line = capture_lines("claude-code.ndjson")[0]
    delivery = json.loads(line)
    root = root_span(delivery)
    answer = priced.post(line)
    assert answer.status_code == 200
    generation = attribute(root, "gen_ai.response.id")
    keys = [key for key in list_keys(s3, priced.bucket) if generation in key]
    record = read_json(s3, priced.bucket, keys[0])
    assert record["cost"] == attribute(root, "gen_ai.usage.total_cost") and record["cost"] > 0
    assert record["cost_source"] == "reported"


def test_the_deployments_own_rates_win_and_are_read_again_when_they_change(priced, s3):
    finetune = _gen_ai("acme/my-finetune-7b", "acme", 2000, 1000)
    discounted = _gen_ai("gpt-4o", "openai", 2000, 1000, **{"cache_read.input_tokens": 1000})
    records = _store(priced, s3, finetune, discounted)
    assert _costs(records[finetune["spanId"]]) == pytest.approx(_published(2000, 1000, 1, 2))
    assert _costs(records[discounted["spanId"]]) == pytest.approx(
        _published(2000, 1000, 2, 8, cached=1000, cached_rate=1))  # not the list price's $0.0125
    assert records[finetune["spanId"]]["cost_source"] == "estimated"

    priced.prices.write_text(PRICES.replace("input_per_million = 1.0", "input_per_million = 3.0"))

    def repriced() -> bool:
        again = _gen_ai("acme/my-finetune-7b", "acme", 2000, 1000)
        return _store(priced, s3, again)[again["spanId"]]["cost"] == pytest.approx(_published(2000, 1000, 3, 2)[2])

    eventually(repriced, 30, lambda: "the changed prices file was not read again")
    priced.prices.write_text(PRICES.replace("output_per_million = 2.0", "output_per_million = -2.0"))
    eventually(lambda: "line 4" in priced.log and "keeping what was read before" in priced.log, 30,
               lambda: priced.log[-2000:])
    again = _gen_ai("acme/my-finetune-7b", "acme", 2000, 1000)
    assert _store(priced, s3, again)[again["spanId"]]["cost"] == pytest.approx(_published(2000, 1000, 3, 2)[2])
    priced.prices.write_text(PRICES)


def test_a_bad_prices_file_refuses_start_naming_the_line(tmp_path):
    prices = tmp_path / "prices.toml"
    prices.write_text(PRICES.replace("cache_read_per_million = 1.0", "cache_read_per_millon = 1.0"))
    result = _cli("serve", "--prices", str(prices), "--output-dir", str(tmp_path))
    assert result.returncode == 2
    assert "--prices: line 9: unknown rate 'cache_read_per_millon' for 'gpt-4o'" in result.stderr


def test_spend_metrics_and_report_say_what_is_estimated(moto, s3, tmp_path):
    bridge = S3Bridge(moto, new_bucket(s3), tmp_path / "bridge.log", ["--ack", "upload"])
    try:
        estimated = [_gen_ai("gpt-4o-mini", "openai", 2000, 1000), _gen_ai("gpt-4o-mini", "openai", 4000, 0)]
        reported = _openinference("gpt-4o-mini", "openai", 2000, 1000, **{"llm.cost.total": 0.25})
        _store(bridge, s3, *estimated, reported)
        expected_estimate = _published(2000, 1000, 0.15, 0.6)[2] + _published(4000, 0, 0.15, 0.6)[2]
        samples = bridge.metrics()
        labels = lambda source: (("model", "gpt-4o-mini"), ("provider", "openai"), ("source", source))  # noqa: E731
        assert samples[("otel_s3_bridge_llm_cost_usd_total", labels("estimated"))] == pytest.approx(expected_estimate)
        assert samples[("otel_s3_bridge_llm_cost_usd_total", labels("reported"))] == pytest.approx(0.25)
    finally:
        assert bridge.stop() == 0
    where = ["--bucket", bridge.bucket, "--endpoint-url", moto.url, "--from", "2026-11-20", "--to", "2026-11-20"]
    report = json.loads(_cli("report", "--by", "model", "--format", "json", *where).stdout)
    row = report["rows"][0]
    assert row["calls"] == 3 and row["cost"] == pytest.approx(expected_estimate + 0.25)
    assert row["estimated_cost"] == pytest.approx(expected_estimate)
    table = _cli("report", "--by", "model", *where)
    assert "est. $" in table.stdout
    page = tmp_path / "report.html"
    assert _cli("report", "--html", str(page), *where).returncode == 0
    assert "of it estimated from tokens" in page.read_text()


# --- the arithmetic, in process ------------------------------------------------------------------------

def test_per_token_rates_equal_the_tables_own_arithmetic():
    """Every price of genai-prices' table (tiered ones across their tiers): the bridge's per-token
    rates give what the table's own `calc_price` gives, on random usages."""
    chance = random.Random(7)
    when = datetime.datetime(2026, 11, 20, 12, tzinfo=datetime.UTC)
    compared = 0
    for provider in pricing._providers():
        for model in provider.models:
            model_price = model.get_prices(when)
            price = pricing._TablePrice(model_price)
            sizes = [0, 1, chance.randint(1, 5000), chance.randint(1, 400_000)]
            sizes += [start + delta for start in price.starts for delta in (0, 1)]
            for input_tokens in sizes:
                cached = chance.randint(0, input_tokens)
                written = chance.randint(0, input_tokens - cached)
                output_tokens = chance.randint(0, 20_000)
                tokens = pricing.Tokens(input_tokens, cached, written, output_tokens, chance.randint(0, output_tokens))
                table = model_price.calc_price(pricing.table_usage(tokens))
                mine = price.rates(tokens.input).costs(tokens)
                expected = (table["input_price"], table["output_price"], table["total_price"])
                assert mine == pytest.approx([float(value) for value in expected], rel=1e-9, abs=1e-12), \
                    (provider.id, model.id, tokens)
                compared += 1
    assert compared > 5000


def test_prices_are_never_fetched():
    """Only the table shipped in the package: genai-prices' updater (which downloads prices from
    GitHub) is never started, and no snapshot but the bundled one is in use."""
    from genai_prices import data_snapshot, update_prices

    record = {"model": "gpt-4o-mini", "provider": "openai", "input_tokens": 10, "output_tokens": 10}
    pricing.price_record(record, pricing.PriceBook(), 0)
    assert record["cost_source"] == "estimated"
    assert update_prices._shared_updater.thread is None
    assert data_snapshot._custom_snapshot is None
    assert not [thread for thread in threading.enumerate() if thread.name.startswith("genai_prices")]


@pytest.mark.parametrize("text, problem", [
    ('[models."m"]\ninput_per_million = 1\n', "line 1: 'm' needs output_per_million"),
    ('[models."m"]\ninput_per_million = 1\noutput_per_million = "2"\n', "line 3: output_per_million of 'm' must be"),
    ('[models."m"]\ninput_per_million = 1\noutput_per_million = 2\n[other]\n', "line 4: unknown table or key 'other'"),
    ('[models."m"]\ninput_per_million = 1\noutput_per_million = 2\n[models."M"]\ninput_per_million = 1\n'
     'output_per_million = 2\n', "line 4: 'M' is given twice"),
    ("[models.m\n", "not valid TOML"),
])
def test_price_file_problems_name_their_line(text, problem):
    with pytest.raises(pricing.PriceFileError) as refused:
        pricing.parse_price_file(text)
    assert problem in str(refused.value)


def test_cache_rates_default_to_the_input_rate():
    book = pricing.parse_price_file('[models."Acme/M"]\ninput_per_million = 4\noutput_per_million = 8\n')
    rates = book.rates_for("acme/m")
    assert (rates.input, rates.cache_read, rates.cache_write, rates.output, rates.reasoning) == (4, 4, 4, 8, 8)

"""A price for every call: a record whose sender reports no cost gets one computed from its tokens.

`price_record` fills `cost`, `input_cost`, `output_cost` and `cost_source` of a record that decode
built: a cost the sender reported (`cost_source` "reported") is never touched; otherwise the call
is priced from its token counts, `cost_source` "estimated", by the deployment's own rates
(`--prices FILE`: `PriceBook`) when they name the model, else by genai-prices' table (pydantic's
maintained price database, whose data ships inside the package), by provider, model and the
call's start time, with cache-read, cache-write and reasoning tokens at their own rates where the
table has them. The response model is tried first, then the requested model; names as users send
them (`openai/gpt-4o-mini`, dated ids, Bedrock, Vertex and Azure ids) are looked up as the table
knows them. A call no price is known for keeps `cost` null and `cost_source` null.

Speed: looking a model up costs 15-150 µs, and the table's own arithmetic 60 µs a call, against
about 70 µs to decode a span. So lookups are remembered (hits and misses, a bounded number of
names), and a price without tiers is turned once into per-token rates, read off the table's own
arithmetic on unit usages (a test holds the two equal on random usages); tiered prices go through
the table each time.

Pure but for `read_price_file` and `watch_price_file` (reading --prices, at start and when it changes):
no other I/O and no clock; genai-prices' `UpdatePrices` (which fetches prices from GitHub) is never
started, and nothing here imports it.
"""

from __future__ import annotations

import bisect
import datetime
import functools
import math
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from ..values import frozen_reduce
from ..watched_file import WatchedFile

REPORTED: Final = "reported"
ESTIMATED: Final = "estimated"
PER_MILLION: Final = 1_000_000
MAX_MODEL_CHARS: Final = 256  # longer names are nobody's model: not looked up
LOOKUPS_REMEMBERED: Final = 4096
LAST_NANOS: Final = 253402300799 * 10 ** 9  # 9999-12-31T23:59:59Z: later times are no dates


@dataclass(frozen=True, slots=True)
class Rates:
    """USD per million tokens of each kind (cache and reasoning tokens are parts of input and
    output), and USD per call. Sums are divided by a million last: a published $3 and $15 give
    $0.021, not 0.021000000000000001."""

    input: float
    output: float
    cache_read: float
    cache_write: float
    reasoning: float
    input_per_call: float = 0.0
    output_per_call: float = 0.0
    other_per_call: float = 0.0

    def __reduce__(self):
        return frozen_reduce(self)

    def rates(self, input_tokens: int) -> Rates:
        """The rates of a call of that size: the same whatever its size (the deployment's own
        rates have no tiers)."""
        return self

    def costs(self, tokens: Tokens) -> tuple[float, float, float]:
        """(input cost, output cost, cost) of a call."""
        cache_read, cache_write, reasoning = tokens.cache_read, tokens.cache_write, tokens.reasoning
        spent_on_input = (self.input * (tokens.input - cache_read - cache_write) + self.cache_read * cache_read
                          + self.cache_write * cache_write)
        spent_on_output = self.output * (tokens.output - reasoning) + self.reasoning * reasoning
        per_call = self.input_per_call + self.output_per_call + self.other_per_call
        return (self.input_per_call + spent_on_input / PER_MILLION,
                self.output_per_call + spent_on_output / PER_MILLION,
                per_call + (spent_on_input + spent_on_output) / PER_MILLION)


class Tokens:
    """A call's token counts as partitions: cache reads and writes are parts of the input,
    reasoning part of the output (senders' counts are clamped to agree). A plain class: compiled,
    it is a native one, built and read without calls into Python (a NamedTuple or a frozen
    dataclass cost ~5-7 k instructions a record)."""

    __slots__ = ("input", "cache_read", "cache_write", "output", "reasoning")

    def __init__(self, input: int, cache_read: int, cache_write: int, output: int, reasoning: int) -> None:
        self.input, self.cache_read, self.cache_write = input, cache_read, cache_write
        self.output, self.reasoning = output, reasoning


def tokens_of(record: dict[str, Any]) -> Tokens | None:
    """The record's counts; None when it has neither input nor output tokens."""
    input_tokens, output_tokens = _count(record.get("input_tokens")), _count(record.get("output_tokens"))
    if input_tokens is None and output_tokens is None:
        return None
    input_tokens, output_tokens = input_tokens or 0, output_tokens or 0
    cache_read = min(_count(record.get("cached_tokens")) or 0, input_tokens)
    cache_write = min(_count(record.get("cache_write_tokens")) or 0, input_tokens - cache_read)
    reasoning = min(_count(record.get("reasoning_tokens")) or 0, output_tokens)
    return Tokens(input_tokens, cache_read, cache_write, output_tokens, reasoning)


def _count(value: Any) -> int | None:
    return value if type(value) is int and value >= 0 else None


# --- the deployment's own rates (--prices FILE) ------------------------------------------------------

class PriceFileError(ValueError):
    """A --prices file that cannot be used; the message names the line."""


RATE_KEYS: Final = {"input_per_million": "input", "output_per_million": "output",
                    "cache_read_per_million": "cache_read", "cache_write_per_million": "cache_write"}
REQUIRED_KEYS: Final = ("input_per_million", "output_per_million")


@dataclass(frozen=True)
class PriceBook:
    """The deployment's own rates by model name (lower case), which win over the table."""

    rates: Mapping[str, Rates] = field(default_factory=dict)

    def __reduce__(self):
        return frozen_reduce(self)

    def rates_for(self, model: str) -> Rates | None:
        return self.rates.get(model.lower()) if self.rates else None


def parse_price_file(text: str) -> PriceBook:
    """A TOML file of `[models."NAME"]` tables with `input_per_million`, `output_per_million` and
    optionally `cache_read_per_million`, `cache_write_per_million` (USD per million tokens; cache
    rates default to the input rate). Raises PriceFileError naming the line of every problem."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise PriceFileError(f"not valid TOML: {error}") from None
    problems = [f"line {_line_of(text, key)}: unknown table or key {key!r} (expected [models.\"NAME\"])"
                for key in document if key != "models"]
    models = document.get("models", {})
    if not isinstance(models, dict):
        problems.append(f"line {_line_of(text, 'models')}: 'models' must be tables [models.\"NAME\"]")
        models = {}
    book: dict[str, Rates] = {}
    for name, table in models.items():
        line = _line_of(text, name)
        if not isinstance(table, dict):
            problems.append(f"line {line}: models.{name!r} must be a table of rates")
            continue
        mine: list[str] = []
        values: dict[str, float] = {}
        for key, value in table.items():
            if key not in RATE_KEYS:
                mine.append(f"line {_line_of(text, key, after=line)}: unknown rate {key!r} for {name!r} "
                            f"(known: {', '.join(RATE_KEYS)})")
            elif isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < math.inf:
                mine.append(f"line {_line_of(text, key, after=line)}: {key} of {name!r} must be a number "
                            "of USD per million tokens, 0 or more")
            else:
                values[RATE_KEYS[key]] = float(value)
        missing = [key for key in REQUIRED_KEYS if key not in table]
        if missing:
            mine.append(f"line {line}: {name!r} needs {' and '.join(missing)}")
        if not name.strip() or len(name) > MAX_MODEL_CHARS:
            mine.append(f"line {line}: a model name must have 1 to {MAX_MODEL_CHARS} characters")
        elif name.lower() in book:
            mine.append(f"line {line}: {name!r} is given twice (names are compared in lower case)")
        problems += mine
        if not mine:
            book[name.lower()] = Rates(
                input=values["input"], output=values["output"], cache_read=values.get("cache_read", values["input"]),
                cache_write=values.get("cache_write", values["input"]), reasoning=values["output"])
    if problems:
        raise PriceFileError("; ".join(problems))
    return PriceBook(book)


def _line_of(text: str, name: str, after: int = 0) -> int:
    """The first line (from `after`) that names `name` as a key or table; 0 when none does."""
    pattern = re.compile(r"(^|[\[.\s\"'])" + re.escape(name) + r"([\"'\]\s.=]|$)")
    for number, line in enumerate(text.splitlines(), start=1):
        if number >= max(after, 1) and pattern.search(line.split("#", 1)[0]):
            return number
    return after


def read_price_file(path: str) -> PriceBook:
    try:
        with open(path, encoding="utf-8") as file:
            return parse_price_file(file.read())
    except OSError as error:
        raise PriceFileError(f"cannot read {path}: {error.strerror}") from None
    except UnicodeDecodeError:
        raise PriceFileError(f"{path} is not UTF-8 text") from None


def watch_price_file(path: str | None) -> WatchedFile[PriceBook] | None:
    """The --prices file's rates, read again when it changes (see `watched_file`)."""
    if not path:
        return None
    return WatchedFile(path, read_price_file, what="prices file", initial=PriceBook(),
                       describe=lambda book: f"rates of {len(book.rates)} model(s)")


# --- genai-prices' table ----------------------------------------------------------------------------

@functools.cache
def _providers() -> list[Any]:
    from genai_prices import data_snapshot  # 2,000+ models: loaded at the first call that needs a price

    return data_snapshot.get_snapshot().providers


@functools.lru_cache(maxsize=256)
def _provider(name: str) -> Any:
    from genai_prices.data_snapshot import find_provider_by_id

    return find_provider_by_id(_providers(), name)


@functools.lru_cache(maxsize=LOOKUPS_REMEMBERED)
def _model(provider_name: str | None, model: str) -> tuple[Any, Any] | None:
    """(provider, model info) of the table for a model name sent with a provider name, or None.
    A provider the table knows is held to (its own fallbacks included: Azure to OpenAI, Vertex and
    Bedrock to Anthropic); an unknown one, or none, lets the model's name find its provider."""
    providers = _providers()
    provider = _provider(provider_name) if provider_name else None
    if provider is not None:
        found = provider.find_model(model, all_providers=providers)
        return (provider, found) if found is not None else None
    for candidate in providers:
        if candidate.model_match is not None and candidate.model_match.is_match(model.lower()):
            found = candidate.find_model(model, all_providers=providers)
            if found is not None:
                return candidate, found
    return None


def _candidates(provider: str | None, model: str) -> list[tuple[str | None, str]]:
    """The (provider, model) lookups a sent name stands for: as sent, then `vendor/model` as the
    vendor's model (OpenRouter's and LiteLLM's names) and as the bare model under the provider."""
    candidates = [(provider, model)]
    vendor, slash, bare = model.partition("/")
    if slash and vendor and bare:
        candidates += [(vendor, bare), (provider, bare)]
    return candidates


def table_lookup(provider: str | None, model: str) -> tuple[Any, Any] | None:
    if len(model) > MAX_MODEL_CHARS or (provider and len(provider) > MAX_MODEL_CHARS):
        return None
    for candidate_provider, candidate_model in _candidates(provider, model):
        found = _model(candidate_provider.lower() if candidate_provider else None, candidate_model)
        if found is not None:
            return found
    return None


class _TablePrice:
    """One price of the table as per-token rates: a price with tiers (the rate of every token set by
    the call's input tokens, a cliff at each tier's start) has rates per band of input tokens,
    read off the table's own arithmetic on unit usages within each band."""

    def __init__(self, model_price: Any) -> None:
        from genai_prices.types import TieredPrices

        self.model_price = model_price
        self.starts = sorted({tier.start for value in vars(model_price).values() if isinstance(value, TieredPrices)
                              for tier in value.tiers})
        self._bands: dict[int, Rates] = {}

    def rates(self, input_tokens: int) -> Rates:
        band = bisect.bisect_left(self.starts, input_tokens)  # a tier applies above its start
        rates = self._bands.get(band)
        if rates is None:
            rates = self._bands[band] = self._derive(band)
        return rates

    def _derive(self, band: int) -> Rates:
        from genai_prices.types import Usage

        calc = self.model_price.calc_price
        base = calc(Usage(input_tokens=0, output_tokens=0))
        # An input count inside the band: the rates of every kind of token depend on it alone.
        first = min(self.starts[0], PER_MILLION) if self.starts else PER_MILLION
        inside = (self.starts[band - 1] + 1) if band else first
        inside = max(inside, 1)
        plain = calc(Usage(input_tokens=inside, output_tokens=0))

        def input_rate(**usage: int) -> float:  # per million tokens, in the table's decimals until the end
            spent = calc(Usage(input_tokens=inside, output_tokens=0, **usage))["input_price"] - base["input_price"]
            return float(spent * PER_MILLION / inside)

        def output_rate(**usage: int) -> float:
            return float(calc(Usage(input_tokens=inside, output_tokens=PER_MILLION, **usage))["output_price"]
                         - plain["output_price"])

        return Rates(input=input_rate(), output=output_rate(), cache_read=input_rate(cache_read_tokens=inside),
                     cache_write=input_rate(cache_write_tokens=inside),
                     reasoning=output_rate(output_reasoning_tokens=PER_MILLION),
                     input_per_call=float(base["input_price"]), output_per_call=float(plain["output_price"]),
                     other_per_call=float(base["total_price"] - base["input_price"] - base["output_price"]))


_table_prices: Final[dict[int, _TablePrice]] = {}  # by id of the table's ModelPrice (each held, so ids stay its)


def table_price(found: tuple[Any, Any], when: datetime.datetime) -> _TablePrice:
    """The table's price of the model (as found by `table_lookup`) for a call at `when`."""
    model_price = found[1].get_prices(when)
    price = _table_prices.get(id(model_price))
    if price is None or price.model_price is not model_price:
        price = _table_prices[id(model_price)] = _TablePrice(model_price)
    return price


def table_usage(tokens: Tokens) -> Any:
    from genai_prices.types import Usage

    return Usage(input_tokens=tokens.input, cache_read_tokens=tokens.cache_read,
                 cache_write_tokens=tokens.cache_write, output_tokens=tokens.output,
                 output_reasoning_tokens=tokens.reasoning)


# --- the record -------------------------------------------------------------------------------------

_priced: Final[dict[tuple, Rates | _TablePrice | None]] = {}  # what `_price_for` found, for the book below
_priced_book: Final[list[PriceBook | None]] = [None]
MINUTE_NANOS: Final = 60 * 10 ** 9  # the table's prices change on dates and on times of day in whole minutes


def _price_for(book: PriceBook, provider: Any, model: Any, requested: Any, start_unix_nano: int
               ) -> Rates | _TablePrice | None:
    """The price of a call: the deployment's own rates for its response model, else for its
    requested model; else the table's for either (remembered per names and minute: the calls of
    an export are mostly one model)."""
    if _priced_book[0] is not book or len(_priced) > LOOKUPS_REMEMBERED:
        _priced.clear()
        _priced_book[0] = book
    memo = (provider, model, requested, start_unix_nano // MINUTE_NANOS)
    if memo in _priced:
        return _priced[memo]
    names = [name for name in (model, requested) if isinstance(name, str) and name]
    price: Rates | _TablePrice | None = next(
        (rates for name in names if (rates := book.rates_for(name)) is not None), None)
    if price is None:
        when = datetime.datetime.fromtimestamp(start_unix_nano / 1e9, datetime.UTC)
        found = next((found for name in names
                      if (found := table_lookup(provider if isinstance(provider, str) else None, name))), None)
        price = table_price(found, when) if found is not None else None
    _priced[memo] = price
    return price


def price_record(record: dict[str, Any], book: PriceBook, received_at_unix_nano: int) -> None:
    """Fill the record's cost fields when its sender reported none (see the module's docstring)."""
    if (record.get("cost_source") == REPORTED or record.get("cost") is not None
            or record.get("input_cost") is not None or record.get("output_cost") is not None):
        record["cost_source"] = REPORTED
        return
    tokens = tokens_of(record)
    if tokens is None:
        return
    start = record.get("start_time_unix_nano")
    if type(start) is not int or not 0 < start < LAST_NANOS:
        start = received_at_unix_nano
    price = _price_for(book, record.get("provider") or record.get("model_author"), record.get("model"),
                       record.get("requested_model"), start)
    if price is None:
        return
    rates = price if isinstance(price, Rates) else price.rates(tokens.input)  # (narrowed: direct calls)
    input_cost, output_cost, cost = rates.costs(tokens)
    record["input_cost"], record["output_cost"], record["cost"] = input_cost, output_cost, cost
    record["cost_source"] = ESTIMATED

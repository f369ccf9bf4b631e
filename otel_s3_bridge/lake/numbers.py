"""Numbers a person reads at a glance, for `report`'s table and its HTML page: one format per
column (chosen from the column's largest value, so a column never mixes `4.59` with `0.6282`),
and axis ticks at round values (1, 2 or 5 times a power of ten).

Pure functions. Must not round what `--format json|csv` prints: those keep every digit.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

Format = Callable[[float | int | None], str]
MISSING = "-"


def _largest(values: Iterable[float | int | None]) -> float:
    return max((abs(value) for value in values if value is not None), default=0.0)


def _decimals_for(largest: float, significant: int, low: int, high: int) -> int:
    """Decimals that show `largest` with `significant` digits, within low..high."""
    if largest <= 0:
        return low
    return max(low, min(high, significant - 1 - math.floor(math.log10(largest))))


def money(values: Iterable[float | int | None]) -> Format:
    """Dollars: cents (two decimals) from $1 up; below, as many decimals as show the column's
    largest value with three significant digits ($0.628, $0.0123), the same for every row."""
    decimals = _decimals_for(_largest(values), 3, 2, 6)
    return lambda value: MISSING if value is None else f"{value:,.{decimals}f}"


def whole(values: Iterable[float | int | None] = ()) -> Format:
    """Counts and milliseconds: integers with thousands separators (2,569)."""
    return lambda value: MISSING if value is None else f"{round(value):,}"


def tokens(values: Iterable[float | int | None]) -> Format:
    """Token counts in one unit per column, chosen by its largest value: plain below 10,000
    (with separators), else k, or M from a million, with three significant digits."""
    largest = _largest(values)
    if largest < 10_000:
        return whole()
    divisor, unit = (1e6, "M") if largest >= 1e6 else (1e3, "k")
    decimals = _decimals_for(largest / divisor, 3, 0, 2)
    return lambda value: MISSING if value is None else f"{value / divisor:,.{decimals}f}{unit}"


def decimal(values: Iterable[float | int | None]) -> Format:
    """Any other measure: the same decimals in every row, three significant digits of the largest."""
    decimals = _decimals_for(_largest(values), 3, 0, 6)
    return lambda value: MISSING if value is None else f"{value:,.{decimals}f}"


def percent(values: Iterable[float | int | None] = ()) -> Format:
    decimals = 1 if _largest(values) < 0.1 else 0
    return lambda value: MISSING if value is None else f"{value:.{decimals}%}"


def nice_ticks(maximum: float, most: int = 5) -> list[float]:
    """Axis ticks from 0 to at least `maximum`, at most `most` + 1 of them, a 1-2-5 step apart
    (0, 0.2, 0.4, ... not 0, 0.2769, 0.5538)."""
    if maximum <= 0:
        return [0.0, 1.0]
    rough = maximum / most
    power = 10.0 ** math.floor(math.log10(rough))
    step = next(factor * power for factor in (1, 2, 5, 10) if factor * power >= rough * (1 - 1e-9))
    count = math.ceil(maximum / step - 1e-9)
    return [round(step * n, 12) for n in range(count + 1)]


def tick_format(ticks: list[float], kind: Callable[[Iterable[float]], Format]) -> Format:
    """The format of an axis: as many decimals as the step needs, the same on every tick."""
    step = ticks[1] - ticks[0] if len(ticks) > 1 else 1.0
    if kind is money:
        decimals = max(2, _decimals_for(step, 1, 0, 6)) if step < 1 else 0
        return lambda value: f"${value:,.{decimals}f}"
    if kind is percent:
        decimals = max(0, _decimals_for(step * 100, 1, 0, 3))
        return lambda value: f"{value * 100:.{decimals}f}%"
    if kind is tokens:
        return tokens(ticks)
    decimals = _decimals_for(step, 1, 0, 6) if step < 1 else 0
    return lambda value: f"{value:,.{decimals}f}"

"""`report --html FILE`: one self-contained page (inline SVG and CSS, no script, nothing fetched) with
spend per day stacked by model (and how much of the spend is estimated from tokens), tokens and
latency (p50, p95) by model, p95 latency and error rate per day, and the top customers and sessions
by spend; axes tick at round values (`numbers.nice_ticks`), and a table of each chart's numbers
follows it.

`PAGE_QUERIES` are the SQL the page needs (run by `report.run` over the `records` view);
`render` is a pure function from their answers to the page. Must not read files or the network.
"""

from __future__ import annotations

import html
from collections.abc import Sequence

from . import numbers

TOP_MODELS = 8  # more models than this are stacked as "other"
TOP_ROWS = 10
PALETTE = ("#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f")
DAY = "strftime(timestamp AT TIME ZONE 'UTC', '%Y-%m-%d')"
PAGE_QUERIES = {
    "spend": f"SELECT {DAY} AS day, coalesce(model, 'unknown') AS model, coalesce(sum(cost), 0) AS cost "
             "FROM records GROUP BY 1, 2 ORDER BY 1, 2",
    "tokens": "SELECT coalesce(model, 'unknown') AS model, coalesce(sum(input_tokens), 0) AS input, "
              "coalesce(sum(output_tokens), 0) AS output FROM records GROUP BY 1 ORDER BY 2 + 3 DESC",
    "daily": f"SELECT {DAY} AS day, quantile_cont(duration_ms, 0.95) AS p95, "
             "count(*) FILTER (WHERE status = 'error') / count(*) AS error_rate, count(*) AS calls "
             "FROM records GROUP BY 1 ORDER BY 1",
    "customers": "SELECT customer_id AS name, count(*) AS calls, coalesce(sum(cost), 0) AS cost FROM records "
                 f"WHERE customer_id IS NOT NULL GROUP BY 1 ORDER BY 3 DESC, 2 DESC LIMIT {TOP_ROWS}",
    "sessions": "SELECT session_id AS name, count(*) AS calls, coalesce(sum(cost), 0) AS cost FROM records "
                f"WHERE session_id IS NOT NULL GROUP BY 1 ORDER BY 3 DESC, 2 DESC LIMIT {TOP_ROWS}",
    "estimated": "SELECT coalesce(sum(cost) FILTER (WHERE cost_source = 'estimated'), 0) FROM records",
    "latency": "SELECT coalesce(model, 'unknown') AS model, quantile_cont(duration_ms, 0.5) AS p50, "
               "quantile_cont(duration_ms, 0.95) AS p95, count(*) AS calls FROM records GROUP BY 1 "
               "ORDER BY 3 DESC NULLS LAST",
}
WIDTH, HEIGHT, LEFT, BOTTOM = 720, 260, 64, 40


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _axis(ticks: list[float], label: numbers.Format) -> str:
    """Grid lines and labels at the ticks, from 0 at the bottom to the last tick at the top."""
    lines = []
    for tick in ticks:
        y = HEIGHT - BOTTOM - (HEIGHT - BOTTOM - 10) * tick / ticks[-1]
        lines.append(f'<line x1="{LEFT}" x2="{WIDTH}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>'
                     f'<text x="{LEFT - 6}" y="{y + 4:.1f}" class="tick" text-anchor="end">{_e(label(tick))}</text>')
    return "".join(lines)


def _table(headings: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """The numbers a chart draws, under it: the first column names the row, the others are right-aligned."""
    head = "".join(f"<th>{_e(heading)}</th>" for heading in headings)
    body = "".join("<tr>" + "".join(f"<td>{_e(cell)}</td>" for cell in row) + "</tr>" for row in rows)
    return f'<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _bars_by_day(days: Sequence[str], stacks: dict[str, list[float]], kind) -> str:
    """Vertical bars per day, stacked by series (in the order given), with a legend and a table."""
    totals = [sum(values[i] for values in stacks.values()) for i in range(len(days))]
    ticks = numbers.nice_ticks(max(totals, default=0))
    slot = (WIDTH - LEFT) / max(len(days), 1)
    scale = (HEIGHT - BOTTOM - 10) / ticks[-1]
    bar = min(slot * 0.7, 48)
    cell = kind([value for values in stacks.values() for value in values] + totals)
    parts = [_axis(ticks, numbers.tick_format(ticks, kind))]
    for i, day in enumerate(days):
        x, base = LEFT + i * slot + (slot - bar) / 2, HEIGHT - BOTTOM
        for n, (name, values) in enumerate(stacks.items()):
            height = values[i] * scale
            if height > 0:
                base -= height
                parts.append(f'<rect x="{x:.1f}" y="{base:.1f}" width="{bar:.1f}" height="{height:.1f}" '
                             f'fill="{PALETTE[n % len(PALETTE)]}"><title>{_e(day)} {_e(name)}: '
                             f'{_e(cell(values[i]))}</title></rect>')
        if len(days) <= 16 or i % (len(days) // 16 + 1) == 0:
            parts.append(f'<text x="{x + bar / 2:.1f}" y="{HEIGHT - BOTTOM + 16}" class="tick" '
                         f'text-anchor="middle">{_e(day[5:])}</text>')
    legend = "".join(f'<span class="key"><i style="background:{PALETTE[n % len(PALETTE)]}"></i>{_e(name)}</span>'
                     for n, name in enumerate(stacks) if len(stacks) > 1)
    several = len(stacks) > 1
    table = _table(["day", *stacks, *(["total"] if several else [])],
                   [[day, *(cell(values[i]) for values in stacks.values()), *([cell(totals[i])] if several else [])]
                    for i, day in enumerate(days)])
    return _svg(parts) + (f'<p class="legend">{legend}</p>' if legend else "") + table


def _svg(parts: list[str]) -> str:
    return (f'<svg viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" role="img">'
            + "".join(parts) + "</svg>")


def _horizontal(rows: Sequence[tuple[str, list[float]]], series: Sequence[str], kind, *,
                stacked: bool = True, extra: Sequence[tuple[str, Sequence[object]]] = ()) -> str:
    """One bar per row, the row's name on the left: its series stacked, or (`stacked=False`, each
    series at least the one before, as p50 and p95) drawn over each other from zero. A table of the
    same numbers (and the `extra` columns) follows."""
    if not rows:
        return '<p class="empty">no data</p>'
    cell = kind([value for _, values in rows for value in values])
    maximum = max((sum(values) if stacked else max(values)) for _, values in rows) or 1
    bar, gap, name_width = 22, 8, 220
    height = len(rows) * (bar + gap) + 10
    parts = []
    for i, (name, values) in enumerate(rows):
        y, x = i * (bar + gap) + 5, name_width
        short = name if len(name) <= 30 else name[:29] + "…"
        parts.append(f'<text x="{name_width - 8}" y="{y + bar * 0.7:.1f}" class="tick" text-anchor="end">'
                     f'<title>{_e(name)}</title>{_e(short)}</text>')
        drawn = list(enumerate(values)) if stacked else sorted(enumerate(values), key=lambda item: -item[1])
        for n, value in drawn:
            width = (WIDTH - name_width - 90) * value / maximum
            if width > 0:
                parts.append(f'<rect x="{x:.1f}" y="{y}" width="{width:.1f}" height="{bar}" '
                             f'fill="{PALETTE[n % len(PALETTE)]}"><title>{_e(series[n])}: {_e(cell(value))}'
                             f'</title></rect>')
                x += width if stacked else 0
        end = x if stacked else name_width + (WIDTH - name_width - 90) * max(values) / maximum
        label = cell(sum(values)) if stacked else cell(max(values))
        parts.append(f'<text x="{end + 6:.1f}" y="{y + bar * 0.7:.1f}" class="tick">{_e(label)}</text>')
    legend = "".join(f'<span class="key"><i style="background:{PALETTE[n]}"></i>{_e(name)}</span>'
                     for n, name in enumerate(series) if len(series) > 1)
    table = _table(["", *series, *(heading for heading, _ in extra)],
                   [[name, *(cell(value) for value in values), *(column[i] for _, column in extra)]
                    for i, (name, values) in enumerate(rows)])
    return (f'<svg viewBox="0 0 {WIDTH} {height}" width="{WIDTH}" height="{height}" role="img">' + "".join(parts)
            + "</svg>" + (f'<p class="legend">{legend}</p>' if legend else "") + table)


def _stacked_spend(rows: list[tuple]) -> str:
    days = sorted({day for day, _, _ in rows})
    by_model: dict[str, float] = {}
    for _, model, cost in rows:
        by_model[model] = by_model.get(model, 0.0) + cost
    top = sorted(by_model, key=lambda model: -by_model[model])[:TOP_MODELS]
    stacks = {model: [0.0] * len(days) for model in top}
    if len(by_model) > len(top):
        stacks["other"] = [0.0] * len(days)
    for day, model, cost in rows:
        stacks[model if model in top else "other"][days.index(day)] += cost
    return _bars_by_day(days, stacks, numbers.money) if days else '<p class="empty">no data</p>'


def _dollars(value: float) -> str:
    return "$" + numbers.money([value])(value)


def render(answers: dict[str, list[tuple]], *, title: str, subtitle: str) -> str:
    daily, latency = answers["daily"], answers.get("latency", [])[:15]
    days = [row[0] for row in daily]
    sections = [
        ("Spend per day, by model", _stacked_spend(answers["spend"])),
        ("Tokens by model", _horizontal([(model, [float(i), float(o)]) for model, i, o in answers["tokens"][:15]],
                                        ("input", "output"), numbers.tokens)),
        ("Latency by model (ms)", _horizontal(
            [(model, [p50 or 0.0, p95 or 0.0]) for model, p50, p95, _ in latency], ("p50", "p95"), numbers.whole,
            stacked=False, extra=[("calls", [f"{calls:,}" for *_, calls in latency])])),
        ("p95 latency per day (ms)", _bars_by_day(days, {"p95": [row[1] or 0.0 for row in daily]},
                                                  numbers.whole) if days else '<p class="empty">no data</p>'),
        ("Error rate per day", _bars_by_day(days, {"errors": [row[2] or 0.0 for row in daily]},
                                            numbers.percent) if days else '<p class="empty">no data</p>'),
        (f"Top {TOP_ROWS} customers by spend", _horizontal([(name, [cost]) for name, _, cost in answers["customers"]],
                                                           ("cost",), numbers.money)),
        (f"Top {TOP_ROWS} sessions by spend", _horizontal([(name, [cost]) for name, _, cost in answers["sessions"]],
                                                          ("cost",), numbers.money)),
    ]
    total_calls = sum(row[3] for row in daily)
    total_cost = sum(cost for _, _, cost in answers["spend"])
    estimated = answers["estimated"][0][0] if answers.get("estimated") else 0.0
    of_it = f" · {_dollars(estimated)} of it estimated from tokens" if estimated else ""
    body = "".join(f"<section><h2>{_e(heading)}</h2>{chart}</section>" for heading, chart in sections)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>
<style>
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 24px auto; max-width: 760px; color: #222; background: #fff; }}
h1 {{ font-size: 22px; margin: 0; }} h2 {{ font-size: 16px; margin: 28px 0 8px; }}
.sub {{ color: #666; margin: 4px 0 0; }} .totals {{ font-size: 18px; margin: 12px 0; }}
.grid {{ stroke: #e5e5e5; }} .tick {{ font-size: 11px; fill: #555; }}
.legend {{ margin: 4px 0; font-size: 12px; }} .key {{ margin-right: 12px; white-space: nowrap; }}
.key i {{ display: inline-block; width: 10px; height: 10px; margin-right: 4px; }} .empty {{ color: #999; }}
table {{ border-collapse: collapse; font-size: 12px; margin: 6px 0 0; }}
th, td {{ padding: 2px 10px 2px 0; text-align: right; font-variant-numeric: tabular-nums; }}
th:first-child, td:first-child {{ text-align: left; }} th {{ color: #555; font-weight: 600; }}
</style></head>
<body><h1>{_e(title)}</h1><p class="sub">{_e(subtitle)}</p>
<p class="totals">{total_calls:,} calls · {_e(_dollars(total_cost))}{_e(of_it)}</p>
{body}
</body></html>
"""

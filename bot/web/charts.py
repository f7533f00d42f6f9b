"""Small server-side charts as inline SVG, for the dashboard overview (no script, no inline style).

Each function returns a `Chart`: the SVG markup (Markup, every text escaped) plus the same
numbers as table columns and rows, which the page prints beside the drawing. Colours and fonts
come from classes (`chart`, `c1`…`c6`, `grid`, `tick`, `bad`) styled in templates/static/portal.css
for light and dark themes: the page's Content-Security-Policy allows no inline style.

Every mark carries a `<title>` (hover text, read by screen readers) and data-series / data-label /
data-value attributes, so a test can read what was drawn.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta

from markupsafe import Markup

WIDTH = 480
HEIGHT = 200
LEFT, RIGHT, TOP, BOTTOM = 40, 8, 10, 24  # plot margins, for the axis labels


@dataclass(frozen=True)
class Series:
    name: str
    values: Sequence[float | None]
    css: str = "c1"  # colour class c1…c6 (or "bad")


@dataclass
class Chart:
    id: str
    title: str
    svg: Markup
    legend: list[tuple[str, str]] = field(default_factory=list)  # (name, css class)
    columns: list[str] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)


def nice_ceiling(value: float) -> float:
    """The y axis' top: four steps of 1, 2 or 5 × 10^k (at least 1) that reach `value`, so the
    grid lines fall on round figures (0, 2, 4, 6, 8; 0, 50, 100, 150, 200)."""
    wanted = value / 4
    if wanted <= 1:
        return 4
    exponent = math.floor(math.log10(wanted))
    for step in (1, 2, 5, 10):
        if step * 10 ** exponent >= wanted:
            return 4 * step * 10 ** exponent
    return 4 * 10 ** (exponent + 1)  # pragma: no cover - the loop always returns


def number(value: float | None) -> str:
    """A figure as printed: integers without decimals, others with one; None as a dash."""
    if value is None:
        return "—"
    if float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:,.1f}"


def el(name: str, body: Markup | str | None = None, **attrs) -> Markup:
    """One SVG element: attribute values and a text body are escaped, a Markup body is kept.
    Attribute names: trailing "_" dropped (class_), "_" written as "-" (data_value)."""
    attr = Markup("").join(Markup(' {}="{}"').format(k.rstrip("_").replace("_", "-"), v)
                           for k, v in attrs.items() if v is not None)
    if body is None:
        return Markup("<{}{}/>").format(name, attr)
    return Markup("<{}{}>{}</{}>").format(name, attr, body, name)


def _f(value: float) -> str:
    return f"{value:.1f}"


def _svg(chart_id: str, title: str, summary: str, body: list[Markup], height: int) -> Markup:
    inner = Markup("").join([el("title", title, id=f"{chart_id}-title"), el("desc", summary, id=f"{chart_id}-desc"),
                             *body])
    return el("svg", inner, class_="chart", viewBox=f"0 0 {WIDTH} {height}", role="img",
              xmlns="http://www.w3.org/2000/svg", id=chart_id, aria_labelledby=f"{chart_id}-title {chart_id}-desc")


def nice_range(low: float, high: float) -> tuple[float, float]:
    """A y axis that does not start at zero (for a figure that only grows, like a version):
    four round steps from a multiple of the step at or below `low` to at least `high`."""
    step = nice_ceiling(max(high - low, 1)) / 4
    while True:
        bottom = math.floor(low / step) * step
        if bottom + 4 * step >= high:
            return bottom, bottom + 4 * step
        step = nice_ceiling(step * 4 + 1) / 4


def _axes(top_value: float, labels: Sequence[str], height: int, every: int, unit: str = "",
          bottom: float = 0) -> list[Markup]:
    """Horizontal grid lines with y values, and every `every`-th x label."""
    parts = []
    plot_h = height - TOP - BOTTOM
    for i in range(5):
        value = bottom + (top_value - bottom) * i / 4
        y = TOP + plot_h - plot_h * i / 4
        parts.append(el("line", class_="grid", x1=LEFT, x2=WIDTH - RIGHT, y1=_f(y), y2=_f(y)))
        parts.append(el("text", number(value) + unit, class_="tick", x=LEFT - 4, y=_f(y + 4), text_anchor="end"))
    slot = (WIDTH - LEFT - RIGHT) / max(len(labels), 1)
    for i, label in enumerate(labels):
        if (len(labels) - 1 - i) % every:
            continue  # label the last slot (the latest), then every `every`-th before it
        parts.append(el("text", label, class_="tick", x=_f(LEFT + slot * (i + 0.5)), y=height - 6,
                        text_anchor="middle"))
    return parts


def _mark(name: str, s: Series, label: str, value: float, hover: str, **geometry) -> Markup:
    return el(name, el("title", hover), class_=s.css, data_series=s.name, data_label=label,
              data_value=number(value), **geometry)


def stacked_bars(chart_id: str, title: str, labels: Sequence[str], series: Sequence[Series], *,
                 long_labels: Sequence[str] | None = None, every: int = 2, height: int = HEIGHT,
                 what: str = "", row_header: str = "", table_labels: Sequence[str] | None = None) -> Chart:
    """One bar per label, the series stacked bottom-up in the order given."""
    long_labels = list(long_labels or labels)
    totals = [sum(s.values[i] or 0 for s in series) for i in range(len(labels))]
    top = nice_ceiling(max(totals, default=0))
    plot_h = height - TOP - BOTTOM
    slot = (WIDTH - LEFT - RIGHT) / max(len(labels), 1)
    body = _axes(top, labels, height, every)
    for i, label in enumerate(long_labels):
        base = 0.0
        x = LEFT + slot * i + slot * 0.15
        for s in series:
            value = s.values[i] or 0
            if value <= 0:
                continue
            y = TOP + plot_h - plot_h * (base + value) / top
            h = plot_h * value / top
            body.append(_mark("rect", s, label, value, f"{label}: {number(value)} {s.name}{what}",
                              x=_f(x), y=_f(y), width=_f(slot * 0.7), height=_f(h)))
            base += value
    summary = "; ".join(f"{long}: " + ", ".join(f"{number(s.values[i] or 0)} {s.name}" for s in series)
                        for i, long in enumerate(long_labels))
    return Chart(chart_id, title, _svg(chart_id, title, summary, body, height),
                 legend=[(s.name, s.css) for s in series],
                 columns=[row_header, *[s.name for s in series], "total"],
                 rows=[[row, *[number(s.values[i] or 0) for s in series], number(totals[i])]
                       for i, row in enumerate(table_labels or long_labels)])


def grouped_bars(chart_id: str, title: str, labels: Sequence[str], series: Sequence[Series], *,
                 long_labels: Sequence[str] | None = None, every: int = 2, height: int = HEIGHT,
                 what: str = "", row_header: str = "", table_labels: Sequence[str] | None = None) -> Chart:
    """Side-by-side bars per label, one per series (for figures that overlap, e.g. retried
    deliveries are also processed or dead)."""
    long_labels = list(long_labels or labels)
    top = nice_ceiling(max((v or 0 for s in series for v in s.values), default=0))
    plot_h = height - TOP - BOTTOM
    slot = (WIDTH - LEFT - RIGHT) / max(len(labels), 1)
    width = slot * 0.8 / max(len(series), 1)
    body = _axes(top, labels, height, every)
    for i, label in enumerate(long_labels):
        for j, s in enumerate(series):
            value = s.values[i] or 0
            if value <= 0:
                continue
            h = plot_h * value / top
            x = LEFT + slot * i + slot * 0.1 + width * j
            body.append(_mark("rect", s, label, value, f"{label}: {number(value)} {s.name}{what}",
                              x=_f(x), y=_f(TOP + plot_h - h), width=_f(width), height=_f(h)))
    summary = "; ".join(f"{long}: " + ", ".join(f"{number(s.values[i] or 0)} {s.name}" for s in series)
                        for i, long in enumerate(long_labels))
    return Chart(chart_id, title, _svg(chart_id, title, summary, body, height),
                 legend=[(s.name, s.css) for s in series],
                 columns=[row_header, *[s.name for s in series]],
                 rows=[[row, *[number(s.values[i] or 0) for s in series]]
                       for i, row in enumerate(table_labels or long_labels)])


def lines(chart_id: str, title: str, labels: Sequence[str], series: Sequence[Series], *,
          long_labels: Sequence[str] | None = None, every: int = 2, height: int = HEIGHT, unit: str = "",
          table_unit: str = "", from_zero: bool = True, row_header: str = "",
          table_labels: Sequence[str] | None = None) -> Chart:
    """A line per series through one point per label; a None value leaves a gap. The y axis
    starts at zero, or (from_zero=False) just below the lowest value."""
    long_labels = list(long_labels or labels)
    known = [v for s in series for v in s.values if v is not None]
    if from_zero or not known:
        bottom, top = 0, nice_ceiling(max(known, default=0))
    else:
        bottom, top = nice_range(min(known), max(known))
    plot_h = height - TOP - BOTTOM
    slot = (WIDTH - LEFT - RIGHT) / max(len(labels), 1)
    body = _axes(top, labels, height, every, unit, bottom)

    def point(i: int, value: float) -> tuple[float, float]:
        return LEFT + slot * (i + 0.5), TOP + plot_h - plot_h * (value - bottom) / (top - bottom)

    for s in series:
        run: list[str] = []
        segments: list[list[str]] = []
        for i, value in enumerate(s.values):
            if value is None:
                if run:
                    segments.append(run)
                run = []
                continue
            x, y = point(i, value)
            run.append(f"{x:.1f},{y:.1f}")
        if run:
            segments.append(run)
        for segment in segments:
            if len(segment) > 1:
                body.append(el("polyline", class_=f"line {s.css}", fill="none", points=" ".join(segment)))
        for i, value in enumerate(s.values):
            if value is None:
                continue
            x, y = point(i, value)
            hover = f"{long_labels[i]}: {s.name} {number(value)}{table_unit}"
            body.append(_mark("circle", s, long_labels[i], value, hover, cx=_f(x), cy=_f(y), r=3))
    summary = "; ".join(f"{long}: " + ", ".join(f"{s.name} {number(s.values[i])}{table_unit}" for s in series)
                        for i, long in enumerate(long_labels))
    return Chart(chart_id, title, _svg(chart_id, title, summary, body, height),
                 legend=[(s.name, s.css) for s in series],
                 columns=[row_header, *[s.name for s in series]],
                 rows=[[row, *[number(s.values[i]) for s in series]]
                       for i, row in enumerate(table_labels or long_labels)])


def palette(names: Sequence[str], start: int = 0) -> dict[str, str]:
    """Colour classes c1…c6 for names, in order from c{start + 1} (repeating past six)."""
    return {name: f"c{(start + i) % 6 + 1}" for i, name in enumerate(names)}


# --------------------------------------------------------------------------------------------
# The dashboard overview's charts (figures from bot.web.overview.overview)
# --------------------------------------------------------------------------------------------

OUTCOME_CSS = {"approved": "c1", "rejected": "c2", "withdrawn": "c3", "open": "c4"}


def _date(text: str) -> date:
    return date.fromisoformat(text[:10])


def _weeks(figures: dict) -> tuple[list[str], list[str]]:
    days = [_date(w) for w in figures["weeks"]]
    return [f"{d:%b} {d.day}" for d in days], [f"Week of {d:%b} {d.day}" for d in days]


def overview_charts(figures: dict) -> dict[str, Chart]:
    """Every chart of /admin/overview, by id."""
    charts: dict[str, Chart] = {}
    requests = figures["requests"]
    short, long = _weeks(requests)
    charts["requests-opened"] = stacked_bars(
        "requests-opened", "Requests opened per week, by what became of them", short,
        [Series(o, requests["opened"][o], OUTCOME_CSS[o]) for o in ("approved", "rejected", "withdrawn", "open")],
        long_labels=long, row_header="Week of", table_labels=short)
    charts["requests-decided"] = stacked_bars(
        "requests-decided", "Requests decided per week", short,
        [Series(o, requests["decided"][o], OUTCOME_CSS[o]) for o in ("approved", "rejected", "withdrawn")],
        long_labels=long, row_header="Week of", table_labels=short)
    times = figures["decision_times"]
    charts["decision-time"] = lines(
        "decision-time", "Hours from opening to decision, per week of decision", short,
        [Series("median", times["median_hours"], "c1"), Series("90th percentile", times["p90_hours"], "c2")],
        long_labels=long, unit=" h", table_unit=" h", row_header="Week of", table_labels=short)
    ages = figures["open_requests"]
    charts["open-ages"] = stacked_bars(
        "open-ages", "Open requests by how long they have waited", ages["short_bands"],
        [Series("open", ages["counts"], OUTCOME_CSS["open"])], long_labels=ages["bands"], every=1)
    grants = figures["grants"]
    colours = palette(grants["tiers"], start=3)  # not the outcome colours
    sundays = [_date(w) + timedelta(days=6) for w in grants["weeks"]]  # each point: the end of its week
    ends = [*[f"{d:%b} {d.day}" for d in sundays[:-1]], "now"]
    charts["grants-active"] = lines(
        "grants-active", "Active grants by tier, at the end of each week", ends,
        [Series(t, grants["active"][t], colours[t]) for t in grants["tiers"]],
        long_labels=[*[f"{d:%a %b} {d.day}" for d in sundays[:-1]], "Now"], row_header="At the end of",
        table_labels=ends)
    charts["grant-changes"] = grouped_bars(
        "grant-changes", "Tier changes and revocations per week", short,
        [Series("upgrades", grants["upgrades"], "c1"), Series("downgrades", grants["downgrades"], "c3"),
         Series("revocations", grants["revocations"], "c2")], long_labels=long, row_header="Week of",
        table_labels=short)
    gateways = figures["gateways"]
    days = [_date(d) for d in gateways["days"]]
    charts["allowlist-version"] = lines(
        "allowlist-version", "Allowlist version at the end of each day", [f"{d:%b} {d.day}" for d in days],
        [Series("version", gateways["allowlist_version"], "c5")], long_labels=[f"{d:%a %b} {d.day}" for d in days],
        every=3, from_zero=False)
    hours = [h[11:16] for h in gateways["hours"]]
    long_hours = [f"{_date(h):%b} {_date(h).day} {h[11:16]} UTC" for h in gateways["hours"]]
    for gw in gateways["gateways"]:
        chart_id = f"pulls-{gw['name']}"
        charts[chart_id] = stacked_bars(
            chart_id, f"Pulls per hour by {gw['name']}, last 24 hours", hours,
            [Series("pulls", gw["pulls_per_hour"], "bad" if gw["silent"] else "c5")], long_labels=long_hours,
            every=6, height=120)
    deliveries = figures["deliveries"]
    if deliveries is not None:
        days = [_date(d) for d in deliveries["days"]]
        charts["deliveries"] = grouped_bars(
            "deliveries", "Webhook deliveries per day received", [f"{d:%b} {d.day}" for d in days],
            [Series("processed", deliveries["processed"], "c1"), Series("retried", deliveries["retried"], "c4"),
             Series("dead", deliveries["dead"], "c2")], long_labels=[f"{d:%a %b} {d.day}" for d in days], every=3)
    return charts

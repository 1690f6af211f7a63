"""The experiment charts as SVG, drawn on the server: no script, no style attribute (the
console's Content-Security-Policy allows neither), colours by class from console.css.

Each chart is a `<svg role="img">` with a `<title>` and `<desc>`; the page puts the same numbers
in a table beside it, the text alternative for screen readers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

WIDTH, ROW, PAD_LEFT, PAD_RIGHT = 640, 44, 190, 30


@dataclass(frozen=True, slots=True)
class Bar:
    """One row of an interval chart: a label, a point and its 95% interval (any may be None)."""

    label: str
    css: str
    """`control`, `treatment` or `difference`: the class that colours it."""
    value: float | None
    low: float | None
    high: float | None


@dataclass(frozen=True, slots=True)
class Point:
    """One point of the difference over time: the cumulative difference up to `label`."""

    label: str
    value: float | None
    low: float | None
    high: float | None


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def _scale(values: Sequence[float]) -> tuple[float, float]:
    low, high = min(values), max(values)
    if math.isclose(low, high):
        low, high = low - 1, high + 1
    margin = (high - low) * 0.08
    return low - margin, high + margin


def interval_chart(title: str, bars: Sequence[Bar], *, zero: bool = False) -> str:
    """Horizontal points with 95% intervals, one row per bar; a dashed line at 0 when `zero`."""
    known = [v for b in bars for v in (b.value, b.low, b.high) if v is not None]
    if zero:
        known.append(0.0)
    height = ROW * len(bars) + 40
    parts = [
        f'<svg class="chart" role="img" viewBox="0 0 {WIDTH} {height}" '
        f'width="{WIDTH}" height="{height}" aria-labelledby="chart-{_id(title)}">',
        f'<title id="chart-{_id(title)}">{escape(title)}</title>',
    ]
    if not known:
        parts.append(f'<text x="10" y="30" class="axis">{escape(title)}: no values yet</text>')
        return "\n".join([*parts, "</svg>"])
    low, high = _scale(known)

    def x(value: float) -> float:
        return PAD_LEFT + (value - low) / (high - low) * (WIDTH - PAD_LEFT - PAD_RIGHT)

    if zero:
        parts.append(
            f'<line class="zero" x1="{x(0):.1f}" x2="{x(0):.1f}" y1="8" y2="{height - 28}"/>'
        )
    for i, bar in enumerate(bars):
        y = 24 + i * ROW
        parts.append(f'<g class="{escape(bar.css)}">')
        parts.append(f'<text class="label" x="8" y="{y + 5}">{escape(bar.label)}</text>')
        if bar.low is not None and bar.high is not None:
            parts.append(
                f'<line class="interval" x1="{x(bar.low):.1f}" x2="{x(bar.high):.1f}" '
                f'y1="{y}" y2="{y}"/>'
            )
            for end in (bar.low, bar.high):
                parts.append(
                    f'<line class="interval" x1="{x(end):.1f}" x2="{x(end):.1f}" '
                    f'y1="{y - 7}" y2="{y + 7}"/>'
                )
        if bar.value is not None:
            parts.append(f'<circle class="mean" cx="{x(bar.value):.1f}" cy="{y}" r="6"/>')
        else:
            parts.append(f'<text class="axis" x="{PAD_LEFT}" y="{y + 5}">no value yet</text>')
        parts.append("</g>")
    axis_y = height - 10
    parts.append(f'<text class="axis" x="{PAD_LEFT}" y="{axis_y}">{_fmt(low)}</text>')
    parts.append(
        f'<text class="axis" x="{WIDTH - PAD_RIGHT}" y="{axis_y}" text-anchor="end">'
        f"{_fmt(high)}</text>"
    )
    return "\n".join([*parts, "</svg>"])


def series_chart(title: str, points: Sequence[Point]) -> str:
    """The difference over time: one point per period with its 95% band, and a line at 0."""
    height, top, bottom, left, right = 260, 16, 40, 60, 20
    known = [v for p in points for v in (p.value, p.low, p.high) if v is not None]
    parts = [
        f'<svg class="chart" role="img" viewBox="0 0 {WIDTH} {height}" '
        f'width="{WIDTH}" height="{height}" aria-labelledby="chart-{_id(title)}">',
        f'<title id="chart-{_id(title)}">{escape(title)}</title>',
    ]
    if not known:
        parts.append(f'<text x="10" y="30" class="axis">{escape(title)}: no values yet</text>')
        return "\n".join([*parts, "</svg>"])
    low, high = _scale([*known, 0.0])
    step = (WIDTH - left - right) / max(len(points) - 1, 1)

    def y(value: float) -> float:
        return top + (high - value) / (high - low) * (height - top - bottom)

    def x(i: int) -> float:
        return left + (i * step if len(points) > 1 else (WIDTH - left - right) / 2)

    parts.append(
        f'<line class="zero" x1="{left}" x2="{WIDTH - right}" y1="{y(0):.1f}" y2="{y(0):.1f}"/>'
    )
    band = [(x(i), p.low, p.high) for i, p in enumerate(points)]
    upper = [f"{bx:.1f},{y(hi):.1f}" for bx, lo, hi in band if lo is not None and hi is not None]
    lower = [f"{bx:.1f},{y(lo):.1f}" for bx, lo, hi in band if lo is not None and hi is not None]
    if len(upper) > 1:
        parts.append(f'<polygon class="band" points="{" ".join(upper + lower[::-1])}"/>')
    elif upper:  # one period: its interval as a band around the point
        bx, lo, hi = next((b, lo, hi) for b, lo, hi in band if lo is not None and hi is not None)
        assert lo is not None and hi is not None
        parts.append(
            f'<rect class="band" x="{bx - 14:.1f}" y="{y(hi):.1f}" width="28" '
            f'height="{max(y(lo) - y(hi), 1):.1f}"/>'
        )
    line = [f"{x(i):.1f},{y(p.value):.1f}" for i, p in enumerate(points) if p.value is not None]
    if len(line) > 1:
        parts.append(f'<polyline class="difference" points="{" ".join(line)}"/>')
    for i, p in enumerate(points):
        if p.value is not None:
            parts.append(
                f'<circle class="difference" cx="{x(i):.1f}" cy="{y(p.value):.1f}" r="4"/>'
            )
    # The first and last periods' labels, aligned inward so that neither leaves the chart.
    ends = {0: "start", len(points) - 1: "end"} if len(points) > 1 else {0: "middle"}
    for i, anchor in ends.items():
        parts.append(
            f'<text class="axis" x="{x(i):.1f}" y="{height - 12}" text-anchor="{anchor}">'
            f"{escape(points[i].label)}</text>"
        )
    parts.append(f'<text class="axis" x="4" y="{y(high) + 12:.1f}">{_fmt(high)}</text>')
    parts.append(f'<text class="axis" x="4" y="{y(low) - 4:.1f}">{_fmt(low)}</text>')
    return "\n".join([*parts, "</svg>"])


def _id(title: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in title.lower())[:40]

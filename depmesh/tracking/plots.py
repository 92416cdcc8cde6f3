"""Training curves as a small SVG line chart, embedded in a model's
materialization metadata as a Markdown image (a data URI), so the Dagster
UI shows the curves on the asset page with no file server and no plotting
library in the step (a chart costs about a millisecond)."""

from __future__ import annotations

import base64
from html import escape
from typing import Any

COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b")


def _ticks(low: float, high: float, count: int = 4) -> list[float]:
    if high == low:
        return [low]
    return [low + (high - low) * i / count for i in range(count + 1)]


def curves_svg(curves: Any, title: str = "", width: int = 560, height: int = 260) -> str:
    """An SVG chart of every series in ``curves`` (depmesh.tracking.capture.Curves
    or a mapping series -> (steps, values))."""
    series = getattr(curves, "series", curves)
    left, right, top, bottom = 60, 150, 28, 36
    points = [(s, v) for steps, values in series.values() for s, v in zip(steps, values)]
    if not points:
        return f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="40"><text x="8" y="24">no curves</text></svg>'
    x_low, x_high = min(p[0] for p in points), max(p[0] for p in points)
    y_low, y_high = min(p[1] for p in points), max(p[1] for p in points)
    if y_high == y_low:
        y_low, y_high = y_low - 0.5, y_high + 0.5
    if x_high == x_low:
        x_high = x_low + 1

    def x(step: float) -> float:
        return left + (step - x_low) / (x_high - x_low) * (width - left - right)

    def y(value: float) -> float:
        return top + (y_high - value) / (y_high - y_low) * (height - top - bottom)

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'font-family="sans-serif" font-size="11">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="{left}" y="16" font-size="12" font-weight="bold">{escape(title)}</text>',
           f'<line x1="{left}" y1="{height - bottom}" x2="{width - right}" y2="{height - bottom}" stroke="#444"/>',
           f'<line x1="{left}" y1="{top}" x2="{left}" y2="{height - bottom}" stroke="#444"/>']
    for value in _ticks(y_low, y_high):
        out.append(f'<text x="{left - 6}" y="{y(value) + 4:.1f}" text-anchor="end">{value:.4g}</text>')
        out.append(f'<line x1="{left}" y1="{y(value):.1f}" x2="{width - right}" y2="{y(value):.1f}" stroke="#eee"/>')
    for step in _ticks(x_low, x_high):
        out.append(f'<text x="{x(step):.1f}" y="{height - bottom + 14}" text-anchor="middle">{step:.0f}</text>')
    out.append(f'<text x="{(left + width - right) / 2}" y="{height - 6}" text-anchor="middle">iteration</text>')
    for i, (name, (steps, values)) in enumerate(sorted(series.items())):
        color = COLORS[i % len(COLORS)]
        path = " ".join(f"{x(s):.1f},{y(v):.1f}" for s, v in zip(steps, values))
        if len(steps) == 1:
            out.append(f'<circle cx="{x(steps[0]):.1f}" cy="{y(values[0]):.1f}" r="3" fill="{color}"/>')
        else:
            out.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.6" points="{path}"/>')
        ly = top + 14 + 16 * i
        out.append(f'<line x1="{width - right + 10}" y1="{ly - 4}" x2="{width - right + 28}" y2="{ly - 4}" '
                   f'stroke="{color}" stroke-width="2"/>')
        out.append(f'<text x="{width - right + 32}" y="{ly}">{escape(name)}</text>')
    out.append("</svg>")
    return "".join(out)


def curves_markdown(curves: Any, title: str = "") -> str:
    """The chart as a Markdown image, and the last value of each series as a line of text."""
    svg = curves_svg(curves, title)
    data = base64.b64encode(svg.encode()).decode()
    series = getattr(curves, "series", curves)
    last = ", ".join(f"{name} {values[-1]:.4g} at {steps[-1]}" for name, (steps, values) in sorted(series.items()))
    return f"![training curves](data:image/svg+xml;base64,{data})\n\nLast values: {last}"

"""Trainings side by side: the fields that tell them apart, and one
self-contained HTML page (plotly.js inlined, nothing fetched) with the sorted
table, the curves overlaid and parallel coordinates of the parameters against
the chosen metric."""

from __future__ import annotations

import html
import json
from typing import Any

from depmesh.tracking.query import MISSING, lookup


def metric_names(items: list[dict[str, Any]]) -> list[str]:
    return sorted({k for item in items for k in item["metrics"]})


def varying_params(items: list[dict[str, Any]], limit: int = 12) -> list[str]:
    """Declared parameters whose value differs between the trainings (all of them for one training)."""
    names = sorted({k for item in items for k in item["declared_params"]})
    if len(items) > 1:
        names = [n for n in names if len({json.dumps(i["declared_params"].get(n), default=str) for i in items}) > 1]
    return names[:limit]


def rows(items: list[dict[str, Any]], metric: str | None, params: list[str]) -> tuple[list[str], list[list[Any]]]:
    headers = ["id", "node", "status", "trigger", "started", "seconds", "peak MB", "version",
               *[f"params.{p}" for p in params]] + ([f"metrics.{metric}"] if metric else [])
    out = []
    for item in items:
        row = [item["id"][:8], item["node"], item["status"], item["trigger"], str(item["started_at"])[:19],
               round(item["duration_s"], 2), item["peak_memory_mb"], (item["model_version"] or "-")[:12]]
        row += [item["declared_params"].get(p, "") for p in params]
        if metric:
            value = item["metrics"].get(metric)
            row.append(round(value, 5) if isinstance(value, float) else "")
        out.append(row)
    return headers, out


def _dimension(label: str, values: list[Any]) -> dict[str, Any] | None:
    numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if len(numbers) == len(values) and values:
        return {"label": label, "values": [float(v) for v in values]}
    texts = sorted({json.dumps(v, default=str) for v in values})
    if len(texts) > 30:
        return None
    index = {t: i for i, t in enumerate(texts)}
    return {"label": label, "values": [index[json.dumps(v, default=str)] for v in values],
            "tickvals": list(range(len(texts))), "ticktext": [t.strip('"') for t in texts]}


def compare_html(items: list[dict[str, Any]], curves: dict[str, dict[str, tuple[list[int], list[float]]]],
                 metric: str | None, title: str = "depmesh: trainings compared") -> str:
    """The page for ``items`` (already filtered and sorted), ``curves`` by training id."""
    import plotly.graph_objects as go
    import plotly.io as pio

    params = varying_params(items)
    headers, body = rows(items, metric, params)
    series_names = sorted({s for c in curves.values() for s in c})
    overlay = go.Figure()
    for item in items:
        for series, (steps, values) in sorted(curves.get(item["id"], {}).items()):
            overlay.add_trace(go.Scatter(x=steps, y=values, mode="lines", name=f"{item['id'][:8]} {series}",
                                         legendgroup=series, hovertext=item["node"]))
    overlay.update_layout(title="Training curves", xaxis_title="iteration", yaxis_title="value", height=420,
                          margin={"t": 50, "l": 60, "r": 20, "b": 50})
    parts = [pio.to_html(overlay, include_plotlyjs=True, full_html=False, div_id="curves")]
    dims = []
    usable = [i for i in items if metric and isinstance(i["metrics"].get(metric), (int, float))]
    for name in params:
        values = [lookup(i, ("params", name)) for i in usable]
        if any(v is MISSING for v in values):
            continue
        dim = _dimension(name, values)
        if dim:
            dims.append(dim)
    if usable and dims:
        scores = [float(i["metrics"][metric]) for i in usable]
        parcoords = go.Figure(go.Parcoords(
            line={"color": scores, "colorscale": "Viridis", "showscale": True, "colorbar": {"title": metric}},
            dimensions=[*dims, {"label": metric, "values": scores}]))
        parcoords.update_layout(title=f"Parameters against {metric}", height=460, margin={"t": 120, "l": 60, "r": 60})
        parts.append(pio.to_html(parcoords, include_plotlyjs=False, full_html=False, div_id="parcoords"))
    else:
        parts.append('<p id="parcoords-missing">No parallel coordinates: the trainings shown share every declared '
                     'parameter, or no metric was chosen (--metric).</p>')
    table_rows = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in body)
    table = (f'<table id="trainings"><thead><tr>{"".join(f"<th>{html.escape(h)}</th>" for h in headers)}</tr></thead>'
             f"<tbody>{table_rows}</tbody></table>")
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:24px}} table{{border-collapse:collapse;font-size:13px}}
td,th{{border:1px solid #ccc;padding:3px 8px;text-align:left}} th{{background:#f3f3f3}}</style></head>
<body><h1>{html.escape(title)}</h1>
<p>{len(items)} training(s){f", sorted by metrics.{html.escape(metric)}" if metric else ""}; series: {html.escape(", ".join(series_names) or "none")}.</p>
{table}
{"".join(parts)}
</body></html>"""

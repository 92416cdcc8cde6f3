"""The impact report as one self-contained HTML page: the mesh drawn as an
SVG (columns = dependency layers), the affected subgraph highlighted, and
the figures and propagation paths (ordered by depth) as tables. No external
assets; a small script only counts what the browser drew (for tests)."""

from __future__ import annotations

import html
from typing import Any

from depmesh import graph
from depmesh.catalog import MeshSpec
from depmesh.impact import ImpactReport
from depmesh.kinds import NODE_KINDS

KIND_COLOURS = {name: kind.fill for name, kind in NODE_KINDS.items()}
NODE_W, NODE_H, COL_W, ROW_H, PAD = 176, 34, 214, 50, 20


def layers(mesh: MeshSpec) -> dict[str, int]:
    """Each node's column: the length of the longest chain of inputs above it."""
    inputs = mesh.inputs_map()
    layer: dict[str, int] = {}
    for name in graph.topological_order(inputs):
        layer[name] = 1 + max((layer[p] for p in inputs[name]), default=-1)
    return layer


def _svg(mesh: MeshSpec, report: ImpactReport) -> str:
    layer = layers(mesh)
    columns: dict[int, list[str]] = {}
    for name in graph.topological_order(mesh.inputs_map()):
        columns.setdefault(layer[name], []).append(name)
    pos: dict[str, tuple[int, int]] = {}
    for col, names in columns.items():
        for row, name in enumerate(names):
            pos[name] = (PAD + col * COL_W, PAD + row * ROW_H)
    width = PAD * 2 + (max(columns) + 1) * COL_W
    height = PAD * 2 + max(len(v) for v in columns.values()) * ROW_H
    reached = {r.node for r in report.downstream}
    changed = set(report.changed)
    hot = reached | changed
    parts = [f'<svg id="mesh" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img" aria-label="the mesh, affected nodes highlighted">',
             '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" '
             'orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="#888"/></marker>'
             '<marker id="arrow-hot" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" '
             'orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="#c0392b"/></marker></defs>']
    for node in mesh.nodes:
        for parent in node.inputs:
            (x1, y1), (x2, y2) = pos[parent], pos[node.name]
            sx, sy, ex, ey = x1 + NODE_W, y1 + NODE_H / 2, x2, y2 + NODE_H / 2
            is_hot = parent in hot and node.name in reached
            mid = (sx + ex) / 2
            parts.append(
                f'<path class="edge{" hot" if is_hot else ""}" d="M {sx} {sy} C {mid} {sy}, {mid} {ey}, {ex} {ey}" '
                f'fill="none" stroke="{"#c0392b" if is_hot else "#bbb"}" stroke-width="{2.5 if is_hot else 1}" '
                f'marker-end="url(#{"arrow-hot" if is_hot else "arrow"})"/>')
    for node in mesh.nodes:
        x, y = pos[node.name]
        cls = "changed" if node.name in changed else "affected" if node.name in reached else "other"
        fill = "#c0392b" if cls == "changed" else KIND_COLOURS[node.kind]
        stroke = "#c0392b" if cls != "other" else "#999"
        opacity = "1" if cls != "other" else "0.45"
        colour = "#fff" if cls == "changed" else "#222"
        parts.append(
            f'<g class="node {cls}" data-node="{html.escape(node.name)}" opacity="{opacity}">'
            f'<title>{html.escape(node.name)} ({node.kind}, {html.escape(node.owner)}, {node.criticality})</title>'
            f'<rect x="{x}" y="{y}" width="{NODE_W}" height="{NODE_H}" rx="{12 if node.kind == "model" else 4}" '
            f'fill="{fill}" stroke="{stroke}" stroke-width="{3 if cls != "other" else 1}"/>'
            f'<text x="{x + NODE_W / 2}" y="{y + NODE_H / 2 + 4}" text-anchor="middle" font-size="12" '
            f'fill="{colour}">{html.escape(node.name)}</text></g>')
    parts.append("</svg>")
    return "\n".join(parts)


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


STYLE = """
body { font: 14px/1.45 system-ui, -apple-system, Segoe UI, sans-serif; margin: 24px; color: #222; }
h1 { font-size: 22px; margin-bottom: 4px; } h2 { font-size: 17px; margin-top: 28px; }
.figures { display: flex; gap: 16px; flex-wrap: wrap; margin: 12px 0; }
.figure { border: 1px solid #ddd; border-radius: 6px; padding: 8px 14px; min-width: 120px; }
.figure b { display: block; font-size: 22px; }
table { border-collapse: collapse; margin: 6px 0; } th, td { border: 1px solid #ddd; padding: 4px 8px; text-align: left; }
th { background: #f5f5f5; } .svg-wrap { overflow-x: auto; border: 1px solid #eee; border-radius: 6px; }
.legend span { display: inline-block; padding: 2px 8px; margin-right: 6px; border-radius: 4px; border: 1px solid #999; }
.path { font-family: ui-monospace, monospace; font-size: 12px; }
"""


def _cost_section(cost: dict | None) -> str:
    if not cost:
        return '<h2>Retraining cost</h2><p id="cost">No estimate: no instance with history was given (--home).</p>'
    rows = [[n, c["kind"], "no history" if c["seconds"] is None else f'{c["seconds"]:g}',
             "" if c["peak_mb"] is None else f'{c["peak_mb"]:g}', c["history"]] for n, c in cost["nodes"].items()]
    peak = f'{cost["peak_mb"]:g} MB' if cost["peak_mb"] is not None else "unknown"
    missing = (f'<p>No history yet (not counted): {html.escape(", ".join(cost["no_history"]))}</p>'
               if cost["no_history"] else "")
    return (f'<h2>Retraining cost</h2><p id="cost">{cost["serial_seconds"]:g} s of work, about '
            f'{cost["critical_path_seconds"]:g} s wall along the longest chain, peak memory {peak} (medians of '
            f'recent tracked trainings and builds).</p>{missing}'
            + _table(["node", "kind", "seconds", "peak MB", "history"], rows))


def render(mesh: MeshSpec, report: ImpactReport, cost: dict | None = None) -> str:
    """The whole page for ``report`` on ``mesh`` (and the retraining ``cost`` estimate, if any)."""
    title = f"Impact of a change to {report.node}"
    figures = [("downstream nodes", len(report.downstream)), ("consumers", len(report.consumers)),
               ("owner teams", len(report.owners)), ("rollback set", len(report.rollback_set)),
               ("blast radius", f"{report.blast_radius:g}"), ("share of mesh weight", f"{report.blast_radius_share:.0%}")]
    by_kind = _table(["kind", "nodes (depth)"], [
        [kind, ", ".join(f"{r.node} ({r.depth})" for r in report.downstream if r.kind == kind)]
        for kind in report.by_kind])
    downstream = _table(["depth", "node", "kind", "owner", "criticality"],
                        [[r.depth, r.node, r.kind, r.owner, r.criticality] for r in report.downstream])
    contracts = _table(["node", "contract", "checks on the way", "reads", "latency budgets (p95 ms)"], [
        [c["node"], c["version"] or "-", ", ".join(c["checks"]),
         "; ".join(f"{k}: {', '.join(v)}" for k, v in c["reads"].items()) or "-",
         ", ".join(f"{k}: {v:g}" for k, v in c["latency_budgets_ms"].items()) or "-"]
        for c in report.contracts])
    paths = "".join(f'<li class="path">depth {len(p) - 1}: {" &rarr; ".join(html.escape(n) for n in p)}</li>'
                    for p in report.paths)
    more = "<p>(more paths exist; the longest were left out)</p>" if report.paths_truncated else ""
    legend = "".join(f'<span style="background:{c}">{k}</span>' for k, c in KIND_COLOURS.items())
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title><style>{STYLE}</style></head>
<body>
<h1>{html.escape(title)}</h1>
<p>Mesh <b>{html.escape(mesh.name)}</b> ({len(mesh.nodes)} nodes). Changed: {html.escape(", ".join(report.changed))}.
Owners to notify: {html.escape(", ".join(o.removeprefix("team:") for o in report.owners))}.</p>
<div class="figures">{"".join(f'<div class="figure"><b>{html.escape(str(v))}</b>{html.escape(k)}</div>' for k, v in figures)}</div>
<h2>The mesh</h2>
<p class="legend">{legend} <span style="background:#c0392b;color:#fff">changed</span>
<span style="border:3px solid #c0392b">affected</span> others faded</p>
<div class="svg-wrap">{_svg(mesh, report)}</div>
<h2>Reached, by kind</h2>{by_kind}
<h2>Downstream nodes</h2>{downstream}
<h2>Consumers at the end</h2><p>{html.escape(", ".join(report.consumers) or "none")}</p>
<h2>Rollback set</h2><p>Models that would have to move together:
{html.escape(", ".join(report.rollback_set) or "none")}</p>
<h2>Contracts and checks on the way</h2>{contracts}
<h2>Propagation paths, by depth</h2><ol>{paths}</ol>{more}
{_cost_section(cost)}
<script>
// Count what the browser actually drew, for automated checks of this page.
const drawn = [...document.querySelectorAll("g.node")].filter(g => g.getBBox().width > 0);
document.body.dataset.nodesDrawn = drawn.length;
document.body.dataset.affectedDrawn = drawn.filter(g => g.classList.contains("affected")).length;
document.body.dataset.changedDrawn = drawn.filter(g => g.classList.contains("changed")).length;
</script>
</body></html>
"""

"""What retraining the part of the mesh a change reaches will cost, from
history: each model's median wall time and peak memory over its recent
tracked trainings; each other node's build time from its last
materializations. Nodes with no history are named, not guessed."""

from __future__ import annotations

import statistics
from typing import Any

from depmesh import graph


def table_seconds(instance: Any, names: list[str], recent: int = 5) -> dict[str, float]:
    """Median build seconds of each table node's recent materializations (their ``seconds`` metadata)."""
    from dagster import AssetKey

    out = {}
    for name in names:
        records = instance.fetch_materializations(AssetKey(name.split("/")), limit=recent).records
        seconds = [float(r.asset_materialization.metadata["seconds"].value) for r in records
                   if r.asset_materialization and "seconds" in r.asset_materialization.metadata]
        if seconds:
            out[name] = statistics.median(seconds)
    return out


def retraining_cost(mesh: Any, changed: list[str], reached: list[str], tracking: Any,
                    instance: Any = None) -> dict[str, Any]:
    """Expected wall time (serial, and along the longest dependency chain:
    what a run with enough parallel workers takes) and peak memory of
    rebuilding ``changed`` and what it reaches."""
    nodes = [n for n in dict.fromkeys([*changed, *reached])]
    models = [n for n in nodes if mesh.node(n).kind == "model"]
    tables = [n for n in nodes if mesh.node(n).kind != "model"]
    model_costs = tracking.costs(models) if tracking is not None else {}
    table_costs = table_seconds(instance, tables) if instance is not None else {}
    seconds = {**{n: c["seconds"] for n, c in model_costs.items()}, **table_costs}
    inputs = mesh.inputs_map()
    finish: dict[str, float] = {}
    for name in graph.topological_order(inputs):
        if name in nodes:
            finish[name] = seconds.get(name, 0.0) + max((finish.get(p, 0.0) for p in inputs[name] if p in nodes),
                                                       default=0.0)
    peaks = [c["peak_mb"] for c in model_costs.values() if c["peak_mb"]]
    return {
        "nodes": {n: {"kind": mesh.node(n).kind, "seconds": round(seconds[n], 3) if n in seconds else None,
                      "peak_mb": model_costs.get(n, {}).get("peak_mb"),
                      "history": int(model_costs[n]["trainings"]) if n in model_costs else (1 if n in table_costs else 0)}
                  for n in nodes},
        "serial_seconds": round(sum(seconds.values()), 2),
        "critical_path_seconds": round(max(finish.values(), default=0.0), 2),
        "peak_mb": max(peaks) if peaks else None,
        "no_history": [n for n in nodes if n not in seconds],
    }


def cost_lines(cost: dict[str, Any]) -> list[str]:
    lines = [f"expected retraining cost: {cost['serial_seconds']:g} s of work, about {cost['critical_path_seconds']:g} s "
             f"wall along the longest chain, peak memory "
             + (f"{cost['peak_mb']:g} MB" if cost["peak_mb"] is not None else "unknown")
             + " (medians of recent tracked trainings and builds)"]
    if cost["no_history"]:
        lines.append("  no history yet (not counted): " + ", ".join(cost["no_history"]))
    return lines

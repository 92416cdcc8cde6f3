"""How results read on a terminal: the mesh as Mermaid, run summaries, impact reports."""

from __future__ import annotations

from typing import Any

from depmesh import graph
from depmesh.catalog import MeshSpec
from depmesh.cli.common import table
from depmesh.keys import SERVED_BY_KEY, SERVED_CHECK, SERVING_KEY, STORED_KEY
from depmesh.kinds import NODE_KINDS
from depmesh.runs import blocked_checks

KIND_SHAPES = {name: kind.shape for name, kind in NODE_KINDS.items()}
KIND_STYLES = {name: f"fill:{kind.fill},stroke:{kind.stroke}" for name, kind in NODE_KINDS.items()}


def mermaid(mesh: MeshSpec) -> str:
    """The mesh as a Mermaid flowchart (GitHub renders it), one class per kind."""

    ident = {name: name.replace("/", "_") for name in mesh.names}
    lines = ["flowchart LR"]
    for name in graph.topological_order(mesh.inputs_map()):
        node = mesh.node(name)
        left, right = KIND_SHAPES[node.kind]
        lines.append(f"  {ident[name]}{left}\"{name}\"{right}:::{node.kind}")
    for node in mesh.nodes:
        lines.extend(f"  {ident[parent]} --> {ident[node.name]}" for parent in node.inputs)
    lines += [f"  classDef {kind} {style}" for kind, style in KIND_STYLES.items()]
    return "\n".join(lines)


def summary_rows(result: Any, mesh: MeshSpec, missing: str = "NOT BUILT") -> list[list[object]]:
    """One row per node: what was built in the run (rows or metrics, version,
    seconds), or why not (blocked by which check, or skipped below a block)."""

    events = {"/".join(e.asset_key.path): e for e in result.get_asset_materialization_events()}
    blocked: dict[str, list[str]] = {}
    for line in blocked_checks(result):
        name, check = line.rsplit(" ", 1)
        blocked.setdefault(name, []).append(check)
    skipped = {e.step_key.replace("__", "/") for e in result.all_events if e.event_type_value == "STEP_SKIPPED"}
    not_served = {e.asset_key.to_user_string() for e in result.get_asset_check_evaluations()
                  if e.check_name == SERVED_CHECK and e.passed and not getattr(e.metadata.get(STORED_KEY), "value", True)}
    rows = []
    for name in graph.topological_order(mesh.inputs_map()):
        event = events.get(name)
        if event is None:
            why = (f"BLOCKED by {', '.join(blocked[name])}" if name in blocked
                   else "NOT SERVED: no Production version yet" if name in not_served
                   else "not run (blocked upstream)" if name in skipped else missing)
            rows.append([name, mesh.node(name).kind, why, "", ""])
            continue
        md = event.materialization.metadata
        value = lambda key: getattr(md.get(key), "value", None)  # noqa: E731
        if mesh.node(name).kind == "model":
            metrics = {k.split("/", 1)[1]: v.value for k, v in md.items()
                       if k.startswith("metric/") and k != "metric/eval_rows"}
            detail = ", ".join(f"{k}={v:.3g}" for k, v in list(metrics.items())[:4])
            rows.append([name, "model", detail, value("model_version"), value("seconds")])
        else:
            served = served_short(value(SERVING_KEY)) if mesh.node(name).kind == "scores" else ""
            rows.append([name, mesh.node(name).kind, f"{value('dagster/row_count'):,} rows" + served,
                         value("data_version"), value("seconds")])
    return rows


def served_short(record: dict | None) -> str:
    """What served a scores table, in a few words for the run's table."""
    if not record:
        return ""
    if record["mode"] == "production":
        return f", release {record.get('release_id')} ({record.get('status')})"
    return ", NOT APPROVED candidate" if record["mode"] == "candidate" else ", latest (not governed)"


def served_lines(result: Any) -> list[str]:
    """Each scores table's 'served by ...' sentence from the run's materializations."""
    return [f"  {e.asset_key.to_user_string()}: {e.materialization.metadata[SERVED_BY_KEY].value}"
            for e in result.get_asset_materialization_events() if SERVED_BY_KEY in e.materialization.metadata]


def impact_report(report: Any) -> str:
    lines = [f"impact of a change to {report.node}: {len(report.downstream)} downstream nodes, "
             f"{len(report.consumers)} consumer(s), blast radius {report.blast_radius:g} "
             f"({report.blast_radius_share:.0%} of the mesh's weight)", ""]
    rows = [[r.depth, r.node, r.kind, r.owner.removeprefix("team:"), r.criticality] for r in report.downstream]
    lines.append(table(rows, ["depth", "node", "kind", "owner", "criticality"]) if rows else "nothing downstream")
    lines += ["", "consumers:      " + (", ".join(report.consumers) or "none"),
              "owners:         " + ", ".join(o.removeprefix("team:") for o in report.owners),
              "rollback set:   " + (", ".join(report.rollback_set) or "none"), "", "contracts and checks on the way:"]
    lines += [f"  {c['node']}: {', '.join(c['checks'])}" + (f" (contract v{c['version']})" if c["version"] else "")
              for c in report.contracts] or ["  none"]
    lines += ["", "propagation paths, by depth:"]
    lines += [f"  {len(p) - 1}: " + " -> ".join(p) for p in report.paths] or ["  none"]
    if report.paths_truncated:
        lines.append("  (more paths exist; the longest were left out)")
    return "\n".join(lines)

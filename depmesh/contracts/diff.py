"""Compare the contracts of two versions of a catalog: which changes break
the data's consumers or producers, whom they reach, and whether each breaking
change came with a major version bump. Pure functions over two MeshSpecs."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from depmesh import graph
from depmesh.catalog import ColumnSpec, ContractSpec, EdgeContract, MeshSpec, NodeSpec


@dataclass(frozen=True)
class Change:
    node: str
    what: str  # e.g. "column removed", "range narrowed", "edge: column read added"
    detail: str
    breaking: bool

    @property
    def on_edge(self) -> bool:
        """A change to what this node declares it needs from an input (an edge contract)."""
        return self.what.startswith(EDGE)


EDGE = "edge: "


@dataclass
class NodeDiff:
    node: str
    old_version: str | None
    new_version: str | None
    changes: list[Change]
    downstream: list[str] = field(default_factory=list)
    owners: list[str] = field(default_factory=list)

    @property
    def breaking(self) -> bool:
        return any(c.breaking for c in self.changes)

    @property
    def major_bumped(self) -> bool:
        def major(v: str | None) -> int:
            return int(v.split(".")[0]) if v else 0

        return self.old_version is None or self.new_version is None or major(self.new_version) > major(self.old_version)

    @property
    def violation(self) -> bool:
        """A breaking change without a major version bump. An edge contract is
        versioned by its consumer's contract: a breaking edge change needs that
        contract to bump its major version (a consumer with no contract of its
        own cannot, so the change is flagged)."""
        node_breaking = any(c.breaking and not c.on_edge for c in self.changes)
        edge_breaking = any(c.breaking and c.on_edge for c in self.changes)
        bumped = bool(self.old_version and self.new_version) and self.major_bumped
        return (node_breaking and not self.major_bumped) or (edge_breaking and not bumped)

    @property
    def unversioned(self) -> bool:
        """Changed, but the contract version stayed the same."""
        return bool(self.changes) and self.old_version == self.new_version


@dataclass
class DiffReport:
    nodes: list[NodeDiff]

    @property
    def violations(self) -> list[NodeDiff]:
        return [n for n in self.nodes if n.violation]

    def as_json(self) -> dict[str, Any]:
        return {
            "ok": not self.violations,
            "breaking": sum(1 for n in self.nodes for c in n.changes if c.breaking),
            "non_breaking": sum(1 for n in self.nodes for c in n.changes if not c.breaking),
            "violations": [n.node for n in self.violations],
            "nodes": [
                {**{k: v for k, v in asdict(n).items() if k != "changes"},
                 "breaking": n.breaking, "major_bumped": n.major_bumped, "violation": n.violation,
                 "changes": [asdict(c) for c in n.changes]}
                for n in self.nodes
            ],
        }


def _lo(v: float | None) -> float:
    return float("-inf") if v is None else v


def _hi(v: float | None) -> float:
    return float("inf") if v is None else v


def _column_changes(node: str, old: ColumnSpec, new: ColumnSpec) -> list[Change]:
    out: list[Change] = []
    name = old.name

    def add(what: str, detail: str, breaking: bool) -> None:
        out.append(Change(node, what, f"{name}: {detail}", breaking))

    if old.dtype != new.dtype:
        add("column retyped", f"{old.dtype} -> {new.dtype}", True)
    if old.nullable and not new.nullable:
        add("nullability tightened", "nullable -> not null", True)
    elif not old.nullable and new.nullable:
        add("nullability relaxed", "not null -> nullable", False)
    elif old.nullable and new.nullable and old.max_null_fraction != new.max_null_fraction:
        before, after = _hi(old.max_null_fraction), _hi(new.max_null_fraction)
        add("nullability tightened" if after < before else "nullability relaxed",
            f"max null fraction {old.max_null_fraction} -> {new.max_null_fraction}", after < before)
    if (old.min, old.max) != (new.min, new.max):
        narrowed = _lo(new.min) > _lo(old.min) or _hi(new.max) < _hi(old.max)
        widened = _lo(new.min) < _lo(old.min) or _hi(new.max) > _hi(old.max)
        detail = f"[{old.min}, {old.max}] -> [{new.min}, {new.max}]"
        if narrowed:
            add("range narrowed", detail, True)
        elif widened:
            add("range widened", detail, False)
    if old.allowed != new.allowed:
        before = set(old.allowed) if old.allowed is not None else None
        after = set(new.allowed) if new.allowed is not None else None
        if before is None:
            add("allowed values added", f"now one of {sorted(map(str, after))}", True)
        elif after is None:
            add("allowed values dropped", "any value now allowed", False)
        else:
            if before - after:
                add("allowed value removed", f"{sorted(map(str, before - after))}", True)
            if after - before:
                add("allowed value added", f"{sorted(map(str, after - before))}", False)
    if not old.unique and new.unique:
        add("uniqueness added", "values must now be unique", True)
    elif old.unique and not new.unique:
        add("uniqueness dropped", "values may now repeat", False)
    if old.severity != new.severity:
        add("severity raised" if new.severity == "ERROR" else "severity lowered",
            f"{old.severity} -> {new.severity}", new.severity == "ERROR")
    return out


def contract_changes(node: str, old: ContractSpec | None, new: ContractSpec | None) -> list[Change]:
    if old is None and new is None:
        return []
    if old is None:
        return [Change(node, "contract added", f"v{new.version}", True)]
    if new is None:
        return [Change(node, "contract removed", f"v{old.version} no longer enforced", False)]
    out: list[Change] = []
    old_cols = {c.name: c for c in old.columns}
    new_cols = {c.name: c for c in new.columns}
    for name in sorted(set(old_cols) - set(new_cols)):
        out.append(Change(node, "column removed", name, True))
    for name in sorted(set(new_cols) - set(old_cols)):
        out.append(Change(node, "column added", f"{name} ({new_cols[name].dtype})", False))
    for name in sorted(set(old_cols) & set(new_cols)):
        out.extend(_column_changes(node, old_cols[name], new_cols[name]))
    if (old.min_rows, old.max_rows) != (new.min_rows, new.max_rows):
        narrowed = _lo(new.min_rows) > _lo(old.min_rows) or _hi(new.max_rows) < _hi(old.max_rows)
        out.append(Change(node, "row count narrowed" if narrowed else "row count widened",
                          f"[{old.min_rows}, {old.max_rows}] -> [{new.min_rows}, {new.max_rows}]", narrowed))
    for key in sorted(set(new.keys) - set(old.keys)):
        out.append(Change(node, "unique key added", "(" + ", ".join(key) + ")", True))
    for key in sorted(set(old.keys) - set(new.keys)):
        out.append(Change(node, "unique key dropped", "(" + ", ".join(key) + ")", False))
    old_dist = {(d.column, d.stat, str(d.value)): d for d in old.distribution}
    new_dist = {(d.column, d.stat, str(d.value)): d for d in new.distribution}
    for k in sorted(set(new_dist) - set(old_dist)):
        out.append(Change(node, "distribution bound added", f"{k[0]} {k[1]}", new_dist[k].severity == "ERROR"))
    for k in sorted(set(old_dist) - set(new_dist)):
        out.append(Change(node, "distribution bound dropped", f"{k[0]} {k[1]}", False))
    for k in sorted(set(old_dist) & set(new_dist)):
        a, b = old_dist[k].max_change, new_dist[k].max_change
        if a != b:
            out.append(Change(node, "distribution bound narrowed" if b < a else "distribution bound widened",
                              f"{k[0]} {k[1]}: max change {a:g} -> {b:g}", b < a))
    old_exp = {(e.type, repr(sorted(e.kwargs.items()))): e for e in old.expectations}
    new_exp = {(e.type, repr(sorted(e.kwargs.items()))): e for e in new.expectations}
    for k in sorted(set(new_exp) - set(old_exp)):
        out.append(Change(node, "expectation added", k[0], new_exp[k].severity == "ERROR"))
    for k in sorted(set(old_exp) - set(new_exp)):
        out.append(Change(node, "expectation removed", k[0], False))
    if old.freshness != new.freshness:
        before = old.freshness.max_age_hours if old.freshness else float("inf")
        after = new.freshness.max_age_hours if new.freshness else float("inf")
        out.append(Change(node, "freshness tightened" if after < before else "freshness relaxed",
                          f"max age {before:g}h -> {after:g}h", after < before))
    return out


def edge_changes(node: str, old: NodeSpec | None, new: NodeSpec | None) -> list[Change]:
    """What ``node`` (the consumer) needs from each input, before and after:
    reading another column or a tighter latency budget is breaking (a producer
    that met the old need may not meet the new one)."""
    before: dict[str, EdgeContract] = dict(old.edges) if old else {}
    after: dict[str, EdgeContract] = dict(new.edges) if new else {}
    out: list[Change] = []
    for name in sorted(set(before) | set(after)):
        a, b = before.get(name), after.get(name)
        if a is None:
            detail = ", ".join(filter(None, [f"reads {', '.join(b.columns)}" if b.columns else "",
                                             f"p95 <= {b.latency_p95_ms:g} ms" if b.latency_p95_ms else ""]))
            out.append(Change(node, EDGE + "contract added", f"on {name}: {detail}", True))
            continue
        if b is None:
            out.append(Change(node, EDGE + "contract removed", f"on {name}", False))
            continue
        added, dropped = sorted(set(b.columns) - set(a.columns)), sorted(set(a.columns) - set(b.columns))
        if added:
            out.append(Change(node, EDGE + "column read added", f"on {name}: {', '.join(added)}", True))
        if dropped:
            out.append(Change(node, EDGE + "column no longer read", f"on {name}: {', '.join(dropped)}", False))
        if a.latency_p95_ms != b.latency_p95_ms:
            tighter = _hi(b.latency_p95_ms) < _hi(a.latency_p95_ms)
            out.append(Change(node, EDGE + ("latency budget tightened" if tighter else "latency budget relaxed"),
                              f"on {name}: p95 {a.latency_p95_ms} -> {b.latency_p95_ms} ms", tighter))
    return out


def diff_meshes(old: MeshSpec, new: MeshSpec) -> DiffReport:
    """Every contract change from ``old`` to ``new``, per node, with whom it reaches."""
    old_nodes = {n.name: n for n in old.nodes}
    new_nodes = {n.name: n for n in new.nodes}
    reports: list[NodeDiff] = []
    for name in sorted(set(old_nodes) | set(new_nodes)):
        before, after = old_nodes.get(name), new_nodes.get(name)
        if after is None:
            changes = [Change(name, "node removed", f"{name} is no longer in the mesh", True)]
        else:
            changes = contract_changes(name, before.contract if before else None, after.contract)
            if before is None:
                changes = [c for c in changes if c.what != "contract added"]
            else:
                changes += edge_changes(name, before, after)
        if not changes:
            continue
        mesh = new if after is not None else old
        reach = sorted(graph.downstream(mesh.inputs_map(), name))
        owners = sorted({mesh.node(n).owner for n in reach} | {mesh.node(name).owner})
        reports.append(NodeDiff(
            node=name,
            old_version=before.contract.version if before and before.contract else None,
            new_version=after.contract.version if after and after.contract else None,
            changes=changes, downstream=reach, owners=owners,
        ))
    return DiffReport(reports)

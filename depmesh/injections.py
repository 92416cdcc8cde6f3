"""The fault vocabulary: what a simulation injects into data (``NODE:COLUMN:KIND[=VALUE]``,
``MODEL:latency=300ms``) and which process and serving faults a drill may name, parsed and checked against a
mesh. Pure: the failure-mode catalogue validates its drills with it without importing what runs them
(depmesh.simulate, depmesh.failure_modes.drills)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from depmesh.catalog import MeshSpec

TABLE_KINDS = {"shift", "scale", "nulls", "drop", "rename", "dtype"}
DTYPE_NAMES = {"string": "str", "str": "str", "float64": "float64", "float32": "float32", "int64": "int64",
               "category": "category", "object": "object"}


class InjectionError(ValueError):
    pass


@dataclass(frozen=True)
class Injection:
    spec: str
    node: str
    kind: str
    column: str | None = None
    value: Any = None


def parse_injection(spec: str, mesh: MeshSpec) -> Injection:
    parts = spec.split(":")
    node = parts[0]
    if node not in mesh.names:
        raise InjectionError(f"--inject {spec!r}: no node named {node!r} in {mesh.path.name}")
    kind_node = mesh.node(node).kind
    if len(parts) == 2 and parts[1].startswith("latency="):
        if kind_node != "model":
            raise InjectionError(f"--inject {spec!r}: latency applies to models, and {node} is a {kind_node}")
        match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(ms|s)", parts[1].split("=", 1)[1].strip())
        if not match:
            raise InjectionError(f"--inject {spec!r}: latency must look like 300ms or 1.5s")
        seconds = float(match.group(1)) / (1000 if match.group(2) == "ms" else 1)
        return Injection(spec, node, "latency", value=seconds)
    if len(parts) != 3 or not parts[1]:
        raise InjectionError(f"--inject {spec!r}: expected NODE:COLUMN:KIND[=VALUE] or MODEL:latency=300ms")
    if kind_node == "model":
        raise InjectionError(f"--inject {spec!r}: {node} is a model; models take only latency=...")
    column, action = parts[1], parts[2]
    kind, _, raw = action.partition("=")
    if kind not in TABLE_KINDS:
        raise InjectionError(f"--inject {spec!r}: unknown injection {kind!r} (known: {', '.join(sorted(TABLE_KINDS))}, latency)")
    value: Any = None
    if kind in ("shift", "scale", "nulls"):
        try:
            value = float(raw)
        except ValueError:
            raise InjectionError(f"--inject {spec!r}: {kind} needs a number, got {raw!r}") from None
        if kind == "nulls" and not 0 <= value <= 1:
            raise InjectionError(f"--inject {spec!r}: nulls takes a rate between 0 and 1")
    elif kind == "rename":
        if not raw:
            raise InjectionError(f"--inject {spec!r}: rename needs the new name, rename=NEW")
        value = raw
    elif kind == "dtype":
        if raw not in DTYPE_NAMES:
            raise InjectionError(f"--inject {spec!r}: dtype must be one of {', '.join(DTYPE_NAMES)}")
        value = DTYPE_NAMES[raw]
    return Injection(spec, node, kind, column, value)


# Process faults a drill can inject, besides the simulation's data injections ("NODE:COLUMN:op"):
#   kill-step:NODE             the step building NODE dies (SIGKILL) as it starts, in a multiprocess run
#                              (the run's depmesh/drill_fault tag asks for it)
#   unreachable-database:NODE  the registry's database cannot be reached while NODE runs (a closed port)
#   serve-unapproved:NODE      the scores step of NODE serves what its run trained instead of the Production set
#                              (a serving path that bypasses the registry), after a retrain nobody promoted
#   served-drift:NODE          the registry's Production set moves while the scores step of NODE runs (another
#                              writer retires its model's Production version between the plan and the verdict)
PROCESS_FAULTS = ("kill-step", "unreachable-database")
SERVING_FAULTS = ("serve-unapproved", "served-drift")
UNREACHABLE_URL = "postgresql://depmesh-drill@127.0.0.1:9/unreachable?connect_timeout=2"
DRILL_SAMPLE = 0.05


def process_fault(drill: str) -> tuple[str, str] | None:
    """(fault, node) for a process-fault or serving-fault drill, else None (a data injection)."""
    fault, _, node = drill.partition(":")
    return (fault, node) if fault in PROCESS_FAULTS + SERVING_FAULTS else None


def check_drill(drill: str, mesh: Any) -> None:
    """Raise (InjectionError) when ``drill`` is neither a process fault on a node of ``mesh`` nor a data injection."""
    fault = process_fault(drill)
    if fault is None:
        parse_injection(drill, mesh)
    elif fault[1] not in mesh.names:
        raise InjectionError(f"{fault[0]}: unknown node {fault[1]!r} in mesh {mesh.name}")
    elif fault[0] in SERVING_FAULTS and mesh.node(fault[1]).kind != "scores":
        raise InjectionError(f"{fault[0]}: {fault[1]} is a {mesh.node(fault[1]).kind} node, not a scores node")

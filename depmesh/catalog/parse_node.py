"""One node of the catalog: its kind, owner, inputs, contract and model sections."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from depmesh.catalog.fields import EMAIL_RE, NAME_RE, _check_entrypoint, _column_list
from depmesh.catalog.parse_contract import _parse_contract, _parse_edge, _parse_lineage
from depmesh.catalog.parse_model import _parse_model
from depmesh.catalog.reader import _Checker, _type_name
from depmesh.catalog.spec import (
    CRITICALITY_WEIGHTS,
    KINDS,
    EdgeContract,
    NodeSpec,
)

NODE_KEYS = {
    "name", "kind", "owner", "description", "inputs", "tags", "criticality",
    "compute", "params", "contract", "model", "predictions", "lineage",
}


def _parse_inputs(c: _Checker, raw: Mapping, label: str) -> tuple[list[str], dict[str, EdgeContract]]:
    """The node's inputs (names, or mappings with an edge contract), each listed once."""
    raw_inputs = raw.get("inputs", [])
    inputs: list[str] = []
    edges: dict[str, EdgeContract] = {}
    if not c.typed(raw_inputs, list, "a list of node names", node=label, field="inputs", at=raw):
        return inputs, edges
    for i, item in enumerate(raw_inputs):
        if isinstance(item, dict):
            edge = _parse_edge(c, item, label, f"inputs[{i}]")
            if edge is not None:
                inputs.append(item["node"])
                edges[item["node"]] = edge
        elif c.typed(item, str, "a node name, or a mapping with node, columns, latency_p95_ms",
                     node=label, field=f"inputs[{i}]", at=raw_inputs):
            inputs.append(item)
    seen: set[str] = set()
    for item in inputs:
        if item in seen:
            c.add(f"input {item!r} is listed twice", node=label, field="inputs", at=raw_inputs)
        seen.add(item)
    return inputs, edges


def _parse_tags(c: _Checker, raw: Mapping, label: str) -> dict:
    tags = raw.get("tags", {})
    if not c.typed(tags, dict, "a mapping of string -> string", node=label, field="tags", at=raw):
        return {}
    for k, v in tags.items():
        if not isinstance(v, str) or not isinstance(k, str):
            c.add(f"tag {k!r}: expected a string value, got {_type_name(v)} {v!r}", node=label, field=f"tags.{k}", at=tags)
    return tags


def _parse_builder(c: _Checker, raw: Mapping, label: str, kind: Any, inputs: list[str]) -> tuple[Any, Any]:
    """(compute, model): a model node is built by its model section's trainer, any other by its compute."""
    compute = model = None
    if kind == "model":
        if "compute" in raw:
            c.add("a model is built by model.trainer, not compute", node=label, field="compute", at=raw)
        if "model" not in raw:
            c.add("missing required key 'model' (trainer, split, and target unless it clusters)", node=label, field="model", at=raw)
        else:
            model = _parse_model(c, raw["model"], label)
        if not inputs:
            c.add("a model needs at least one input to train on", node=label, field="inputs", at=raw)
    elif kind in KINDS:
        if "model" in raw:
            c.add(f"only model nodes take a 'model' section, this node is a {kind}", node=label, field="model", at=raw)
        if "compute" not in raw:
            c.add("missing required key 'compute' ('module:function' that builds the table)",
                  node=label, field="compute", at=raw)
        else:
            compute = _check_entrypoint(c, raw["compute"], node=label, field="compute", at=raw)
    return compute, model


def _parse_predictions(c: _Checker, raw: Mapping, label: str, kind: Any, contract: Any) -> tuple[str, ...]:
    """A scores node's prediction columns, each in its contract."""
    if kind != "scores":
        c.add(f"only scores nodes declare prediction columns, this node is a {kind}", node=label,
              field="predictions", at=raw)
        return ()
    predictions = _column_list(c, raw["predictions"], node=label, field="predictions", at=raw) or ()
    declared = {col.name for col in contract.columns} if contract is not None else set()
    for column in predictions if declared else ():
        if column not in declared:
            c.add(f"prediction column {column!r} is not in the node's contract", node=label,
                  field="predictions", at=raw)
    return tuple(predictions)


def _parse_node(c: _Checker, raw: Any, index: int) -> NodeSpec | None:
    if not isinstance(raw, dict):
        c.add(f"expected a mapping, got {_type_name(raw)} {raw!r}", field=f"nodes[{index}]", at=raw)
        return None
    name = raw.get("name")
    label = name if isinstance(name, str) else f"nodes[{index}]"
    if name is None:
        c.add("missing required key 'name'", node=label, field="name", at=raw)
    elif c.typed(name, str, "a string", node=label, field="name", at=raw) and not NAME_RE.match(name):
        c.add(f"{name!r} is not a valid asset name (segments of letters, digits and _, joined by /)",
              node=label, field="name", at=raw)
    c.keys(raw, NODE_KEYS, node=label, prefix="")
    kind = raw.get("kind")
    if kind is None:
        c.add("missing required key 'kind'", node=label, field="kind", at=raw)
    elif kind not in KINDS:
        c.add(f"unknown kind {kind!r} (known: {', '.join(KINDS)})", node=label, field="kind", at=raw)
    owner = raw.get("owner")
    if owner is None:
        c.add("missing required key 'owner'", node=label, field="owner", at=raw)
    elif c.typed(owner, str, "a team name or an email", node=label, field="owner", at=raw):
        if not EMAIL_RE.match(owner) and not owner.startswith("team:"):
            owner = "team:" + owner
    inputs, edges = _parse_inputs(c, raw, label)
    tags = _parse_tags(c, raw, label)
    criticality = raw.get("criticality", "medium")
    if criticality not in CRITICALITY_WEIGHTS:
        c.add(f"unknown criticality {criticality!r} (known: {', '.join(CRITICALITY_WEIGHTS)})",
              node=label, field="criticality", at=raw)
    description = raw.get("description", "")
    c.typed(description, str, "a string", node=label, field="description", at=raw)
    params = raw.get("params", {})
    if not c.typed(params, dict, "a mapping", node=label, field="params", at=raw):
        params = {}

    compute, model = _parse_builder(c, raw, label, kind, inputs)
    contract = _parse_contract(c, raw["contract"], label) if "contract" in raw else None
    if contract is not None and kind == "model":
        c.add("a model's output is not a table, so it takes no table contract", node=label, field="contract", at=raw)

    evaluation_table = getattr(getattr(model, "split", None), "evaluate", None) if model else None
    if isinstance(evaluation_table, str) and evaluation_table not in inputs:
        c.add(f"the evaluation table {evaluation_table!r} must be one of the model's inputs", node=label,
              field="model.split.evaluate", at=raw)
    predictions = _parse_predictions(c, raw, label, kind, contract) if "predictions" in raw else ()
    lineage = _parse_lineage(c, raw.get("lineage"), label, inputs) if "lineage" in raw else {}
    if not isinstance(name, str) or kind not in KINDS or not isinstance(owner, str):
        return None
    return NodeSpec(
        name=name, kind=kind, owner=owner, description=description if isinstance(description, str) else "",
        inputs=tuple(i for i in inputs if isinstance(i, str)), tags={str(k): str(v) for k, v in tags.items()},
        criticality=criticality if criticality in CRITICALITY_WEIGHTS else "medium",
        compute=compute, params=dict(params), contract=contract, model=model, edges=edges,
        predictions=tuple(predictions), lineage=lineage, line=getattr(raw, "line", None),
        key_lines={str(k): v for k, v in (getattr(raw, "key_lines", None) or {}).items()},
    )


def _name_duplicates(c: _Checker, raw_nodes: list) -> None:
    """A duplicate key found while reading the YAML names the node it is in (the last node starting above it)."""
    starts = sorted((raw.line, raw.get("name")) for raw in raw_nodes
                    if isinstance(raw, dict) and getattr(raw, "line", None) and isinstance(raw.get("name"), str))
    for i, problem in enumerate(c.problems):
        if problem.node is None and problem.line and problem.message.startswith("duplicate key"):
            owner = [name for line, name in starts if line <= problem.line]
            if owner:
                c.problems[i] = replace(problem, node=owner[-1])

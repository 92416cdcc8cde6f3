"""Declaring a node's asset: its key, code version, column schema, freshness policy and kind tag, read from the node's spec (running its step: depmesh.assets.step)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from dagster import (
    AssetKey,
    FreshnessPolicy,
    TableColumn,
    TableColumnConstraints,
    TableSchema,
)

from depmesh.catalog import NodeSpec
from depmesh.kinds import NODE_KINDS
from depmesh.versions import code_version

KINDS_TAG = {name: kind.dagster_kind for name, kind in NODE_KINDS.items()}


def asset_key(name: str) -> AssetKey:
    return AssetKey(name.split("/"))


def argument_name(name: str) -> str:
    return name.replace("/", "__")


def node_code_version(node: NodeSpec) -> str:
    settings: dict[str, Any] = {"params": dict(node.params)}
    if node.model:
        m = node.model
        settings.update(target=m.target, params=dict(m.params), seed=m.seed, split=m.split.__dict__)
    return code_version(node.entrypoint, settings)


def column_schema(node: NodeSpec) -> TableSchema | None:
    if not node.contract or not node.contract.columns:
        return None
    columns = []
    for col in node.contract.columns:
        other = []
        if col.min is not None or col.max is not None:
            other.append(f"range [{col.min if col.min is not None else '-inf'}, {col.max if col.max is not None else 'inf'}]")
        if col.allowed is not None:
            other.append("one of " + ", ".join(map(str, col.allowed)))
        if col.max_null_fraction is not None:
            other.append(f"at most {col.max_null_fraction:.2%} nulls")
        if col.severity == "WARN":
            other.append("WARN: these rules warn, they do not block")
        columns.append(
            TableColumn(
                name=col.name,
                type=col.dtype,
                description=col.description or None,
                constraints=TableColumnConstraints(nullable=col.nullable, unique=col.unique, other=other),
            )
        )
    return TableSchema(columns=columns)


def freshness_policy(node: NodeSpec) -> FreshnessPolicy | None:
    """A contract's bound on the age of the last materialization (freshness
    without a column) is Dagster's own freshness policy: the UI shows the
    asset fresh, warning or failing. An ERROR bound fails at max_age; a WARN
    bound warns at max_age and fails at twice it."""
    fr = node.contract.freshness if node.contract else None
    if fr is None or fr.column is not None:
        return None
    age = timedelta(hours=fr.max_age_hours)
    if fr.severity == "ERROR":
        return FreshnessPolicy.time_window(fail_window=age)
    return FreshnessPolicy.time_window(fail_window=2 * age, warn_window=age)

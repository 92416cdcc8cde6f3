"""The contract section of a node (columns, row count, keys, freshness, distribution, expectations) and its inputs' edge contracts and lineage."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from depmesh.catalog.fields import SEMVER_RE, _column_list, _hours, _number, _severity
from depmesh.catalog.reader import _Checker
from depmesh.catalog.spec import (
    DTYPES,
    EXTRA_EXPECTATIONS,
    ColumnSpec,
    ContractSpec,
    DistributionSpec,
    EdgeContract,
    ExpectationSpec,
    FreshnessSpec,
)

CONTRACT_KEYS = {"version", "severity", "columns", "row_count", "keys", "freshness", "distribution", "expectations"}
COLUMN_KEYS = {"dtype", "nullable", "max_null_fraction", "unique", "min", "max", "allowed", "description", "severity"}
ROW_COUNT_KEYS = {"min", "max", "severity"}
FRESHNESS_KEYS = {"max_age", "column", "severity"}
DISTRIBUTION_KEYS = {"column", "stat", "max_change", "quantiles", "value", "severity"}
EDGE_KEYS = {"node", "columns", "latency_p95_ms"}


def _parse_columns(c: _Checker, raw_cols: Any, node: str, default_sev: str, at: Any) -> list[ColumnSpec]:
    columns: list[ColumnSpec] = []
    if not c.typed(raw_cols, dict, "a mapping of column name -> spec", node=node, field="contract.columns", at=at):
        return columns
    for col, spec in raw_cols.items():
        f = f"contract.columns.{col}"
        if not c.typed(spec, dict, "a mapping with at least 'dtype'", node=node, field=f, at=raw_cols):
            continue
        c.keys(spec, COLUMN_KEYS, node=node, prefix=f + ".")
        dtype = spec.get("dtype")
        if dtype is None:
            c.add("missing required key 'dtype'", node=node, field=f + ".dtype", at=spec)
        elif dtype not in DTYPES:
            c.add(f"unknown dtype {dtype!r} (known: {', '.join(DTYPES)})", node=node, field=f + ".dtype", at=spec)
        nullable = spec.get("nullable", True)
        unique = spec.get("unique", False)
        c.typed(nullable, bool, "true or false", node=node, field=f + ".nullable", at=spec)
        c.typed(unique, bool, "true or false", node=node, field=f + ".unique", at=spec)
        null_share = _number(c, spec.get("max_null_fraction"), node=node, field=f + ".max_null_fraction", at=spec)
        if null_share is not None and not 0 <= null_share <= 1:
            c.add(f"must be between 0 and 1, got {null_share}", node=node, field=f + ".max_null_fraction", at=spec)
            null_share = None
        if null_share is not None and nullable is False:
            c.add("a column that may not be null takes no max_null_fraction", node=node,
                  field=f + ".max_null_fraction", at=spec)
        lo = _number(c, spec.get("min"), node=node, field=f + ".min", at=spec)
        hi = _number(c, spec.get("max"), node=node, field=f + ".max", at=spec)
        if lo is not None and hi is not None and lo > hi:
            c.add(f"min ({lo}) is greater than max ({hi})", node=node, field=f, at=spec)
        allowed = spec.get("allowed")
        if allowed is not None and c.typed(allowed, list, "a list of values", node=node, field=f + ".allowed", at=spec):
            if not allowed:
                c.add("an empty list allows no value at all", node=node, field=f + ".allowed", at=spec)
            allowed = tuple(allowed)
        else:
            allowed = None
        columns.append(
            ColumnSpec(
                name=str(col), dtype=str(dtype), nullable=bool(nullable), unique=bool(unique),
                min=lo, max=hi, allowed=allowed, description=str(spec.get("description", "")),
                severity=_severity(c, spec, default_sev, node=node, field=f + "."), max_null_fraction=null_share,
            )
        )
    return columns


def _parse_distribution(c: _Checker, raw: Any, node: str, default_sev: str) -> list[DistributionSpec]:
    out: list[DistributionSpec] = []
    if not c.typed(raw, list, "a list of distribution bounds", node=node, field="contract.distribution", at=raw):
        return out
    for i, item in enumerate(raw):
        f = f"contract.distribution[{i}]"
        if not c.typed(item, dict, "a mapping with column, stat and max_change", node=node, field=f, at=raw):
            continue
        c.keys(item, DISTRIBUTION_KEYS, node=node, prefix=f + ".")
        column, stat, change = item.get("column"), item.get("stat"), item.get("max_change")
        ok = c.typed(column, str, "a column name", node=node, field=f + ".column", at=item)
        if stat not in ("mean", "quantiles", "share"):
            c.add(f"unknown stat {stat!r} (known: mean, quantiles, share)", node=node, field=f + ".stat", at=item)
            ok = False
        if not c.typed(change, (int, float), "a number", node=node, field=f + ".max_change", at=item):
            ok = False
        elif change < 0:
            c.add(f"must not be negative, got {change}", node=node, field=f + ".max_change", at=item)
            ok = False
        quantiles = item.get("quantiles", [0.1, 0.5, 0.9] if stat == "quantiles" else [])
        if stat == "quantiles" and (
            not isinstance(quantiles, list) or not quantiles
            or not all(isinstance(q, (int, float)) and not isinstance(q, bool) and 0 <= q <= 1 for q in quantiles)
        ):
            c.add(f"expected a list of quantiles between 0 and 1, got {quantiles!r}", node=node,
                  field=f + ".quantiles", at=item)
            ok = False
        if stat == "share" and "value" not in item:
            c.add("a share bound needs the category 'value' whose share it bounds", node=node, field=f + ".value", at=item)
            ok = False
        if ok:
            out.append(DistributionSpec(
                column=column, stat=stat, max_change=float(change), quantiles=tuple(float(q) for q in quantiles),
                value=item.get("value"), severity=_severity(c, item, default_sev, node=node, field=f + "."),
            ))
    return out


def _parse_expectations(c: _Checker, raw: Any, node: str, default_sev: str) -> list[ExpectationSpec]:
    out: list[ExpectationSpec] = []
    if not c.typed(raw, list, "a list of expectations", node=node, field="contract.expectations", at=raw):
        return out
    for i, item in enumerate(raw):
        f = f"contract.expectations[{i}]"
        if not c.typed(item, dict, "a mapping with 'type' and its arguments", node=node, field=f, at=raw):
            continue
        kind = item.get("type")
        if kind not in EXTRA_EXPECTATIONS:
            c.add(f"unknown expectation {kind!r} (known: {', '.join(sorted(EXTRA_EXPECTATIONS))}; columns, "
                  "ranges, sets, uniqueness, row counts, freshness and distributions have their own keys)",
                  node=node, field=f + ".type", at=item)
            continue
        kwargs = {k: v for k, v in item.items() if k not in ("type", "severity")}
        missing = [k for k in EXTRA_EXPECTATIONS[kind] if k not in kwargs]
        if missing:
            c.add(f"{kind} needs {', '.join(missing)}", node=node, field=f, at=item)
            continue
        if "min_value" in kwargs and "max_value" in kwargs and isinstance(kwargs["min_value"], (int, float)) \
                and isinstance(kwargs["max_value"], (int, float)) and kwargs["min_value"] > kwargs["max_value"]:
            c.add(f"min_value ({kwargs['min_value']}) is greater than max_value ({kwargs['max_value']})",
                  node=node, field=f, at=item)
            continue
        out.append(ExpectationSpec(type=kind, kwargs=kwargs, severity=_severity(c, item, default_sev, node=node, field=f + ".")))
    return out


def _parse_contract(c: _Checker, raw: Any, node: str) -> ContractSpec | None:
    if not c.typed(raw, dict, "a mapping", node=node, field="contract", at=raw):
        return None
    c.keys(raw, CONTRACT_KEYS, node=node, prefix="contract.")
    version = str(raw.get("version", "1.0.0"))
    if not SEMVER_RE.match(version):
        c.add(f"{version!r} is not a semantic version like 1.2.0", node=node, field="contract.version", at=raw)
    default_sev = _severity(c, raw, "ERROR", node=node, field="contract.")
    min_rows = max_rows = None
    rc_sev = default_sev
    rc = raw.get("row_count")
    if rc is not None and c.typed(rc, dict, "a mapping with min and/or max", node=node, field="contract.row_count", at=raw):
        c.keys(rc, ROW_COUNT_KEYS, node=node, prefix="contract.row_count.")
        for key in ("min", "max"):
            if key in rc and c.typed(rc[key], int, "a whole number", node=node, field=f"contract.row_count.{key}", at=rc):
                if rc[key] < 0:
                    c.add(f"must not be negative, got {rc[key]}", node=node, field=f"contract.row_count.{key}", at=rc)
        min_rows, max_rows = rc.get("min"), rc.get("max")
        if isinstance(min_rows, int) and isinstance(max_rows, int) and min_rows > max_rows:
            c.add(f"min ({min_rows}) is greater than max ({max_rows})", node=node, field="contract.row_count", at=rc)
        rc_sev = _severity(c, rc, default_sev, node=node, field="contract.row_count.")
    columns = _parse_columns(c, raw.get("columns", {}), node, default_sev, raw)
    declared = {col.name for col in columns}

    def known(column: str, field: str, at: Any) -> None:
        if declared and column not in declared:
            c.add(f"column {column!r} is not one of this node's contract columns ({', '.join(sorted(declared))})",
                  node=node, field=field, at=at)

    keys: list[tuple[str, ...]] = []
    raw_keys = raw.get("keys", [])
    keys_sev = default_sev
    if isinstance(raw_keys, dict):
        keys_sev = _severity(c, raw_keys, default_sev, node=node, field="contract.keys.")
        raw_keys = raw_keys.get("columns", [])
    if c.typed(raw_keys, list, "a list of compound keys (each a list of columns)", node=node, field="contract.keys", at=raw):
        for i, key in enumerate(raw_keys):
            cols = _column_list(c, key, node=node, field=f"contract.keys[{i}]", at=raw)
            if cols and len(cols) < 2:
                c.add(f"a compound key needs two or more columns, got {list(cols)}; for one column write "
                      f"columns.{cols[0]}.unique: true", node=node, field=f"contract.keys[{i}]", at=raw)
            elif cols and len(set(cols)) != len(cols):
                c.add(f"a compound key names a column twice: {list(cols)}", node=node, field=f"contract.keys[{i}]", at=raw)
            elif cols:
                for col in cols:
                    known(col, f"contract.keys[{i}]", raw)
                keys.append(cols)
    freshness = None
    fr = raw.get("freshness")
    if fr is not None and c.typed(fr, dict, "a mapping with max_age (and column)", node=node, field="contract.freshness", at=raw):
        c.keys(fr, FRESHNESS_KEYS, node=node, prefix="contract.freshness.")
        hours = _hours(fr.get("max_age"))
        if hours is None or hours <= 0:
            c.add(f"expected a positive age like 36h, 90m or 2d, got {fr.get('max_age')!r}", node=node,
                  field="contract.freshness.max_age", at=fr)
        else:
            column = fr.get("column")
            if column is not None:
                known(column, "contract.freshness.column", fr)
            freshness = FreshnessSpec(max_age_hours=hours, column=column,
                                      severity=_severity(c, fr, "WARN", node=node, field="contract.freshness."))
    distribution = _parse_distribution(c, raw.get("distribution", []), node, default_sev)
    for i, d in enumerate(distribution):
        known(d.column, f"contract.distribution[{i}].column", raw)
    expectations = _parse_expectations(c, raw.get("expectations", []), node, default_sev)
    for i, e in enumerate(expectations):
        for arg in ("column", "column_A", "column_B"):
            if arg in e.kwargs:
                known(str(e.kwargs[arg]), f"contract.expectations[{i}].{arg}", raw)
    return ContractSpec(
        version=version, columns=tuple(columns), min_rows=min_rows, max_rows=max_rows, row_count_severity=rc_sev,
        keys=tuple(keys), keys_severity=keys_sev, freshness=freshness, distribution=tuple(distribution),
        expectations=tuple(expectations),
    )


def _parse_lineage(c: _Checker, raw: Any, node: str, inputs: Any) -> dict[str, dict[str, str]]:
    """``lineage: {INPUT: [column, ...] | {column here: column there}}``: how a row joins its input's rows."""
    if not isinstance(raw, dict):
        c.add(f"expected a mapping of input -> join columns, got {raw!r}", node=node, field="lineage", at=raw)
        return {}
    out: dict[str, dict[str, str]] = {}
    for source, columns in raw.items():
        field = f"lineage.{source}"
        if source not in inputs:
            c.add(f"{source!r} is not an input of this node (inputs: {', '.join(map(str, inputs)) or 'none'})",
                  node=node, field=field, at=raw)
            continue
        if isinstance(columns, list) and columns and all(isinstance(v, str) and v for v in columns):
            out[source] = {v: v for v in columns}
        elif (isinstance(columns, dict) and columns
              and all(isinstance(k, str) and isinstance(v, str) and k and v for k, v in columns.items())):
            out[source] = dict(columns)
        else:
            c.add(f"expected a list of join columns or a mapping of this node's column -> the input's column, got "
                  f"{columns!r}", node=node, field=field, at=raw)
    return out


def _parse_edge(c: _Checker, item: Mapping, node: str, field: str) -> EdgeContract | None:
    c.keys(item, EDGE_KEYS, node=node, prefix=field + ".")
    if not c.typed(item.get("node"), str, "the input's node name", node=node, field=field + ".node", at=item):
        return None
    columns: tuple[str, ...] = ()
    if "columns" in item:
        columns = _column_list(c, item["columns"], node=node, field=field + ".columns", at=item) or ()
    latency = item.get("latency_p95_ms")
    if latency is not None and (not c.typed(latency, (int, float), "a number of milliseconds", node=node,
                                            field=field + ".latency_p95_ms", at=item) or latency <= 0):
        if isinstance(latency, (int, float)) and not isinstance(latency, bool):
            c.add(f"must be positive, got {latency}", node=node, field=field + ".latency_p95_ms", at=item)
        latency = None
    return EdgeContract(columns=columns, latency_p95_ms=float(latency) if latency is not None else None)

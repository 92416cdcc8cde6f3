"""Load a catalog file into a validated MeshSpec.

Validation collects every problem it can find and raises one CatalogError
that lists them all, each naming the file, the line, the node and the field.
Nothing is returned (and so nothing is registered) when any problem exists.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace
from datetime import date, datetime
from pathlib import Path
from typing import Any

import yaml

from depmesh import graph
from depmesh.catalog.spec import (
    ADVISORY_SEVERITIES,
    BEFORE_FIRST_PROMOTION,
    CRITICALITY_WEIGHTS,
    DTYPES,
    EXTRA_EXPECTATIONS,
    GATE_KEYS,
    KINDS,
    SERIALIZERS,
    SERVING_MODES,
    SEVERITIES,
    ColumnSpec,
    ContractSpec,
    DependencyPolicy,
    DistributionSpec,
    EdgeContract,
    ExpectationSpec,
    FreshnessSpec,
    GateSpec,
    MeshSpec,
    ModelSpec,
    NodeSpec,
    RolloutSpec,
    RolloutStep,
    RolloutThresholds,
    ServingSpec,
    TimeSplit,
)

NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(/[A-Za-z_][A-Za-z0-9_]*)*$")
ENTRYPOINT_RE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
SEMVER_RE = re.compile(r"^\d+\.\d+\.\d+$")
EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")

# Dagster 1.13 recurses about once per level when it resolves an asset job,
# so with Python's default recursion limit a chain of ~1,000-2,500 assets fails
# with RecursionError. depmesh.build raises the limit to fit the mesh; loading
# time then grows about quadratically (2,500 levels: 15 s, 5,000: 75 s), so
# deeper meshes are rejected here.
MAX_CHAIN_DEPTH = 5000

TOP_KEYS = {"mesh", "version", "description", "nodes", "rollout", "dependencies", "serving"}
SERVING_KEYS = {f.name for f in fields(ServingSpec)}
NODE_KEYS = {
    "name", "kind", "owner", "description", "inputs", "tags", "criticality",
    "compute", "params", "contract", "model", "predictions", "lineage",
}
MODEL_KEYS = {"trainer", "target", "params", "seed", "split", "schedule", "gates", "serializer", "trusted_types",
              "metrics", "tune"}
TUNE_KEYS = {"space", "metric", "direction", "sampler", "pruner", "trials", "timeout", "steps", "seed"}
SEARCH_KEYS = {"int": {"type", "low", "high", "step", "log"}, "float": {"type", "low", "high", "step", "log"},
               "loguniform": {"type", "low", "high"}, "categorical": {"type", "choices"}}
SAMPLERS = ("tpe", "random", "grid")
PRUNERS = ("hyperband", "successive_halving", "median", "none")
# the direction of metrics trainers commonly report (others: tune.direction)
LOWER_IS_BETTER = {"mae", "rmse", "mse", "log_loss", "brier", "inertia", "mape"}
HIGHER_IS_BETTER = {"roc_auc", "accuracy", "r2", "silhouette", "f1", "precision", "recall", "balanced_accuracy"}
METRIC_KEYS = {"primary", "direction", "also"}
SPLIT_KEYS = {"time_column", "train_until", "evaluate_until"}
CONTRACT_KEYS = {"version", "severity", "columns", "row_count", "keys", "freshness", "distribution", "expectations"}
COLUMN_KEYS = {"dtype", "nullable", "max_null_fraction", "unique", "min", "max", "allowed", "description", "severity"}
ROW_COUNT_KEYS = {"min", "max", "severity"}
FRESHNESS_KEYS = {"max_age", "column", "severity"}
DISTRIBUTION_KEYS = {"column", "stat", "max_change", "quantiles", "value", "severity"}
EDGE_KEYS = {"node", "columns", "latency_p95_ms"}


@dataclass(frozen=True)
class Problem:
    file: str
    line: int | None
    node: str | None
    field: str | None
    message: str

    def __str__(self) -> str:
        where = self.file + (f":{self.line}" if self.line else "")
        parts = [where]
        if self.node:
            parts.append(f"node {self.node}")
        if self.field:
            parts.append(f"field {self.field}")
        return ": ".join(parts) + ": " + self.message


class CatalogError(ValueError):
    """A catalog that cannot be used; ``problems`` lists every reason."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        head = f"{len(problems)} problem(s) in catalog" if len(problems) > 1 else "invalid catalog"
        super().__init__(head + ":\n" + "\n".join(f"  {p}" for p in problems))


# --- YAML with line numbers and duplicate-key detection -----------------------------


class _LineDict(dict):
    line: int | None = None
    key_lines: dict[Any, int] | None = None  # each key's own line: errors about a field point at it


class _LineList(list):
    line: int | None = None


class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # libyaml's parser when present: 10x faster
    problems: list[tuple[int, str]]


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> _LineDict:
    loader.flatten_mapping(node)
    out = _LineDict()
    out.line = node.start_mark.line + 1
    out.key_lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in out:
            loader.problems.append((key_node.start_mark.line + 1, f"duplicate key {key!r}"))
        try:
            out.key_lines.setdefault(key, key_node.start_mark.line + 1)
        except TypeError:  # an unhashable key: YAML allows it, validation names it
            pass
        out[key] = loader.construct_object(value_node, deep=True)
    return out


def _construct_sequence(loader: _Loader, node: yaml.SequenceNode) -> _LineList:
    out = _LineList(loader.construct_object(child, deep=True) for child in node.value)
    out.line = node.start_mark.line + 1
    return out


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_sequence)


# --- validation ---------------------------------------------------------------------


class _Checker:
    """Collects problems for one file while building the spec."""

    def __init__(self, path: Path):
        self.file = path.name
        self.problems: list[Problem] = []
        # module -> (error, line, field and entrypoint of its first use, nodes that use it): reported once,
        # after every node is read, not once per node
        self.missing_modules: dict[str, tuple[str, int | None, str, str, list[str]]] = {}
        self.modules: set[str] = set()  # the modules entrypoints were imported from (the compiled cache watches them)

    def report_missing_modules(self) -> None:
        hint = ("custom code is found on Python's path: run from the folder that holds the package, or set "
                "PYTHONPATH to it (the Dagster code location needs the same)")
        for module, (error, line, field, ref, nodes) in self.missing_modules.items():
            if len(nodes) == 1:
                self.problems.append(Problem(self.file, line, nodes[0], field, f"cannot import {ref!r}: {error}; {hint}"))
            else:
                shown = ", ".join(nodes[:5]) + (" ..." if len(nodes) > 5 else "")
                self.problems.append(Problem(self.file, line, None, None, f"cannot import module {module!r}, used by "
                                             f"{len(nodes)} nodes ({shown}): {error}; {hint}"))

    def add(self, message: str, *, node: str | None = None, field: str | None = None, at: Any = None) -> None:
        """A problem; its line is the field's own when ``at`` is the mapping that holds it, else ``at``'s."""
        line = getattr(at, "line", None)
        lines = getattr(at, "key_lines", None)
        if lines and field:
            line = lines.get(field.rsplit(".", 1)[-1].split("[", 1)[0], line)
        self.problems.append(Problem(self.file, line, node, field, message))

    def keys(self, data: Mapping, allowed: set[str], *, node: str | None, prefix: str) -> None:
        for key in data:
            if key not in allowed:
                hint = ", ".join(sorted(allowed))
                self.add(f"unknown key {key!r} (allowed: {hint})", node=node, field=f"{prefix}{key}", at=data)

    def typed(self, value: Any, kind: type | tuple[type, ...], what: str, *, node: str | None, field: str, at: Any) -> bool:
        # bool is an int subclass in Python; a YAML `true` is never a valid number here.
        ok = isinstance(value, kind) and not (isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)))
        if not ok:
            self.add(f"expected {what}, got {type(value).__name__} {value!r}", node=node, field=field, at=at)
        return ok


def _type_name(value: Any) -> str:
    """What a YAML value is, in words (not the loader's class names)."""
    if value is None:
        return "nothing (the file or value is empty)"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return {"str": "a text", "int": "a number", "float": "a number", "bool": "true/false"}.get(
        type(value).__name__, type(value).__name__)


def resolve_entrypoint(ref: str) -> Callable[..., Any]:
    """Import ``module:function`` and return the callable (raises on failure)."""
    module_name, _, attr = ref.partition(":")
    module = importlib.import_module(module_name)
    fn = getattr(module, attr)
    if not callable(fn):
        raise TypeError(f"{ref} is a {type(fn).__name__}, not a function")
    return fn


def _check_entrypoint(c: _Checker, ref: Any, *, node: str, field: str, at: Any) -> str | None:
    if not c.typed(ref, str, "a 'module:function' string", node=node, field=field, at=at):
        return None
    if not ENTRYPOINT_RE.match(ref):
        c.add(f"{ref!r} is not of the form 'package.module:function'", node=node, field=field, at=at)
        return None
    module = ref.partition(":")[0]
    if module in c.missing_modules:
        c.missing_modules[module][4].append(node)
        return None
    try:
        resolve_entrypoint(ref)
    except ModuleNotFoundError as exc:
        if exc.name and module.startswith(exc.name):  # the module itself (or its package) is not on the path
            c.missing_modules[module] = (f"{type(exc).__name__}: {exc}", getattr(at, "line", None), field, ref, [node])
        else:
            c.add(f"cannot import {ref!r}: {type(exc).__name__}: {exc}", node=node, field=field, at=at)
        return None
    except Exception as exc:  # any import failure is the user's to see, named
        c.add(f"cannot import {ref!r}: {type(exc).__name__}: {exc}", node=node, field=field, at=at)
        return None
    c.modules.add(module)
    return ref


def _as_date(value: Any) -> date | None:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value)
        except ValueError:
            return None
    return None


def _number(c: _Checker, value: Any, *, node: str, field: str, at: Any) -> float | None:
    if value is None:
        return None
    if c.typed(value, (int, float), "a number", node=node, field=field, at=at):
        return value
    return None


def _severity(c: _Checker, raw: Mapping, default: str, *, node: str, field: str) -> str:
    value = raw.get("severity", default)
    if value not in SEVERITIES:
        c.add(f"unknown severity {value!r} (known: {', '.join(SEVERITIES)})", node=node, field=field + "severity", at=raw)
        return default
    return value


def _duration(value: Any, units: Mapping[str, float]) -> float | None:
    """A bare number (as is), or a number with one of ``units``' letters
    (multiplied by its factor); None when unreadable."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    match = re.fullmatch(rf"\s*(\d+(?:\.\d+)?)\s*([{''.join(units)}])\s*", str(value))
    return float(match.group(1)) * units[match.group(2)] if match else None


def _hours(value: Any) -> float | None:
    """36, 36h, 90m, 2d -> hours; None when unreadable."""
    return _duration(value, {"m": 1 / 60, "h": 1, "d": 24})


def _seconds(value: Any) -> float | None:
    """90, 90s, 10m, 2h -> seconds; None when unreadable."""
    return _duration(value, {"s": 1, "m": 60, "h": 3600})


def _column_list(c: _Checker, value: Any, *, node: str, field: str, at: Any) -> tuple[str, ...] | None:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        c.add(f"expected a non-empty list of column names, got {value!r}", node=node, field=field, at=at)
        return None
    return tuple(value)


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


def _parse_model(c: _Checker, raw: Any, node: str) -> ModelSpec | None:
    if not c.typed(raw, dict, "a mapping", node=node, field="model", at=raw):
        return None
    c.keys(raw, MODEL_KEYS, node=node, prefix="model.")
    ok = True
    for key in ("trainer", "split"):
        if key not in raw:
            c.add(f"missing required key {key!r}", node=node, field=f"model.{key}", at=raw)
            ok = False
    trainer = _check_entrypoint(c, raw["trainer"], node=node, field="model.trainer", at=raw) if "trainer" in raw else None
    target = raw.get("target")
    if target is not None and not c.typed(target, str, "a column name", node=node, field="model.target", at=raw):
        ok = False
    seed = raw.get("seed", 0)
    if not c.typed(seed, int, "a whole number", node=node, field="model.seed", at=raw):
        ok = False
    params = raw.get("params", {})
    if not c.typed(params, dict, "a mapping", node=node, field="model.params", at=raw):
        ok = False
    split = None
    rs = raw.get("split")
    if rs is not None and c.typed(rs, dict, "a mapping", node=node, field="model.split", at=raw):
        split = _parse_split(c, rs, node)
    schedule = raw.get("schedule")
    if schedule is not None:
        from dagster._utils.schedules import is_valid_cron_string

        if not isinstance(schedule, str) or not is_valid_cron_string(schedule):
            c.add(f"{schedule!r} is not a cron schedule like '0 3 * * 1'", node=node, field="model.schedule", at=raw)
            ok = False
    gates = _parse_gates(c, raw.get("gates", {}), node)
    serializer = raw.get("serializer", "skops")
    if serializer not in SERIALIZERS:
        c.add(f"{serializer!r} is not a serializer (use skops, or pickle to opt into code that runs on load)",
              node=node, field="model.serializer", at=raw)
        ok = False
    trusted: tuple[str, ...] | None = ()
    if "trusted_types" in raw:
        trusted = _column_list(c, raw["trusted_types"], node=node, field="model.trusted_types", at=raw)
        ok = ok and trusted is not None
    metrics = None
    if "metrics" in raw:
        metrics = _parse_metrics(c, raw["metrics"], node)
        ok = ok and metrics is not None
    tune = None
    if "tune" in raw:
        tune = _parse_tune(c, raw["tune"], node, metrics, params if isinstance(params, dict) else {})
        ok = ok and tune is not None
    if not (ok and trainer and split and gates):
        return None
    return ModelSpec(trainer=trainer, target=target, split=split, seed=seed, params=dict(params), schedule=schedule,
                     gates=gates, serializer=serializer, trusted_types=tuple(trusted), metrics=metrics, tune=tune)


def _parse_search_param(c: _Checker, name: Any, raw: Any, node: str, sampler: Any) -> Any:
    from depmesh.catalog.spec import SearchParam

    field = f"model.tune.space.{name}"
    if not isinstance(name, str) or not re.match(r"^[A-Za-z_]\w*$", name):
        c.add(f"{name!r} is not a parameter name", node=node, field="model.tune.space", at=raw)
        return None
    if name == "seed":
        c.add("the seed is not tuned: it is model.seed, part of the version", node=node, field=field, at=raw)
        return None
    if not c.typed(raw, dict, "a mapping with type (int, float, loguniform, categorical)", node=node, field=field,
                   at=raw):
        return None
    kind = raw.get("type")
    if kind not in SEARCH_KEYS:
        c.add(f"type must be one of {', '.join(SEARCH_KEYS)}, got {kind!r}", node=node, field=f"{field}.type", at=raw)
        return None
    c.keys(raw, SEARCH_KEYS[kind], node=node, prefix=f"{field}.")
    if kind == "categorical":
        choices = raw.get("choices")
        if not isinstance(choices, list) or not choices or not all(
                c_ is None or isinstance(c_, (bool, int, float, str)) for c_ in choices):
            c.add(f"choices must be a non-empty list of plain values, got {choices!r}", node=node,
                  field=f"{field}.choices", at=raw)
            return None
        if len(set(map(repr, choices))) != len(choices):
            c.add(f"choices repeat a value: {choices!r}", node=node, field=f"{field}.choices", at=raw)
            return None
        return SearchParam(name=name, type=kind, choices=tuple(choices))
    bounds = {}
    for key in ("low", "high"):
        value = raw.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
            c.add(f"{key} must be a number, got {value!r}", node=node, field=f"{field}.{key}", at=raw)
            return None
        if kind == "int" and not isinstance(value, int):
            c.add(f"{key} must be a whole number for an int parameter, got {value!r}", node=node,
                  field=f"{field}.{key}", at=raw)
            return None
        bounds[key] = value
    if bounds["low"] >= bounds["high"]:
        c.add(f"low ({bounds['low']}) must be below high ({bounds['high']})", node=node, field=field, at=raw)
        return None
    log = bool(raw.get("log", False)) or kind == "loguniform"
    if "log" in raw and not isinstance(raw["log"], bool):
        c.add(f"log must be true or false, got {raw['log']!r}", node=node, field=f"{field}.log", at=raw)
        return None
    if log and bounds["low"] <= 0:
        c.add(f"a log scale needs low > 0, got {bounds['low']}", node=node, field=f"{field}.low", at=raw)
        return None
    step = raw.get("step")
    if step is not None and (isinstance(step, bool) or not isinstance(step, (int, float)) or step <= 0
                             or (kind == "int" and not isinstance(step, int))):
        c.add(f"step must be a positive {'whole ' if kind == 'int' else ''}number, got {step!r}", node=node,
              field=f"{field}.step", at=raw)
        return None
    if step is not None and log:
        c.add("step and a log scale cannot be combined (Optuna samples one or the other)", node=node, field=field,
              at=raw)
        return None
    if sampler == "grid" and kind != "int" and step is None:
        c.add("the grid sampler needs a finite grid: give this float a step, or make it categorical", node=node,
              field=field, at=raw)
        return None
    if sampler == "grid" and kind == "int" and log:
        c.add("the grid sampler needs a finite grid: drop log for this int", node=node, field=field, at=raw)
        return None
    if sampler == "grid":
        size = (bounds["high"] - bounds["low"]) / (step or 1) + 1
        if size > 10_000:
            c.add(f"this grid has {int(size)} points; at most 10000 per parameter", node=node, field=field, at=raw)
            return None
    return SearchParam(name=name, type=kind, low=bounds["low"], high=bounds["high"], step=step, log=log)


def _parse_tune(c: _Checker, raw: Any, node: str, metrics: Any, params: Mapping) -> Any:
    from depmesh.catalog.spec import TuneSpec

    if not c.typed(raw, dict, "a mapping with space, metric, sampler, pruner, trials, timeout", node=node,
                   field="model.tune", at=raw):
        return None
    c.keys(raw, TUNE_KEYS, node=node, prefix="model.tune.")
    ok = True
    sampler, pruner = raw.get("sampler", "tpe"), raw.get("pruner", "none")
    if sampler not in SAMPLERS:
        c.add(f"sampler must be one of {', '.join(SAMPLERS)}, got {sampler!r}", node=node, field="model.tune.sampler",
              at=raw)
        ok = False
    if pruner not in PRUNERS:
        c.add(f"pruner must be one of {', '.join(PRUNERS)}, got {pruner!r}", node=node, field="model.tune.pruner",
              at=raw)
        ok = False
    space_raw = raw.get("space")
    space = []
    if not isinstance(space_raw, dict) or not space_raw:
        c.add("space must map at least one parameter to its range, e.g. {max_iter: {type: int, low: 50, high: 300}}",
              node=node, field="model.tune.space", at=raw)
        ok = False
    else:
        for name, spec in space_raw.items():
            parsed = _parse_search_param(c, name, spec, node, sampler)
            ok = ok and parsed is not None
            if parsed is not None:
                space.append(parsed)
    metric = raw.get("metric", metrics.primary if metrics is not None else None)
    if not isinstance(metric, str) or not metric:
        c.add("metric must name the metric to optimize (a key of the model's metrics, e.g. mae), unless "
              "model.metrics declares a primary one", node=node, field="model.tune.metric", at=raw)
        ok = False
    direction = raw.get("direction")
    if direction is not None and direction not in ("higher", "lower"):
        c.add(f"direction must be higher or lower, got {direction!r}", node=node, field="model.tune.direction", at=raw)
        ok = False
    higher = None
    if direction is not None:
        higher = direction == "higher"
    elif metrics is not None and metric == metrics.primary:
        higher = metrics.higher_is_better
    elif metric in LOWER_IS_BETTER or metric in HIGHER_IS_BETTER:
        higher = metric in HIGHER_IS_BETTER
    elif isinstance(metric, str):
        c.add(f"say whether a higher {metric} is better: direction: higher or lower", node=node,
              field="model.tune.direction", at=raw)
        ok = False
    numbers = {}
    for key, default, low in (("trials", 20, 1), ("steps", 10, 1), ("seed", 0, 0)):
        value = raw.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < low or value > 100_000:
            c.add(f"{key} must be a whole number from {low} to 100000, got {value!r}", node=node,
                  field=f"model.tune.{key}", at=raw)
            ok = False
        numbers[key] = value
    timeout = None
    if raw.get("timeout") is not None:
        timeout = _seconds(raw["timeout"])
        if timeout is None or timeout <= 0:
            c.add(f"timeout must be a duration like 90s, 10m or 2h (a bare number is seconds), got "
                  f"{raw['timeout']!r}", node=node, field="model.tune.timeout", at=raw)
            ok = False
    if not ok:
        return None
    return TuneSpec(space=tuple(space), metric=metric, higher_is_better=bool(higher), sampler=sampler, pruner=pruner,
                    trials=numbers["trials"], timeout_s=timeout, steps=numbers["steps"], seed=numbers["seed"])


def _parse_metrics(c: _Checker, raw: Any, node: str) -> Any:
    from depmesh.catalog.spec import MetricSpec

    if not c.typed(raw, dict, "a mapping with primary (and direction, also)", node=node, field="model.metrics", at=raw):
        return None
    c.keys(raw, METRIC_KEYS, node=node, prefix="model.metrics.")
    from depmesh.metrics import higher_is_better, scorer_names

    known = set(scorer_names())
    primary, also = raw.get("primary"), raw.get("also", [])
    ok = c.typed(primary, str, "a scikit-learn scorer name", node=node, field="model.metrics.primary", at=raw)
    if not isinstance(also, list) or not all(isinstance(a, str) for a in also):
        c.add(f"expected a list of scorer names, got {also!r}", node=node, field="model.metrics.also", at=raw)
        ok = False
    for name, field in ([(primary, "primary")] if ok else []) + [(a, "also") for a in also if isinstance(a, str)]:
        if name not in known:
            close = [k for k in sorted(known) if name.split("_")[-1] in k][:6]
            c.add(f"{name!r} is not a scikit-learn scorer" + (f" (did you mean {', '.join(close)}?)" if close else
                                                              " (see sklearn.metrics.get_scorer_names())"),
                  node=node, field=f"model.metrics.{field}", at=raw)
            ok = False
    direction = raw.get("direction")
    if direction is not None and direction not in ("higher", "lower"):
        c.add(f"direction must be higher or lower, got {direction!r}", node=node, field="model.metrics.direction",
              at=raw)
        ok = False
    if not ok:
        return None
    higher = higher_is_better(primary) if direction is None else direction == "higher"
    return MetricSpec(primary=primary, higher_is_better=higher, also=tuple(also))


SPLIT_KINDS = {"time": SPLIT_KEYS, "random": {"kind", "evaluate_share", "score_share", "seed", "key"},
               "column": {"kind", "column", "evaluate", "score"}, "table": {"kind", "evaluate"}}


def _parse_split(c: _Checker, rs: Mapping, node: str) -> Any:
    """A time split (the default), a seeded random split, or a split by a group or holdout column."""
    from depmesh.catalog.spec import ColumnSplit, RandomSplit, TableSplit

    kind = rs.get("kind", "time")
    if kind not in SPLIT_KINDS:
        c.add(f"unknown split kind {kind!r} (known: {', '.join(SPLIT_KINDS)})", node=node, field="model.split.kind",
              at=rs)
        return None
    c.keys(rs, SPLIT_KINDS[kind] | {"kind"}, node=node, prefix="model.split.")
    if kind == "random":
        shares = {}
        for key, default in (("evaluate_share", None), ("score_share", 0.0)):
            value = rs.get(key, default)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
                c.add(f"expected a share between 0 and 1, got {value!r}", node=node, field=f"model.split.{key}", at=rs)
                return None
            shares[key] = float(value)
        if shares["evaluate_share"] <= 0 or sum(shares.values()) >= 1:
            c.add("evaluate_share must be above 0 and leave rows to train on", node=node, field="model.split", at=rs)
            return None
        seed, key = rs.get("seed", 0), rs.get("key")
        if not c.typed(seed, int, "a whole number", node=node, field="model.split.seed", at=rs) or (
                key is not None and not c.typed(key, str, "a column name", node=node, field="model.split.key", at=rs)):
            return None
        return RandomSplit(seed=seed, key=key, **shares)
    if kind == "table":
        table = rs.get("evaluate")
        if not c.typed(table, str, "the name of an input table", node=node, field="model.split.evaluate", at=rs):
            return None
        return TableSplit(evaluate=table)
    if kind == "column":
        column = rs.get("column")
        if not c.typed(column, str, "a column name", node=node, field="model.split.column", at=rs):
            return None
        parts = {}
        for key in ("evaluate", "score"):
            value = rs.get(key, [])
            if not isinstance(value, list) or (key == "evaluate" and not value):
                c.add(f"expected a list of {column} values" + (" (at least one)" if key == "evaluate" else ""),
                      node=node, field=f"model.split.{key}", at=rs)
                return None
            parts[key] = tuple(value)
        if set(parts["evaluate"]) & set(parts["score"]):
            c.add("a value cannot be both evaluated and scored", node=node, field="model.split", at=rs)
            return None
        return ColumnSplit(column=column, **parts)
    dates = {}
    for key in ("train_until", "evaluate_until"):
        d = _as_date(rs.get(key))
        if d is None:
            c.add(f"expected a date like 2013-10-01, got {rs.get(key)!r}", node=node, field=f"model.split.{key}", at=rs)
        dates[key] = d
    tc = rs.get("time_column")
    if not c.typed(tc, str, "a column name", node=node, field="model.split.time_column", at=rs):
        tc = None
    if all(dates.values()) and dates["train_until"] >= dates["evaluate_until"]:
        c.add("train_until must be before evaluate_until", node=node, field="model.split", at=rs)
    elif all(dates.values()) and tc:
        return TimeSplit(time_column=tc, **dates)
    return None


def _parse_gates(c: _Checker, raw: Any, node: str) -> GateSpec | None:
    if not c.typed(raw, dict, "a mapping of gate thresholds", node=node, field="model.gates", at=raw):
        return None
    c.keys(raw, GATE_KEYS, node=node, prefix="model.gates.")
    values: dict[str, Any] = {}
    ok = True
    for key, value in raw.items():
        if key not in GATE_KEYS:
            ok = False
            continue
        field = f"model.gates.{key}"
        if key == "subgroups":
            cols = _column_list(c, value, node=node, field=field, at=raw)
            ok &= cols is not None
            values[key] = cols or ()
        elif key in ("batch_rows", "subgroup_min_rows"):
            if c.typed(value, int, "a whole number", node=node, field=field, at=raw) and value > 0:
                values[key] = value
            else:
                ok = False
                if isinstance(value, int) and not isinstance(value, bool):
                    c.add(f"must be positive, got {value}", node=node, field=field, at=raw)
        else:
            number = _number(c, value, node=node, field=field, at=raw)
            if number is None:
                ok = False
            elif number < 0 and key != "subgroup_limit":
                c.add(f"must not be negative, got {number}", node=node, field=field, at=raw)
                ok = False
            else:
                values[key] = float(number)
    return GateSpec(**values) if ok else None


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
    raw_inputs = raw.get("inputs", [])
    inputs: list[str] = []
    edges: dict[str, EdgeContract] = {}
    if c.typed(raw_inputs, list, "a list of node names", node=label, field="inputs", at=raw):
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
    tags = raw.get("tags", {})
    if c.typed(tags, dict, "a mapping of string -> string", node=label, field="tags", at=raw):
        for k, v in tags.items():
            if not isinstance(v, str) or not isinstance(k, str):
                c.add(f"tag {k!r}: expected a string value, got {_type_name(v)} {v!r}", node=label, field=f"tags.{k}", at=tags)
    else:
        tags = {}
    criticality = raw.get("criticality", "medium")
    if criticality not in CRITICALITY_WEIGHTS:
        c.add(f"unknown criticality {criticality!r} (known: {', '.join(CRITICALITY_WEIGHTS)})",
              node=label, field="criticality", at=raw)
    description = raw.get("description", "")
    c.typed(description, str, "a string", node=label, field="description", at=raw)
    params = raw.get("params", {})
    if not c.typed(params, dict, "a mapping", node=label, field="params", at=raw):
        params = {}

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
    contract = _parse_contract(c, raw["contract"], label) if "contract" in raw else None
    if contract is not None and kind == "model":
        c.add("a model's output is not a table, so it takes no table contract", node=label, field="contract", at=raw)

    evaluation_table = getattr(getattr(model, "split", None), "evaluate", None) if model else None
    if isinstance(evaluation_table, str) and evaluation_table not in inputs:
        c.add(f"the evaluation table {evaluation_table!r} must be one of the model's inputs", node=label,
              field="model.split.evaluate", at=raw)
    predictions: tuple[str, ...] = ()
    if "predictions" in raw:
        if kind != "scores":
            c.add(f"only scores nodes declare prediction columns, this node is a {kind}", node=label,
                  field="predictions", at=raw)
        else:
            predictions = _column_list(c, raw["predictions"], node=label, field="predictions", at=raw) or ()
            declared = {col.name for col in contract.columns} if contract is not None else set()
            for column in predictions if declared else ():
                if column not in declared:
                    c.add(f"prediction column {column!r} is not in the node's contract", node=label,
                          field="predictions", at=raw)
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


ALIAS_FLOOR = 100_000  # YAML nodes a catalog may expand to through aliases, at least
ALIAS_FACTOR = 10  # ... or this many times the nodes it is written with


def _expanded_size(root: yaml.Node, file: str) -> tuple[int, int]:
    """How many YAML nodes the document holds once every alias is expanded
    (what constructing it, and hashing it, costs), without expanding it; and
    how many it is written with (each node once, however often aliased)."""
    sizes: dict[int, int] = {}
    in_progress: set[int] = set()

    def size(node: yaml.Node) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in in_progress:
            raise CatalogError([Problem(file, node.start_mark.line + 1, None, None,
                                        "a YAML alias refers to itself (a recursive anchor)")])
        in_progress.add(key)
        total = 1
        if isinstance(node, yaml.SequenceNode):
            total += sum(size(child) for child in node.value)
        elif isinstance(node, yaml.MappingNode):
            total += sum(size(k) + size(v) for k, v in node.value)
        in_progress.discard(key)
        sizes[key] = total
        return total

    return size(root), len(sizes)


def _compose(loader: _Loader, c: _Checker) -> Any:
    """The document, composed and bounded before it is constructed: YAML
    aliases that would expand past the bound (a "billion laughs" catalog) are
    refused here, before anything expands them."""
    root = loader.get_single_node()
    if root is None:
        return None
    expanded, written = _expanded_size(root, c.file)
    bound = max(ALIAS_FLOOR, ALIAS_FACTOR * written)
    if expanded > bound:
        raise CatalogError([Problem(c.file, None, None, None,
                                    f"YAML aliases expand this catalog from {written:,} to {expanded:,} nodes "
                                    f"(at most {bound:,} allowed): write the repeated parts out, or anchor less")])
    return loader.construct_document(root)


def load_yaml(text: str, c: _Checker, error: type[CatalogError] = CatalogError) -> Any:
    """The YAML document in ``text``, with line numbers on its mappings and
    lists; duplicate keys go to ``c``'s problems; not-YAML and expanding
    aliases raise ``error`` naming the file and line. Every depmesh file
    beside the catalog (failure modes, teams) is read through here."""
    loader = _Loader(text)
    loader.problems = []
    try:
        data = _compose(loader, c)
    except CatalogError as exc:  # YAML aliases that would expand past the bound
        raise error(exc.problems) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark else None
        raise error([Problem(c.file, line, None, None, f"not valid YAML: {getattr(exc, 'problem', exc)}")]) from None
    finally:
        loader.dispose()
    for line, msg in loader.problems:
        c.problems.append(Problem(c.file, line, None, None, msg))
    return data


ROLLOUT_KEYS = {"key", "steps", "min_rows", "thresholds", "disagreement_tolerance", "confidence", "bootstrap"}
STEP_KEYS = {"percent", "min_rows", "thresholds"}
THRESHOLD_KEYS = {f.name for f in fields(RolloutThresholds)}


def _parse_thresholds(c: _Checker, raw: Any, base: RolloutThresholds, field: str) -> RolloutThresholds:
    if raw is None:
        return base
    if not isinstance(raw, dict):
        c.add(f"expected a mapping of thresholds ({', '.join(sorted(THRESHOLD_KEYS))}), got {raw!r}", node="rollout",
              field=field, at=raw)
        return base
    c.keys(raw, THRESHOLD_KEYS, node="rollout", prefix=field + ".")
    values = {}
    for key, value in raw.items():
        if key in THRESHOLD_KEYS:
            if value is not None and (not c.typed(value, (int, float), "a number or null", node="rollout",
                                                  field=f"{field}.{key}", at=raw) or value < 0):
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    c.add(f"expected a number >= 0, got {value!r}", node="rollout", field=f"{field}.{key}", at=raw)
                continue
            values[key] = None if value is None else float(value)
    return replace(base, **values)


def _parse_rollout(c: _Checker, raw: Any, nodes: list[NodeSpec]) -> RolloutSpec | None:
    """The catalog's ``rollout:``: the key that splits rows, and the steps with their thresholds."""
    if not isinstance(raw, dict):
        c.add(f"expected a mapping with key and steps, got {raw!r}", field="rollout", at=raw)
        return None
    c.keys(raw, ROLLOUT_KEYS, node="rollout", prefix="")
    key = raw.get("key")
    scores = [n for n in nodes if n.kind == "scores"]
    if not isinstance(key, str) or not key:
        c.add(f"missing or empty 'key': the column whose hash splits rows between the arms, got {key!r}",
              node="rollout", field="key", at=raw)
    else:
        lacking = [n.name for n in scores if n.contract and n.contract.column_names and key not in
                   n.contract.column_names]
        if lacking:
            c.add(f"key {key!r} is not a column of {', '.join(lacking)} (their contracts)", node="rollout",
                  field="key", at=raw)
    default_rows = raw.get("min_rows", 100)
    if not isinstance(default_rows, int) or isinstance(default_rows, bool) or default_rows < 1:
        c.add(f"expected a whole number >= 1, got {default_rows!r}", node="rollout", field="min_rows", at=raw)
        default_rows = 100
    base = _parse_thresholds(c, raw.get("thresholds"), RolloutThresholds(), "thresholds")
    steps: list[RolloutStep] = []
    raw_steps = raw.get("steps")
    if not isinstance(raw_steps, list) or not raw_steps:
        c.add(f"expected a list of steps (percent, or {{percent, min_rows, thresholds}}), got {raw_steps!r}",
              node="rollout", field="steps", at=raw)
        raw_steps = []
    for i, item in enumerate(raw_steps):
        field = f"steps[{i}]"
        item = {"percent": item} if isinstance(item, (int, float)) and not isinstance(item, bool) else item
        if not isinstance(item, dict) or "percent" not in item:
            c.add(f"expected a percent or {{percent, min_rows, thresholds}}, got {item!r}", node="rollout",
                  field=field, at=raw_steps)
            continue
        c.keys(item, STEP_KEYS, node="rollout", prefix=field + ".")
        percent, rows = item["percent"], item.get("min_rows", default_rows)
        if isinstance(percent, bool) or not isinstance(percent, (int, float)) or not 0 < percent <= 100:
            c.add(f"expected a percent in (0, 100], got {percent!r}", node="rollout", field=f"{field}.percent",
                  at=raw_steps)
            continue
        if steps and percent <= steps[-1].percent:
            c.add(f"steps must grow: {percent}% after {steps[-1].percent}%", node="rollout",
                  field=f"{field}.percent", at=raw_steps)
        if not isinstance(rows, int) or isinstance(rows, bool) or rows < 1:
            c.add(f"expected a whole number >= 1, got {rows!r}", node="rollout", field=f"{field}.min_rows",
                  at=raw_steps)
            rows = default_rows
        steps.append(RolloutStep(float(percent), rows, _parse_thresholds(c, item.get("thresholds"), base,
                                                                         f"{field}.thresholds")))
    if steps and steps[-1].percent != 100:
        c.add(f"the last step must be 100% (it is {steps[-1].percent}%): a canary ends with the whole traffic",
              node="rollout", field="steps", at=raw)
    tolerance = raw.get("disagreement_tolerance", 0.0)
    confidence = raw.get("confidence", 0.95)
    resamples = raw.get("bootstrap", 2000)
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or tolerance < 0:
        c.add(f"expected a number >= 0, got {tolerance!r}", node="rollout", field="disagreement_tolerance", at=raw)
        tolerance = 0.0
    if isinstance(confidence, bool) or not isinstance(confidence, float) or not 0.5 <= confidence < 1:
        c.add(f"expected a fraction in [0.5, 1), got {confidence!r}", node="rollout", field="confidence", at=raw)
        confidence = 0.95
    if isinstance(resamples, bool) or not isinstance(resamples, int) or not 100 <= resamples <= 100_000:
        c.add(f"expected a whole number from 100 to 100000, got {resamples!r}", node="rollout", field="bootstrap",
              at=raw)
        resamples = 2000
    return RolloutSpec(key=key if isinstance(key, str) else "", steps=tuple(steps),
                       disagreement_tolerance=float(tolerance), confidence=confidence, bootstrap=resamples,
                       line=getattr(raw, "line", None))


DEPENDENCY_KEYS = {"licenses", "audit", "upgrade"}
SPDX_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.+-]{0,63}$")


def _dependency_section(c: _Checker, raw: dict, name: str, keys: tuple[str, ...], shape: str) -> dict:
    """``dependencies.<name>``: a mapping of ``keys`` (an absent section is empty; a wrong one is reported)."""
    section = raw.get(name) or {}
    if not isinstance(section, dict):
        c.add(f"expected {shape}, got {section!r}", node="dependencies", field=name, at=raw)
        return {}
    c.keys(section, set(keys), node="dependencies", prefix=f"{name}.")
    return section


def _parse_serving(c: _Checker, raw: Any) -> ServingSpec:
    """``serving: {mode: production | latest, before_first_promotion: skip | candidate}``."""
    if not isinstance(raw, dict):
        c.add(f"expected a mapping with mode and before_first_promotion, got {raw!r}", field="serving", at=raw)
        return ServingSpec()
    c.keys(raw, SERVING_KEYS, node=None, prefix="serving.")
    values = {}
    for key, allowed in (("mode", SERVING_MODES), ("before_first_promotion", BEFORE_FIRST_PROMOTION)):
        if key in raw:
            if raw[key] not in allowed:
                c.add(f"expected one of {', '.join(allowed)}, got {raw[key]!r}", field=f"serving.{key}", at=raw)
            else:
                values[key] = raw[key]
    if values.get("mode") == "latest" and "before_first_promotion" in values:
        c.add("before_first_promotion applies to mode production only (a latest mesh always serves what it "
              "trained)", field="serving.before_first_promotion", at=raw)
    return ServingSpec(**values)


def _parse_dependencies(c: _Checker, raw: Any, path: Path) -> DependencyPolicy | None:
    """``dependencies: {licenses: {allowed: [...], denied: [...]}, audit: {advisories: DIR, block: high}}``."""
    if not isinstance(raw, dict):
        c.add(f"expected a mapping with licenses and audit, got {raw!r}", node="dependencies", at=raw)
        return None
    c.keys(raw, DEPENDENCY_KEYS, node="dependencies", prefix="")
    lists: dict[str, tuple[str, ...]] = {}
    licenses = _dependency_section(c, raw, "licenses", ("allowed", "denied"), "{allowed: [...], denied: [...]}")
    for key in ("allowed", "denied"):
        values = licenses.get(key, [])
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            c.add(f"expected a list of SPDX license ids, got {values!r}", node="dependencies",
                  field=f"licenses.{key}", at=licenses)
            values = []
        for value in values:
            if not SPDX_ID_RE.match(value):
                c.add(f"{value!r} is not an SPDX license id (e.g. MIT, Apache-2.0, BSD-3-Clause)",
                      node="dependencies", field=f"licenses.{key}", at=licenses)
        lists[key] = tuple(values)
    audit = _dependency_section(c, raw, "audit", ("advisories", "block"), "{advisories: DIR, block: SEVERITY}")
    block = audit.get("block", "high")
    if block not in ADVISORY_SEVERITIES:
        c.add(f"unknown severity {block!r} (known: {', '.join(ADVISORY_SEVERITIES)})", node="dependencies",
              field="audit.block", at=audit)
        block = "high"
    advisories = audit.get("advisories")
    if advisories is not None and not isinstance(advisories, str):
        c.add(f"expected a directory path, got {advisories!r}", node="dependencies", field="audit.advisories",
              at=audit)
        advisories = None
    if advisories is not None and not Path(advisories).is_absolute():
        advisories = str((Path(path).parent / advisories).resolve())
    upgrade = _dependency_section(c, raw, "upgrade", ("tolerance",), "{tolerance: NUMBER}")
    tolerance = upgrade.get("tolerance", 1e-9)
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or tolerance < 0:
        c.add(f"expected a number >= 0, got {tolerance!r}", node="dependencies", field="upgrade.tolerance",
              at=upgrade)
        tolerance = 1e-9
    return DependencyPolicy(allowed_licenses=lists["allowed"], denied_licenses=lists["denied"],
                            advisories=advisories, block_severity=block, upgrade_tolerance=float(tolerance))


def _name_duplicates(c: _Checker, raw_nodes: list) -> None:
    """A duplicate key found while reading the YAML names the node it is in (the last node starting above it)."""
    starts = sorted((raw.line, raw.get("name")) for raw in raw_nodes
                    if isinstance(raw, dict) and getattr(raw, "line", None) and isinstance(raw.get("name"), str))
    for i, problem in enumerate(c.problems):
        if problem.node is None and problem.line and problem.message.startswith("duplicate key"):
            owner = [name for line, name in starts if line <= problem.line]
            if owner:
                c.problems[i] = replace(problem, node=owner[-1])


def parse_catalog(text: str, path: Path) -> MeshSpec:
    """Validate catalog ``text`` (read from ``path``) into a MeshSpec."""
    return _parse(text, path)[0]


def _parse(text: str, path: Path) -> tuple[MeshSpec, set[str]]:
    """The MeshSpec, and the modules its entrypoints were imported from."""
    c = _Checker(path)
    data = load_yaml(text, c)
    if not isinstance(data, dict):
        c.add(f"expected a mapping with 'mesh' and 'nodes' at the top, got {_type_name(data)}")
        raise CatalogError(c.problems)
    c.keys(data, TOP_KEYS, node=None, prefix="")
    mesh_name = data.get("mesh")
    if mesh_name is None:
        c.add("missing required key 'mesh' (the mesh's name)", field="mesh", at=data)
    else:
        c.typed(mesh_name, str, "a string", node=None, field="mesh", at=data)
    raw_nodes = data.get("nodes")
    nodes: list[NodeSpec] = []
    if raw_nodes is None:
        c.add("missing required key 'nodes'", field="nodes", at=data)
    elif c.typed(raw_nodes, list, "a list of nodes", node=None, field="nodes", at=data):
        if not raw_nodes:
            c.add("a mesh needs at least one node", field="nodes", at=raw_nodes)
        first_line: dict[str, int | None] = {}
        for i, raw in enumerate(raw_nodes):
            spec = _parse_node(c, raw, i)
            if spec is None:
                continue
            if spec.name in first_line:
                c.add(f"duplicate node name (first declared at line {first_line[spec.name]})",
                      node=spec.name, field="name", at=raw)
                continue
            first_line[spec.name] = spec.line
            nodes.append(spec)
        _name_duplicates(c, raw_nodes)

    known = {n.name for n in nodes}
    for n in nodes:
        for item in n.inputs:
            if item == n.name:
                c.add("a node cannot be its own input", node=n.name, field="inputs", at=n)
            elif item not in known:
                c.add(f"input {item!r} is not declared in this catalog", node=n.name, field="inputs", at=n)
    by_name = {n.name: n for n in nodes}
    for n in nodes:
        for item, edge in n.edges.items():
            producer = by_name.get(item)
            if producer is None:
                continue
            field = f"inputs.{item}"
            if edge.latency_p95_ms is not None and producer.kind != "model":
                c.add(f"a latency budget applies to a model's predictions, and {item} is a {producer.kind}",
                      node=n.name, field=field + ".latency_p95_ms", at=n)
            if producer.kind == "model" and edge.columns:
                c.add(f"{item} is a model, which has no columns to read", node=n.name, field=field + ".columns", at=n)
            outputs = producer.contract.column_names if producer.contract else []
            missing = [col for col in edge.columns if outputs and col not in outputs]
            if missing:
                c.add(f"reads column(s) {', '.join(missing)} that {item} does not output "
                      f"(its contract declares {', '.join(outputs)})", node=n.name, field=field + ".columns", at=n)
    cycle = graph.find_cycle({n.name: [i for i in n.inputs if i != n.name] for n in nodes})
    if cycle:
        c.add("dependency cycle (each feeds the next): " + " -> ".join(reversed(cycle)), node=cycle[0], field="inputs",
              at=next(n for n in nodes if n.name == cycle[0]))
    c.report_missing_modules()
    if not cycle and not c.problems:
        chain = graph.longest_chain_path({n.name: list(n.inputs) for n in nodes})
        if len(chain) > MAX_CHAIN_DEPTH:
            c.add(f"the longest dependency chain has {len(chain):,} nodes ({chain[0]} -> ... -> {chain[-1]}); "
                  f"depmesh accepts at most {MAX_CHAIN_DEPTH:,} (Dagster 1.13 resolves asset graphs recursively and "
                  f"loads a 5,000-level chain in about 75 s): split the mesh into several catalogs (code locations)",
                  node=chain[-1], field="inputs", at=next(n for n in nodes if n.name == chain[-1]))
    rollout = _parse_rollout(c, data["rollout"], nodes) if data.get("rollout") is not None else None
    policy = _parse_dependencies(c, data["dependencies"], path) if data.get("dependencies") is not None else None
    serving = _parse_serving(c, data["serving"]) if data.get("serving") is not None else ServingSpec()
    if c.problems:
        raise CatalogError(c.problems)
    return MeshSpec(
        name=mesh_name, path=path, nodes=tuple(nodes),
        version=str(data.get("version", "1.0.0")), description=str(data.get("description", "")), rollout=rollout,
        dependencies=policy, serving=serving,
    ), c.modules


MAX_FILE_BYTES = 5_000_000  # a catalog, teams or failure-mode file; larger ones are refused, not read


def read_capped(path: Path, error: type[CatalogError] = CatalogError, what: str = "catalog",
                limit: int = MAX_FILE_BYTES) -> str:
    """A YAML file's text: a regular file of at most ``limit`` bytes, UTF-8; else ``error`` naming it
    (``/dev/zero``, a FIFO or a 2 GB file are refused before they are read)."""
    import stat as stat_module

    try:
        mode = path.stat().st_mode
        if not stat_module.S_ISREG(mode):
            raise error([Problem(str(path), None, None, None, f"cannot read {what}: not a regular file")])
        with open(path, "rb") as handle:
            raw = handle.read(limit + 1)
    except OSError as exc:
        raise error([Problem(str(path), None, None, None, f"cannot read {what}: {exc.strerror}")]) from None
    if len(raw) > limit:
        raise error([Problem(str(path), None, None, None, f"{what} is larger than {limit:,} bytes: refused")])
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error([Problem(path.name, None, None, None, f"not UTF-8 text: {exc}")]) from None


def load_catalog(path: str | Path) -> MeshSpec:
    """Read and validate the catalog file at ``path``. A catalog validated
    before, unchanged, with unchanged entrypoint modules and depmesh code, comes
    from the compiled-catalog cache (``depmesh.catalog.cache``) instead."""
    from depmesh.catalog import cache

    path = Path(path)
    text = read_capped(path)
    raw = text.encode("utf-8")
    key = cache.key_of(raw, path)
    cached = cache.recall(key, path)
    if cached is not None:
        return cached
    mesh, modules = _parse(text, path)
    cache.remember(key, mesh, modules)
    return mesh

"""Contract spec -> a flat list of rules, each one Great Expectations 1.x
expectation (by name and arguments) with a severity and a readable id.

Pure data: nothing here imports Great Expectations, so compiling happens at
definitions load for free and the GX import waits for the first validation.
Dtype rules are checked against the frame's schema rather than through GX:
a dtype is a property of the column, not of its values (and GX's type-list
expectation misreads pandas 3 string and tz-aware dtypes).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from depmesh.catalog import DTYPES, ContractSpec, NodeSpec
from depmesh.keys import SERVED_CHECK

CONTRACT = "contract"
WARNINGS = "contract_warnings"
SCHEMA_CHANGE = "schema_change"
INPUT_CONTRACT = "input_contract"


@dataclass(frozen=True)
class Rule:
    id: str  # readable and stable: "origin.allowed", "row_count", "keys[0]"
    expectation: str  # GX 1.x expectation name, e.g. expect_column_values_to_be_between
    kwargs: dict[str, Any]
    severity: str  # ERROR blocks, WARN reports
    columns: tuple[str, ...] = ()
    description: str = ""
    derived: tuple[str, str, Any] | None = None  # (new column, source column, category) for share bounds


@dataclass(frozen=True)
class SchemaRule:
    column: str
    dtype: str
    severity: str

    @property
    def id(self) -> str:
        return f"{self.column}.dtype"


@dataclass(frozen=True)
class CompiledContract:
    version: str
    schema: tuple[SchemaRule, ...]
    rules: tuple[Rule, ...]
    skipped: tuple[str, ...] = field(default=())  # rules that could not apply yet, and why

    @property
    def size(self) -> int:
        return len(self.schema) + len(self.rules)


def share_column(column: str, value: Any) -> str:
    return f"__share__{column}__{value}"


def profile(df: Any, contract: ContractSpec) -> dict[str, dict[str, Any]]:
    """The statistics a contract's distribution bounds compare against: what
    the reference materialization records, and what each new one is held to."""
    from pandas.api.types import is_numeric_dtype

    out: dict[str, dict[str, Any]] = {}
    for d in contract.distribution:
        if d.column not in df.columns:
            continue
        col = df[d.column]
        if d.stat in ("mean", "quantiles") and not is_numeric_dtype(col.dtype):
            continue  # a retyped column has no numeric profile; its dtype rule reports it
        entry = out.setdefault(d.column, {})
        if d.stat == "mean":
            entry["mean"] = float(col.mean())
        elif d.stat == "quantiles":
            entry.setdefault("quantiles", {}).update({str(q): float(col.quantile(q)) for q in d.quantiles})
        elif d.stat == "share":
            entry.setdefault("share", {})[str(d.value)] = float((col == d.value).mean()) if len(col) else 0.0
    return out


def _column_rules(contract: ContractSpec, rules: list[Rule]) -> None:
    """Each column's nulls, range, allowed values and uniqueness."""
    for c in contract.columns:
        one = (c.name,)
        if not c.nullable:
            rules.append(Rule(f"{c.name}.not_null", "expect_column_values_to_not_be_null", {"column": c.name},
                              c.severity, one, f"{c.name} has no nulls"))
        elif c.max_null_fraction is not None:
            rules.append(Rule(f"{c.name}.null_fraction", "expect_column_values_to_not_be_null",
                              {"column": c.name, "mostly": 1 - c.max_null_fraction}, c.severity, one,
                              f"at most {c.max_null_fraction:.0%} of {c.name} null"))
        if c.min is not None or c.max is not None:
            rules.append(Rule(f"{c.name}.range", "expect_column_values_to_be_between",
                              {"column": c.name, "min_value": c.min, "max_value": c.max}, c.severity, one,
                              f"{c.name} in [{_bound(c.min, '-inf')}, {_bound(c.max, 'inf')}]"))
        if c.allowed is not None:
            rules.append(Rule(f"{c.name}.allowed", "expect_column_values_to_be_in_set",
                              {"column": c.name, "value_set": list(c.allowed)}, c.severity, one,
                              f"{c.name} in {{{', '.join(map(str, c.allowed))}}}"))
        if c.unique:
            rules.append(Rule(f"{c.name}.unique", "expect_column_values_to_be_unique", {"column": c.name},
                              c.severity, one, f"{c.name} is unique"))


def _distribution_rules(contract: ContractSpec, reference: dict | None, rules: list[Rule], skipped: list[str]) -> None:
    """Mean, quantiles and shares within their bounds of the reference profile (skipped without one)."""
    for d in contract.distribution:
        ref = (reference or {}).get(d.column, {})
        rid = f"{d.column}.{d.stat}" + (f"[{d.value}]" if d.stat == "share" else "")
        if d.stat == "mean":
            if "mean" not in ref:
                skipped.append(f"{rid}: no reference materialization yet")
                continue
            m = ref["mean"]
            rules.append(Rule(f"{rid}", "expect_column_mean_to_be_between",
                              {"column": d.column, "min_value": m - d.max_change, "max_value": m + d.max_change},
                              d.severity, (d.column,), f"mean of {d.column} within {d.max_change:g} of {m:.4g}"))
        elif d.stat == "quantiles":
            refs = ref.get("quantiles", {})
            if not all(str(q) in refs for q in d.quantiles):
                skipped.append(f"{rid}: no reference materialization yet")
                continue
            ranges = [[refs[str(q)] - d.max_change, refs[str(q)] + d.max_change] for q in d.quantiles]
            rules.append(Rule(f"{rid}", "expect_column_quantile_values_to_be_between",
                              {"column": d.column, "quantile_ranges": {"quantiles": list(d.quantiles), "value_ranges": ranges}},
                              d.severity, (d.column,),
                              f"quantiles {list(d.quantiles)} of {d.column} within {d.max_change:g} of the reference"))
        else:
            shares = ref.get("share", {})
            if str(d.value) not in shares:
                skipped.append(f"{rid}: no reference materialization yet")
                continue
            s = shares[str(d.value)]
            derived = share_column(d.column, d.value)
            rules.append(Rule(f"{rid}", "expect_column_mean_to_be_between",
                              {"column": derived, "min_value": max(0.0, s - d.max_change), "max_value": min(1.0, s + d.max_change)},
                              d.severity, (d.column,), f"share of {d.column}={d.value} within {d.max_change:g} of {s:.3f}",
                              derived=(derived, d.column, d.value)))


def compile_contract(contract: ContractSpec, reference: dict | None = None, now: Any = None) -> CompiledContract:
    """Every rule of ``contract``. ``reference`` is the profile of the
    reference materialization (distribution bounds apply only when there is
    one); ``now`` (a UTC pandas Timestamp) anchors record freshness."""
    schema = tuple(SchemaRule(c.name, c.dtype, c.severity) for c in contract.columns)
    rules: list[Rule] = []
    skipped: list[str] = []
    _column_rules(contract, rules)
    if contract.min_rows is not None or contract.max_rows is not None:
        rules.append(Rule("row_count", "expect_table_row_count_to_be_between",
                          {"min_value": contract.min_rows, "max_value": contract.max_rows}, contract.row_count_severity,
                          (), f"rows in [{_bound(contract.min_rows, 0)}, {_bound(contract.max_rows, 'inf')}]"))
    for i, key in enumerate(contract.keys):
        rules.append(Rule(f"keys[{i}]", "expect_compound_columns_to_be_unique", {"column_list": list(key)},
                          contract.keys_severity, key, f"({', '.join(key)}) is unique"))
    fr = contract.freshness
    if fr is not None and fr.column is not None:
        if now is None:
            skipped.append(f"{fr.column}.freshness: no reference time")
        else:
            import pandas as pd

            oldest_allowed = now - pd.Timedelta(hours=fr.max_age_hours)
            rules.append(Rule(f"{fr.column}.freshness", "expect_column_max_to_be_between",
                              {"column": fr.column, "min_value": oldest_allowed}, fr.severity, (fr.column,),
                              f"newest {fr.column} at most {fr.max_age_hours:g}h old"))
    _distribution_rules(contract, reference, rules, skipped)
    for i, e in enumerate(contract.expectations):
        columns = tuple(str(e.kwargs[a]) for a in ("column", "column_A", "column_B") if a in e.kwargs)
        rules.append(Rule(f"expectations[{i}]", e.type, dict(e.kwargs), e.severity, columns, e.type))
    return CompiledContract(contract.version, schema, tuple(rules), tuple(skipped))


def _bound(value: Any, default: Any) -> Any:
    return default if value is None else value


def dtype_matches(declared: str, actual: str) -> bool:
    return actual in DTYPES.get(declared, ())


def severities(contract: ContractSpec | None) -> set[str]:
    """The severities a contract's rules use (distribution bounds included,
    though they apply only once a reference exists)."""
    if contract is None:
        return set()
    compiled = compile_contract(contract, reference={}, now=None)
    found = {r.severity for r in compiled.rules} | {s.severity for s in compiled.schema}
    found |= {d.severity for d in contract.distribution}
    if contract.freshness is not None and contract.freshness.column:
        found.add(contract.freshness.severity)
    return found


def node_checks(node: NodeSpec) -> list[tuple[str, bool, str]]:
    """The asset checks a node gets: (name, blocking, description)."""
    out: list[tuple[str, bool, str]] = []
    version = node.contract.version if node.contract else None
    found = severities(node.contract)
    if "ERROR" in found:
        out.append((CONTRACT, True, f"Data contract v{version}: every ERROR expectation (blocking)."))
    if "WARN" in found:
        out.append((WARNINGS, False, f"Data contract v{version}: WARN expectations (reported, not blocking)."))
    if node.kind != "model":
        out.append((SCHEMA_CHANGE, False, "Columns added, removed or retyped since the last materialization."))
    if node.edges:
        out.append((INPUT_CONTRACT, True, "What this node needs from its inputs: columns, model latency budgets."))
    if node.kind == "scores":
        out.append((SERVED_CHECK, True, "The model versions these scores were made with are the set the catalog's "
                                      "serving: declares (the registry's Production set by default), judged "
                                      "against the registry when the step ends."))
        out.append(("rollout", False, "A rollout's candidate beside Production on the same rows: metric per arm, "
                                      "prediction shift, disagreement, latency and errors (reported)."))
    if node.kind == "model":
        from depmesh.gates.evaluate import DESCRIPTIONS, GATES

        out.extend((gate, True, DESCRIPTIONS[gate]) for gate in GATES)
    return out

"""Contracts as Dagster asset checks.

Each table node with a contract gets, in its own step:

- ``contract``: blocking, every ERROR expectation. When it fails the new data
  is not stored (the previous materialization stays the latest) and nothing
  downstream runs in that run;
- ``contract_warnings``: the WARN expectations, reported, never blocking;
- ``schema_change``: columns added, removed or retyped since the last
  materialization (WARN, not blocking);
- ``input_contract``: blocking, on nodes whose inputs carry edge contracts
  (the columns the node reads, a latency budget on an upstream model).
"""

from __future__ import annotations

from typing import Any

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetKey,
    MetadataValue,
)

from depmesh.catalog import NodeSpec
from depmesh.contracts.compile import (
    CONTRACT,
    INPUT_CONTRACT,
    SCHEMA_CHANGE,
    WARNINGS,
    compile_contract,
    node_checks,
    profile,
)
from depmesh.contracts.validate import ContractReport, Outcome, validate

PROFILE_KEY = "depmesh/profile"
SCHEMA_KEY = "depmesh/schema"


BLOCKS = (" Blocking (a depmesh gate): when it fails, this version is not stored and nothing downstream of it runs "
          "(shown as skipped). Dagster calls the check non-blocking because the step itself does not fail: a "
          "verdict is not an error, so it is never retried.")


def check_specs(node: NodeSpec, key: AssetKey) -> list[AssetCheckSpec]:
    """Dagster's own ``blocking`` flag fails the step when the check fails,
    which fails the run: Dagster then retries it (run retries) and marks the
    planned checks of every step that did not run as execution failures. A
    depmesh verdict blocks by withholding the output instead (Dagster skips
    what is downstream), so the spec is not Dagster-blocking; the description
    and each result's ``depmesh/blocking`` metadata say it blocks."""
    return [AssetCheckSpec(name, asset=key, blocking=False, description=description + (BLOCKS if blocking else ""))
            for name, blocking, description in node_checks(node)]


def blocking_check_names(node: NodeSpec) -> frozenset[str]:
    return frozenset(name for name, blocking, _ in node_checks(node) if blocking)


def _failure_table(outcomes: list[Outcome]) -> str:
    lines = ["| expectation | rule | observed | unexpected | failing values |", "|---|---|---|---|---|"]
    for o in outcomes:
        unexpected = "" if o.unexpected_count is None else f"{o.unexpected_count} ({o.unexpected_percent or 0:.2f}%)"
        sample = ", ".join(map(str, o.sample)) if o.sample else ""
        lines.append(f"| `{o.id}` | {o.description} | {o.observed if o.observed is not None else ''} | {unexpected} | {sample} |")
    return "\n".join(lines)


def contract_results(node: NodeSpec, report: ContractReport) -> list[AssetCheckResult]:
    results = []
    for name, severity in ((CONTRACT, "ERROR"), (WARNINGS, "WARN")):
        outcomes = report.of(severity)
        if not outcomes and severity == "WARN":
            continue
        failed = [o for o in outcomes if not o.success]
        metadata: dict[str, Any] = {
            "contract_version": report.version,
            "rows_checked": report.rows,
            "expectations_checked": len(outcomes),
            "expectations_failed": len(failed),
        }
        if failed:
            metadata["failures"] = MetadataValue.md(_failure_table(failed))
            metadata["failures_json"] = MetadataValue.json([o.as_row() for o in failed])
        if report.skipped:
            metadata["not_applied"] = "; ".join(report.skipped)
        results.append(AssetCheckResult(
            check_name=name, passed=not failed, metadata=metadata,
            severity=AssetCheckSeverity.ERROR if severity == "ERROR" else AssetCheckSeverity.WARN,
            description=(f"{len(failed)} of {len(outcomes)} expectations failed: " + report.describe_failures(severity))
            if failed else f"{len(outcomes)} expectations passed on {report.rows:,} rows",
        ))
    return results


def run_contract(node: NodeSpec, df: Any, previous: dict | None, now: Any) -> tuple[ContractReport, dict]:
    """Validate ``df``; distribution bounds compare with ``previous`` (the last
    materialization's profile). Returns the report and this frame's profile."""
    reference = (previous or {}).get(PROFILE_KEY)
    compiled = compile_contract(node.contract, reference=reference, now=now)
    return validate(df, compiled), profile(df, node.contract)


def schema_of(df: Any) -> dict[str, str]:
    return {str(c): str(t) for c, t in df.dtypes.items()}


def schema_change_result(df: Any, previous: dict | None) -> AssetCheckResult:
    current = schema_of(df)
    before = (previous or {}).get(SCHEMA_KEY)
    if before is None:
        return AssetCheckResult(check_name=SCHEMA_CHANGE, passed=True, severity=AssetCheckSeverity.WARN,
                                metadata={"columns": len(current)}, description="first materialization: nothing to compare")
    added = sorted(set(current) - set(before))
    removed = sorted(set(before) - set(current))
    retyped = {c: f"{before[c]} -> {current[c]}" for c in sorted(set(before) & set(current)) if before[c] != current[c]}
    changed = bool(added or removed or retyped)
    parts = [f"added {added}" if added else "", f"removed {removed}" if removed else "",
             f"retyped {retyped}" if retyped else ""]
    return AssetCheckResult(
        check_name=SCHEMA_CHANGE, passed=not changed, severity=AssetCheckSeverity.WARN,
        metadata={"added": MetadataValue.json(added), "removed": MetadataValue.json(removed),
                  "retyped": MetadataValue.json(retyped), "columns": len(current)},
        description="; ".join(p for p in parts if p) if changed else "schema unchanged",
    )


def input_contract_result(node: NodeSpec, inputs: dict[str, Any],
                          measured_p95_ms: dict[str, float] | None = None) -> AssetCheckResult:
    """Check every edge contract of ``node`` against the loaded inputs.
    ``measured_p95_ms`` (upstream model -> single-row p95) holds what that
    model's own latency gate measured on the same sample input for the very
    version loaded here; a latency budget is checked against it instead of
    timing the model again."""
    from depmesh.models import TrainedModel, measure_latency

    measured_p95_ms = measured_p95_ms or {}

    problems: list[str] = []
    metadata: dict[str, Any] = {}
    for name, edge in sorted(node.edges.items()):
        value = inputs.get(name)
        if edge.columns and value is not None and not isinstance(value, TrainedModel):
            missing = [c for c in edge.columns if c not in value.columns]
            metadata[f"{name}/columns_read"] = len(edge.columns)
            if missing:
                problems.append(f"{name} lacks column(s) {', '.join(missing)} that {node.name} reads")
        if edge.latency_p95_ms is not None and isinstance(value, TrainedModel):
            if name in measured_p95_ms:
                p95, source = float(measured_p95_ms[name]), "its latency gate"
            else:
                p95, source = measure_latency(value)["p95_ms"], "this check"
            metadata[f"{name}/p95_ms"] = round(p95, 3)
            metadata[f"{name}/p95_measured_by"] = source
            metadata[f"{name}/budget_p95_ms"] = edge.latency_p95_ms
            if p95 > edge.latency_p95_ms:
                problems.append(f"{name} predicts in {p95:.1f} ms at p95, over the "
                                f"{edge.latency_p95_ms:g} ms budget {node.name} needs")
    return AssetCheckResult(
        check_name=INPUT_CONTRACT, passed=not problems, severity=AssetCheckSeverity.ERROR, metadata=metadata,
        description="; ".join(problems) if problems else f"{len(node.edges)} input contract(s) met",
    )

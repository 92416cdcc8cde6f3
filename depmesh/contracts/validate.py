"""Run a compiled contract against a DataFrame: Great Expectations 1.x
expectations, answered with GX's own semantics.

The kinds ``depmesh.contracts.fast`` covers (every kind a contract compiles
to, and the catalog's extra expectations) are evaluated directly on the
frame, with GX's pandas semantics and result fields; GX itself is imported
only when a rule needs it (an argument or dtype the fast path leaves to it).
Those are validated in one pass (one GX suite, one batch, the cheapest result
format); only when something failed does a second pass over the failed
expectations alone fetch observed values and a few failing values.
"""

from __future__ import annotations

import json
import math
import os
import threading
from dataclasses import dataclass, field
from typing import Any

from depmesh.contracts import fast
from depmesh.contracts.compile import CompiledContract, Rule, dtype_matches

SAMPLE_SIZE = 5
# DEPMESH_CONTRACTS_ENGINE=gx sends every rule through Great Expectations (the
# reference the fast path is held to); the default answers the kinds
# depmesh.contracts.fast covers directly and the rest through GX.
FAST = os.environ.get("DEPMESH_CONTRACTS_ENGINE", "fast").lower() != "gx"
_lock = threading.Lock()
_gx_state: dict[str, Any] = {}
_suites: dict[str, Any] = {}


@dataclass
class Outcome:
    id: str
    expectation: str
    severity: str
    success: bool
    description: str
    observed: Any = None
    unexpected_count: int | None = None
    unexpected_percent: float | None = None
    sample: list[Any] = field(default_factory=list)

    def evidence(self) -> str:
        """What was seen: the failing count and a few values, or the observed value."""
        if self.unexpected_count is not None:
            values = ", ".join(_short(v) for v in self.sample[:3])
            return f"{self.unexpected_count} rows ({self.unexpected_percent or 0:.2f}%) fail, e.g. {values}"
        return f"observed {_short(self.observed)}"

    def as_row(self) -> dict[str, Any]:
        return {
            "id": self.id, "expectation": self.expectation, "severity": self.severity, "success": self.success,
            "description": self.description, "observed": self.observed, "unexpected_count": self.unexpected_count,
            "unexpected_percent": self.unexpected_percent, "sample": self.sample,
        }


@dataclass
class ContractReport:
    version: str
    rows: int
    outcomes: list[Outcome]
    skipped: tuple[str, ...] = ()

    def of(self, severity: str) -> list[Outcome]:
        return [o for o in self.outcomes if o.severity == severity]

    def failed(self, severity: str | None = None) -> list[Outcome]:
        return [o for o in self.outcomes if not o.success and (severity is None or o.severity == severity)]

    def passed(self, severity: str) -> bool:
        return not self.failed(severity)

    def describe_failures(self, severity: str) -> str:
        return "; ".join(f"{o.id}: {o.description} ({o.evidence()})" for o in self.failed(severity))


def _plain(value: Any) -> Any:
    """JSON-safe, readable values for check metadata."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        try:
            value = value.item()
        except (ValueError, AttributeError):
            pass
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return str(value)
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def _short(value: Any) -> str:
    text = json.dumps(_plain(value), default=str)
    return text if len(text) <= 80 else text[:77] + "..."


def _gx():
    """The GX module and an ephemeral context with a pandas datasource (once per process)."""
    with _lock:
        if not _gx_state:
            os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")  # no network calls from checks
            import great_expectations as gx
            from great_expectations.data_context.types.base import ProgressBarsConfig

            context = gx.get_context(mode="ephemeral")
            context.variables.progress_bars = ProgressBarsConfig(globally=False)
            batch_definition = (
                context.data_sources.add_pandas("depmesh")
                .add_dataframe_asset("frame")
                .add_batch_definition_whole_dataframe("whole")
            )
            _gx_state.update(gx=gx, context=context, batch_definition=batch_definition)
        return _gx_state


def _expectation(gx: Any, rule: Rule) -> Any:
    cls_name = "".join(part.capitalize() for part in rule.expectation.split("_"))
    cls = getattr(gx.expectations, cls_name, None)
    if cls is None:
        raise ValueError(f"rule {rule.id}: Great Expectations has no expectation {rule.expectation!r}")
    kwargs = {k: v for k, v in rule.kwargs.items() if v is not None}
    return cls(**kwargs, meta={"depmesh_id": rule.id})


def _suite(rules: list[Rule], key: str) -> Any:
    """The GX suite for ``rules``, built once per distinct set of rules."""
    state = _gx()
    with _lock:
        suite = _suites.get(key)
        if suite is None:
            gx = state["gx"]
            suite = gx.ExpectationSuite(name=f"depmesh-{len(_suites)}")
            for rule in rules:
                suite.add_expectation(_expectation(gx, rule))
            _suites[key] = suite
        return suite


def _suite_key(rules: list[Rule]) -> str:
    return json.dumps([[r.id, r.expectation, _plain(r.kwargs)] for r in rules], sort_keys=True, default=str)


def _run(frame: Any, rules: list[Rule], result_format: Any) -> dict[str, Any]:
    state = _gx()
    suite = _suite(rules, _suite_key(rules))
    batch = state["batch_definition"].get_batch(batch_parameters={"dataframe": frame})
    result = batch.validate(suite, result_format=result_format)
    return {r.expectation_config.meta["depmesh_id"]: r for r in result.results}


def _answer_with_gx(data: Any, rules: list[Rule]) -> dict[str, dict[str, Any]]:
    """Rule id -> GX's result, in the fast path's shape. One pass with the
    cheapest result format; a second over the failed rules alone fetches
    observed and failing values (an exception's message stands for the
    observed value)."""
    first = _run(data, rules, "BOOLEAN_ONLY")
    failed = [r for r in rules if not first[r.id].success]
    details = _run(data, failed, {"result_format": "SUMMARY", "partial_unexpected_count": SAMPLE_SIZE}) if failed else {}
    answered: dict[str, dict[str, Any]] = {}
    for rule in rules:
        r = details.get(rule.id)
        if r is None:
            answered[rule.id] = {"success": True}
            continue
        error = (r.exception_info or {}).get("exception_message") if isinstance(r.exception_info, dict) else None
        res = dict(r.result or {})
        if error is not None and "observed_value" not in res:
            res["observed_value"] = error
        answered[rule.id] = {"success": bool(r.success), "result": res}
    return answered


def validate(frame: Any, compiled: CompiledContract) -> ContractReport:
    """Validate ``frame`` against every rule of ``compiled``."""
    outcomes: list[Outcome] = []
    present = set(frame.columns)
    dtypes = {str(c): str(t) for c, t in frame.dtypes.items()}
    for s in compiled.schema:
        if s.column not in present:
            outcomes.append(Outcome(s.id, "column_exists_with_dtype", s.severity, False,
                                    f"{s.column} exists as {s.dtype}", observed="column missing"))
        else:
            ok = dtype_matches(s.dtype, dtypes[s.column])
            outcomes.append(Outcome(s.id, "column_exists_with_dtype", s.severity, ok,
                                    f"{s.column} exists as {s.dtype}", observed=dtypes[s.column]))
    runnable: list[Rule] = []
    for rule in compiled.rules:
        missing = [c for c in rule.columns if c not in present]
        if missing:
            outcomes.append(Outcome(rule.id, rule.expectation, rule.severity, False, rule.description,
                                    observed=f"column {', '.join(missing)} missing"))
        else:
            runnable.append(rule)
    if runnable:
        derived = {r.derived[0]: (frame[r.derived[1]] == r.derived[2]).astype("float64") for r in runnable if r.derived}
        data = frame.assign(**derived) if derived else frame
        answered: dict[str, dict[str, Any]] = {}
        if FAST:
            for rule in runnable:
                result = fast.evaluate(data, rule.expectation, rule.kwargs)
                if result is not None:
                    answered[rule.id] = result
        through_gx = [r for r in runnable if r.id not in answered]
        if through_gx:
            answered.update(_answer_with_gx(data, through_gx))
        for rule in runnable:
            answer = answered[rule.id]
            if answer["success"]:
                outcomes.append(Outcome(rule.id, rule.expectation, rule.severity, True, rule.description))
                continue
            res = answer.get("result") or {}
            outcomes.append(Outcome(
                rule.id, rule.expectation, rule.severity, False, rule.description,
                observed=_plain(res.get("observed_value")),
                unexpected_count=_plain(res.get("unexpected_count")),
                unexpected_percent=_plain(res.get("unexpected_percent")),
                sample=_plain(list(res.get("partial_unexpected_list") or [])[:SAMPLE_SIZE]),
            ))
    return ContractReport(compiled.version, len(frame), outcomes, compiled.skipped)

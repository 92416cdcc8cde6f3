"""Deployment gates: what a model version must show before it may be
released. Pure functions over a TrainedModel, its evaluation window and the
Production version's metrics; each returns a GateResult with its figures."""

from __future__ import annotations

import threading
import time
import tracemalloc
from dataclasses import dataclass, field
from typing import Any

from depmesh.catalog import GateSpec
from depmesh.models import PRIMARY_METRIC, InvalidInput, TrainedModel, measure_latency

QUALITY, LATENCY, SUBGROUPS, MALFORMED, MEMORY = (
    "gate_quality", "gate_latency", "gate_subgroups", "gate_malformed_input", "gate_memory")
GATES = (QUALITY, LATENCY, SUBGROUPS, MALFORMED, MEMORY)
DESCRIPTIONS = {
    QUALITY: "Primary metric on the fixed evaluation window within the allowed regression of Production "
             "(a first version must beat the naive baseline).",
    LATENCY: "p50/p95/p99 of single-row and batch predictions within budget.",
    SUBGROUPS: "The metric per subgroup above its floor, and the worst gap between subgroups within bounds.",
    MALFORMED: "Bad inputs get predictions or a structured refusal, never a crash or a hang.",
    MEMORY: "Peak memory of batch inference within budget.",
}


@dataclass
class GateResult:
    name: str
    passed: bool
    summary: str
    figures: dict[str, Any] = field(default_factory=dict)


def _call_with_timeout(fn, timeout: float) -> tuple[str, Any]:
    """Run fn in a daemon thread: ('ok', value) | ('error', exc) | ('hang', None)."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - everything a model raises is evidence
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        return "hang", None
    return ("error", box["error"]) if "error" in box else ("ok", box.get("value"))


def batch_of(model: TrainedModel, rows: int) -> Any:
    import pandas as pd

    sample = model.sample_input
    repeats = -(-rows // max(1, len(sample)))
    return pd.concat([sample] * repeats, ignore_index=True).head(rows)


def quality(model: TrainedModel, spec: GateSpec, production: dict[str, float] | None) -> GateResult:
    metric, higher = PRIMARY_METRIC[model.task]
    value = float(model.metrics.get(metric, float("nan")))
    if production and metric in production:
        reference, against = float(production[metric]), "Production"
        if higher:
            bound = reference - abs(reference) * spec.max_regression
            passed = value >= bound
        else:
            bound = reference + abs(reference) * spec.max_regression
            passed = value <= bound
    else:
        against = "naive baseline"
        reference = {"regression": model.metrics.get("baseline_mae", float("inf")),
                     "classification": 0.5, "clustering": 0.0}[model.task]
        bound = reference
        passed = value > bound if higher else value < bound
    figures = {"metric": metric, "value": value, "reference": reference, "against": against, "bound": bound,
               "max_regression": spec.max_regression}
    word = "at least" if higher else "at most"
    return GateResult(QUALITY, bool(passed), f"{metric} {value:.4g} vs {against} {reference:.4g} "
                      f"({word} {bound:.4g} allowed)", figures)


def latency(model: TrainedModel, spec: GateSpec, single_calls: int = 30, batch_calls: int = 5) -> GateResult:
    import numpy as np

    single = measure_latency(model, rows=single_calls, stop_above_ms=spec.single_p95_ms)
    batch_frame = batch_of(model, spec.batch_rows)
    batch = []
    for _ in range(batch_calls):
        t = time.perf_counter()
        model.predict(batch_frame)
        batch.append((time.perf_counter() - t) * 1000)
    s50, s95, s99 = single["p50_ms"], single["p95_ms"], single["p99_ms"]
    b50, b95, b99 = (float(v) for v in np.percentile(batch, [50, 95, 99]))
    figures = {"single_p50_ms": s50, "single_p95_ms": s95, "single_p99_ms": s99, "batch_rows": spec.batch_rows,
               "batch_p50_ms": b50, "batch_p95_ms": b95, "batch_p99_ms": b99,
               "budget_single_p95_ms": spec.single_p95_ms, "budget_batch_p95_ms": spec.batch_p95_ms}
    passed = s95 <= spec.single_p95_ms and b95 <= spec.batch_p95_ms
    return GateResult(LATENCY, passed, f"single-row p95 {s95:.1f} ms (budget {spec.single_p95_ms:g}), batch of "
                      f"{spec.batch_rows} p95 {b95:.1f} ms (budget {spec.batch_p95_ms:g})", figures)


def _score(task: str, y: Any, predicted: Any) -> float | None:
    import numpy as np

    if task == "regression":
        return float(np.mean(np.abs(np.asarray(y, dtype="float64") - predicted)))
    if task == "classification":
        from sklearn.metrics import roc_auc_score

        if len(set(np.asarray(y).tolist())) < 2:
            return None
        return float(roc_auc_score(y, predicted))
    return None


def subgroups(model: TrainedModel, spec: GateSpec, evaluation: tuple[Any, Any] | None) -> GateResult:
    import numpy as np

    metric, higher = PRIMARY_METRIC[model.task]
    if not spec.subgroups:
        return GateResult(SUBGROUPS, True, "no subgroup columns declared for this model", {"groups": 0})
    if evaluation is None or model.task == "clustering":
        return GateResult(SUBGROUPS, True, f"not applicable to a {model.task} model without labels", {"groups": 0})
    frame, y = evaluation
    predicted = model.predict_proba(frame) if model.task == "classification" else model.predict(frame)
    rows, failures = [], []
    worst_gap = 0.0
    for column in spec.subgroups:
        if column not in frame.columns:
            failures.append(f"no column {column} in the evaluation window")
            continue
        scores = {}
        for value, index in frame.groupby(column, sort=True).indices.items():
            if len(index) < spec.subgroup_min_rows:
                continue
            score = _score(model.task, np.asarray(y)[index], np.asarray(predicted)[index])
            if score is not None:
                scores[str(value)] = score
                rows.append({"column": column, "group": str(value), metric: round(score, 4), "rows": len(index)})
        if not scores:
            continue
        gap = max(scores.values()) - min(scores.values())
        worst_gap = max(worst_gap, gap)
        worst = min(scores, key=scores.get) if higher else max(scores, key=scores.get)
        if spec.subgroup_limit is not None:
            beyond = scores[worst] < spec.subgroup_limit if higher else scores[worst] > spec.subgroup_limit
            if beyond:
                failures.append(f"{column}={worst}: {metric} {scores[worst]:.4g} beyond the limit {spec.subgroup_limit:g}")
        if spec.subgroup_max_gap is not None and gap > spec.subgroup_max_gap:
            failures.append(f"{column}: gap {gap:.4g} between groups over {spec.subgroup_max_gap:g}")
    figures = {"metric": metric, "groups": len(rows), "worst_gap": worst_gap, "per_group": rows}
    summary = "; ".join(failures) if failures else f"{len(rows)} groups within bounds (worst gap {worst_gap:.4g})"
    return GateResult(SUBGROUPS, not failures, summary, figures)


def malformed_cases(model: TrainedModel) -> dict[str, Any]:
    import numpy as np

    sample = model.sample_input.head(20).reset_index(drop=True)
    numeric = [c for c in model.required_columns() if c not in model.categorical and c in sample]
    categorical = [c for c in model.categorical if c in sample]
    cases = {
        "empty frame": sample.head(0),
        "extra column": sample.assign(__unexpected__=1.0),
    }
    if model.required_columns():
        cases["missing column"] = sample.drop(columns=[model.required_columns()[0]])
    if numeric:
        cases["NaN and infinities"] = sample.assign(**{numeric[0]: [np.nan, np.inf, -np.inf] * 6 + [0.0, 1.0]})
        cases["wrong dtypes"] = sample.assign(**{numeric[0]: sample[numeric[0]].astype(str)})
        cases["extreme values"] = sample.assign(**{c: 1e12 for c in numeric})
        cases["text in a number column"] = sample.assign(**{numeric[0]: "not a number"})
    if categorical:
        cases["unseen categories"] = sample.assign(**{c: "NEVER_SEEN" for c in categorical})
    return cases


def malformed_input(model: TrainedModel, spec: GateSpec) -> GateResult:
    outcomes, failures = {}, []
    for name, frame in malformed_cases(model).items():
        status, value = _call_with_timeout(lambda f=frame: model.predict(f), spec.malformed_timeout_s)
        if status == "hang":
            outcomes[name] = f"HANG (> {spec.malformed_timeout_s:g} s)"
            failures.append(name)
        elif status == "error" and isinstance(value, InvalidInput):
            outcomes[name] = f"refused: {'; '.join(value.problems)}"
        elif status == "error":
            outcomes[name] = f"CRASH {type(value).__name__}: {str(value)[:160]}"
            failures.append(name)
        elif value is None or len(value) != len(frame):
            outcomes[name] = f"WRONG LENGTH: {0 if value is None else len(value)} predictions for {len(frame)} rows"
            failures.append(name)
        else:
            outcomes[name] = f"{len(value)} predictions"
    summary = (f"{len(failures)} of {len(outcomes)} bad inputs crashed or hung: {', '.join(failures)}"
               if failures else f"all {len(outcomes)} bad inputs answered with predictions or a structured refusal")
    return GateResult(MALFORMED, not failures, summary, {"cases": outcomes})


def memory(model: TrainedModel, spec: GateSpec) -> GateResult:
    frame = batch_of(model, spec.batch_rows)
    tracemalloc.start()
    try:
        model.predict(frame)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    peak_mb = peak / 2**20
    return GateResult(MEMORY, peak_mb <= spec.max_peak_mb,
                      f"peak {peak_mb:.1f} MB for a batch of {spec.batch_rows} rows (budget {spec.max_peak_mb:g} MB)",
                      {"peak_mb": round(peak_mb, 2), "batch_rows": spec.batch_rows, "budget_mb": spec.max_peak_mb})


def evaluate_gates(model: TrainedModel, spec: GateSpec, evaluation: Any, production: dict | None) -> list[GateResult]:
    """Every gate; a gate that raises fails with the error as its evidence."""
    runs = [
        (QUALITY, lambda: quality(model, spec, production)),
        (LATENCY, lambda: latency(model, spec)),
        (SUBGROUPS, lambda: subgroups(model, spec, evaluation)),
        (MALFORMED, lambda: malformed_input(model, spec)),
        (MEMORY, lambda: memory(model, spec)),
    ]
    results = []
    for name, run in runs:
        try:
            results.append(run())
        except Exception as exc:  # noqa: BLE001 - a model that breaks a gate fails it, not the run
            results.append(GateResult(name, False, f"the model failed while gated: {type(exc).__name__}: {exc}"[:400]))
    return results

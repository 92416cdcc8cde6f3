"""The canary's judge: a step's figures summarized per model and arm, judged against its thresholds, and what that does (wait, advance, complete and promote, roll back)."""

from __future__ import annotations

from typing import Any

from depmesh.catalog.spec import RolloutStep
from depmesh.governance import govern
from depmesh.notify import audit
from depmesh.registry.schema import rollouts
from depmesh.rollout.arms import step_figures
from depmesh.rollout.serving import CANARY_ACTOR, _end, _now, active_rollout


def summarize(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per model, the step's runs summed: rows and metric per arm, errors, and the means of shift,
    disagreement and latency ratio (weighted by rows)."""
    out: dict[str, dict[str, Any]] = {}
    for row in rows:
        f = row["figures"]
        s = out.setdefault(row["model"], {"metric": f["metric"], "runs": 0, "production": _zero(),
                                          "candidate": _zero(), "paired": _zero(), "weights": 0, "shift": 0.0, "disagreement": 0.0,
                                          "production_s": 0.0, "candidate_s": 0.0, "errors": [],
                                          "latency_ratios": []})
        s["runs"] += 1
        for arm in ("production", "candidate", "paired"):
            for k in ("rows", "labelled", "loss_sum", "errors"):
                s[arm][k] += f[arm][k]
        s["production_s"] += f["production"]["batch_seconds"]
        s["candidate_s"] += f["candidate"]["batch_seconds"]
        w = f["candidate"]["batch_rows"]
        s["weights"] += w
        s["shift"] += (f["shift"] or 0.0) * w
        s["disagreement"] += (f["disagreement"] or 0.0) * w
        if f.get("latency_ratio") is not None:
            s["latency_ratios"].append(f["latency_ratio"])
        if f.get("error"):
            s["errors"].append(f["error"])
    for s in out.values():
        for arm in ("production", "candidate", "paired"):
            s[arm]["metric"] = s[arm]["loss_sum"] / s[arm]["labelled"] if s[arm]["labelled"] else None
        s["shift"] = s["shift"] / s["weights"] if s["weights"] else None
        s["disagreement"] = s["disagreement"] / s["weights"] if s["weights"] else None
        # the median of the runs' ratios (each already the fastest of alternating rounds of own time)
        s["latency_ratio"] = float(sorted(s["latency_ratios"])[len(s["latency_ratios"]) // 2]) if s[
            "latency_ratios"] else None
        s["error_rate"] = s["candidate"]["errors"] / s["candidate"]["rows"] if s["candidate"]["rows"] else 0.0
        p, c = s["paired"]["metric"], s["candidate"]["metric"]  # the same rows, both models
        s["metric_regression"] = (c - p) / p if p and c is not None else (0.0 if p == c else None)
    return out


def _zero() -> dict[str, float]:
    return {"rows": 0, "labelled": 0, "loss_sum": 0.0, "errors": 0}


JUDGED = (("max_metric_regression", "metric_regression", "{:+.1%}"), ("max_error_rate", "error_rate", "{:.1%}"),
          ("max_prediction_shift", "shift", "{:.3f}"), ("max_disagreement", "disagreement", "{:.1%}"),
          ("max_latency_ratio", "latency_ratio", "{:.2f}x"))


def judge(summary: dict[str, dict[str, Any]], step: RolloutStep, models: list[str]) -> tuple[str, list[str]]:
    """('wait' | 'hold' | 'break', reasons): wait until every model's candidate arm has the step's rows."""
    short = [f"{m}: {summary.get(m, {}).get('candidate', {}).get('rows', 0)} of {step.min_rows} rows"
             for m in models if summary.get(m, {}).get("candidate", {}).get("rows", 0) < step.min_rows]
    if short:
        return "wait", short
    broken, held = [], []
    for model in models:
        s = summary[model]
        for limit_name, figure_name, shown in JUDGED:
            limit, figure = getattr(step.thresholds, limit_name), s.get(figure_name)
            if limit is None or figure is None:
                continue
            text = (f"{model}: {figure_name.replace('_', ' ')} {shown.format(figure)} "
                    f"({limit_name} {shown.format(limit).lstrip('+')}; {s['metric']} on the candidate's "
                    f"{s['candidate']['labelled']} labelled rows: production {_fmt(s['paired']['metric'])}, "
                    f"candidate {_fmt(s['candidate']['metric'])})"
                    if figure_name == "metric_regression" else
                    f"{model}: {figure_name.replace('_', ' ')} {shown.format(figure)} ({limit_name} "
                    f"{shown.format(limit).lstrip('+')})")
            (broken if figure > limit else held).append(text)
    return ("break", broken) if broken else ("hold", held)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def advance(registry: Any, mesh: Any, teams: Any) -> dict[str, Any] | None:
    """Judge the active canary's step (what the canary sensor does): wait, advance, complete or roll back."""
    from depmesh.governance.approvals import notify_change

    rollout = active_rollout(registry)
    if rollout is None or rollout["mode"] != "canary":
        return None
    plan, step = rollout["plan"], rollout["step"]
    models = sorted(rollout["candidates"])
    summary = summarize(step_figures(registry, rollout["id"], step))
    verdict, reasons = judge(summary, plan.steps[step], models)
    label = f"step {step + 1} of {len(plan.steps)} ({plan.steps[step].percent:g}%)"
    outcome = {"rollout": rollout["id"], "release": rollout["release_id"], "step": step, "verdict": verdict,
               "reasons": reasons, "summary": summary}
    if verdict == "wait":
        return outcome
    subject = f"release:{rollout['release_id']}"
    if verdict == "break":
        reason = f"{label} broke: " + "; ".join(reasons)
        with registry.transaction() as conn:
            if not _end(conn, registry, rollout, "rolled_back", CANARY_ACTOR, reason):
                return {**outcome, "verdict": "raced"}
        notify_change(registry, mesh, teams, "canary_rollback", models, release=rollout["release_id"],
                      by=CANARY_ACTOR, reason=reason)
        return {**outcome, "action": "rolled_back", "reason": reason}
    if step + 1 < len(plan.steps):
        reason = f"{label} held: " + "; ".join(reasons)
        with registry.transaction() as conn:
            moved = conn.execute(rollouts.update().where(rollouts.c.id == rollout["id"], rollouts.c.step == step,
                                                         rollouts.c.status == "active")
                                 .values(step=step + 1, step_started_at=_now())).rowcount
            if moved != 1:
                return {**outcome, "verdict": "raced"}
            audit(conn, registry.mesh, CANARY_ACTOR, "canary_advanced", subject, reason, rollout=rollout["id"],
                  to_percent=plan.steps[step + 1].percent)
        notify_change(registry, mesh, teams, "canary_advanced", models, release=rollout["release_id"],
                      percent=plan.steps[step + 1].percent, reason=reason)
        return {**outcome, "action": "advanced", "percent": plan.steps[step + 1].percent, "reason": reason}
    reason = f"canary completed, {label} held: " + "; ".join(reasons)
    govern(registry, teams, mesh.dependencies).promote(rollout["release_id"], actor=CANARY_ACTOR, reason=reason)
    with registry.transaction() as conn:
        _end(conn, registry, rollout, "completed", CANARY_ACTOR, reason)
    notify_change(registry, mesh, teams, "promoted", models, release=rollout["release_id"], by=CANARY_ACTOR,
                  reason=reason)
    return {**outcome, "action": "promoted", "reason": reason}

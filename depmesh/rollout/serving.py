"""Shadow and canary serving of a release's candidate models.

A rollout puts one release of the mesh beside Production in the scoring
assets (kind ``scores``). In **shadow**, each scoring step also scores the
same batch with the candidate and keeps Production's predictions; in
**canary**, the rows whose key hashes below the current step's percent get the
candidate's predictions (each row still names the model version that made
it). Either way the step records, per model and arm, the rows, the labelled
rows' metric, the candidate's errors and both arms' scoring time, and the
shift and disagreement between the two predictions of every row.

``advance`` is what the canary sensor does: once the step has its rows, it
judges the step against its thresholds; a step that holds advances (the last
one promotes the release, actor ``depmesh/canary``), a step that breaks rolls
the candidate back, with the threshold and the figure in the reason.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from depmesh.catalog.spec import RolloutSpec, RolloutStep, RolloutThresholds
from depmesh.governance import govern
from depmesh.notify import audit
from depmesh.registry.schema import promotion_requests, rollout_metrics, rollouts
from depmesh.registry.store import RegistryError, check_actor

MODES = ("shadow", "canary")
CANARY_ACTOR = "depmesh/canary"
ROLLOUT_CHECK = "rollout"  # the scores nodes' asset check that reports the candidate beside Production


class RolloutError(RegistryError):
    """A rollout that cannot start, advance or stop as asked."""


def _now() -> datetime:
    return datetime.now(UTC)


def plan_from(raw: dict[str, Any]) -> RolloutSpec:
    steps = tuple(RolloutStep(s["percent"], s["min_rows"], RolloutThresholds(**s["thresholds"])) for s in raw["steps"])
    return RolloutSpec(**{**raw, "steps": steps})


def _decode(row: Any) -> dict[str, Any]:
    out = dict(row._mapping)
    out["plan"] = plan_from(json.loads(out["plan"]))
    out["candidates"] = json.loads(out["candidates"])
    return out


def get_rollout(registry: Any, rollout_id: int) -> dict[str, Any]:
    with registry.engine.connect() as conn:
        row = conn.execute(sa.select(rollouts).where(rollouts.c.id == rollout_id,
                                                     rollouts.c.mesh == registry.mesh)).first()
    if row is None:
        raise RolloutError(f"no rollout {rollout_id} in mesh {registry.mesh} (see: depmesh rollout status)")
    return _decode(row)


def active_rollout(registry: Any) -> dict[str, Any] | None:
    with registry.engine.connect() as conn:
        row = conn.execute(sa.select(rollouts).where(rollouts.c.mesh == registry.mesh,
                                                     rollouts.c.status == "active")).first()
    return _decode(row) if row is not None else None


def list_rollouts(registry: Any) -> list[dict[str, Any]]:
    with registry.engine.connect() as conn:
        return [_decode(r) for r in conn.execute(sa.select(rollouts).where(rollouts.c.mesh == registry.mesh)
                                                 .order_by(rollouts.c.id))]


def percent_now(rollout: dict[str, Any]) -> float:
    return 100.0 if rollout["mode"] == "shadow" else rollout["plan"].steps[rollout["step"]].percent


def start(registry: Any, mesh: Any, teams: Any, release_id: int, *, mode: str, actor: str,
          reason: str) -> dict[str, Any]:
    """Start a shadow or canary rollout of a Staging release. A canary exposes rows to the candidate, so when the
    mesh declares teams it needs the release's approved promotion request (its completion promotes it)."""
    check_actor(actor, reason)
    if mode not in MODES:
        raise RolloutError(f"unknown rollout mode {mode!r} (known: {', '.join(MODES)})")
    if mesh.rollout is None:
        raise RolloutError(f"mesh {mesh.name} declares no rollout (add rollout: with key and steps to "
                           f"{mesh.path.name}; see docs/content/guides/approvals.md, \"Shadow, canary, A/B\")")
    if teams is not None:
        teams.require_member(actor, doing=f"start a {mode} rollout")
    release = registry.release(release_id)
    if release["status"] == "Production":
        raise RolloutError(f"release {release_id} is already Production: there is nothing to roll out")
    production = registry.production()
    candidates = {m: {"production": production.get(m), "candidate": v} for m, v in release["members"].items()
                  if production.get(m) != v}
    if not candidates:
        raise RolloutError(f"release {release_id} changes no model of Production")
    first = [m for m, arms in candidates.items() if arms["production"] is None]
    if first:
        raise RolloutError(f"{', '.join(first)} of release {release_id} has no Production version to compare "
                           "with: a first release is promoted directly (depmesh release request)")
    problems = registry.artifact_problems({m: a["candidate"] for m, a in candidates.items()})
    if problems:
        raise RolloutError("the candidate's artifacts do not verify: " + "; ".join(problems))
    with registry.transaction() as conn:
        running = conn.execute(sa.select(rollouts.c.id, rollouts.c.release_id).where(
            rollouts.c.mesh == registry.mesh, rollouts.c.status == "active")).first()
        if running is not None:
            raise RolloutError(f"rollout {running.id} of release {running.release_id} is active: stop it first "
                               "(depmesh rollout stop)")
        if mode == "canary" and teams is not None:
            approved = conn.execute(sa.select(promotion_requests.c.id).where(
                promotion_requests.c.mesh == registry.mesh, promotion_requests.c.release_id == release_id,
                promotion_requests.c.status == "approved")).scalar()
            if approved is None:
                raise RolloutError(f"a canary puts release {release_id} in front of real rows: it needs an approved "
                                   f"promotion request first (depmesh release request {release_id} --canary)")
        now = _now()
        rollout_id = conn.execute(rollouts.insert().values(
            mesh=registry.mesh, release_id=release_id, mode=mode, status="active", step=0,
            plan=json.dumps(asdict(mesh.rollout)), candidates=json.dumps(candidates), started_by=actor,
            started_at=now, step_started_at=now)).inserted_primary_key[0]
        audit(conn, registry.mesh, actor, f"{mode}_started", f"release:{release_id}", reason, rollout=rollout_id,
              candidates=candidates)
    return get_rollout(registry, rollout_id)


def stop(registry: Any, *, actor: str, reason: str, status: str = "stopped") -> dict[str, Any]:
    check_actor(actor, reason)
    current = active_rollout(registry)
    if current is None:
        raise RolloutError(f"no rollout is active in mesh {registry.mesh}")
    with registry.transaction() as conn:
        _end(conn, registry, current, status, actor, reason)
    return get_rollout(registry, current["id"])


def _end(conn: Any, registry: Any, rollout: dict[str, Any], status: str, actor: str, reason: str) -> bool:
    ended = conn.execute(rollouts.update().where(rollouts.c.id == rollout["id"], rollouts.c.status == "active")
                         .values(status=status, ended_at=_now(), reason=reason)).rowcount == 1
    if ended:
        action = {"stopped": f"{rollout['mode']}_stopped", "rolled_back": "canary_rolled_back",
                  "completed": "canary_completed"}[status]
        audit(conn, registry.mesh, actor, action, f"release:{rollout['release_id']}", reason, rollout=rollout["id"],
              step=rollout["step"])
        if status == "rolled_back":  # the approval was for this release as it behaved then: ask again
            conn.execute(promotion_requests.update().where(
                promotion_requests.c.mesh == registry.mesh,
                promotion_requests.c.release_id == rollout["release_id"],
                promotion_requests.c.status == "approved").values(status="rolled_back", decided_at=_now()))
    return ended


# --- serving ------------------------------------------------------------------------


def in_candidate(keys: Any, percent: float, salt: int) -> Any:
    """Rows whose key hashes below ``percent`` (of 100): the same rows at every step, more as it grows."""
    import numpy as np

    def bucket(key: Any) -> float:
        digest = hashlib.blake2b(f"{salt}:{key}".encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big") / 2**64 * 100

    return np.fromiter((bucket(k) < percent for k in keys), dtype=bool, count=len(keys))


def load_version(registry: Any, node: str, version: str) -> Any:
    """A registered version's model, from its artifact, verified against the registry's record."""
    row = registry.version(node, version)
    if row is None:
        raise RolloutError(f"{node}@{version} is not registered")
    return registry.artifacts.get(row["artifact_hash"], version)


def _losses(frame: Any, classification: bool) -> Any:
    labelled = frame["actual"].notna()
    if classification:
        return (frame.loc[labelled, "prediction"] != frame.loc[labelled, "actual"]).astype(float)
    return (frame.loc[labelled, "prediction"] - frame.loc[labelled, "actual"]).abs()


class TimedEstimator:
    """A model whose estimator's predict and predict_proba calls add up their time, and that keeps the first
    batch it was given (what the latency ratio is measured on)."""

    def __init__(self, model: Any):
        from dataclasses import replace

        self.estimator, self.seconds, self.batch = model.estimator, 0.0, None
        self.model = replace(model, estimator=self)

    def _timed(self, name: str, X: Any) -> Any:
        if self.batch is None:
            self.batch = X
        started = time.perf_counter()
        try:
            return getattr(self.estimator, name)(X)
        finally:
            self.seconds += time.perf_counter() - started

    def predict(self, X: Any) -> Any:
        return self._timed("predict", X)

    def predict_proba(self, X: Any) -> Any:
        return self._timed("predict_proba", X)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.estimator, name)


LATENCY_ROUNDS = 5
LATENCY_ROWS = 2000


def latency_ratio(production: Any, candidate: Any, batch: Any) -> float | None:
    """The candidate's predict time over Production's on the same rows, as the latency gate times a model (one
    thread, wall time minus the time spent waiting for a CPU, the fastest of several rounds), the two arms
    alternating which goes first: a ratio that does not move with the machine's load."""
    from depmesh.gates.timing import Timings, one_thread, time_call

    if batch is None:
        return None
    sample = batch.iloc[:LATENCY_ROWS] if hasattr(batch, "iloc") else batch[:LATENCY_ROWS]
    timings = {"production": Timings(), "candidate": Timings()}
    estimators = {"production": production, "candidate": candidate}
    with one_thread():
        for r in range(LATENCY_ROUNDS):
            for arm in (("production", "candidate") if r % 2 == 0 else ("candidate", "production")):
                time_call(lambda arm=arm: estimators[arm].predict(sample), timings[arm])
    fastest = {arm: min(t.own) for arm, t in timings.items()}
    return fastest["candidate"] / fastest["production"] if fastest["production"] > 0 else None


def serve(node: Any, inputs: dict[str, Any], builder: Any, ctx: Any, registry: Any,
          rollout: dict[str, Any]) -> tuple[Any, dict[str, Any]] | None:
    """The scores of ``node`` under the rollout, and what the step saw; None when no candidate feeds it."""
    import numpy as np
    import pandas as pd

    model = next((i for i in node.inputs if i in rollout["candidates"]), None)
    if model is None:
        return None
    arms = rollout["candidates"][model]
    key = rollout["plan"].key
    # each arm's estimator timed inside the builder: the models' own predict time, not the feature preparation
    # the second call finds warm
    production_timer = TimedEstimator(load_version(registry, model, arms["production"]))
    candidate_timer = TimedEstimator(load_version(registry, model, arms["candidate"]))
    production = builder({**inputs, model: production_timer.model}, ctx)
    error = None
    try:
        candidate = builder({**inputs, model: candidate_timer.model}, ctx)
    except Exception as exc:  # noqa: BLE001 - a candidate that cannot score is what the rollout measures
        candidate, error = None, f"{type(exc).__name__}: {exc}"
    production_s, candidate_s = production_timer.seconds, candidate_timer.seconds
    p = production.set_index(key)
    c = (candidate.set_index(key).reindex(p.index) if candidate is not None
         else pd.DataFrame({"prediction": np.nan}, index=p.index))
    failed = c["prediction"].isna().to_numpy() & p["prediction"].notna().to_numpy()
    chosen = (in_candidate(p.index, percent_now(rollout), rollout["id"]) if rollout["mode"] == "canary"
              else np.zeros(len(p), dtype=bool))
    served = chosen & ~failed  # a row the candidate could not score is served by Production (and counted)
    out = p.copy()
    if served.any():
        out.loc[served, c.columns.intersection(out.columns)] = c.loc[served, c.columns.intersection(out.columns)]
    classification = "probability" in p.columns
    diff = (c["prediction"] - p["prediction"]).abs()
    tolerance = rollout["plan"].disagreement_tolerance
    disagree = (diff > (0 if classification else tolerance))[~failed]
    std = float(p["prediction"].std()) or 1.0
    judged = ~failed if rollout["mode"] == "shadow" else served  # the rows the candidate is judged on
    prod_rows = p if rollout["mode"] == "shadow" else p[~chosen]
    cand_rows = c[judged].assign(actual=p.loc[judged, "actual"] if "actual" in p else np.nan)
    figures = {
        "mode": rollout["mode"], "percent": percent_now(rollout), "key": key,
        "production": _arm(prod_rows, classification, arms["production"], len(p), production_s),
        "candidate": _arm(cand_rows, classification, arms["candidate"], len(p), candidate_s,
                          errors=int((failed & (chosen if rollout["mode"] == "canary" else True)).sum()),
                          exposed=int(chosen.sum()) if rollout["mode"] == "canary" else len(p)),
        # Production's predictions on the very rows the candidate is judged on: the paired comparison the
        # thresholds use (two arms' different rows differ by chance as much as by model)
        "paired": _arm(p[judged], classification, arms["production"], len(p), 0.0),
        "shift": float(abs(c["prediction"][~failed].mean() - p["prediction"].mean()) / std) if (~failed).any()
        else None,
        "disagreement": float(disagree.mean()) if len(disagree) else None,
        "latency_ratio": (latency_ratio(production_timer.estimator, candidate_timer.estimator, production_timer.batch)
                          if candidate is not None else None),
        "error": error,
        "metric": "error_rate" if classification else "mae",
        "_losses": {"production": _losses(prod_rows, classification) if "actual" in prod_rows else [],
                    "candidate": _losses(cand_rows, classification) if "actual" in cand_rows else []},
    }
    return out.reset_index(), figures


def _arm(rows: Any, classification: bool, version: str, batch: int, seconds: float, errors: int = 0,
         exposed: int | None = None) -> dict[str, Any]:
    losses = _losses(rows, classification) if "actual" in rows else []
    return {"version": version, "rows": int(exposed if exposed is not None else len(rows)), "scored": int(len(rows)),
            "labelled": int(len(losses)), "loss_sum": float(sum(losses)) if len(losses) else 0.0,
            "metric": float(losses.mean()) if len(losses) else None, "errors": errors,
            "batch_rows": batch, "batch_seconds": seconds}


def _pack(losses: Any) -> bytes:
    import zlib

    import numpy as np

    return zlib.compress(np.asarray(losses, dtype="float32").tobytes())


def unpack_losses(payload: bytes) -> Any:
    import zlib

    import numpy as np

    return np.frombuffer(zlib.decompress(payload), dtype="float32")


def record(registry: Any, rollout: dict[str, Any], node: str, model: str, run_id: str | None,
           figures: dict[str, Any]) -> None:
    """The step's figures for one scoring run; each arm's per-row losses go to the registry's blobs (the A/B
    evidence bootstraps them)."""
    from depmesh.tracking.store import Tracking

    tracking = Tracking(registry)
    losses = figures.pop("_losses", {})
    figures["losses"] = {arm: tracking.put_blob("losses", _pack(values)) for arm, values in losses.items()}
    with registry.transaction() as conn:
        conn.execute(rollout_metrics.insert().values(rollout_id=rollout["id"], step=rollout["step"], node=node,
                                                     model=model, run_id=run_id, figures=json.dumps(figures),
                                                     at=_now()))


def step_figures(registry: Any, rollout_id: int, step: int | None = None) -> list[dict[str, Any]]:
    query = sa.select(rollout_metrics).where(rollout_metrics.c.rollout_id == rollout_id)
    if step is not None:
        query = query.where(rollout_metrics.c.step == step)
    with registry.engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(query.order_by(rollout_metrics.c.id))]
    for row in rows:
        row["figures"] = json.loads(row["figures"])
    return rows


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

"""A rollout's two arms in a scores step: which rows the candidate scores (the key's hash), both arms timed and scored, their per-step figures recorded in the registry."""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

import sqlalchemy as sa

from depmesh.registry.schema import rollout_metrics
from depmesh.rollout.serving import RolloutError, _now, percent_now


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

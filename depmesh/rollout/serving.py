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

import json
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from depmesh.catalog.spec import RolloutSpec, RolloutStep, RolloutThresholds
from depmesh.notify import audit
from depmesh.registry.schema import promotion_requests, rollouts
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



"""Incidents: a failure mode seen at a node's version, by a failed check or a
failed run. Recorded in the registry database once per (mode, node, version)
(seen again, it is counted), with a notification to the mode's owner team in
the same transaction (depmesh.notify delivers it)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from depmesh.failure_modes.catalogue import FailureMode
from depmesh.notify import enqueue
from depmesh.registry.schema import incidents


def record_incident(registry: Any, teams: Any, mode: FailureMode, *, node: str, version: str, source: str,
                    detector: str, run_id: str | None, summary: str) -> tuple[dict[str, Any], bool]:
    """The incident for (mode, node, version), and whether it is new (then its owner team is notified)."""
    key = (incidents.c.mesh == registry.mesh, incidents.c.mode == mode.id, incidents.c.node == node,
           incidents.c.version == version[:200])
    now = datetime.now(UTC)
    for _ in range(2):  # a concurrent first sighting wins the insert; this one then counts it
        try:
            with registry.transaction() as conn:
                found = conn.execute(sa.select(incidents.c.id).where(*key)).scalar()
                if found is not None:
                    conn.execute(incidents.update().where(incidents.c.id == found).values(
                        count=incidents.c.count + 1, last_at=now, run_id=run_id))
                    new = False
                else:
                    conn.execute(incidents.insert().values(
                        mesh=registry.mesh, mode=mode.id, node=node, version=version[:200], source=source,
                        detector=detector, run_id=run_id, owner=mode.owner, severity=mode.severity,
                        summary=summary[:2000], count=1, first_at=now, last_at=now))
                    found = conn.execute(sa.select(incidents.c.id).where(*key)).scalar()
                    enqueue(conn, registry.mesh, teams, mode.owner, "incident", {
                        "incident": found, "mode": mode.id, "title": mode.title, "severity": mode.severity,
                        "node": node, "version": version, "detected_by": detector, "run_id": run_id,
                        "summary": summary[:2000], "mitigation": mode.mitigation, "runbook": mode.runbook,
                        "rollback": mode.rollback})
                    new = True
            return incident(registry, found), new
        except sa.exc.IntegrityError:
            continue
    raise RuntimeError(f"incident {mode.id} at {node} {version} could not be recorded")


def incident(registry: Any, incident_id: int) -> dict[str, Any]:
    with registry.engine.connect() as conn:
        return dict(conn.execute(sa.select(incidents).where(incidents.c.id == incident_id)).one()._mapping)


def list_incidents(registry: Any, *, mode: str | None = None, node: str | None = None,
                   limit: int = 200) -> list[dict[str, Any]]:
    query = sa.select(incidents).where(incidents.c.mesh == registry.mesh)
    if mode:
        query = query.where(incidents.c.mode == mode)
    if node:
        query = query.where(incidents.c.node == node)
    with registry.engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(query.order_by(incidents.c.last_at.desc(),
                                                                      incidents.c.id.desc()).limit(limit))]


def record_check_failure(registry: Any, teams: Any, catalogue: Any, *, node: str, check: str, version: str,
                         run_id: str | None, summary: str) -> list[tuple[dict[str, Any], bool]]:
    """Incidents for every mode that ``node``'s failed ``check`` detects and whose match fits ``summary``."""
    return [record_incident(registry, teams, m, node=node, version=version, source="check",
                            detector=f"{node}:{check}", run_id=run_id, summary=summary)
            for m in catalogue.detecting(node, check, summary)]


def record_run_failure(registry: Any, teams: Any, catalogue: Any, *, node: str, version: str, error: str,
                       run_id: str | None) -> list[tuple[dict[str, Any], bool]]:
    """Incidents for every mode whose run-failure detector matches a failed step of ``node``."""
    return [record_incident(registry, teams, m, node=node, version=version, source="run_failure",
                            detector=f"{d.node}:{d.check}", run_id=run_id, summary=error.strip()[:2000])
            for m, d in catalogue.for_run_failure(node, error)]

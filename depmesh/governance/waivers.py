"""Waivers of known vulnerabilities: recorded in the registry (audited), read by the vulnerability rule."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from depmesh.deps.needs import canonical
from depmesh.registry.chain import audit
from depmesh.registry.schema import dependency_waivers as w
from depmesh.registry.store import check_actor


def waivers(registry: Any, conn: Any, release_id: int | None) -> set[tuple[str, str]]:
    """(advisory, canonical package) waived for the mesh, or for ``release_id``."""
    rows = conn.execute(sa.select(w.c.advisory, w.c.package).where(
        w.c.mesh == registry.mesh, sa.or_(w.c.release_id.is_(None), w.c.release_id == release_id))).all()
    return {(r.advisory, canonical(r.package)) for r in rows}


def waive(registry: Any, *, advisory: str, package: str, release_id: int | None, actor: str, reason: str) -> None:
    check_actor(actor, reason)
    with registry.transaction() as conn:
        conn.execute(w.insert().values(mesh=registry.mesh, advisory=advisory, package=canonical(package),
                                       release_id=release_id, actor=actor, reason=reason, at=datetime.now(UTC)))
        audit(conn, registry.mesh, actor, "vulnerability_waived",
              f"release:{release_id}" if release_id else "mesh", reason, advisory=advisory, package=package)

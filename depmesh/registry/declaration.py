"""The teams declaration the registry remembers for a mesh: recorded once, compared on every stage change, changed only by an owner under it (audited)."""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa

from depmesh.registry.chain import audit
from depmesh.registry.errors import (
    GovernanceMismatch,
    RegistryError,
    _now,
    _value_text,
    check_actor,
)
from depmesh.registry.schema import mesh_governance


class DeclarationRecord:
    """Part of depmesh.registry.store.Registry (a mixin: self is the Registry)."""

    def check_declaration(self, conn, actor: str, teams: Any = None, record: bool = True) -> None:
        """The mesh's teams declaration, as the registry remembers it: the first one is recorded (audited); a
        stage change made without it, or under a different one, is refused until an owner adopts the change
        (depmesh teams adopt). Whatever catalog file a command was pointed at."""
        row = self._governance(conn)
        teams = teams if teams is not None else self.teams
        declared = teams.sha256 if teams is not None else None
        if row is None:
            if declared and record:
                self._record_governance(conn, actor, "governance_declared", "first declaration of the mesh's teams",
                                        teams)
            return
        if row["teams_sha256"] == declared:
            return
        when = f"recorded {_value_text(row['declared_at'])} by {row['declared_by']}"
        if declared is None:
            raise GovernanceMismatch(
                f"mesh {self.mesh} declared its teams (teams.yaml {row['teams_sha256'][:12]}, {when}), but this command "
                "runs without a teams declaration (no teams.yaml beside its catalog), so it may not change stages: "
                "run it with the mesh's catalog and teams.yaml; an owner removes the declaration with depmesh teams "
                "adopt --remove --reason TEXT (audited)")
        recorded = row["teams_sha256"][:12] if row["teams_sha256"] else "none: governance was removed"
        raise GovernanceMismatch(
            f"the teams declaration used here ({teams.path}, {declared[:12]}) is not the one the registry "
            f"recorded for mesh {self.mesh} ({recorded}, {when}): an owner of the recorded teams adopts a changed "
            "declaration with depmesh teams adopt --reason TEXT (audited)")

    def _record_governance(self, conn, actor: str, action: str, reason: str, teams: Any) -> None:
        policy = teams.policy() if teams is not None else {"teams": [], "signatures": "none"}
        values = dict(teams_sha256=teams.sha256 if teams is not None else None,
                      policy=json.dumps(policy, sort_keys=True), declared_by=actor, declared_at=_now())
        if self._governance(conn) is not None:
            conn.execute(mesh_governance.update().where(mesh_governance.c.mesh == self.mesh).values(**values))
        else:
            conn.execute(mesh_governance.insert().values(mesh=self.mesh, **values))
        audit(conn, self.mesh, actor, action, f"mesh:{self.mesh}", reason, teams_sha256=values["teams_sha256"],
              policy=policy)

    def _governance(self, conn) -> dict[str, Any] | None:
        row = conn.execute(sa.select(mesh_governance).where(mesh_governance.c.mesh == self.mesh)).first()
        return None if row is None else {**dict(row._mapping), "policy": json.loads(row.policy)}

    def governance(self) -> dict[str, Any] | None:
        """What the registry remembers of the mesh's teams declaration, or None."""
        with self.engine.connect() as conn:
            return self._governance(conn)

    def adopt_governance(self, *, actor: str, reason: str, remove: bool = False) -> dict[str, Any]:
        """Record this object's teams declaration (or, ``remove``, none) as the mesh's. Once one is recorded,
        only an owner under it may change it; audited either way."""
        from depmesh.teams import ActorError

        check_actor(actor, reason)
        teams = None if remove else self.teams
        if not remove and teams is None:
            raise RegistryError("there is no teams declaration to adopt (no teams.yaml beside the catalog); "
                                "to remove the recorded one, use --remove")
        with self.transaction() as conn:
            self._lock(conn)
            current = self._governance(conn)
            if current is not None and current["teams_sha256"] is not None \
                    and actor not in current["policy"].get("owners", []):
                raise ActorError(f"{actor!r} is not an owner under the recorded teams declaration of mesh "
                                 f"{self.mesh} ({', '.join(current['policy'].get('owners', [])) or 'no owners'} "
                                 "may change it)")
            if current is not None and current["teams_sha256"] == (teams.sha256 if teams else None):
                return current
            action = "governance_removed" if remove else (
                "governance_declared" if current is None else "governance_changed")
            self._record_governance(conn, actor, action, reason, teams)
        return self.governance() or {}

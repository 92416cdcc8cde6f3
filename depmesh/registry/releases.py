"""Releases: recording a set of versions that belong together, reading them, promoting one whole."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from depmesh.registry.entities import Release
from depmesh.registry.errors import (
    SYSTEM_ACTOR,
    RegistryError,
    _fault,
    _now,
    check_actor,
    check_release_id,
)
from depmesh.registry.schema import (
    mesh_state,
    model_versions,
    release_members,
    releases,
)


class ReleaseRecords:
    """Part of depmesh.registry.store.Registry (a mixin: self is the Registry)."""

    # -- releases ----------------------------------------------------------------
    def create_release(self, members: Mapping[str, str], *, run_id: str | None, actor: str = SYSTEM_ACTOR,
                       reason: str = "every gate passed") -> int:
        """Record a release (node -> version) and move its versions to Staging; its id."""
        return self.record_release(members, run_id=run_id, actor=actor, reason=reason)["id"]

    def record_release(self, members: Mapping[str, str], *, run_id: str | None, actor: str = SYSTEM_ACTOR,
                       reason: str = "every gate passed") -> dict[str, Any]:
        """Record a release and move its Development or Archived versions to
        Staging. A set identical to an existing release of this mesh is not a
        new release: that release is returned and nothing moves.
        Returns {id, created, status, moved: [node@version moved to Staging]}."""
        if not members:
            raise RegistryError("a release needs at least one model version")
        members = dict(sorted(members.items()))
        with self.transaction() as conn:
            state = self._lock(conn)
            stages = {}
            for node, version in members.items():
                stages[node] = conn.execute(sa.select(model_versions.c.stage)
                                            .where(self._where_version(node, version))).scalar()
                if stages[node] is None:
                    raise RegistryError(f"release member {node}@{version} is not registered in mesh {self.mesh}")
            same = self._identical_release(conn, members)
            if same is not None:
                return {"id": same[0], "created": False, "status": same[1], "moved": []}
            self.policy.before_release(self, conn, members, self.member_requirements(conn, members))
            release_id = conn.execute(releases.insert().values(
                mesh=self.mesh, status="Staging", run_id=run_id, created_at=_now())).inserted_primary_key[0]
            moved = []
            for node, version in members.items():
                conn.execute(release_members.insert().values(release_id=release_id, node=node, version=version))
                if stages[node] in ("Development", "Archived"):
                    self._set_stage(conn, node, version, "Staging", actor, f"{reason} (release {release_id})",
                                    run_id, release_id)
                    moved.append(f"{node}@{version}")
            self._bump(conn, state, state.production_release_id)
        return {"id": release_id, "created": True, "status": "Staging", "moved": moved}

    def _identical_release(self, conn, members: Mapping[str, str]) -> tuple[int, str] | None:
        """The newest release of this mesh with exactly these members: among
        the releases holding every pair, one with no other member."""
        holding = (sa.select(release_members.c.release_id)
                   .where(sa.tuple_(release_members.c.node, release_members.c.version).in_(list(members.items())))
                   .group_by(release_members.c.release_id)
                   .having(sa.func.count() == len(members)))
        sizes = (sa.select(release_members.c.release_id, sa.func.count().label("size"))
                 .where(release_members.c.release_id.in_(holding))
                 .group_by(release_members.c.release_id).subquery())
        row = conn.execute(
            sa.select(releases.c.id, releases.c.status)
            .join(sizes, sizes.c.release_id == releases.c.id)
            .where(releases.c.mesh == self.mesh, sizes.c.size == len(members))
            .order_by(releases.c.id.desc()).limit(1)).first()
        return (row.id, row.status) if row else None

    def state(self) -> dict[str, Any]:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(mesh_state).where(mesh_state.c.mesh == self.mesh)).first()
        if row is None:
            return {"production_release_id": None, "revision": 0}
        return {"production_release_id": row.production_release_id, "revision": row.revision}

    def _release(self, conn, release_id: int) -> Release:
        check_release_id(release_id)
        row = conn.execute(sa.select(releases).where(releases.c.id == release_id, releases.c.mesh == self.mesh)).first()
        if row is None:
            raise RegistryError(f"no release {release_id} in mesh {self.mesh} (see: depmesh release list)")
        members = conn.execute(sa.select(release_members.c.node, release_members.c.version)
                               .where(release_members.c.release_id == release_id)
                               .order_by(release_members.c.node)).all()
        out = Release(row._mapping)
        out["members"] = {m.node: m.version for m in members}
        return out

    def release(self, release_id: int) -> Release:
        with self.engine.connect() as conn:
            return self._release(conn, release_id)

    def release_count(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(releases)
                                    .where(releases.c.mesh == self.mesh)).scalar_one())

    def releases(self) -> list[Release]:
        with self.engine.connect() as conn:
            ids = conn.execute(sa.select(releases.c.id).where(releases.c.mesh == self.mesh)
                               .order_by(releases.c.id)).scalars().all()
            return [self._release(conn, i) for i in ids]

    def _make_production(self, conn, members: Mapping[str, str], actor: str, reason: str, release_id: int) -> None:
        first = True
        for node, version in sorted(members.items()):
            current = conn.execute(sa.select(model_versions.c.version).where(
                model_versions.c.mesh == self.mesh, model_versions.c.node == node,
                model_versions.c.stage == "Production")).scalar()
            if current is not None and current != version:
                self._set_stage(conn, node, current, "Archived", actor, f"replaced by {version}: {reason}",
                                release_id=release_id)
            self._set_stage(conn, node, version, "Production", actor, reason, release_id=release_id)
            if first:
                _fault("promote:after_first_member")
                first = False

    def _set_status(self, conn, release_id: int, status: str, **values: Any) -> None:
        conn.execute(releases.update().where(releases.c.id == release_id).values(status=status, **values))

    def _refresh_status(self, conn, release_id: int | None) -> None:
        """The Production release says Production while every member is, else PartlyRolledBack."""
        if release_id is None:
            return
        release = self._release(conn, release_id)
        production = self._production(conn)
        whole = all(production.get(node) == version for node, version in release["members"].items())
        self._set_status(conn, release_id, "Production" if whole else "PartlyRolledBack")

    def promote(self, release_id: int, *, actor: str, reason: str, expected_revision: int | None = None) -> dict:
        """Make every version of the release Production at once, archive the
        versions they replace; one audit entry per model. Atomic. A release
        that was partly rolled back can be promoted again."""
        check_actor(actor, reason)
        with self.engine.connect() as conn:  # before anything else is looked at (again under the lock below)
            self.check_declaration(conn, actor, record=False)
        release = self.release(release_id)
        if release["status"] == "Production":
            raise RegistryError(f"release {release_id} is already Production")
        self._verify(release["members"], f"promote release {release_id}")
        with self.transaction() as conn:
            state = self._lock(conn, expected_revision)
            release = self._release(conn, release_id)
            if release["status"] == "Production":
                raise RegistryError(f"release {release_id} is already Production")
            self.check_declaration(conn, actor)
            decision = self.policy.before_promote(self, conn, release_id, release["members"],
                                                  self.member_requirements(conn, release["members"]), actor)
            previous = state.production_release_id
            self._make_production(conn, release["members"], actor, reason, release_id)
            conn.execute(model_versions.update().where(
                model_versions.c.mesh == self.mesh,
                sa.tuple_(model_versions.c.node, model_versions.c.version).in_(list(release["members"].items())))
                .values(rejected=False))
            if previous is not None and previous != release_id:
                self._set_status(conn, previous, "Superseded")
                self._set_status(conn, release_id, "Production", promoted_at=_now(), replaced_release_id=previous)
            else:
                self._set_status(conn, release_id, "Production", promoted_at=_now())
            self.policy.after_promote(self, conn, release_id, decision)
            self._bump(conn, state, release_id)
        return self.release(release_id)

    def member_requirements(self, conn, members: Mapping[str, str]) -> dict[str, Any]:
        """node -> the recorded requirements of its member version (members registered before 0007 have none)."""
        rows = conn.execute(sa.select(model_versions.c.node, model_versions.c.requirements).where(
            model_versions.c.mesh == self.mesh,
            sa.tuple_(model_versions.c.node, model_versions.c.version).in_(list(members.items())))).all()
        return {r.node: json.loads(r.requirements) for r in rows if r.requirements}

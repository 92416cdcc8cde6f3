"""Rollbacks: the whole Production release back to the one it replaced, or one model with the models trained against it."""

from __future__ import annotations

import json

import sqlalchemy as sa

from depmesh.registry.errors import (
    PromotionConflict,
    RegistryError,
    RollbackRefused,
    check_actor,
)
from depmesh.registry.schema import (
    model_versions,
)


class Rollbacks:
    """Part of depmesh.registry.store.Registry (a mixin: self is the Registry)."""

    def rollback(self, *, actor: str, reason: str, expected_revision: int | None = None) -> dict:
        """Make the release the current one replaced Production again, atomically."""
        check_actor(actor, reason)
        with self.engine.connect() as conn:  # before anything else is looked at (again under the lock below)
            self.check_declaration(conn, actor, record=False)
        self.policy.before_rollback(self, actor)
        current_id = self.state()["production_release_id"]
        if current_id is None:
            raise RegistryError("no release is in Production, so there is nothing to roll back")
        previous_id = self.release(current_id)["replaced_release_id"]
        if previous_id is None:
            raise RegistryError(f"release {current_id} replaced no earlier release: there is nothing to roll back to")
        self._verify(self.release(previous_id)["members"], f"roll back to release {previous_id}")
        with self.transaction() as conn:
            state = self._lock(conn, expected_revision)
            if state.production_release_id != current_id:
                raise PromotionConflict(f"Production moved to release {state.production_release_id} while the "
                                        "rollback was decided; nothing was changed here")
            self.check_declaration(conn, actor)
            self.policy.after_rollback(self, conn, current_id)
            current, previous = self._release(conn, current_id), self._release(conn, previous_id)
            self._make_production(conn, previous["members"], actor, f"rollback of release {current_id}: {reason}",
                                  previous_id)
            left = [(n, v) for n, v in current["members"].items() if previous["members"].get(n) != v]
            if left:
                conn.execute(model_versions.update().where(
                    model_versions.c.mesh == self.mesh,
                    sa.tuple_(model_versions.c.node, model_versions.c.version).in_(left)).values(rejected=True))
            self._set_status(conn, current_id, "RolledBack")
            self._refresh_status(conn, previous_id)
            self._bump(conn, state, previous_id)
        return self.release(previous_id)

    def _previous_production(self, conn, pointer: int | None, node: str, current: str) -> tuple[str, int] | None:
        """The version of ``node`` to roll back to, and the release it comes
        from: walking back from the Production release through the releases
        each one replaced, the first version that is not the current one and
        was never rejected by a rollback. Rolled-back releases are not on that path."""
        seen: set[int] = set()
        release_id = pointer
        while release_id is not None and release_id not in seen:
            seen.add(release_id)
            release = self._release(conn, release_id)
            version = release["members"].get(node)
            if release["status"] != "RolledBack" and version is not None and version != current:
                rejected = conn.execute(sa.select(model_versions.c.rejected)
                                        .where(self._where_version(node, version))).scalar()
                if not rejected:
                    return version, release_id
            release_id = release["replaced_release_id"]
        return None

    def _dependents(self, conn, node: str, version: str) -> list[str]:
        rows = conn.execute(sa.select(model_versions.c.node, model_versions.c.upstream_models).where(
            model_versions.c.mesh == self.mesh, model_versions.c.stage == "Production")).all()
        return sorted(r.node for r in rows if json.loads(r.upstream_models).get(node) == version)

    def rollback_set(self, node: str) -> list[str]:
        """The Production models trained against ``node``'s Production version:
        they must move with it."""
        with self.engine.connect() as conn:
            version = self._production(conn).get(node)
            return self._dependents(conn, node, version) if version else []

    def rollback_model(self, node: str, *, actor: str, reason: str, with_dependents: bool = False,
                       expected_revision: int | None = None) -> dict[str, tuple[str, str]]:
        """Roll one model back to its previous Production version. Refused when
        Production models downstream were trained against the version being
        removed (unless ``with_dependents`` rolls them back together), and when
        a version it would restore was trained against upstream versions that
        are not Production. Returns node -> (from version, to version)."""
        check_actor(actor, reason)
        self.policy.before_rollback(self, actor)
        with self.transaction() as conn:
            state = self._lock(conn, expected_revision)
            self.check_declaration(conn, actor)
            production = self._production(conn)
            version = production.get(node)
            if version is None:
                raise RegistryError(f"{node} has no Production version to roll back")
            dependents = self._dependents(conn, node, version)
            if dependents and not with_dependents:
                raise RollbackRefused(
                    f"refused: {', '.join(dependents)} in Production {'was' if len(dependents) == 1 else 'were'} "
                    f"trained against {node}@{version}; roll back the set together with --with-dependents "
                    f"(rollback set: {', '.join([node, *dependents])})", [node, *dependents])
            plan: dict[str, tuple[str, str, int]] = {}
            for name in [node, *dependents]:
                found = self._previous_production(conn, state.production_release_id, name, production[name])
                if found is None:
                    raise RegistryError(f"{name} has never had another Production version to roll back to "
                                        "(rolled-back and rejected versions do not count)")
                plan[name] = (production[name], *found)
            self._check_upstream(conn, production, plan)
            self._verify({name: target for name, (_, target, _) in plan.items()}, "roll back", conn)
            moves: dict[str, tuple[str, str]] = {}
            for name, (current, target, source) in plan.items():
                self._set_stage(conn, name, current, "Archived", actor, f"rolled back: {reason}")
                conn.execute(model_versions.update().where(self._where_version(name, current)).values(rejected=True))
                self._set_stage(conn, name, target, "Production", actor,
                                f"rollback of {current} (to the version of release {source}): {reason}",
                                release_id=source)
                moves[name] = (current, target)
            self._refresh_status(conn, state.production_release_id)
            self._bump(conn, state, state.production_release_id)
        return moves

    def _check_upstream(self, conn, production: dict[str, str], plan: dict[str, tuple[str, str, int]]) -> None:
        """Every version a rollback restores must have been trained against the
        upstream versions that are Production after it."""
        after = {**production, **{name: target for name, (_, target, _) in plan.items()}}
        mismatches, sources = [], set()
        for name, (_, target, source) in plan.items():
            upstream = json.loads(conn.execute(sa.select(model_versions.c.upstream_models)
                                               .where(self._where_version(name, target))).scalar() or "{}")
            for up, up_version in sorted(upstream.items()):
                if after.get(up) != up_version:
                    stage = conn.execute(sa.select(model_versions.c.stage)
                                         .where(self._where_version(up, up_version))).scalar()
                    mismatches.append(f"{name}@{target} was trained against {up}@{up_version} ({stage or 'unknown'}), "
                                      f"but {up}@{after.get(up) or 'none'} would be Production")
                    sources.add(source)
        if mismatches:
            hint = " or ".join(f"`depmesh release promote {s}`" for s in sorted(sources))
            raise RollbackRefused(
                "refused: " + "; ".join(mismatches) + f". Move the compatible set together: {hint} (the release "
                "those versions came from), or roll back the upstream model with --with-dependents",
                sorted(plan))

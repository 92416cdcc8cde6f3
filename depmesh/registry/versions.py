"""Model versions: registering, stage transitions, the recipe a Staging version needs, history, artifact checks."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from depmesh.registry.chain import append
from depmesh.registry.entities import ModelVersion, StageChange
from depmesh.registry.errors import (
    SYSTEM_ACTOR,
    RegistryError,
    _decode,
    _now,
    check_actor,
)
from depmesh.registry.schema import (
    STAGES,
    blobs,
    model_versions,
    stage_transitions,
)


class VersionRecords:
    """Part of depmesh.registry.store.Registry (a mixin: self is the Registry)."""

    # -- versions ----------------------------------------------------------------
    def _where_version(self, node: str, version: str):
        return sa.and_(model_versions.c.mesh == self.mesh, model_versions.c.node == node,
                       model_versions.c.version == version)

    def register(self, *, node: str, version: str, artifact_hash: str, artifact_path: str, metrics: Mapping,
                 gates: Mapping, run_id: str, input_versions: Mapping, upstream_models: Mapping, code_version: str,
                 library_versions: Mapping, card: str, recipe: Mapping | None = None,
                 requirements: Mapping | None = None) -> bool:
        """Record a new model version in Development. Idempotent: a version
        already registered (same content hash) keeps its stage and history and
        returns False; if it was rebuilt into other bytes (an artifact written
        before artifacts were deterministic), the record takes the new hash,
        which is also what the new materialization records. ``recipe``: what
        rebuilds it (depmesh.tracking.recipe); a version registered again
        gets the recipe if it had none or an incomplete one."""
        recipe_json = json.dumps(dict(recipe), sort_keys=True, default=str) if recipe is not None else None
        needs_json = json.dumps(dict(requirements), sort_keys=True) if requirements is not None else None
        with self.transaction() as conn:
            self._lock(conn)
            exists = conn.execute(sa.select(model_versions.c.id, model_versions.c.artifact_hash, model_versions.c.recipe,
                                            model_versions.c.input_versions, model_versions.c.requirements)
                                  .where(self._where_version(node, version))).first()
            if exists:
                if exists.artifact_hash != artifact_hash:
                    conn.execute(model_versions.update().where(model_versions.c.id == exists.id)
                                 .values(artifact_hash=artifact_hash, artifact_path=artifact_path))
                if recipe_json is not None and self._recipe_problems(
                        conn, exists.recipe, json.loads(exists.input_versions)):
                    conn.execute(model_versions.update().where(model_versions.c.id == exists.id)
                                 .values(recipe=recipe_json))
                if needs_json is not None and exists.requirements is None:
                    conn.execute(model_versions.update().where(model_versions.c.id == exists.id)
                                 .values(requirements=needs_json))
                return False
            conn.execute(model_versions.insert().values(
                mesh=self.mesh, node=node, version=version, stage="Development", artifact_hash=artifact_hash,
                artifact_path=artifact_path, metrics=json.dumps(dict(metrics)), gates=json.dumps(dict(gates), default=str),
                run_id=run_id, input_versions=json.dumps(dict(input_versions)),
                upstream_models=json.dumps(dict(upstream_models)), code_version=code_version,
                library_versions=json.dumps(dict(library_versions)), card=card, recipe=recipe_json,
                requirements=needs_json, created_at=_now()))
            self._log(conn, node, version, None, "Development", SYSTEM_ACTOR, f"trained in run {run_id}", run_id)
        return True

    def _log(self, conn, node, version, from_stage, to_stage, actor, reason, run_id=None, release_id=None) -> None:
        check_actor(actor, reason)
        append(conn, "stages", dict(mesh=self.mesh, node=node, version=version, from_stage=from_stage,
                                    to_stage=to_stage, actor=actor, reason=reason, run_id=run_id,
                                    release_id=release_id, at=_now()))

    def _set_stage(self, conn, node: str, version: str, stage: str, actor: str, reason: str,
                   run_id: str | None = None, release_id: int | None = None) -> bool:
        """Move one version (inside a locked transaction); True if it moved."""
        if stage not in STAGES:
            raise RegistryError(f"unknown stage {stage!r} (known: {', '.join(STAGES)})")
        row = conn.execute(sa.select(model_versions.c.stage).where(self._where_version(node, version))).first()
        if row is None:
            raise RegistryError(f"{node} has no registered version {version} in mesh {self.mesh}")
        if row.stage == stage:
            return False
        if stage == "Staging":
            self._require_recipe(conn, node, version)
        conn.execute(model_versions.update().where(self._where_version(node, version)).values(stage=stage))
        self._log(conn, node, version, row.stage, stage, actor, reason, run_id, release_id)
        return True

    def _recipe_problems(self, conn, recipe_json: str | None, input_versions: Mapping) -> list[str]:
        from depmesh.tracking.recipe import blob_hashes, recipe_problems
        from depmesh.tracking.snapshots import SnapshotStore

        recipe = json.loads(recipe_json) if recipe_json else None
        wanted = blob_hashes(recipe or {})
        stored = set(conn.execute(sa.select(blobs.c.sha256).where(blobs.c.sha256.in_(wanted))).scalars()) if wanted \
            else set()
        snapshots = SnapshotStore.beside(self.artifacts.root) if self.artifacts is not None else None
        return recipe_problems(recipe, input_versions, stored, snapshots, self.artifacts)

    def recipe_problems(self, node: str, version: str) -> list[str]:
        """What is missing from the recipe of ``node@version`` (empty: complete)."""
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(model_versions.c.recipe, model_versions.c.input_versions)
                               .where(self._where_version(node, version))).first()
            if row is None:
                raise RegistryError(f"{node} has no registered version {version} in mesh {self.mesh}")
            return self._recipe_problems(conn, row.recipe, json.loads(row.input_versions))

    def _require_recipe(self, conn, node: str, version: str) -> None:
        row = conn.execute(sa.select(model_versions.c.recipe, model_versions.c.input_versions)
                           .where(self._where_version(node, version))).first()
        problems = self._recipe_problems(conn, row.recipe, json.loads(row.input_versions))
        if problems:
            raise RegistryError(f"refused to move {node}@{version} to Staging: its reproducibility recipe is "
                                "incomplete: " + "; ".join(problems) + ". Nothing was moved. Retrain it from a git "
                                "checkout with its lock file (depmesh run) to record a complete recipe")

    def transition(self, node: str, version: str, stage: str, *, actor: str, reason: str) -> None:
        """Move one version to a stage by hand (Production goes through releases)."""
        check_actor(actor, reason)
        if stage == "Production":
            raise RegistryError("Production is reached by promoting a release: depmesh release promote ID")
        with self.transaction() as conn:
            state = self._lock(conn)
            self.check_declaration(conn, actor)
            current = conn.execute(sa.select(model_versions.c.stage).where(self._where_version(node, version))).scalar()
            if current == "Production":
                raise RegistryError(f"{node}@{version} is Production: it leaves Production when another release is "
                                    "promoted or by a rollback (depmesh release rollback)")
            if self._set_stage(conn, node, version, stage, actor, reason):
                self._bump(conn, state, state.production_release_id)

    def _version(self, conn, node: str, version: str) -> dict[str, Any] | None:
        row = conn.execute(sa.select(model_versions).where(self._where_version(node, version))).first()
        return _decode(row) if row else None

    def version(self, node: str, version: str) -> ModelVersion | None:
        with self.engine.connect() as conn:
            return self._version(conn, node, version)

    def _production(self, conn) -> dict[str, str]:
        rows = conn.execute(sa.select(model_versions.c.node, model_versions.c.version).where(
            model_versions.c.mesh == self.mesh, model_versions.c.stage == "Production")).all()
        return {r.node: r.version for r in rows}

    def production(self) -> dict[str, str]:
        with self.engine.connect() as conn:
            return self._production(conn)

    def production_metrics(self, node: str) -> dict[str, float] | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(model_versions.c.metrics).where(
                model_versions.c.mesh == self.mesh, model_versions.c.node == node,
                model_versions.c.stage == "Production")).first()
        return json.loads(row.metrics) if row else None

    def history(self, node: str | None = None, after_id: int | None = None) -> list[StageChange]:
        """The audit trail of one model (or of the whole mesh), oldest first;
        with ``after_id``, only the entries written after that one."""
        query = sa.select(stage_transitions).where(stage_transitions.c.mesh == self.mesh)
        if node is not None:
            query = query.where(stage_transitions.c.node == node)
        if after_id is not None:
            query = query.where(stage_transitions.c.id > after_id)
        with self.engine.connect() as conn:
            rows = conn.execute(query.order_by(stage_transitions.c.id)).all()
        return [StageChange(r._mapping) for r in rows]

    def last_transition_id(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.coalesce(sa.func.max(stage_transitions.c.id), 0))
                                    .where(stage_transitions.c.mesh == self.mesh)).scalar_one())

    def versions(self, node: str | None = None) -> list[ModelVersion]:
        query = sa.select(model_versions).where(model_versions.c.mesh == self.mesh)
        if node is not None:
            query = query.where(model_versions.c.node == node)
        with self.engine.connect() as conn:
            rows = conn.execute(query.order_by(model_versions.c.id)).all()
        return [_decode(r) for r in rows]

    # -- artifacts -----------------------------------------------------------------
    def artifact_problems(self, members: Mapping[str, str], conn=None) -> list[str]:
        """For each member: why its artifact cannot be trusted (missing, or not
        the recorded bytes); empty when every one verifies. ``conn``: read
        inside that (locked) transaction."""
        from depmesh.artifacts import ArtifactIntegrityError

        if self.artifacts is None:
            return ["no artifact store was given to verify the members' artifacts against"]
        problems = []
        for node, version in sorted(members.items()):
            info = self.version(node, version) if conn is None else self._version(conn, node, version)
            if info is None:
                problems.append(f"{node}@{version} is not registered")
                continue
            try:
                self.artifacts.verify(info["artifact_hash"], version, node)
            except ArtifactIntegrityError as exc:
                problems.append(f"{node}@{version}: {exc}")
        return problems

    def _verify(self, members: Mapping[str, str], doing: str, conn=None) -> None:
        problems = self.artifact_problems(members, conn)
        if problems:
            raise RegistryError(f"refused to {doing}: nothing was moved, because " + "; ".join(problems))

"""The model registry: versions, stages, releases and an append-only audit
trail, in SQLite (under DAGSTER_HOME) or PostgreSQL (DAGSTER_POSTGRES_URL).

One registry holds several meshes; a ``Registry`` object speaks for one (the
catalog's ``mesh:`` name): its versions, its releases, its Production pointer.

Guarantees (on both databases):
- Every stage change (registering a version, recording a release, promote,
  rollback, per-node rollback, a manual transition) is one transaction that
  first locks the mesh's ``mesh_state`` row, so stage changes are serialized:
  each reads the stages it changes under the lock, and the audit trail is a
  chain (each row's from_stage is the previous row's to_stage).
- Every stage change bumps the mesh's revision; an operation given the
  revision it decided on (``expected_revision``) is refused if another change
  came first (compare-and-swap). A process that dies half-way commits nothing.
- At most one Production version per model (a partial unique index).
- Nothing becomes Production (promote, rollback) unless its artifact exists
  and matches the hash recorded for its version.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from depmesh.keys import POSTGRES_ENV
from depmesh.registry.policy import UNGOVERNED, StagePolicy
from depmesh.registry.schema import (
    ACTOR_MAX,
    STAGES,
    blobs,
    mesh_state,
    model_versions,
    release_members,
    releases,
    stage_transitions,
)

SYSTEM_ACTOR = "depmesh"
MIGRATION_LOCK_KEY = 0x64_65_70_6D  # "depm": the PostgreSQL advisory lock migrations take
FAULT_ENV = "DEPMESH_FAULT"  # test-only: name a fault point to die at (SIGKILL), e.g. promote:after_first_member


class RegistryError(ValueError):
    """A registry operation that cannot be done; the message says why."""


class PromotionConflict(RegistryError):
    pass


class RegistryReadOnly(RegistryError):
    """The registry's database cannot be written."""


class GovernanceMismatch(RegistryError):
    """A stage change made without the teams declaration the registry recorded for the mesh."""


def _value_text(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M UTC") if isinstance(value, datetime) else str(value)


class ApprovalRequired(RegistryError):
    """A promotion without the approvals the mesh's teams require."""


class RollbackRefused(RegistryError):
    def __init__(self, message: str, rollback_set: list[str]):
        super().__init__(message)
        self.rollback_set = rollback_set


DEFAULT_MESH = "default"
MAX_ID = 2**63 - 1  # the largest INTEGER SQLite and PostgreSQL's BIGINT hold


def _now() -> datetime:
    return datetime.now(UTC)


def _fault(point: str) -> None:
    if os.environ.get(FAULT_ENV) == point:
        os.kill(os.getpid(), signal.SIGKILL)


READ_ONLY_MARKERS = ("readonly database", "read-only", "read only", "unable to open database file",
                     "permission denied")


def is_read_only_error(exc: BaseException) -> bool:
    """A database (or its folder) that cannot be written: not an outage, so not worth retrying."""
    text = str(exc).lower()
    return isinstance(exc, (sa.exc.OperationalError, RegistryReadOnly)) and any(m in text for m in READ_ONLY_MARKERS)


def is_transient_database_error(exc: BaseException) -> bool:
    """True for a lost or refused database connection (a server restart, a
    network blip, SQLite's lock timeout): worth retrying, unlike a bug or a
    database that cannot be written."""
    seen: set[int] = set()
    error: BaseException | None = exc
    while error is not None and id(error) not in seen:
        if is_read_only_error(error):
            return False
        seen.add(id(error))
        if isinstance(error, sa.exc.OperationalError):
            return True
        if isinstance(error, sa.exc.DBAPIError) and error.connection_invalidated:
            return True
        if type(error).__name__ in ("OperationalError", "DagsterPostgresException", "InterfaceError",
                                    "LostDatabaseConnection"):
            return True  # psycopg2's own errors, and dagster-postgres giving up on its connection retries
        error = error.__cause__ or error.__context__
    return False


def default_url(home: Path) -> str:
    """PostgreSQL when DAGSTER_POSTGRES_URL is set (the same one setting that
    moves Dagster's storage), else a SQLite file beside the instance."""
    url = os.environ.get(POSTGRES_ENV)
    if url:
        return url
    return f"sqlite:///{Path(home).resolve() / 'depmesh_registry.db'}"


def check_actor(actor: Any, reason: Any) -> None:
    """Actor and reason of a stage change: present, UTF-8 text, the actor
    within the column's limit (the same limit on SQLite as on PostgreSQL)."""
    if not actor or not str(actor).strip() or not reason or not str(reason).strip():
        raise RegistryError("a stage transition needs an actor and a reason (--actor NAME --reason TEXT)")
    for what, value in (("actor", actor), ("reason", reason)):
        try:
            str(value).encode("utf-8")
        except UnicodeEncodeError:
            raise RegistryError(f"the {what} is not valid UTF-8 text: {str(value).encode('utf-8', 'replace')!r}") from None
    if len(str(actor)) > ACTOR_MAX:
        raise RegistryError(f"the actor is {len(str(actor))} characters long; the registry keeps at most {ACTOR_MAX}")


def check_release_id(release_id: Any) -> int:
    if isinstance(release_id, bool) or not isinstance(release_id, int) or not 0 < release_id <= MAX_ID:
        raise RegistryError(f"{release_id!r} is not a release id (a whole number from 1 to {MAX_ID}; "
                            "see: depmesh release list)")
    return release_id


class Registry:
    def __init__(self, url: str, mesh: str = DEFAULT_MESH, artifacts: Any = None, policy: StagePolicy | None = None):
        """``mesh``: whose versions and releases this object reads and
        changes. ``artifacts``: the ArtifactStore promotions and rollbacks
        verify members against (refused without one). ``policy``: the mesh's
        stage-change policy (depmesh.registry.policy); every path opens the
        registry through depmesh.governance.open_governed, which supplies it."""
        if not mesh or len(mesh) > 200:
            raise RegistryError(f"a mesh name of 1 to 200 characters is needed, got {mesh!r}")
        self.url = url
        self.mesh = mesh
        self.artifacts = artifacts
        self.policy: StagePolicy = policy or UNGOVERNED
        # pre-ping: a pooled connection that a database restart closed is
        # replaced before use instead of failing the next statement
        kwargs: dict[str, Any] = {"pool_pre_ping": True}
        if url.startswith("sqlite"):
            kwargs["connect_args"] = {"timeout": 60}
        self.engine = sa.create_engine(url, **kwargs)
        if url.startswith("sqlite"):
            @sa.event.listens_for(self.engine, "connect")
            def _sqlite(dbapi_conn, _record):  # noqa: ANN001
                dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
                dbapi_conn.execute("PRAGMA foreign_keys=ON")

            @sa.event.listens_for(self.engine, "begin")
            def _begin(conn):  # noqa: ANN001
                conn.exec_driver_sql("BEGIN IMMEDIATE")  # take the write lock up front

    def governed_by(self, policy: StagePolicy) -> Registry:
        """The same database and mesh under ``policy`` (shares the engine)."""
        other = object.__new__(Registry)
        other.__dict__.update(self.__dict__)
        other.policy = policy
        return other

    @property
    def teams(self) -> Any:
        """The teams declaration this object's stage changes are made under (its policy's), or None."""
        return self.policy.teams

    def for_mesh(self, mesh: str) -> Registry:
        """The same database, another mesh (shares the engine), with no policy: govern it for that mesh."""
        other = object.__new__(Registry)
        other.__dict__.update(self.__dict__)
        other.mesh, other.policy = mesh, UNGOVERNED
        return other

    @property
    def location(self) -> str:
        return sa.engine.make_url(self.url).render_as_string(hide_password=True)

    @contextlib.contextmanager
    def transaction(self):
        """A write transaction (a SQLAlchemy connection, committed on leaving, rolled back on an exception); a
        database that cannot be written is named, not retried. For the tables of packages above the registry
        (rollouts, approvals, tracking, notifications); stage changes go through this class's methods."""
        try:
            with self.engine.begin() as conn:
                yield conn
        except sa.exc.OperationalError as exc:
            if is_read_only_error(exc):
                raise RegistryReadOnly(f"the registry {self.location} cannot be written "
                                       f"({str(exc.orig).strip()}): check the file's and its folder's permissions") from None
            raise

    # -- schema ------------------------------------------------------------------
    @staticmethod
    def _alembic_config():
        from alembic.config import Config

        config = Config()
        config.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
        return config

    @classmethod
    def head_revision(cls) -> str:
        """The newest migration this depmesh ships."""
        from alembic.script import ScriptDirectory

        return str(ScriptDirectory.from_config(cls._alembic_config()).get_current_head())

    def migrate(self) -> str:
        """Bring the schema to the newest migration; returns the revision.
        Rows from before several meshes (mesh '') are adopted by this mesh."""
        from alembic import command

        config = self._alembic_config()
        with self.transaction() as conn:
            if conn.dialect.name == "postgresql":
                # processes that start at once (Celery workers, parallel step
                # processes) would each create the tables: one migrates, the
                # others wait here and then find the schema current
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
            config.attributes["connection"] = conn
            command.upgrade(config, "head")
            self._adopt_legacy(conn)
            self._ensure_state(conn)
        return self.schema_revision() or ""

    def _adopt_legacy(self, conn) -> None:
        legacy = conn.execute(sa.select(mesh_state.c.mesh).where(mesh_state.c.mesh == "")).first()
        if legacy is None:
            return
        mine = conn.execute(sa.select(mesh_state.c.mesh).where(mesh_state.c.mesh == self.mesh)).first()
        if mine is not None:
            return
        for table in (model_versions, stage_transitions, releases):
            conn.execute(table.update().where(table.c.mesh == "").values(mesh=self.mesh))
        conn.execute(mesh_state.update().where(mesh_state.c.mesh == "").values(mesh=self.mesh))

    def _ensure_state(self, conn) -> None:
        if conn.execute(sa.select(mesh_state.c.mesh).where(mesh_state.c.mesh == self.mesh)).first() is None:
            conn.execute(mesh_state.insert().values(mesh=self.mesh, production_release_id=None, revision=0))

    def meshes(self) -> list[str]:
        """Every mesh that has a state row in this registry."""
        with self.engine.connect() as conn:
            return list(conn.execute(sa.select(mesh_state.c.mesh).order_by(mesh_state.c.mesh)).scalars())

    def schema_revision(self) -> str | None:
        with self.engine.connect() as conn:
            if not sa.inspect(conn).has_table("depmesh_alembic_version"):
                return None
            return conn.execute(sa.text("SELECT version_num FROM depmesh_alembic_version")).scalar()

    def dispose(self) -> None:
        self.engine.dispose()

    # -- the one serialized path ---------------------------------------------------
    def _lock(self, conn, expected_revision: int | None = None) -> Any:
        """Lock this mesh's state row for the transaction (every stage change
        starts here) and check the revision the caller decided on."""
        self._ensure_state(conn)
        state = conn.execute(sa.select(mesh_state).where(mesh_state.c.mesh == self.mesh).with_for_update()).one()
        if expected_revision is not None and state.revision != expected_revision:
            raise PromotionConflict(
                f"the registry changed while this operation was decided (revision {expected_revision}, now "
                f"{state.revision}: another promotion, rollback or release won); nothing was changed here: look at "
                "`depmesh release list` and try again if it still applies")
        return state

    def _bump(self, conn, state, production_release_id: int | None) -> None:
        conn.execute(mesh_state.update().where(mesh_state.c.mesh == self.mesh)
                     .values(production_release_id=production_release_id, revision=state.revision + 1))

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
        from depmesh.registry.chain import append

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

    def version(self, node: str, version: str) -> dict[str, Any] | None:
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

    def history(self, node: str | None = None, after_id: int | None = None) -> list[dict[str, Any]]:
        """The audit trail of one model (or of the whole mesh), oldest first;
        with ``after_id``, only the entries written after that one."""
        query = sa.select(stage_transitions).where(stage_transitions.c.mesh == self.mesh)
        if node is not None:
            query = query.where(stage_transitions.c.node == node)
        if after_id is not None:
            query = query.where(stage_transitions.c.id > after_id)
        with self.engine.connect() as conn:
            rows = conn.execute(query.order_by(stage_transitions.c.id)).all()
        return [dict(r._mapping) for r in rows]

    def last_transition_id(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.coalesce(sa.func.max(stage_transitions.c.id), 0))
                                    .where(stage_transitions.c.mesh == self.mesh)).scalar_one())

    def versions(self, node: str | None = None) -> list[dict[str, Any]]:
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

    def _release(self, conn, release_id: int) -> dict[str, Any]:
        check_release_id(release_id)
        row = conn.execute(sa.select(releases).where(releases.c.id == release_id, releases.c.mesh == self.mesh)).first()
        if row is None:
            raise RegistryError(f"no release {release_id} in mesh {self.mesh} (see: depmesh release list)")
        members = conn.execute(sa.select(release_members.c.node, release_members.c.version)
                               .where(release_members.c.release_id == release_id)
                               .order_by(release_members.c.node)).all()
        out = dict(row._mapping)
        out["members"] = {m.node: m.version for m in members}
        return out

    def release(self, release_id: int) -> dict[str, Any]:
        with self.engine.connect() as conn:
            return self._release(conn, release_id)

    def release_count(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(releases)
                                    .where(releases.c.mesh == self.mesh)).scalar_one())

    def releases(self) -> list[dict[str, Any]]:
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
        from depmesh.registry.chain import audit
        from depmesh.registry.schema import mesh_governance

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
        from depmesh.registry.schema import mesh_governance

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


_migrate_lock = threading.Lock()
_migrated: set[tuple[str, str]] = set()


def open_registry(url: str, mesh: str = DEFAULT_MESH, artifacts: Any = None) -> Registry:
    """A registry at ``url`` for ``mesh`` with its schema at the newest migration (once per process), under no
    policy: depmesh.governance.open_governed is what every path that changes stages uses."""
    registry = Registry(url, mesh=mesh, artifacts=artifacts)
    with _migrate_lock:
        if (url, mesh) not in _migrated:
            registry.migrate()
            _migrated.add((url, mesh))
    return registry


def _decode(row) -> dict[str, Any]:
    out = dict(row._mapping)
    for key in ("metrics", "gates", "input_versions", "upstream_models", "library_versions"):
        out[key] = json.loads(out[key])
    for key in ("recipe", "requirements"):
        if key in out:
            out[key] = json.loads(out[key]) if out[key] else None
    return out

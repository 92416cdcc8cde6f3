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
import threading
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from depmesh.registry.declaration import DeclarationRecord
from depmesh.registry.errors import (  # noqa: F401 - the public errors and checks, importable from here as before
    DEFAULT_MESH,
    MIGRATION_LOCK_KEY,
    SYSTEM_ACTOR,
    ApprovalRequired,
    GovernanceMismatch,
    PromotionConflict,
    RegistryError,
    RegistryReadOnly,
    RollbackRefused,
    check_actor,
    check_release_id,
    default_url,
    is_read_only_error,
    is_transient_database_error,
)
from depmesh.registry.policy import UNGOVERNED, StagePolicy
from depmesh.registry.releases import ReleaseRecords
from depmesh.registry.rollbacks import Rollbacks
from depmesh.registry.schema import (
    mesh_state,
    model_versions,
    releases,
    stage_transitions,
)
from depmesh.registry.versions import VersionRecords


class Registry(VersionRecords, ReleaseRecords, Rollbacks, DeclarationRecord):
    """One mesh's view of the registry: the engine and the one serialized path here; versions, releases,
    rollbacks and the remembered teams declaration in their own modules (mixins)."""

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

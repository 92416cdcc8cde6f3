"""The model registry: versions, stages, releases and an append-only audit
trail, in SQLite (under DAGSTER_HOME) or PostgreSQL (DAGSTER_POSTGRES_URL).

Every change of Production is one database transaction guarded by a
compare-and-swap on ``registry_state.revision``: two concurrent promotions
cannot both win, and a process that dies half-way commits nothing.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from depmesh.registry.schema import STAGES, model_versions, registry_state, release_members, releases, stage_transitions

SYSTEM_ACTOR = "depmesh"
MIGRATION_LOCK_KEY = 0x64_65_70_6D  # "depm": the PostgreSQL advisory lock migrations take
FAULT_ENV = "DEPMESH_FAULT"  # test-only: name a fault point to die at (SIGKILL), e.g. promote:after_first_member


class RegistryError(ValueError):
    """A registry operation that cannot be done; the message says why."""


class PromotionConflict(RegistryError):
    pass


class RollbackRefused(RegistryError):
    def __init__(self, message: str, rollback_set: list[str]):
        super().__init__(message)
        self.rollback_set = rollback_set


def _now() -> datetime:
    return datetime.now(UTC)


def _fault(point: str) -> None:
    if os.environ.get(FAULT_ENV) == point:
        os.kill(os.getpid(), signal.SIGKILL)


def is_transient_database_error(exc: BaseException) -> bool:
    """True for a lost or refused database connection (a server restart, a
    network blip, SQLite's lock timeout): worth retrying, unlike a bug."""
    seen: set[int] = set()
    error: BaseException | None = exc
    while error is not None and id(error) not in seen:
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
    from depmesh.instance import POSTGRES_ENV

    url = os.environ.get(POSTGRES_ENV)
    if url:
        return url
    return f"sqlite:///{Path(home).resolve() / 'depmesh_registry.db'}"


def _require(actor: str | None, reason: str | None) -> None:
    if not actor or not str(actor).strip() or not reason or not str(reason).strip():
        raise RegistryError("a stage transition needs an actor and a reason (--actor NAME --reason TEXT)")


class Registry:
    def __init__(self, url: str):
        self.url = url
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
        """Bring the schema to the newest migration; returns the revision."""
        from alembic import command

        config = self._alembic_config()
        with self.engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                # processes that start at once (Celery workers, parallel step
                # processes) would each create the tables: one migrates, the
                # others wait here and then find the schema current
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
            config.attributes["connection"] = conn
            command.upgrade(config, "head")
        return self.schema_revision() or ""

    def schema_revision(self) -> str | None:
        with self.engine.connect() as conn:
            if not sa.inspect(conn).has_table("depmesh_alembic_version"):
                return None
            return conn.execute(sa.text("SELECT version_num FROM depmesh_alembic_version")).scalar()

    def dispose(self) -> None:
        self.engine.dispose()

    # -- versions ----------------------------------------------------------------
    def register(self, *, node: str, version: str, artifact_hash: str, artifact_path: str, metrics: Mapping,
                 gates: Mapping, run_id: str, input_versions: Mapping, upstream_models: Mapping, code_version: str,
                 library_versions: Mapping, card: str) -> bool:
        """Record a new model version in Development. Idempotent: a version
        already registered (same content hash) is left as it is; returns False."""
        with self.engine.begin() as conn:
            exists = conn.execute(sa.select(model_versions.c.id).where(
                model_versions.c.node == node, model_versions.c.version == version)).first()
            if exists:
                return False
            conn.execute(model_versions.insert().values(
                node=node, version=version, stage="Development", artifact_hash=artifact_hash,
                artifact_path=artifact_path, metrics=json.dumps(dict(metrics)), gates=json.dumps(dict(gates), default=str),
                run_id=run_id, input_versions=json.dumps(dict(input_versions)),
                upstream_models=json.dumps(dict(upstream_models)), code_version=code_version,
                library_versions=json.dumps(dict(library_versions)), card=card, created_at=_now()))
            self._log(conn, node, version, None, "Development", SYSTEM_ACTOR, f"trained in run {run_id}", run_id)
        return True

    def _log(self, conn, node, version, from_stage, to_stage, actor, reason, run_id=None, release_id=None) -> None:
        _require(actor, reason)
        conn.execute(stage_transitions.insert().values(
            node=node, version=version, from_stage=from_stage, to_stage=to_stage, actor=actor, reason=reason,
            run_id=run_id, release_id=release_id, at=_now()))

    def _set_stage(self, conn, node: str, version: str, stage: str, actor: str, reason: str,
                   run_id: str | None = None, release_id: int | None = None) -> None:
        if stage not in STAGES:
            raise RegistryError(f"unknown stage {stage!r} (known: {', '.join(STAGES)})")
        row = conn.execute(sa.select(model_versions.c.stage).where(
            model_versions.c.node == node, model_versions.c.version == version)).first()
        if row is None:
            raise RegistryError(f"{node} has no registered version {version}")
        if row.stage == stage:
            return
        conn.execute(model_versions.update().where(model_versions.c.node == node, model_versions.c.version == version)
                     .values(stage=stage))
        self._log(conn, node, version, row.stage, stage, actor, reason, run_id, release_id)

    def transition(self, node: str, version: str, stage: str, *, actor: str, reason: str) -> None:
        """Move one version to a stage by hand (Production goes through releases)."""
        _require(actor, reason)
        if stage == "Production":
            raise RegistryError("Production is reached by promoting a release: depmesh release promote ID")
        with self.engine.begin() as conn:
            self._set_stage(conn, node, version, stage, actor, reason)

    def version(self, node: str, version: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(model_versions).where(
                model_versions.c.node == node, model_versions.c.version == version)).first()
        return _decode(row) if row else None

    def production(self) -> dict[str, str]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(model_versions.c.node, model_versions.c.version)
                                .where(model_versions.c.stage == "Production")).all()
        return {r.node: r.version for r in rows}

    def production_metrics(self, node: str) -> dict[str, float] | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(model_versions.c.metrics, model_versions.c.version).where(
                model_versions.c.node == node, model_versions.c.stage == "Production")).first()
        return json.loads(row.metrics) if row else None

    def history(self, node: str) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(stage_transitions).where(stage_transitions.c.node == node)
                                .order_by(stage_transitions.c.id)).all()
        return [dict(r._mapping) for r in rows]

    def versions(self, node: str) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(model_versions).where(model_versions.c.node == node)
                                .order_by(model_versions.c.id)).all()
        return [_decode(r) for r in rows]

    # -- releases ----------------------------------------------------------------
    def create_release(self, members: Mapping[str, str], *, run_id: str | None, actor: str = SYSTEM_ACTOR,
                       reason: str = "every gate passed") -> int:
        """Record a release (node -> version) and move its versions to Staging."""
        if not members:
            raise RegistryError("a release needs at least one model version")
        with self.engine.begin() as conn:
            release_id = conn.execute(releases.insert().values(
                status="Staging", run_id=run_id, created_at=_now())).inserted_primary_key[0]
            for node, version in sorted(members.items()):
                conn.execute(release_members.insert().values(release_id=release_id, node=node, version=version))
                stage = conn.execute(sa.select(model_versions.c.stage).where(
                    model_versions.c.node == node, model_versions.c.version == version)).scalar()
                if stage is None:
                    raise RegistryError(f"release member {node}@{version} is not registered")
                if stage in ("Development", "Archived"):
                    self._set_stage(conn, node, version, "Staging", actor, f"{reason} (release {release_id})",
                                    run_id, release_id)
        return release_id

    def state(self) -> dict[str, Any]:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(registry_state).where(registry_state.c.id == 1)).first()
        return {"production_release_id": row.production_release_id, "revision": row.revision}

    def release(self, release_id: int) -> dict[str, Any]:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(releases).where(releases.c.id == release_id)).first()
            if row is None:
                raise RegistryError(f"no release {release_id} (see: depmesh release list)")
            members = conn.execute(sa.select(release_members.c.node, release_members.c.version)
                                   .where(release_members.c.release_id == release_id)
                                   .order_by(release_members.c.node)).all()
        out = dict(row._mapping)
        out["members"] = {m.node: m.version for m in members}
        return out

    def release_count(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(releases)).scalar_one())

    def releases(self) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            ids = conn.execute(sa.select(releases.c.id).order_by(releases.c.id)).scalars().all()
        return [self.release(i) for i in ids]

    def _swap(self, conn, expected_revision: int, production_release_id: int | None) -> None:
        result = conn.execute(registry_state.update()
                              .where(registry_state.c.id == 1, registry_state.c.revision == expected_revision)
                              .values(production_release_id=production_release_id,
                                      revision=registry_state.c.revision + 1))
        if result.rowcount != 1:
            raise PromotionConflict(
                "Production changed while this operation ran (another promotion or rollback won); nothing was "
                "changed here: look at `depmesh release list` and try again if it still applies")

    def _make_production(self, conn, members: Mapping[str, str], actor: str, reason: str, release_id: int) -> None:
        first = True
        for node, version in sorted(members.items()):
            current = conn.execute(sa.select(model_versions.c.version).where(
                model_versions.c.node == node, model_versions.c.stage == "Production")).scalar()
            if current is not None and current != version:
                self._set_stage(conn, node, current, "Archived", actor, f"replaced by {version}: {reason}",
                                release_id=release_id)
            self._set_stage(conn, node, version, "Production", actor, reason, release_id=release_id)
            if first:
                _fault("promote:after_first_member")
                first = False

    def promote(self, release_id: int, *, actor: str, reason: str, expected_revision: int | None = None) -> dict:
        """Make every version of the release Production at once, archive the
        versions they replace; one audit entry per model. Atomic."""
        _require(actor, reason)
        if expected_revision is None:
            expected_revision = self.state()["revision"]
        release = self.release(release_id)
        if release["status"] == "Production":
            raise RegistryError(f"release {release_id} is already Production")
        with self.engine.begin() as conn:
            self._swap(conn, expected_revision, release_id)
            previous = conn.execute(sa.select(releases.c.id).where(releases.c.status == "Production")).scalar()
            self._make_production(conn, release["members"], actor, reason, release_id)
            if previous is not None:
                conn.execute(releases.update().where(releases.c.id == previous).values(status="Superseded"))
            conn.execute(releases.update().where(releases.c.id == release_id).values(
                status="Production", promoted_at=_now(), replaced_release_id=previous))
        return self.release(release_id)

    def rollback(self, *, actor: str, reason: str, expected_revision: int | None = None) -> dict:
        """Make the release the current one replaced Production again, atomically."""
        _require(actor, reason)
        if expected_revision is None:
            expected_revision = self.state()["revision"]
        current_id = self.state()["production_release_id"]
        if current_id is None:
            raise RegistryError("no release is in Production, so there is nothing to roll back")
        current = self.release(current_id)
        previous_id = current["replaced_release_id"]
        if previous_id is None:
            raise RegistryError(f"release {current_id} replaced no earlier release: there is nothing to roll back to")
        previous = self.release(previous_id)
        with self.engine.begin() as conn:
            self._swap(conn, expected_revision, previous_id)
            self._make_production(conn, previous["members"], actor, f"rollback of release {current_id}: {reason}",
                                  previous_id)
            conn.execute(releases.update().where(releases.c.id == current_id).values(status="RolledBack"))
            conn.execute(releases.update().where(releases.c.id == previous_id).values(status="Production"))
        return self.release(previous_id)

    def _previous_production(self, conn, node: str, current: str) -> str | None:
        rows = conn.execute(sa.select(stage_transitions.c.version).where(
            stage_transitions.c.node == node, stage_transitions.c.to_stage == "Production")
            .order_by(stage_transitions.c.id.desc())).scalars().all()
        return next((v for v in rows if v != current), None)

    def rollback_set(self, node: str) -> list[str]:
        """The Production models trained against ``node``'s Production version:
        they must move with it."""
        prod = self.production()
        version = prod.get(node)
        if version is None:
            return []
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(model_versions.c.node, model_versions.c.upstream_models)
                                .where(model_versions.c.stage == "Production")).all()
        return sorted(r.node for r in rows if json.loads(r.upstream_models).get(node) == version)

    def rollback_model(self, node: str, *, actor: str, reason: str, with_dependents: bool = False,
                       expected_revision: int | None = None) -> dict[str, tuple[str, str]]:
        """Roll one model back to its previous Production version. Refused when
        Production models downstream were trained against the version being
        removed, unless ``with_dependents`` rolls them back together.
        Returns node -> (from version, to version)."""
        _require(actor, reason)
        if expected_revision is None:
            expected_revision = self.state()["revision"]
        dependents = self.rollback_set(node)
        if dependents and not with_dependents:
            raise RollbackRefused(
                f"refused: {', '.join(dependents)} in Production {'was' if len(dependents) == 1 else 'were'} "
                f"trained against {node}@{self.production().get(node)}; roll back the set together with "
                f"--with-dependents (rollback set: {', '.join([node, *dependents])})", [node, *dependents])
        moves: dict[str, tuple[str, str]] = {}
        production_release = self.state()["production_release_id"]  # read before the write lock is taken
        with self.engine.begin() as conn:
            self._swap(conn, expected_revision, production_release)
            for name in [node, *dependents]:
                current = conn.execute(sa.select(model_versions.c.version).where(
                    model_versions.c.node == name, model_versions.c.stage == "Production")).scalar()
                if current is None:
                    raise RegistryError(f"{name} has no Production version to roll back")
                previous = self._previous_production(conn, name, current)
                if previous is None:
                    raise RegistryError(f"{name} has never had another Production version to roll back to")
                self._set_stage(conn, name, current, "Archived", actor, f"rolled back: {reason}")
                self._set_stage(conn, name, previous, "Production", actor, f"rollback of {current}: {reason}")
                moves[name] = (current, previous)
        return moves


def _decode(row) -> dict[str, Any]:
    out = dict(row._mapping)
    for key in ("metrics", "gates", "input_versions", "upstream_models", "library_versions"):
        out[key] = json.loads(out[key])
    return out

"""The registry's errors, and the checks and helpers every part of it shares."""

from __future__ import annotations

import json
import os
import signal
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from depmesh.keys import POSTGRES_ENV
from depmesh.registry.entities import ModelVersion
from depmesh.registry.schema import (
    ACTOR_MAX,
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


def _decode(row) -> ModelVersion:
    out = ModelVersion(row._mapping)
    for key in ("metrics", "gates", "input_versions", "upstream_models", "library_versions"):
        out[key] = json.loads(out[key])
    for key in ("recipe", "requirements"):
        if key in out:
            out[key] = json.loads(out[key]) if out[key] else None
    return out

"""Tracked trainings in the registry database: record them, query them.

A query pushes what SQL does well (mesh, node, status, trigger, dates) into
the database and evaluates the ``--where`` expression over parameters and
metrics in Python on the rows left (see depmesh.tracking.query), so it reads
the same on SQLite and PostgreSQL; curves are read only for the trainings
shown.
"""

from __future__ import annotations

import json
import statistics
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from depmesh.registry.schema import blobs, training_curves, trainings
from depmesh.tracking.capture import Curves

JSON_COLUMNS = ("tags", "params", "declared_params", "metrics", "library_versions", "input_versions", "inputs")


def new_id() -> str:
    return uuid.uuid4().hex


class Tracking:
    """Trainings of one mesh, in the database of ``registry`` (its engine and mesh)."""

    def __init__(self, registry: Any):
        self.registry = registry
        self.engine = registry.engine
        self.mesh = registry.mesh

    # -- blobs -------------------------------------------------------------------------
    def put_blob(self, kind: str, content: bytes) -> str:
        from depmesh.artifacts import sha256

        digest = sha256(content)
        with self.engine.connect() as conn:  # a read first: the same lock file is stored once, not per training
            if conn.execute(sa.select(blobs.c.sha256).where(blobs.c.sha256 == digest)).first() is not None:
                return digest
        with self.registry.transaction() as conn:
            if conn.execute(sa.select(blobs.c.sha256).where(blobs.c.sha256 == digest)).first() is None:
                conn.execute(blobs.insert().values(sha256=digest, kind=kind, size=len(content), content=content))
        return digest

    def blob(self, digest: str) -> bytes | None:
        with self.engine.connect() as conn:
            return conn.execute(sa.select(blobs.c.content).where(blobs.c.sha256 == digest)).scalar()

    # -- writing -----------------------------------------------------------------------
    def record(self, row: Mapping[str, Any], curves: Curves | None = None) -> str:
        """Store one training (a mapping of trainings' columns; JSON columns as
        Python values) and its curves; returns its id."""
        values = dict(row)
        values.setdefault("id", new_id())
        values["mesh"] = self.mesh
        for key in JSON_COLUMNS:
            values[key] = json.dumps(values.get(key) or {}, sort_keys=True, default=str)
        with self.registry.transaction() as conn:
            conn.execute(trainings.insert().values(**values))
            for series, (steps, points) in sorted((curves.series if curves else {}).items()):
                conn.execute(training_curves.insert().values(
                    training_id=values["id"], series=series, steps=json.dumps(steps), values=json.dumps(points)))
        return values["id"]

    # -- reading -----------------------------------------------------------------------
    def _select(self, node: str | Sequence[str] | None, status: Sequence[str] | None, trigger: str | None,
                since: datetime | None, until: datetime | None, study: str | None):
        since, until = self._utc(since), self._utc(until)
        query = sa.select(trainings).where(trainings.c.mesh == self.mesh)
        if node:
            nodes = [node] if isinstance(node, str) else list(node)
            query = query.where(trainings.c.node.in_(nodes))
        if status:
            query = query.where(trainings.c.status.in_(list(status)))
        if trigger:
            query = query.where(trainings.c.trigger.like(trigger.replace("*", "%")))
        if since is not None:
            query = query.where(trainings.c.started_at >= since)
        if until is not None:
            query = query.where(trainings.c.started_at < until)
        if study:
            query = query.where(trainings.c.study == study)
        return query.order_by(trainings.c.started_at.desc())

    def _utc(self, when: datetime | None) -> datetime | None:
        """A time as the database compares it: SQLite keeps naive UTC text."""
        if when is None:
            return None
        when = when.astimezone(UTC) if when.tzinfo else when.replace(tzinfo=UTC)
        return when.replace(tzinfo=None) if self.engine.dialect.name == "sqlite" else when

    def query(self, *, node: str | Sequence[str] | None = None, status: Sequence[str] | None = None,
              trigger: str | None = None, tags: Mapping[str, str] | None = None, since: datetime | None = None,
              until: datetime | None = None, study: str | None = None, where: str | None = None,
              sort: str | None = None, limit: int | None = None) -> list[dict[str, Any]]:
        """Trainings, newest first (or by ``sort``: ``metrics.mae`` ascending,
        ``-metrics.roc_auc`` descending, any column or params./metrics. path)."""
        from depmesh.tracking.query import compile_where, sort_key

        test = compile_where(where) if where else None
        key = sort_key(sort) if sort else None
        with self.engine.connect() as conn:
            rows = conn.execute(self._select(node, status, trigger, since, until, study)).all()
        out = []
        for row in rows:
            item = dict(row._mapping)
            _decode(item)
            if tags and any(item["tags"].get(k) != v for k, v in tags.items()):
                continue
            if test is not None and not test(item):
                continue
            out.append(item)
        if key is not None:
            out.sort(key=key)
        return out[:limit] if limit else out

    def get(self, training_id: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(trainings).where(trainings.c.mesh == self.mesh,
                                                          trainings.c.id.like(f"{training_id}%"))).all()
        if len(row) != 1:
            return None
        return _decode(dict(row[0]._mapping))

    def curves(self, ids: Sequence[str]) -> dict[str, dict[str, tuple[list[int], list[float]]]]:
        if not ids:
            return {}
        out: dict[str, dict[str, tuple[list[int], list[float]]]] = {i: {} for i in ids}
        with self.engine.connect() as conn:
            for row in conn.execute(sa.select(training_curves).where(training_curves.c.training_id.in_(list(ids)))):
                out[row.training_id][row.series] = (json.loads(row.steps), json.loads(row.values))
        return out

    def costs(self, nodes: Sequence[str], recent: int = 5) -> dict[str, dict[str, float]]:
        """Per node with tracked trainings: the median wall time and peak
        memory of its ``recent`` latest trainings that ran to the end (tuning
        trials excluded), and how many were used."""
        out: dict[str, dict[str, float]] = {}
        if not nodes:
            return out
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(trainings.c.node, trainings.c.duration_s, trainings.c.peak_memory_mb)
                .where(trainings.c.mesh == self.mesh, trainings.c.node.in_(list(nodes)),
                       trainings.c.status.in_(["registered", "rejected"]))
                .order_by(trainings.c.started_at.desc())).all()
        seen: dict[str, list[Any]] = {}
        for row in rows:
            if len(seen.setdefault(row.node, [])) < recent:
                seen[row.node].append(row)
        for node, picked in seen.items():
            memory = [r.peak_memory_mb for r in picked if r.peak_memory_mb is not None]
            out[node] = {"seconds": statistics.median(r.duration_s for r in picked),
                         "peak_mb": statistics.median(memory) if memory else 0.0, "trainings": float(len(picked))}
        return out


def _decode(item: dict[str, Any]) -> dict[str, Any]:
    """JSON columns as Python values; times as UTC-aware datetimes (SQLite gives them back naive)."""
    for column in JSON_COLUMNS:
        item[column] = json.loads(item[column])
    for column in ("started_at", "ended_at"):
        if item[column] is not None and item[column].tzinfo is None:
            item[column] = item[column].replace(tzinfo=UTC)
    return item

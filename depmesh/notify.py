"""Notify teams through their webhooks, from an outbox in the registry database.

A registry change (a promotion request, an approval, a rollback, an incident)
writes its notifications in its own transaction; ``deliver`` posts them
afterwards. So a webhook that is down never blocks or undoes the change, and a
notification is not lost when the process dies after the change: the next
delivery (the ``deliver_notifications`` sensor, ``depmesh notifications
deliver``, or the command that made the change) sends it. A delivery is
claimed before it is sent, so two deliverers do not post it twice; each is
tried at most ``MAX_ATTEMPTS`` times, then marked failed (and audited).

The body is JSON: ``{"mesh", "team", "event", "id", ...the event's fields}``.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from depmesh.redact import scrub
from depmesh.registry.chain import audit
from depmesh.registry.schema import audit_events, notifications

MAX_ATTEMPTS = 5  # over every delivery of one notification
TRIES_PER_DELIVERY = 3  # within one delivery, with a short backoff
TIMEOUT_S = 3.0
CLAIM_EXPIRES = timedelta(minutes=2)  # a deliverer that died holding a claim gives it back after this
EVENTS = ("promotion_requested", "approved", "rejected", "promoted", "rollback", "canary_rollback",
          "canary_advanced", "incident", "audit_head")


def _now() -> datetime:
    return datetime.now(UTC)


def enqueue(conn, mesh: str, teams: Any, team: str, event: str, payload: dict[str, Any]) -> None:
    """Add a notification for ``team`` inside the caller's transaction (``teams``: the declared Teams, or None)."""
    if event not in EVENTS:
        raise ValueError(f"unknown notification event {event!r} (known: {', '.join(EVENTS)})")
    declared = teams.teams.get(team) if teams is not None else None
    status = "pending" if declared is not None and declared.webhook_url() else "no-webhook"
    conn.execute(notifications.insert().values(
        mesh=mesh, team=team, event=event, payload=json.dumps(payload, default=str, sort_keys=True), status=status,
        attempts=0, created_at=_now()))


def _claim(registry: Any) -> list[dict[str, Any]]:
    """Pending notifications of this mesh (and stale claims), claimed by a conditional update each."""
    now = _now()
    claimable = sa.or_(notifications.c.status == "pending",
                       sa.and_(notifications.c.status == "sending", notifications.c.claimed_at < now - CLAIM_EXPIRES))
    with registry.engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(
            sa.select(notifications).where(notifications.c.mesh == registry.mesh, claimable)
            .order_by(notifications.c.id).limit(200))]
    claimed = []
    for row in rows:
        with registry.transaction() as conn:
            got = conn.execute(notifications.update().where(notifications.c.id == row["id"], claimable)
                               .values(status="sending", claimed_at=now)).rowcount
        if got == 1:
            claimed.append(row)
    return claimed


def post(url: str, body: dict[str, Any], timeout: float = TIMEOUT_S) -> None:
    """POST ``body`` as JSON; raises on anything but a 2xx answer."""
    data = json.dumps(body, default=str, sort_keys=True).encode("utf-8")
    request = urllib.request.Request(url, data=data, method="POST",
                                     headers={"Content-Type": "application/json", "User-Agent": "depmesh"})
    with urllib.request.urlopen(request, timeout=timeout) as answer:  # noqa: S310 - http(s) only, validated in teams
        if not 200 <= answer.status < 300:
            raise urllib.error.HTTPError(url, answer.status, answer.reason, answer.headers, None)


def deliver(registry: Any, teams: Any, *, tries: int = TRIES_PER_DELIVERY, backoff_s: float = 0.2,
            timeout: float = TIMEOUT_S) -> dict[str, int]:
    """Send this mesh's pending notifications; returns counts by outcome (sent, retry, failed)."""
    counts = {"sent": 0, "retry": 0, "failed": 0}
    if teams is None:
        return counts
    for row in _claim(registry):
        team = teams.teams.get(row["team"])
        url = team.webhook_url() if team is not None else None
        body = {"mesh": row["mesh"], "team": row["team"], "event": row["event"], "id": row["id"],
                **json.loads(row["payload"])}
        attempts, error = row["attempts"], None
        for attempt in range(tries):
            if attempts >= MAX_ATTEMPTS:
                break
            attempts += 1
            try:
                if not url:
                    raise RuntimeError(f"{row['team']} has no webhook URL (its ${{VAR}} is unset, or it was removed)")
                post(url, body, timeout)
                error = None
                break
            except Exception as exc:  # noqa: BLE001 - any failure of the receiver is a failed attempt
                error = scrub(f"{type(exc).__name__}: {exc}", url, label="<webhook>")[:500]  # URLs carry tokens
                if attempt + 1 < tries and attempts < MAX_ATTEMPTS:
                    time.sleep(backoff_s * (2 ** attempt))
        with registry.transaction() as conn:
            if error is None:
                status = "sent"
            elif attempts >= MAX_ATTEMPTS:
                status = "failed"
                audit(conn, registry.mesh, "depmesh/notify", "notification_failed", f"notification:{row['id']}",
                      f"gave up after {attempts} attempts: {error}", team=row["team"], event=row["event"])
            else:
                status = "pending"
            conn.execute(notifications.update().where(notifications.c.id == row["id"]).values(
                status=status, attempts=attempts, last_error=error, claimed_at=None,
                sent_at=_now() if status == "sent" else None))
        counts["sent" if status == "sent" else "failed" if status == "failed" else "retry"] += 1
    return counts


def deliver_quietly(registry: Any, teams: Any, warn: Any = None) -> dict[str, int] | None:
    """``deliver`` after a change: its own failure is a warning, never the change's."""
    try:
        return deliver(registry, teams)
    except Exception as exc:  # noqa: BLE001
        if warn is not None:
            warn(f"depmesh: notifications not delivered now ({type(exc).__name__}: {exc}); "
                 "they stay queued: depmesh notifications deliver")
        return None


def listing(registry: Any, status: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
    query = sa.select(notifications).where(notifications.c.mesh == registry.mesh)
    if status:
        query = query.where(notifications.c.status == status)
    with registry.engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(query.order_by(notifications.c.id.desc()).limit(limit))]
    for row in rows:
        row["payload"] = json.loads(row["payload"])
    return rows


def audit_trail(registry: Any, subject: str | None = None) -> list[dict[str, Any]]:
    query = sa.select(audit_events).where(audit_events.c.mesh == registry.mesh)
    if subject:
        query = query.where(audit_events.c.subject == subject)
    with registry.engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(query.order_by(audit_events.c.id))]
    for row in rows:
        row["details"] = json.loads(row["details"])
    return rows

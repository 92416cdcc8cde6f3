"""Promotion requests and approvals.

When the mesh declares its teams (teams.yaml), a release reaches Production
only through a request that an owner of each changed model's team and an
owner of each affected downstream consumer's team (impact analysis) have
approved, none of them the person who asked. Requests, approvals and
rejections live in the registry database with audit entries; each notifies
the teams concerned (depmesh.notify). The last approval promotes the release.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from depmesh import graph
from depmesh.notify import audit, enqueue
from depmesh.registry.schema import approvals, promotion_requests
from depmesh.registry.store import RegistryError, check_actor
from depmesh.teams import ActorError


class ApprovalError(RegistryError):
    """A request or decision that is refused: wrong state, wrong person, nothing to approve."""


def _now() -> datetime:
    return datetime.now(UTC)


def required_teams(mesh: Any, release_members: dict[str, str], production: dict[str, str]) -> list[dict[str, Any]]:
    """Who must approve: the owner team of each changed model, and of each node downstream of one (its consumers).
    A node owned by a person (an email) needs that person's approval under the name ``person:<email>``."""
    changed = sorted(n for n, v in release_members.items() if production.get(n) != v) or sorted(release_members)
    affected = sorted(set(graph.downstream(mesh.inputs_map(), changed)) - set(changed))
    out: dict[str, dict[str, Any]] = {}
    for why, nodes in (("owns a changed model", changed), ("owns a downstream consumer", affected)):
        for name in nodes:
            owner = mesh.node(name).owner
            key = owner if owner.startswith("team:") else f"person:{owner}"
            entry = out.setdefault(key, {"team": key, "nodes": [], "why": []})
            entry["nodes"].append(name)
            if why not in entry["why"]:
                entry["why"].append(why)
    return list(out.values())


def _owners_of(teams: Any, required: str) -> list[str]:
    if required.startswith("person:"):
        return [required.removeprefix("person:")]
    team = teams.teams.get(required)
    return team.people("owner") if team is not None else []


def _decode(row: Any) -> dict[str, Any]:
    out = dict(row._mapping)
    out["required"] = json.loads(out["required"])
    return out


def get_request(registry: Any, request_id: int, conn: Any = None) -> dict[str, Any]:
    def read(c):
        row = c.execute(sa.select(promotion_requests).where(promotion_requests.c.id == request_id,
                                                            promotion_requests.c.mesh == registry.mesh)).first()
        if row is None:
            raise ApprovalError(f"no promotion request {request_id} in mesh {registry.mesh} "
                                "(see: depmesh release requests)")
        out = _decode(row)
        out["decisions"] = [dict(r._mapping) | {"teams": json.loads(r.teams)} for r in c.execute(
            sa.select(approvals).where(approvals.c.request_id == request_id).order_by(approvals.c.id))]
        out["approved_teams"] = sorted({t for d in out["decisions"] if d["decision"] == "approve" for t in d["teams"]})
        out["waiting_for"] = [{"team": r["team"], "owners": r.get("owners", [])} for r in out["required"]
                              if r["team"] not in out["approved_teams"]]
        return out

    if conn is not None:
        return read(conn)
    with registry.engine.connect() as c:
        return read(c)


def list_requests(registry: Any, *, release_id: int | None = None, status: str | None = None) -> list[dict]:
    query = sa.select(promotion_requests.c.id).where(promotion_requests.c.mesh == registry.mesh)
    if release_id is not None:
        query = query.where(promotion_requests.c.release_id == release_id)
    if status:
        query = query.where(promotion_requests.c.status == status)
    with registry.engine.connect() as conn:
        ids = conn.execute(query.order_by(promotion_requests.c.id)).scalars().all()
        return [get_request(registry, i, conn) for i in ids]


def _notify_required(conn, registry: Any, teams: Any, request: dict[str, Any], event: str, **extra: Any) -> None:
    for entry in request["required"]:
        if entry["team"].startswith("team:"):
            enqueue(conn, registry.mesh, teams, entry["team"], event, {
                "request": request["id"], "release": request["release_id"], "requested_by": request["requested_by"],
                "nodes": entry["nodes"], "why": entry["why"], **extra})


def request_promotion(registry: Any, mesh: Any, teams: Any, release_id: int, *, actor: str,
                      reason: str, canary: bool = False) -> dict[str, Any]:
    """Ask for ``release_id`` to go to Production (``canary``: through the catalog's canary rollout once
    approved); the teams that must approve are notified."""
    check_actor(actor, reason)
    teams.require_member(actor, doing="request a promotion")
    release = registry.release(release_id)
    if release["status"] == "Production":
        raise ApprovalError(f"release {release_id} is already Production")
    if canary and mesh.rollout is None:
        raise ApprovalError(f"mesh {mesh.name} declares no rollout: a canary needs rollout: (key, steps) in "
                            f"{mesh.path.name}")
    required = required_teams(mesh, release["members"], registry.production())
    for entry in required:
        entry["owners"] = _owners_of(teams, entry["team"])
        if not entry["owners"]:
            raise ApprovalError(f"release {release_id} needs an approval from {entry['team']} (it "
                                f"{' and '.join(entry['why'])}: {', '.join(entry['nodes'])}), which has no owner "
                                f"in {teams.path.name}")
    with registry.transaction() as conn:
        registry.check_declaration(conn, actor, teams)
        open_request = conn.execute(sa.select(promotion_requests.c.id).where(
            promotion_requests.c.mesh == registry.mesh, promotion_requests.c.release_id == release_id,
            promotion_requests.c.status.in_(("pending", "approved")))).scalar()
        if open_request is not None:
            raise ApprovalError(f"release {release_id} already has open promotion request {open_request} "
                                f"(see: depmesh release requests --release {release_id})")
        try:
            with conn.begin_nested():
                request_id = conn.execute(promotion_requests.insert().values(
                    mesh=registry.mesh, release_id=release_id, requested_by=actor, reason=reason, status="pending",
                    required=json.dumps(required), rollout="canary" if canary else None,
                    created_at=_now())).inserted_primary_key[0]
        except sa.exc.IntegrityError:  # another process asked at the same moment (the database's unique index)
            raise ApprovalError(f"release {release_id} already has an open promotion request, made at the same "
                                f"moment (see: depmesh release requests --release {release_id})") from None
        audit(conn, registry.mesh, actor, "promotion_requested", f"release:{release_id}", reason,
              request=request_id, required=[e["team"] for e in required])
        request = get_request(registry, request_id, conn)
        _notify_required(conn, registry, teams, request, "promotion_requested", reason=reason,
                         via="canary" if canary else "promotion")
    return request


def decide(registry: Any, teams: Any, request_id: int, *, actor: str, reason: str, approve: bool,
           signature: str | None = None) -> dict[str, Any]:
    """Approve or reject a pending request. An approval speaks for every required team of which ``actor`` is an
    owner; when every team has approved, the request is approved (the caller then promotes). A rejection by an
    owner of a required team closes the request. ``signature``: the actor's ed25519 signature of the request's
    payload (depmesh.signing), required when teams.yaml says ``signatures: required``."""
    check_actor(actor, reason)
    teams.require_member(actor, doing="approve or reject a promotion")
    with registry.transaction() as conn:
        conn.execute(sa.select(promotion_requests.c.id).where(promotion_requests.c.id == request_id)
                     .with_for_update())  # one decision at a time per request (SQLite: BEGIN IMMEDIATE)
        registry.check_declaration(conn, actor, teams)
        request = get_request(registry, request_id, conn)
        if request["status"] != "pending":
            raise ApprovalError(f"promotion request {request_id} is {request['status']}, not pending")
        if actor == request["requested_by"]:
            raise ActorError(f"{actor!r} asked for promotion request {request_id} and may not "
                             f"{'approve' if approve else 'reject'} it: someone else of the teams concerned must")
        speaks_for = [e["team"] for e in request["required"] if actor in e.get("owners", [])]
        if not speaks_for:
            need = "; ".join(f"{w['team']}: {', '.join(w['owners']) or 'no owner'}" for w in request["waiting_for"])
            raise ActorError(f"{actor!r} is not an owner of a team that must approve request {request_id} "
                             f"(waiting for: {need or 'nobody'})")
        pending = [t for t in speaks_for if t not in request["approved_teams"]]
        if approve and not pending:
            raise ApprovalError(f"{actor!r} already approved request {request_id} for {', '.join(speaks_for)}; "
                                f"waiting for: {', '.join(w['team'] for w in request['waiting_for'])}")
        if approve and (teams.signatures_required or signature):
            _check_signature(registry, teams, request, actor, signature, conn)
        conn.execute(approvals.insert().values(request_id=request_id, actor=actor,
                                               decision="approve" if approve else "reject",
                                               teams=json.dumps(pending if approve else speaks_for), reason=reason,
                                               at=_now(), signature=signature if approve else None))
        status = "pending"
        if not approve:
            status = "rejected"
        elif not [w for w in request["waiting_for"] if w["team"] not in pending]:
            status = "approved"
        if status != "pending":
            conn.execute(promotion_requests.update().where(promotion_requests.c.id == request_id)
                         .values(status=status, decided_at=_now()))
        subject = f"release:{request['release_id']}"
        audit(conn, registry.mesh, actor, "approved" if approve else "rejected", subject, reason,
              request=request_id, teams=pending if approve else speaks_for, request_status=status)
        request = get_request(registry, request_id, conn)
        _notify_required(conn, registry, teams, request, "approved" if approve else "rejected", by=actor,
                         reason=reason, status=status)
    return request


def _signed(registry: Any, teams: Any, request: dict[str, Any], actor: str, signature: str | None, conn: Any) -> bool:
    """Whether ``signature`` is ``actor``'s (by the key in teams.yaml) over the request as it is now."""
    from depmesh.signing import payload, verify

    key = teams.key_of(actor)
    return key is not None and verify(key, payload(registry, request, actor=actor, conn=conn), signature)


def _check_signature(registry: Any, teams: Any, request: dict[str, Any], actor: str, signature: str | None,
                     conn: Any) -> None:
    key = teams.key_of(actor)
    if key is None:
        raise ActorError(f"{actor!r} has no key in {teams.path.name}, so cannot sign an approval"
                         + (" (signatures: required)" if teams.signatures_required else ""))
    if not signature:
        raise ApprovalError(f"mesh {registry.mesh} requires signed approvals: approve with --key PATH (your ed25519 "
                            f"private key) or --signature over the payload of: depmesh release payload "
                            f"{request['id']} --actor {actor}")
    if not _signed(registry, teams, request, actor, signature, conn):
        raise ApprovalError(f"the signature does not verify against {actor}'s key in {teams.path.name} over request "
                            f"{request['id']} (release {request['release_id']}): sign the payload that depmesh "
                            f"release payload {request['id']} --actor {actor} prints")


def verify_approvals(conn: Any, registry: Any, teams: Any, request_id: int) -> list[str]:
    """Why the approvals of ``request_id`` do not allow a promotion now (empty: they do). Approvals count only
    when each is in the audit trail's hash chain as it was made (an approval row inserted by hand is not) and,
    when the mesh requires signatures, when its signature verifies against the approver's key in teams.yaml over
    the request as it is now (its release's members, versions and artifact hashes)."""
    from depmesh.registry.chain import GENESIS, digest
    from depmesh.registry.schema import audit_events

    request = get_request(registry, request_id, conn)
    events = [dict(r) for r in conn.execute(sa.select(audit_events).where(
        audit_events.c.mesh == registry.mesh, audit_events.c.action == "approved",
        audit_events.c.subject == f"release:{request['release_id']}")).mappings()]
    problems, approved = [], set()
    for decision in request["decisions"]:
        if decision["decision"] != "approve":
            continue
        who = f"approval {decision['id']} by {decision['actor']}"
        if teams is not None:
            foreign = [t for t in decision["teams"] if decision["actor"] not in _owners_of(teams, t)]
            if foreign:
                problems.append(f"{who} speaks for {', '.join(foreign)}, of which the declared teams do not make "
                                f"{decision['actor']} an owner")
                continue
        recorded = [e for e in events if e["actor"] == decision["actor"] and e["row_hash"]
                    and json.loads(e["details"]).get("request") == request_id
                    and sorted(json.loads(e["details"]).get("teams") or []) == sorted(decision["teams"])
                    and digest("events", e, e["prev_hash"] or GENESIS) == e["row_hash"]]
        if not recorded:
            problems.append(f"{who} is not in the audit trail as made (inserted or edited by hand?)")
            continue
        if teams is not None and teams.signatures_required:
            if not _signed(registry, teams, request, decision["actor"], decision.get("signature"), conn):
                problems.append(f"{who} is {'not signed' if not decision.get('signature') else 'signed'}"
                                + ("" if not decision.get("signature") else
                                   " but the signature does not verify against the key in teams.yaml for the "
                                   "request as it is now (its release's versions and artifacts, its impact)"))
                continue
        approved.update(decision["teams"])
    missing = [r["team"] for r in request["required"] if r["team"] not in approved]
    if missing and not problems:
        problems.append(f"no valid approval from {', '.join(missing)}")
    elif missing:
        problems.append(f"so {', '.join(missing)} {'has' if len(missing) == 1 else 'have'} not approved")
    return problems


def void_open(conn: Any, mesh: str, release_id: int) -> None:
    """Open requests of ``release_id`` become void (it was rolled back or replaced: an old approval never
    brings it back)."""
    conn.execute(promotion_requests.update().where(
        promotion_requests.c.mesh == mesh, promotion_requests.c.release_id == release_id,
        promotion_requests.c.status.in_(("pending", "approved"))).values(status="void", decided_at=_now()))


def approved_request(conn: Any, mesh: str, release_id: int) -> int | None:
    """The approved, not yet used request of ``release_id`` (promotion consumes it)."""
    return conn.execute(sa.select(promotion_requests.c.id).where(
        promotion_requests.c.mesh == mesh, promotion_requests.c.release_id == release_id,
        promotion_requests.c.status == "approved")).scalar()


def mark_promoted(conn: Any, request_id: int) -> None:
    """The request was used; any other open request of the same release is void (an approval never outlives the
    promotion it was for, so a later rollback cannot be undone by it)."""
    conn.execute(promotion_requests.update().where(promotion_requests.c.id == request_id)
                 .values(status="promoted", decided_at=_now()))
    row = conn.execute(sa.select(promotion_requests.c.mesh, promotion_requests.c.release_id)
                       .where(promotion_requests.c.id == request_id)).one()
    void_open(conn, row.mesh, row.release_id)


def notify_change(registry: Any, mesh: Any, teams: Any, event: str, nodes: list[str], **payload: Any) -> None:
    """Queue ``event`` for the owner teams of ``nodes`` and of everything downstream of them (a rollback)."""
    if teams is None or not nodes:
        return
    affected = sorted({*nodes, *graph.downstream(mesh.inputs_map(), nodes)})
    owners: dict[str, list[str]] = {}
    for name in affected:
        owner = mesh.node(name).owner
        if owner.startswith("team:"):
            owners.setdefault(owner, []).append(name)
    with registry.transaction() as conn:
        for team, owned in owners.items():
            enqueue(conn, registry.mesh, teams, team, event, {"nodes": owned, **payload})

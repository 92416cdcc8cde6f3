"""Approvals: `depmesh release request | approve | reject | requests | audit`."""

from __future__ import annotations

import json

import click

from depmesh.cli.common import FORMAT_OPTION, table
from depmesh.cli.registry import (
    ACTOR_OPTION,
    HOME_OPTION,
    REG_CATALOG_OPTION,
    RELEASE_ID,
    acting,
    governed_registry,
    registry_call,
    release,
    with_stage_events,
)

REQUEST_ID = click.argument("request_id", type=click.IntRange(1, 2**63 - 1), metavar="REQUEST_ID")


def _governed(home: str | None, catalog: str | None):
    mesh, teams, registry = governed_registry(home, catalog, read_only=True)
    if teams is None:
        raise click.ClickException(f"mesh {mesh.name} declares no teams (teams.yaml beside the catalog), so its "
                                   "releases are promoted directly: depmesh release promote RELEASE_ID")
    return mesh, teams, registry


def _waiting(request: dict) -> str:
    return "; ".join(f"{w['team']} ({', '.join(w['owners'])})" for w in request["waiting_for"]) or "nobody"


def _deliver(registry, teams) -> None:
    from depmesh.notify import deliver_quietly

    deliver_quietly(registry, teams, lambda m: click.echo(m, err=True))


@release.command("request")
@RELEASE_ID
@ACTOR_OPTION
@click.option("--reason", required=True, help="Why this release should go to Production.")
@REG_CATALOG_OPTION
@HOME_OPTION
def release_request(release_id: int, actor: str | None, reason: str, catalog: str | None, home: str | None) -> None:
    """Ask for a release to go to Production. The owners of each changed model's team and of each affected
    downstream consumer's team (impact analysis) must approve; their teams are notified."""
    from depmesh.rollout.approvals import request_promotion

    actor = acting(actor)
    mesh, teams, registry = _governed(home, catalog)
    request = registry_call(lambda: request_promotion(registry, mesh, teams, release_id, actor=actor, reason=reason))
    _deliver(registry, teams)
    click.echo(f"promotion request {request['id']} for release {release_id} by {actor}: waiting for "
               f"{_waiting(request)}")
    for entry in request["required"]:
        click.echo(f"  {entry['team']}: {' and '.join(entry['why'])} ({', '.join(entry['nodes'])})")


def _decide(request_id: int, actor: str | None, reason: str, catalog: str | None, home: str | None,
            approve: bool) -> None:
    from depmesh.rollout.approvals import decide

    actor = acting(actor)
    _, teams, registry = _governed(home, catalog)
    request = registry_call(lambda: decide(registry, teams, request_id, actor=actor, reason=reason, approve=approve))
    _deliver(registry, teams)
    if not approve:
        click.echo(f"promotion request {request_id} rejected by {actor}: release {request['release_id']} stays "
                   "where it is")
        return
    if request["status"] != "approved":
        click.echo(f"approved by {actor} for {', '.join(request['decisions'][-1]['teams'])}; still waiting for "
                   f"{_waiting(request)}")
        return
    release_id = request["release_id"]
    click.echo(f"promotion request {request_id} approved by every team concerned; promoting release {release_id}")
    item = with_stage_events(home, registry, lambda: registry.promote(
        release_id, actor=actor, reason=f"request {request_id} approved ({request['reason']}): {reason}"))
    click.echo(f"release {release_id} is Production: " + ", ".join(f"{n}@{v}" for n, v in item["members"].items()))


@release.command("approve")
@REQUEST_ID
@ACTOR_OPTION
@click.option("--reason", required=True, help="Why (recorded in the audit trail).")
@REG_CATALOG_OPTION
@HOME_OPTION
def release_approve(request_id: int, actor: str | None, reason: str, catalog: str | None, home: str | None) -> None:
    """Approve a promotion request for every required team of which you are an owner (not your own request).
    The last approval promotes the release."""
    _decide(request_id, actor, reason, catalog, home, approve=True)


@release.command("reject")
@REQUEST_ID
@ACTOR_OPTION
@click.option("--reason", required=True, help="Why (recorded in the audit trail).")
@REG_CATALOG_OPTION
@HOME_OPTION
def release_reject(request_id: int, actor: str | None, reason: str, catalog: str | None, home: str | None) -> None:
    """Reject a promotion request (an owner of a team that must approve it); the request is closed."""
    _decide(request_id, actor, reason, catalog, home, approve=False)


@release.command("requests")
@click.option("--release", "release_id", type=click.IntRange(1, 2**63 - 1), help="Only this release's requests.")
@click.option("--status", type=click.Choice(["pending", "approved", "rejected", "promoted"]))
@REG_CATALOG_OPTION
@HOME_OPTION
@FORMAT_OPTION
def release_requests(release_id: int | None, status: str | None, catalog: str | None, home: str | None,
                     fmt: str) -> None:
    """Promotion requests: who asked, which teams must approve, who did, what is still awaited."""
    from depmesh.rollout.approvals import list_requests

    _, _, registry = governed_registry(home, catalog, read_only=True)
    rows = list_requests(registry, release_id=release_id, status=status)
    if fmt == "json":
        click.echo(json.dumps(rows, indent=2, default=str))
        return
    click.echo(table([[r["id"], r["release_id"], r["status"], r["requested_by"], r["reason"][:40],
                       ", ".join(f"{d['actor']} {d['decision']}d" for d in r["decisions"]) or "-",
                       _waiting(r) if r["status"] == "pending" else "-"] for r in rows],
                     ["id", "release", "status", "requested by", "reason", "decisions", "waiting for"])
               if rows else "no promotion requests")


@release.command("audit")
@click.argument("release_id", type=click.IntRange(1, 2**63 - 1), required=False, metavar="[RELEASE_ID]")
@REG_CATALOG_OPTION
@HOME_OPTION
@FORMAT_OPTION
def release_audit(release_id: int | None, catalog: str | None, home: str | None, fmt: str) -> None:
    """The audit trail beyond stage moves: requests, approvals, rejections, rollout steps, webhook give-ups."""
    from depmesh.notify import audit_trail

    _, _, registry = governed_registry(home, catalog, read_only=True)
    rows = audit_trail(registry, f"release:{release_id}" if release_id else None)
    if fmt == "json":
        click.echo(json.dumps(rows, indent=2, default=str))
        return
    click.echo(table([[str(r["at"])[:19], r["actor"], r["action"], r["subject"], r["reason"][:60]] for r in rows],
                     ["time", "actor", "action", "subject", "reason"]) if rows else "no audit entries")

"""Approvals: `depmesh release request | approve | reject | requests | audit`."""

from __future__ import annotations

import json

import click

from depmesh.cli.app import main
from depmesh.cli.common import FORMAT_OPTION, table
from depmesh.cli.registry import (
    ACTOR_OPTION,
    HOME_OPTION,
    REG_CATALOG_OPTION,
    RELEASE_ID,
    RESCORE_OPTION,
    acting,
    after_stage_change,
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
@click.option("--canary", is_flag=True, help="Once approved, roll it out by the catalog's canary steps (the last "
                                             "step promotes it) instead of promoting it at once.")
@REG_CATALOG_OPTION
@HOME_OPTION
def release_request(release_id: int, actor: str | None, reason: str, canary: bool, catalog: str | None,
                    home: str | None) -> None:
    """Ask for a release to go to Production. The owners of each changed model's team and of each affected
    downstream consumer's team (impact analysis) must approve; their teams are notified."""
    from depmesh.governance.approvals import request_promotion

    actor = acting(actor)
    mesh, teams, registry = _governed(home, catalog)
    request = registry_call(lambda: request_promotion(registry, mesh, teams, release_id, actor=actor, reason=reason,
                                                      canary=canary))
    _deliver(registry, teams)
    click.echo(f"promotion request {request['id']} for release {release_id} by {actor}: waiting for "
               f"{_waiting(request)}")
    for entry in request["required"]:
        click.echo(f"  {entry['team']}: {' and '.join(entry['why'])} ({', '.join(entry['nodes'])})")


def _signature(registry, request_id: int, actor: str, key: str | None, signature: str | None) -> str | None:
    """The approval's signature: made here with ``key`` over the request's payload, or given."""
    if key and signature:
        raise click.UsageError("give --key or --signature, not both")
    if not key:
        return signature
    from depmesh.governance.approvals import get_request
    from depmesh.signing import SignatureError, payload, sign

    request = registry_call(lambda: get_request(registry, request_id))
    try:
        return sign(key, payload(registry, request, actor=actor))
    except SignatureError as exc:
        raise click.ClickException(str(exc)) from None


def _decide(request_id: int, actor: str | None, reason: str, catalog: str | None, home: str | None,
            approve: bool, key: str | None = None, signature: str | None = None) -> bool:
    """True when the decision changed what serves (a promotion, or a canary's first step)."""
    from depmesh.rollout.decisions import decide_and_apply

    actor = acting(actor)
    mesh, teams, registry = _governed(home, catalog)
    before = registry.last_transition_id()
    signed = _signature(registry, request_id, actor, key, signature) if approve else None
    done = registry_call(lambda: decide_and_apply(registry, mesh, teams, request_id, actor=actor, reason=reason,
                                                  approve=approve, signature=signed))
    _deliver(registry, teams)
    request = done["request"]
    if done["action"] == "rejected":
        click.echo(f"promotion request {request_id} rejected by {actor}: release {request['release_id']} stays "
                   "where it is")
        return False
    if done["action"] == "waiting":
        click.echo(f"approved by {actor} for {', '.join(request['decisions'][-1]['teams'])}; still waiting for "
                   f"{_waiting(request)}")
        return False
    release_id = request["release_id"]
    if done["action"] == "canary":
        rollout = done["rollout"]
        click.echo(f"promotion request {request_id} approved by every team concerned; canary rollout "
                   f"{rollout['id']} of release {release_id} started at {rollout['plan'].steps[0].percent:g}% "
                   "(the canary_rollouts sensor, or depmesh rollout advance, moves it on)")
        return True
    with_stage_events(home, registry, lambda: None, before=before)
    click.echo(f"promotion request {request_id} approved by every team concerned; release {release_id} is "
               "Production: " + ", ".join(f"{n}@{v}" for n, v in done["release"]["members"].items()))
    return True


@release.command("approve")
@REQUEST_ID
@ACTOR_OPTION
@click.option("--reason", required=True, help="Why (recorded in the audit trail).")
@click.option("--key", type=click.Path(dir_okay=False), help="Sign the approval with this ed25519 private key "
              "(e.g. ~/.ssh/id_ed25519; a passphrase from $DEPMESH_KEY_PASSPHRASE). Its public key is yours in "
              "teams.yaml.")
@click.option("--signature", help="A signature made elsewhere: base64 ed25519 over `depmesh release payload "
                                  "REQUEST_ID --actor YOU`.")
@REG_CATALOG_OPTION
@HOME_OPTION
@RESCORE_OPTION
def release_approve(request_id: int, actor: str | None, reason: str, key: str | None, signature: str | None,
                    catalog: str | None, home: str | None, rescore: bool) -> None:
    """Approve a promotion request for every required team of which you are an owner (not your own request).
    The last approval promotes the release. Signed with --key or --signature (required when teams.yaml says
    signatures: required)."""
    if _decide(request_id, actor, reason, catalog, home, approve=True, key=key, signature=signature):
        after_stage_change(home, catalog, rescore)


@release.command("payload")
@REQUEST_ID
@ACTOR_OPTION
@REG_CATALOG_OPTION
@HOME_OPTION
def release_payload(request_id: int, actor: str | None, catalog: str | None, home: str | None) -> None:
    """The bytes an approval of REQUEST_ID by you signs (canonical JSON of the request, its release's versions and
    artifact hashes, and the impact), for signing outside depmesh."""
    from depmesh.governance.approvals import get_request
    from depmesh.signing import payload

    actor = acting(actor)
    _, _, registry = _governed(home, catalog)
    request = registry_call(lambda: get_request(registry, request_id))
    click.echo(payload(registry, request, actor=actor).decode("utf-8"))


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
@click.option("--status", type=click.Choice(["pending", "approved", "rejected", "promoted", "rolled_back", "void"]))
@REG_CATALOG_OPTION
@HOME_OPTION
@FORMAT_OPTION
def release_requests(release_id: int | None, status: str | None, catalog: str | None, home: str | None,
                     fmt: str) -> None:
    """Promotion requests: who asked, which teams must approve, who did, what is still awaited."""
    from depmesh.governance.approvals import list_requests

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


@main.group("rollout")
def rollout_group() -> None:
    """Shadow and canary rollouts of a release beside Production, and their A/B evidence."""


def _f(value, spec: str = ".4g") -> str:
    return "-" if value is None else format(value, spec)


def _show(rollout: dict) -> str:
    from depmesh.rollout.serving import percent_now

    return (f"rollout {rollout['id']} of release {rollout['release_id']}: {rollout['mode']}, {rollout['status']}"
            + (f", step {rollout['step'] + 1} of {len(rollout['plan'].steps)} ({percent_now(rollout):g}%)"
               if rollout["mode"] == "canary" else "")
            + (f" ({rollout['reason']})" if rollout["reason"] else ""))


@rollout_group.command("start")
@RELEASE_ID
@click.option("--shadow", "mode", flag_value="shadow", help="Score every batch with the candidate too; serve Production.")
@click.option("--canary", "mode", flag_value="canary",
              help="Serve the candidate to a growing share of rows (needs an approved request when teams are declared).")
@ACTOR_OPTION
@click.option("--reason", required=True, help="Why (recorded in the audit trail).")
@REG_CATALOG_OPTION
@HOME_OPTION
@RESCORE_OPTION
def rollout_start(release_id: int, mode: str | None, actor: str | None, reason: str, catalog: str | None,
                  home: str | None, rescore: bool) -> None:
    """Start a shadow (or canary) rollout of a Staging release: the next scoring runs serve it."""
    from depmesh.rollout.serving import start

    if mode is None:
        raise click.UsageError("say how: --shadow or --canary")
    actor = acting(actor)
    mesh, teams, registry = governed_registry(home, catalog, read_only=True)
    found = registry_call(lambda: start(registry, mesh, teams, release_id, mode=mode, actor=actor, reason=reason))
    click.echo(_show(found))
    for model, arms in found["candidates"].items():
        click.echo(f"  {model}: production {arms['production'][:12]} beside candidate {arms['candidate'][:12]}")
    after_stage_change(home, catalog, rescore)


@rollout_group.command("status")
@REG_CATALOG_OPTION
@HOME_OPTION
@FORMAT_OPTION
def rollout_status(catalog: str | None, home: str | None, fmt: str) -> None:
    """Every rollout of the mesh, and the active one's current step figures per model."""
    from depmesh.rollout.arms import step_figures
    from depmesh.rollout.canary import summarize
    from depmesh.rollout.serving import list_rollouts

    _, _, registry = governed_registry(home, catalog, read_only=True)
    found = list_rollouts(registry)
    if fmt == "json":
        click.echo(json.dumps([{**r, "plan": None} | {"summary": summarize(step_figures(registry, r["id"], r["step"]))}
                               for r in found], indent=2, default=str))
        return
    if not found:
        click.echo(f"no rollouts of mesh {registry.mesh} yet")
    for r in found:
        click.echo(_show(r))
        if r["status"] == "active":
            for model, s in summarize(step_figures(registry, r["id"], r["step"])).items():
                click.echo(f"  {model}: candidate rows {s['candidate']['rows']:,}; {s['metric']} on them: production "
                           f"{_f(s['paired']['metric'])}, candidate {_f(s['candidate']['metric'])}; shift "
                           f"{_f(s['shift'], '.3f')}, disagreement {_f(s['disagreement'], '.1%')}, latency ratio "
                           f"{_f(s['latency_ratio'], '.2f')}x, errors {s['candidate']['errors']}")


@rollout_group.command("advance")
@REG_CATALOG_OPTION
@HOME_OPTION
@RESCORE_OPTION
def rollout_advance(catalog: str | None, home: str | None, rescore: bool) -> None:
    """Judge the active canary's step now (what the canary_rollouts sensor does every minute under the daemon)."""
    from depmesh.rollout.canary import advance

    mesh, teams, registry = governed_registry(home, catalog, read_only=True)
    outcome = registry_call(lambda: advance(registry, mesh, teams))
    if teams is not None:
        _deliver(registry, teams)
    if outcome is None:
        click.echo("no canary is active")
        return
    click.echo(f"rollout {outcome['rollout']} step {outcome['step'] + 1}: {outcome['verdict']}"
               + (f" -> {outcome['action']}" + (f" to {outcome['percent']:g}%" if outcome.get("percent") else "")
                  if outcome.get("action") else ""))
    for reason in outcome["reasons"]:
        click.echo(f"  {reason}")
    if outcome.get("action"):
        after_stage_change(home, catalog, rescore)


@rollout_group.command("stop")
@ACTOR_OPTION
@click.option("--reason", required=True, help="Why (recorded in the audit trail).")
@REG_CATALOG_OPTION
@HOME_OPTION
@RESCORE_OPTION
def rollout_stop(actor: str | None, reason: str, catalog: str | None, home: str | None, rescore: bool) -> None:
    """Stop the active rollout: Production serves every row again (any member may)."""
    from depmesh.rollout.serving import stop

    actor = acting(actor)
    _, teams, registry = governed_registry(home, catalog, read_only=True)
    if teams is not None:
        registry_call(lambda: teams.require_member(actor, doing="stop a rollout"))
    click.echo(_show(registry_call(lambda: stop(registry, actor=actor, reason=reason))))
    after_stage_change(home, catalog, rescore)


@rollout_group.command("report")
@click.argument("rollout_id", type=click.IntRange(1, 2**63 - 1), required=False, metavar="[ROLLOUT_ID]")
@REG_CATALOG_OPTION
@HOME_OPTION
@click.option("--format", "fmt", type=click.Choice(["table", "json", "html"]), default="table", show_default=True)
def rollout_report(rollout_id: int | None, catalog: str | None, home: str | None, fmt: str) -> None:
    """The A/B evidence of a rollout (default: the active or latest one): per model and step each arm's metric,
    the bootstrap interval of the difference and a decision; html writes the page the release links to and
    prints its path."""
    from dagster import DagsterInstance

    from depmesh.assets.io import storage_dir
    from depmesh.cli.common import existing_home
    from depmesh.rollout.evidence import evidence, report_markdown, write_report
    from depmesh.rollout.serving import active_rollout, get_rollout, list_rollouts

    mesh, _, registry = governed_registry(home, catalog, read_only=True)
    found = (registry_call(lambda: get_rollout(registry, rollout_id)) if rollout_id else
             active_rollout(registry) or next(iter(reversed(list_rollouts(registry))), None))
    if found is None:
        raise click.ClickException(f"no rollouts of mesh {mesh.name} yet")
    result = evidence(registry, mesh, found)
    if fmt == "json":
        click.echo(json.dumps(result, indent=2, default=str))
    elif fmt == "html":
        instance = DagsterInstance.from_config(str(existing_home(home)))
        try:
            click.echo(str(write_report(storage_dir(instance), result)))
        finally:
            instance.dispose()
    else:
        click.echo(report_markdown(result))

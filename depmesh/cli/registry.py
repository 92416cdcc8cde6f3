"""The registry's commands: releases (list, show, promote, rollback) and versions (history, migrate)."""

from __future__ import annotations

import json
import sys

import click

from depmesh.cli.app import main
from depmesh.cli.common import (
    CATALOG_HELP,
    FORMAT_OPTION,
    existing_home,
    table,
    writable_home,
)


def open_mesh_registry(home: str | None, catalog: str | None, *, read_only: bool = False):
    """The registry of the catalog's mesh, verifying artifacts in the instance's store; when the mesh declares
    its teams, promotions need approvals and rollbacks an on-call member."""
    return governed_registry(home, catalog, read_only=read_only)[2]


def governed_registry(home: str | None, catalog: str | None, *, read_only: bool = False):
    """(mesh, teams or None, registry) of the catalog's mesh."""
    from depmesh.artifacts import ArtifactStore
    from depmesh.assets.io import artifacts_dir
    from depmesh.cli.common import load_mesh_teams
    from depmesh.governance import open_governed
    from depmesh.instance import prepare_home
    from depmesh.registry.store import RegistryError, default_url

    mesh, teams = load_mesh_teams(catalog)
    path = existing_home(home) if read_only else writable_home(home, prepare_home)
    artifacts = ArtifactStore(artifacts_dir(path))
    try:
        registry = open_governed(default_url(path), mesh, artifacts, teams=teams)
    except RegistryError as exc:
        raise click.ClickException(str(exc)) from None
    return mesh, teams, registry


def rollout_report_of(home: str | None, release_id: int) -> str | None:
    """The release's rollout report page, when a rollout of it wrote one."""
    from depmesh.assets.io import local_storage
    from depmesh.rollout.evidence import report_path

    path = report_path(local_storage(existing_home(home)), release_id)  # reports stay on local disk
    return str(path) if path.is_file() else None


def acting(actor: str | None) -> str:
    """The actor of a change: --actor, $DEPMESH_ACTOR or the OS user, as DEPMESH_IDENTITY binds it."""
    from depmesh.teams import ActorError, resolve_actor

    try:
        return resolve_actor(actor)
    except ActorError as exc:
        raise click.UsageError(str(exc)) from None


def with_stage_events(home: str | None, registry, fn, before: int | None = None):
    """Run a registry operation that moves stages, then show each move in the
    Dagster UI as an observation on its model and on the mesh's release asset
    (``before``: the audit entry after which to show them, when the move was made already)."""
    from dagster import DagsterInstance

    from depmesh.assets.release import release_key
    from depmesh.assets.stages import report_stage_changes

    before = registry.last_transition_id() if before is None else before
    out = registry_call(fn)
    path = existing_home(home)
    instance = DagsterInstance.from_config(str(path))
    try:
        report_stage_changes(instance, registry, before, release_key(registry.mesh))
    finally:
        instance.dispose()
    return out


def mesh_serves_production(catalog: str | None) -> bool:
    from depmesh.cli.common import load_mesh

    return load_mesh(catalog).serving.mode == "production"


def registry_call(fn):
    """Run a registry operation; its refusals are errors the user can act on."""
    from depmesh.registry import RegistryError
    from depmesh.teams import ActorError

    try:
        return fn()
    except (RegistryError, ActorError) as exc:
        raise click.ClickException(str(exc)) from None


HOME_OPTION = click.option("--home", type=click.Path(file_okay=False),
                           help="Dagster instance folder whose registry to use (default as `depmesh run`).")
REG_CATALOG_OPTION = click.option("--catalog", help=CATALOG_HELP + " Its mesh name picks the releases and versions.")
ACTOR_OPTION = click.option("--actor", help="Who acts, recorded in the audit trail (default: $DEPMESH_ACTOR, else the "
                                             "operating-system user; DEPMESH_IDENTITY may bind it: see docs/content/guides/approvals.md).")
RESCORE_OPTION = click.option(
    "--rescore", is_flag=True,
    help="Re-score at once, in this process, the scores and consumers whose served versions this changed (else the "
         "serve_production sensor does it under the daemon; or later: depmesh serving rescore).")


RELEASE_ID = click.argument("release_id", type=click.IntRange(1, 2**63 - 1), metavar="RELEASE_ID")


def after_stage_change(home: str | None, catalog: str | None, rescore: bool) -> None:
    """Re-score now (--rescore) or say what will, after a command that changed what serves."""
    from dagster import DagsterInstance

    from depmesh.catalog import load_catalog
    from depmesh.rollout.production import stale_scores
    from depmesh.rollout.rescore import rescore as run_rescore

    mesh, _, registry = governed_registry(home, catalog, read_only=True)
    if mesh.serving.mode == "latest":
        click.echo(f"mesh {mesh.name} serves what each run trains (serving: latest): the scores do not follow the "
                   "registry")
        return
    instance = DagsterInstance.from_config(str(existing_home(home)))
    try:
        if not rescore:
            stale = stale_scores(instance, registry, mesh)
            if stale:
                click.echo(f"to re-score ({len(stale)}): {', '.join(sorted(stale))}: the serve_production sensor "
                           "does it under the daemon, or now: depmesh serving rescore")
            return
        from depmesh.cli.common import catalog_path

        outcome = run_rescore(str(catalog_path(catalog)), instance, registry, load_catalog(catalog_path(catalog)))
        _report(outcome)
        if not outcome.ok:
            sys.exit(1)
    finally:
        instance.dispose()


def _report(outcome) -> None:
    if not outcome.stale:
        click.echo("re-score: every scores node already serves what the registry says; nothing was run")
        return
    for node, why in sorted(outcome.stale.items()):
        click.echo(f"re-score {node}: {why}")
    run = outcome.outcome
    status = "succeeded" if run.ok else ("FAILED" if not run.result.success else f"BLOCKED at {', '.join(run.blocked)}")
    click.echo(f"re-scored {', '.join(outcome.selection)} in run {run.run_id}: {status} in {run.seconds:.1f}s "
               "(no model retrained)")


@main.group()
def release() -> None:
    """Releases: the model versions that belong together; promote and roll back."""


@release.command("list")
@REG_CATALOG_OPTION
@HOME_OPTION
@FORMAT_OPTION
def release_list(catalog: str | None, home: str | None, fmt: str) -> None:
    """Every release of the mesh with its status and members."""
    registry = open_mesh_registry(home, catalog, read_only=True)
    items = registry.releases()
    if fmt == "json":
        click.echo(json.dumps(items, indent=2, default=str))
        return
    rows = [[r["id"], r["status"], str(r["created_at"])[:19], str(r["promoted_at"] or "")[:19],
             ", ".join(f"{n}@{v[:8]}" for n, v in r["members"].items())] for r in items]
    click.echo(table(rows, ["id", "status", "created", "promoted", "members"]) if rows
               else f"no releases of mesh {registry.mesh} yet")


@release.command("show")
@RELEASE_ID
@REG_CATALOG_OPTION
@HOME_OPTION
@FORMAT_OPTION
def release_show(release_id: int, catalog: str | None, home: str | None, fmt: str) -> None:
    """One release: status, members, each member's stage, metrics and whether its artifact verifies."""
    registry = open_mesh_registry(home, catalog, read_only=True)
    item = registry_call(lambda: registry.release(release_id))
    members = []
    for node, version in item["members"].items():
        info = registry.version(node, version) or {}
        problems = registry.artifact_problems({node: version})
        members.append({"node": node, "version": version, "stage": info.get("stage"),
                        "metrics": info.get("metrics", {}), "trained_against": info.get("upstream_models", {}),
                        "artifact": "verified" if not problems else problems[0]})
    report = rollout_report_of(home, release_id)
    if fmt == "json":
        click.echo(json.dumps({**item, "members": members, "rollout_report": report}, indent=2, default=str))
        return
    click.echo(f"release {item['id']}: {item['status']} (created {str(item['created_at'])[:19]}, run {item['run_id']})")
    if item["status"] in ("Production", "PartlyRolledBack"):
        from depmesh.rollout.production import production_set

        production = production_set(registry)
        if production.release_id == item["id"]:
            click.echo(f"serving since {production.promoted_at}: {production.describe()}"
                       + ("" if mesh_serves_production(catalog) else " (this mesh serves latest: its scores do not "
                          "follow the registry)"))
    if report:
        click.echo(f"rollout report (shadow/canary, A/B evidence): {report}")
    rows = [[m["node"], m["version"], m["stage"], ", ".join(f"{k}={v:.3g}" for k, v in list(m["metrics"].items())[:3]),
             ", ".join(f"{k}@{v[:8]}" for k, v in m["trained_against"].items()) or "-",
             "verified" if m["artifact"] == "verified" else "FAILED"] for m in members]
    click.echo(table(rows, ["node", "version", "stage", "metrics", "trained against", "artifact"]))
    for m in members:
        if m["artifact"] != "verified":
            click.echo(f"artifact FAILED: {m['artifact']}")


@release.command("promote")
@RELEASE_ID
@ACTOR_OPTION
@click.option("--reason", required=True, help="Why (recorded in the audit trail).")
@REG_CATALOG_OPTION
@HOME_OPTION
@RESCORE_OPTION
def release_promote(release_id: int, actor: str | None, reason: str, catalog: str | None, home: str | None,
                    rescore: bool) -> None:
    """Make every version of a release Production at once (atomic), after
    verifying every member's artifact; archive what it replaces. When the mesh
    declares its teams, only an approved request allows it (release request)."""
    actor = acting(actor)
    _, teams, registry = governed_registry(home, catalog, read_only=True)
    item = with_stage_events(home, registry, lambda: registry.promote(release_id, actor=actor, reason=reason))
    click.echo(f"release {release_id} is Production: " + ", ".join(f"{n}@{v}" for n, v in item["members"].items()))
    after_stage_change(home, catalog, rescore)


@release.command("rollback")
@click.option("--node", help="Roll back this model alone (to its previous Production version).")
@click.option("--with-dependents", is_flag=True, help="With --node: also roll back the models trained against it.")
@ACTOR_OPTION
@click.option("--reason", required=True, help="Why (recorded in the audit trail).")
@REG_CATALOG_OPTION
@HOME_OPTION
@RESCORE_OPTION
def release_rollback(node: str | None, with_dependents: bool, actor: str | None, reason: str, catalog: str | None,
                     home: str | None, rescore: bool) -> None:
    """Make the previous release Production again (atomic), or one model with --node. When the mesh declares its
    teams, any on-call member may roll back, without approval; the teams of the models and their consumers are
    notified."""
    from depmesh.governance.approvals import notify_change
    from depmesh.notify import deliver_quietly

    actor = acting(actor)
    mesh, teams, registry = governed_registry(home, catalog, read_only=True)
    if node is None:
        current = registry.state()["production_release_id"]
        item = with_stage_events(home, registry, lambda: registry.rollback(actor=actor, reason=reason))
        click.echo(f"release {item['id']} is Production again: "
                   + ", ".join(f"{n}@{v}" for n, v in item["members"].items()))
        nodes = sorted(item["members"])
        payload = {"from_release": current, "to_release": item["id"]}
    else:
        moves = with_stage_events(home, registry, lambda: registry.rollback_model(
            node, actor=actor, reason=reason, with_dependents=with_dependents))
        for name, (before, after) in moves.items():
            click.echo(f"{name}: {before} -> {after}")
        nodes = sorted(moves)
        payload = {"moves": {n: {"from": b, "to": a} for n, (b, a) in moves.items()}}
    if teams is not None:
        notify_change(registry, mesh, teams, "rollback", nodes, by=actor, reason=reason, **payload)
        deliver_quietly(registry, teams, lambda m: click.echo(m, err=True))
    after_stage_change(home, catalog, rescore)


@main.group()
def registry() -> None:
    """The model registry: versions, stages and their audit trail."""


@registry.command("migrate")
@REG_CATALOG_OPTION
@HOME_OPTION
def registry_migrate(catalog: str | None, home: str | None) -> None:
    """Bring the registry database to the newest migration (runs do this on first use too)."""
    reg = open_mesh_registry(home, catalog)
    click.echo(f"registry at migration {reg.schema_revision()} (head {reg.head_revision()})")
    reg.dispose()


@registry.command("history")
@click.argument("node")
@REG_CATALOG_OPTION
@HOME_OPTION
@FORMAT_OPTION
def registry_history(node: str, catalog: str | None, home: str | None, fmt: str) -> None:
    """Every stage transition of a model's versions: from, to, actor, reason, time, run."""
    reg = open_mesh_registry(home, catalog, read_only=True)
    items = reg.history(node)
    if fmt == "json":
        click.echo(json.dumps({"node": node, "versions": reg.versions(node), "transitions": items}, indent=2, default=str))
        return
    if not items:
        click.echo(f"no versions of {node} are registered")
        return
    rows = [[str(t["at"])[:19], t["version"], t["from_stage"] or "-", t["to_stage"], t["actor"], t["reason"][:60],
             t["release_id"] or ""] for t in items]
    click.echo(table(rows, ["time", "version", "from", "to", "actor", "reason", "release"]))

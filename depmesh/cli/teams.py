"""Teams and their notifications: `depmesh teams list | validate`, `depmesh notifications list | deliver`."""

from __future__ import annotations

import json

import click

from depmesh.cli.app import main
from depmesh.cli.common import CATALOG_OPTION, FORMAT_OPTION, load_mesh_teams, table
from depmesh.cli.registry import HOME_OPTION

TEAMS_OPTION = click.option("--teams", "teams_file", type=click.Path(dir_okay=False),
                            help="The teams file (default: teams.yaml beside the catalog).")


@main.group()
def teams() -> None:
    """The teams that share the mesh: members, roles, webhooks (teams.yaml beside the catalog)."""


@teams.command("validate")
@CATALOG_OPTION
@TEAMS_OPTION
def teams_validate(catalog: str | None, teams_file: str | None) -> None:
    """Exit 0 when the teams file is valid (every node owner declared, roles known), else name every problem."""
    mesh, found = load_mesh_teams(catalog, teams_file, required=True)
    people = {p for t in found.teams.values() for p in t.members}
    click.echo(f"{found.path.name}: {len(found.teams)} teams, {len(people)} people; valid for mesh {mesh.name}")


@teams.command("list")
@CATALOG_OPTION
@TEAMS_OPTION
@FORMAT_OPTION
def teams_list(catalog: str | None, teams_file: str | None, fmt: str) -> None:
    """Each team with its members and roles, the nodes it owns, and whether its webhook is set (never the URL)."""
    mesh, found = load_mesh_teams(catalog, teams_file, required=True)
    rows = [{"team": t.name, "members": {p: list(r) for p, r in t.members.items()},
             "owns": [n.name for n in mesh.nodes if n.owner == t.name],
             "webhook": "set" if t.webhook_url() else (f"{t.webhook} unset" if t.webhook else "none")}
            for t in found.teams.values()]
    if fmt == "json":
        click.echo(json.dumps(rows, indent=2))
        return
    click.echo(table([[r["team"], "; ".join(f"{p} ({', '.join(roles)})" for p, roles in r["members"].items()),
                       ", ".join(r["owns"]) or "-", r["webhook"]] for r in rows],
                     ["team", "members (roles)", "owns", "webhook"]))


@main.group()
def notifications() -> None:
    """Notifications to teams' webhooks: queued with each change, delivered after it."""


@notifications.command("list")
@CATALOG_OPTION
@HOME_OPTION
@click.option("--status", type=click.Choice(["pending", "sending", "sent", "failed", "no-webhook"]))
@FORMAT_OPTION
def notifications_list(catalog: str | None, home: str | None, status: str | None, fmt: str) -> None:
    from depmesh.cli.registry import open_mesh_registry
    from depmesh.notify import listing

    registry = open_mesh_registry(home, catalog, read_only=True)
    try:
        rows = listing(registry, status)
    finally:
        registry.dispose()
    if fmt == "json":
        click.echo(json.dumps(rows, indent=2, default=str))
        return
    click.echo(table([[r["id"], r["team"], r["event"], r["status"], r["attempts"], str(r["created_at"])[:19],
                       (r["last_error"] or "")[:60]] for r in rows],
                     ["id", "team", "event", "status", "attempts", "queued", "last error"]) if rows
               else "no notifications")


@notifications.command("deliver")
@CATALOG_OPTION
@HOME_OPTION
def notifications_deliver(catalog: str | None, home: str | None) -> None:
    """Post the pending notifications now (the deliver_notifications sensor does it every 30 s under the daemon).
    Exit 1 when some could not be delivered."""
    import sys

    from depmesh.cli.registry import open_mesh_registry
    from depmesh.notify import deliver

    _, found = load_mesh_teams(catalog)
    registry = open_mesh_registry(home, catalog)
    try:
        counts = deliver(registry, found)
    finally:
        registry.dispose()
    click.echo(f"sent {counts['sent']}, to retry {counts['retry']}, given up {counts['failed']}")
    sys.exit(0 if not counts["retry"] and not counts["failed"] else 1)


@teams.command("adopt")
@CATALOG_OPTION
@HOME_OPTION
@click.option("--actor", help="Who adopts it: an owner under the declaration the registry recorded.")
@click.option("--reason", required=True, help="Why (recorded in the audit trail).")
@click.option("--remove", is_flag=True, help="Remove the recorded declaration: the mesh's stage changes are then "
                                             "ungoverned (no approvals). Audited.")
def teams_adopt(catalog: str | None, home: str | None, actor: str | None, reason: str, remove: bool) -> None:
    """Make the registry remember this teams.yaml as the mesh's governance (or, --remove, none). Once a mesh has
    declared its teams, stage changes made under any other declaration, or none, are refused until an owner under
    the recorded one adopts the change."""
    from depmesh.cli.registry import acting, governed_registry, registry_call

    actor = acting(actor)
    mesh, found, registry = governed_registry(home, catalog)
    try:
        record = registry_call(lambda: registry.adopt_governance(actor=actor, reason=reason, remove=remove))
    finally:
        registry.dispose()
    if record.get("teams_sha256"):
        click.echo(f"mesh {mesh.name}: the registry now governs by {found.path} ({record['teams_sha256'][:12]}, "
                   f"signatures {record['policy']['signatures']}), adopted by {record['declared_by']}")
    else:
        click.echo(f"mesh {mesh.name}: the teams declaration was removed by {record['declared_by']}; stage changes "
                   "need no approvals now")

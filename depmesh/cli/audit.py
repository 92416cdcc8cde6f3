"""`depmesh audit verify | head`: the registry's hash-chained audit trail (depmesh.registry.chain)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from depmesh.cli.app import main
from depmesh.cli.registry import HOME_OPTION, REG_CATALOG_OPTION, open_mesh_registry

MAX_HEAD_BYTES = 100_000


@main.group()
def audit() -> None:
    """The audit trail's hash chain: verify it, export its head."""


def _state(home: str | None, catalog: str | None, kept: dict | None = None) -> tuple[str, dict]:
    """(mesh, the chains' verification); with ``kept``, its problems against that head are added too."""
    from depmesh.registry.chain import kept_head_problems, verify

    registry = open_mesh_registry(home, catalog, read_only=True)
    try:
        with registry.engine.connect() as conn:
            state = verify(conn, registry.mesh)
            if kept is not None:
                if kept.get("mesh") not in (None, registry.mesh):
                    raise click.BadParameter(f"that head is of mesh {kept.get('mesh')!r}, not {registry.mesh!r}",
                                             param_hint="--head")
                state["problems"] += kept_head_problems(conn, registry.mesh, state, kept)
            return registry.mesh, state
    finally:
        registry.dispose()


def _read_head(text: str) -> dict:
    source = Path(text)
    raw = source.read_bytes()[:MAX_HEAD_BYTES + 1] if source.is_file() else text.encode()
    if len(raw) > MAX_HEAD_BYTES:
        raise click.BadParameter(f"more than {MAX_HEAD_BYTES} bytes", param_hint="--head")
    try:
        head = json.loads(raw)
    except ValueError as exc:
        raise click.BadParameter(f"not the JSON that depmesh audit head prints ({exc})", param_hint="--head") from None
    ok = isinstance(head, dict) and isinstance(head.get("heads"), dict) and all(
        isinstance(v, dict) and isinstance(v.get("rows"), int) and isinstance(v.get("head"), str)
        for v in head["heads"].values())
    if not ok:
        raise click.BadParameter("not the JSON that depmesh audit head prints", param_hint="--head")
    return head


@audit.command("verify")
@REG_CATALOG_OPTION
@HOME_OPTION
@click.option("--head", "kept", help="A head kept elsewhere (a file, or the JSON `depmesh audit head` printed): "
                                     "also catches the newest rows deleted.")
def audit_verify(catalog: str | None, home: str | None, kept: str | None) -> None:
    """Exit 0 when the mesh's stage changes and audit events are an unbroken hash chain (and, with --head, still
    extend the kept head); else name each edited, deleted, reordered or inserted row and exit 1."""
    kept_head = _read_head(kept) if kept else None
    mesh, state = _state(home, catalog, kept_head)
    problems = state["problems"]
    for chain, head in state["heads"].items():
        click.echo(f"{chain}: {head['rows']} rows, head {head['head'][:16]}")
    if problems:
        for problem in problems:
            click.echo(f"BROKEN: {problem}", err=True)
        sys.exit(1)
    click.echo(f"mesh {mesh}: the audit trail verifies" + (" and extends the kept head" if kept_head else ""))


@audit.command("head")
@REG_CATALOG_OPTION
@HOME_OPTION
@click.option("--notify", is_flag=True, help="Also send it to every team's webhook (keep a copy outside the "
                                             "database: deleting the newest rows is caught against it).")
def audit_head(catalog: str | None, home: str | None, notify: bool) -> None:
    """Print the chain's head (JSON: rows and newest hash per chain) to keep elsewhere."""
    from datetime import UTC, datetime

    mesh, state = _state(home, catalog)
    head = {"mesh": mesh, "at": datetime.now(UTC).isoformat(timespec="seconds"),
            "heads": {c: {"rows": h["rows"], "head": h["head"]} for c, h in state["heads"].items()},
            "verified": state["ok"]}
    click.echo(json.dumps(head, sort_keys=True))
    if notify:
        from depmesh.cli.common import load_mesh_teams
        from depmesh.notify import deliver_quietly, enqueue

        _, teams = load_mesh_teams(catalog)
        if teams is None:
            raise click.ClickException(f"mesh {mesh} declares no teams, so there is no webhook to notify")
        registry = open_mesh_registry(home, catalog)
        try:
            with registry.transaction() as conn:
                for team in teams.teams:
                    enqueue(conn, registry.mesh, teams, team, "audit_head", head)
            deliver_quietly(registry, teams, lambda m: click.echo(m, err=True))
        finally:
            registry.dispose()

"""`depmesh serving`: what the scores serve now, and re-scoring what the registry changed."""

from __future__ import annotations

import json

import click

from depmesh.cli.app import main
from depmesh.cli.common import FORMAT_OPTION, existing_home, table
from depmesh.cli.registry import HOME_OPTION, REG_CATALOG_OPTION, after_stage_change, governed_registry


def serving_rows(instance, registry, mesh) -> list[dict]:
    """Per scores node: what its latest materialization served, and whether that is what the registry says now."""
    from depmesh.rollout.production import served_record, stale_scores

    stale = stale_scores(instance, registry, mesh)
    rows = []
    for node in mesh.nodes:
        if node.kind != "scores":
            continue
        record = served_record(instance, node.name) or {}
        rows.append({"node": node.name, "mode": record.get("mode", "never served"),
                     "release": record.get("release_id"), "status": record.get("status"),
                     "versions": record.get("versions", {}), "approvers": record.get("approvers", []),
                     "current": node.name not in stale, "why": stale.get(node.name, "")})
    return rows


@main.group("serving")
def serving_group() -> None:
    """What the scores serve: the registry's Production set (or what the catalog's serving: declares)."""


@serving_group.command("status")
@REG_CATALOG_OPTION
@HOME_OPTION
@FORMAT_OPTION
def serving_status(catalog: str | None, home: str | None, fmt: str) -> None:
    """Per scores node: the release and versions its stored table was scored with, who approved them, and
    whether that is still what the registry says serves."""
    from dagster import DagsterInstance

    from depmesh.rollout.production import production_set

    mesh, _, registry = governed_registry(home, catalog, read_only=True)
    instance = DagsterInstance.from_config(str(existing_home(home)))
    try:
        rows = serving_rows(instance, registry, mesh)
        production = production_set(registry)
    finally:
        instance.dispose()
    if fmt == "json":
        click.echo(json.dumps({"mesh": mesh.name, "serving": mesh.serving.mode,
                               "production": {"release_id": production.release_id, "status": production.status,
                                              "versions": production.versions,
                                              "approvers": list(production.approvers)},
                               "nodes": rows}, indent=2, default=str))
        return
    click.echo(f"mesh {mesh.name}: serving {mesh.serving.mode}"
               + (f"; Production: {production.describe()}" if mesh.serving.mode == "production" else
                  " (what each run trains, not governed by the registry)"))
    click.echo(table([[r["node"], r["mode"], r["release"] or "-", r["status"] or "-",
                       ", ".join(f"{m}@{v[:12]}" for m, v in r["versions"].items()) or "-",
                       ", ".join(r["approvers"]) or "-", "yes" if r["current"] else f"NO: {r['why']}"] for r in rows],
                     ["node", "served", "release", "status", "versions", "approved by", "current"]))


@serving_group.command("rescore")
@REG_CATALOG_OPTION
@HOME_OPTION
def serving_rescore(catalog: str | None, home: str | None) -> None:
    """Re-score now the scores nodes whose served versions differ from the registry's, and their consumers (no
    model is retrained). Exits 1 when the re-score failed or a check blocked it."""
    after_stage_change(home, catalog, rescore=True)

"""`depmesh serving`: what the scores serve now, and re-scoring what the registry changed."""

from __future__ import annotations

import json

import click

from depmesh.cli.app import main
from depmesh.cli.common import FORMAT_OPTION, existing_home, table
from depmesh.cli.registry import (
    HOME_OPTION,
    REG_CATALOG_OPTION,
    after_stage_change,
    governed_registry,
)


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

    from depmesh.rollout.production import serving_state

    mesh, _, registry = governed_registry(home, catalog, read_only=True)
    instance = DagsterInstance.from_config(str(existing_home(home)))
    try:
        state = serving_state(instance, registry, mesh)
    finally:
        instance.dispose()
    production = state["production"]
    if fmt == "json":
        click.echo(json.dumps({"mesh": mesh.name, "serving": mesh.serving.mode,
                               "production": {"release_id": production.release_id, "status": production.status,
                                              "versions": production.versions,
                                              "approvers": list(production.approvers),
                                              "since": production.promoted_at},
                               "nodes": state["nodes"], "staging": state["staging"], "history": state["history"]},
                              indent=2, default=str))
        return
    click.echo(f"mesh {mesh.name}: serving {mesh.serving.mode}"
               + (f"; Production: {production.describe()}" if mesh.serving.mode == "production" else
                  " (what each run trains, not governed by the registry)"))
    rows = state["nodes"]
    click.echo(table([list(r.values()) for r in rows], [k.replace("_", " ") for k in rows[0]]) if rows
               else "no scores nodes")
    if state["staging"]:
        click.echo("\nwaiting in Staging:")
        click.echo(table([list(r.values()) for r in state["staging"]], [k.replace("_", " ") for k in state["staging"][0]]))


@serving_group.command("rescore")
@REG_CATALOG_OPTION
@HOME_OPTION
def serving_rescore(catalog: str | None, home: str | None) -> None:
    """Re-score now the scores nodes whose served versions differ from the registry's, and their consumers (no
    model is retrained). Exits 1 when the re-score failed or a check blocked it."""
    after_stage_change(home, catalog, rescore=True)

"""`depmesh trace`: a prediction back to its raw rows, or raw rows forward to what they influenced."""

from __future__ import annotations

import json
from pathlib import Path

import click

from depmesh.cli.app import main
from depmesh.cli.common import CATALOG_OPTION, existing_home, load_mesh


@main.command()
@click.argument("node", required=False)
@click.argument("key", required=False)
@click.option("--from", "source", metavar="NODE", help="Trace forward from these rows of NODE (KEY selects them).")
@CATALOG_OPTION
@click.option("--home", type=click.Path(file_okay=False), help="Dagster instance folder (default as `depmesh run`).")
@click.option("--format", "fmt", type=click.Choice(["table", "json", "html"]), default="table", show_default=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Where --format html writes (default: stdout).")
def trace(node: str | None, key: str | None, source: str | None, catalog: str | None, home: str | None, fmt: str,
          output: str | None) -> None:
    """Back: `depmesh trace scores/late_arrival 2193` (the score row whose key is 2193, or
    COLUMN=VALUE[,COLUMN=VALUE]): the row, the model version that made it, its training and input versions, and
    the feature and raw rows behind it through the catalog's lineage keys.

    Forward: `depmesh trace --from raw/weather "origin=JFK,time_hour=2013-06-01 10:00"`: the rows they reach,
    the model versions trained on them (their recorded input snapshots), the versions trained against those, the
    score rows those versions made, and which models to retrain."""
    from dagster import DagsterInstance

    from depmesh.cli.registry import open_mesh_registry
    from depmesh.trace import (
        TraceError,
        parse_selection,
        render_html,
        render_text,
        trace_back,
        trace_forward,
    )

    mesh = load_mesh(catalog)
    if source is not None:  # `trace --from NODE SELECTION`: the positional is the selection
        if key is not None:
            raise click.UsageError("with --from NODE give one selection: depmesh trace --from raw/weather "
                                   "\"origin=JFK,time_hour=2013-06-01 10:00\"")
        node, key = source, node
    if node is None:
        raise click.UsageError("trace which node? depmesh trace scores/late_arrival KEY, or --from NODE SELECTION")
    if key is None:
        raise click.UsageError("which rows? give a KEY (the rollout key's value) or COLUMN=VALUE[,COLUMN=VALUE]")
    try:
        if "=" in key:
            selection = parse_selection(key)
        elif mesh.rollout is not None:
            selection = {mesh.rollout.key: key}
        else:
            raise TraceError(f"{key!r}: name the column (COLUMN=VALUE); mesh {mesh.name} declares no row key")
    except TraceError as exc:
        raise click.UsageError(str(exc)) from None
    if node not in mesh.names:
        raise click.UsageError(f"no node {node!r} in mesh {mesh.name} (see: depmesh show)")
    registry = open_mesh_registry(home, catalog, read_only=True)
    instance = DagsterInstance.from_config(str(existing_home(home)))
    try:
        found = (trace_forward if source is not None else trace_back)(mesh, instance, registry, node, selection)
    except TraceError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        instance.dispose()
        registry.dispose()
    if fmt == "json":
        click.echo(json.dumps(found, indent=2, default=str))
    elif fmt == "html":
        page = render_html(found)
        if output:
            Path(output).write_text(page, encoding="utf-8")
            click.echo(output)
        else:
            click.echo(page)
    else:
        click.echo(render_text(found))

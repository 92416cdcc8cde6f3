"""`depmesh lineage`: the mesh's lineage as OpenLineage events (depmesh.lineage)."""

from __future__ import annotations

from pathlib import Path

import click

from depmesh.cli.app import main
from depmesh.cli.common import CATALOG_OPTION, load_mesh


@main.group("lineage")
def lineage_group() -> None:
    """Lineage that leaves depmesh: OpenLineage events. Runs emit them as they go when OPENLINEAGE_URL (or an
    openlineage.yml) is set; `export` writes the static lineage of a catalog that has not run yet."""


@lineage_group.command("export")
@CATALOG_OPTION
@click.option("--format", "fmt", type=click.Choice(["openlineage"]), default="openlineage", show_default=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False, writable=True), default=None,
              help="Write here (one event per line; default: standard output).")
def lineage_export(catalog: str | None, fmt: str, output: str | None) -> None:
    """Every node as an OpenLineage job event: its inputs (a model is a dataset its consumers read), its
    output's schema (from the contract) and column lineage (from the catalog). One JSON event per line."""
    from depmesh.lineage.events import static_events, to_json

    mesh = load_mesh(catalog)
    lines = [to_json(event) for event in static_events(mesh)]
    text = "\n".join(lines) + "\n"
    if output:
        Path(output).write_text(text, encoding="utf-8")
        click.echo(f"{len(lines)} OpenLineage job events of mesh {mesh.name} written to {output}", err=True)
    else:
        click.echo(text, nl=False)


@lineage_group.command("schema")
@click.option("-o", "--output", type=click.Path(dir_okay=False, writable=True), default=None,
              help="Write here (default: standard output).")
def lineage_schema(output: str | None) -> None:
    """The JSON Schema of depmesh's own OpenLineage facets (depmesh_model, depmesh_serving), as published in
    docs/content/schemas/openlineage-facets.schema.json."""
    import json

    from depmesh.lineage.facets import SCHEMAS

    text = json.dumps(SCHEMAS, indent=2) + "\n"
    if output:
        Path(output).write_text(text, encoding="utf-8")
    else:
        click.echo(text, nl=False)

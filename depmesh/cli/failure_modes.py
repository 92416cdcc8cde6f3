"""The failure-mode catalogue: `depmesh failure-modes validate | list | coverage`, `depmesh drill`."""

from __future__ import annotations

import html
import json
import sys
from pathlib import Path

import click

from depmesh.cli.app import main
from depmesh.cli.common import CATALOG_OPTION, load_mesh, table

MODES_OPTION = click.option("--modes", "modes_file", type=click.Path(dir_okay=False),
                            help="The failure-mode catalogue (default: failure_modes.yaml beside the catalog).")


def load_catalogue(catalog: str | None, modes_file: str | None):
    from depmesh.failure_modes.catalogue import (
        FailureModeError,
        catalogue_path,
        load_failure_modes,
    )
    from depmesh.teams import TeamsError

    mesh = load_mesh(catalog)
    try:
        found = load_failure_modes(mesh, Path(modes_file) if modes_file else None)
    except TeamsError as exc:  # the catalogue names teams: an invalid teams.yaml beside it is named, not a traceback
        raise click.ClickException(str(exc).replace("catalog", "teams file", 1)) from None
    except FailureModeError as exc:
        raise click.ClickException(str(exc).replace("catalog", "failure-mode catalogue", 1)) from None
    if found is None:
        raise click.ClickException(f"mesh {mesh.name} has no failure-mode catalogue: write {catalogue_path(mesh)} "
                                   "(see docs/content/guides/failure-modes.md)")
    return mesh, found


@main.group("failure-modes")
def failure_modes() -> None:
    """How the mesh fails: the catalogue beside the catalog, bound to nodes and checks."""


@failure_modes.command("validate")
@CATALOG_OPTION
@MODES_OPTION
def validate(catalog: str | None, modes_file: str | None) -> None:
    """Check the catalogue: exit 0, or 1 with every problem named (file, line, mode, field)."""
    _, found = load_catalogue(catalog, modes_file)
    click.echo(f"{found.path}: {len(found.modes)} failure modes, valid")


@failure_modes.command("list")
@CATALOG_OPTION
@MODES_OPTION
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
def list_modes(catalog: str | None, modes_file: str | None, fmt: str) -> None:
    """Every failure mode with its owner, severity and detecting checks."""
    _, found = load_catalogue(catalog, modes_file)
    if fmt == "json":
        click.echo(json.dumps([m.as_json() for m in found.modes], indent=2))
        return
    click.echo(table([[m.id, m.severity, m.layer, m.owner.removeprefix("team:"), len(m.detected_by), m.drill or "-",
                       m.title[:60]] for m in found.modes],
                     ["id", "severity", "layer", "owner", "checks", "drill", "title"]))


def coverage_html(mesh_name: str, cov: dict) -> str:
    def rows(items, cells):
        return "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells(i)) + "</tr>" for i in items)

    modes = rows(cov["by_mode"], lambda m: [m["id"], m["severity"], m["owner"], ", ".join(m["detected_by"]) or
                                            "NONE", m["drill"] or "-"])
    gaps = [("Modes no check detects", cov["undetected_modes"]), ("Nodes no mode names", cov["nodes_without_mode"]),
            ("Checks that serve no mode", cov["checks_without_mode"])]
    sections = "".join(f'<h2>{html.escape(title)} ({len(items)})</h2><ul class="gap">'
                       + "".join(f"<li>{html.escape(i)}</li>" for i in items) + "</ul>" for title, items in gaps)
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>Failure-mode coverage: {html.escape(mesh_name)}</title>
<style>body{{font-family:sans-serif;margin:24px}} table{{border-collapse:collapse}} td,th{{border:1px solid #ccc;padding:3px 8px}}
th{{background:#f3f3f3}}</style></head><body><h1>Failure-mode coverage: {html.escape(mesh_name)}</h1>
<p>{cov["modes"]} failure modes.</p>
<table id="modes"><thead><tr><th>id</th><th>severity</th><th>owner</th><th>detected by</th><th>drill</th></tr></thead>
<tbody>{modes}</tbody></table>{sections}</body></html>"""


@failure_modes.command("coverage")
@CATALOG_OPTION
@MODES_OPTION
@click.option("--format", "fmt", default="table", show_default=True, help="table, json, or a path ending in .html.")
@click.option("--strict", is_flag=True, help="Also fail on checks that serve no mode.")
def coverage_command(catalog: str | None, modes_file: str | None, fmt: str, strict: bool) -> None:
    """Modes with no detecting check, nodes with no mode, checks that serve no
    mode. Exit 1 when a mode has no detecting check or a node has no mode (and,
    with --strict, when a check serves no mode): a CI gate for the catalogue."""
    from depmesh.failure_modes.catalogue import coverage

    mesh, found = load_catalogue(catalog, modes_file)
    cov = coverage(mesh, found)
    failing = bool(cov["undetected_modes"] or cov["nodes_without_mode"] or (strict and cov["checks_without_mode"]))
    if fmt == "json":
        click.echo(json.dumps({**cov, "passed": not failing}, indent=2))
    elif fmt.endswith(".html"):
        Path(fmt).write_text(coverage_html(mesh.name, cov), encoding="utf-8")
        click.echo(f"wrote {fmt}")
    elif fmt == "table":
        click.echo(table([[m["id"], m["severity"], m["owner"].removeprefix("team:"), len(m["detected_by"]),
                           "yes" if m["drill"] else "-"] for m in cov["by_mode"]],
                         ["mode", "severity", "owner", "detecting checks", "drill"]))
        for title, items in (("modes no check detects", cov["undetected_modes"]),
                             ("nodes no mode names", cov["nodes_without_mode"]),
                             ("checks that serve no mode", cov["checks_without_mode"])):
            click.echo(f"\n{title}: " + (", ".join(items) if items else "none"))
    else:
        raise click.BadParameter(f"{fmt!r}: use table, json or a path ending in .html", param_hint="--format")
    sys.exit(1 if failing else 0)


@main.command()
@click.argument("modes", nargs=-1)
@CATALOG_OPTION
@MODES_OPTION
@click.option("--home", type=click.Path(file_okay=False), help="The production instance (only read).")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
def drill(modes: tuple[str, ...], catalog: str | None, modes_file: str | None, home: str | None, fmt: str) -> None:
    """Inject each failure mode's fault (MODES, or every mode that declares a
    drill) into a copy of production in an ephemeral instance, and verify that
    the checks the catalogue names catch it. Exit 1 when one is missed."""
    from dagster import DagsterInstance

    from depmesh.artifacts import ArtifactStore
    from depmesh.assets.io import artifacts_location, data_root
    from depmesh.cli.common import existing_home
    from depmesh.failure_modes.drills import (
        DrillError,
        drillable,
        record_drill,
        run_drill,
    )
    from depmesh.governance import open_governed
    from depmesh.registry.store import default_url
    from depmesh.simulate import InjectionError

    mesh, found = load_catalogue(catalog, modes_file)
    try:
        chosen = drillable(found, list(modes))
    except (DrillError, KeyError) as exc:
        raise click.UsageError(str(exc).strip("'\"")) from None
    path = existing_home(home)
    instance = DagsterInstance.from_config(str(path))  # production is only read
    registry = open_governed(default_url(path), mesh, ArtifactStore(artifacts_location(instance)))
    results = []
    try:
        for mode in chosen:
            click.echo(f"drill {mode.id}: injecting {mode.drill}", err=True)
            try:
                result = run_drill(mesh, mode, instance, data_root(instance))
            except (DrillError, InjectionError) as exc:
                raise click.ClickException(f"drill {mode.id}: {exc}") from None
            record_drill(registry, result)
            results.append(result)
    finally:
        instance.dispose()
    if fmt == "json":
        click.echo(json.dumps([r.as_json() for r in results], indent=2))
    else:
        click.echo(table([[r.mode, r.injection, "CAUGHT" if r.caught else "MISSED", ", ".join(r.caught_by) or "-",
                           ", ".join(r.also_fired) or "-", f"{r.seconds:.1f}"] for r in results],
                         ["mode", "injection", "verdict", "caught by (declared)", "also fired", "seconds"]))
    sys.exit(0 if all(r.caught for r in results) else 1)


@main.group()
def incidents() -> None:
    """Failure modes seen by a failed check or a failed run, one per mode, node and version."""


@incidents.command("list")
@CATALOG_OPTION
@click.option("--home", type=click.Path(file_okay=False), help="Dagster instance folder (default as `depmesh run`).")
@click.option("--mode", help="Only this failure mode (FM-...).")
@click.option("--node", help="Only this node.")
@click.option("--limit", type=click.IntRange(1, 10_000), default=200, show_default=True)
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
def incidents_list(catalog: str | None, home: str | None, mode: str | None, node: str | None, limit: int,
                   fmt: str) -> None:
    """Newest first: mode, node, version, how it was detected, how often, the owner team, and the run."""
    from depmesh.cli.registry import open_mesh_registry
    from depmesh.failure_modes.incidents import list_incidents

    registry = open_mesh_registry(home, catalog, read_only=True)
    try:
        rows = list_incidents(registry, mode=mode, node=node, limit=limit)
    finally:
        registry.dispose()
    if fmt == "json":
        click.echo(json.dumps(rows, indent=2, default=str))
        return
    if not rows:
        click.echo("no incidents recorded")
        return
    click.echo(table([[r["id"], r["mode"], r["severity"], r["node"], r["version"][:16], r["detector"], r["count"],
                       str(r["first_at"])[:19], str(r["last_at"])[:19], r["owner"], (r["run_id"] or "-")[:8]]
                      for r in rows],
                     ["id", "mode", "severity", "node", "version", "detected by", "seen", "first", "last", "owner",
                      "run"]))

"""What every command shares: the catalog option, instance folders, tables,
one error style (ClickException: exit 1; UsageError: exit 2)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click

from depmesh.catalog import CatalogError, MeshSpec, load_catalog
from depmesh.examples import DEMO_CATALOG

CATALOG_ENV = "DEPMESH_CATALOG"
CATALOG_HELP = f"Catalog file (default: ${CATALOG_ENV}, else the flights demo mesh)."
CATALOG_OPTION = click.option("--catalog", "catalog", metavar="FILE", help=CATALOG_HELP)
HOME_OPTION = click.option("--home", type=click.Path(file_okay=False),
                           help="Dagster instance folder (default: $DAGSTER_HOME, else ./.dagster_home).")
FORMAT_OPTION = click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)


def catalog_path(path: str | None) -> Path:
    return Path(path or os.environ.get(CATALOG_ENV) or DEMO_CATALOG)


def one_catalog(option: str | None, positional: str | None) -> str | None:
    """The catalog named by --catalog or, for the commands that always took one, as an argument."""
    if option and positional and Path(option) != Path(positional):
        raise click.UsageError(f"two catalogs given: --catalog {option} and {positional}; name one")
    return option or positional


def load_mesh(path: str | None) -> MeshSpec:
    """The catalog's mesh, or exit 1 with every problem named."""
    try:
        return load_catalog(catalog_path(path))
    except CatalogError as exc:
        raise click.ClickException(str(exc)) from None


def table(rows: list[list[object]], headers: list[str]) -> str:
    from tabulate import tabulate

    return tabulate(rows, headers=headers, tablefmt="simple")


def existing_home(home: str | None) -> Path:
    """The instance folder a read-only command reads: it must hold an instance
    (a mistyped --home would otherwise answer from a new, empty one)."""
    from depmesh.instance import default_home

    path = (Path(home) if home else default_home()).resolve()
    if not (path / "dagster.yaml").is_file():
        raise click.UsageError(f"{path} holds no Dagster instance (no dagster.yaml): check --home or DAGSTER_HOME; "
                               "`depmesh run` creates one")
    return path


def writable_home(home: str | None, prepare) -> Any:
    """``prepare(home)`` (make or open the instance folder), or a named error when it cannot be written."""
    try:
        return prepare(Path(home) if home else None)
    except OSError as exc:
        raise click.ClickException(f"cannot write the instance folder {exc.filename or home}: {exc.strerror or exc} "
                                   "(choose a writable --home or DAGSTER_HOME)") from None


def load_mesh_teams(catalog: str | None, teams_file: str | None = None, *, required: bool = False):
    """The catalog's mesh and its declared teams (None when it has no teams file, unless ``required``)."""
    from depmesh.teams import TeamsError, load_teams, teams_path

    mesh = load_mesh(catalog)
    try:
        found = load_teams(mesh, Path(teams_file) if teams_file else None)
    except TeamsError as exc:
        raise click.ClickException(str(exc).replace("catalog", "teams file", 1)) from None
    if found is None and required:
        raise click.ClickException(f"mesh {mesh.name} declares no teams: write {teams_path(mesh)} "
                                   "(see docs/content/guides/approvals.md, \"Shadow, canary, A/B\")")
    return mesh, found

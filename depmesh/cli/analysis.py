"""Commands that analyse a change: impact, simulate, contracts diff."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from depmesh.catalog import CatalogError, MeshSpec, load_catalog
from depmesh.cli.app import main
from depmesh.cli.common import CATALOG_OPTION, existing_home, load_mesh, table
from depmesh.cli.render import impact_report


@main.command()
@click.argument("nodes", nargs=-1)
@CATALOG_OPTION
@click.option("--changed-since", "ref", help="Take the nodes whose catalog entry or code changed since this git ref.")
@click.option("--format", "fmt", default="table", show_default=True,
              help="table, json, html, or a path ending in .html to write the page to.")
@click.option("--home", type=click.Path(file_okay=False),
              help="Instance whose history estimates the retraining cost (default: $DAGSTER_HOME or ./.dagster_home "
                   "when it holds one; none: no estimate).")
def impact(nodes: tuple[str, ...], catalog: str | None, ref: str | None, fmt: str, home: str | None) -> None:
    """What a change to NODE(S) reaches: downstream nodes by depth, consumers, owners,
    contracts on the way, propagation paths, the rollback set and the blast radius;
    with an instance, the expected wall time and peak memory of retraining it."""
    import json

    from depmesh.impact import impact as analyse

    mesh = load_mesh(catalog)
    changed = list(nodes)
    reasons: dict[str, list[str]] = {}
    if ref:
        from depmesh.changes_since import GitError, changed_since

        try:
            reasons = changed_since(mesh, ref)
        except (GitError, CatalogError) as exc:
            raise click.ClickException(f"--changed-since {ref}: {exc}") from None
        changed += [n for n in reasons if n not in changed]
        if not changed:
            click.echo(f"no node changed since {ref}" if fmt != "json" else json.dumps({"changed": [], "ref": ref}))
            return
    if not changed:
        raise click.UsageError("name at least one node, or use --changed-since REF")
    unknown = [n for n in changed if n not in mesh.names]
    if unknown:
        raise click.ClickException(f"{mesh.path.name}: no node named {', '.join(unknown)} "
                                   f"(see `depmesh show`)")
    report = analyse(mesh, changed)
    cost = _cost(mesh, report, home)
    if fmt == "json":
        out = report.as_json()
        out["cost"] = cost
        if ref:
            out["changed_since"] = {"ref": ref, "reasons": reasons}
        click.echo(json.dumps(out, indent=2))
    elif fmt == "html" or fmt.endswith(".html"):
        from depmesh.impact_html import render

        path = Path(fmt) if fmt.endswith(".html") else Path(f"impact-{'+'.join(n.replace('/', '_') for n in report.changed)[:120]}.html")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(render(mesh, report, cost), encoding="utf-8")
        click.echo(f"wrote {path} (open it in a browser)")
    elif fmt == "table":
        if reasons:
            click.echo("changed since " + ref + ":\n" + "\n".join(f"  {n}: {'; '.join(r)}" for n, r in reasons.items()) + "\n")
        click.echo(impact_report(report))
        from depmesh.tracking.cost import cost_lines

        click.echo("\n" + "\n".join(cost_lines(cost)) if cost else
                   "\nno retraining cost estimate: no instance with history (--home)")
    else:
        raise click.BadParameter(f"{fmt!r}: use table, json, html or a path ending in .html", param_hint="--format")


def _cost(mesh: MeshSpec, report, home: str | None):
    """The retraining cost estimate from the instance at ``home`` (or the default one), if there is one."""
    import os

    from depmesh.instance import default_home

    path = Path(home) if home else (Path(os.environ["DAGSTER_HOME"]) if os.environ.get("DAGSTER_HOME")
                                    else default_home())
    if not (path / "dagster.yaml").is_file():
        if home:
            raise click.UsageError(f"{path} holds no Dagster instance (no dagster.yaml): check --home")
        return None
    from dagster import DagsterInstance

    from depmesh.governance import open_governed
    from depmesh.registry.store import default_url
    from depmesh.tracking.cost import retraining_cost
    from depmesh.tracking.store import Tracking

    registry = open_governed(default_url(path.resolve()), mesh)
    instance = DagsterInstance.from_config(str(path.resolve()))
    try:
        return retraining_cost(mesh, report.changed, [r.node for r in report.downstream], Tracking(registry), instance)
    finally:
        instance.dispose()
        registry.dispose()


@main.command()
@click.option("--inject", "injections", multiple=True, required=True,
              help="NODE:COLUMN:shift=X|scale=X|nulls=R|drop|rename=NEW|dtype=T, or MODEL:latency=300ms. Repeatable.")
@CATALOG_OPTION
@click.option("--home", type=click.Path(file_okay=False), help="The production instance to read (default as `depmesh run`).")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
def simulate(injections: tuple[str, ...], catalog: str | None, home: str | None, fmt: str) -> None:
    """Perturb a copy of a node's latest data, recompute what lies downstream in an
    ephemeral instance with every contract and gate, and report where it was caught."""
    import json

    from dagster import DagsterInstance

    from depmesh.assets.io import data_root
    from depmesh.simulate import InjectionError
    from depmesh.simulate import simulate as run_simulation

    mesh = load_mesh(catalog)
    instance = DagsterInstance.from_config(str(existing_home(home)))  # production is only read
    try:
        report = run_simulation(mesh, list(injections), instance, data_root(instance))
    except InjectionError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        instance.dispose()
    if fmt == "json":
        click.echo(json.dumps(report.as_json(), indent=2))
        sys.exit(1 if report.failed_at else 0)
    rows = []
    for o in report.nodes:
        pairs = [f"{k[:-5]} {v:.3g}->{o.shift[k[:-5] + '_sim']:.3g}" for k, v in o.shift.items()
                 if k.endswith("_prod") and k[:-5] + "_sim" in o.shift]
        shift = ", ".join(pairs + [f"{k}={v:.3g}" for k, v in o.shift.items() if "shift" in k or "share" in k])
        rows.append([o.depth, o.node, o.kind, o.outcome.upper() if o.outcome != "built" else o.outcome,
                     "; ".join(o.failed_checks) or (f"crashed: {o.error[:60]}" if o.error else "-"),
                     "; ".join(o.warnings) or "-", shift[:90] or "-"])
    click.echo(f"simulated {', '.join(report.injections)} in {report.seconds:.1f}s "
               "(ephemeral instance; production untouched)\n")
    click.echo(table(rows, ["depth", "node (reachable)", "kind", "outcome", "blocking checks failed",
                             "warnings", "what changed"]))
    click.echo("\ncaught at:  " + (", ".join(report.caught_at) or "nowhere: every contract passed"))
    click.echo("stopped at: " + (", ".join(report.stopped_at) or "nowhere: it reached every consumer"))
    if report.failed_at:
        errors = {o.node: o.error for o in report.nodes if o.error}
        raise click.ClickException("the simulation could not judge the injection: " + "; ".join(
            f"{node} FAILED ({errors[node]})" for node in report.failed_at))


@main.group()
def contracts() -> None:
    """Data contracts: compare versions, find breaking changes."""


def catalog_from(spec: str, other: str | None) -> MeshSpec:
    """A catalog from a file path, or ``git:REF`` for the other argument's file as of REF."""
    import subprocess

    if not spec.startswith("git:"):
        return load_catalog(spec)
    ref = spec[len("git:"):]
    if other is None or other.startswith("git:"):
        raise click.UsageError("git:REF takes the catalog path from the other argument, which must be a file")
    from depmesh.changes_since import GitError, resolve_ref

    path = Path(other).resolve()
    try:
        root = Path(subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=path.parent, check=True,
                                   capture_output=True, text=True).stdout.strip())
        commit = resolve_ref(root, ref)
        text = subprocess.run(["git", "show", f"{commit}:{path.relative_to(root).as_posix()}"], cwd=root,
                              check=True, capture_output=True, text=True).stdout
    except GitError as exc:
        raise click.ClickException(f"git:{ref}: {exc}") from None
    except subprocess.CalledProcessError as exc:
        raise click.ClickException(f"cannot read {path.name} at git ref {ref!r}: {exc.stderr.strip()}") from None
    from depmesh.catalog import parse_catalog

    return parse_catalog(text, Path(f"{ref}:{path.name}"))


@contracts.command("diff")
@click.argument("old")
@click.argument("new")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
def contracts_diff(old: str, new: str, fmt: str) -> None:
    """Compare the contracts of two catalogs (files, or git:REF for the other file at REF).

    Exits 1 when a breaking change comes without a major contract version bump."""
    import json

    from depmesh.contracts.diff import diff_meshes

    try:
        report = diff_meshes(catalog_from(old, new), catalog_from(new, old))
    except CatalogError as exc:
        raise click.ClickException(str(exc)) from None
    if fmt == "json":
        click.echo(json.dumps(report.as_json(), indent=2))
    else:
        rows = []
        for n in report.nodes:
            version = f"{n.old_version or '-'} -> {n.new_version or '-'}"
            for c in n.changes:
                reach = f"{len(n.downstream)}: " + ", ".join(n.downstream[:4]) + (" ..." if len(n.downstream) > 4 else "")
                rows.append([n.node, "BREAKING" if c.breaking else "ok", c.what, c.detail, version,
                             reach if c.breaking else "", ", ".join(o.removeprefix("team:") for o in n.owners) if c.breaking else ""])
        if rows:
            click.echo(table(rows, ["node", "kind", "change", "detail", "contract", "downstream reached", "owners to notify"]))
        else:
            click.echo("no contract changes")
        notes = []
        for n in report.nodes:
            if n.violation and not (n.old_version and n.new_version):
                notes.append(f"ERROR {n.node}: breaking change(s) to what it reads from its inputs, and it has no "
                             "contract of its own whose major version could say so: give it a contract (and bump "
                             "its major version with such changes), or keep the edge as it was")
            elif n.violation:
                notes.append(f"ERROR {n.node}: breaking change(s) without a major version bump "
                             f"(contract {n.old_version} -> {n.new_version}; needs {int(n.old_version.split('.')[0]) + 1}.0.0)")
            elif n.unversioned:
                notes.append(f"note {n.node}: contract changed but its version stayed {n.new_version}")
        if notes:
            click.echo("\n" + "\n".join(notes))
    sys.exit(1 if report.violations else 0)

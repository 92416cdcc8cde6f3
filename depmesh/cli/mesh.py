"""Commands about one mesh: validate, show, run, dev, worker, doctor."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from depmesh import graph
from depmesh.cli.app import main
from depmesh.cli.common import (
    CATALOG_ENV,
    CATALOG_OPTION,
    HOME_OPTION,
    catalog_path,
    load_mesh,
    one_catalog,
    table,
    writable_home,
)
from depmesh.runs import event_batching


@main.command()
@click.argument("positional", metavar="[CATALOG]", required=False)
@CATALOG_OPTION
def validate(positional: str | None, catalog: str | None) -> None:
    """Check a catalog; exit 0 when it is valid, 1 with every problem listed when not."""
    mesh = load_mesh(one_catalog(catalog, positional))
    counts: dict[str, int] = {}
    for node in mesh.nodes:
        counts[node.kind] = counts.get(node.kind, 0) + 1
    summary = ", ".join(f"{n} {kind}" for kind, n in counts.items())
    click.echo(f"{mesh.path}: mesh {mesh.name!r} is valid: {len(mesh.nodes)} nodes ({summary})")


@main.command()
@click.argument("kind", type=click.Choice(["catalog", "teams", "failure-modes"]))
@click.option("--output", "-o", type=click.Path(dir_okay=False, writable=True), help="Write it to this file.")
def schema(kind: str, output: str | None) -> None:
    """The JSON Schema of a catalog, teams or failure-modes file, for editors that validate and complete YAML
    (e.g. a `# yaml-language-server: $schema=PATH` first line). `validate` stays the authority: it also checks
    what a schema cannot (inputs that exist, trainers that import) and names file, line, node and field."""
    from depmesh.catalog.file_schema import schema_text

    text = schema_text(kind)
    if output:
        Path(output).write_text(text)
        click.echo(f"wrote the {kind} schema to {output}")
    else:
        click.echo(text, nl=False)

@main.command()
@click.argument("positional", metavar="[CATALOG]", required=False)
@CATALOG_OPTION
@click.option("--format", "fmt", type=click.Choice(["table", "mermaid", "json"]), default="table", show_default=True)
def show(positional: str | None, catalog: str | None, fmt: str) -> None:
    """List the mesh's nodes with kind, owner, criticality and inputs."""
    from depmesh.cli.render import mermaid

    mesh = load_mesh(one_catalog(catalog, positional))
    order = graph.topological_order(mesh.inputs_map())
    if fmt == "mermaid":
        click.echo(mermaid(mesh))
        return
    if fmt == "json":
        nodes = [{"name": n, "kind": mesh.node(n).kind, "owner": mesh.node(n).owner,
                  "criticality": mesh.node(n).criticality, "inputs": list(mesh.node(n).inputs)} for n in order]
        click.echo(json.dumps({"mesh": mesh.name, "nodes": nodes}, indent=2))
        return
    rows = []
    for name in order:
        node = mesh.node(name)
        rows.append([node.name, node.kind, node.owner.removeprefix("team:"), node.criticality,
                     ", ".join(node.inputs) or "-"])
    click.echo(f"mesh {mesh.name} ({mesh.path}): {len(rows)} nodes, in dependency order\n")
    click.echo(table(rows, ["node", "kind", "owner", "criticality", "inputs"]))


@main.command()
@CATALOG_OPTION
@click.option("--sample", type=click.FloatRange(0, 1, min_open=True), default=1.0, show_default=True,
              help="Fraction of the source rows to keep (deterministic slice); 1 = the full data.")
@HOME_OPTION
@click.option("--executor", help="in_process (default), multiprocess, celery or k8s (default: $DEPMESH_EXECUTOR).")
@click.option("--from-failure", "parent_id", metavar="RUN_ID",
              help="Re-execute a failed `depmesh run` from its failure: only the steps that failed or did not run, "
                   "with the failed run's catalog and sample.")
def run(catalog: str | None, sample: float, home: str | None, executor: str | None, parent_id: str | None) -> None:
    """Materialize the whole mesh on the Dagster instance and print what was built.
    Exits 1 when the run failed or a blocking check stopped a node."""
    from depmesh.assets.release import promote_hint, release_key
    from depmesh.cli.render import served_lines, summary_rows
    from depmesh.execution import ExecutorConfigError, executor_name
    from depmesh.instance import get_instance, storage_kind
    from depmesh.progress import PROGRESS_LOGGER
    from depmesh.runs import (
        RunRequestError,
        check_executor,
        failed_run_settings,
        run_mesh,
    )

    event_batching()
    try:
        chosen = executor_name(executor)
        if parent_id:
            instance = writable_home(home, get_instance)
            catalog, sample = failed_run_settings(instance, parent_id)
            mesh = load_mesh(catalog)
        else:
            mesh = load_mesh(catalog)  # a bad catalog fails before the instance folder is made
            instance = writable_home(home, get_instance)
        check_executor(chosen, instance)
    except (ExecutorConfigError, RunRequestError) as exc:
        raise click.UsageError(str(exc)) from None
    click.echo(f"materializing mesh {mesh.name!r}: {len(mesh.nodes)} assets on {storage_kind(instance)} "
               f"at {os.environ['DAGSTER_HOME']}, {chosen} executor", err=True)
    if parent_id:
        click.echo(f"re-executing run {parent_id} from its failure", err=True)
    outcome = run_mesh(catalog_path(catalog), instance, sample=sample, executor=chosen, parent_id=parent_id,
                       run_config={"loggers": {PROGRESS_LOGGER: {}}}, mesh=mesh)
    result = outcome.result
    click.echo("")
    missing = "not in this run (built before the failure, or NOT BUILT)" if parent_id else "NOT BUILT"
    click.echo(table(summary_rows(result, mesh, missing), ["node", "kind", "built", "version", "seconds"]))
    served = served_lines(result)
    if served:
        click.echo("\nwhat the scores serve (serving: " + mesh.serving.mode + "):\n" + "\n".join(served))
    releases = [e for e in result.get_asset_materialization_events() if e.asset_key == release_key(mesh)]
    if releases:
        md = releases[0].materialization.metadata
        release_id = md["release_id"].value
        if md.get("new_release") is not None and not md["new_release"].value:
            click.echo(f"\nevery gate passed; these versions already are release {release_id}: nothing new to promote")
        else:
            click.echo(f"\nrelease {release_id} recorded in the registry (Staging): every gate passed. Promote it with\n"
                       f"  {promote_hint(mesh, release_id)}")
    elif not result.success:
        click.echo("\nno release: the run failed (see the FAILED lines above, or the UI)")
    elif any(mesh.node(n).kind == "model" for n in mesh.names):
        click.echo("\nno release: a gate or check stopped a model (see the CHECK FAILED lines above, or the UI)")
    _route_after_run(mesh, instance, result)
    blocked = outcome.blocked
    status = "FAILED" if not result.success else f"BLOCKED at {', '.join(blocked)}" if blocked else "succeeded"
    click.echo(f"\nrun {result.run_id} {status} in {outcome.seconds:.1f}s")
    click.echo(f"open the UI on this instance:  DAGSTER_HOME={os.environ['DAGSTER_HOME']} dagster dev"
               "   (then http://127.0.0.1:3000), or simply: depmesh dev")
    instance.dispose()
    sys.exit(0 if outcome.ok else 1)


def _route_after_run(mesh, instance, result) -> None:
    """What the run-failure sensor does under the daemon, for this run now: an incident for each failure mode
    a failed step matches; then post what the run queued for the teams (what fails stays queued)."""
    from depmesh.automation.routing import (
        failed_steps,
        incidents_for_failed_run,
        instance_registry,
    )
    from depmesh.failure_modes.catalogue import load_failure_modes
    from depmesh.notify import deliver_quietly

    catalogue = load_failure_modes(mesh)
    steps = failed_steps(mesh, result.get_step_failure_events()) if not result.success else []
    if catalogue is None or (catalogue.teams is None and not steps):
        return
    registry = instance_registry(mesh, instance)
    try:
        for found, new in incidents_for_failed_run(mesh, catalogue, registry, result.run_id, steps):
            click.echo(f"incident {found['id']} {'opened' if new else 'seen again'}: {found['mode']} at "
                       f"{found['node']} (owner {found['owner']})", err=True)
        deliver_quietly(registry, catalogue.teams, lambda m: click.echo(m, err=True))
    finally:
        registry.dispose()


@main.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
              epilog="Any other option goes to `dagster dev` as it is; its own options: dagster dev --help.")
@CATALOG_OPTION
@HOME_OPTION
@click.option("--host", default="127.0.0.1", show_default=True, help="Address the UI listens on.")
@click.option("--port", type=click.IntRange(1, 65535), default=3000, show_default=True, help="Port the UI listens on.")
@click.pass_context
def dev(ctx: click.Context, catalog: str | None, home: str | None, host: str, port: int) -> None:
    """Start the Dagster UI and daemon (`dagster dev`) on the same instance `depmesh run` uses."""
    from depmesh.instance import prepare_home

    event_batching()
    mesh = load_mesh(catalog)  # a bad catalog fails here, not inside the code server
    path = writable_home(home, prepare_home)
    env = {**os.environ, "DAGSTER_HOME": str(path), CATALOG_ENV: str(Path(mesh.path).resolve())}
    cmd = [sys.executable, "-m", "dagster", "dev", "-m", "depmesh.definitions", "--host", host, "--port", str(port),
           *ctx.args]
    click.echo(f"DAGSTER_HOME={path} {CATALOG_ENV}={env[CATALOG_ENV]} {' '.join(cmd[2:])}   "
               f"(UI at http://{host}:{port})", err=True)
    os.execvpe(cmd[0], cmd, env)


CELERY_CONFIG_DIR = Path(__file__).resolve().parent.parent / "deploy" / "celery"


@main.command()
@HOME_OPTION
@click.option("--concurrency", "-c", type=click.IntRange(1), default=None,
              help="Steps this worker runs at once (default: Celery's, the number of CPUs).")
@click.option("--name", "-n", default=None, help="Worker name (default: depmesh-<random>@<host>).")
@click.option("--queue", "-Q", "queues", multiple=True, help="Queues to listen on (default: dagster).")
@click.option("--loglevel", "-l", default="INFO", show_default=True)
def worker(home: str | None, concurrency: int | None, name: str | None, queues: tuple[str, ...], loglevel: str) -> None:
    """Start a Celery worker that runs mesh steps (dagster-celery) for the
    celery executor. The broker is DEPMESH_CELERY_BROKER; the worker writes to
    the same instance as the runs (DAGSTER_POSTGRES_URL) and reads the catalog
    and the stored assets from the same paths."""
    import uuid

    from depmesh.execution import BROKER_ENV
    from depmesh.instance import prepare_home, uses_postgres

    if not os.environ.get(BROKER_ENV):
        raise click.UsageError(f"set {BROKER_ENV} to the broker URL, for example redis://127.0.0.1:6379/0")
    if not uses_postgres():
        raise click.UsageError("a Celery worker writes to the runs' instance, which must be shared: set "
                               "DAGSTER_POSTGRES_URL")
    event_batching()
    path = writable_home(home, prepare_home)
    env = {**os.environ, "DAGSTER_HOME": str(path)}
    # dagster_celery.app imports a module named dagster_celery_config when it can: ours reads the broker from the environment
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(CELERY_CONFIG_DIR), env.get("PYTHONPATH", "")) if p)
    cmd = [sys.executable, "-m", "celery", "-A", "dagster_celery.app", "worker", "--prefetch-multiplier=1",
           "-l", loglevel, "-n", name or f"depmesh-{uuid.uuid4().hex[:6]}@%h"]
    for queue in queues or ("dagster",):
        cmd += ["-Q", queue]
    if concurrency:
        cmd += ["-c", str(concurrency)]
    click.echo(f"DAGSTER_HOME={path} {' '.join(cmd[2:])}", err=True)
    os.execvpe(cmd[0], cmd, env)


@main.command()
@click.option("--home", type=click.Path(file_okay=False), help="Dagster instance folder to check (default: as `depmesh run`).")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
def doctor(home: str | None, fmt: str) -> None:
    """Check a deployment: instance storage and its schema, the registry and its
    migration level, run queue, pools, retries, monitoring, the daemon's
    heartbeat and the executor. Exits 1 when something is wrong."""
    import json

    from depmesh.doctor import FAIL, diagnose
    from depmesh.instance import default_home

    path = (Path(home) if home else default_home()).resolve()
    findings = diagnose(path)
    failed = [f for f in findings if f.status == FAIL]
    if fmt == "json":
        click.echo(json.dumps({"home": str(path), "ok": not failed, "findings": [f.as_dict() for f in findings]}, indent=2))
    else:
        click.echo(f"depmesh doctor: {path}")
        for f in findings:
            click.echo(f"{f.status.upper():<5} {f.area:<17} {f.message}" + (f"\n{'':23}fix: {f.fix}" if f.fix and f.status != "ok" else ""))
        click.echo(f"\n{len(failed)} problem(s)" if failed else "\nno problems found")
    sys.exit(1 if failed else 0)



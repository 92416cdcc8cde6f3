"""`depmesh ...`: a thin command line over the library functions tests call."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import click

from depmesh.catalog import CatalogError, MeshSpec, load_catalog
from depmesh.examples import DEMO_CATALOG

CATALOG_HELP = "Catalog file (default: $DEPMESH_CATALOG, else the flights demo mesh)."


def _catalog_path(path: str | None) -> Path:
    return Path(path or os.environ.get("DEPMESH_CATALOG") or DEMO_CATALOG)


def _load(path: str | None) -> MeshSpec:
    try:
        return load_catalog(_catalog_path(path))
    except CatalogError as exc:
        click.echo(str(exc), err=True)
        sys.exit(1)


def _table(rows: list[list[object]], headers: list[str]) -> str:
    from tabulate import tabulate

    return tabulate(rows, headers=headers, tablefmt="simple")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """depmesh: map and control the dependencies between models that feed each other."""


@main.command()
@click.argument("catalog", required=False)
def validate(catalog: str | None) -> None:
    """Check a catalog; exit 0 when it is valid, 1 with every problem listed when not."""
    mesh = _load(catalog)
    counts: dict[str, int] = {}
    for node in mesh.nodes:
        counts[node.kind] = counts.get(node.kind, 0) + 1
    summary = ", ".join(f"{n} {kind}" for kind, n in counts.items())
    click.echo(f"{mesh.path}: mesh {mesh.name!r} is valid: {len(mesh.nodes)} nodes ({summary})")


def mermaid(mesh: MeshSpec) -> str:
    """The mesh as a Mermaid flowchart (GitHub renders it), one class per kind."""
    from depmesh import graph

    ident = {name: name.replace("/", "_") for name in mesh.names}
    shapes = {"dataset": ("[(", ")]"), "features": ("[", "]"), "model": ("{{", "}}"),
              "scores": ("[/", "/]"), "consumer": ("([", "])")}
    lines = ["flowchart LR"]
    for name in graph.topological_order(mesh.inputs_map()):
        node = mesh.node(name)
        left, right = shapes[node.kind]
        lines.append(f"  {ident[name]}{left}\"{name}\"{right}:::{node.kind}")
    for node in mesh.nodes:
        lines.extend(f"  {ident[parent]} --> {ident[node.name]}" for parent in node.inputs)
    lines += [
        "  classDef dataset fill:#e8f1fb,stroke:#4a78b0",
        "  classDef features fill:#eef7ea,stroke:#5a9a45",
        "  classDef model fill:#fdf0dc,stroke:#c98a1a",
        "  classDef scores fill:#f3e9f7,stroke:#8a55a8",
        "  classDef consumer fill:#fbe7e7,stroke:#b04a4a",
    ]
    return "\n".join(lines)


@main.command()
@click.argument("catalog", required=False)
@click.option("--format", "fmt", type=click.Choice(["table", "mermaid", "json"]), default="table", show_default=True)
def show(catalog: str | None, fmt: str) -> None:
    """List the mesh's nodes with kind, owner, criticality and inputs."""
    import json

    from depmesh import graph

    mesh = _load(catalog)
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
    click.echo(_table(rows, ["node", "kind", "owner", "criticality", "inputs"]))


def _summary_rows(result, mesh: MeshSpec, missing: str = "NOT BUILT") -> list[list[object]]:
    from depmesh import graph

    events = {"/".join(e.asset_key.path): e for e in result.get_asset_materialization_events()}
    blocked = {}
    for line in blocked_checks(result):
        name, check = line.rsplit(" ", 1)
        blocked.setdefault(name, []).append(check)
    skipped = {e.step_key.replace("__", "/") for e in result.all_events if e.event_type_value == "STEP_SKIPPED"}
    rows = []
    for name in graph.topological_order(mesh.inputs_map()):
        event = events.get(name)
        if event is None:
            why = (f"BLOCKED by {', '.join(blocked[name])}" if name in blocked
                   else "not run (blocked upstream)" if name in skipped
                   else missing)
            rows.append([name, mesh.node(name).kind, why, "", ""])
            continue
        md = event.materialization.metadata
        value = lambda key: getattr(md.get(key), "value", None)  # noqa: E731
        if mesh.node(name).kind == "model":
            metrics = {k.split("/", 1)[1]: v.value for k, v in md.items() if k.startswith("metric/") and k != "metric/eval_rows"}
            detail = ", ".join(f"{k}={v:.3g}" for k, v in list(metrics.items())[:4])
            rows.append([name, "model", detail, value("model_version"), value("seconds")])
        else:
            rows.append([name, mesh.node(name).kind, f"{value('dagster/row_count'):,} rows", value("data_version"), value("seconds")])
    return rows


EVENT_BATCH_ENV = "DAGSTER_EVENT_BATCH_SIZE"


def _event_batching() -> None:
    """Dagster writes batchable events (planned materializations and checks)
    in one INSERT when this is set; depmesh's commands set it unless it is."""
    os.environ.setdefault(EVENT_BATCH_ENV, "100")


def _executor_or_exit(name: str | None) -> str:
    from depmesh.executors import ExecutorConfigError, build_executor, executor_name

    try:
        chosen = executor_name(name)
        build_executor(chosen)
    except ExecutorConfigError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    return chosen


@main.command()
@click.option("--catalog", help=CATALOG_HELP)
@click.option("--sample", type=click.FloatRange(0, 1, min_open=True), default=1.0, show_default=True,
              help="Fraction of the source rows to keep (deterministic slice); 1 = the full data.")
@click.option("--home", type=click.Path(file_okay=False), help="Dagster instance folder (default: $DAGSTER_HOME, else ./.dagster_home).")
@click.option("--executor", help="in_process (default), multiprocess, celery or k8s (default: $DEPMESH_EXECUTOR).")
@click.option("--from-failure", "parent_id", metavar="RUN_ID",
              help="Re-execute a failed `depmesh run` from its failure: only the steps that failed or did not run, "
                   "with the failed run's catalog and sample.")
def run(catalog: str | None, sample: float, home: str | None, executor: str | None, parent_id: str | None) -> None:
    """Materialize the whole mesh on the Dagster instance and print what was built."""
    from depmesh.instance import get_instance, storage_kind
    from depmesh.progress import PROGRESS_LOGGER

    _event_batching()
    chosen = _executor_or_exit(executor)
    if parent_id:
        instance = _writable_home(home, get_instance)
        catalog, sample = _failed_run_settings(instance, parent_id)
        mesh = _load(catalog)
    else:
        mesh = _load(catalog)  # a bad catalog fails before the instance folder is made
        instance = _writable_home(home, get_instance)
    if chosen in ("celery", "k8s") and "Sqlite" in storage_kind(instance):
        click.echo(f"error: the {chosen} executor runs steps on other machines, which cannot reach this SQLite "
                   "instance: set DAGSTER_POSTGRES_URL", err=True)
        sys.exit(2)
    click.echo(f"materializing mesh {mesh.name!r}: {len(mesh.nodes)} assets on {storage_kind(instance)} "
               f"at {os.environ['DAGSTER_HOME']}, {chosen} executor", err=True)
    run_config = {"loggers": {PROGRESS_LOGGER: {}}}
    catalog_path = str(_catalog_path(catalog).resolve())
    tags = {"depmesh/trigger": "cli", "depmesh/catalog": catalog_path, "depmesh/sample": repr(sample)}
    started = time.perf_counter()
    if chosen == "in_process" and not parent_id:
        from depmesh.assets import MeshRuntime
        from depmesh.build import MESH_JOB, build_definitions
        from depmesh.executors import build_executor

        defs = build_definitions(mesh, runtime=MeshRuntime(sample_fraction=sample), executor=build_executor(chosen))
        result = defs.resolve_job_def(MESH_JOB).execute_in_process(
            instance=instance, raise_on_error=False, run_config=run_config, tags=tags)
    else:
        # other executors, and re-execution, need a job other processes can rebuild
        from dagster import ReexecutionOptions, execute_job

        from depmesh.executors import reconstructable_mesh_job

        options = None
        if parent_id:
            click.echo(f"re-executing run {parent_id} from its failure", err=True)
            options = ReexecutionOptions.from_failure(parent_id, instance)
        result = execute_job(reconstructable_mesh_job(catalog_path, sample, chosen), instance=instance,
                             run_config=run_config, tags=tags, raise_on_error=False, reexecution_options=options)
    seconds = time.perf_counter() - started
    click.echo("")
    missing = "not in this run (built before the failure, or NOT BUILT)" if parent_id else "NOT BUILT"
    click.echo(_table(_summary_rows(result, mesh, missing), ["node", "kind", "built", "version", "seconds"]))
    from depmesh.assets.release import release_key

    releases = [e for e in result.get_asset_materialization_events() if e.asset_key == release_key(mesh)]
    if releases:
        md = releases[0].materialization.metadata
        release_id = md["release_id"].value
        if md.get("new_release") is not None and not md["new_release"].value:
            click.echo(f"\nevery gate passed; these versions already are release {release_id}: nothing new to promote")
        else:
            click.echo(f"\nrelease {release_id} recorded in the registry (Staging): every gate passed. Promote it with\n"
                       f"  depmesh release promote {release_id} --actor NAME --reason TEXT")
    elif not result.success:
        click.echo("\nno release: the run failed (see the FAILED lines above, or the UI)")
    elif any(mesh.node(n).kind == "model" for n in mesh.names):
        click.echo("\nno release: a gate or check stopped a model (see the CHECK FAILED lines above, or the UI)")
    blocked = blocked_checks(result)
    status = "FAILED" if not result.success else f"BLOCKED at {', '.join(blocked)}" if blocked else "succeeded"
    click.echo(f"\nrun {result.run_id} {status} in {seconds:.1f}s")
    click.echo(f"open the UI on this instance:  DAGSTER_HOME={os.environ['DAGSTER_HOME']} dagster dev"
               "   (then http://127.0.0.1:3000), or simply: depmesh dev")
    instance.dispose()
    sys.exit(0 if result.success and not blocked else 1)


def blocked_checks(result) -> list[str]:
    """'node check' for each blocking verdict that failed in the run (the run
    itself succeeds: a verdict withholds the output, it does not fail the step)."""
    from depmesh.assets.factory import BLOCKING_KEY

    out = []
    for evaluation in result.get_asset_check_evaluations():
        blocking = evaluation.metadata.get(BLOCKING_KEY)
        if not evaluation.passed and blocking is not None and blocking.value:
            out.append(f"{'/'.join(evaluation.asset_key.path)} {evaluation.check_name}")
    return out


def _failed_run_settings(instance, run_id: str) -> tuple[str, float]:
    """The catalog and sample of a failed `depmesh run`, to re-execute it with."""
    from dagster import DagsterRunStatus

    parent = instance.get_run_by_id(run_id)
    if parent is None:
        click.echo(f"error: no run {run_id} on the instance at {os.environ['DAGSTER_HOME']}", err=True)
        sys.exit(2)
    if parent.status != DagsterRunStatus.FAILURE:
        click.echo(f"error: run {run_id} is {parent.status.value}, not FAILURE: there is no failure to re-execute "
                   "from", err=True)
        sys.exit(2)
    if "depmesh/catalog" not in parent.tags or "depmesh/sample" not in parent.tags:
        click.echo(f"error: run {run_id} was not started by `depmesh run` (it has no depmesh/catalog and "
                   "depmesh/sample tags): re-execute it from the UI", err=True)
        sys.exit(2)
    return parent.tags["depmesh/catalog"], float(parent.tags["depmesh/sample"])


@main.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
              epilog="Any other option goes to `dagster dev` as it is; its own options: dagster dev --help.")
@click.option("--home", type=click.Path(file_okay=False), help="Dagster instance folder (default: as `depmesh run`).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address the UI listens on.")
@click.option("--port", type=click.IntRange(1, 65535), default=3000, show_default=True, help="Port the UI listens on.")
@click.pass_context
def dev(ctx: click.Context, home: str | None, host: str, port: int) -> None:
    """Start the Dagster UI and daemon (`dagster dev`) on the same instance `depmesh run` uses."""
    from depmesh.instance import prepare_home

    _event_batching()
    path = _writable_home(home, prepare_home)
    env = {**os.environ, "DAGSTER_HOME": str(path)}
    cmd = [sys.executable, "-m", "dagster", "dev", "-m", "depmesh.definitions", "--host", host, "--port", str(port),
           *ctx.args]
    click.echo(f"DAGSTER_HOME={path} {' '.join(cmd[2:])}   (UI at http://{host}:{port})", err=True)
    os.execvpe(cmd[0], cmd, env)


CELERY_CONFIG_DIR = Path(__file__).resolve().parent / "deploy" / "celery"


@main.command()
@click.option("--home", type=click.Path(file_okay=False), help="Dagster instance folder (default: as `depmesh run`).")
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

    from depmesh.executors import BROKER_ENV
    from depmesh.instance import prepare_home, uses_postgres

    if not os.environ.get(BROKER_ENV):
        raise click.UsageError(f"set {BROKER_ENV} to the broker URL, for example redis://127.0.0.1:6379/0")
    if not uses_postgres():
        raise click.UsageError("a Celery worker writes to the runs' instance, which must be shared: set "
                               "DAGSTER_POSTGRES_URL")
    _event_batching()
    path = prepare_home(Path(home) if home else None)
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


def _impact_table(report) -> str:
    lines = [f"impact of a change to {report.node}: {len(report.downstream)} downstream nodes, "
             f"{len(report.consumers)} consumer(s), blast radius {report.blast_radius:g} "
             f"({report.blast_radius_share:.0%} of the mesh's weight)", ""]
    rows = [[r.depth, r.node, r.kind, r.owner.removeprefix("team:"), r.criticality] for r in report.downstream]
    lines.append(_table(rows, ["depth", "node", "kind", "owner", "criticality"]) if rows else "nothing downstream")
    lines += ["", "consumers:      " + (", ".join(report.consumers) or "none"),
              "owners:         " + ", ".join(o.removeprefix("team:") for o in report.owners),
              "rollback set:   " + (", ".join(report.rollback_set) or "none"), "", "contracts and checks on the way:"]
    lines += [f"  {c['node']}: {', '.join(c['checks'])}" + (f" (contract v{c['version']})" if c["version"] else "")
              for c in report.contracts] or ["  none"]
    lines += ["", "propagation paths, by depth:"]
    lines += [f"  {len(p) - 1}: " + " -> ".join(p) for p in report.paths] or ["  none"]
    if report.paths_truncated:
        lines.append("  (more paths exist; the longest were left out)")
    return "\n".join(lines)


@main.command()
@click.argument("nodes", nargs=-1)
@click.option("--catalog", help=CATALOG_HELP)
@click.option("--changed-since", "ref", help="Take the nodes whose catalog entry or code changed since this git ref.")
@click.option("--format", "fmt", default="table", show_default=True,
              help="table, json, html, or a path ending in .html to write the page to.")
def impact(nodes: tuple[str, ...], catalog: str | None, ref: str | None, fmt: str) -> None:
    """What a change to NODE(S) reaches: downstream nodes by depth, consumers, owners,
    contracts on the way, propagation paths, the rollback set and the blast radius."""
    import json

    from depmesh.impact import impact as analyse

    mesh = _load(catalog)
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
    if fmt == "json":
        out = report.as_json()
        if ref:
            out["changed_since"] = {"ref": ref, "reasons": reasons}
        click.echo(json.dumps(out, indent=2))
    elif fmt == "html" or fmt.endswith(".html"):
        from depmesh.impact_html import render

        path = Path(fmt) if fmt.endswith(".html") else Path(f"impact-{'+'.join(n.replace('/', '_') for n in report.changed)[:120]}.html")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(render(mesh, report), encoding="utf-8")
        click.echo(f"wrote {path} (open it in a browser)")
    elif fmt == "table":
        if reasons:
            click.echo("changed since " + ref + ":\n" + "\n".join(f"  {n}: {'; '.join(r)}" for n, r in reasons.items()) + "\n")
        click.echo(_impact_table(report))
    else:
        raise click.BadParameter(f"{fmt!r}: use table, json, html or a path ending in .html", param_hint="--format")


@main.command()
@click.option("--inject", "injections", multiple=True, required=True,
              help="NODE:COLUMN:shift=X|scale=X|nulls=R|drop|rename=NEW|dtype=T, or MODEL:latency=300ms. Repeatable.")
@click.option("--catalog", help=CATALOG_HELP)
@click.option("--home", type=click.Path(file_okay=False), help="The production instance to read (default as `depmesh run`).")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
def simulate(injections: tuple[str, ...], catalog: str | None, home: str | None, fmt: str) -> None:
    """Perturb a copy of a node's latest data, recompute what lies downstream in an
    ephemeral instance with every contract and gate, and report where it was caught."""
    import json

    from depmesh.instance import get_instance
    from depmesh.simulate import InjectionError, simulate as run_simulation

    mesh = _load(catalog)
    instance = get_instance(Path(home) if home else None)
    try:
        report = run_simulation(mesh, list(injections), instance, Path(instance.storage_directory()) / "depmesh")
    except InjectionError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        instance.dispose()
    if fmt == "json":
        click.echo(json.dumps(report.as_json(), indent=2))
        return
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
    click.echo(_table(rows, ["depth", "node (reachable)", "kind", "outcome", "blocking checks failed",
                             "warnings", "what changed"]))
    click.echo("\ncaught at:  " + (", ".join(report.caught_at) or "nowhere: every contract passed"))
    click.echo("stopped at: " + (", ".join(report.stopped_at) or "nowhere: it reached every consumer"))


def _existing_home(home: str | None) -> Path:
    """The instance folder a read-only command reads: it must hold an instance
    (a mistyped --home would otherwise answer from a new, empty one)."""
    from depmesh.instance import default_home

    path = (Path(home) if home else default_home()).resolve()
    if not (path / "dagster.yaml").is_file():
        raise click.UsageError(f"{path} holds no Dagster instance (no dagster.yaml): check --home or DAGSTER_HOME; "
                               "`depmesh run` creates one")
    return path


def _open_registry(home: str | None, catalog: str | None, *, read_only: bool = False):
    """The registry of the catalog's mesh, verifying artifacts in the instance's store."""
    from depmesh.artifacts import ArtifactStore
    from depmesh.instance import prepare_home
    from depmesh.registry.resource import open_registry
    from depmesh.registry.store import RegistryError, default_url

    mesh = _load(catalog)
    path = _existing_home(home) if read_only else _writable_home(home, prepare_home)
    artifacts = ArtifactStore(path / "storage" / "depmesh" / "artifacts")
    try:
        return open_registry(default_url(path), mesh.name, artifacts)
    except RegistryError as exc:
        raise click.ClickException(str(exc)) from None


def _writable_home(home: str | None, prepare) -> Any:
    """``prepare(home)`` (make or open the instance folder), or a named error when it cannot be written."""
    try:
        return prepare(Path(home) if home else None)
    except OSError as exc:
        raise click.ClickException(f"cannot write the instance folder {exc.filename or home}: {exc.strerror or exc} "
                                   "(choose a writable --home or DAGSTER_HOME)") from None


def _with_stage_events(home: str | None, registry, fn):
    """Run a registry operation that moves stages, then show each move in the
    Dagster UI as an observation on its model and on the mesh's release asset."""
    from dagster import DagsterInstance

    from depmesh.assets.release import release_key
    from depmesh.assets.stages import report_stage_changes

    before = registry.last_transition_id()
    out = _registry_call(fn)
    path = _existing_home(home)
    instance = DagsterInstance.from_config(str(path))
    try:
        report_stage_changes(instance, registry, before, release_key(registry.mesh))
    finally:
        instance.dispose()
    return out


def _registry_call(fn):
    """Run a registry operation; its refusals are errors the user can act on."""
    from depmesh.registry import RegistryError

    try:
        return fn()
    except RegistryError as exc:
        raise click.ClickException(str(exc)) from None


HOME_OPTION = click.option("--home", type=click.Path(file_okay=False),
                           help="Dagster instance folder whose registry to use (default as `depmesh run`).")
REG_CATALOG_OPTION = click.option("--catalog", help=CATALOG_HELP + " Its mesh name picks the releases and versions.")
FORMAT_OPTION = click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
RELEASE_ID = click.argument("release_id", type=click.IntRange(1, 2**63 - 1), metavar="RELEASE_ID")


@main.group()
def release() -> None:
    """Releases: the model versions that belong together; promote and roll back."""


@release.command("list")
@REG_CATALOG_OPTION
@HOME_OPTION
@FORMAT_OPTION
def release_list(catalog: str | None, home: str | None, fmt: str) -> None:
    """Every release of the mesh with its status and members."""
    import json

    registry = _open_registry(home, catalog, read_only=True)
    items = registry.releases()
    if fmt == "json":
        click.echo(json.dumps(items, indent=2, default=str))
        return
    rows = [[r["id"], r["status"], str(r["created_at"])[:19], str(r["promoted_at"] or "")[:19],
             ", ".join(f"{n}@{v[:8]}" for n, v in r["members"].items())] for r in items]
    click.echo(_table(rows, ["id", "status", "created", "promoted", "members"]) if rows
               else f"no releases of mesh {registry.mesh} yet")


@release.command("show")
@RELEASE_ID
@REG_CATALOG_OPTION
@HOME_OPTION
@FORMAT_OPTION
def release_show(release_id: int, catalog: str | None, home: str | None, fmt: str) -> None:
    """One release: status, members, each member's stage, metrics and whether its artifact verifies."""
    import json

    registry = _open_registry(home, catalog, read_only=True)
    item = _registry_call(lambda: registry.release(release_id))
    members = []
    for node, version in item["members"].items():
        info = registry.version(node, version) or {}
        problems = registry.artifact_problems({node: version})
        members.append({"node": node, "version": version, "stage": info.get("stage"),
                        "metrics": info.get("metrics", {}), "trained_against": info.get("upstream_models", {}),
                        "artifact": "verified" if not problems else problems[0]})
    if fmt == "json":
        click.echo(json.dumps({**item, "members": members}, indent=2, default=str))
        return
    click.echo(f"release {item['id']}: {item['status']} (created {str(item['created_at'])[:19]}, run {item['run_id']})")
    rows = [[m["node"], m["version"], m["stage"], ", ".join(f"{k}={v:.3g}" for k, v in list(m["metrics"].items())[:3]),
             ", ".join(f"{k}@{v[:8]}" for k, v in m["trained_against"].items()) or "-",
             "verified" if m["artifact"] == "verified" else "FAILED"] for m in members]
    click.echo(_table(rows, ["node", "version", "stage", "metrics", "trained against", "artifact"]))
    for m in members:
        if m["artifact"] != "verified":
            click.echo(f"artifact FAILED: {m['artifact']}")


@release.command("promote")
@RELEASE_ID
@click.option("--actor", required=True, help="Who promotes (recorded in the audit trail).")
@click.option("--reason", required=True, help="Why (recorded in the audit trail).")
@REG_CATALOG_OPTION
@HOME_OPTION
def release_promote(release_id: int, actor: str, reason: str, catalog: str | None, home: str | None) -> None:
    """Make every version of a release Production at once (atomic), after
    verifying every member's artifact; archive what it replaces."""
    registry = _open_registry(home, catalog, read_only=True)
    item = _with_stage_events(home, registry, lambda: registry.promote(release_id, actor=actor, reason=reason))
    click.echo(f"release {release_id} is Production: " + ", ".join(f"{n}@{v}" for n, v in item["members"].items()))


@release.command("rollback")
@click.option("--node", help="Roll back this model alone (to its previous Production version).")
@click.option("--with-dependents", is_flag=True, help="With --node: also roll back the models trained against it.")
@click.option("--actor", required=True, help="Who rolls back (recorded in the audit trail).")
@click.option("--reason", required=True, help="Why (recorded in the audit trail).")
@REG_CATALOG_OPTION
@HOME_OPTION
def release_rollback(node: str | None, with_dependents: bool, actor: str, reason: str, catalog: str | None,
                     home: str | None) -> None:
    """Make the previous release Production again (atomic), or one model with --node."""
    registry = _open_registry(home, catalog, read_only=True)
    if node is None:
        item = _with_stage_events(home, registry, lambda: registry.rollback(actor=actor, reason=reason))
        click.echo(f"release {item['id']} is Production again: "
                   + ", ".join(f"{n}@{v}" for n, v in item["members"].items()))
        return
    moves = _with_stage_events(home, registry, lambda: registry.rollback_model(
        node, actor=actor, reason=reason, with_dependents=with_dependents))
    for name, (before, after) in moves.items():
        click.echo(f"{name}: {before} -> {after}")


@main.group()
def registry() -> None:
    """The model registry: versions, stages and their audit trail."""


@registry.command("migrate")
@REG_CATALOG_OPTION
@HOME_OPTION
def registry_migrate(catalog: str | None, home: str | None) -> None:
    """Bring the registry database to the newest migration (runs do this on first use too)."""
    reg = _open_registry(home, catalog)
    click.echo(f"registry at migration {reg.schema_revision()} (head {reg.head_revision()})")
    reg.dispose()


@registry.command("history")
@click.argument("node")
@REG_CATALOG_OPTION
@HOME_OPTION
@FORMAT_OPTION
def registry_history(node: str, catalog: str | None, home: str | None, fmt: str) -> None:
    """Every stage transition of a model's versions: from, to, actor, reason, time, run."""
    import json

    reg = _open_registry(home, catalog, read_only=True)
    items = reg.history(node)
    if fmt == "json":
        click.echo(json.dumps({"node": node, "versions": reg.versions(node), "transitions": items}, indent=2, default=str))
        return
    if not items:
        click.echo(f"no versions of {node} are registered")
        return
    rows = [[str(t["at"])[:19], t["version"], t["from_stage"] or "-", t["to_stage"], t["actor"], t["reason"][:60],
             t["release_id"] or ""] for t in items]
    click.echo(_table(rows, ["time", "version", "from", "to", "actor", "reason", "release"]))


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
        click.echo(str(exc), err=True)
        sys.exit(1)
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
            click.echo(_table(rows, ["node", "kind", "change", "detail", "contract", "downstream reached", "owners to notify"]))
        else:
            click.echo("no contract changes")
        notes = []
        for n in report.nodes:
            if n.violation:
                notes.append(f"ERROR {n.node}: breaking change(s) without a major version bump "
                             f"(contract {n.old_version} -> {n.new_version}; needs {int(n.old_version.split('.')[0]) + 1}.0.0)")
            elif n.unversioned:
                notes.append(f"note {n.node}: contract changed but its version stayed {n.new_version}")
        if notes:
            click.echo("\n" + "\n".join(notes))
    sys.exit(1 if report.violations else 0)


if __name__ == "__main__":
    main()

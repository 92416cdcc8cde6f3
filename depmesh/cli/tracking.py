"""Tracked trainings: `depmesh runs list | show | compare | gc`."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import click

from depmesh.cli.app import main
from depmesh.cli.common import table
from depmesh.cli.registry import HOME_OPTION, REG_CATALOG_OPTION, open_mesh_registry
from depmesh.tracking import STATUSES


def _when(value: str | None, option: str) -> datetime | None:
    """An ISO date or time, or a span back from now: 7d, 12h, 30m."""
    if not value:
        return None
    units = {"d": "days", "h": "hours", "m": "minutes"}
    if value[-1:] in units and value[:-1].isdigit():
        return datetime.now(UTC) - timedelta(**{units[value[-1]]: int(value[:-1])})
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is neither an ISO date/time (2026-11-01, 2026-11-01T12:00) nor a span "
                                 "back from now (7d, 12h, 30m)", param_hint=option) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _tags(values: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for value in values:
        key, sep, tag = value.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{value!r} is not KEY=VALUE", param_hint="--tag")
        out[key] = tag
    return out


def filter_options(fn):
    for option in reversed([
        click.option("--node", "nodes", multiple=True, help="Only these models (repeatable)."),
        click.option("--status", "statuses", multiple=True,
                     type=click.Choice(STATUSES),
                     help="Only trainings that ended so (repeatable)."),
        click.option("--trigger", help="What started them: cli, ui, schedule:*, sensor:*, tune (* matches any text)."),
        click.option("--tag", "tags", multiple=True, metavar="KEY=VALUE", help="Only trainings with this tag."),
        click.option("--since", help="Started at or after: ISO date/time, or 7d / 12h / 30m ago."),
        click.option("--until", help="Started before: ISO date/time, or 7d / 12h / 30m ago."),
        click.option("--study", help="Only the trials of this tuning study."),
        click.option("--where", metavar="EXPR",
                     help='Over params., metrics., tags. and columns, e.g. "params.max_iter >= 100 and metrics.mae < 12".'),
        click.option("--sort", metavar="FIELD", help="metrics.mae (ascending) or -metrics.roc_auc (descending)."),
        click.option("--limit", type=click.IntRange(1, 1_000_000), default=None, help="At most this many."),
        REG_CATALOG_OPTION, HOME_OPTION,
    ]):
        fn = option(fn)
    return fn


def _query(home, catalog, nodes, statuses, trigger, tags, since, until, study, where, sort, limit):
    from depmesh.tracking.query import WhereError
    from depmesh.tracking.store import Tracking

    registry = open_mesh_registry(home, catalog, read_only=True)
    tracking = Tracking(registry)
    try:
        items = tracking.query(node=list(nodes) or None, status=list(statuses) or None, trigger=trigger,
                               tags=_tags(tags), since=_when(since, "--since"), until=_when(until, "--until"),
                               study=study, where=where, sort=sort, limit=limit)
    except WhereError as exc:
        raise click.UsageError(str(exc)) from None
    return tracking, items


def _metric_from_sort(sort: str | None, metric: str | None) -> str | None:
    if metric:
        return metric
    if sort and sort.lstrip("-+").startswith("metrics."):
        return sort.lstrip("-+")[len("metrics."):]
    return None


def _jsonable(items):
    return json.loads(json.dumps(items, default=str))


@main.group()
def runs() -> None:
    """Tracked trainings: every model training, passed or not, with its parameters, metrics, curves and recipe."""


@runs.command("list")
@filter_options
@click.option("--metric", help="The metric column to show (default: the one --sort names).")
@click.option("--format", "fmt", type=click.Choice(["table", "json", "html"]), default="table", show_default=True)
@click.option("--output", "-o", type=click.Path(dir_okay=False), help="With --format html: the page to write.")
def runs_list(nodes, statuses, trigger, tags, since, until, study, where, sort, limit, catalog, home, metric, fmt,
              output) -> None:
    """Trainings, newest first (or by --sort), filtered."""
    from depmesh.tracking.compare import rows, varying_params

    tracking, items = _query(home, catalog, nodes, statuses, trigger, tags, since, until, study, where, sort, limit)
    metric = _metric_from_sort(sort, metric)
    _emit(tracking, items, metric, fmt, output, lambda: rows(items, metric, varying_params(items, limit=4)))


def _emit(tracking, items, metric, fmt, output, make_rows) -> None:
    if fmt == "json":
        click.echo(json.dumps(_jsonable(items), indent=2))
        return
    if fmt == "html":
        from depmesh.tracking.compare import compare_html

        if not output:
            raise click.UsageError("--format html writes a page: give --output FILE")
        page = compare_html(items, tracking.curves([i["id"] for i in items]), metric)
        Path(output).write_text(page, encoding="utf-8")
        click.echo(f"wrote {output} ({len(items)} trainings)")
        return
    if not items:
        click.echo("no tracked trainings match")
        return
    headers, body = make_rows()
    click.echo(table(body, headers))


@runs.command("compare")
@click.argument("ids", nargs=-1)
@filter_options
@click.option("--metric", help="The metric to compare on and color the parallel coordinates by.")
@click.option("--format", "fmt", type=click.Choice(["table", "json", "html"]), default="table", show_default=True)
@click.option("--output", "-o", type=click.Path(dir_okay=False), help="With --format html: the page to write.")
def runs_compare(ids, nodes, statuses, trigger, tags, since, until, study, where, sort, limit, catalog, home, metric,
                 fmt, output) -> None:
    """Trainings side by side (the IDS given, or those the filters select):
    the parameters that differ and the metric; --format html adds the curves
    overlaid and parallel coordinates of parameters against the metric."""
    from depmesh.tracking.compare import metric_names, rows, varying_params

    tracking, items = _query(home, catalog, nodes, statuses, trigger, tags, since, until, study, where, sort, None)
    if ids:
        wanted = [i.lower() for i in ids]
        for prefix in wanted:
            if not any(item["id"].startswith(prefix) for item in items):
                raise click.UsageError(f"no tracked training with id {prefix!r} matches (see depmesh runs list)")
        items = [item for item in items if any(item["id"].startswith(p) for p in wanted)]
    items = items[:limit] if limit else items
    metric = _metric_from_sort(sort, metric)
    if metric is None and items:
        names = metric_names(items)
        metric = names[0] if names else None
    _emit(tracking, items, metric, fmt, output, lambda: rows(items, metric, varying_params(items)))


@runs.command("show")
@click.argument("training_id")
@REG_CATALOG_OPTION
@HOME_OPTION
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
def runs_show(training_id: str, catalog, home, fmt) -> None:
    """One training: everything recorded about it (an id or a unique prefix)."""
    from depmesh.tracking.store import Tracking

    tracking = Tracking(open_mesh_registry(home, catalog, read_only=True))
    item = tracking.get(training_id.lower())
    if item is None:
        raise click.UsageError(f"no single tracked training has an id starting {training_id!r} (see depmesh runs list)")
    item["curves"] = {k: {"steps": s, "values": v} for k, (s, v) in tracking.curves([item["id"]])[item["id"]].items()}
    if fmt == "json":
        click.echo(json.dumps(_jsonable(item), indent=2))
        return
    for key in ("id", "node", "status", "trigger", "run_id", "model_version", "started_at", "duration_s",
                "peak_memory_mb", "host", "seed", "git_commit", "lock_sha256", "diff_sha256", "study", "trial",
                "error"):
        if item.get(key) is not None:
            click.echo(f"{key:15} {item[key]}")
    for key in ("declared_params", "metrics", "input_versions", "tags"):
        click.echo(f"{key:15} {json.dumps(item[key], default=str)}")
    for name, curve in item["curves"].items():
        click.echo(f"curve {name}: {len(curve['steps'])} points, last {curve['values'][-1]:.5g}")


@runs.command("gc")
@click.option("--older-than", "days", type=click.FloatRange(min=0), default=30.0, show_default=True,
              help="Drop input snapshots older than this many days...")
@click.option("--dry-run", is_flag=True, help="Say what would be dropped; drop nothing.")
@REG_CATALOG_OPTION
@HOME_OPTION
def runs_gc(days: float, dry_run: bool, catalog, home) -> None:
    """...except those a Staging or Production version's recipe needs (of any mesh in the registry)."""
    from depmesh.tracking.retention import prune_snapshots

    registry = open_mesh_registry(home, catalog, read_only=True)
    deleted, protected = prune_snapshots(registry, days, dry_run=dry_run)
    verb = "would drop" if dry_run else "dropped"
    click.echo(f"{verb} {len(deleted)} snapshot(s); kept {len(protected)} old one(s) that a Staging or Production "
               "recipe needs")


@main.command()
@click.argument("target", metavar="MODEL@VERSION")
@REG_CATALOG_OPTION
@HOME_OPTION
@click.option("--work-dir", type=click.Path(file_okay=False),
              help="Where to build, kept afterwards (default: a temporary folder, removed afterwards).")
@click.option("--keep", is_flag=True, help="Keep the temporary folder (code, environment, job) for a look.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
def reproduce(target: str, catalog, home, work_dir, keep, fmt) -> None:
    """Rebuild a registered version from its recipe (the stored lock in a
    fresh uv environment, the recorded commit and diff, the input snapshots,
    seed and parameters). Exit 0: bit-identical artifact; 3: different bytes
    but identical predictions on the evaluation window; 1: not reproduced."""
    import sys

    from depmesh.tracking.reproduce import ReproduceError, verdict
    from depmesh.tracking.reproduce import reproduce as rebuild

    node, sep, version = target.rpartition("@")
    if not sep or not node or not version or target.startswith("-"):
        raise click.UsageError(f"{target!r} is not MODEL@VERSION (e.g. models/dep_delay@fd76cff2aaf64b1c)")
    registry = open_mesh_registry(home, catalog, read_only=True)
    try:
        report = rebuild(registry, node, version, work_dir=Path(work_dir) if work_dir else None, keep=keep,
                         progress=lambda line: click.echo(line, err=True))
    except ReproduceError as exc:
        raise click.ClickException(str(exc)) from None
    code = verdict(report)
    if fmt == "json":
        click.echo(json.dumps(report, indent=2, default=str))
    else:
        outcome = {0: "REPRODUCED: bit-identical artifact", 3: "predictions identical, artifact bytes differ",
                   1: "NOT REPRODUCED"}[code]
        click.echo(f"{node}@{version}: {outcome}")
        click.echo(f"  rebuilt version {report['rebuilt_version']} ({'same' if report['same_version'] else 'DIFFERENT'})"
                   f", artifact {report['rebuilt_hash'][:16]} vs recorded {report['artifact_hash'][:16]}")
        if report["max_abs_difference"] is not None:
            click.echo(f"  largest prediction difference {report['max_abs_difference']:.3g} over "
                       f"{report['rows_compared']} evaluation rows")
        click.echo(f"  environment built in {report['environment_seconds']} s in {report['work_dir']}")
    sys.exit(code)

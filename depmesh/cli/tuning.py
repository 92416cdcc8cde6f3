"""`depmesh tune MODEL`: run a model's hyperparameter study, then its candidate run."""

from __future__ import annotations

import os
import sys

import click

from depmesh.cli.app import main
from depmesh.cli.common import CATALOG_OPTION, HOME_OPTION, load_mesh, writable_home


@main.command()
@click.argument("model")
@CATALOG_OPTION
@HOME_OPTION
@click.option("--trials", type=click.IntRange(1, 100_000), help="Finished trials the study should hold (default: the catalog's).")
@click.option("--timeout", "timeout_s", type=click.FloatRange(min=1), help="Stop starting trials after this many seconds.")
@click.option("--no-candidate", is_flag=True, help="Only run the study; do not build the best parameters' candidate.")
@click.option("--sample", type=click.FloatRange(0.001, 1.0), default=1.0, show_default=True,
              help="The candidate run's source sample (trials use the inputs as materialized).")
def tune(model: str, catalog: str | None, home: str | None, trials: int | None, timeout_s: float | None,
         no_candidate: bool, sample: float) -> None:
    """Search MODEL's hyperparameters (its catalog model.tune), every trial a
    tracked training, on its current inputs; then train the best parameters
    as a candidate through every contract and gate, with everything
    downstream and the release (never straight to Production). Several
    processes tuning the same model share one study in the registry database."""
    from depmesh.assets.io import data_root
    from depmesh.governance import open_governed
    from depmesh.instance import get_instance
    from depmesh.registry.store import RegistryError, default_url
    from depmesh.runs import run_mesh
    from depmesh.tuning.study import (
        TuningError,
        candidate_request,
        run_study,
        tunable_node,
    )

    mesh = load_mesh(catalog)
    try:
        tunable_node(mesh, model)
    except TuningError as exc:
        raise click.UsageError(str(exc)) from None
    instance = writable_home(home, get_instance)
    storage = data_root(instance)
    from depmesh.artifacts import ArtifactStore

    try:
        registry = open_governed(default_url(os.environ["DAGSTER_HOME"]), mesh, ArtifactStore(storage / "artifacts"))
        result = run_study(mesh, model, instance, registry, storage, trials=trials, timeout_s=timeout_s,
                           progress=lambda line: click.echo(line, err=True))
    except (TuningError, RegistryError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(result.summary())
    if no_candidate:
        click.echo("no candidate built (--no-candidate)")
        return
    if result.best_is_baseline:
        click.echo("the catalog's own parameters are still the best: no candidate to build")
        return
    selection, tags = candidate_request(mesh, result.node, result.best_params, result.study, result.best_trial)
    click.echo(f"candidate run: {', '.join(selection)} with {tags['depmesh/params']}", err=True)
    outcome = run_mesh(mesh.path, instance, sample=sample, tags=tags, mesh=mesh, selection=selection)
    result_run = outcome.result
    from depmesh.assets.release import release_key

    releases = [e for e in result_run.get_asset_materialization_events() if e.asset_key == release_key(mesh)]
    if releases:
        md = releases[0].materialization.metadata
        new = md.get("new_release") is None or md["new_release"].value
        click.echo(f"candidate passed every gate: release {md['release_id'].value} ({md['status'].value})"
                   + ("" if new else ", which already held these versions")
                   + f"; promote it with depmesh release promote {md['release_id'].value} --actor NAME --reason TEXT")
    elif outcome.blocked:
        click.echo(f"candidate stopped by a gate or check: {', '.join(outcome.blocked)}; Production is unchanged")
    else:
        click.echo("candidate run FAILED; Production is unchanged (see the run in the UI)")
    click.echo(f"to keep these parameters, put them in the catalog's model.params for {model}: scheduled retraining "
               "uses the catalog's parameters")
    instance.dispose()
    sys.exit(0 if outcome.ok else 1)

"""Mesh spec -> one Dagster ``Definitions``: the assets, their storage and the jobs."""

from __future__ import annotations

import sys

from dagster import (
    AssetSelection,
    Definitions,
    colored_console_logger,
    define_asset_job,
)

from depmesh import graph
from depmesh.assets import MeshIOManager, MeshRuntime, build_assets
from depmesh.assets.registry_resource import RegistryResource
from depmesh.assets.release import build_release_asset, release_key
from depmesh.assets.report import build_impact_report, build_rollout_report
from depmesh.assets.serving import build_serving_asset
from depmesh.assets.stage_jobs import build_stage_jobs
from depmesh.automation.freshness import build_freshness_checks
from depmesh.automation.jobs import domain_jobs, retrain_schedules
from depmesh.automation.routing import (
    build_canary_sensor,
    build_delivery_sensor,
    build_incident_sensor,
)
from depmesh.automation.sensors import build_retrain_sensor
from depmesh.automation.serving import build_serving_sensor
from depmesh.catalog import MeshSpec
from depmesh.execution import build_executor
from depmesh.failure_modes.catalogue import load_failure_modes
from depmesh.keys import IO_MANAGER_KEY, REGISTRY_KEY, RUNTIME_KEY
from depmesh.progress import PROGRESS_LOGGER, progress_logger
from depmesh.teams import load_teams
from depmesh.tuning.jobs import build_candidate_sensor, build_tune_jobs

MESH_JOB = "mesh_job"


def allow_depth(mesh: MeshSpec) -> None:
    """Dagster resolves asset jobs recursively, about one Python frame per level
    of the asset graph: raise the recursion limit to fit this mesh's longest
    chain (Python 3.11 keeps these frames on the heap, not the C stack)."""
    depth = graph.longest_chain(mesh.inputs_map())
    needed = 4 * depth + 3000
    if sys.getrecursionlimit() < needed:
        sys.setrecursionlimit(needed)


def build_definitions(
    mesh: MeshSpec, *, runtime: MeshRuntime | None = None, io_manager: MeshIOManager | None = None,
    builders: dict | None = None, registry: RegistryResource | None = None, executor=None,
) -> Definitions:
    """``builders`` (node -> callable) replaces catalog builders; failure simulation uses it.
    ``executor``: a Dagster ExecutorDefinition; default as DEPMESH_EXECUTOR says
    (depmesh.execution), in-process when it is not set."""
    allow_depth(mesh)
    has_models = any(n.kind == "model" for n in mesh.nodes)
    release = release_key(mesh).to_user_string()

    def below_release(name: str, below: list[str]) -> list[str]:
        """The release lies downstream of every model."""
        return [release] if has_models and any(mesh.node(n).kind == "model" for n in [name, *below]) else []

    failure_modes = load_failure_modes(mesh)  # read once: node checks and release gates name the modes they detect
    assets = [*build_assets(mesh, builders, below_release, failure_modes), build_impact_report(mesh)]
    if mesh.rollout is not None and any(n.kind == "scores" for n in mesh.nodes):
        assets.append(build_rollout_report(mesh))
    if has_models:
        assets.append(build_release_asset(mesh, failure_modes))
    serves = has_models and any(n.kind == "scores" for n in mesh.nodes)
    if serves:
        assets.append(build_serving_asset(mesh))
    # Dagster's freshness checks depend on nothing: inside a run they could judge a source before the run
    # materializes it (and fail on a new instance); only their sensor evaluates them
    freshness_checks, freshness_sensor = build_freshness_checks(mesh)
    not_in_jobs = AssetSelection.checks(*freshness_checks) if freshness_checks else None
    mesh_job = define_asset_job(
        MESH_JOB,
        selection=AssetSelection.all() - not_in_jobs if not_in_jobs is not None else AssetSelection.all(),
        description=f"Materialize the whole {mesh.name} mesh: datasets, features, models, scores, consumers.",
        tags={"depmesh/mesh": mesh.name},
    )
    tune_jobs = build_tune_jobs(mesh)
    sensors = [build_retrain_sensor(mesh)]
    teams = failure_modes.teams if failure_modes is not None else load_teams(mesh)
    if failure_modes is not None:
        sensors.append(build_incident_sensor(mesh, failure_modes))
    if teams is not None:
        sensors.append(build_delivery_sensor(mesh, teams))
    if mesh.rollout is not None:
        sensors.append(build_canary_sensor(mesh, teams))
    if serves:
        sensors.append(build_serving_sensor(mesh))
    if tune_jobs:
        sensors.append(build_candidate_sensor(mesh, tune_jobs, mesh_job))
    if freshness_sensor is not None:
        sensors.append(freshness_sensor)
    return Definitions(
        assets=assets,
        asset_checks=freshness_checks,
        jobs=[mesh_job, *domain_jobs(mesh, not_in_jobs), *(build_stage_jobs(mesh, teams) if has_models else []), *tune_jobs],
        schedules=retrain_schedules(mesh),
        sensors=sensors,
        resources={IO_MANAGER_KEY: io_manager or MeshIOManager(), RUNTIME_KEY: runtime or MeshRuntime(),
                   REGISTRY_KEY: registry or RegistryResource(mesh=mesh.name, catalog=str(mesh.path) if teams or mesh.dependencies else "")},
        executor=executor or build_executor(),
        loggers={"console": colored_console_logger, PROGRESS_LOGGER: progress_logger},
    )

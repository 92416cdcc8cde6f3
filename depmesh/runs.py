"""Running a mesh: the library behind `depmesh run`, which tests call directly.

``run_mesh`` materializes a catalog's mesh on an instance with the chosen
executor (or re-executes a failed run from its failure) and returns what
happened. The job other processes rebuild (multiprocess steps, Celery
workers, re-execution) is ``mesh_job`` here, pointed at by its module path in
every run record; ``depmesh.executors.mesh_job`` still answers for runs
recorded before it moved.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from depmesh.execution import DEFAULT_EXECUTOR, executor_name
from depmesh.keys import BLOCKING_KEY

JOB_MODULE = "depmesh.runs"
JOB_FUNCTION = "mesh_job"
CATALOG_TAG = "depmesh/catalog"
SAMPLE_TAG = "depmesh/sample"
EVENT_BATCH_ENV = "DAGSTER_EVENT_BATCH_SIZE"
PRELOAD_JOB_ENV = "DEPMESH_PRELOAD_JOB"  # the mesh_job arguments a multiprocess forkserver builds once (depmesh.preload)


class RunRequestError(ValueError):
    """A run that cannot be started as asked (a usage error: exit 2 on the command line)."""


def event_batching() -> None:
    """Dagster writes batchable events (planned materializations and checks)
    in one INSERT when this is set; depmesh's commands set it unless it is."""
    os.environ.setdefault(EVENT_BATCH_ENV, "100")


_built: dict[tuple[Any, ...], Any] = {}  # the last job built in this process, by what it was built from


def _catalog_state(catalog: str) -> tuple[Any, ...]:
    """The catalog's bytes, and the size and time of every file beside it
    (teams.yaml, failure_modes.yaml, advisories): a job is reused only while
    none of them changed."""
    import hashlib

    path = Path(catalog)
    beside = sorted((p.name, st.st_size, st.st_mtime_ns)
                    for p in path.parent.iterdir() if p.is_file() for st in [p.stat()])
    return (hashlib.sha256(path.read_bytes()).hexdigest(), tuple(beside))


def mesh_job(catalog: str, sample: float = 1.0, executor: str = DEFAULT_EXECUTOR, as_of: str = ""):
    """The mesh job of ``catalog`` on ``executor``. Step processes and Celery
    workers rebuild the job by calling this with the same JSON arguments
    (``reconstructable_mesh_job``). A process keeps the last job it built and
    returns it again while the catalog and its folder are unchanged: a Celery
    worker's pool process builds the definitions once, not once per step, and
    a multiprocess step forked from a forkserver that built them (depmesh.preload)
    builds nothing (a 10,000-node mesh takes seconds to build)."""
    from depmesh.assets import MeshRuntime
    from depmesh.build import MESH_JOB, build_definitions
    from depmesh.catalog import load_catalog
    from depmesh.execution import build_executor

    key = (str(Path(catalog).resolve()), _catalog_state(catalog), float(sample), executor, as_of)
    job = _built.get(key)
    if job is None:
        defs = build_definitions(load_catalog(catalog), runtime=MeshRuntime(sample_fraction=sample, as_of=as_of),
                                 executor=build_executor(executor))
        job = defs.resolve_job_def(MESH_JOB)
        _built.clear()
        _built[key] = job
    return job


def reconstructable_mesh_job(catalog: str, sample: float = 1.0, executor: str = DEFAULT_EXECUTOR, as_of: str = ""):
    """A job handle other processes and machines can rebuild (needed by every
    executor but ``in_process``)."""
    from dagster import build_reconstructable_job

    return build_reconstructable_job(
        JOB_MODULE, JOB_FUNCTION,
        reconstructable_kwargs={"catalog": str(catalog), "sample": float(sample), "executor": executor_name(executor),
                                "as_of": as_of})


def failed_run_settings(instance: Any, run_id: str) -> tuple[str, float]:
    """The catalog and sample of a failed `depmesh run`, to re-execute it with."""
    from dagster import DagsterRunStatus

    parent = instance.get_run_by_id(run_id)
    if parent is None:
        raise RunRequestError(f"no run {run_id} on the instance at {os.environ.get('DAGSTER_HOME', '?')}")
    if parent.status != DagsterRunStatus.FAILURE:
        raise RunRequestError(f"run {run_id} is {parent.status.value}, not FAILURE: there is no failure to "
                              "re-execute from")
    if CATALOG_TAG not in parent.tags or SAMPLE_TAG not in parent.tags:
        raise RunRequestError(f"run {run_id} was not started by `depmesh run` (it has no {CATALOG_TAG} and "
                              f"{SAMPLE_TAG} tags): re-execute it from the UI")
    return parent.tags[CATALOG_TAG], float(parent.tags[SAMPLE_TAG])


@dataclass
class RunOutcome:
    result: Any  # Dagster's ExecuteInProcessResult or JobExecutionResult
    seconds: float

    @property
    def run_id(self) -> str:
        return self.result.run_id

    @property
    def blocked(self) -> list[str]:
        return blocked_checks(self.result)

    @property
    def ok(self) -> bool:
        return bool(self.result.success) and not self.blocked


def blocked_checks(result: Any) -> list[str]:
    """'node check' for each blocking verdict that failed in the run (the run
    itself succeeds: a verdict withholds the output, it does not fail the step)."""

    out = []
    for evaluation in result.get_asset_check_evaluations():
        blocking = evaluation.metadata.get(BLOCKING_KEY)
        if not evaluation.passed and blocking is not None and blocking.value:
            out.append(f"{'/'.join(evaluation.asset_key.path)} {evaluation.check_name}")
    return out


def check_executor(chosen: str, instance: Any) -> None:
    """Refuse an executor this instance cannot serve."""
    from depmesh.execution import build_executor
    from depmesh.instance import storage_kind

    build_executor(chosen)  # raises ExecutorConfigError for a missing broker or package
    if chosen in ("celery", "k8s") and "Sqlite" in storage_kind(instance):
        raise RunRequestError(f"the {chosen} executor runs steps on other machines, which cannot reach this "
                              "SQLite instance: set DAGSTER_POSTGRES_URL")


def run_mesh(catalog: str | Path, instance: Any, *, sample: float = 1.0, executor: str = DEFAULT_EXECUTOR,
             parent_id: str | None = None, run_config: dict | None = None, tags: dict | None = None,
             mesh: Any = None, selection: list[str] | None = None) -> RunOutcome:
    """Materialize the whole mesh of ``catalog`` on ``instance`` (or
    re-execute failed run ``parent_id`` from its failure). Every run is tagged
    with its catalog and sample, so it can be re-executed the same way.
    ``mesh``: the catalog already loaded (else it is loaded here).
    ``selection``: only these assets (``models/x``, ``releases/<mesh>``)."""
    catalog_path = str(Path(catalog).resolve())
    chosen = executor_name(executor)
    check_executor(chosen, instance)
    tags = {"depmesh/trigger": "cli", CATALOG_TAG: catalog_path, SAMPLE_TAG: repr(sample), **(tags or {})}
    started = time.perf_counter()
    assets = None
    if selection:
        from dagster import AssetKey

        assets = [AssetKey.from_user_string(name) for name in selection]
    if chosen == "in_process" and not parent_id:
        from depmesh.assets import MeshRuntime
        from depmesh.build import MESH_JOB, build_definitions
        from depmesh.catalog import load_catalog
        from depmesh.execution import build_executor

        defs = build_definitions(mesh or load_catalog(catalog_path), runtime=MeshRuntime(sample_fraction=sample),
                                 executor=build_executor(chosen))
        result = defs.resolve_job_def(MESH_JOB).execute_in_process(
            instance=instance, raise_on_error=False, run_config=run_config or {}, tags=tags, asset_selection=assets)
    else:
        # other executors, and re-execution, need a job other processes can rebuild
        from dagster import ReexecutionOptions, execute_job

        options = ReexecutionOptions.from_failure(parent_id, instance) if parent_id else None
        # a forkserver started from here builds the job once for all its steps (depmesh.preload)
        os.environ[PRELOAD_JOB_ENV] = json.dumps({"catalog": str(catalog_path), "sample": float(sample),
                                                  "executor": executor_name(chosen), "as_of": ""})
        result = execute_job(reconstructable_mesh_job(catalog_path, sample, chosen), instance=instance,
                             run_config=run_config or {}, tags=tags, raise_on_error=False, reexecution_options=options,
                             asset_selection=assets)
    return RunOutcome(result, time.perf_counter() - started)

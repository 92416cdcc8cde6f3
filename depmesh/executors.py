"""Kept for run records made before the executors moved to depmesh.execution and the mesh job to depmesh.runs:
their records hold this module's path (``depmesh.executors:mesh_job``), so they still re-execute. New code imports
depmesh.execution."""

from __future__ import annotations

from depmesh.execution import (  # noqa: F401 - the old names
    BACKEND_ENV,
    BROKER_ENV,
    DEFAULT_EXECUTOR,
    EXECUTOR_ENV,
    EXECUTORS,
    ExecutorConfigError,
    build_executor,
    celery_settings,
    executor_name,
)


def mesh_job(catalog: str, sample: float = 1.0, executor: str = DEFAULT_EXECUTOR, as_of: str = ""):
    """Runs recorded before the mesh job moved to ``depmesh.runs`` point here
    (their records hold this module path): they still re-execute."""
    from depmesh.runs import mesh_job as job

    return job(catalog, sample, executor, as_of)

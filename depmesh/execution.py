"""Which Dagster executor runs a mesh job's steps.

``DEPMESH_EXECUTOR`` (or ``depmesh run --executor``) picks one of:

``in_process`` (default)
    Every step in the run's own process. On the demo mesh this costs the
    least: each step process of the other executors re-imports Dagster, pandas,
    scikit-learn and Great Expectations (see benches/overhead_bench.py).
``multiprocess``
    One process per step on this machine, forked from a forkserver that has
    already imported the heavy libraries (``depmesh.preload``).
``celery``
    dagster-celery: steps are tasks on a Celery broker, run by workers on other
    machines (``depmesh worker``). The broker comes from ``DEPMESH_CELERY_BROKER``
    (for example ``redis://host:6379/0``), the result backend from
    ``DEPMESH_CELERY_BACKEND`` or else the broker. Needs a shared instance
    (``DAGSTER_POSTGRES_URL``) and storage every worker reaches.
``k8s``
    dagster-k8s: one Kubernetes Job per step (``pip install 'depmesh[k8s]'``;
    configuration under depmesh/deploy/k8s, not tested here).
"""

from __future__ import annotations

import os
from typing import Any

EXECUTOR_ENV = "DEPMESH_EXECUTOR"
BROKER_ENV = "DEPMESH_CELERY_BROKER"
BACKEND_ENV = "DEPMESH_CELERY_BACKEND"
EXECUTORS = ("in_process", "multiprocess", "celery", "k8s")
DEFAULT_EXECUTOR = "in_process"


class ExecutorConfigError(ValueError):
    """An executor was asked for that this deployment cannot run."""


def executor_name(name: str | None = None) -> str:
    """The executor asked for (argument, else DEPMESH_EXECUTOR, else the default), checked."""
    chosen = (name or os.environ.get(EXECUTOR_ENV) or DEFAULT_EXECUTOR).strip().lower().replace("-", "_")
    if chosen not in EXECUTORS:
        source = "the argument" if name else EXECUTOR_ENV
        raise ExecutorConfigError(f"{source}={chosen!r} is not an executor depmesh offers; "
                                  f"choose one of {', '.join(EXECUTORS)}")
    return chosen


def celery_settings() -> dict[str, Any]:
    """The dagster-celery executor's configuration: broker and backend read
    from the environment when a run starts (never written into the run)."""
    if not os.environ.get(BROKER_ENV):
        raise ExecutorConfigError(
            f"the celery executor needs {BROKER_ENV}, the broker URL every worker listens on "
            f"(for example redis://127.0.0.1:6379/0)")
    backend = BACKEND_ENV if os.environ.get(BACKEND_ENV) else BROKER_ENV
    return {"broker": {"env": BROKER_ENV}, "backend": {"env": backend}}


def build_executor(name: str | None = None):
    """The Dagster ExecutorDefinition for ``name`` (see the module docstring)."""
    chosen = executor_name(name)
    if chosen == "in_process":
        from dagster import in_process_executor

        return in_process_executor
    if chosen == "multiprocess":
        from dagster import multiprocess_executor

        return multiprocess_executor.configured(
            {"start_method": {"forkserver": {"preload_modules": ["depmesh.preload"]}}},
            name="multiprocess")
    if chosen == "celery":
        settings = celery_settings()
        from dagster_celery import celery_executor

        return celery_executor.configured(settings, name="celery")
    try:
        from dagster_k8s import k8s_job_executor
    except ImportError as exc:
        raise ExecutorConfigError(f"{EXECUTOR_ENV}=k8s needs dagster-k8s: pip install 'depmesh[k8s]' ({exc})") from exc
    return k8s_job_executor

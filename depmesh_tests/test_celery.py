"""Scale-out on dagster-celery: a real Celery worker process on the Redis broker
this machine runs, a mesh run on a PostgreSQL-backed instance whose steps all
run in that worker's processes."""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from depmesh_tests.conftest import (
    SAMPLE,
    depmesh_cli,
    fresh_database,
    stop_process_group,
    team_env,
    team_instance,
)


def _children(pid: int) -> set[int]:
    out: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        out.update(int(c) for c in text)
    return out


def _wait_for(predicate, timeout: float, what: str, log: Path | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    tail = log.read_text()[-3000:] if log and log.exists() else ""
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}\n{tail}")


@pytest.fixture
def celery_deployment(postgres_server_url, redis_url, tmp_path):
    """A fresh PostgreSQL database, an instance on it, and the broker settings."""
    import redis

    broker = redis_url
    redis.Redis.from_url(broker).delete("dagster")  # no task left over from an earlier run reaches this worker
    with fresh_database(postgres_server_url) as database:
        env = team_env(tmp_path / "home", database, DEPMESH_CELERY_BROKER=broker, DEPMESH_EXECUTOR="celery")
        yield env


def test_mesh_steps_run_on_a_celery_worker_and_land_in_the_postgres_instance(celery_deployment, tmp_path, demo_mesh):
    env = celery_deployment
    doctor = subprocess.run(depmesh_cli("doctor", "--format", "json"), env=env, capture_output=True, text=True,
                            timeout=120)
    assert doctor.returncode == 1, doctor.stdout + doctor.stderr
    [executor] = [f for f in json.loads(doctor.stdout)["findings"] if f["area"] == "executor"]
    assert executor["status"] == "fail" and "no worker answered" in executor["message"]

    name = f"depmesh-test-{uuid.uuid4().hex[:6]}@localhost"
    log = tmp_path / "worker.log"
    with log.open("w") as out:
        worker = subprocess.Popen(depmesh_cli("worker", "--concurrency", "2", "--name", name), env=env, stdout=out,
                                  stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_for(lambda: f"{name} ready." in log.read_text() or worker.poll() is not None, 120, "the worker", log)
        assert worker.poll() is None, log.read_text()[-3000:]
        pool = _wait_for(lambda: _children(worker.pid), 30, "the worker's pool processes", log)

        def executor_finding() -> dict | None:
            doctor = subprocess.run(depmesh_cli("doctor", "--format", "json"), env=env, capture_output=True,
                                    text=True, timeout=120)
            [finding] = [f for f in json.loads(doctor.stdout)["findings"] if f["area"] == "executor"]
            return finding if finding["status"] == "ok" else None

        # a worker that just said "ready" may miss the first ping on a loaded machine: ask again for a while
        executor = _wait_for(executor_finding, 60, "the worker to answer doctor's ping", log)
        assert name in executor["message"], executor

        run = subprocess.Popen(depmesh_cli("run", "--executor", "celery", "--sample", str(SAMPLE)), env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        output, _ = run.communicate(timeout=900)
        assert run.returncode == 0, output[-4000:] + log.read_text()[-3000:]
        assert "celery executor" in output and "release 1 recorded" in output
        pool |= _children(worker.pid)
    finally:
        stop_process_group(worker)

    from dagster import AssetKey, DagsterEventType, DagsterRunStatus

    with team_instance(env) as instance:
        [record] = instance.get_run_records()
        assert record.dagster_run.status == DagsterRunStatus.SUCCESS
        assert record.dagster_run.tags.get("depmesh/trigger") == "cli"
        logs = instance.all_logs(record.dagster_run.run_id)
        starts = {e.dagster_event.step_key: e.dagster_event.pid for e in logs
                  if e.dagster_event and e.dagster_event.event_type == DagsterEventType.STEP_START}
        # every node's step (and the two reports and the release) ran in one of the worker's pool processes
        assert len(starts) == len(demo_mesh.nodes) + 4  # two reports, the release, the serving page
        assert set(starts.values()) <= pool, (starts, pool)
        assert run.pid not in starts.values() and os.getpid() not in starts.values()
        workers = {e.dagster_event.event_specific_data.metadata["Celery worker"].value for e in logs
                   if e.dagster_event and e.dagster_event.event_type == DagsterEventType.ENGINE_EVENT
                   and "in celery worker" in (e.dagster_event.message or "")}
        assert workers == {name}
        # the materializations are in the PostgreSQL instance, made by this run
        for node in demo_mesh.nodes:
            event = instance.get_latest_materialization_event(AssetKey(node.name.split("/")))
            assert event is not None and event.run_id == record.dagster_run.run_id, node.name
    from depmesh.registry import Registry

    registry = Registry(env["DAGSTER_POSTGRES_URL"], mesh="flights")
    try:
        [release] = registry.releases()
        assert release["status"] == "Staging"
        assert set(release["members"]) == {n.name for n in demo_mesh.nodes if n.kind == "model"}
    finally:
        registry.dispose()


def test_celery_without_a_broker_is_refused_with_the_variable_to_set(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DEPMESH_", "DAGSTER_"))}
    env.update(DAGSTER_HOME=str(tmp_path / "home"))
    result = subprocess.run(depmesh_cli("run", "--executor", "celery", "--sample", "0.05"), env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "DEPMESH_CELERY_BROKER" in result.stderr
    # and with a broker but the embedded SQLite instance, workers elsewhere could not reach it
    env["DEPMESH_CELERY_BROKER"] = "redis://127.0.0.1:6379/0"
    result = subprocess.run(depmesh_cli("run", "--executor", "celery", "--sample", "0.05"), env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "DAGSTER_POSTGRES_URL" in result.stderr
    assert not list((tmp_path / "home").glob("storage/**/*.parquet"))  # nothing ran


def test_unknown_executor_is_named_in_the_error(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DEPMESH_", "DAGSTER_"))}
    env.update(DAGSTER_HOME=str(tmp_path / "home"), DEPMESH_EXECUTOR="spark")
    result = subprocess.run(depmesh_cli("run", "--sample", "0.05"), env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2
    assert "DEPMESH_EXECUTOR='spark'" in result.stderr and "in_process, multiprocess, celery, k8s" in result.stderr


def test_an_explicit_executor_wins_over_the_environment(tmp_path, write_catalog):
    """`--executor in_process` runs in-process even where DEPMESH_EXECUTOR names
    an executor this machine cannot run (celery without a broker)."""
    catalog = write_catalog("mesh: tiny\nnodes:\n"
                            "  - {name: raw/n0, kind: dataset, owner: team:a, compute: depmesh.examples.synthetic:source}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DEPMESH_", "DAGSTER_"))}
    env.update(DAGSTER_HOME=str(tmp_path / "home"), DEPMESH_EXECUTOR="celery")
    result = subprocess.run(depmesh_cli("run", "--catalog", str(catalog), "--executor", "in_process"), env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "in_process executor" in result.stderr and "succeeded" in result.stdout

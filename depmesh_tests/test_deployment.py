"""The team deployment: the repository's dagster.yaml as Dagster reads it, the
training pool on model steps, the executors, and `depmesh doctor` on healthy
and broken deployments (a real PostgreSQL server and a real dagster-daemon)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
import sqlalchemy as sa

from depmesh.registry import Registry
from depmesh_tests.conftest import (
    REPO,
    depmesh_cli,
    fresh_database,
    stop_process_group,
    team_env,
    team_instance,
)


def test_team_dagster_yaml_sets_queue_pools_retries_and_monitoring(postgres_server_url, tmp_path):
    with fresh_database(postgres_server_url) as database:
        env = team_env(tmp_path / "home", database)
        with team_instance(env) as instance:
            assert type(instance.run_storage).__name__ == "PostgresRunStorage"
            assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
            assert type(instance.schedule_storage).__name__ == "PostgresScheduleStorage"
            assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
            config = instance.get_concurrency_config()
            assert config.run_queue_config.max_concurrent_runs == 4
            assert {"key": "dagster/sensor_name", "value": "coordinated_retraining", "limit": 1} in \
                config.run_queue_config.tag_concurrency_limits
            assert config.pool_config.default_pool_limit == 2
            assert instance.run_retries_enabled and instance.run_retries_max_retries == 2
            assert instance.run_retries_retry_on_asset_or_op_failure
            assert instance.run_monitoring_enabled
            assert instance.run_monitoring_start_timeout_seconds == 180
            assert instance.run_monitoring_max_runtime_seconds == 14400
            from depmesh.keys import TRAINING_POOL

            assert instance.event_log_storage.get_concurrency_info(TRAINING_POOL).limit == 2


def test_model_steps_and_only_they_take_the_training_pool(demo_mesh):
    from depmesh.build import build_definitions
    from depmesh.keys import TRAINING_POOL

    defs = build_definitions(demo_mesh)
    graph = defs.resolve_asset_graph()
    for node in demo_mesh.nodes:
        [op] = [a for a in graph.assets_defs if [k.to_user_string() for k in a.keys] == [node.name]]
        pools = {op.node_def.pool}
        assert pools == ({TRAINING_POOL} if node.kind == "model" else {None}), node.name


def test_each_executor_builds_and_the_default_is_in_process(demo_mesh, monkeypatch):
    from depmesh.build import MESH_JOB, build_definitions
    from depmesh.execution import ExecutorConfigError, build_executor

    assert build_definitions(demo_mesh).resolve_job_def(MESH_JOB).executor_def.name == "in_process"
    monkeypatch.setenv("DEPMESH_EXECUTOR", "multiprocess")
    job = build_definitions(demo_mesh).resolve_job_def(MESH_JOB)
    assert job.executor_def.name == "multiprocess"
    monkeypatch.setenv("DEPMESH_CELERY_BROKER", "redis://127.0.0.1:6379/0")
    assert build_executor("celery").name == "celery"
    # the Kubernetes executor's configuration (as in depmesh/deploy/k8s) is valid for dagster-k8s
    import yaml
    from dagster import validate_run_config

    k8s_job = build_definitions(demo_mesh, executor=build_executor("k8s")).resolve_job_def(MESH_JOB)
    run_config = yaml.safe_load((REPO / "depmesh" / "deploy" / "k8s" / "run_config.yaml").read_text())
    validate_run_config(k8s_job, run_config)
    monkeypatch.delenv("DEPMESH_CELERY_BROKER")
    with pytest.raises(ExecutorConfigError, match="DEPMESH_CELERY_BROKER"):
        build_executor("celery")


def start_daemon(env: dict[str, str]) -> subprocess.Popen:
    """A real dagster-daemon on the instance of ``env``, loading the code location as a deployment would.

    As the README's deployment steps say, the instance's schema is created first (`dagster instance migrate`):
    Dagster creates its PostgreSQL tables without a lock, and a daemon and a launcher that both create them
    on a new database can fail with ``type "snapshots" already exists`` (it happened in CI)."""
    migrated = subprocess.run([sys.executable, "-m", "dagster", "instance", "migrate"], env=env, cwd=REPO,
                              stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=180)
    assert migrated.returncode == 0, migrated.stderr[-2000:]
    return subprocess.Popen([sys.executable, "-m", "dagster._daemon", "run", "-m", "depmesh.definitions"], env=env,
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def launch_mesh_job(env: dict[str, str]) -> None:
    """Launch mesh_job as the UI and schedules do: into the queue, for the daemon to start."""
    launched = subprocess.run([sys.executable, "-m", "dagster", "job", "launch", "-m", "depmesh.definitions",
                               "-j", "mesh_job"], env=env, cwd=REPO, capture_output=True, text=True, timeout=180)
    assert launched.returncode == 0, launched.stderr[-2000:]


def wait_for_runs(instance, done, timeout: float = 240) -> list:
    """The instance's runs (oldest retry first) once ``done(runs)`` holds; fails after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        runs = sorted(instance.get_runs(), key=lambda r: int(r.tags.get("dagster/retry_number", "0")))
        if done(runs):
            return runs
        assert time.monotonic() < deadline, [(r.run_id, r.status, r.tags) for r in runs]
        time.sleep(1)


def _doctor(env: dict[str, str]) -> tuple[int, dict]:
    result = subprocess.run(depmesh_cli("doctor", "--format", "json"), env=env, capture_output=True, text=True,
                            timeout=180)
    return result.returncode, json.loads(result.stdout)


def _by_area(report: dict) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for finding in report["findings"]:
        out.setdefault(finding["area"], finding)
    return out


def test_doctor_says_when_the_database_is_unreachable(tmp_path):
    env = team_env(tmp_path / "home", "postgresql://postgres@127.0.0.1:1/nowhere")
    code, report = _doctor(env)
    assert code == 1 and report["ok"] is False
    found = _by_area(report)
    assert found["instance storage"]["status"] == "fail"
    assert "unreachable" in found["instance storage"]["message"] and "127.0.0.1:1" in found["instance storage"]["message"]
    table = subprocess.run(depmesh_cli("doctor"), env=env, capture_output=True, text=True, timeout=180)
    assert table.returncode == 1 and "FAIL  instance storage" in table.stdout and "problem(s)" in table.stdout


def test_doctor_without_a_daemon_then_healthy_then_behind(postgres_server_url, tmp_path):
    with fresh_database(postgres_server_url) as database:
        env = team_env(tmp_path / "home", database)
        with team_instance(env):
            pass  # creates Dagster's tables, as the first run would
        code, report = _doctor(env)
        found = _by_area(report)
        assert code == 1
        assert found["daemon"]["status"] == "fail" and "no daemon heartbeat" in found["daemon"]["message"]
        assert found["registry"]["status"] == "warn" and "no depmesh tables" in found["registry"]["message"]
        for area in ("run storage", "event log", "schedule storage", "run queue", "training pool", "run retries",
                     "run monitoring", "event batching", "executor"):
            assert found[area]["status"] == "ok", found[area]

        migrated = subprocess.run(depmesh_cli("registry", "migrate"), env=env, capture_output=True, text=True,
                                  timeout=120)
        assert migrated.returncode == 0 and f"migration {Registry.head_revision()}" in migrated.stdout, migrated.stderr
        daemon = start_daemon(env)
        try:
            deadline = time.monotonic() + 120
            while True:
                code, report = _doctor(env)
                if code == 0 or time.monotonic() > deadline:
                    break
                time.sleep(2)
            assert code == 0, report
            found = _by_area(report)
            assert found["daemon"]["status"] == "ok" and "heartbeating" in found["daemon"]["message"]
            assert found["registry"]["status"] == "ok" and f"migration {Registry.head_revision()} (current)" in found["registry"]["message"]
        finally:
            stop_process_group(daemon)

        # an instance whose schema is one migration older than this Dagster's
        import dagster
        from alembic.config import Config
        from alembic.script import ScriptDirectory

        config = Config()
        config.set_main_option("script_location", os.path.join(os.path.dirname(dagster.__file__), "_core", "storage",
                                                               "alembic"))
        script = ScriptDirectory.from_config(config)
        previous = script.get_revision(script.get_current_head()).down_revision
        engine = sa.create_engine(database)
        with engine.begin() as conn:
            conn.execute(sa.text("UPDATE alembic_version SET version_num = :v"), {"v": previous})
        engine.dispose()
        code, report = _doctor(env)
        found = _by_area(report)
        assert code == 1
        assert found["run storage"]["status"] == "fail"
        assert "schema behind" in found["run storage"]["message"] and found["run storage"]["fix"] == \
            "dagster instance migrate"


def test_a_queued_run_that_fails_is_retried_by_the_daemon(postgres_server_url, tmp_path):
    """The team configuration at work: a run launched as users and schedules do
    goes through the queue, fails once on a transient fault, and the daemon's
    run retries re-execute it from the failure."""
    from dagster import DagsterRunStatus

    catalog = tmp_path / "mesh.yaml"
    catalog.write_text(
        "mesh: flaky\nnodes:\n"
        "  - {name: raw/n0, kind: dataset, owner: team:a, compute: depmesh.examples.synthetic:source}\n"
        "  - {name: features/n1, kind: features, owner: team:a, inputs: [raw/n0], "
        "compute: depmesh_tests.faults:fail_first_time}\n")
    with fresh_database(postgres_server_url) as database:
        env = team_env(tmp_path / "home", database, DEPMESH_CATALOG=str(catalog),
                       DEPMESH_TEST_MARKER=str(tmp_path / "marker"))
        daemon = start_daemon(env)
        try:
            launch_mesh_job(env)
            with team_instance(env) as instance:
                runs = wait_for_runs(instance, lambda runs: len(runs) == 2 and runs[1].status in (
                    DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE))
                first, retry = runs
                assert first.status == DagsterRunStatus.FAILURE
                assert retry.status == DagsterRunStatus.SUCCESS
                assert retry.tags["dagster/parent_run_id"] == first.run_id
                assert retry.tags["dagster/retry_number"] == "1"
                from dagster import DagsterEventType

                queued = [e.dagster_event.event_type for e in instance.all_logs(first.run_id)
                          if e.dagster_event and e.dagster_event.event_type in
                          (DagsterEventType.RUN_ENQUEUED, DagsterEventType.RUN_DEQUEUED)]
                assert queued[:1] == [DagsterEventType.RUN_ENQUEUED]  # it waited in the daemon's queue
                # from the failure: the retry rebuilt the failed node, not the one that had succeeded
                from dagster import AssetKey

                assert instance.get_latest_materialization_event(AssetKey(["raw", "n0"])).run_id == first.run_id
                assert instance.get_latest_materialization_event(AssetKey(["features", "n1"])).run_id == retry.run_id
        finally:
            stop_process_group(daemon)


def test_a_blocked_run_is_not_retried_by_the_daemon(postgres_server_url, tmp_path):
    """With run retries on for step failures, a broken contract is a verdict, not a failure: the run ends
    SUCCESS with the check failed and the run tagged blocked, nothing downstream ran, and the daemon
    launches no retry (before, the contract failure failed the step and was retried twice)."""
    from dagster import AssetCheckKey, AssetKey, DagsterRunStatus

    catalog = tmp_path / "mesh.yaml"
    catalog.write_text(
        "mesh: blocked\nnodes:\n"
        "  - {name: raw/n0, kind: dataset, owner: team:a, compute: depmesh.examples.synthetic:source,\n"
        "     contract: {row_count: {min: 1000}}}\n"
        "  - {name: features/n1, kind: features, owner: team:a, inputs: [raw/n0], "
        "compute: depmesh.examples.synthetic:combine}\n")
    with fresh_database(postgres_server_url) as database:
        env = team_env(tmp_path / "home", database, DEPMESH_CATALOG=str(catalog))
        daemon = start_daemon(env)
        try:
            launch_mesh_job(env)
            with team_instance(env) as instance:
                wait_for_runs(instance, lambda runs: bool(runs) and runs[0].is_finished)
                time.sleep(15)  # several daemon cycles: a retry would have been launched by now
                [run] = instance.get_runs()
                assert run.status == DagsterRunStatus.SUCCESS
                assert run.tags["depmesh/blocked"] == "raw/n0: contract failed"
                assert run.tags["depmesh/trigger"] == "ui"  # launched outside depmesh run: the UI's way
                [record] = instance.event_log_storage.get_asset_check_execution_history(
                    AssetCheckKey(AssetKey(["raw", "n0"]), "contract"), limit=1)
                assert record.evaluation.passed is False
                assert instance.get_latest_materialization_event(AssetKey(["features", "n1"])) is None
        finally:
            stop_process_group(daemon)

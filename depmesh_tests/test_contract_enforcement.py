"""Contracts enforced in real Dagster runs on the demo mesh: a broken contract
stops the flow, stores nothing, and leaves every earlier materialization as it
was. A verdict blocks by withholding the output: the step succeeds (nothing
to retry), Dagster skips what is downstream, and those nodes are told why."""

from __future__ import annotations

import hashlib
import textwrap
from dataclasses import replace
from pathlib import Path

import pytest
from dagster import AssetCheckKey, AssetKey, instance_for_test

from depmesh import graph
from depmesh.catalog import EdgeContract, MeshSpec, load_catalog
from depmesh_tests.conftest import copy_of, materialize_mesh


def key(name: str) -> AssetKey:
    return AssetKey(name.split("/"))


def with_compute(mesh: MeshSpec, node: str, compute: str) -> MeshSpec:
    return replace(mesh, nodes=tuple(replace(n, compute=compute) if n.name == node else n for n in mesh.nodes))


def downstream_selection(mesh: MeshSpec, node: str) -> list[AssetKey]:
    return [key(node)] + [key(n) for n in graph.downstream(mesh.inputs_map(), node)]


def check_evaluations(result) -> dict[tuple[str, str], object]:
    return {("/".join(e.asset_key.path), e.check_name): e for e in result.get_asset_check_evaluations()}


def materialized(result) -> set[str]:
    return {"/".join(e.asset_key.path) for e in result.get_asset_materialization_events()}


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def baseline(golden, tmp_path_factory):
    with copy_of(golden, tmp_path_factory.mktemp("contracts") / "home") as instance:
        yield instance, golden.run_id, Path(instance.storage_directory()) / "depmesh"


FAULTS = [
    ("depmesh_tests.faults:weather_with_nulls", "temp.null_fraction"),
    ("depmesh_tests.faults:weather_with_impossible_values", "humid.range"),
    ("depmesh_tests.faults:weather_without_visib", "visib.dtype"),
]


@pytest.mark.parametrize("fault,rule", FAULTS, ids=[f[1] for f in FAULTS])
def test_blocking_contract_failure_skips_downstream(baseline, demo_mesh, fault, rule):
    instance, baseline_run, storage = baseline
    downstream = set(graph.downstream(demo_mesh.inputs_map(), "raw/weather"))
    assert {"features/flight_weather", "models/dep_delay", "models/late_arrival"} <= downstream
    stored = {p: file_digest(p) for p in storage.rglob("*") if p.is_file()}

    faulty = with_compute(demo_mesh, "raw/weather", fault)
    result = materialize_mesh(faulty, instance, selection=downstream_selection(demo_mesh, "raw/weather"))

    assert result.success  # the verdict is not a crash: nothing for run retries to redo
    check = check_evaluations(result)[("raw/weather", "contract")]
    assert check.passed is False
    failures = check.metadata["failures_json"].value
    assert rule in [f["id"] for f in failures]
    assert rule in check.description  # what the UI shows beside the red check
    assert check.metadata["depmesh/stored"].value is False and check.metadata["depmesh/blocking"].value is True
    assert check.metadata["depmesh/judged_version"].value.startswith("data version ")
    assert check.description.startswith("NOT STORED (data version ")
    # everything downstream was skipped, not failed, and was told which node and check stopped it
    steps = {e.step_key: e.event_type_value for e in result.all_events if e.is_step_event
             and e.event_type_value in ("STEP_SUCCESS", "STEP_SKIPPED", "STEP_FAILURE")}
    assert steps["raw__weather"] == "STEP_SUCCESS"
    for name in downstream:
        assert steps[name.replace("/", "__")] == "STEP_SKIPPED", name
    notes = {"/".join(e.asset_key.path): e.event_specific_data.asset_observation.metadata
             for e in result.all_events if e.event_type_value == "ASSET_OBSERVATION"}
    assert set(notes) == downstream  # the release was not in this run's selection
    assert notes["models/dep_delay"]["depmesh/not_run"].value == "not run: blocked upstream by raw/weather: contract failed"
    assert instance.get_run_by_id(result.run_id).tags["depmesh/blocked"] == "raw/weather: contract failed"
    # nothing of the bad data, or built from it, was stored in this run
    assert materialized(result) == set()
    for name in ["raw/weather", *downstream]:
        assert instance.get_latest_materialization_event(key(name)).run_id == baseline_run, name
    assert {p: file_digest(p) for p in storage.rglob("*") if p.is_file()} == stored


def test_warn_expectation_reports_without_blocking(demo_mesh, tmp_path):
    faulty = with_compute(demo_mesh, "raw/weather", "depmesh_tests.faults:weather_with_bad_pressure")
    with instance_for_test(temp_dir=str(tmp_path)) as instance:
        result = materialize_mesh(faulty, instance, selection=[key("raw/weather")])
        assert result.success
        checks = check_evaluations(result)
        assert checks[("raw/weather", "contract")].passed is True
        warning = checks[("raw/weather", "contract_warnings")]
        assert warning.passed is False and warning.severity.value == "WARN"
        assert [f["id"] for f in warning.metadata["failures_json"].value] == ["pressure.range"]
        assert materialized(result) == {"raw/weather"}


def test_passing_contract_reports_the_counts_checked(baseline, demo_mesh):
    instance, baseline_run, _ = baseline
    record = instance.event_log_storage.get_latest_asset_check_execution_by_key(
        [AssetCheckKey(key("raw/flights"), "contract")]
    )
    evaluation = next(iter(record.values())).evaluation
    assert evaluation.passed
    assert evaluation.metadata["expectations_checked"].value >= 20
    assert evaluation.metadata["rows_checked"].value > 10_000


def test_schema_change_check_reports_added_and_retyped_columns(demo_mesh, tmp_path):
    with instance_for_test(temp_dir=str(tmp_path)) as instance:
        first = materialize_mesh(demo_mesh, instance, selection=[key("raw/airlines")])
        assert check_evaluations(first)[("raw/airlines", "schema_change")].passed
        reshaped = with_compute(demo_mesh, "raw/airlines", "depmesh_tests.faults:airlines_reshaped")
        second = materialize_mesh(reshaped, instance, selection=[key("raw/airlines")])
        change = check_evaluations(second)[("raw/airlines", "schema_change")]
        assert change.passed is False and change.severity.value == "WARN"
        assert change.metadata["added"].value == ["alliance"]
        assert change.metadata["retyped"].value == {"name": "str -> category"}
        assert change.metadata["removed"].value == []
        # the airlines contract says name is a string: a retype to category is an ERROR
        assert check_evaluations(second)[("raw/airlines", "contract")].passed is False


def test_distribution_drift_against_the_last_good_materialization(demo_mesh, tmp_path):
    with instance_for_test(temp_dir=str(tmp_path)) as instance:
        first = materialize_mesh(demo_mesh, instance, selection=[key("raw/flights")])
        assert "dep_delay.mean: no reference materialization yet" in \
            check_evaluations(first)[("raw/flights", "contract")].metadata["not_applied"].value
        again = materialize_mesh(demo_mesh, instance, selection=[key("raw/flights")])
        assert check_evaluations(again)[("raw/flights", "contract")].passed
        drifted = with_compute(demo_mesh, "raw/flights", "depmesh_tests.faults:flights_drifted")
        result = materialize_mesh(drifted, instance, selection=[key("raw/flights")])
        check = check_evaluations(result)[("raw/flights", "contract")]
        assert check.passed is False
        assert "dep_delay.mean" in [f["id"] for f in check.metadata["failures_json"].value]
        assert instance.get_latest_materialization_event(key("raw/flights")).run_id == again.run_id


def test_input_contract_blocks_a_node_whose_input_lacks_a_column(write_catalog, tmp_path):
    path = write_catalog(textwrap.dedent("""\
        mesh: edges
        nodes:
          - name: raw/airlines
            kind: dataset
            owner: team:ingestion
            compute: depmesh.examples.flights.sources:load_airlines
          - name: features/airline_names
            kind: features
            owner: team:features
            inputs:
              - {node: raw/airlines, columns: [carrier, alliance]}
            compute: depmesh.examples.flights.transforms:aircraft
    """))
    mesh = load_catalog(path)
    with instance_for_test(temp_dir=str(tmp_path)) as instance:
        result = materialize_mesh(mesh, instance)
        assert result.success
        check = check_evaluations(result)[("features/airline_names", "input_contract")]
        assert check.passed is False
        assert "raw/airlines lacks column(s) alliance that features/airline_names reads" in check.description
        assert check.description.startswith("NOT STORED (nothing built)")
        assert materialized(result) == {"raw/airlines", f"reports/{mesh.name}/impact"}


def test_latency_budget_on_an_upstream_model_blocks_its_consumer(baseline, demo_mesh):
    instance, baseline_run, _ = baseline
    node = demo_mesh.node("models/arr_delay")
    strict = replace(node, edges={**node.edges, "models/dep_delay": EdgeContract(latency_p95_ms=0.001)})
    mesh = replace(demo_mesh, nodes=tuple(strict if n.name == node.name else n for n in demo_mesh.nodes))
    result = materialize_mesh(mesh, instance, selection=[key("models/arr_delay")])
    check = check_evaluations(result)[("models/arr_delay", "input_contract")]
    assert check.passed is False
    assert "over the 0.001 ms budget models/arr_delay needs" in check.description
    assert check.metadata["models/dep_delay/p95_ms"].value > 0.001
    assert instance.get_latest_materialization_event(key("models/arr_delay")).run_id == baseline_run
    # the loaded dep_delay is the stored version: its own latency gate's figure is used, not a second timing
    upstream = instance.get_latest_materialization_event(key("models/dep_delay")).asset_materialization.metadata
    assert check.metadata["models/dep_delay/p95_measured_by"].value == "its latency gate"
    assert check.metadata["models/dep_delay/p95_ms"].value == upstream["latency/single_p95_ms"].value


def test_an_edge_latency_budget_times_the_model_itself_without_a_gate_figure(demo_mesh):
    from depmesh.contracts.checks import input_contract_result
    from depmesh.models import TrainedModel

    class Slow:
        def predict(self, frame):
            import time

            time.sleep(0.004)
            return [0.0] * len(frame)

    model = TrainedModel(node="models/m", task="regression", estimator=Slow(), features=["x"], target="y",
                         prediction_column="pred_m", split=demo_mesh.node("models/dep_delay").model.split)
    import pandas as pd

    model.sample_input = pd.DataFrame({"x": [1.0] * 8})
    node = replace(demo_mesh.node("models/arr_delay"), inputs=("models/m",),
                   edges={"models/m": EdgeContract(latency_p95_ms=2.0)})
    timed = input_contract_result(node, {"models/m": model})
    assert timed.passed is False and timed.metadata["models/m/p95_measured_by"].value == "this check"
    assert timed.metadata["models/m/p95_ms"].value >= 4.0
    known = input_contract_result(node, {"models/m": model}, {"models/m": 1.5})
    assert known.passed is True and known.metadata["models/m/p95_ms"].value == 1.5

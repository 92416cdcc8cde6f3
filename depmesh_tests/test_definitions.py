"""The factory: the Dagster asset graph is exactly the catalog."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from dagster import AssetKey

from depmesh.build import MESH_JOB, build_definitions
from depmesh.catalog import KIND_GROUPS


def test_asset_graph_edges_are_exactly_the_catalog_inputs(demo_mesh):
    asset_graph = build_definitions(demo_mesh).resolve_asset_graph()
    keys = {"/".join(k.path) for k in asset_graph.get_all_asset_keys()}
    assert keys == set(demo_mesh.names) | {"reports/flights/impact", "reports/flights/rollout", "releases/flights",
                                           "serving/flights"}
    for node in demo_mesh.nodes:
        parents = {"/".join(k.path) for k in asset_graph.get(AssetKey(node.key_path)).parent_keys}
        assert parents == set(node.inputs), node.name


def test_assets_carry_group_owner_tags_code_version_and_schema(demo_mesh):
    defs = build_definitions(demo_mesh)
    from depmesh.impact import impact

    for node in demo_mesh.nodes:
        spec = defs.resolve_assets_def(AssetKey(node.key_path)).specs_by_key[AssetKey(node.key_path)]
        assert spec.group_name == KIND_GROUPS[node.kind]
        reach = impact(demo_mesh, node.name)
        assert spec.metadata["depmesh/downstream"] == len(reach.downstream)
        assert spec.metadata["depmesh/consumers"].value == reach.consumers
        assert spec.metadata["depmesh/blast_radius"] == reach.blast_radius
        assert spec.owners == [node.owner]
        assert spec.tags["depmesh/kind"] == node.kind
        assert spec.code_version and len(spec.code_version) == 12
        assert spec.description == node.description
        if node.contract:
            schema = spec.metadata["dagster/column_schema"]
            assert [c.name for c in schema.columns] == [c.name for c in node.contract.columns]
    flights = defs.resolve_assets_def(AssetKey(["raw", "flights"])).specs_by_key[AssetKey(["raw", "flights"])]
    origin = next(c for c in flights.metadata["dagster/column_schema"].columns if c.name == "origin")
    assert origin.constraints.nullable is False
    assert "one of EWR, JFK, LGA" in origin.constraints.other
    delay = next(c for c in flights.metadata["dagster/column_schema"].columns if c.name == "dep_delay")
    assert "at most 5.00% nulls" in delay.constraints.other
    weather = defs.resolve_assets_def(AssetKey(["raw", "weather"])).specs_by_key[AssetKey(["raw", "weather"])]
    pressure = next(c for c in weather.metadata["dagster/column_schema"].columns if c.name == "pressure")
    assert "WARN: these rules warn, they do not block" in pressure.constraints.other
    assert defs.resolve_job_def(MESH_JOB) is not None


def test_code_version_changes_with_model_parameters(demo_mesh):
    from dataclasses import replace

    from depmesh.assets.factory import node_code_version

    node = demo_mesh.node("models/dep_delay")
    changed = replace(node, model=replace(node.model, params={**node.model.params, "max_iter": 10}))
    assert node_code_version(node) != node_code_version(changed)
    assert node_code_version(node) == node_code_version(replace(node, description="other words"))


def test_loading_definitions_imports_neither_sklearn_nor_great_expectations():
    code = textwrap.dedent("""
        import sys
        import depmesh.definitions
        heavy = [m for m in ("sklearn", "great_expectations", "matplotlib", "optuna", "plotly") if m in sys.modules]
        print(",".join(heavy))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_invalid_catalog_registers_nothing(write_catalog):
    bad = write_catalog("mesh: x\nnodes:\n  - name: raw/a\n    kind: dataset\n")
    code = "import depmesh.definitions"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**__import__("os").environ, "DEPMESH_CATALOG": str(bad)})
    assert out.returncode != 0
    assert "CatalogError" in out.stderr and "missing required key 'owner'" in out.stderr


def test_contract_checks_are_declared_per_node(demo_mesh):
    from dagster import AssetCheckKey

    check_keys = build_definitions(demo_mesh).resolve_asset_graph().asset_check_keys
    names = {("/".join(k.asset_key.path), k.name) for k in check_keys}
    for node in demo_mesh.nodes:
        if node.kind != "model":
            assert (node.name, "schema_change") in names
        if node.contract:
            assert (node.name, "contract") in names
        if node.edges:
            assert (node.name, "input_contract") in names
    assert ("raw/weather", "contract_warnings") in names  # pressure is a WARN rule
    assert ("raw/airlines", "contract_warnings") not in names
    specs = build_definitions(demo_mesh).resolve_assets_def(AssetKey(["raw", "weather"])).check_specs_by_output_name
    # depmesh blocks by withholding the output, never by failing the step (Dagster's blocking flag)
    assert {spec.name: spec.blocking for spec in specs.values()} == {
        "contract": False, "contract_warnings": False, "schema_change": False}
    blocks = {spec.name: "Blocking (a depmesh gate)" in (spec.description or "") for spec in specs.values()}
    assert blocks == {"contract": True, "contract_warnings": False, "schema_change": False}
    from depmesh.contracts.checks import blocking_check_names

    assert blocking_check_names(demo_mesh.node("raw/weather")) == {"contract"}
    assert blocking_check_names(demo_mesh.node("models/arr_delay")) == {
        "input_contract", "gate_quality", "gate_latency", "gate_subgroups", "gate_malformed_input", "gate_memory"}
    assert AssetCheckKey(AssetKey(["raw", "weather"]), "contract") in check_keys


def test_materialization_freshness_is_a_dagster_freshness_policy(demo_mesh):
    from datetime import timedelta

    defs = build_definitions(demo_mesh)
    key = AssetKey(["raw", "flights"])
    policy = defs.resolve_assets_def(key).specs_by_key[key].freshness_policy
    assert policy.warn_window.to_timedelta() == timedelta(days=7)
    assert policy.fail_window.to_timedelta() == timedelta(days=14)
    other = AssetKey(["raw", "weather"])
    assert defs.resolve_assets_def(other).specs_by_key[other].freshness_policy is None


def test_domain_jobs_schedules_and_the_sensor(demo_mesh):
    defs = build_definitions(demo_mesh)
    assert {j.name for j in defs.jobs} == {"mesh_job", "ingestion_job", "features_job", "training_job",
                                           "scoring_job", "consumers_job", "promote_release", "request_promotion",
                                           "approve_request", "reject_request", "rollback_release",
                                           "tune__models__dep_delay"}  # one per model with a tune block
    training = defs.resolve_job_def("training_job")
    assert {"/".join(k.path) for k in training.asset_layer.selected_asset_keys} == {
        n.name for n in demo_mesh.nodes if n.kind == "model"}
    schedules = {s.name: s for s in defs.schedules}
    assert set(schedules) == {"retrain_models__dep_delay", "retrain_models__route_segment"}
    assert schedules["retrain_models__dep_delay"].cron_schedule == "0 3 * * 1"
    assert [s.name for s in defs.sensors] == ["coordinated_retraining", "incidents_on_run_failure",
                                             "deliver_notifications", "canary_rollouts", "serve_production",
                                             "tuned_candidates", "flights_freshness_checks"]

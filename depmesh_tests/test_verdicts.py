"""What the verdicts say in Dagster: each check targets the materialization
it judged; the release's own gates; stage changes as events on the models and
the release; every run says what started it."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from dagster import AssetCheckKey, AssetKey

from depmesh.assets.io import recorded_metadata, storage_dir
from depmesh.assets.registry_resource import open_registry
from depmesh.cli import main
from depmesh.gates.release import RELEASE_GATES, evaluate_release
from depmesh.registry.store import default_url
from depmesh_tests.conftest import approve_release, copy_of, materialize_mesh

MODELS = ["models/route_segment", "models/dep_delay", "models/arr_delay", "models/late_arrival"]


def key(name: str) -> AssetKey:
    return AssetKey(name.split("/"))


@pytest.fixture
def home(golden, tmp_path):
    with copy_of(golden, tmp_path / "home") as instance:
        yield instance


def latest_check(instance, name: str, check: str):
    [record] = instance.event_log_storage.get_asset_check_execution_history(AssetCheckKey(key(name), check), limit=1)
    return record


def test_each_verdict_targets_the_materialization_it_judged(home, demo_mesh):
    """Run B rebuilds dep_delay: its gates point at B's materialization, not at A's."""
    result = materialize_mesh(demo_mesh, home, selection=[key("models/dep_delay"), key("raw/weather")])
    assert result.success
    for name, check in (("models/dep_delay", "gate_quality"), ("models/dep_delay", "gate_latency"),
                        ("raw/weather", "contract"), ("raw/weather", "schema_change")):
        record = latest_check(home, name, check)
        latest = home.fetch_materializations(key(name), limit=1).records[0]
        assert record.run_id == latest.run_id == result.run_id
        target = record.evaluation.target_materialization_data
        assert target is not None and target.storage_id == latest.storage_id, (name, check)
        metadata = record.evaluation.metadata
        assert metadata["depmesh/stored"].value is True
    judged = latest_check(home, "models/dep_delay", "gate_quality").evaluation.metadata["depmesh/judged_version"].value
    assert judged == f"model version {recorded_metadata(home, ['models', 'dep_delay'])['model_version']}"


def _records(members: dict[str, str], upstream: dict[str, dict[str, str]], failing: dict[str, str] | None = None):
    failing = failing or {}
    return {n: {"gates": {"gate_quality": {"passed": n not in failing}, "gate_latency": {"passed": True}},
                "upstream_models": upstream.get(n, {})} for n in members}


@pytest.mark.parametrize("gate,members,upstream,failing,problems,message", [
    ("release_gates_passed", {"a": "1", "b": "2"}, {"b": {"a": "1"}}, {"b": "x"}, [],
     "b@2 failed gate_quality"),
    ("release_artifacts_verified", {"a": "1"}, {}, None, ["a@1: the artifact of version 1 is missing"],
     "a@1: the artifact of version 1 is missing"),
    ("release_trained_together", {"a": "1", "b": "2"}, {"b": {"a": "0"}}, None, [],
     "b@2 was trained against a@0, the release holds a@1"),
    ("release_upstream_in_set", {"b": "2"}, {"b": {"a": "1"}}, None, [], "b@2 needs a@1, which is not in the release"),
])
def test_each_release_gate_fails_on_what_it_guards(gate, members, upstream, failing, problems, message):
    results = {g.name: g for g in evaluate_release(members, _records(members, upstream, failing), problems)}
    assert [g for g, _, _ in RELEASE_GATES] == list(results)
    assert results[gate].passed is False and message in results[gate].summary
    assert all(r.passed for name, r in results.items() if name != gate)


def test_the_recipe_gate_names_each_member_that_cannot_be_rebuilt():
    members = {"a": "1", "b": "2"}
    records = _records(members, {"b": {"a": "1"}})
    records["b"]["recipe_problems"] = ["the git commit was not recorded (not in a git repository)"]
    results = {g.name: g for g in evaluate_release(members, records, [])}
    assert results["release_recipes_complete"].passed is False
    assert results["release_recipes_complete"].summary == "b@2: the git commit was not recorded (not in a git repository)"
    assert all(r.passed for name, r in results.items() if name != "release_recipes_complete")


def test_a_consistent_set_passes_every_release_gate():
    members = {"a": "1", "b": "2", "c": "3"}
    upstream = {"b": {"a": "1"}, "c": {"a": "1", "b": "2"}}
    assert all(r.passed for r in evaluate_release(members, _records(members, upstream), []))


def test_a_release_whose_member_artifact_fails_is_not_recorded(home, demo_mesh, golden):
    md = recorded_metadata(home, ["models", "late_arrival"])
    path = next((storage_dir(home) / "artifacts").rglob(f"{md['artifact_hash']}.*"))
    path.write_bytes(b"truncated")
    registry = open_registry(default_url(Path(home.root_directory)), demo_mesh.name)
    before = registry.releases()
    result = materialize_mesh(demo_mesh, home, selection=[key("releases/flights")])
    assert result.success
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert set(checks) == {g for g, _, _ in RELEASE_GATES}
    assert checks["release_artifacts_verified"].passed is False
    assert md["artifact_hash"] in checks["release_artifacts_verified"].description
    assert checks["release_artifacts_verified"].metadata["depmesh/stored"].value is False
    assert all(c.passed for n, c in checks.items() if n != "release_artifacts_verified")
    assert result.get_asset_materialization_events() == []
    assert registry.releases() == before
    assert home.get_run_by_id(result.run_id).tags["depmesh/blocked"] == "releases/flights: release_artifacts_verified failed"


def test_the_release_gates_pass_and_target_the_recorded_release(golden, tmp_path):
    with copy_of(golden, tmp_path / "home") as instance:
        for gate, _, _ in RELEASE_GATES:
            record = latest_check(instance, "releases/flights", gate)
            assert record.run_id == golden.run_id and record.evaluation.passed, gate
            assert record.evaluation.target_materialization_data is not None


def observations(instance, name: str) -> list[dict]:
    records = instance.fetch_observations(key(name), limit=20).records
    return [{k: v.value for k, v in r.asset_observation.metadata.items()} for r in records]


def test_promotions_and_rollbacks_appear_on_the_models_and_the_release(home, golden, demo_mesh):
    runner = CliRunner()
    where = ["--home", str(home.root_directory)]
    staged = observations(home, "models/dep_delay")
    assert staged and staged[0]["depmesh/stage"] == "Staging"  # recorded by the release step of the golden run
    approve_release(home.root_directory, golden.release_id)
    out = runner.invoke(main, ["release", "promote", str(golden.release_id), *where, "--actor", "ana",
                               "--reason", "weekly release"])
    assert out.exit_code == 0, out.output
    version = recorded_metadata(home, ["models", "dep_delay"])["model_version"]
    [latest, *_] = observations(home, "models/dep_delay")
    assert latest["depmesh/stage"] == "Production" and latest["depmesh/version"] == version
    assert latest["depmesh/production_version"] == version
    assert (latest["depmesh/actor"], latest["depmesh/reason"]) == ("ana", "weekly release")
    assert latest["depmesh/release_id"] == golden.release_id and latest["depmesh/from_stage"] == "Staging"
    [release, *_] = observations(home, "releases/flights")
    assert release["depmesh/production_release"] == golden.release_id
    assert release["depmesh/production_release_status"] == "Production"
    assert f"models/late_arrival@{recorded_metadata(home, ['models', 'late_arrival'])['model_version']}" in \
        release["depmesh/production"]


def test_every_run_says_what_started_it(home, demo_mesh):
    ui = materialize_mesh(demo_mesh, home, selection=[key("raw/airlines")])
    assert home.get_run_by_id(ui.run_id).tags["depmesh/trigger"] == "ui"
    scheduled = materialize_mesh(demo_mesh, home, selection=[key("raw/airlines")],
                                 tags={"dagster/schedule_name": "retrain_dep_delay"})
    assert home.get_run_by_id(scheduled.run_id).tags["depmesh/trigger"] == "schedule:retrain_dep_delay"
    cli = materialize_mesh(demo_mesh, home, selection=[key("raw/airlines")], tags={"depmesh/trigger": "cli"})
    assert home.get_run_by_id(cli.run_id).tags["depmesh/trigger"] == "cli"


def test_the_blocked_tag_names_every_node_a_run_blocked(tmp_path):
    """Two nodes blocked in one run: the second step must add to the tag, not overwrite the first's."""
    from dagster import instance_for_test

    from depmesh.catalog import load_catalog

    (tmp_path / "two.yaml").write_text(
        "mesh: two\nnodes:\n"
        "  - {name: raw/a, kind: dataset, owner: team:a, compute: depmesh.examples.synthetic:source,\n"
        "     contract: {row_count: {min: 1000}}}\n"
        "  - {name: raw/b, kind: dataset, owner: team:a, compute: depmesh.examples.synthetic:source,\n"
        "     contract: {row_count: {min: 1000}}}\n")
    (tmp_path / "home").mkdir()
    with instance_for_test(temp_dir=str(tmp_path / "home")) as instance:
        result = materialize_mesh(load_catalog(tmp_path / "two.yaml"), instance)
        tag = instance.get_run_by_id(result.run_id).tags["depmesh/blocked"]
        assert sorted(tag.split("; ")) == ["raw/a: contract failed", "raw/b: contract failed"]

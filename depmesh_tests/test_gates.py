"""Deployment gates: each passing and failing on a real trained model, and in
real Dagster runs, where a failed gate stops the model and the release."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner
from dagster import AssetKey

from depmesh.assets import MeshStore
from depmesh.assets.factory import NodeContext
from depmesh.assets.registry_resource import open_registry
from depmesh.cli import main
from depmesh.examples.flights.trainers import train_dep_delay
from depmesh.gates import evaluate as gates
from depmesh.registry.store import default_url
from depmesh.simulate import DelayedEstimator
from depmesh_tests import faults
from depmesh_tests.conftest import approve_release, copy_of, materialize_mesh


class Log:
    def info(self, *_):
        pass


@pytest.fixture(scope="module")
def baseline(golden, tmp_path_factory):
    with copy_of(golden, tmp_path_factory.mktemp("gates") / "home") as instance:
        yield instance, golden, Path(instance.storage_directory()) / "depmesh"


@pytest.fixture(scope="module")
def trained(baseline, demo_mesh):
    """dep_delay trained again here, with its evaluation window in hand."""
    instance, _, storage = baseline
    store = MeshStore(storage, instance=instance)
    node = demo_mesh.node("models/dep_delay")
    inputs = {name: store.load(name.split("/")) for name in node.inputs}
    ctx = NodeContext(node=node, sample_fraction=1.0, log=Log())
    model = train_dep_delay(inputs, ctx)
    return model, ctx.evaluation, node.model.gates


def test_quality_gate(trained):
    model, _, spec = trained
    mae = model.metrics["mae"]
    first = gates.quality(model, spec, production=None)
    assert first.passed and first.figures["against"] == "naive baseline (the trainer's)"
    assert gates.quality(model, spec, production={"mae": mae * 0.97}).passed  # within the 5% allowed
    worse = gates.quality(model, spec, production={"mae": mae * 0.8})
    assert not worse.passed and worse.figures["against"] == "Production"
    beaten = replace(model, metrics={**model.metrics, "baseline_mae": mae * 0.9})
    assert not gates.quality(beaten, spec, production=None).passed


def test_latency_gate(trained):
    model, _, spec = trained
    fast = gates.latency(model, spec)
    assert fast.passed, fast.summary
    assert fast.figures["single_p50_ms"] <= fast.figures["single_p95_ms"] <= fast.figures["single_p99_ms"]
    slow = replace(model, estimator=DelayedEstimator(model.estimator, 0.4))
    result = gates.latency(slow, spec)
    assert not result.passed and result.figures["single_p95_ms"] > spec.single_p95_ms


def test_subgroup_gate(trained):
    model, evaluation, spec = trained
    ok = gates.subgroups(model, spec, evaluation)
    assert ok.passed, ok.summary
    origins = {r["group"] for r in ok.figures["per_group"] if r["column"] == "origin"}
    assert origins == {"EWR", "JFK", "LGA"}
    assert {r["column"] for r in ok.figures["per_group"]} == {"origin", "carrier"}
    strict = replace(spec, subgroup_limit=5.0)
    floor = gates.subgroups(model, strict, evaluation)
    assert not floor.passed and "beyond the limit 5" in floor.summary
    gap = gates.subgroups(model, replace(spec, subgroup_max_gap=0.01), evaluation)
    assert not gap.passed and "gap" in gap.summary


def test_malformed_input_gate(trained):
    model, _, spec = trained
    ok = gates.malformed_input(model, spec)
    assert ok.passed, ok.figures
    cases = ok.figures["cases"]
    assert set(cases) >= {"empty frame", "missing column", "extra column", "NaN and infinities", "wrong dtypes",
                          "extreme values", "unseen categories"}
    assert cases["missing column"].startswith("refused: missing column(s)")
    assert cases["unseen categories"] == "20 predictions"
    crashing = replace(model, estimator=faults.CrashingEstimator(model.estimator))
    crash = gates.malformed_input(crashing, spec)
    assert not crash.passed and "CRASH RuntimeError" in crash.figures["cases"]["NaN and infinities"]
    hanging = replace(model, estimator=faults.HangingEstimator(model.estimator))
    hang = gates.malformed_input(hanging, replace(spec, malformed_timeout_s=0.5))
    assert not hang.passed and hang.figures["cases"]["extreme values"].startswith("HANG")


def test_memory_gate(trained):
    model, _, spec = trained
    ok = gates.memory(model, spec)
    assert ok.passed and 0 < ok.figures["peak_mb"] < spec.max_peak_mb
    assert not gates.memory(model, replace(spec, max_peak_mb=0.001)).passed


def test_a_gate_that_raises_fails_instead_of_crashing_the_step(trained):
    model, evaluation, spec = trained
    broken = replace(model, sample_input=None)
    results = gates.evaluate_gates(broken, spec, evaluation, None)
    assert [r.name for r in results] == list(gates.GATES)
    assert not next(r for r in results if r.name == gates.LATENCY).passed


def test_passing_run_records_a_release_in_staging_with_cards(baseline, demo_mesh):
    instance, golden, _ = baseline
    result = golden
    registry = open_registry(default_url(Path(instance.root_directory)), "flights")
    release_id = golden.release_id
    item = registry.release(release_id)
    assert item["status"] == "Staging"
    for name in ("models/route_segment", "models/dep_delay", "models/arr_delay", "models/late_arrival"):
        md = instance.get_latest_materialization_event(AssetKey(name.split("/"))).asset_materialization.metadata
        assert item["members"][name] == md["model_version"].value
        version = registry.version(name, item["members"][name])
        assert version["stage"] == "Staging" and version["run_id"] == result.run_id
        assert all(g["passed"] for g in version["gates"].values()) and len(version["gates"]) == 5
        card = version["card"]
        for section in ("## Intended use", "## Training data and window", "## Metrics on the evaluation window",
                        "## Gate results", "## Upstream models it depends on", "## Known limits", "## Rollback procedure"):
            assert section in card, (name, section)
        assert md["model_card"].value == card
    arr = registry.version("models/arr_delay", item["members"]["models/arr_delay"])
    assert arr["upstream_models"]["models/dep_delay"] == item["members"]["models/dep_delay"]
    assert "### Per subgroup" in arr["card"]


@pytest.mark.parametrize("trainer,gate", [("depmesh_tests.faults:slow_dep_delay", "gate_latency"),
                                          ("depmesh_tests.faults:crashing_dep_delay", "gate_malformed_input")])
def test_a_failed_gate_stops_the_model_and_the_release(baseline, demo_mesh, trainer, gate):
    instance, first, _ = baseline
    node = demo_mesh.node("models/dep_delay")
    mesh = replace(demo_mesh, nodes=tuple(replace(n, model=replace(n.model, trainer=trainer))
                                          if n.name == node.name else n for n in demo_mesh.nodes))
    registry = open_registry(default_url(Path(instance.root_directory)), "flights")
    before_versions, before_releases = registry.versions(node.name), registry.releases()
    result = materialize_mesh(mesh, instance, selection=[AssetKey(["models", "dep_delay"]),
                                                         AssetKey(["models", "arr_delay"]),
                                                         AssetKey(["releases", "flights"])])
    assert result.success  # a failed gate withholds the model; it is not a crash to retry
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()
              if e.asset_key == AssetKey(["models", "dep_delay"])}
    assert checks[gate].passed is False
    assert checks[gate].metadata["depmesh/stored"].value is False
    skipped = {e.step_key for e in result.all_events if e.event_type_value == "STEP_SKIPPED"}
    assert skipped == {"models__arr_delay", "releases__flights"}
    built = {"/".join(e.asset_key.path) for e in result.get_asset_materialization_events()}
    assert built == set()  # neither the model, nor what depends on it, nor a release
    assert registry.versions(node.name) == before_versions
    assert registry.releases() == before_releases


def test_release_cli_promote_show_history_and_rollback(baseline):
    instance, result, _ = baseline
    home = str(instance.root_directory)
    runner = CliRunner()
    listed = json.loads(runner.invoke(main, ["release", "list", "--home", home, "--format", "json"]).output)
    release_id = listed[-1]["id"]
    refused = runner.invoke(main, ["release", "promote", str(release_id), "--home", home, "--actor", "ana", "--reason", ""])
    assert refused.exit_code == 1 and "needs an actor and a reason" in refused.output
    missing = runner.invoke(main, ["release", "promote", str(release_id), "--home", home])
    assert missing.exit_code == 2 and "--reason" in missing.output
    unapproved = runner.invoke(main, ["release", "promote", str(release_id), "--home", home, "--actor", "ana",
                                      "--reason", "go"])
    assert unapproved.exit_code == 1 and f"release {release_id} needs approval before Production" in unapproved.output
    approve_release(home, release_id)
    ok = runner.invoke(main, ["release", "promote", str(release_id), "--home", home, "--actor", "ana", "--reason", "go"])
    assert ok.exit_code == 0, ok.output
    shown = json.loads(runner.invoke(main, ["release", "show", str(release_id), "--home", home, "--format", "json"]).output)
    assert shown["status"] == "Production" and {m["stage"] for m in shown["members"]} == {"Production"}
    history = runner.invoke(main, ["registry", "history", "models/dep_delay", "--home", home])
    assert history.exit_code == 0 and "Production" in history.output and "ana" in history.output
    rollback = runner.invoke(main, ["release", "rollback", "--home", home, "--actor", "ana", "--reason", "x"])
    assert rollback.exit_code == 1 and "replaced no earlier release" in rollback.output
    single = runner.invoke(main, ["release", "rollback", "--node", "models/dep_delay", "--home", home,
                                  "--actor", "ana", "--reason", "x"])
    assert single.exit_code == 1 and "refused" in single.output and "models/arr_delay" in single.output


def test_promote_release_job(golden, demo_mesh, tmp_path):
    from depmesh.build import build_definitions

    with copy_of(golden, tmp_path / "home") as instance:
        job = build_definitions(demo_mesh).resolve_job_def("promote_release")
        config = lambda reason: {"ops": {"promote_release_op": {"config": {  # noqa: E731
            "release_id": golden.release_id, "actor": "release-bot", "reason": reason}}}}
        refused = job.execute_in_process(instance=instance, run_config=config(" "), raise_on_error=False)
        assert not refused.success
        registry = open_registry(default_url(Path(instance.root_directory)), "flights")
        assert registry.production() == {}
        unapproved = job.execute_in_process(instance=instance, run_config=config("weekly release"), raise_on_error=False)
        assert not unapproved.success and registry.production() == {}  # flights declares teams: approval first
        approve_release(instance.root_directory, golden.release_id)
        done = job.execute_in_process(instance=instance, run_config=config("weekly release"))
        assert done.success
        assert registry.release(golden.release_id)["status"] == "Production"
        assert set(registry.production()) == {n.name for n in demo_mesh.nodes if n.kind == "model"}
        assert registry.history("models/late_arrival")[-1]["actor"] == "release-bot"

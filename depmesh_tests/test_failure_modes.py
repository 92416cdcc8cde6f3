"""The failure-mode catalogue: validated against the mesh, its coverage, drills
that inject each mode's fault into a copy of production, and failed checks
that name the modes they may mean."""

from __future__ import annotations

import json
import subprocess
from dataclasses import replace

import pytest
from click.testing import CliRunner
from dagster import AssetKey

from depmesh.failure_modes.catalogue import (
    FailureModeError,
    coverage,
    load_failure_modes,
    parse_failure_modes,
)
from depmesh_tests.conftest import copy_of, depmesh_cli, materialize_mesh

GOOD_MODE = """\
  - id: FM-A
    title: nulls in the weather
    type: external
    layer: data
    severity: high
    owner: team:ingestion
    nodes: [raw/weather]
    signals: [contract fails]
    detected_by:
      - {node: raw/weather, check: contract}
    mitigation: keep the last good table
    runbook: rematerialize raw/weather
    rollback: nothing
"""


def catalogue(*modes: str) -> str:
    return "mesh: flights\nmodes:\n" + "".join(modes)


def test_the_demo_catalogue_binds_every_node_and_check(demo_mesh):
    found = load_failure_modes(demo_mesh)
    assert len(found.modes) >= 12
    cov = coverage(demo_mesh, found)
    assert cov["nodes_without_mode"] == [] and cov["checks_without_mode"] == []
    # every mode has a detector: a stale source fails Dagster's freshness check on raw/flights; the
    # infrastructure modes are detected by the run-failure sensor
    assert cov["undetected_modes"] == []
    assert [m.id for m in found.detecting("raw/flights", "freshness_check")] == ["FM-STALE"]
    assert [m.id for m, _ in found.for_run_failure("raw/airlines", "ChildProcessCrashException: ...")] == ["FM-WORKER"]
    assert found.for_run_failure("models/dep_delay", "KeyError: 'dep_delay'") == []
    assert [m.id for m in found.detecting("raw/weather", "contract")][:2] == ["FM-SCHEMA", "FM-NULLS"]


@pytest.mark.parametrize("change,words", [
    (("raw/weather, check: contract}", "raw/wether, check: contract}"), "field detected_by[0].node: unknown node 'raw/wether'"),
    (("check: contract}", "check: gate_quality}"), "unknown check 'gate_quality' on raw/weather (its checks: contract, "
                                                   "contract_warnings, schema_change; or run_failure)"),
    (("owner: team:ingestion", "owner: team:nobody"), "field owner: unknown team 'team:nobody'"),
    (("severity: high", "severity: dire"), "unknown severity 'dire' (known: critical, high, medium, low)"),
    (("    runbook: rematerialize raw/weather\n", ""), "field runbook: missing required key 'runbook'"),
    (("    rollback: nothing\n", "    rollback: nothing\n    drill: \"raw/weather:temp:melt=3\"\n"), "field drill: not a drill injection"),
    (("    rollback: nothing\n", "    rollback: nothing\n    fix_by: friday\n"), "unknown key 'fix_by'"),
])
def test_a_bad_failure_mode_is_named_with_file_line_and_field(demo_mesh, tmp_path, change, words):
    text = catalogue(GOOD_MODE.replace(*change))
    with pytest.raises(FailureModeError) as info:
        parse_failure_modes(text, tmp_path / "failure_modes.yaml", demo_mesh)
    problems = [str(p) for p in info.value.problems]
    assert len(problems) == 1 and problems[0].startswith("failure_modes.yaml:") and "mode FM-A" in problems[0], problems
    assert words in problems[0], problems


def test_duplicate_ids_and_expanding_yaml_are_refused(demo_mesh, tmp_path):
    with pytest.raises(FailureModeError, match="duplicate id 'FM-A' \\(first at line 3\\)"):
        parse_failure_modes(catalogue(GOOD_MODE, GOOD_MODE), tmp_path / "failure_modes.yaml", demo_mesh)
    bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
        f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n"
        for i in range(8)) + "modes: []\n"
    with pytest.raises(FailureModeError, match="YAML aliases expand"):
        parse_failure_modes(bomb, tmp_path / "failure_modes.yaml", demo_mesh)


def test_coverage_on_the_command_line_is_a_ci_gate(demo_mesh, tmp_path):
    from depmesh.cli import main

    runner = CliRunner()
    out = runner.invoke(main, ["failure-modes", "coverage", "--format", "json"])
    report = json.loads(out.output)
    assert out.exit_code == 0 and report["passed"] is True and report["undetected_modes"] == [], out.output
    page = tmp_path / "coverage.html"
    assert runner.invoke(main, ["failure-modes", "coverage", "--format", str(page)]).exit_code == 0
    assert page.read_text().count("<tr><td>") == len(report["by_mode"]) and "FM-WORKER" in page.read_text()
    # a catalogue of one mode: every other node and check is a gap
    small = tmp_path / "small.yaml"
    small.write_text(catalogue(GOOD_MODE))
    out = runner.invoke(main, ["failure-modes", "coverage", "--modes", str(small), "--format", "json"])
    report = json.loads(out.output)
    assert out.exit_code == 1 and "raw/flights" in report["nodes_without_mode"]
    assert "raw/weather:contract" not in report["checks_without_mode"] and "raw/weather:schema_change" in report[
        "checks_without_mode"]
    listed = runner.invoke(main, ["failure-modes", "list", "--format", "json"])
    assert [m["id"] for m in json.loads(listed.output)][:3] == ["FM-SCHEMA", "FM-NULLS", "FM-DRIFT"]
    bad = tmp_path / "bad.yaml"
    bad.write_text(catalogue(GOOD_MODE.replace("raw/weather, check", "raw/nowhere, check")))
    out = runner.invoke(main, ["failure-modes", "validate", "--modes", str(bad)])
    assert out.exit_code == 1 and "unknown node 'raw/nowhere'" in out.output


def test_drills_catch_the_demo_faults_and_a_wrong_detector_is_a_miss(golden, tmp_path):
    home = tmp_path / "home"
    with copy_of(golden, home):
        pass
    out = subprocess.run(depmesh_cli("drill", "FM-NULLS", "FM-FEATURE-COLUMN", "FM-LATENCY", "--home", str(home),
                                     "--format", "json"), capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    results = {r["mode"]: r for r in json.loads(out.stdout)}
    assert results["FM-NULLS"]["caught_by"] == ["raw/weather:contract"]
    assert "features/aircraft:contract" in results["FM-FEATURE-COLUMN"]["caught_by"]
    assert results["FM-LATENCY"]["caught_by"] == ["models/dep_delay:gate_latency"]  # the slowed model's own gate
    assert all(r["caught"] and r["seconds"] > 0 for r in results.values())
    # a catalogue that names the wrong check: the drill says MISSED and which check did fire
    wrong = tmp_path / "failure_modes.yaml"
    wrong.write_text(catalogue(GOOD_MODE.replace("check: contract}", "check: schema_change}").replace(
        "    rollback: nothing\n", "    rollback: nothing\n    drill: \"raw/weather:temp:nulls=0.5\"\n")))
    out = subprocess.run(depmesh_cli("drill", "--modes", str(wrong), "--home", str(home), "--format", "json"),
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 1, out.stderr[-2000:]
    [missed] = json.loads(out.stdout)
    assert missed["caught"] is False and missed["missed_by"] == ["raw/weather:schema_change"]
    assert "raw/weather:contract" in missed["also_fired"]
    from depmesh.failure_modes.drills import drill_history
    from depmesh.registry import Registry
    from depmesh.registry.store import default_url

    history = drill_history(Registry(default_url(home), mesh="flights"))
    assert [(h["mode"], h["caught"]) for h in history] == [("FM-NULLS", True), ("FM-FEATURE-COLUMN", True),
                                                           ("FM-LATENCY", True), ("FM-A", False)]
    # a mode without a drill, or an unknown one, is refused before anything runs
    for mode, words in (("FM-STALE", "no drill injection declared for FM-STALE"), ("FM-NOPE", "no failure mode")):
        out = subprocess.run(depmesh_cli("drill", mode, "--home", str(home)), capture_output=True, text=True,
                             timeout=300)
        assert out.returncode == 2 and words in out.stderr, out.stderr


def test_a_failed_check_names_the_failure_modes_it_may_mean(golden, demo_mesh, tmp_path):
    faulty = replace(demo_mesh, nodes=tuple(
        replace(n, compute="depmesh_tests.faults:weather_with_nulls") if n.name == "raw/weather" else n
        for n in demo_mesh.nodes))
    with copy_of(golden, tmp_path / "home") as instance:
        result = materialize_mesh(faulty, instance, selection=[AssetKey(["raw", "weather"])])
    [contract] = [e for e in result.get_asset_check_evaluations() if e.check_name == "contract"]
    assert contract.passed is False
    ids = contract.metadata["depmesh/failure_mode_ids"].value.split(", ")
    assert ids == ["FM-NULLS"]  # the failing rule is a null fraction: not a schema change, not malformed values
    table = contract.metadata["depmesh/failure_modes"].value
    assert "**FM-NULLS** A null spike in a source column" in table and "rematerialize raw/weather" in table
    assert contract.metadata["depmesh/owners_to_call"].value == "team:ingestion"
    passed = [e for e in result.get_asset_check_evaluations() if e.passed]
    assert passed and all("depmesh/failure_modes" not in e.metadata for e in passed)


def faulty_weather(mesh):
    return replace(mesh, nodes=tuple(replace(n, compute="depmesh_tests.faults:weather_with_nulls")
                                     if n.name == "raw/weather" else n for n in mesh.nodes))


def test_a_failed_check_opens_one_incident_per_mode_and_notifies_its_owner_once(golden, demo_mesh, tmp_path,
                                                                                  webhooks):
    from depmesh.cli import main

    home = tmp_path / "home"
    runner = CliRunner()
    with copy_of(golden, home) as instance:
        first = materialize_mesh(faulty_weather(demo_mesh), instance, selection=[AssetKey(["raw", "weather"])])
        listed = json.loads(runner.invoke(main, ["incidents", "list", "--home", str(home), "--format", "json"]).output)
        modes = {i["mode"] for i in listed}
        assert modes == {"FM-NULLS"} and len(listed) == len(modes)  # only the mode the failed rule fits
        [contract] = [e for e in first.get_asset_check_evaluations() if e.check_name == "contract"]
        version = contract.metadata["depmesh/judged_version"].value.split(" ")[-1]  # the data version it judged
        assert all(i["node"] == "raw/weather" and i["detector"] == "raw/weather:contract" and i["count"] == 1
                   and i["owner"] == "team:ingestion" and i["run_id"] == first.run_id and i["version"] == version
                   for i in listed)
        delivered = runner.invoke(main, ["notifications", "deliver", "--home", str(home)])
        assert delivered.exit_code == 0, delivered.output
        posts = webhooks.to("ingestion")
        assert sorted(p["mode"] for p in posts) == sorted(modes) and webhooks.received == posts  # only its owner
        nulls = next(p for p in posts if p["mode"] == "FM-NULLS")
        assert nulls["event"] == "incident" and nulls["node"] == "raw/weather" and nulls["version"] == version
        assert "rematerialize raw/weather" in nulls["runbook"] and nulls["team"] == "team:ingestion"
        # the same failure again (same data, same version): counted, not notified again
        again = materialize_mesh(faulty_weather(demo_mesh), instance, selection=[AssetKey(["raw", "weather"])])
        runner.invoke(main, ["notifications", "deliver", "--home", str(home)])
        relisted = json.loads(runner.invoke(main, ["incidents", "list", "--home", str(home), "--format",
                                                   "json"]).output)
        assert len(relisted) == len(listed) and all(i["count"] == 2 and i["run_id"] == again.run_id for i in relisted)
        assert len(webhooks.received) == len(posts)
        table = runner.invoke(main, ["incidents", "list", "--home", str(home), "--mode", "FM-NULLS"])
        assert table.exit_code == 0 and "FM-NULLS" in table.output and "FM-SCHEMA" not in table.output


def test_a_failed_run_opens_an_incident_through_the_run_failure_sensor(golden, demo_mesh, tmp_path, webhooks):
    """The real sensor, evaluated on a real failed run: the step's error matches FM-WORKER's detector."""
    from dagster import DagsterEventType, build_run_status_sensor_context

    from depmesh.assets.registry_resource import open_registry
    from depmesh.build import build_definitions
    from depmesh.failure_modes.incidents import list_incidents
    from depmesh.registry.store import default_url

    crashing = replace(demo_mesh, nodes=tuple(replace(n, compute="depmesh_tests.faults:airlines_worker_lost")
                                              if n.name == "raw/airlines" else n for n in demo_mesh.nodes))
    with copy_of(golden, tmp_path / "home") as instance:
        result = materialize_mesh(crashing, instance, selection=[AssetKey(["raw", "airlines"])])
        assert not result.success
        sensor = next(s for s in build_definitions(crashing).sensors if s.name == "incidents_on_run_failure")
        run = instance.get_run_by_id(result.run_id)
        failure = next(e for e in instance.all_logs(result.run_id, of_type=DagsterEventType.RUN_FAILURE))
        for _ in range(2):  # a second evaluation of the same failure counts it; it does not notify again
            context = build_run_status_sensor_context(sensor_name=sensor.name, dagster_event=failure.dagster_event,
                                                      dagster_instance=instance, dagster_run=run).for_run_failure()
            sensor(context)
        registry = open_registry(default_url(tmp_path / "home"), "flights")
        [incident] = list_incidents(registry)
        assert (incident["mode"], incident["node"], incident["source"], incident["count"]) == (
            "FM-WORKER", "raw/airlines", "run_failure", 2)
        assert incident["detector"] == "*:run_failure" and "WorkerLostError" in incident["summary"]
        [post] = webhooks.received
        assert webhooks.to("airport-operations") == [post] and post["mode"] == "FM-WORKER"


def test_process_fault_drills_kill_a_step_and_cut_the_database(golden, tmp_path):
    """A killed step process and an unreachable registry database, each in a throwaway multiprocess run:
    the run-failure detectors catch both; production records the drills and nothing else."""
    from depmesh.failure_modes.incidents import list_incidents
    from depmesh.registry import Registry
    from depmesh.registry.store import default_url

    home = tmp_path / "home"
    with copy_of(golden, home):
        pass
    out = subprocess.run(depmesh_cli("drill", "FM-WORKER", "FM-DATABASE", "--home", str(home), "--format", "json"),
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    results = {r["mode"]: r for r in json.loads(out.stdout)}
    assert results["FM-WORKER"]["caught_by"] == ["*:run_failure"] and results["FM-WORKER"]["stopped_at"] == [
        "raw/airlines"]
    assert results["FM-DATABASE"]["caught_by"] == ["*:run_failure"]
    assert results["FM-DATABASE"]["stopped_at"] == ["models/route_segment"]
    assert "signal 9" in out.stderr or "SIGKILL" in out.stderr  # the step really died
    registry = Registry(default_url(home), mesh="flights")
    assert list_incidents(registry) == []  # a drill pages nobody

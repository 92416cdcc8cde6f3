"""`depmesh contracts diff`: classify contract changes between two catalog versions."""

from __future__ import annotations

import json
import subprocess

import pytest
from click.testing import CliRunner

from depmesh.catalog import load_catalog
from depmesh.cli import main
from depmesh.contracts.diff import diff_meshes

WEATHER_TEMP = "temp: {dtype: float64, max_null_fraction: 0.01, min: -20, max: 120, description: Temperature in F}"

# (edit of the demo catalog text, node, change reported, breaking?)
CHANGES = [
    ("        visib: {dtype: float64, nullable: false, min: 0, max: 10}\n", "", "raw/weather", "column removed", True),
    (WEATHER_TEMP, WEATHER_TEMP.replace("float64", "float32"), "raw/weather", "column retyped", True),
    (WEATHER_TEMP, WEATHER_TEMP.replace("max: 120", "max: 100"), "raw/weather", "range narrowed", True),
    (WEATHER_TEMP, WEATHER_TEMP.replace("min: -20", "min: -60"), "raw/weather", "range widened", False),
    (WEATHER_TEMP, WEATHER_TEMP.replace("max_null_fraction: 0.01, ", "nullable: false, "), "raw/weather",
     "nullability tightened", True),
    ("wind_gust: {dtype: float64}", "wind_gust: {dtype: float64, nullable: false}", "raw/weather",
     "nullability tightened", True),
    ("dest: {dtype: string, nullable: false}", "dest: {dtype: string}", "raw/flights", "nullability relaxed", False),
    ("origin: {dtype: string, nullable: false, allowed: [EWR, JFK, LGA]}\n        temp",
     "origin: {dtype: string, nullable: false, allowed: [EWR, JFK]}\n        temp", "raw/weather",
     "allowed value removed", True),
    ("origin: {dtype: string, nullable: false, allowed: [EWR, JFK, LGA]}\n        temp",
     "origin: {dtype: string, nullable: false, allowed: [EWR, JFK, LGA, SWF]}\n        temp", "raw/weather",
     "allowed value added", False),
    ("        wind_gust: {dtype: float64}\n", "        wind_gust: {dtype: float64}\n        solar: {dtype: float64}\n",
     "raw/weather", "column added", False),
    ("row_count: {min: 20000, max: 30000}", "row_count: {min: 25000, max: 30000}", "raw/weather",
     "row count narrowed", True),
    ("keys: [[origin, time_hour]]", "keys: [[origin, time_hour], [time_hour, temp]]", "raw/weather",
     "unique key added", True),
]


@pytest.fixture
def demo_text(demo_mesh) -> str:
    return demo_mesh.path.read_text()


def edited(write_catalog, text: str, old: str, new: str, name: str = "new.yaml"):
    assert old in text, old
    return write_catalog(text.replace(old, new, 1), name)


@pytest.mark.parametrize("old,new,node,what,breaking", CHANGES, ids=[f"{c[3]}-{i}" for i, c in enumerate(CHANGES)])
def test_each_kind_of_change_is_classified(write_catalog, demo_mesh, demo_text, old, new, node, what, breaking):
    report = diff_meshes(demo_mesh, load_catalog(edited(write_catalog, demo_text, old, new)))
    assert [n.node for n in report.nodes] == [node]
    changes = report.nodes[0].changes
    assert [(c.what, c.breaking) for c in changes] == [(what, breaking)]
    assert bool(report.violations) == breaking  # the version stayed 1.0.0


def test_breaking_change_lists_downstream_nodes_and_owners(write_catalog, demo_mesh, demo_text):
    report = diff_meshes(demo_mesh, load_catalog(edited(write_catalog, demo_text, *CHANGES[0][:2])))
    weather = report.nodes[0]
    assert set(weather.downstream) == {
        "features/flight_weather", "models/dep_delay", "models/arr_delay", "models/late_arrival",
        "scores/dep_delay", "scores/arr_delay", "scores/late_arrival", "consumers/ops_report"}
    assert weather.owners == ["team:airport-operations", "team:customer-ops", "team:delay-models",
                              "team:features", "team:ingestion"]


def test_major_version_bump_makes_a_breaking_change_acceptable(write_catalog, demo_mesh, demo_text):
    text = demo_text.replace(*CHANGES[0][:2])
    weather_at = text.index("name: raw/weather")
    version_at = text.index("version: 1.0.0", weather_at)
    bumped = text[:version_at] + "version: 2.0.0" + text[version_at + len("version: 1.0.0"):]
    report = diff_meshes(demo_mesh, load_catalog(write_catalog(bumped, "bumped.yaml")))
    assert report.nodes[0].breaking and not report.violations


def test_cli_table_json_and_exit_codes(write_catalog, demo_mesh, demo_text):
    runner = CliRunner()
    same = runner.invoke(main, ["contracts", "diff", str(demo_mesh.path), str(demo_mesh.path)])
    assert same.exit_code == 0 and "no contract changes" in same.output
    breaking = edited(write_catalog, demo_text, *CHANGES[1][:2])
    table = runner.invoke(main, ["contracts", "diff", str(demo_mesh.path), str(breaking)])
    assert table.exit_code == 1
    assert "BREAKING" in table.output and "column retyped" in table.output
    assert "ERROR raw/weather: breaking change(s) without a major version bump" in table.output
    as_json = runner.invoke(main, ["contracts", "diff", str(demo_mesh.path), str(breaking), "--format", "json"])
    assert as_json.exit_code == 1
    data = json.loads(as_json.output)
    assert data["ok"] is False and data["violations"] == ["raw/weather"]
    assert data["nodes"][0]["changes"][0] == {"node": "raw/weather", "what": "column retyped",
                                              "detail": "temp: float64 -> float32", "breaking": True}
    widened = edited(write_catalog, demo_text, *CHANGES[3][:2], name="widened.yaml")
    assert runner.invoke(main, ["contracts", "diff", str(demo_mesh.path), str(widened)]).exit_code == 0


def test_git_ref_against_the_working_tree(tmp_path, demo_text):
    repo = tmp_path / "repo"
    repo.mkdir()
    path = repo / "mesh.yaml"
    path.write_text(demo_text)
    git = lambda *a: subprocess.run(["git", *a], cwd=repo, check=True, capture_output=True)  # noqa: E731
    git("init", "-q")
    git("-c", "user.email=t@t", "-c", "user.name=t", "commit", "-q", "--allow-empty", "-m", "empty")
    git("add", "mesh.yaml")
    git("-c", "user.email=t@t", "-c", "user.name=t", "commit", "-q", "-m", "mesh")
    path.write_text(demo_text.replace(*CHANGES[2][:2]))
    out = CliRunner().invoke(main, ["contracts", "diff", "git:HEAD", str(path), "--format", "json"])
    assert out.exit_code == 1, out.output
    assert json.loads(out.output)["nodes"][0]["changes"][0]["what"] == "range narrowed"
    missing = CliRunner().invoke(main, ["contracts", "diff", "git:HEAD~1", str(path)])
    assert missing.exit_code != 0 and "cannot read mesh.yaml at git ref 'HEAD~1'" in missing.output


EDGE_CHANGES = [
    # (old text, new text, node, what, detail, breaking)
    ("      - {node: models/dep_delay, latency_p95_ms: 250}", "      - {node: models/dep_delay, latency_p95_ms: 5}",
     "models/arr_delay", "edge: latency budget tightened", "on models/dep_delay: p95 250.0 -> 5.0 ms", True),
    ("      - {node: scores/dep_delay, columns: [flight_id, carrier, origin, prediction, model_version]}",
     "      - {node: scores/dep_delay, columns: [flight_id, carrier, origin, prediction, model_version, actual]}",
     "consumers/ops_report", "edge: column read added", "on scores/dep_delay: actual", True),
    ("      - {node: scores/dep_delay, columns: [flight_id, carrier, origin, prediction, model_version]}",
     "      - {node: scores/dep_delay, columns: [flight_id, carrier, prediction, model_version]}",
     "consumers/ops_report", "edge: column no longer read", "on scores/dep_delay: origin", False),
]


@pytest.mark.parametrize("old,new,node,what,detail,breaking", EDGE_CHANGES, ids=[c[3] for c in EDGE_CHANGES])
def test_edge_contracts_are_diffed_with_the_consumer_that_declared_them(write_catalog, demo_mesh, demo_text, old,
                                                                         new, node, what, detail, breaking):
    assert demo_text.count(old) == 1
    path = write_catalog(demo_text.replace(old, new), "edges.yaml")
    report = diff_meshes(demo_mesh, load_catalog(path))
    [changed] = report.nodes
    assert changed.node == node
    assert [(c.what, c.detail, c.breaking) for c in changed.changes] == [(what, detail, breaking)]
    assert bool(report.violations) is breaking
    out = CliRunner().invoke(main, ["contracts", "diff", str(demo_mesh.path), str(path)])
    assert out.exit_code == (1 if breaking else 0) and what in out.output and "no contract changes" not in out.output


def test_a_breaking_edge_change_on_a_node_without_a_contract_is_a_verdict_not_a_crash(write_catalog, demo_text):
    """models/late_arrival holds models/arr_delay to a latency budget but has no contract of its own: a tighter
    budget is breaking and cannot be versioned. The command said so with a traceback, and exit 1 came
    from the exception."""
    old = write_catalog(demo_text, "old.yaml")
    new = edited(write_catalog, demo_text, "- {node: models/arr_delay, latency_p95_ms: 250}\n    criticality: critical",
                 "- {node: models/arr_delay, latency_p95_ms: 100}\n    criticality: critical")
    result = CliRunner().invoke(main, ["contracts", "diff", str(old), str(new)])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert result.exit_code == 1
    assert "ERROR models/late_arrival" in result.output and "no contract of its own" in result.output

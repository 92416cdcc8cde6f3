"""`depmesh trace`: a score row back to the model version, training and raw rows behind it, and raw rows forward
to the model versions trained on them and the predictions they influenced, checked against the stored data."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from click.testing import CliRunner

from depmesh.catalog import CatalogError, parse_catalog
from depmesh.cli import main
from depmesh_tests.conftest import copy_of


@pytest.fixture(scope="module")
def traced(golden, tmp_path_factory):
    home = tmp_path_factory.mktemp("trace") / "home"
    with copy_of(golden, home) as instance:
        yield home, instance


def table(home, name: str) -> pd.DataFrame:
    return pd.read_parquet(home / "storage" / "depmesh" / "tables" / f"{name}.parquet")


def trace(home, *args: str, code: int = 0):
    out = CliRunner().invoke(main, ["trace", *args, "--home", str(home)])
    assert out.exit_code == code, out.output
    return out.output


def test_a_score_row_traces_back_to_its_model_training_and_raw_rows(traced):
    home, _ = traced
    scores = table(home, "scores/late_arrival")
    row = scores.iloc[len(scores) // 2]
    found = json.loads(trace(home, "scores/late_arrival", str(row["flight_id"]), "--format", "json"))
    assert found["rows"] == 1 and found["shown"][0]["flight_id"] == row["flight_id"]
    [model] = found["models"]
    assert model["model"] == "models/late_arrival" and model["version"] == row["model_version"]
    assert model["training"] is not None and model["training"]["status"] == "registered"
    assert set(model["input_versions"]) == {"features/flight_weather", "features/aircraft", "features/route_stats",
                                            "models/arr_delay"}
    behind = {b["node"]: b for b in found["behind"]}
    fw = table(home, "features/flight_weather").set_index("flight_id").loc[row["flight_id"]]
    assert behind["features/flight_weather"]["rows"] == 1
    assert behind["features/aircraft"]["on"] == {"tailnum": fw["tailnum"]}  # the join key from the flight's row
    raws = {b["node"]: b for b in behind["features/flight_weather"]["behind"]}
    assert raws["raw/flights"]["shown"][0]["flight_id"] == row["flight_id"]
    weather = table(home, "raw/weather")
    expected = weather[(weather["origin"] == fw["origin"]) & (weather["time_hour"] == fw["time_hour"])]
    assert raws["raw/weather"]["rows"] == len(expected) == 1
    assert raws["raw/weather"]["shown"][0]["temp"] == pytest.approx(expected["temp"].iloc[0])
    planes = behind["features/aircraft"]["behind"][0]
    assert planes["node"] == "raw/planes" and planes["shown"][0]["tailnum"] == fw["tailnum"]
    text = trace(home, "scores/late_arrival", f"flight_id={row['flight_id']}")
    assert f"made by models/late_arrival@{row['model_version']}" in text and "<- raw/weather" in text


def test_raw_rows_trace_forward_to_the_versions_trained_on_them_and_the_scores(traced, demo_mesh):
    home, _ = traced
    fw = table(home, "features/flight_weather")
    until = pd.Timestamp(demo_mesh.node("models/dep_delay").model.split.train_until).tz_localize("UTC")
    june = fw[(fw["time_hour"] < until) & (fw["origin"] == "JFK")].iloc[0]
    selection = f"origin=JFK,time_hour={june['time_hour'].isoformat()}"
    found = json.loads(trace(home, "--from", "raw/weather", selection, "--format", "json"))
    expected = fw[(fw["origin"] == "JFK") & (fw["time_hour"] == june["time_hour"])]
    reached = {r["node"]: r for r in found["reached"]}
    assert reached["features/flight_weather"]["rows"] == len(expected) >= 1
    versions = found["model_versions"]
    dep = table(home, "scores/dep_delay")["model_version"].iloc[0]
    assert [(v["version"], v["rows"]) for v in versions["models/dep_delay"]] == [(dep, len(expected))]
    # arr_delay was trained on those flights too, and against the dep_delay version that was
    assert {"models/dep_delay", "models/arr_delay", "models/late_arrival"} <= set(found["retrain"])
    assert "models/route_segment" not in versions  # trained on route statistics, not on the weather
    made = {s["node"]: s for s in found["scores"]}
    assert made["scores/dep_delay"]["made_by_affected_versions"] == len(table(home, "scores/dep_delay"))
    assert made["scores/dep_delay"]["joined_to_the_rows"] == 0  # June flights are not in the scoring window
    # a December hour: the flights of that hour are scored, and no model was trained on them
    dec = fw[fw["time_hour"] >= pd.Timestamp("2013-12-05", tz="UTC")].iloc[0]
    later = json.loads(trace(home, "--from", "raw/weather", f"origin={dec['origin']},time_hour="
                             f"{dec['time_hour'].isoformat()}", "--format", "json"))
    assert later["model_versions"] == {} and later["retrain"] == []
    scored = {s["node"]: s for s in later["scores"]}
    flights = fw[(fw["origin"] == dec["origin"]) & (fw["time_hour"] == dec["time_hour"]) & ~fw["cancelled"]]
    assert scored["scores/dep_delay"]["joined_to_the_rows"] == len(flights) >= 1


def test_the_trace_page_opens_in_a_browser(traced, browser, tmp_path):
    home, _ = traced
    row = table(home, "scores/dep_delay").iloc[0]
    page_file = tmp_path / "trace.html"
    trace(home, "scores/dep_delay", str(row["flight_id"]), "--format", "html", "-o", str(page_file))
    page = browser.new_page()
    try:
        page.goto(page_file.as_uri())
        nodes = [page.locator("section.node").nth(i).get_attribute("data-node")
                 for i in range(page.locator("section.node").count())]
        assert nodes == ["scores/dep_delay", "features/flight_weather", "raw/flights", "raw/weather",
                         "features/aircraft", "raw/planes"]
        assert page.locator("section.model").get_attribute("data-version") == row["model_version"]
        assert str(row["flight_id"]) in page.inner_text("section.node[data-node='raw/flights']")
    finally:
        page.close()


@pytest.mark.parametrize("args,words", [
    (["scores/nope", "1"], "no node 'scores/nope'"),
    (["scores/dep_delay", "flight_id"], None),  # a bare key is the rollout key's value: flight_id is not a number
    (["scores/dep_delay", "flight_id=abc"], "scores/dep_delay.flight_id: 'abc' is not a int64 value"),
    (["scores/dep_delay", "tail=N1"], "scores/dep_delay has no column tail"),
    (["scores/dep_delay", "flight_id=-1"], "no row of scores/dep_delay has flight_id=-1"),
    (["scores/dep_delay", "=3"], "expected COLUMN=VALUE"),
    (["--from", "raw/weather"], "which rows?"),
])
def test_bad_trace_requests_are_named(traced, args, words):
    home, _ = traced
    out = CliRunner().invoke(main, ["trace", *args, "--home", str(home)])
    assert out.exit_code in (1, 2) and "Traceback" not in out.output, out.output
    assert words is None or words in out.output, out.output


def test_lineage_must_name_inputs_and_columns(tmp_path):
    text = """\
mesh: m
nodes:
  - {name: raw/a, kind: dataset, owner: team:x, compute: depmesh.examples.flights.sources:load_airlines}
  - name: features/b
    kind: features
    owner: team:x
    inputs: [raw/a]
    compute: depmesh.examples.flights.transforms:aircraft
    lineage: {raw/z: [carrier], raw/a: 3}
"""
    with pytest.raises(CatalogError) as info:
        parse_catalog(text, tmp_path / "m.yaml")
    problems = "\n".join(str(p) for p in info.value.problems)
    assert "field lineage.raw/z: 'raw/z' is not an input of this node (inputs: raw/a)" in problems
    assert "field lineage.raw/a: expected a list of join columns" in problems

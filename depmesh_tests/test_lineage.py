"""OpenLineage events leave depmesh: a local receiver on loopback collects a sampled run's events (START and
COMPLETE per node, model-to-model dataset lineage, column lineage, schema, assertions, depmesh's own facets);
a blocked contract is a FAIL with its failed assertion and an ABORT downstream; an unreachable endpoint leaves
the run green; nothing is sent when nothing is configured; the static export covers a mesh that never ran."""

from __future__ import annotations

import json
import os
import uuid

import jsonschema
import pytest
from dagster import instance_for_test

from depmesh.catalog import load_catalog
from depmesh.examples import CLINIC_CATALOG
from depmesh_tests.conftest import WebhookReceiver, materialize_mesh

# What every OpenLineage run event carries (the spec's RunEvent: required fields and their forms). The spec's own
# schema files are not shipped by openlineage-python; this checks the envelope, the client built the rest.
FACET = {"type": "object", "required": ["_producer", "_schemaURL"],
         "properties": {"_producer": {"type": "string", "format": "uri"},
                        "_schemaURL": {"type": "string", "format": "uri"}}}
DATASET = {"type": "object", "required": ["namespace", "name"],
           "properties": {"namespace": {"type": "string"}, "name": {"type": "string"},
                          "facets": {"type": "object", "additionalProperties": FACET}}}
RUN_EVENT = {
    "type": "object", "required": ["eventTime", "producer", "schemaURL", "eventType", "run", "job"],
    "properties": {
        "eventTime": {"type": "string", "format": "date-time"},
        "producer": {"type": "string", "format": "uri"}, "schemaURL": {"type": "string", "format": "uri"},
        "eventType": {"enum": ["START", "RUNNING", "COMPLETE", "ABORT", "FAIL", "OTHER"]},
        "run": {"type": "object", "required": ["runId"], "properties": {
            "runId": {"type": "string", "format": "uuid"}, "facets": {"type": "object", "additionalProperties": FACET}}},
        "job": {"type": "object", "required": ["namespace", "name"], "properties": {
            "namespace": {"type": "string"}, "name": {"type": "string"},
            "facets": {"type": "object", "additionalProperties": FACET}}},
        "inputs": {"type": "array", "items": DATASET}, "outputs": {"type": "array", "items": DATASET}}}


def validate(event: dict) -> None:
    from depmesh.lineage.facets import SCHEMAS

    jsonschema.validate(event, RUN_EVENT, format_checker=jsonschema.FormatChecker())
    uuid.UUID(event["run"]["runId"])
    for dataset in event.get("outputs", []):
        for name, facet in (dataset.get("facets") or {}).items():
            if name.startswith("depmesh_"):  # depmesh's own facets against their published schema
                kind = facet["_schemaURL"].split("#/$defs/")[1]
                jsonschema.validate(facet, {**SCHEMAS, "$ref": f"#/$defs/{kind}"})


@pytest.fixture
def receiver(monkeypatch):
    found = WebhookReceiver()
    monkeypatch.setenv("OPENLINEAGE_URL", found.url(""))
    yield found
    found.close()


def run_clinic(tmp_path, catalog=CLINIC_CATALOG, logs: list[str] | None = None):
    (tmp_path / "home").mkdir()
    with instance_for_test(temp_dir=str(tmp_path / "home")) as instance:
        result = materialize_mesh(load_catalog(catalog), instance, sample=1.0)
        if logs is not None:
            logs.extend(entry.user_message for entry in instance.all_logs(result.run_id))
        return result


def test_a_run_sends_every_node_with_model_lineage_columns_and_verdicts(tmp_path, receiver):
    result = run_clinic(tmp_path)
    assert result.success
    events = receiver.to("api/v1/lineage")
    for event in events:
        validate(event)
    by_job: dict[str, list[dict]] = {}
    for event in events:
        by_job.setdefault(event["job"]["name"], []).append(event)
    mesh = load_catalog(CLINIC_CATALOG)
    assert set(by_job) == {n.name for n in mesh.nodes}
    for name, sent in by_job.items():
        assert [e["eventType"] for e in sent] == ["START", "COMPLETE"], name
        assert len({e["run"]["runId"] for e in sent}) == 1  # one OpenLineage run per node and Dagster run
        assert sent[0]["run"]["facets"]["parent"]["run"]["runId"] == result.run_id
        assert all(e["job"]["namespace"] == "depmesh://clinic" for e in sent)
    complete = {name: sent[-1] for name, sent in by_job.items()}
    # a model is a dataset its consumers read: progression -> high_risk -> scores/high_risk
    assert ("depmesh://clinic", "models/progression") in [(i["namespace"], i["name"])
                                                          for i in complete["models/high_risk"]["inputs"]]
    assert complete["models/progression"]["outputs"][0]["name"] == "models/progression"
    assert "models/high_risk" in [i["name"] for i in complete["scores/high_risk"]["inputs"]]
    # column lineage: the high-risk model reads the progression model's prediction
    model = complete["models/high_risk"]["outputs"][0]["facets"]
    reads = [(f["name"], f["field"]) for out in model["columnLineage"]["fields"].values() for f in out["inputFields"]]
    assert any(name == "models/progression" and field.startswith("pred_") for name, field in reads), reads
    assert ("features/patients", "bmi") in reads
    facet = model["depmesh_model"]
    assert facet["version"] and facet["metrics"] and set(facet["upstream"]) == {"models/progression"}
    assert facet["gates"] and all(g["passed"] for g in facet["gates"].values())
    # every verdict of the materialization is an assertion; the stored table's schema and what served it
    raw = complete["raw/patients"]["outputs"][0]["facets"]
    assert {"name": "progression", "type": "float64"} in [{k: f[k] for k in ("name", "type")}
                                                         for f in raw["schema"]["fields"]]
    assert all(a["success"] for a in raw["dataQualityAssertions"]["assertions"])
    assert "contract" in [a["assertion"] for a in raw["dataQualityAssertions"]["assertions"]]
    scores = complete["scores/high_risk"]["outputs"][0]["facets"]
    assert scores["depmesh_serving"]["mode"] == "latest"
    assert scores["depmesh_serving"]["versions"]["models/high_risk"] == facet["version"]
    location = complete["models/high_risk"]["job"]["facets"]["sourceCodeLocation"]
    assert location["path"].endswith("clinic/builders.py") and location["type"] in ("git", "file")


def negative_progression(inputs, ctx):
    from depmesh.examples.clinic.builders import load_patients

    frame = load_patients(inputs, ctx)
    frame.loc[frame.index[0], "progression"] = -5.0  # the contract says min: 0
    return frame


def test_a_blocked_contract_is_a_failed_assertion_and_aborts_downstream(tmp_path, receiver):
    text = CLINIC_CATALOG.read_text().replace("compute: depmesh.examples.clinic.builders:load_patients",
                                              "compute: depmesh_tests.test_lineage:negative_progression")
    (tmp_path / "clinic.yaml").write_text(text)
    result = run_clinic(tmp_path, tmp_path / "clinic.yaml")
    events = receiver.to("api/v1/lineage")
    for event in events:
        validate(event)
    raw = [e for e in events if e["job"]["name"] == "raw/patients"]
    assert [e["eventType"] for e in raw] == ["START", "FAIL"]
    assertions = raw[-1]["outputs"][0]["facets"]["dataQualityAssertions"]["assertions"]
    assert {"assertion": "contract", "success": False} in [{k: a[k] for k in ("assertion", "success")}
                                                           for a in assertions]
    assert "blocked: contract failed on raw/patients" in raw[-1]["run"]["facets"]["errorMessage"]["message"]
    aborted = {e["job"]["name"] for e in events if e["eventType"] == "ABORT"}
    assert aborted == {"features/patients", "models/progression", "models/high_risk", "scores/high_risk"}
    assert result.success  # a blocked node is a verdict, not a failed run


def test_an_unreachable_endpoint_leaves_the_run_green(tmp_path, monkeypatch):
    import socket

    from depmesh.lineage import emit

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("OPENLINEAGE_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setattr(emit, "_failed_at", [])
    logs: list[str] = []
    result = run_clinic(tmp_path, logs=logs)
    assert result.success
    failed = [m for m in logs if "OpenLineage event for" in m and "not delivered" in m]
    assert len(failed) == 1  # one failed attempt; then the process stops trying for a minute
    assert any("not sent: the endpoint failed" in m for m in logs)


def test_nothing_is_built_or_sent_when_nothing_is_configured(tmp_path, monkeypatch):
    from depmesh.lineage.emit import client, configured

    for name in [k for k in os.environ if k.startswith("OPENLINEAGE")]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert not configured() and client() is None
    monkeypatch.setenv("OPENLINEAGE_URL", "http://127.0.0.1:9")
    assert client() is not None
    monkeypatch.delenv("OPENLINEAGE_URL")
    assert not configured()  # the client's own aliases of the URL did not stay behind in the environment
    assert not [k for k in os.environ if k.startswith("OPENLINEAGE")]
    (tmp_path / "openlineage.yml").write_text("transport:\n  type: console\n")
    assert configured()
    monkeypatch.setenv("OPENLINEAGE_DISABLED", "true")
    assert not configured()


def test_the_static_export_covers_a_mesh_that_never_ran(tmp_path):
    from click.testing import CliRunner

    from depmesh.cli import main

    out = CliRunner().invoke(main, ["lineage", "export", "--format", "openlineage", "-o", str(tmp_path / "l.ndjson")])
    assert out.exit_code == 0, out.output
    events = [json.loads(line) for line in (tmp_path / "l.ndjson").read_text().splitlines()]
    assert len(events) == 16 and all(e["job"]["namespace"] == "depmesh://flights" for e in events)
    inputs = {e["job"]["name"]: [i["name"] for i in e["inputs"]] for e in events}
    assert "models/dep_delay" in inputs["models/arr_delay"] and "models/arr_delay" in inputs["models/late_arrival"]
    scores = next(e for e in events if e["job"]["name"] == "scores/arr_delay")["outputs"][0]["facets"]
    lineage = scores["columnLineage"]["fields"]
    assert lineage["flight_id"]["inputFields"][0]["name"] == "features/flight_weather"
    assert {f["name"] for f in lineage["prediction"]["inputFields"]} == {"models/arr_delay"}
    assert [f["name"] for f in scores["schema"]["fields"]][:2] == ["flight_id", "carrier"]


def test_the_published_facet_schema_is_the_one_the_facets_name():
    from pathlib import Path

    from depmesh.lineage.facets import SCHEMA_FILE, SCHEMAS

    published = Path(__file__).resolve().parent.parent / "docs" / "content" / "schemas" / SCHEMA_FILE
    assert json.loads(published.read_text()) == SCHEMAS  # regenerate: depmesh lineage schema -o <that file>
    jsonschema.Draft202012Validator.check_schema(SCHEMAS)

"""Failure simulation on the demo mesh: each injection kind, the check that
catches it, what it changed, and production left exactly as it was."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from click.testing import CliRunner
from dagster import instance_for_test

from depmesh.simulate import InjectionError, parse_injection, simulate
from depmesh_tests.conftest import copy_of, fresh_database, materialize_mesh


def digests(root: Path) -> dict[Path, str]:
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def production(golden, tmp_path_factory):
    with copy_of(golden, tmp_path_factory.mktemp("simulate") / "home") as instance:
        yield instance, Path(instance.storage_directory()) / "depmesh"


def outcome(report, node):
    return next(o for o in report.nodes if o.node == node)


# written out, not computed by the graph functions under test: what each injected node reaches
SCORED = {"scores/dep_delay", "scores/arr_delay", "scores/late_arrival", "consumers/ops_report"}
REACHES = {
    "raw/weather": {"features/flight_weather", "models/dep_delay", "models/arr_delay", "models/late_arrival", *SCORED},
    "raw/flights": {"features/flight_weather", "features/route_stats", "models/route_segment", "models/dep_delay",
                    "models/arr_delay", "models/late_arrival", *SCORED},
    "models/dep_delay": {"models/arr_delay", "models/late_arrival", *SCORED},
}

# (injection, node that catches it, the failing check and rule)
CAUGHT = [
    ("raw/weather:temp:nulls=0.3", "raw/weather", "contract (temp.null_fraction)"),
    ("raw/weather:temp:shift=12", "raw/weather", "contract (temp.quantiles)"),
    ("raw/flights:dep_delay:scale=4", "raw/flights", "dep_delay.mean"),
    ("raw/weather:visib:drop", "raw/weather", "visib.dtype"),
    ("raw/weather:visib:rename=visibility", "raw/weather", "visib.dtype"),
    ("raw/weather:temp:dtype=string", "raw/weather", "temp.dtype"),
    ("models/dep_delay:latency=400ms", "models/dep_delay", "gate_latency"),
]


@pytest.mark.parametrize("spec,catcher,check", CAUGHT, ids=[c[0].split(":", 1)[1] for c in CAUGHT])
def test_each_injection_is_caught_by_the_named_check(production, demo_mesh, spec, catcher, check):
    instance, storage = production
    before_files, before_runs = digests(storage), len(instance.get_runs())
    report = simulate(demo_mesh, [spec], instance, storage)
    assert report.caught_at[0] == catcher
    assert any(check in failed for failed in outcome(report, catcher).failed_checks), outcome(report, catcher)
    # everything the graph reaches is listed; the injected node caught it, so nothing below it ran
    assert {o.node for o in report.nodes if o.depth > 0} == REACHES[catcher]
    for o in report.nodes:
        if o.node != catcher:
            assert o.outcome == "not run", o
    # production: same files, no new runs
    assert digests(storage) == before_files
    assert len(instance.get_runs()) == before_runs


def test_latency_injection_is_caught_by_the_latency_gate(production, demo_mesh):
    instance, storage = production
    report = simulate(demo_mesh, ["models/dep_delay:latency=400ms"], instance, storage)
    gate = outcome(report, "models/dep_delay")
    assert gate.outcome == "blocked" and gate.failed_checks == ["gate_latency"]
    assert set(report.stopped_at) == {o.node for o in report.nodes}  # nothing downstream ran


def test_uncaught_drift_reports_the_prediction_shift(production, demo_mesh):
    instance, storage = production
    report = simulate(demo_mesh, ["raw/weather:wind_gust:nulls=0.6"], instance, storage)
    assert report.caught_at == [] and report.stopped_at == []
    assert all(o.outcome == "built" for o in report.nodes)
    shift = outcome(report, "scores/dep_delay").shift
    assert shift["prediction_mean_abs_shift"] > 0 and shift["prediction_changed_share"] > 0.5
    dep = outcome(report, "models/dep_delay").shift
    assert {"mae_prod", "mae_sim"} <= set(dep)


def test_two_injections_at_once(production, demo_mesh):
    instance, storage = production
    report = simulate(demo_mesh, ["raw/planes:year:shift=-3", "raw/weather:visib:drop"], instance, storage)
    assert "raw/weather" in report.caught_at
    assert outcome(report, "features/aircraft").outcome == "built"


@pytest.mark.parametrize("spec,message", [
    ("raw/nope:x:drop", "no node named 'raw/nope'"),
    ("raw/weather:temp:melt=3", "unknown injection 'melt'"),
    ("raw/weather:temp:nulls=2", "nulls takes a rate between 0 and 1"),
    ("raw/weather:latency=300ms", "latency applies to models, and raw/weather is a dataset"),
    ("models/dep_delay:latency=fast", "latency must look like 300ms"),
    ("raw/weather:temp:dtype=decimal", "dtype must be one of"),
])
def test_bad_injection_specs_are_named(demo_mesh, spec, message):
    with pytest.raises(InjectionError, match=message):
        parse_injection(spec, demo_mesh)


def test_missing_column_and_unbuilt_production_are_clear(production, demo_mesh, tmp_path):
    instance, storage = production
    with pytest.raises(InjectionError, match="raw/weather has no column 'sunshine'"):
        simulate(demo_mesh, ["raw/weather:sunshine:drop"], instance, storage)
    with instance_for_test(temp_dir=str(tmp_path)) as empty:
        with pytest.raises(InjectionError, match="never been materialized"):
            simulate(demo_mesh, ["raw/weather:temp:drop"], empty, tmp_path / "nothing")


def test_simulate_command_prints_where_it_was_caught(production, demo_mesh, monkeypatch):
    instance, storage = production
    from depmesh.cli import main

    home = Path(instance.root_directory)
    out = CliRunner().invoke(main, ["simulate", "--home", str(home), "--inject", "raw/weather:temp:nulls=0.3"])
    assert out.exit_code == 0, out.output
    assert "caught at:  raw/weather" in out.output and "BLOCKED" in out.output


def _database_snapshot(url: str) -> dict[str, list]:
    """Every row of the registry's tables and of Dagster's runs and event log."""
    import sqlalchemy as sa

    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    tables = ["model_versions", "stage_transitions", "releases", "release_members", "mesh_state", "runs",
              "event_logs", "asset_keys", "asset_check_executions"]
    try:
        with engine.connect() as conn:
            return {t: [tuple(r) for r in conn.execute(sa.text(f"SELECT * FROM {t} ORDER BY 1"))] for t in tables}
    finally:
        engine.dispose()


def test_a_simulation_on_postgres_writes_nothing_to_production(postgres_server_url, tmp_path, monkeypatch):
    """With DAGSTER_POSTGRES_URL set the simulation used to register its versions in the production
    registry; now the registry and the instance's event log are the same before and after."""
    from dagster import DagsterInstance

    from depmesh.assets.io import storage_dir
    from depmesh.catalog import load_catalog
    from depmesh.examples import CLINIC_CATALOG
    from depmesh.instance import TEAM_CONFIG

    clinic = load_catalog(CLINIC_CATALOG)
    with fresh_database(postgres_server_url) as url:
        monkeypatch.setenv("DAGSTER_POSTGRES_URL", url)
        (tmp_path / "dagster.yaml").write_text(TEAM_CONFIG.read_text())
        instance = DagsterInstance.from_config(str(tmp_path))
        try:
            assert materialize_mesh(clinic, instance).success
            before, files = _database_snapshot(url), digests(storage_dir(instance))
            report = simulate(clinic, ["features/patients:bmi:shift=3"], instance, storage_dir(instance))
            assert outcome(report, "models/progression").outcome == "built"  # the simulation trained and gated
            assert _database_snapshot(url) == before
            assert digests(storage_dir(instance)) == files
        finally:
            instance.dispose()


def test_the_shift_covers_the_declared_prediction_columns_labels_included():
    import pandas as pd

    from depmesh.simulate import _shift

    prod = pd.DataFrame({"id": [1, 2, 3], "prediction": ["A", "B", "A"], "probability_A": [0.9, 0.2, 0.8]})
    sim = pd.DataFrame({"id": [3, 2, 1], "prediction": ["A", "A", "A"], "probability_A": [0.8, 0.6, 0.9]})
    shift = _shift(prod, sim, "id", ("prediction", "probability_A"))
    assert shift["prediction_changed_share"] == pytest.approx(1 / 3)
    assert shift["probability_A_mean_abs_shift"] == pytest.approx(0.4 / 3)
    assert shift["probability_A_changed_share"] == pytest.approx(1 / 3)
    assert "prediction_mean_prod" not in shift  # labels have no mean
    assert _shift(prod, sim, "id") == {"prediction_changed_share": pytest.approx(1 / 3)}  # the default columns


@pytest.mark.parametrize("old,new,message", [
    ("    predictions: [prediction, probability_Adelie, probability_Chinstrap, probability_Gentoo]",
     "    predictions: [prediction, probability_Emperor]", "prediction column 'probability_Emperor' is not in"),
    ("    compute: depmesh.examples.penguins.builders:penguin_features",
     "    compute: depmesh.examples.penguins.builders:penguin_features\n    predictions: [bill_ratio]",
     "only scores nodes declare prediction columns, this node is a features"),
])
def test_prediction_columns_are_checked_at_validation(tmp_path, old, new, message):
    from depmesh.catalog import CatalogError, load_catalog
    from depmesh.examples import PENGUINS_CATALOG

    text = PENGUINS_CATALOG.read_text()
    assert old in text
    (tmp_path / "p.yaml").write_text(text.replace(old, new))
    with pytest.raises(CatalogError, match=message):
        load_catalog(tmp_path / "p.yaml")


def test_a_step_that_fails_is_a_failed_simulation_not_a_catch(golden, tmp_path):
    """The injected model's stored artifact no longer matches its record: the replay fails its hash check. That
    was printed as "caught at: models/dep_delay" with exit 0; it is a failure the simulation could not judge."""
    from depmesh.artifacts import ArtifactStore
    from depmesh.assets.io import recorded_metadata, storage_dir
    from depmesh.cli import main

    home = tmp_path / "home"
    with copy_of(golden, home) as instance:  # the copy's own store (the record's path names the golden's)
        digest = recorded_metadata(instance, ["models", "dep_delay"])["artifact_hash"]
        artifact = ArtifactStore(storage_dir(instance) / "artifacts").path_for(digest)
    artifact.write_bytes(artifact.read_bytes() + b"tampered")
    out = CliRunner().invoke(main, ["simulate", "--home", str(home), "--inject", "models/dep_delay:latency=400ms"])
    assert out.exit_code == 1, out.output
    assert "caught at:  nowhere" in out.output
    assert "could not judge the injection: models/dep_delay FAILED" in out.output

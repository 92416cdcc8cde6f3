"""Several meshes on one Dagster instance and one registry: each has its own
releases, Production pointer, release and report assets; promoting or rolling
back one never touches the other. The flights mesh and the small clinic mesh,
on SQLite here and on PostgreSQL in test_materialize."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner
from dagster import AssetKey

from depmesh.assets.registry_resource import open_registry
from depmesh.catalog import load_catalog
from depmesh.cli import main
from depmesh.examples import CLINIC_CATALOG
from depmesh.registry.store import default_url
from depmesh_tests.conftest import approve_release, copy_of, materialize_mesh


def check_meshes_stay_apart(instance, flights_release: int, runner_env: dict[str, str] | None = None) -> None:
    """Materialize the clinic mesh on an instance that holds a flights release, then promote and roll back
    each through the command line, as two teams would."""
    clinic = load_catalog(CLINIC_CATALOG)
    result = materialize_mesh(clinic, instance)
    assert result.success
    built = {"/".join(e.asset_key.path) for e in result.get_asset_materialization_events()}
    assert {"releases/clinic", "reports/clinic/impact"} <= built
    assert instance.get_latest_materialization_event(AssetKey(["releases", "flights"])) is not None
    clinic_release = next(e for e in result.get_asset_materialization_events()
                          if e.asset_key == AssetKey(["releases", "clinic"])).materialization.metadata["release_id"].value
    home = ["--home", str(instance.root_directory)]
    as_clinic = [*home, "--catalog", str(CLINIC_CATALOG)]
    runner = CliRunner(env=runner_env)

    def cli(*args: str):
        out = runner.invoke(main, list(args))
        assert out.exit_code == 0, out.output
        return out.output

    flights_list = json.loads(cli("release", "list", *home, "--format", "json"))
    clinic_list = json.loads(cli("release", "list", *as_clinic, "--format", "json"))
    assert [r["id"] for r in flights_list] == [flights_release]
    assert [r["id"] for r in clinic_list] == [clinic_release]
    approve_release(instance.root_directory, flights_release)  # flights declares its teams: promotion needs approval
    cli("release", "promote", str(flights_release), *home, "--actor", "ana", "--reason", "flights go-live")
    cli("release", "promote", str(clinic_release), *as_clinic, "--actor", "cy", "--reason", "clinic go-live")
    flights = open_registry(default_url(Path(instance.root_directory)), "flights")
    clinic_reg = open_registry(default_url(Path(instance.root_directory)), "clinic")
    assert flights.release(flights_release)["status"] == "Production"  # not superseded by the clinic's promotion
    assert flights.state()["production_release_id"] == flights_release
    assert clinic_reg.state()["production_release_id"] == clinic_release
    assert set(flights.production()) == {"models/route_segment", "models/dep_delay", "models/arr_delay",
                                         "models/late_arrival"}
    assert set(clinic_reg.production()) == {"models/progression", "models/high_risk"}
    refused = runner.invoke(main, ["release", "show", str(clinic_release), *home])
    assert refused.exit_code == 1 and f"no release {clinic_release} in mesh flights" in refused.output
    # a rollback in one mesh has nothing to go back to; it does not reach into the other
    back = runner.invoke(main, ["release", "rollback", *as_clinic, "--actor", "cy", "--reason", "x"])
    assert back.exit_code == 1 and "replaced no earlier release" in back.output
    assert flights.release(flights_release)["status"] == "Production"
    history = cli("registry", "history", "models/progression", *as_clinic)
    assert "clinic go-live" in history and "flights go-live" not in history
    flights.dispose()
    clinic_reg.dispose()


def test_two_meshes_share_a_sqlite_instance_and_registry(golden, tmp_path):
    with copy_of(golden, tmp_path / "home") as instance:
        check_meshes_stay_apart(instance, golden.release_id)


def test_registry_commands_take_the_catalog_from_the_environment(golden, tmp_path):
    with copy_of(golden, tmp_path / "home") as instance:
        runner = CliRunner(env={"DEPMESH_CATALOG": str(CLINIC_CATALOG)})
        out = runner.invoke(main, ["release", "list", "--home", str(instance.root_directory)])
        assert out.exit_code == 0 and "no releases of mesh clinic yet" in out.output

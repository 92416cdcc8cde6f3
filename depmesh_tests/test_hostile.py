"""Hostile and broken input gets a named error, never a traceback, a
resource blow-up or a side effect: expanding YAML, option-like git refs,
credentials in URLs, out-of-range ids, non-UTF-8 actors, mistyped or
unwritable instance folders, contract shapes Great Expectations would crash
on, and empty training data."""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from depmesh.catalog import CatalogError, load_catalog
from depmesh.cli import main
from depmesh.examples import CLINIC_CATALOG, DEMO_CATALOG
from depmesh_tests.conftest import (
    REPO,
    copy_of,
    depmesh_cli,
    fresh_database,
    materialize_mesh,
)
from depmesh_tests.test_impact import make_repo, run_impact


def billion_laughs(levels: int = 9) -> str:
    text = 'a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]\n'
    for i in range(1, levels):
        prev, cur = chr(ord("a") + i - 1), chr(ord("a") + i)
        text += f"{cur}: &{cur} [" + ", ".join([f"*{prev}"] * 9) + "]\n"
    return text


def test_expanding_yaml_aliases_are_refused_when_the_catalog_is_parsed(write_catalog):
    path = write_catalog(billion_laughs() + DEMO_CATALOG.read_text())
    assert path.stat().st_size < 30_000
    with pytest.raises(CatalogError) as refused:  # refused from the composed node graph, before any expansion
        load_catalog(path)
    [problem] = refused.value.problems
    assert "YAML aliases expand this catalog" in str(problem) and "mesh.yaml" in str(problem)
    out = CliRunner().invoke(main, ["validate", str(path)])
    assert out.exit_code == 1 and "YAML aliases expand" in out.output


def test_a_recursive_anchor_is_named(write_catalog):
    with pytest.raises(CatalogError, match="mesh.yaml:1: a YAML alias refers to itself"):
        load_catalog(write_catalog("a: &a [1, *a]\n" + DEMO_CATALOG.read_text()))


def test_modest_anchors_still_work(write_catalog):
    text = DEMO_CATALOG.read_text().replace("    owner: team:ingestion\n", "    owner: &ingest team:ingestion\n", 1)
    text = text.replace("    owner: team:ingestion\n", "    owner: *ingest\n")
    assert load_catalog(write_catalog(text)).node("raw/weather").owner == "team:ingestion"


@pytest.mark.parametrize("ref", ["--output=PLANTED", "-pPLANTED", "--exec=touch PLANTED"])
def test_option_like_git_refs_are_refused_not_obeyed(tmp_path, ref):
    repo = make_repo(tmp_path)
    out = run_impact(repo, f"--changed-since={ref}")
    assert out.returncode == 1 and "is not a git ref" in out.stderr, out.stderr
    diff = subprocess.run(depmesh_cli("contracts", "diff", f"git:{ref}", str(repo / "mesh.yaml")), cwd=repo,
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(repo)})
    assert diff.returncode == 1 and "is not a git ref" in diff.stderr, diff.stderr
    assert not any(p.name.startswith("PLANTED") for p in repo.rglob("*")), "git obeyed an option-like ref"


def test_a_ref_naming_no_commit_is_refused(tmp_path):
    repo = make_repo(tmp_path)
    out = run_impact(repo, "--changed-since", "HEAD~5")
    assert out.returncode == 1 and "names no commit" in out.stderr


def _doctor(home: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(depmesh_cli("doctor", "--home", str(home), "--format", "json"), capture_output=True,
                          text=True, env={**{k: v for k, v in os.environ.items() if not k.startswith("DAGSTER_")},
                                          **env}, timeout=120)


def test_doctor_masks_every_credential_form(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text((REPO / "dagster.yaml").read_text())
    url = "postgresql://ana:userinfo-secret@127.0.0.1:1/db?password=query-secret&sslpassword=ssl-secret"
    out = _doctor(home, {"DAGSTER_POSTGRES_URL": url, "DEPMESH_EXECUTOR": "celery",
                         "DEPMESH_CELERY_BROKER": "redis://:broker-secret@127.0.0.1:1/0"})
    printed = out.stdout + out.stderr
    assert out.returncode == 1 and "unreachable" in printed
    for secret in ("userinfo-secret", "query-secret", "ssl-secret", "broker-secret"):
        assert secret not in printed, secret
    assert "ana:***@127.0.0.1:1" in printed


def test_doctor_builds_a_working_url_from_a_password_with_at_and_slash(tmp_path, postgres_server_url):
    """postgres_db fields with a password holding @, / and : (the server trusts, so any password works):
    the URL depmesh builds must still reach the right host and database."""
    from sqlalchemy.engine import make_url

    with fresh_database(postgres_server_url) as url:
        server = make_url(url)
        home = tmp_path / "home"
        home.mkdir()
        (home / "dagster.yaml").write_text(textwrap.dedent(f"""\
            storage:
              postgres:
                postgres_db:
                  username: {server.username}
                  password: {{env: PG_PASSWORD}}
                  hostname: {server.host}
                  db_name: {server.database}
                  port: {server.port or 5432}
            """))
        out = _doctor(home, {"PG_PASSWORD": "p@ss/w:rd?x=1"})
    report = json.loads(out.stdout)
    storage = next(f for f in report["findings"] if f["area"] in ("instance storage", "run storage"))
    assert "unreachable" not in storage["message"], storage
    assert "p@ss" not in out.stdout and "w:rd" not in out.stdout


def test_release_ids_out_of_range_and_non_utf8_actors_get_messages(golden, tmp_path):
    home = str(golden.home)
    big = subprocess.run(depmesh_cli("release", "show", "99999999999999999999", "--home", home),
                         capture_output=True, text=True)
    assert big.returncode == 2 and "RELEASE_ID" in big.stderr and "Traceback" not in big.stderr
    with copy_of(golden, tmp_path / "home") as instance:
        actor = subprocess.run([os.fsencode(a) for a in depmesh_cli(
            "release", "promote", str(golden.release_id), "--home", str(instance.root_directory), "--reason", "go")]
            + [b"--actor", b"ana\xff"], capture_output=True)
        err = actor.stderr.decode("utf-8", "replace")
        assert actor.returncode == 1 and "actor is not valid UTF-8" in err and "Traceback" not in err
        long = CliRunner().invoke(main, ["release", "promote", str(golden.release_id), "--home",
                                         str(instance.root_directory), "--actor", "a" * 300, "--reason", "go"])
        assert long.exit_code == 1 and "keeps at most 200" in long.output


def test_a_mistyped_home_is_refused_by_commands_that_only_read(tmp_path):
    typo = tmp_path / "dagster_hmoe"
    for args in (["release", "list"], ["release", "show", "1"], ["registry", "history", "models/dep_delay"],
                 ["release", "promote", "1", "--actor", "a", "--reason", "r"]):
        out = CliRunner().invoke(main, [*args, "--home", str(typo)])
        assert out.exit_code == 2 and "holds no Dagster instance" in out.output, (args, out.output)
    assert not typo.exists(), "a read command created an empty instance"


def test_an_unwritable_home_is_named_by_the_run_command(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    out = subprocess.run(depmesh_cli("run", "--sample", "0.05", "--home", str(blocker / "home")),
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 1 and "cannot write the instance folder" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.parametrize("keys,message", [
    ("[[origin]]", "a compound key needs two or more columns, got ['origin']; for one column write columns.origin.unique: true"),
    ("[[origin, origin]]", "a compound key names a column twice"),
])
def test_contract_key_shapes_are_checked_at_validation(write_catalog, keys, message):
    text = DEMO_CATALOG.read_text().replace("      keys: [[origin, time_hour]]", f"      keys: {keys}")
    with pytest.raises(CatalogError) as refused:
        load_catalog(write_catalog(text))
    [problem] = [str(p) for p in refused.value.problems]
    assert "mesh.yaml:" in problem and "node raw/weather" in problem and "contract.keys[0]" in problem
    assert message in problem


def empty_features(inputs, ctx):
    """A feature step that lost every row (no row_count contract stops it)."""
    return inputs["raw/patients"].head(0)


def test_a_model_given_an_empty_input_fails_with_a_named_error(tmp_path):
    from dagster import instance_for_test

    text = CLINIC_CATALOG.read_text().replace(
        "compute: depmesh.examples.clinic.builders:patient_features",
        "compute: depmesh_tests.test_hostile:empty_features")
    path = tmp_path / "clinic.yaml"
    path.write_text(text)
    mesh = load_catalog(path)
    (tmp_path / "home").mkdir()
    with instance_for_test(temp_dir=str(tmp_path / "home")) as instance:
        result = materialize_mesh(mesh, instance)
        assert not result.success
        [failure] = [e for e in result.get_step_failure_events() if e.step_key == "models__progression"]
        error = failure.step_failure_data.error
        error = error.cause or error  # Dagster wraps what the step raised
        assert error.cls_name == "EmptyTrainingData", error.cls_name
        assert "model models/progression: input features/patients has no rows" in error.message
        assert "row_count contract" in error.message
        retries = [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
        assert retries == []

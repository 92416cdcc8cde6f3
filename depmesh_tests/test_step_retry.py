"""A step that loses its database connection once is retried and then
succeeds (STEP_UP_FOR_RETRY, then STEP_SUCCESS); a step that fails for a
reason that will not go away, or on a database it cannot write, is not."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import sqlalchemy as sa
from dagster import instance_for_test

from depmesh.assets import db_retries
from depmesh.catalog import load_catalog
from depmesh.examples import CLINIC_CATALOG
from depmesh.examples.clinic.builders import patient_features
from depmesh_tests.conftest import materialize_mesh

MARK_ENV = "DEPMESH_TEST_FLAKY_MARK"


def flaky_features(inputs, ctx):
    """Meets a dropped connection the first time it runs, then works."""
    mark = Path(os.environ[MARK_ENV])
    if not mark.exists():
        mark.write_text("failed once")
        raise sa.exc.OperationalError("SELECT 1", {}, Exception("server closed the connection unexpectedly"))
    return patient_features(inputs, ctx)


def read_only_features(inputs, ctx):
    raise sa.exc.OperationalError("INSERT", {}, Exception("attempt to write a readonly database"))


def events_of(result, step: str) -> list[str]:
    return [e.event_type_value for e in result.all_events if e.step_key == step]


def _mesh_with(tmp_path: Path, compute: str):
    text = CLINIC_CATALOG.read_text().replace("compute: depmesh.examples.clinic.builders:patient_features",
                                              f"compute: depmesh_tests.test_step_retry:{compute}")
    (tmp_path / "clinic.yaml").write_text(text)
    return load_catalog(tmp_path / "clinic.yaml")


@pytest.fixture
def instance(tmp_path):
    (tmp_path / "home").mkdir()
    with instance_for_test(temp_dir=str(tmp_path / "home")) as inst:
        yield inst


def test_a_lost_connection_once_is_retried_and_then_succeeds(tmp_path, instance, monkeypatch):
    monkeypatch.setattr(db_retries, "DATABASE_RETRY_WAIT_S", 0)
    monkeypatch.setenv(MARK_ENV, str(tmp_path / "mark"))
    result = materialize_mesh(_mesh_with(tmp_path, "flaky_features"), instance)
    assert result.success
    steps = events_of(result, "features__patients")
    assert steps.count("STEP_UP_FOR_RETRY") == 1 and steps[-1] == "STEP_SUCCESS", steps
    assert steps.index("STEP_UP_FOR_RETRY") < steps.index("STEP_SUCCESS")
    assert "ASSET_MATERIALIZATION" in steps  # stored once, by the attempt that succeeded
    assert steps.count("ASSET_MATERIALIZATION") == 1


def test_a_database_that_cannot_be_written_is_not_retried(tmp_path, instance, monkeypatch):
    monkeypatch.setattr(db_retries, "DATABASE_RETRY_WAIT_S", 0)
    result = materialize_mesh(_mesh_with(tmp_path, "read_only_features"), instance)
    assert not result.success
    steps = events_of(result, "features__patients")
    assert "STEP_UP_FOR_RETRY" not in steps and steps[-1] == "STEP_FAILURE", steps

"""The registry on SQLite and on a real PostgreSQL server: stages, audit trail,
releases, atomic promotion and rollback, concurrency and crashes."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys

import pytest
import sqlalchemy as sa

from depmesh.registry import PromotionConflict, Registry, RegistryError, RollbackRefused
from depmesh_tests.conftest import fresh_database


@pytest.fixture(params=["sqlite", "postgres"])
def registry_url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'registry.db'}"
    else:
        server = request.getfixturevalue("postgres_server_url")
        with fresh_database(server) as url:
            yield url


@pytest.fixture
def registry(registry_url):
    reg = Registry(registry_url)
    assert reg.migrate() == "0001"
    yield reg
    reg.dispose()


def register(reg: Registry, node: str, version: str, upstream: dict | None = None, mae: float = 10.0) -> None:
    reg.register(node=node, version=version, artifact_hash="a" * 64, artifact_path="artifacts/aa/x.pkl",
                 metrics={"mae": mae}, gates={"gate_quality": {"passed": True}}, run_id="run-1",
                 input_versions={}, upstream_models=upstream or {}, code_version="c1",
                 library_versions={"python": "3.11"}, card=f"# card {node}@{version}\n")


def two_releases(reg: Registry) -> tuple[int, int]:
    """Release 1: dep@v1, arr@w1 (trained on dep@v1). Release 2: dep@v2, arr@w2 (trained on dep@v2)."""
    register(reg, "models/dep", "v1")
    register(reg, "models/arr", "w1", {"models/dep": "v1"})
    first = reg.create_release({"models/dep": "v1", "models/arr": "w1"}, run_id="run-1")
    reg.promote(first, actor="ana", reason="first release")
    register(reg, "models/dep", "v2")
    register(reg, "models/arr", "w2", {"models/dep": "v2"})
    second = reg.create_release({"models/dep": "v2", "models/arr": "w2"}, run_id="run-2")
    reg.promote(second, actor="ana", reason="better delays")
    return first, second


def test_migrations_are_idempotent_and_versioned(registry):
    assert registry.migrate() == "0001"
    assert registry.schema_revision() == "0001"


def test_registration_is_idempotent_and_starts_in_development(registry):
    register(registry, "models/dep", "v1")
    assert registry.register(node="models/dep", version="v1", artifact_hash="b" * 64, artifact_path="x",
                             metrics={}, gates={}, run_id="r", input_versions={}, upstream_models={},
                             code_version="c", library_versions={}, card="") is False
    [version] = registry.versions("models/dep")
    assert version["stage"] == "Development" and version["artifact_hash"] == "a" * 64
    assert [(t["from_stage"], t["to_stage"]) for t in registry.history("models/dep")] == [(None, "Development")]


@pytest.mark.parametrize("actor,reason", [("", "why"), ("ana", ""), (None, "why"), ("ana", "   ")])
def test_transition_without_actor_or_reason_is_refused(registry, actor, reason):
    register(registry, "models/dep", "v1")
    with pytest.raises(RegistryError, match="needs an actor and a reason"):
        registry.transition("models/dep", "v1", "Staging", actor=actor, reason=reason)
    release = registry.create_release({"models/dep": "v1"}, run_id="r")
    with pytest.raises(RegistryError, match="needs an actor and a reason"):
        registry.promote(release, actor=actor, reason=reason)
    assert registry.production() == {}
    assert registry.versions("models/dep")[0]["stage"] == "Staging"


def test_promotion_moves_the_whole_release_and_archives_what_it_replaces(registry):
    assert registry.release_count() == 0
    first, second = two_releases(registry)
    assert registry.release_count() == len(registry.releases()) == 2
    assert registry.production() == {"models/dep": "v2", "models/arr": "w2"}
    stages = {v["version"]: v["stage"] for n in ("models/dep", "models/arr") for v in registry.versions(n)}
    assert stages == {"v1": "Archived", "w1": "Archived", "v2": "Production", "w2": "Production"}
    assert registry.release(first)["status"] == "Superseded"
    assert registry.release(second)["status"] == "Production"
    promoted = [t for t in registry.history("models/dep") if t["to_stage"] == "Production"]
    assert [(t["version"], t["actor"], t["reason"], t["release_id"]) for t in promoted] == [
        ("v1", "ana", "first release", first), ("v2", "ana", "better delays", second)]


def test_only_one_production_version_per_model_is_enforced_by_the_database(registry):
    two_releases(registry)
    with pytest.raises(sa.exc.IntegrityError):
        with registry.engine.begin() as conn:
            conn.execute(sa.text("UPDATE model_versions SET stage = 'Production' WHERE version = 'v1'"))
    assert registry.production() == {"models/dep": "v2", "models/arr": "w2"}


def test_rollback_makes_the_previous_release_production_again(registry):
    first, second = two_releases(registry)
    back = registry.rollback(actor="bo", reason="arrival delays regressed")
    assert back["id"] == first and registry.production() == {"models/dep": "v1", "models/arr": "w1"}
    assert registry.release(second)["status"] == "RolledBack"
    last = registry.history("models/arr")[-1]
    assert (last["version"], last["to_stage"], last["actor"]) == ("w1", "Production", "bo")
    with pytest.raises(RegistryError, match="replaced no earlier release"):
        registry.rollback(actor="bo", reason="again")


def test_single_model_rollback_is_refused_while_dependents_use_it(registry):
    two_releases(registry)
    with pytest.raises(RollbackRefused) as refused:
        registry.rollback_model("models/dep", actor="bo", reason="bad dep")
    assert refused.value.rollback_set == ["models/dep", "models/arr"]
    assert "models/arr in Production was trained against models/dep@v2" in str(refused.value)
    assert registry.production() == {"models/dep": "v2", "models/arr": "w2"}
    moves = registry.rollback_model("models/dep", actor="bo", reason="bad dep", with_dependents=True)
    assert moves == {"models/dep": ("v2", "v1"), "models/arr": ("w2", "w1")}
    assert registry.production() == {"models/dep": "v1", "models/arr": "w1"}


def _migrate_after_barrier(url: str, barrier, results) -> None:
    reg = Registry(url)
    barrier.wait(timeout=60)
    try:
        results.put(reg.migrate())
    except Exception as exc:  # noqa: BLE001 - the test reports what the process saw
        results.put(f"{type(exc).__name__}: {exc}")
    finally:
        reg.dispose()


def test_processes_migrating_a_new_database_at_once_all_succeed(registry_url):
    """Celery workers and step processes open a new registry at the same moment;
    without a lock the second CREATE TABLE failed with a duplicate table."""
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(3), ctx.Queue()
    procs = [ctx.Process(target=_migrate_after_barrier, args=(registry_url, barrier, results)) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
        assert p.exitcode == 0
    assert [results.get(timeout=5) for _ in procs] == ["0001"] * 3
    reg = Registry(registry_url)
    try:
        assert reg.schema_revision() == Registry.head_revision() == "0001"
    finally:
        reg.dispose()


def _promote_after_barrier(url: str, release_id: int, revision: int, barrier, results) -> None:
    reg = Registry(url)
    barrier.wait(timeout=60)
    try:
        reg.promote(release_id, actor=f"proc-{release_id}", reason="race", expected_revision=revision)
        results.put((release_id, "won"))
    except PromotionConflict:
        results.put((release_id, "conflict"))
    finally:
        reg.dispose()


def test_two_processes_promoting_concurrently_exactly_one_wins(registry, registry_url):
    register(registry, "models/dep", "v1")
    register(registry, "models/dep", "v2")
    a = registry.create_release({"models/dep": "v1"}, run_id="a")
    b = registry.create_release({"models/dep": "v2"}, run_id="b")
    revision = registry.state()["revision"]  # both read Production's state before either writes
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_promote_after_barrier, args=(registry_url, r, revision, barrier, results))
             for r in (a, b)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
        assert p.exitcode == 0
    outcomes = dict(results.get(timeout=5) for _ in procs)
    assert sorted(outcomes.values()) == ["conflict", "won"]
    winner = next(r for r, o in outcomes.items() if o == "won")
    assert registry.state() == {"production_release_id": winner, "revision": revision + 1}
    assert registry.production() == {"models/dep": "v1" if winner == a else "v2"}
    promotions = [t for t in registry.history("models/dep") if t["to_stage"] == "Production"]
    assert len(promotions) == 1


def test_a_process_killed_during_promotion_leaves_production_intact(registry, registry_url):
    first, _ = two_releases(registry)
    register(registry, "models/dep", "v3")
    register(registry, "models/arr", "w3", {"models/dep": "v3"})
    third = registry.create_release({"models/dep": "v3", "models/arr": "w3"}, run_id="run-3")
    before_state, before_history = registry.state(), registry.history("models/arr") + registry.history("models/dep")
    code = (f"from depmesh.registry import Registry; "
            f"Registry({registry_url!r}).promote({third}, actor='ana', reason='dies half-way')")
    proc = subprocess.run([sys.executable, "-c", code], env={**os.environ, "DEPMESH_FAULT": "promote:after_first_member"},
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert registry.state() == before_state
    assert registry.production() == {"models/dep": "v2", "models/arr": "w2"}
    assert registry.history("models/arr") + registry.history("models/dep") == before_history
    assert registry.release(third)["status"] == "Staging"
    # and the registry is usable: the same promotion now succeeds
    registry.promote(third, actor="ana", reason="second try")
    assert registry.production() == {"models/dep": "v3", "models/arr": "w3"}

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

from depmesh.artifacts import ArtifactStore
from depmesh.registry import PromotionConflict, Registry, RegistryError, RollbackRefused
from depmesh_tests.conftest import fresh_database

MESH = "m"
HEAD = Registry.head_revision()


@pytest.fixture(params=["sqlite", "postgres"])
def registry_url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'registry.db'}"
    else:
        server = request.getfixturevalue("postgres_server_url")
        with fresh_database(server) as url:
            yield url


@pytest.fixture
def artifacts_dir(tmp_path):
    return tmp_path / "artifacts"


def open_reg(url: str, artifacts_dir, mesh: str = MESH) -> Registry:
    return Registry(url, mesh=mesh, artifacts=ArtifactStore(artifacts_dir))


@pytest.fixture
def registry(registry_url, artifacts_dir):
    reg = open_reg(registry_url, artifacts_dir)
    assert reg.migrate() == HEAD
    yield reg
    reg.dispose()


def complete_recipe(reg: Registry, **changes) -> dict:
    """A recipe with every part stored (a version without inputs); ``changes`` replace parts."""
    from depmesh.tracking.store import Tracking

    tracking = Tracking(reg)
    recipe = {"commit": "0" * 40, "seed": 1, "params": {"alpha": 1.0}, "inputs": {},
              "code": {"kind": "git", "import_path": "."},
              "environment": {"name": "pylock.toml", "packages": 1, "unhashed": [],
                              "sha256": tracking.put_blob("environment", b'lock-version = "1.0"\n')},
              "lock": {"name": "requirements.txt", "sha256": tracking.put_blob("lock", b"pandas\n")},
              "diff": {"sha256": tracking.put_blob("diff", b""), "bytes": 0},
              "catalog": {"path": "mesh.yaml", "sha256": tracking.put_blob("catalog", b"mesh: m\n")}}
    recipe.update(changes)
    return recipe


def register(reg: Registry, node: str, version: str, upstream: dict | None = None, mae: float = 10.0,
             recipe: dict | None = None, input_versions: dict | None = None, requirements: dict | None = None) -> str:
    """Register a version whose artifact (some bytes) is in the registry's store, with a complete
    recipe unless one is given; returns its hash."""
    digest, path = reg.artifacts.put_bytes(f"{reg.mesh}:{node}@{version}".encode())
    reg.register(node=node, version=version, artifact_hash=digest, artifact_path=str(path),
                 metrics={"mae": mae}, gates={"gate_quality": {"passed": True}}, run_id="run-1",
                 input_versions=input_versions or {}, upstream_models=upstream or {}, code_version="c1",
                 library_versions={"python": "3.11"}, card=f"# card {node}@{version}\n",
                 recipe=complete_recipe(reg) if recipe is None else recipe, requirements=requirements)
    return digest


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
    assert registry.migrate() == HEAD == "0009"
    assert registry.schema_revision() == HEAD


@pytest.mark.parametrize("change,missing", [
    ({"environment": None}, "the environment (pylock.toml) was not recorded"),
    ({"lock": {"name": "poetry.lock", "sha256": "e" * 64}}, "the project's lock file (eeeeeeeeeeee) is not stored"),
    ({"commit": None}, "the git commit was not recorded"),
    ({"diff": {"sha256": "f" * 64, "bytes": 3}}, "the diff of uncommitted changes (ffffffffffff) is not stored"),
    ({"inputs": {}}, "no snapshot of input features/x"),
    ({"inputs": {"features/x": {"kind": "table", "sha256": "a" * 64}}}, "the snapshot of input features/x (aaaaaaaaaaaa) "
                                                                        "is missing"),
    ({"seed": None}, "the seed was not recorded"),
])
def test_a_version_with_an_incomplete_recipe_cannot_reach_staging(registry, change, missing):
    register(registry, "models/dep", "v1", recipe=complete_recipe(registry, **change),
             input_versions={"features/x": "d1"})
    with pytest.raises(RegistryError, match=rf"refused to move models/dep@v1 to Staging: its reproducibility recipe is "
                                            rf"incomplete: .*{__import__('re').escape(missing)}"):
        registry.create_release({"models/dep": "v1"}, run_id="r")
    with pytest.raises(RegistryError, match="recipe is incomplete"):
        registry.transition("models/dep", "v1", "Staging", actor="ana", reason="try")
    assert registry.releases() == [] and registry.versions()[0]["stage"] == "Development"  # nothing half-written
    assert missing in " ".join(registry.recipe_problems("models/dep", "v1"))
    # registering the same version again with a complete recipe mends it
    snapshot = registry.artifacts.root.parent / "snapshots"
    from depmesh.tracking.snapshots import SnapshotStore

    digest = SnapshotStore(snapshot).put_bytes(b"parquet bytes")
    register(registry, "models/dep", "v1", recipe=complete_recipe(
        registry, inputs={"features/x": {"kind": "table", "sha256": digest}}), input_versions={"features/x": "d1"})
    assert registry.recipe_problems("models/dep", "v1") == []
    registry.create_release({"models/dep": "v1"}, run_id="r")
    assert registry.versions()[0]["stage"] == "Staging"


def test_a_version_registered_without_any_recipe_says_so(registry):
    register(registry, "models/dep", "v1", recipe={})
    with pytest.raises(RegistryError, match="no recipe was recorded"):
        registry.create_release({"models/dep": "v1"}, run_id="r")


def test_registration_is_idempotent_and_starts_in_development(registry):
    digest = register(registry, "models/dep", "v1")
    assert registry.register(node="models/dep", version="v1", artifact_hash=digest, artifact_path="x",
                             metrics={}, gates={}, run_id="r", input_versions={}, upstream_models={},
                             code_version="c", library_versions={}, card="") is False
    [version] = registry.versions("models/dep")
    assert version["stage"] == "Development" and version["artifact_hash"] == digest
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
    reg = Registry(url, mesh=MESH)
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
    assert race(_migrate_after_barrier, [(registry_url,)] * 3) == [HEAD] * 3
    reg = Registry(registry_url)
    try:
        assert reg.schema_revision() == HEAD
    finally:
        reg.dispose()


def race(target, arguments: list[tuple]) -> list:
    """Start one spawned process per argument tuple (each waits at a shared barrier, passed last but one, then
    puts its outcome on a queue, passed last); return the outcomes once all exited cleanly."""
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(len(arguments)), ctx.Queue()
    procs = [ctx.Process(target=target, args=(*args, barrier, results)) for args in arguments]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
        assert p.exitcode == 0
    return [results.get(timeout=5) for _ in procs]


def _promote_after_barrier(url: str, artifacts_dir, release_id: int, revision: int, barrier, results) -> None:
    reg = open_reg(url, artifacts_dir)
    barrier.wait(timeout=60)
    try:
        reg.promote(release_id, actor=f"proc-{release_id}", reason="race", expected_revision=revision)
        results.put((release_id, "won"))
    except PromotionConflict:
        results.put((release_id, "conflict"))
    finally:
        reg.dispose()


def test_two_processes_promoting_concurrently_exactly_one_wins(registry, registry_url, artifacts_dir):
    register(registry, "models/dep", "v1")
    register(registry, "models/dep", "v2")
    a = registry.create_release({"models/dep": "v1"}, run_id="a")
    b = registry.create_release({"models/dep": "v2"}, run_id="b")
    revision = registry.state()["revision"]  # both read Production's state before either writes
    outcomes = dict(race(_promote_after_barrier, [(registry_url, artifacts_dir, r, revision) for r in (a, b)]))
    assert sorted(outcomes.values()) == ["conflict", "won"]
    winner = next(r for r, o in outcomes.items() if o == "won")
    assert registry.state() == {"production_release_id": winner, "revision": revision + 1}
    assert registry.production() == {"models/dep": "v1" if winner == a else "v2"}
    promotions = [t for t in registry.history("models/dep") if t["to_stage"] == "Production"]
    assert len(promotions) == 1


def test_a_process_killed_during_promotion_leaves_production_intact(registry, registry_url, artifacts_dir):
    first, _ = two_releases(registry)
    register(registry, "models/dep", "v3")
    register(registry, "models/arr", "w3", {"models/dep": "v3"})
    third = registry.create_release({"models/dep": "v3", "models/arr": "w3"}, run_id="run-3")
    before_state, before_history = registry.state(), registry.history("models/arr") + registry.history("models/dep")
    code = (f"from depmesh.registry import Registry; from depmesh.artifacts import ArtifactStore; "
            f"Registry({registry_url!r}, mesh={MESH!r}, artifacts=ArtifactStore({str(artifacts_dir)!r}))"
            f".promote({third}, actor='ana', reason='dies half-way')")
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


# -- consistency of rollbacks and release statuses ------------------------------------
def three_models(reg: Registry) -> tuple[int, int]:
    """dep -> arr -> late, as in the flights mesh. Release 1: v1/w1/x1, release 2: v2/w2/x2, each trained
    against its own release's upstream versions (lineage is transitive, as TrainedModel.lineage() records it)."""
    ids = []
    for n in (1, 2):
        register(reg, "models/dep", f"v{n}")
        register(reg, "models/arr", f"w{n}", {"models/dep": f"v{n}"})
        register(reg, "models/late", f"x{n}", {"models/arr": f"w{n}", "models/dep": f"v{n}"})
        ids.append(reg.create_release({"models/dep": f"v{n}", "models/arr": f"w{n}", "models/late": f"x{n}"},
                                      run_id=f"run-{n}"))
        reg.promote(ids[-1], actor="ana", reason=f"release {n}")
    return ids[0], ids[1]


def test_rolling_back_a_model_alone_onto_archived_upstream_versions_is_refused(registry):
    first, second = three_models(registry)
    before = registry.history()
    with pytest.raises(RollbackRefused) as refused:
        registry.rollback_model("models/late", actor="bo", reason="late regressed")
    message = str(refused.value)
    assert "models/late@x1 was trained against models/arr@w1 (Archived)" in message
    assert "models/dep@v1 (Archived)" in message
    assert f"depmesh release promote {first}" in message
    assert registry.production() == {"models/dep": "v2", "models/arr": "w2", "models/late": "x2"}
    assert registry.history() == before
    assert registry.release(second)["status"] == "Production"


def test_a_partly_rolled_back_release_says_so_and_can_be_promoted_again(registry):
    first, second = three_models(registry)
    register(registry, "models/late", "x3", {"models/arr": "w2", "models/dep": "v2"})
    third = registry.create_release({"models/dep": "v2", "models/arr": "w2", "models/late": "x3"}, run_id="run-3")
    registry.promote(third, actor="ana", reason="new late model")
    moves = registry.rollback_model("models/late", actor="bo", reason="x3 misbehaves")
    assert moves == {"models/late": ("x3", "x2")}
    assert registry.release(third)["status"] == "PartlyRolledBack"
    assert registry.production() == {"models/dep": "v2", "models/arr": "w2", "models/late": "x2"}
    promoted = registry.promote(third, actor="ana", reason="x3 fixed upstream")
    assert promoted["status"] == "Production" and registry.production()["models/late"] == "x3"
    assert registry.release(third)["replaced_release_id"] == second
    assert registry.release(second)["status"] == "Superseded"


def test_an_identical_set_is_not_a_new_release_and_nothing_is_said_to_move(registry):
    first, _ = two_releases(registry)
    again = registry.record_release({"models/dep": "v2", "models/arr": "w2"}, run_id="run-again")
    assert again == {"id": 2, "created": False, "status": "Production", "moved": []}
    assert registry.release_count() == 2
    register(registry, "models/dep", "v3")
    partial = registry.record_release({"models/dep": "v3", "models/arr": "w2"}, run_id="run-3")
    assert partial["created"] and partial["moved"] == ["models/dep@v3"]  # arr@w2 stayed Production
    assert registry.version("models/arr", "w2")["stage"] == "Production"


def test_previous_production_never_comes_from_a_rolled_back_release(registry):
    first, second = two_releases(registry)
    registry.rollback(actor="bo", reason="release 2 regressed")
    assert registry.release(second)["status"] == "RolledBack"
    # release 1 is Production again; it replaced nothing, and release 2's versions were rejected
    with pytest.raises(RegistryError, match="never had another Production version"):
        registry.rollback_model("models/dep", actor="bo", reason="again", with_dependents=True)
    assert registry.production() == {"models/dep": "v1", "models/arr": "w1"}
    assert registry.version("models/dep", "v2")["rejected"] is True


def test_a_rejected_version_promoted_again_on_purpose_is_no_longer_rejected(registry):
    first, second = two_releases(registry)
    registry.rollback(actor="bo", reason="release 2 regressed")
    registry.promote(second, actor="ana", reason="false alarm")
    assert registry.version("models/dep", "v2")["rejected"] is False
    assert registry.release(second)["replaced_release_id"] == first


def test_a_manual_transition_cannot_leave_production_behind_the_release(registry):
    two_releases(registry)
    with pytest.raises(RegistryError, match="leaves Production when another release is promoted"):
        registry.transition("models/dep", "v2", "Archived", actor="bo", reason="tidy")


# -- compare-and-swap: every stage change, not only promote ----------------------------
def _stale_operation(url: str, artifacts_dir, operation: str, revision: int, barrier, results) -> None:
    reg = open_reg(url, artifacts_dir)
    barrier.wait(timeout=60)
    try:
        if operation == "promote":
            reg.promote(3, actor="p", reason="race", expected_revision=revision)
        elif operation == "rollback":
            reg.rollback(actor="r", reason="race", expected_revision=revision)
        else:
            reg.rollback_model("models/dep", actor="r", reason="race", with_dependents=True,
                               expected_revision=revision)
        results.put((operation, "won"))
    except PromotionConflict:
        results.put((operation, "conflict"))
    finally:
        reg.dispose()


@pytest.mark.parametrize("loser", ["rollback", "rollback_model"])
def test_rollbacks_race_a_promotion_and_exactly_one_wins(registry, registry_url, artifacts_dir, loser):
    first, second = two_releases(registry)
    register(registry, "models/dep", "v3")
    register(registry, "models/arr", "w3", {"models/dep": "v3"})
    third = registry.create_release({"models/dep": "v3", "models/arr": "w3"}, run_id="run-3")
    assert third == 3
    revision = registry.state()["revision"]
    outcomes = dict(race(_stale_operation, [(registry_url, artifacts_dir, op, revision) for op in ("promote", loser)]))
    assert sorted(outcomes.values()) == ["conflict", "won"]
    assert registry.state()["revision"] == revision + 1
    if outcomes["promote"] == "won":
        assert registry.production() == {"models/dep": "v3", "models/arr": "w3"}
        assert registry.release(third)["status"] == "Production"
        assert registry.release(second)["status"] == "Superseded"
    else:
        assert registry.production() == {"models/dep": "v1", "models/arr": "w1"}
        assert registry.release(third)["status"] == "Staging"  # the loser's release did not move
        assert registry.release(second)["status"] == ("RolledBack" if loser == "rollback" else "PartlyRolledBack")


# -- concurrency: no lost update under mixed writers -----------------------------------
def _writer(url: str, artifacts_dir, role: str, seed: int, seconds: float, results) -> None:
    import random
    import time

    rng = random.Random(seed)
    reg = open_reg(url, artifacts_dir)
    done = {"ok": 0, "conflict": 0, "refused": 0}
    deadline = time.monotonic() + seconds
    n = 0
    try:
        while time.monotonic() < deadline:
            n += 1
            try:
                if role == "recorder":
                    v = f"v{seed}-{n}"
                    register(reg, "models/dep", v)
                    register(reg, "models/arr", f"w{seed}-{n}", {"models/dep": v})
                    reg.record_release({"models/dep": v, "models/arr": f"w{seed}-{n}"}, run_id=f"r{seed}-{n}")
                else:
                    state = reg.state()
                    pick = rng.random()
                    if pick < 0.5:
                        staging = [r["id"] for r in reg.releases() if r["status"] != "Production"]
                        if not staging:
                            continue
                        reg.promote(rng.choice(staging), actor=role, reason="stress",
                                    expected_revision=state["revision"])
                    elif pick < 0.75:
                        reg.rollback(actor=role, reason="stress", expected_revision=state["revision"])
                    else:
                        reg.rollback_model("models/dep", actor=role, reason="stress", with_dependents=True,
                                           expected_revision=state["revision"])
                done["ok"] += 1
            except PromotionConflict:
                done["conflict"] += 1
            except RegistryError:
                done["refused"] += 1  # nothing to roll back to, already Production, ...
        results.put((role, done))
    finally:
        reg.dispose()


def test_concurrent_releases_promotions_and_rollbacks_lose_no_update(registry, registry_url, artifacts_dir):
    two_releases(registry)
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    roles = ["recorder", "recorder", "promoter", "promoter"]
    procs = [ctx.Process(target=_writer, args=(registry_url, artifacts_dir, role, i, 12.0, results))
             for i, role in enumerate(roles)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=180)
        assert p.exitcode == 0
    outcomes = [results.get(timeout=5) for _ in procs]
    assert sum(o["ok"] for r, o in outcomes if r == "promoter") > 0, outcomes
    assert sum(o["ok"] for r, o in outcomes if r == "recorder") > 0, outcomes
    # invariants
    production = registry.production()
    for node in ("models/dep", "models/arr"):
        assert sum(v["stage"] == "Production" for v in registry.versions(node)) <= 1
    pointer = registry.state()["production_release_id"]
    release = registry.release(pointer)
    if release["status"] == "Production":
        assert release["members"] == production
    else:
        assert release["status"] == "PartlyRolledBack" and release["members"] != production
    assert registry.version("models/arr", production["models/arr"])["upstream_models"]["models/dep"] == \
        production["models/dep"], "a Production model trained against a version that is not Production"
    versions = {(v["node"], v["version"]): v for n in ("models/dep", "models/arr") for v in registry.versions(n)}
    last: dict[tuple[str, str], str | None] = {}
    for row in registry.history():
        k = (row["node"], row["version"])
        assert row["from_stage"] == last.get(k), f"audit chain broken at {row}"
        last[k] = row["to_stage"]
    for k, v in versions.items():
        assert last[k] == v["stage"], f"no audit row for the last move of {k}"
    assert len({r["status"] for r in registry.releases() if r["status"] in ("Production", "PartlyRolledBack")}) <= 1


# -- several meshes in one registry ---------------------------------------------------
def test_meshes_share_a_registry_without_touching_each_other(registry, registry_url, artifacts_dir):
    other = open_reg(registry_url, artifacts_dir, mesh="clinic")
    other.migrate()
    first, second = two_releases(registry)
    register(other, "models/dep", "c1")  # the same node name in another mesh
    theirs = other.create_release({"models/dep": "c1"}, run_id="c")
    other.promote(theirs, actor="cy", reason="clinic go-live")
    assert registry.production() == {"models/dep": "v2", "models/arr": "w2"}
    assert other.production() == {"models/dep": "c1"}
    assert registry.release(second)["status"] == "Production"
    assert other.releases()[0]["replaced_release_id"] is None
    with pytest.raises(RegistryError, match=f"no release {theirs} in mesh {MESH}"):
        registry.release(theirs)
    registry.rollback(actor="bo", reason="mine only")
    assert other.production() == {"models/dep": "c1"} and other.state()["production_release_id"] == theirs
    assert [h["version"] for h in other.history("models/dep")] == ["c1", "c1", "c1"]
    assert sorted(registry.meshes()) == ["clinic", MESH]
    other.dispose()


def test_a_registry_from_before_meshes_is_adopted_by_the_first_mesh(registry_url, artifacts_dir):
    from alembic import command

    reg = open_reg(registry_url, artifacts_dir, mesh="flights")
    config = reg._alembic_config()
    with reg.engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "0001")
    with reg.engine.begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO model_versions (node, version, stage, artifact_hash, artifact_path, metrics, gates, run_id, "
            "input_versions, upstream_models, code_version, library_versions, card, created_at) VALUES "
            "('models/dep', 'old', 'Production', :h, 'p', '{}', '{}', 'r', '{}', '{}', 'c', '{}', '', :t)"),
            {"h": "a" * 64, "t": "2026-01-01 00:00:00"})
        conn.execute(sa.text("INSERT INTO releases (status, run_id, created_at) VALUES ('Production', 'r', :t)"),
                     {"t": "2026-01-01 00:00:00"})
        conn.execute(sa.text("UPDATE registry_state SET production_release_id = 1, revision = 7"))
    assert reg.migrate() == HEAD
    assert reg.production() == {"models/dep": "old"} and reg.state() == {"production_release_id": 1, "revision": 7}
    other = open_reg(registry_url, artifacts_dir, mesh="clinic")
    other.migrate()
    assert other.production() == {} and other.releases() == []
    reg.dispose()
    other.dispose()


# -- hostile input ----------------------------------------------------------------------
def test_bad_ids_and_actors_get_named_errors_on_both_databases(registry):
    two_releases(registry)
    for bad in (2**63, 10**30, 0, -1, True):
        with pytest.raises(RegistryError, match="is not a release id"):
            registry.release(bad)
    with pytest.raises(RegistryError, match="actor is not valid UTF-8"):
        registry.rollback(actor="b\udcff", reason="x")
    with pytest.raises(RegistryError, match="the actor is 201 characters long; the registry keeps at most 200"):
        registry.rollback(actor="a" * 201, reason="x")
    assert registry.production() == {"models/dep": "v2", "models/arr": "w2"}


def test_a_read_only_registry_file_is_named_and_not_treated_as_an_outage(tmp_path, artifacts_dir):
    from depmesh.registry.store import RegistryReadOnly, is_transient_database_error

    if os.geteuid() == 0:
        # root writes through file modes: make the database read-only the way a mount would
        url = f"sqlite:///file:{tmp_path / 'registry.db'}?mode=ro&uri=true"
        setup = open_reg(f"sqlite:///{tmp_path / 'registry.db'}", artifacts_dir)
        setup.migrate()
        setup.dispose()
    else:
        url = f"sqlite:///{tmp_path / 'registry.db'}"
        setup = open_reg(url, artifacts_dir)
        setup.migrate()
        setup.dispose()
        (tmp_path / "registry.db").chmod(0o444)
    reg = open_reg(url, artifacts_dir)
    with pytest.raises(RegistryReadOnly, match="cannot be written") as refused:
        register(reg, "models/dep", "v1")
    assert "registry.db" in str(refused.value)
    assert not is_transient_database_error(refused.value)
    reg.dispose()


def _open_request_after_barrier(url: str, release_id: int, barrier, results) -> None:
    """What request_promotion writes, by a process that found no open request (the read it used to rely on)."""
    import json
    from datetime import UTC, datetime

    from depmesh.registry.schema import promotion_requests

    reg = Registry(url, mesh=MESH)
    barrier.wait(timeout=60)
    try:
        with reg.transaction() as conn:
            conn.execute(promotion_requests.insert().values(
                mesh=MESH, release_id=release_id, requested_by="gus", reason="race", status="pending",
                required=json.dumps([]), created_at=datetime.now(UTC)))
        results.put("opened")
    except sa.exc.IntegrityError:
        results.put("refused")
    finally:
        reg.dispose()


def test_one_open_promotion_request_per_release_is_enforced_by_the_database(registry, registry_url):
    """Six processes asking at once made six open requests (an unlocked read); an approved spare then outlived
    the promotion. The database now holds one open request per release, and a promotion voids any other."""
    from depmesh.governance.approvals import mark_promoted
    from depmesh.registry.schema import promotion_requests

    register(registry, "models/dep", "v1")
    release = registry.create_release({"models/dep": "v1"}, run_id="a")
    outcomes = race(_open_request_after_barrier, [(registry_url, release)] * 4)
    assert sorted(outcomes) == ["opened", "refused", "refused", "refused"]
    with registry.engine.begin() as conn:
        rows = conn.execute(sa.select(promotion_requests.c.id, promotion_requests.c.status)).all()
        assert [r.status for r in rows] == ["pending"]
        # a request closed (rejected) does not hold the place: a new one may be opened
        conn.execute(promotion_requests.update().values(status="rejected"))
    assert race(_open_request_after_barrier, [(registry_url, release)]) == ["opened"]
    with registry.engine.begin() as conn:
        open_id = conn.execute(sa.select(promotion_requests.c.id).where(promotion_requests.c.status == "pending")
                               ).scalar_one()
        mark_promoted(conn, open_id)
        statuses = dict(conn.execute(sa.select(promotion_requests.c.id, promotion_requests.c.status)).all())
    assert statuses[open_id] == "promoted" and "pending" not in statuses.values()


def test_migration_0008_voids_duplicate_open_requests_keeping_the_oldest(tmp_path):
    import json
    from datetime import UTC, datetime

    from alembic import command

    from depmesh.registry.schema import promotion_requests

    reg = Registry(f"sqlite:///{tmp_path / 'old.db'}", mesh=MESH)
    config = Registry._alembic_config()
    with reg.transaction() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "0007")
        for _ in range(3):
            conn.execute(promotion_requests.insert().values(
                mesh=MESH, release_id=7, requested_by="gus", reason="race", status="approved",
                required=json.dumps([]), created_at=datetime.now(UTC)))
    assert reg.migrate() == "0009"
    with reg.engine.connect() as conn:
        statuses = [r.status for r in conn.execute(sa.select(promotion_requests).order_by(promotion_requests.c.id))]
    reg.dispose()
    assert statuses == ["approved", "void", "void"]


def _audit_after_barrier(url: str, index: int, barrier, results) -> None:
    """Append audit events as fast as possible, racing the other processes."""
    from depmesh.notify import audit

    reg = Registry(url, mesh=MESH)
    barrier.wait(timeout=60)
    try:
        for n in range(15):
            with reg.transaction() as conn:
                audit(conn, MESH, f"proc-{index}", "note", f"race:{index}", f"event {n}")
        results.put("done")
    finally:
        reg.dispose()


def test_processes_appending_audit_events_at_once_keep_one_unbroken_chain(registry, registry_url):
    """The audit chain is appended under a lock: four processes writing 15 events each at the same moment leave
    60 links, each following the one before (no fork: two rows naming the same previous hash)."""
    from depmesh.registry.chain import verify

    assert race(_audit_after_barrier, [(registry_url, i) for i in range(4)]) == ["done"] * 4
    with registry.engine.connect() as conn:
        state = verify(conn, MESH)
    assert state["ok"], state["problems"]
    assert state["heads"]["events"]["rows"] == 60

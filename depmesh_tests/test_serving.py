"""Production is what serves (#24): the scores hold the registry's Production set, a run that trains leaves them,
and a promotion, a rollback or a per-node rollback re-scores what changed, and nothing else.

On real Dagster instances (SQLite, PostgreSQL), the real flights catalog, a real daemon for the sensor."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from depmesh.catalog import load_catalog
from depmesh.examples import DEMO_CATALOG
from depmesh_tests.conftest import (
    REPO,
    approve_release,
    copy_of,
    depmesh_cli,
    materialize_mesh,
    stop_process_group,
    team_env,
    team_instance,
)

SCORES = ("scores/dep_delay", "scores/arr_delay", "scores/late_arrival")
CHANGED = {"depmesh/params": json.dumps({"models/dep_delay": {"learning_rate": 0.12}})}


def registry_of(instance, mesh):
    """The mesh's registry under no policy: these tests promote and roll back without approvals."""
    from depmesh.artifacts import ArtifactStore
    from depmesh.assets.io import artifacts_location
    from depmesh.registry.store import default_url, open_registry

    return open_registry(default_url(Path(instance.root_directory)), mesh.name,
                         ArtifactStore(artifacts_location(instance)))


def served_versions(instance) -> dict[str, list[str]]:
    """Per scores node, the model versions found on its stored rows."""
    from depmesh.assets.io import MeshStore, storage_dir

    store = MeshStore(storage_dir(instance), instance=instance)
    return {n: sorted(store.load(n.split("/"))["model_version"].unique()) for n in SCORES}


def stored_bytes(instance, node: str) -> bytes:
    from depmesh import storage
    from depmesh.assets.io import recorded_metadata

    return storage.location(recorded_metadata(instance, node.split("/"))["path"]).read_bytes()


def expected(release: dict) -> dict[str, list[str]]:
    return {f"scores/{m.split('/')[1]}": [v] for m, v in release["members"].items()
            if f"scores/{m.split('/')[1]}" in SCORES}


def materialized_since(instance, after_run_ids: set[str]) -> set[str]:
    runs = [r for r in instance.get_runs() if r.run_id not in after_run_ids]
    from dagster import DagsterEventType

    return {e.asset_materialization.asset_key.to_user_string() for run in runs
            for e in instance.all_logs(run.run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION)}


def test_a_retrain_leaves_what_serves_and_promotion_and_rollback_rescore_it(golden, tmp_path):
    """Promote release 1; retrain with a changed parameter (release 2 in Staging): the scores still hold release 1's
    versions on every row. Promote release 2 and re-score: release 2's versions, and no model was retrained. Roll
    back through the command: release 1's versions again, the stored table byte for byte what it was."""
    from depmesh.rollout.rescore import rescore

    mesh = load_catalog(DEMO_CATALOG)
    with copy_of(golden, tmp_path / "home") as instance:
        registry = registry_of(instance, mesh)
        registry.promote(golden.release_id, actor="eli", reason="first release")
        first = rescore(DEMO_CATALOG, instance, registry, mesh)
        assert first.ok and set(first.stale) == set(SCORES)  # they served the candidate; now Production
        release1 = registry.release(golden.release_id)
        assert served_versions(instance) == expected(release1)
        before = {n: stored_bytes(instance, n) for n in SCORES}

        retrained = materialize_mesh(mesh, instance, tags=CHANGED)
        assert retrained.success
        release2 = registry.releases()[-1]
        assert release2["status"] == "Staging" and release2["members"] != release1["members"]
        assert served_versions(instance) == expected(release1), "a training run changed what serves"
        assert rescore(DEMO_CATALOG, instance, registry, mesh).stale == {}

        registry.promote(release2["id"], actor="eli", reason="second release")
        seen = {r.run_id for r in instance.get_runs()}
        second = rescore(DEMO_CATALOG, instance, registry, mesh)
        assert second.ok, second.outcome.blocked
        assert served_versions(instance) == expected(release2)
        assert materialized_since(instance, seen) == {*SCORES, "consumers/ops_report", "serving/flights"}
        assert rescore(DEMO_CATALOG, instance, registry, mesh).stale == {}  # idempotent

    home = tmp_path / "home"
    env = {**os.environ, "DAGSTER_HOME": str(home)}
    done = subprocess.run(depmesh_cli("release", "rollback", "--actor", "ivo", "--reason", "worse in production",
                                      "--home", str(home), "--rescore"),
                          env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert f"release {golden.release_id} is Production again" in done.stdout
    assert "re-scored scores/dep_delay, scores/arr_delay, scores/late_arrival, consumers/ops_report" in done.stdout
    with copy_of_existing(home) as instance:
        assert served_versions(instance) == expected(release1)
        for node in SCORES:
            assert stored_bytes(instance, node) == before[node], f"{node} after the rollback is not what it was"
        status = subprocess.run(depmesh_cli("serving", "status", "--home", str(home), "--format", "json"), env=env,
                                cwd=REPO, capture_output=True, text=True, timeout=300)
        assert status.returncode == 0, status.stderr[-2000:]
        rows = json.loads(status.stdout)["nodes"]
        assert all(r["current"] == "yes" and r["release"] == golden.release_id for r in rows), rows


class copy_of_existing:
    """The SQLite instance at a home a command changed."""

    def __init__(self, home: Path):
        self.home = home

    def __enter__(self):
        from dagster import DagsterInstance

        self.instance = DagsterInstance.from_config(str(self.home))
        return self.instance

    def __exit__(self, *exc):
        self.instance.dispose()


def test_a_per_node_rollback_with_dependents_rescores_the_restored_versions(golden, tmp_path):
    from depmesh.rollout.rescore import rescore

    mesh = load_catalog(DEMO_CATALOG)
    with copy_of(golden, tmp_path / "home") as instance:
        registry = registry_of(instance, mesh)
        registry.promote(golden.release_id, actor="eli", reason="first")
        assert materialize_mesh(mesh, instance, tags=CHANGED).success
        release2 = registry.releases()[-1]
        registry.promote(release2["id"], actor="eli", reason="second")
        assert rescore(DEMO_CATALOG, instance, registry, mesh).ok
        moves = registry.rollback_model("models/dep_delay", actor="ivo", reason="drifted", with_dependents=True)
        assert "models/arr_delay" in moves  # trained against dep_delay: moves with it
        restored = rescore(DEMO_CATALOG, instance, registry, mesh)
        assert restored.ok
        production = registry.production()
        assert served_versions(instance) == {n: [production[f"models/{n.split('/')[1]}"]] for n in SCORES}
        moved = {f"scores/{m.split('/')[1]}" for m in moves} & set(SCORES)
        assert set(restored.stale) == moved  # only what serves differently is re-scored
        from depmesh.assets.io import recorded_metadata
        from depmesh.rollout.production import SERVING_KEY

        record = recorded_metadata(instance, ["scores", "dep_delay"])[SERVING_KEY]
        assert record["status"] == "PartlyRolledBack" and record["release_id"] == release2["id"]


def test_the_served_set_check_refuses_a_set_that_moved_or_a_stray_version(golden, tmp_path):
    """The blocking served_set verdict is judged against the registry when the step ends."""
    from depmesh.assets.io import MeshStore, storage_dir
    from depmesh.catalog.spec import ServingSpec
    from depmesh.rollout.production import plan, verify

    mesh = load_catalog(DEMO_CATALOG)
    with copy_of(golden, tmp_path / "home") as instance:
        registry = registry_of(instance, mesh)
        registry.promote(golden.release_id, actor="eli", reason="first")
        store = MeshStore(storage_dir(instance), instance=instance)
        inputs = {"models/dep_delay": store.load(["models", "dep_delay"])}
        decided = plan(registry, ServingSpec(), "scores/dep_delay", inputs, mesh.name)
        frame = store.load(["scores", "dep_delay"])
        assert verify(registry, decided, frame, None)[0]
        stray = frame.assign(model_version=frame["model_version"].where(frame.index > 0, "0" * 16))
        passed, why = verify(registry, decided, stray, None)
        assert not passed and "0000000000" in why
        # the registry moves between the plan and the verdict: a rollback to nothing is refused, so retire it
        with registry.transaction() as conn:
            from depmesh.registry.schema import model_versions

            conn.execute(model_versions.update().where(model_versions.c.node == "models/dep_delay",
                                                       model_versions.c.stage == "Production")
                         .values(stage="Archived"))
        passed, why = verify(registry, decided, frame, None)
        assert not passed and "differs from the registry's Production set" in why


def test_a_registry_row_pointing_at_another_models_bundle_is_not_served(golden, tmp_path):
    from depmesh.assets.io import MeshStore, storage_dir
    from depmesh.catalog.spec import ServingSpec
    from depmesh.registry.schema import model_versions
    from depmesh.rollout.production import ServingError, plan

    mesh = load_catalog(DEMO_CATALOG)
    with copy_of(golden, tmp_path / "home") as instance:
        registry = registry_of(instance, mesh)
        registry.promote(golden.release_id, actor="eli", reason="first")
        members = registry.release(golden.release_id)["members"]
        other = registry.version("models/arr_delay", members["models/arr_delay"])
        with registry.transaction() as conn:
            conn.execute(model_versions.update().where(model_versions.c.node == "models/dep_delay",
                                                       model_versions.c.version == members["models/dep_delay"])
                         .values(artifact_hash=other["artifact_hash"]))
        store = MeshStore(storage_dir(instance), instance=instance)
        # the step's input is a different version, so the Production one is loaded from the record
        model = store.load(["models", "dep_delay"])
        model.version = "f" * 16
        with pytest.raises(ServingError, match="refusing to serve models/dep_delay"):
            plan(registry, ServingSpec(), "scores/dep_delay", {"models/dep_delay": model}, mesh.name)


def flights_variant(tmp_path: Path, serving: str) -> Path:
    """The flights catalog with another serving: block (no teams.yaml beside it: promotions need no approval)."""
    text = Path(DEMO_CATALOG).read_text()
    start = text.index("serving:\n")
    end = text.index("\n\n", start)
    path = tmp_path / "flights.yaml"
    path.write_text(text[:start] + serving + text[end:])
    return path


def test_skip_before_the_first_promotion_then_serve_production_on_postgres(postgres_server_url, tmp_path):
    """On a PostgreSQL instance and registry, with `before_first_promotion: skip`: the first run builds no scores
    (and no consumer) and says which release to request; a promotion re-scores them with release 1; a retrain
    leaves them; release 2 promoted and rolled back restores release 1's tables byte for byte."""
    from depmesh.rollout.rescore import rescore
    from depmesh_tests.conftest import fresh_database

    catalog = flights_variant(tmp_path, "serving: {mode: production, before_first_promotion: skip}")
    mesh = load_catalog(catalog)
    with fresh_database(postgres_server_url) as url:
        env = team_env(tmp_path / "home", url)
        with team_instance(env) as instance:
            first = materialize_mesh(mesh, instance)
            assert first.success
            built = {e.asset_key.to_user_string() for e in first.get_asset_materialization_events()}
            assert not built & {*SCORES, "consumers/ops_report"}, built
            verdicts = {e.asset_key.to_user_string(): e for e in first.get_asset_check_evaluations()
                        if e.check_name == "served_set"}
            assert set(verdicts) == set(SCORES)
            assert all("no Production version" in v.description and "release request" in v.description
                       for v in verdicts.values())
            registry = registry_of(instance, mesh)
            assert registry.url.startswith("postgresql")
            release1 = registry.releases()[-1]
            registry.promote(release1["id"], actor="eli", reason="first")
            served = rescore(str(catalog), instance, registry, mesh)
            assert served.ok and set(served.stale) == set(SCORES)
            assert served_versions(instance) == expected(release1)
            before = {n: stored_bytes(instance, n) for n in SCORES}
            assert materialize_mesh(mesh, instance, tags=CHANGED).success
            assert served_versions(instance) == expected(release1)
            release2 = registry.releases()[-1]
            registry.promote(release2["id"], actor="eli", reason="second")
            assert rescore(str(catalog), instance, registry, mesh).ok
            assert served_versions(instance) == expected(release2)
            registry.rollback(actor="eli", reason="back")
            assert rescore(str(catalog), instance, registry, mesh).ok
            assert {n: stored_bytes(instance, n) for n in SCORES} == before
            registry.dispose()


def test_a_latest_mesh_serves_what_it_trains_and_says_so(golden, tmp_path):
    from depmesh.assets.io import recorded_metadata
    from depmesh.rollout.production import SERVED_BY_KEY, stale_scores

    catalog = flights_variant(tmp_path, "serving: {mode: latest}")
    mesh = load_catalog(catalog)
    with copy_of(golden, tmp_path / "home") as instance:
        registry = registry_of(instance, mesh)
        registry.promote(golden.release_id, actor="eli", reason="first")
        result = materialize_mesh(mesh, instance, tags=CHANGED)
        assert result.success
        trained = registry.releases()[-1]
        assert trained["status"] == "Staging"
        assert served_versions(instance) == expected(trained)  # not Production: what the run trained
        said = recorded_metadata(instance, ["scores", "dep_delay"])[SERVED_BY_KEY]
        assert said.startswith("latest:") and "not governed by the registry" in said
        assert stale_scores(instance, registry, mesh) == {}


def test_the_serving_sensor_rescores_under_a_real_daemon_once(golden, tmp_path):
    """The serve_production sensor, evaluated by a real dagster-daemon on the embedded instance: an approved
    promotion through the command is served after one re-score run, whose metadata names the approvers; later
    ticks request nothing more."""
    from depmesh.instance import EMBEDDED_CONFIG
    from depmesh.rollout.production import SERVED_BY_KEY
    from depmesh.rollout.rescore import RESCORE_TAG
    from depmesh_tests.test_deployment import start_daemon

    home = tmp_path / "home"
    shutil.copytree(golden.home, home)
    (home / "dagster.yaml").write_text(EMBEDDED_CONFIG)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DEPMESH_", "DAGSTER_"))}
    env = {**env, "DAGSTER_HOME": str(home)}
    approve_release(home, golden.release_id)
    promoted = subprocess.run(depmesh_cli("release", "promote", str(golden.release_id), "--actor", "eli",
                                          "--reason", "approved", "--home", str(home)),
                              env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert promoted.returncode == 0, promoted.stderr[-2000:]
    assert "the serve_production sensor does it under the daemon" in promoted.stdout
    daemon = start_daemon(env)
    try:
        with copy_of_existing(home) as instance:
            deadline = time.monotonic() + 300
            while True:
                from depmesh.assets.io import recorded_metadata

                said = recorded_metadata(instance, ["scores", "late_arrival"]).get(SERVED_BY_KEY, "")
                runs = [r for r in instance.get_runs() if RESCORE_TAG in r.tags]
                if said.startswith(f"served by release {golden.release_id}") and runs and all(
                        r.is_finished for r in runs) and recorded_metadata(
                        instance, ["consumers", "ops_report"]).get("dagster/row_count") is not None:
                    break
                assert time.monotonic() < deadline, (said, [(r.run_id, r.status) for r in runs])
                time.sleep(2)
            assert "approved by" in said
            assert [r.status.value for r in runs] == ["SUCCESS"]
            time.sleep(20)  # another sensor tick (15 s apart): nothing new is requested
            assert len([r for r in instance.get_runs() if RESCORE_TAG in r.tags]) == 1
    finally:
        stop_process_group(daemon)


def test_the_serving_failure_modes_are_caught_by_their_drills(demo_mesh):
    """FM-UNAPPROVED (a serving path that bypasses the registry after an unpromoted retrain) and FM-SERVED-DRIFT
    (Production moves while a scores step runs) are each caught by the scores' served_set check."""
    from depmesh.failure_modes.catalogue import load_failure_modes
    from depmesh.failure_modes.drills import run_drill

    catalogue = load_failure_modes(demo_mesh)
    for mode_id, node in (("FM-UNAPPROVED", "scores/dep_delay"), ("FM-SERVED-DRIFT", "scores/arr_delay")):
        result = run_drill(demo_mesh, catalogue.mode(mode_id), None, None)
        assert result.caught, result
        assert result.caught_by == [f"{node}:served_set"], result


def test_the_ui_jobs_request_approve_promote_and_refuse_with_a_clear_failure(golden, demo_mesh, tmp_path):
    """The jobs the UI launches: a promotion before approval fails with a Failure naming what is missing (no
    stack of depmesh errors); a request, one approval per team, and the last one promotes; the serving page then
    names the release and its approvers; a member who is not on call may not roll back."""
    from dagster import AssetKey

    from depmesh.build import build_definitions
    from depmesh.governance.approvals import list_requests

    with copy_of(golden, tmp_path / "home") as instance:
        defs = build_definitions(demo_mesh)

        def launch(name: str, **config):
            return defs.resolve_job_def(name).execute_in_process(
                instance=instance, raise_on_error=False, run_config={"ops": {f"{name}_op": {"config": config}}})

        def refusal(result) -> str:
            assert not result.success
            failure = result.get_step_failure_events()[0].step_failure_data
            assert failure.error.cls_name == "Failure", failure.error.cls_name
            return failure.user_failure_data.description

        release = golden.release_id
        said = refusal(launch("promote_release", release_id=release, actor="eli", reason="go"))
        assert "needs approval" in said and f"depmesh release request {release}" in said
        assert launch("request_promotion", release_id=release, actor="gus", reason="go live").success
        registry = registry_of(instance, demo_mesh)
        request = list_requests(registry, release_id=release)[-1]
        said = refusal(launch("approve_request", request_id=request["id"], actor="gus", reason="mine"))
        assert "may not approve" in said
        approvers = []
        while request["status"] == "pending":
            owner = request["waiting_for"][0]["owners"][0]
            assert launch("approve_request", request_id=request["id"], actor=owner, reason="looks right").success
            approvers.append(owner)
            request = list_requests(registry, release_id=release)[-1]
        assert registry.state()["production_release_id"] == release
        page = materialize_mesh(demo_mesh, instance, selection=[AssetKey(["serving", "flights"])])
        assert page.success
        now = page.get_asset_materialization_events()[0].materialization.metadata["depmesh/serving_now"].value
        assert now.startswith(f"serving release {release} (Production, approved by {', '.join(dict.fromkeys(approvers))}")
        assert "NOT YET RE-SCORED" in now  # the scores still hold the candidate until the re-score
        said = refusal(launch("rollback_release", actor="gus", reason="bad"))
        assert "on-call" in said


def test_a_failed_range_rule_opens_an_incident_only_for_the_mode_it_fits(golden, demo_mesh, tmp_path):
    """One failed contract on raw/weather may mean a schema change, nulls, drift or malformed values; the
    detectors' match: picks the mode the failing rule fits (it opened all four before)."""
    from depmesh.assets.factory import check_text
    from depmesh.assets.io import MeshStore, recorded_metadata, storage_dir
    from depmesh.contracts.checks import contract_results, run_contract
    from depmesh.failure_modes.catalogue import load_failure_modes
    from depmesh.failure_modes.incidents import record_check_failure

    catalogue = load_failure_modes(demo_mesh)
    node = demo_mesh.node("raw/weather")
    with copy_of(golden, tmp_path / "home") as instance:
        weather = MeshStore(storage_dir(instance), instance=instance).load(["raw", "weather"])
        previous = recorded_metadata(instance, ["raw", "weather"])
        registry = registry_of(instance, demo_mesh)
        for perturbed, fits in ((weather.assign(humid=weather["humid"] * 3), "FM-MALFORMED"),
                                (weather.assign(temp=weather["temp"].where(weather.index % 3 != 0)), "FM-NULLS")):
            report, _ = run_contract(node, perturbed, previous, None)
            failed = [r for r in contract_results(node, report) if r.check_name == "contract" and not r.passed]
            assert failed, fits
            modes = {m.id for m in catalogue.detecting("raw/weather", "contract", check_text(failed[0]))}
            assert fits in modes and "FM-SCHEMA" not in modes, modes
            opened = record_check_failure(registry, None, catalogue, node="raw/weather", check="contract",
                                          version="v", run_id=None, summary=check_text(failed[0]))
            assert {i["mode"] for i, _ in opened} == modes


def test_a_canary_step_and_its_end_rescore_the_scores_it_feeds(golden, tmp_path):
    """A canary's start, each step and its end change what the scores serve: each is stale until re-scored, and
    the canary rows carry the candidate's versions, the rest Production's."""
    from depmesh.registry.schema import rollouts
    from depmesh.rollout.production import stale_scores
    from depmesh.rollout.rescore import rescore
    from depmesh.rollout.serving import start, stop

    mesh = load_catalog(DEMO_CATALOG)
    with copy_of(golden, tmp_path / "home") as instance:
        registry = registry_of(instance, mesh)
        registry.promote(golden.release_id, actor="eli", reason="first")
        assert rescore(DEMO_CATALOG, instance, registry, mesh).ok
        assert materialize_mesh(mesh, instance, tags=CHANGED).success
        release2 = registry.releases()[-1]
        rollout = start(registry, mesh, None, release2["id"], mode="canary", actor="eli", reason="try it")
        assert set(stale_scores(instance, registry, mesh)) == set(SCORES)
        assert rescore(DEMO_CATALOG, instance, registry, mesh).ok
        assert stale_scores(instance, registry, mesh) == {}
        mixed = served_versions(instance)["scores/dep_delay"]
        assert sorted(mixed) == sorted([release2["members"]["models/dep_delay"],
                                        registry.release(golden.release_id)["members"]["models/dep_delay"]])
        with registry.transaction() as conn:  # the canary sensor's advance, without waiting for its rows
            conn.execute(rollouts.update().where(rollouts.c.id == rollout["id"]).values(step=1))
        assert set(stale_scores(instance, registry, mesh)) == set(SCORES)
        assert rescore(DEMO_CATALOG, instance, registry, mesh).ok
        stop(registry, actor="eli", reason="enough")
        assert set(stale_scores(instance, registry, mesh)) == set(SCORES)
        assert rescore(DEMO_CATALOG, instance, registry, mesh).ok
        assert served_versions(instance) == expected(registry.release(golden.release_id))


def test_a_gate_check_executed_alone_judges_the_stored_version_without_training(golden, demo_mesh, tmp_path):
    from dagster import AssetCheckKey, AssetKey

    from depmesh.assets import MeshRuntime
    from depmesh.build import MESH_JOB, build_definitions
    from depmesh.tracking.store import Tracking

    with copy_of(golden, tmp_path / "home") as instance:
        registry = registry_of(instance, demo_mesh)
        trainings = len(Tracking(registry).query(node="models/dep_delay"))
        versions = len(registry.versions("models/dep_delay"))
        job = build_definitions(demo_mesh, runtime=MeshRuntime(sample_fraction=0.2)).resolve_job_def(MESH_JOB)
        key = AssetKey(["models", "dep_delay"])
        checks = {AssetCheckKey(key, "gate_latency"), AssetCheckKey(key, "gate_quality")}
        result = job.get_subset(asset_check_selection=checks).execute_in_process(instance=instance,
                                                                                 raise_on_error=False)
        assert result.success
        assert not result.get_asset_materialization_events()
        verdicts = {e.check_name: e for e in result.get_asset_check_evaluations()}
        assert set(verdicts) == {"gate_latency", "gate_quality"}
        stored = registry.release(golden.release_id)["members"]["models/dep_delay"]
        assert all(stored in v.metadata["depmesh/judged_version"].value for v in verdicts.values())
        assert verdicts["gate_latency"].passed and "p95" in verdicts["gate_latency"].description
        assert verdicts["gate_quality"].description.startswith("as recorded when")
        assert len(Tracking(registry).query(node="models/dep_delay")) == trainings  # no training recorded
        assert len(registry.versions("models/dep_delay")) == versions


def test_the_serving_sensor_requests_one_retried_run_per_revision_and_shows_a_failed_one(golden, demo_mesh, tmp_path):
    """Evaluated on a real instance: a promotion makes one request (run key = revision and what is stale,
    retried twice by the daemon); a second evaluation while it exists requests nothing; once it failed for
    good, the tick says so instead of requesting it again."""
    from dagster import DagsterRunStatus, SensorResult, SkipReason, build_sensor_context
    from dagster._core.test_utils import create_run_for_test

    from depmesh.automation.serving import evaluate
    from depmesh.keys import RESCORE_TAG

    with copy_of(golden, tmp_path / "home") as instance:
        registry = registry_of(instance, demo_mesh)
        registry.promote(golden.release_id, actor="eli", reason="first")
        first = evaluate(build_sensor_context(instance=instance), demo_mesh)
        assert isinstance(first, SensorResult) and len(first.run_requests) == 1
        request = first.run_requests[0]
        assert request.tags["dagster/max_retries"] == "2" and request.tags[RESCORE_TAG] == request.run_key
        assert {k.to_user_string() for k in request.asset_selection} == {*SCORES, "consumers/ops_report",
                                                                          "serving/flights"}
        create_run_for_test(instance, job_name="mesh_job", tags=request.tags, status=DagsterRunStatus.STARTED)
        again = evaluate(build_sensor_context(instance=instance), demo_mesh)
        assert isinstance(again, SkipReason) and "already requested" in again.skip_message
        create_run_for_test(instance, job_name="mesh_job", tags={**request.tags, "dagster/retry_number": "2"},
                            status=DagsterRunStatus.FAILURE)
        failed = evaluate(build_sensor_context(instance=instance), demo_mesh)
        assert isinstance(failed, SkipReason) and "failed after its retries" in failed.skip_message

"""The Dagster UI as a person sees it: a real dagster-webserver over a real
instance, Debian's chromium driven by Playwright (no browser download).

The instance holds the golden run, a promotion of its release, and then a run
in which raw/weather broke its contract. What a person must read there: the
lineage groups; the failed contract with its failing values; the models
downstream shown as not run (skipped, with why), not failed; the release's
gate checks; each model's stage and the version in Production.

Screenshots go to $DEPMESH_SCREENSHOTS or a temporary folder; the test prints it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner
from dagster import AssetKey

from depmesh import graph
from depmesh_tests.conftest import (
    REPO,
    approve_release,
    copy_of,
    materialize_mesh,
    stop_process_group,
)
from depmesh_tests.test_ui import free_port, wait_until_served


@pytest.fixture(scope="module")
def ui_instance(golden, demo_mesh, tmp_path_factory):
    """The golden run, its release promoted (and re-scored), a refused promotion from the UI's job, then a run
    blocked at raw/weather's contract."""
    from depmesh.cli import main

    home = tmp_path_factory.mktemp("ui") / "home"
    with copy_of(golden, home) as instance:
        approve_release(home, golden.release_id)
        promoted = CliRunner().invoke(main, ["release", "promote", str(golden.release_id), "--home", str(home),
                                             "--actor", "ana", "--reason", "weekly release", "--rescore"])
        assert promoted.exit_code == 0, promoted.output
        # the UI's promote_release job on a release that is already Production: refused, as a Failure
        from depmesh.build import build_definitions

        refused = build_definitions(demo_mesh).resolve_job_def("promote_release").execute_in_process(
            instance=instance, raise_on_error=False, tags={"depmesh/test": "refused promotion"},
            run_config={"ops": {"promote_release_op": {"config": {"release_id": golden.release_id, "actor": "ana",
                                                                  "reason": "again"}}}})
        assert not refused.success
        faulty = replace(demo_mesh, nodes=tuple(
            replace(n, compute="depmesh_tests.faults:weather_with_nulls") if n.name == "raw/weather" else n
            for n in demo_mesh.nodes))
        selection = [AssetKey(["raw", "weather"]), AssetKey(["releases", "flights"])] + [
            AssetKey(n.split("/")) for n in graph.downstream(demo_mesh.inputs_map(), "raw/weather")]
        blocked = materialize_mesh(faulty, instance, selection=selection)
        assert blocked.success
    return home


@pytest.fixture(scope="module")
def webserver(ui_instance, tmp_path_factory):
    port = free_port()
    log = tmp_path_factory.mktemp("webserver") / "webserver.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "dagster_webserver", "-m", "depmesh.definitions", "-h", "127.0.0.1", "-p", str(port)],
            cwd=REPO, env={**os.environ, "DAGSTER_HOME": str(ui_instance)}, stdout=sink, stderr=subprocess.STDOUT,
            start_new_session=True)
    try:
        wait_until_served(proc, port, log, "dagster-webserver")
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_process_group(proc)


class Screen:
    """One page of the UI: open a path, dismiss Dagster's newsletter prompt, read and photograph it."""

    def __init__(self, browser, base: str, folder: Path):
        self.page = browser.new_page(viewport={"width": 1500, "height": 1100})
        # Dagster asks local users to join its newsletter once; say it was seen
        self.page.add_init_script("window.localStorage.setItem('communityNux', JSON.stringify('1'))")
        self.base, self.folder = base, folder

    def open(self, path: str, wait_for: str, shot: str) -> str:
        self.page.goto(self.base + path)
        self.page.get_by_text(wait_for, exact=False).first.wait_for(timeout=60_000)
        skip = self.page.get_by_role("button", name="Skip")
        if skip.count():
            skip.first.click()
        self.page.wait_for_timeout(300)
        self.page.screenshot(path=str(self.folder / f"{shot}.png"), full_page=True)
        return self.page.inner_text("body")

    def show_event(self, containing: str, shot: str) -> str:
        """Click through the asset's event list until the shown event contains ``containing``."""
        rows = self.page.locator("[role=img][aria-label=observation]")  # the list's observation rows
        texts = []
        for i in range(min(rows.count(), 30)):
            rows.nth(i).click()
            self.page.wait_for_timeout(400)
            text = self.page.inner_text("body")
            if containing in text:
                self.page.screenshot(path=str(self.folder / f"{shot}.png"), full_page=True)
                return text
            texts.append(text[-300:])
        raise AssertionError(f"no event shows {containing!r} among {rows.count()} rows")

    def close(self) -> None:
        self.page.close()


@pytest.fixture
def screen(browser, webserver, screenshots):
    s = Screen(browser, webserver, screenshots)
    yield s
    s.close()


def test_the_lineage_shows_every_group(screen):
    text = screen.open("/asset-groups", "Global asset lineage", "lineage")
    for group in ("ingestion", "features", "training", "scoring", "consumers", "releases", "reports"):
        assert group in text, group


def test_a_failed_contract_shows_its_rule_and_failing_values(screen):
    # the first check, contract, is the one the page opens on
    text = screen.open("/assets/raw/weather?view=checks", "temp.null_fraction", "weather_contract")
    assert "Failed" in text
    assert "NOT STORED (data version" in text and 'fail, e.g. "nan"' in text  # the rule and its failing values
    assert "depmesh/stored" in text and "depmesh/judged_version" in text
    # what the failure may mean, from the failure-mode catalogue
    assert "depmesh/failure_mode_ids" in text and "FM-NULLS" in text and "team:ingestion" in text


def test_models_below_the_block_show_as_not_run_not_failed(screen):
    checks = screen.open("/assets/models/dep_delay?view=checks", "gate_quality", "dep_delay_checks")
    lines = [line.strip() for line in checks.splitlines()]
    gates = ["gate_latency", "gate_malformed_input", "gate_memory", "gate_quality", "gate_subgroups"]
    for gate in gates:
        status = lines[lines.index(gate) + 1:lines.index(gate) + 3]
        assert "Skipped" in status and "Failed" not in status, (gate, status)
    assert "Execution failed" not in checks
    events = screen.open("/assets/models/dep_delay?view=events", "not run: blocked upstream", "dep_delay_events")
    assert "not run: blocked upstream by raw/weather: contract failed" in events
    overview = screen.open("/assets/models/dep_delay", "Latest materialization", "dep_delay_overview")
    assert "Failed" not in overview.split("Description")[0]  # the status block: materialized, not failed


def test_the_release_carries_its_gate_checks(screen):
    text = screen.open("/assets/releases/flights?view=checks", "release_gates_passed", "release_checks")
    for gate in ("release_gates_passed", "release_artifacts_verified", "release_trained_together",
                 "release_upstream_in_set", "release_recipes_complete"):
        assert gate in text
    assert "Blocking (a depmesh gate)" in text


def test_a_model_page_shows_its_stage_and_the_production_version(screen, ui_instance):
    from dagster import DagsterInstance

    instance = DagsterInstance.from_config(str(ui_instance))
    try:
        version = instance.get_latest_materialization_event(
            AssetKey(["models", "late_arrival"])).asset_materialization.metadata["model_version"].value
    finally:
        instance.dispose()
    screen.open("/assets/models/late_arrival?view=events", "not run: blocked upstream", "late_arrival_events")
    text = screen.show_event("Production by ana", "late_arrival_stage")
    assert f"{version}: Staging → Production by ana" in text or f"{version}: Staging -> Production by ana" in text
    for shown in ("depmesh/stage", "depmesh/production_version", "weekly release", "depmesh/release_id"):
        assert shown in text, shown


def test_each_tunable_model_has_its_tuning_job_and_the_candidate_sensor(screen):
    jobs = screen.open("/jobs", "tune__models__dep_delay", "jobs")
    assert "tune__models__dep_delay" in jobs and "tune__models__route_segment" not in jobs
    job = screen.open("/locations/depmesh.definitions/jobs/tune__models__dep_delay", "tune__models__dep_delay_study",
                      "tune_job")
    assert "tune__models__dep_delay_study" in job
    sensors = screen.open("/automation", "tuned_candidates", "automation")
    assert "tuned_candidates" in sensors and "coordinated_retraining" in sensors


def test_a_model_materialization_shows_its_training_curves(screen):
    """The curves are a picture in the materialization's metadata (an SVG data URI in Markdown)."""
    screen.open("/assets/models/arr_delay", "training_curves", "arr_delay_overview_metadata")
    page = screen.page
    page.locator("tr", has_text="training_curves").last.get_by_text("[Show Markdown]").click()
    image = page.locator("img[alt='training curves']")
    image.first.wait_for(timeout=30_000)
    drawn = image.first.evaluate("img => [img.complete, img.naturalWidth, img.naturalHeight]")
    assert drawn == [True, 560, 260], drawn  # decoded and drawn at the SVG's size
    assert "Last values: train/mae" in page.inner_text("body")
    page.screenshot(path=str(screen.folder / "arr_delay_curves.png"))


def test_the_comparison_page_draws_its_table_curves_and_parallel_coordinates(browser, golden, demo_mesh, tmp_path,
                                                                             screenshots):
    from depmesh.artifacts import ArtifactStore
    from depmesh.assets.io import storage_dir
    from depmesh.cli import main
    from depmesh.registry import Registry
    from depmesh.registry.store import default_url
    from depmesh.tracking.store import Tracking
    from depmesh.tuning.study import run_study

    home = tmp_path / "home"
    with copy_of(golden, home) as instance:
        registry = Registry(default_url(home), mesh="flights", artifacts=ArtifactStore(storage_dir(instance) / "artifacts"))
        result = run_study(demo_mesh, "models/dep_delay", instance, registry, storage_dir(instance), trials=5,
                           progress=lambda line: None)
    trials = Tracking(registry).query(study=result.study)
    series = sum(len(c) for c in Tracking(registry).curves([t["id"] for t in trials]).values())
    page_file = tmp_path / "compare.html"
    out = CliRunner().invoke(main, ["runs", "compare", "--home", str(home), "--study", result.study, "--status", "trial",
                                    "--sort", "metrics.mae", "--format", "html", "-o", str(page_file)])
    assert out.exit_code == 0, out.output
    complete = [t for t in trials if t["status"] == "trial"]
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    try:
        page.goto(page_file.as_uri())
        page.locator("#parcoords .parcoords").first.wait_for(timeout=30_000)
        rows = page.locator("#trainings tbody tr")
        assert rows.count() == len(complete) >= 2
        maes = [float(rows.nth(i).locator("td").last.inner_text()) for i in range(rows.count())]
        assert maes == sorted(maes) and maes[0] == round(result.best_value, 5)  # sorted by the metric, best first
        drawn = page.locator("#curves .scatterlayer .trace").count()
        shown = sum(len(c) for c in Tracking(registry).curves([t["id"] for t in complete]).values())
        assert drawn == shown >= 2 * len(complete) and series >= shown  # train and validation per trial
        axes = page.locator("#parcoords .y-axis")
        assert axes.count() == 4  # learning_rate, max_iter, max_leaf_nodes, and mae
        text = page.inner_text("#parcoords")
        for label in ("learning_rate", "max_iter", "max_leaf_nodes", "mae"):
            assert label in text, label
        page.screenshot(path=str(screenshots / "runs_compare.png"), full_page=True)
    finally:
        page.close()


def test_the_scores_and_the_serving_page_say_what_serves_and_who_approved_it(screen, golden):
    from depmesh_tests.conftest import approve_release  # noqa: F401 - the fixture's approvers come from it

    scores = screen.open("/assets/scores/late_arrival", "depmesh/served_by", "scores_served_by")
    assert f"served by release {golden.release_id} (Production, approved by" in scores
    page = screen.open("/assets/serving/flights", "depmesh/serving_now", "serving_page")
    assert f"serving release {golden.release_id} (Production, approved by" in page
    for shown in ("history of Production", "waiting in Staging", "scores"):
        assert shown in page, shown


def test_the_stage_jobs_scaffold_their_config_and_a_refusal_reads_without_a_stack(screen, ui_instance):
    from dagster import DagsterInstance, RunsFilter

    jobs = screen.open("/jobs", "approve_request", "stage_jobs")
    for job in ("request_promotion", "approve_request", "reject_request", "promote_release", "rollback_release"):
        assert job in jobs, job
    launchpad = screen.open("/locations/depmesh.definitions/jobs/rollback_release/playground",
                            "Scaffold missing config", "rollback_launchpad")
    assert "rollback_release" in launchpad
    screen.page.get_by_text("Scaffold missing config").first.click()
    screen.page.wait_for_timeout(500)
    config = screen.page.inner_text("body")
    for field in ("actor", "reason", "node", "with_dependents"):
        assert field in config, field
    screen.page.screenshot(path=str(screen.folder / "rollback_scaffolded.png"), full_page=True)
    instance = DagsterInstance.from_config(str(ui_instance))
    try:
        run = instance.get_runs(RunsFilter(tags={"depmesh/test": "refused promotion"}))[0]
    finally:
        instance.dispose()
    text = screen.open(f"/runs/{run.run_id}", "refused", "refused_promotion_run")
    # the refusal is the failure's message (Dagster still lists its own frames below it, collapsed)
    assert "Failure: promoting release 1 refused: release 1 is already Production" in text
    assert "RegistryError" not in text

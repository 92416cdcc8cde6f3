"""Hyperparameter search: the catalog's tune block validated, Optuna studies in
the registry database (shared by workers), every trial a tracked training,
pruned trials recorded as pruned, and the best parameters a candidate that
passes the same gates as any version and reaches Staging at most."""

from __future__ import annotations

import json
import subprocess
import textwrap

import pytest
from dagster import AssetKey

from depmesh.catalog import load_catalog
from depmesh.examples import CLINIC_CATALOG
from depmesh.registry import Registry
from depmesh.registry.store import default_url
from depmesh.tracking.store import Tracking
from depmesh_tests.conftest import (
    copy_of,
    depmesh_cli,
    fresh_database,
    materialize_mesh,
    team_env,
)
from depmesh_tests.test_catalog import SPLIT, catalog, problems_of


def tuned_model(tune: str) -> str:
    return catalog(f"""\
    - name: models/m
      kind: model
      owner: team:m
      inputs: [raw/a]
      model:
        trainer: depmesh.examples.flights.trainers:train_dep_delay
        target: dep_delay
        params: {{max_iter: 100}}
        {SPLIT}
        tune:
""" + textwrap.indent(textwrap.dedent(tune), " " * 10))


@pytest.mark.parametrize("tune,words", [
    ("space: {max_iter: {type: int, low: 300, high: 50}}\nmetric: mae", "model.tune.space.max_iter: low (300) must be below high (50)"),
    ("space: {lr: {type: loguniform, low: 0, high: 1}}\nmetric: mae", "model.tune.space.lr.low: a log scale needs low > 0"),
    ("space: {lr: {type: float, low: 0.1, high: 1}}\nmetric: mae\nsampler: grid", "the grid sampler needs a finite grid"),
    ("space: {lr: {type: normal, low: 0.1, high: 1}}\nmetric: mae", "type must be one of int, float, loguniform, categorical"),
    ("space: {seed: {type: int, low: 1, high: 9}}\nmetric: mae", "the seed is not tuned"),
    ("space: {depth: {type: categorical, choices: []}}\nmetric: mae", "choices must be a non-empty list"),
    ("space: {depth: {type: int, low: 1, high: 9}}\nmetric: mae\nsampler: bayes", "sampler must be one of tpe, random, grid"),
    ("space: {depth: {type: int, low: 1, high: 9}}\nmetric: mae\npruner: asha", "pruner must be one of hyperband"),
    ("space: {depth: {type: int, low: 1, high: 9}}\nmetric: weird_score", "say whether a higher weird_score is better"),
    ("space: {depth: {type: int, low: 1, high: 9}}", "metric must name the metric to optimize"),
    ("space: {depth: {type: int, low: 1, high: 9}}\nmetric: mae\ntimeout: soon", "timeout must be a duration like 90s"),
    ("space: {depth: {type: int, low: 1, high: 9}}\nmetric: mae\ntrials: 0", "trials must be a whole number from 1"),
    ("space: {depth: {type: int, low: 1, high: 9, step: 0.5}}\nmetric: mae", "step must be a positive whole number"),
    ("space: {}\nmetric: mae", "space must map at least one parameter"),
    ("space: {depth: {type: int, low: 1, high: 9}}\nmetric: mae\nbudget: 3", "unknown key 'budget'"),
])
def test_a_bad_tune_block_is_named_with_its_field(write_catalog, tune, words):
    problems = problems_of(write_catalog, tuned_model(tune))
    assert len(problems) == 1 and "node models/m" in problems[0] and words in problems[0], problems


def test_a_good_tune_block_reads_into_the_spec(write_catalog):
    mesh = load_catalog(write_catalog(tuned_model("""\
        space:
          max_iter: {type: int, low: 50, high: 300, step: 50}
          learning_rate: {type: loguniform, low: 0.01, high: 0.3}
          loss: {type: categorical, choices: [absolute_error, squared_error]}
        metric: mae
        sampler: tpe
        pruner: hyperband
        trials: 12
        timeout: 90s
        """)))
    tune = mesh.node("models/m").model.tune
    assert [p.name for p in tune.space] == ["max_iter", "learning_rate", "loss"]
    assert tune.space[1].log and tune.space[2].choices == ("absolute_error", "squared_error")
    assert (tune.metric, tune.higher_is_better, tune.trials, tune.timeout_s) == ("mae", False, 12, 90.0)


def _optuna_states(url: str, study: str) -> dict[int, str]:
    import optuna

    from depmesh.tuning.study import study_storage

    loaded = optuna.load_study(study_name=study, storage=study_storage(url))
    return {t.number: t.state.name for t in loaded.get_trials(deepcopy=False)}


def test_the_tune_job_records_every_trial_and_its_candidate_passes_the_gates(golden, demo_mesh, tmp_path):
    from dagster import build_run_status_sensor_context

    from depmesh.assets import MeshRuntime
    from depmesh.build import build_definitions
    from depmesh.tuning.jobs import SENSOR_NAME, candidate_for, tune_job_name

    home = tmp_path / "home"
    with copy_of(golden, home) as instance:
        defs = build_definitions(demo_mesh, runtime=MeshRuntime(sample_fraction=0.2))
        job = defs.resolve_job_def(tune_job_name("models/dep_delay"))
        result = job.execute_in_process(instance=instance, run_config={"ops": {
            "tune__models__dep_delay_study": {"config": {"trials": 10}}}})
        assert result.success
        run = instance.get_run_by_id(result.run_id)
        tuned = json.loads(run.tags["depmesh/tuned_params"])
        tracking = Tracking(Registry(default_url(home), mesh="flights"))
        trials = tracking.query(study=tuned["study"])
        # every trial is a tracked training, with the state Optuna gave it
        states = _optuna_states(tracking.registry.url, tuned["study"])
        assert sorted(r["trial"] for r in trials) == sorted(states) and len(states) == 10
        for row in trials:
            assert row["trigger"] == "tune" and row["tags"]["depmesh/study"] == tuned["study"]
            assert row["status"] == {"COMPLETE": "trial", "PRUNED": "pruned"}[states[row["trial"]]], row
        pruned = [r for r in trials if r["status"] == "pruned"]
        assert pruned, "Hyperband stopped no trial of ten (seed 13): pruning is not fed"
        for row in pruned:  # the intermediate values it was stopped on are its curve
            steps, values = tracking.curves([row["id"]])[row["id"]]["validation/mae"]
            assert len(steps) < 10 and "TrialPruned: pruned after step" in row["error"]
        best = min((r for r in trials if r["status"] == "trial"), key=lambda r: r["metrics"]["mae"])
        assert tuned["params"] == {k: best["declared_params"][k] for k in tuned["params"]}
        # the first trial of a new study is the catalog's own parameters
        assert {k: trials[-1]["declared_params"][k] for k in ("learning_rate", "max_leaf_nodes", "max_iter")} == {
            "learning_rate": 0.1, "max_leaf_nodes": 31, "max_iter": 150}
        production_before = tracking.registry.production()
        # the sensor turns the finished study into one candidate run: the model, what is downstream, the release
        context = build_run_status_sensor_context(sensor_name=SENSOR_NAME, dagster_instance=instance,
                                                  dagster_run=run, dagster_event=result.get_run_success_event())
        request = candidate_for(demo_mesh, context.dagster_run)
        assert request.run_key == f"candidate-{run.run_id}"
        assert set(request.asset_selection) == {AssetKey(n.split("/")) for n in (
            "models/dep_delay", "models/arr_delay", "models/late_arrival", "scores/dep_delay", "scores/arr_delay",
            "scores/late_arrival", "consumers/ops_report", "releases/flights")}
        candidate = materialize_mesh(demo_mesh, instance, selection=request.asset_selection, tags=request.tags)
        assert candidate.success
        metadata = instance.get_latest_materialization_event(AssetKey(["models", "dep_delay"])).asset_materialization.metadata
        version = metadata["model_version"].value
        assert metadata["params_from_run"].value == {**demo_mesh.node("models/dep_delay").model.params, **tuned["params"]}
        record = tracking.registry.version("models/dep_delay", version)
        assert record["stage"] == "Staging" and record["recipe"]["params"] == metadata["params_from_run"].value
        assert tracking.registry.production() == production_before  # never straight to Production
        [trained] = tracking.query(node="models/dep_delay", status=["registered"], trigger="tune")
        assert trained["model_version"] == version and trained["study"] == tuned["study"]
        assert trained["metrics"]["mae"] == pytest.approx(tuned["value"], rel=1e-9)  # the trial, rebuilt as a version


def test_tune_on_the_command_line_studies_then_builds_a_candidate(tmp_path):
    home = tmp_path / "home"
    built = subprocess.run(depmesh_cli("run", "--catalog", str(CLINIC_CATALOG), "--home", str(home)),
                           capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stderr[-2000:]
    out = subprocess.run(depmesh_cli("tune", "models/progression", "--catalog", str(CLINIC_CATALOG), "--home",
                                     str(home), "--trials", "5"), capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stderr.count("trial ") >= 5 and "[catalog parameters]" in out.stderr  # progress, one line per trial
    assert "candidate passed every gate: release 2 (Staging)" in out.stdout
    assert "put them in the catalog's model.params" in out.stdout
    tracking = Tracking(Registry(default_url(home), mesh="clinic"))
    trials = tracking.query(status=["trial"])
    assert len(trials) == 5 and len({r["declared_params"]["alpha"] for r in trials}) == 5
    best = min(trials, key=lambda r: r["metrics"]["mae"])
    [candidate] = tracking.query(node="models/progression", trigger="tune", status=["registered"])
    assert candidate["declared_params"] == best["declared_params"]
    # unknown or untunable models are refused before anything runs
    for model, words in (("models/nope", "no node named 'models/nope'"),
                         ("models/high_risk", "models/high_risk declares no search space")):
        bad = subprocess.run(depmesh_cli("tune", model, "--catalog", str(CLINIC_CATALOG), "--home", str(home)),
                             capture_output=True, text=True, timeout=600)
        assert bad.returncode == 2 and words in bad.stderr, bad.stderr


def test_workers_tuning_one_model_share_one_study_on_postgresql(postgres_server_url, tmp_path):
    with fresh_database(postgres_server_url) as url:
        env = team_env(tmp_path / "home", url)
        built = subprocess.run(depmesh_cli("run", "--catalog", str(CLINIC_CATALOG)), capture_output=True, text=True,
                               env=env, timeout=600)
        assert built.returncode == 0, built.stderr[-2000:]
        command = depmesh_cli("tune", "models/progression", "--catalog", str(CLINIC_CATALOG), "--trials", "10",
                              "--no-candidate")
        workers = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
                   for _ in range(2)]
        outputs = [w.communicate(timeout=600) for w in workers]
        for worker, (stdout, stderr) in zip(workers, outputs):
            assert worker.returncode == 0, stderr[-2000:]
        studies = {line.split("study ")[1].split(":")[0:3].__str__() for stdout, _ in outputs
                   for line in stdout.splitlines() if line.startswith("study ")}
        assert len(studies) == 1  # both workers answered from the same study
        tracking = Tracking(Registry(url, mesh="clinic"))
        [study] = {r["study"] for r in tracking.query(trigger="tune")}
        states = _optuna_states(url, study)
        rows = tracking.query(study=study)
        assert sorted(r["trial"] for r in rows) == sorted(states)  # each trial tracked once, numbers unique
        assert 10 <= len(states) <= 11  # the study stops at 10 finished trials (one may be in flight then)
        assert all(sum(f"trial {n}:" in stderr for _, stderr in outputs) == 1 for n in states)  # each run once
        # (how the trials split between the two depends on which process started first: not asserted)
        # a later worker continues the same study from the database: only the trials still missing
        more = subprocess.run(depmesh_cli("tune", "models/progression", "--catalog", str(CLINIC_CATALOG), "--trials",
                                          "14", "--no-candidate"), capture_output=True, text=True, env=env, timeout=600)
        assert more.returncode == 0, more.stderr[-2000:]
        assert f"study {study}:" in more.stdout
        after = _optuna_states(url, study)
        assert len(after) == 14 and set(states) < set(after)
        assert all(f"trial {n}:" in more.stderr for n in set(after) - set(states))
        assert not any(f"trial {n}:" in more.stderr for n in states)


def test_no_candidate_when_the_catalog_parameters_win(demo_mesh):
    from dagster import DagsterRun, SkipReason

    from depmesh.tuning.jobs import candidate_for

    tags = {"depmesh/tuned_node": "models/dep_delay", "depmesh/tuned_params": json.dumps(
        {"study": "s", "trial": 0, "params": {"max_iter": 150}, "value": 11.4, "baseline": True})}
    assert isinstance(candidate_for(demo_mesh, DagsterRun(job_name="tune__models__dep_delay", run_id="r1", tags=tags)),
                      SkipReason)
    tags["depmesh/tuned_params"] = tags["depmesh/tuned_params"].replace("true", "false")
    request = candidate_for(demo_mesh, DagsterRun(job_name="tune__models__dep_delay", run_id="r1", tags=tags))
    assert json.loads(request.tags["depmesh/params"]) == {"models/dep_delay": {"max_iter": 150}}

"""One Dagster job per tunable model (``tune__models__x``), and the sensor that
turns a finished study into a candidate run through the same contracts and
gates as any other run."""


import json

from dagster import (
    Config,
    DagsterRunStatus,
    DefaultSensorStatus,
    OpExecutionContext,
    RunRequest,
    SkipReason,
    job,
    op,
    run_status_sensor,
)

from depmesh.catalog import MeshSpec
from depmesh.keys import IO_MANAGER_KEY, REGISTRY_KEY, RUNTIME_KEY
from depmesh.tuning.study import TUNED_NODE_TAG, TUNED_PARAMS_TAG, tunable

SENSOR_NAME = "tuned_candidates"
CANDIDATE_OF_TAG = "depmesh/candidate_of_run"


def tune_job_name(node: str) -> str:
    return "tune__" + node.replace("/", "__")


class TuneConfig(Config):
    trials: int = 0  # 0: the catalog's model.tune.trials
    timeout_s: float = 0.0  # 0: the catalog's model.tune.timeout


def build_tune_job(mesh: MeshSpec, node_name: str):
    name = tune_job_name(node_name)

    @op(name=f"{name}_study", required_resource_keys={REGISTRY_KEY, IO_MANAGER_KEY, RUNTIME_KEY},
        description=f"Run the hyperparameter study of {node_name} (its catalog model.tune) on its current inputs; "
                    "every trial is a tracked training. The best parameters then go through a candidate run "
                    f"(sensor {SENSOR_NAME}): contracts, gates, and at best a release in Staging.")
    def study_op(context: OpExecutionContext, config: TuneConfig) -> None:
        from depmesh.tuning.study import run_study

        store = getattr(context.resources, IO_MANAGER_KEY)
        result = run_study(mesh, node_name, context.instance, getattr(context.resources, REGISTRY_KEY).registry,
                           store.base, trials=config.trials or None, timeout_s=config.timeout_s or None,
                           sample_fraction=getattr(context.resources, RUNTIME_KEY).sample_fraction,
                           progress=context.log.info)
        context.log.info(result.summary())
        context.instance.add_run_tags(context.run.run_id, {
            TUNED_NODE_TAG: node_name, TUNED_PARAMS_TAG: json.dumps(
                {"study": result.study, "trial": result.best_trial, "params": result.best_params,
                 "value": result.best_value, "baseline": result.best_is_baseline}, sort_keys=True)})

    @job(name=name, tags={"depmesh/mesh": mesh.name, "depmesh/kind": "tuning"},
         description=f"Hyperparameter search for {node_name}; the best trial becomes a candidate run, never Production.")
    def tune_job() -> None:
        study_op()

    return tune_job


def build_tune_jobs(mesh: MeshSpec) -> list:
    return [build_tune_job(mesh, node.name) for node in tunable(mesh)]


def build_candidate_sensor(mesh: MeshSpec, jobs: list, mesh_job):
    @run_status_sensor(name=SENSOR_NAME, run_status=DagsterRunStatus.SUCCESS, monitored_jobs=jobs,
                       request_job=mesh_job, default_status=DefaultSensorStatus.RUNNING,
                       description="When a tuning job finishes, request the candidate run of its best parameters: the "
                                   "model, everything downstream and the release, through every contract and gate.")
    def tuned_candidates(context):
        return candidate_for(mesh, context.dagster_run)

    return tuned_candidates


def candidate_for(mesh: MeshSpec, run) -> RunRequest | SkipReason:
    """The candidate run request for a finished tuning run (from the tags its study left)."""
    from depmesh.tuning.study import candidate_request

    raw = run.tags.get(TUNED_PARAMS_TAG)
    node = run.tags.get(TUNED_NODE_TAG)
    if not raw or not node:
        return SkipReason(f"run {run.run_id} left no tuned parameters")
    found = json.loads(raw)
    if found.get("baseline"):
        return SkipReason(f"run {run.run_id}: the catalog's own parameters of {node} are still the best; no candidate")
    selection, tags = candidate_request(mesh, node, found["params"], found["study"], found["trial"])
    from dagster import AssetKey

    return RunRequest(run_key=f"candidate-{run.run_id}", asset_selection=[AssetKey.from_user_string(s) for s in selection],
                      tags={**tags, CANDIDATE_OF_TAG: run.run_id})

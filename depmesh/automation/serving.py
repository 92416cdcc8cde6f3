"""The ``serve_production`` sensor: what the registry says serves is what the scores hold.

Every evaluation compares each scores node's latest materialization with the
registry (depmesh.rollout.production.stale_scores). When a promotion, a
rollback, a canary step or a canary's end changed what a node serves, it
requests one run of the stale scores and the consumers below them (no model is
retrained). The run key is the registry's revision and the stale set, so a
second evaluation requests nothing new; a failed re-score is retried by the
daemon's run retries and then shown on the tick until someone acts.
"""

from __future__ import annotations

from dagster import (
    AssetSelection,
    DagsterRunStatus,
    DefaultSensorStatus,
    RunRequest,
    RunsFilter,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from depmesh.assets import asset_key
from depmesh.assets.io import recorded_metadata
from depmesh.assets.serving import serving_key
from depmesh.automation.routing import instance_registry
from depmesh.automation.sensors import IN_FLIGHT
from depmesh.catalog import MeshSpec
from depmesh.keys import RESCORE_TAG, REVISION_TAG, SERVING_REVISION_KEY, TRIGGER_TAG
from depmesh.rollout.production import rescore_key, selection

SERVING_SENSOR = "serve_production"
RETRIES_TAG = "dagster/max_retries"  # the daemon retries a failed re-score (run_retries enabled in dagster.yaml)
RESCORE_RETRIES = 2


def evaluate(context: SensorEvaluationContext, mesh: MeshSpec) -> SensorResult | SkipReason:
    from depmesh.rollout.production import stale_scores

    if mesh.serving.mode == "latest":
        return SkipReason(f"mesh {mesh.name} serves what each run trains (serving: latest): nothing to re-score")
    instance = context.instance
    registry = instance_registry(mesh, instance)
    try:
        stale = stale_scores(instance, registry, mesh)
        revision = registry.state()["revision"]
    finally:
        registry.dispose()
    page = serving_key(mesh)
    if not stale:
        shown = recorded_metadata(instance, page.path) or {}
        if shown.get(SERVING_REVISION_KEY) == revision or not instance.get_latest_materialization_event(
                asset_key(next(n.name for n in mesh.nodes if n.kind == "scores"))):
            return SkipReason(f"every scores node serves what the registry says (revision {revision})")
        # a stage change that serves nothing new (a release recorded, a request approved): the page alone
        return SensorResult(run_requests=[RunRequest(
            run_key=f"serving-page:{mesh.name}:{revision}", asset_selection=[page],
            tags={TRIGGER_TAG: f"sensor:{SERVING_SENSOR}", REVISION_TAG: str(revision)})])
    key = rescore_key(mesh, revision, stale)
    earlier = instance.get_run_records(RunsFilter(tags={RESCORE_TAG: key}), limit=1)
    if earlier:
        run = earlier[0].dagster_run
        if run.status == DagsterRunStatus.FAILURE:
            return SkipReason(f"the re-score of {', '.join(sorted(stale))} (run {run.run_id}) failed after its "
                              "retries: see that run; `depmesh serving rescore` tries again")
        return SkipReason(f"already requested: run {run.run_id} ({run.status.value}) re-scores "
                          f"{', '.join(sorted(stale))}")
    chosen = selection(mesh, stale)
    touched = {asset_key(n) for n in chosen} | {page}
    for record in instance.get_run_records(RunsFilter(statuses=IN_FLIGHT)):
        run = record.dagster_run
        if run.asset_selection is None or run.asset_selection & touched:
            return SkipReason(f"held back: run {run.run_id} ({run.status.value}) is building some of "
                              f"{', '.join(chosen)}; if it leaves them behind the registry, a re-score is requested after it ends")
    why = "; ".join(f"{n}: {w}" for n, w in sorted(stale.items()))
    context.log.info(f"requesting a re-score of {', '.join(chosen)} ({why})")
    return SensorResult(run_requests=[RunRequest(
        run_key=key, asset_selection=[asset_key(n) for n in chosen] + [page],
        tags={TRIGGER_TAG: f"sensor:{SERVING_SENSOR}", RESCORE_TAG: key, REVISION_TAG: str(revision),
              RETRIES_TAG: str(RESCORE_RETRIES)})])


def build_serving_sensor(mesh: MeshSpec):
    @sensor(
        name=SERVING_SENSOR,
        target=AssetSelection.all(),
        minimum_interval_seconds=15,
        default_status=DefaultSensorStatus.RUNNING,
        description=("When the registry changes what serves (a promotion, a rollback, a canary step or end), "
                     "re-score the scores nodes whose served versions changed and the consumers below them, with "
                     "no retraining. One run per registry revision; failed runs are retried by the daemon."),
    )
    def serve_production(context: SensorEvaluationContext):
        return evaluate(context, mesh)

    return serve_production

"""The coordinated-retraining sensor.

When an upstream model materializes a new version, one run rebuilds
everything downstream of it (the models trained on it, their scores, their
consumers) in dependency order, with every contract and gate on the way.

Detection is state-based, not event-based: a model change is *pending* while
some direct dependent's latest materialization was built from an older
version of it (Dagster records each input's data version in the
materialization's provenance). So a restarted daemon, a lost cursor or a
second evaluation sees exactly the same pending set, and a retrain that
produced the same version leaves nothing pending.

Idempotency: each change is recorded in the run's tags
(``depmesh/change.<model> = <version>``); a change that already has a run is
never requested again (the run key is the change set as well, so the
daemon's own run-key dedup agrees). Several changes seen in one tick are
coalesced into one run over the union. A change whose rebuild overlaps a run
still in flight is held back until that run finishes.
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
from dagster._core.definitions.data_version import (
    DATA_VERSION_TAG,
    extract_data_provenance_from_entry,
)

from depmesh import graph
from depmesh.assets import asset_key
from depmesh.assets.release import release_key
from depmesh.automation.changes import (
    change_key,
    change_tag,
    coordinated_selection,
    pending_changes,
)
from depmesh.catalog import MeshSpec
from depmesh.keys import TRIGGER_TAG

SENSOR_NAME = "coordinated_retraining"
COORDINATED_TAG = "depmesh/coordinated"
IN_FLIGHT = [
    DagsterRunStatus.QUEUED, DagsterRunStatus.NOT_STARTED, DagsterRunStatus.STARTING,
    DagsterRunStatus.STARTED, DagsterRunStatus.CANCELING,
]


def read_versions(instance, names: list[str]) -> tuple[dict[str, str | None], dict[str, dict[str, str]]]:
    """Each node's current data version, and the input versions it was built from."""
    events = instance.get_latest_materialization_events([asset_key(n) for n in names])
    current: dict[str, str | None] = {}
    consumed: dict[str, dict[str, str]] = {}
    for name in names:
        entry = events.get(asset_key(name))
        if entry is None or entry.asset_materialization is None:
            current[name] = None
            continue
        tags = entry.asset_materialization.tags or {}
        current[name] = tags.get(DATA_VERSION_TAG)
        provenance = extract_data_provenance_from_entry(entry)
        if provenance is not None:
            consumed[name] = {"/".join(k.path): v.value for k, v in provenance.input_data_versions.items()}
    return current, consumed


def evaluate(context: SensorEvaluationContext, mesh: MeshSpec) -> SensorResult | SkipReason:
    inputs = mesh.inputs_map()
    models = [n.name for n in mesh.nodes if n.kind == "model"]
    children = graph.children_of(inputs)
    watched = sorted(set(models) | {c for m in models for c in children.get(m, ())})
    instance = context.instance
    current, consumed = read_versions(instance, watched)
    pending = pending_changes(models, inputs, current, consumed)
    if not pending:
        return SkipReason("no new model version is waiting to be propagated")
    launched = {}
    for model, version in pending.items():
        runs = instance.get_run_records(RunsFilter(tags={change_tag(model): version}), limit=1)
        if runs:
            launched[model] = runs[0].dagster_run.run_id
    new = {m: v for m, v in pending.items() if m not in launched}
    if not new:
        return SkipReason("already launched: " + ", ".join(f"{m}@{pending[m]} in run {r}" for m, r in launched.items()))
    selection = coordinated_selection(inputs, new)
    touched = {asset_key(n) for n in [*selection, *new]}
    release = [release_key(mesh)] if any(mesh.node(n).kind == "model" for n in [*selection, *new]) else []
    for record in instance.get_run_records(RunsFilter(statuses=IN_FLIGHT)):
        run = record.dagster_run
        if run.asset_selection is None or run.asset_selection & touched:
            return SkipReason(
                f"held back: run {run.run_id} ({run.status.value}) is rebuilding part of "
                f"{', '.join(sorted(new))}'s dependents; if that run leaves them behind, one is requested after it ends"
            )
    trigger = ", ".join(f"{m}@{v}" for m, v in sorted(new.items()))
    tags = {COORDINATED_TAG: "true", TRIGGER_TAG: trigger, **{change_tag(m): v for m, v in new.items()}}
    assets = [asset_key(n) for n in selection] + release
    context.log.info(f"requesting one run of {len(assets)} assets for {trigger}")
    return SensorResult(run_requests=[RunRequest(run_key=change_key(new), asset_selection=assets, tags=tags)])


def build_retrain_sensor(mesh: MeshSpec):
    @sensor(
        name=SENSOR_NAME,
        target=AssetSelection.all(),
        minimum_interval_seconds=30,
        default_status=DefaultSensorStatus.RUNNING,
        description=(
            "When a model gets a new version, launch ONE run that rebuilds everything downstream of it "
            "(dependent models, scores, consumers) in order. Idempotent per model version; changes seen "
            "together are coalesced; held back while an overlapping run is in flight."
        ),
    )
    def coordinated_retraining(context: SensorEvaluationContext):
        return evaluate(context, mesh)

    return coordinated_retraining

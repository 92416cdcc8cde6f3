"""Running a node's step: its inputs, the builder or trainer, the table or model it returns with its version and metadata, the run's trigger and parameters."""

from __future__ import annotations

import warnings
from typing import Any

from dagster import (
    AssetCheckResult,
    AssetExecutionContext,
    AssetKey,
    BetaWarning,
    ConfigurableResource,
    DataVersion,
    MetadataValue,
    Output,
)

from depmesh.assets.declare import asset_key
from depmesh.catalog import NodeSpec
from depmesh.contracts.checks import (
    PROFILE_KEY,
    SCHEMA_KEY,
    contract_results,
    run_contract,
    schema_change_result,
    schema_of,
)
from depmesh.keys import (
    IO_MANAGER_KEY,
    OUTPUT,
    PARAMS_TAG,
    REGISTRY_KEY,
    STUDY_TAG,
    TRIAL_TAG,
    TRIGGER_TAG,
)
from depmesh.tracking.capture import library_versions
from depmesh.versions import frame_version, model_version

# Every training step takes a slot of this Dagster concurrency pool: the team
# dagster.yaml caps it (concurrency.pools.default_limit) so that no more than N
# models train at once across all runs, while feature and scoring steps go on.
LATENCY_P95_KEY = "latency/single_p95_ms"  # a model's metadata: the single-row p95 its latency gate measured


class MeshRuntime(ConfigurableResource):
    """Run-wide settings every node builder sees.

    ``sample_fraction`` < 1 makes source loaders that support it keep a
    deterministic slice of their rows (tests and quick runs); 1 is the full data.
    """

    sample_fraction: float = 1.0
    as_of: str = ""  # ISO time that record freshness is measured against; empty = now

    def now(self) -> Any:
        import pandas as pd

        return pd.Timestamp(self.as_of, tz="UTC") if self.as_of else pd.Timestamp.now(tz="UTC")


class NodeContext:
    """What a compute function or trainer is handed besides its inputs:
    ``node`` (its NodeSpec: name, params, model spec, contract), ``params``,
    ``sample_fraction`` (a loader keeps that share of its rows: 1 is all),
    ``log`` (Dagster's logger) and ``evaluation``, where a trainer may leave
    (evaluation frame, labels) for the deployment gates. depmesh notes whether
    a loader read ``sample_fraction``: one that ignores a sample is said so."""

    def __init__(self, node: NodeSpec, sample_fraction: float, log: Any, evaluation: Any = None, trial: Any = None):
        self.node, self._sample_fraction, self.log, self.evaluation = node, sample_fraction, log, evaluation
        self.sample_read = False
        self.curves: Any = None  # the training curves ctx.fit recorded
        self.trial = trial  # a tuning trial (depmesh.tuning) that is told intermediate values and may prune

    def fit(self, estimator: Any, X: Any, y: Any, evaluation: tuple[Any, Any] | None = None) -> Any:
        """Fit ``estimator`` on (X, y) and record its training curves: per
        iteration, the loss on the training rows and on ``evaluation``
        (prepared features, labels) for estimators that predict stage by
        stage, else what the fit exposes. Inside a tuning trial with a pruner,
        an iterative estimator is fitted in steps and the trial may stop it
        early (optuna.TrialPruned)."""
        from depmesh.tracking.capture import staged_curves

        if self.trial is not None:
            self.trial.fit(estimator, X, y, evaluation)
        else:
            estimator.fit(X, y)
        self.curves = staged_curves(estimator, (X, y), evaluation)
        return estimator

    @property
    def sample_fraction(self) -> float:
        self.sample_read = True
        return self._sample_fraction

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.node.params)


def versioned_output(value: Any, version: str, metadata: dict[str, Any]) -> Output:
    """Output carrying its content version as Dagster's DataVersion. The
    parameter is marked beta; a warning per materialization would drown the log."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BetaWarning)
        return Output(value, output_name=OUTPUT, data_version=DataVersion(version), metadata=metadata)


def input_version(value: Any) -> str:
    from depmesh.models import TrainedModel

    return value.version if isinstance(value, TrainedModel) else frame_version(value)


def _table_output(df: Any, node: NodeSpec, seconds: float, extra: dict[str, Any]) -> Output:
    version = frame_version(df)
    metadata: dict[str, Any] = {
        **extra,
        SCHEMA_KEY: MetadataValue.json(schema_of(df)),
        "dagster/row_count": len(df),
        "columns": len(df.columns),
        "data_version": version,
        "seconds": round(seconds, 3),
        "preview": MetadataValue.md(df.head(5).to_markdown(index=False)),
    }
    return versioned_output(df, version, metadata)


def _model_metadata(model: Any, node: NodeSpec, inputs: dict[str, Any], code: str, seconds: float) -> dict[str, Any]:
    """Sets the model's version (a hash of what made it) and returns its materialization metadata."""
    spec = node.model
    input_versions = {name: input_version(value) for name, value in sorted(inputs.items())}
    model.version = model_version(input_versions, code, spec.params, spec.seed)
    metadata: dict[str, Any] = {
        "model_version": model.version,
        "task": model.task,
        "rows_trained": model.rows_trained,
        "params": MetadataValue.json(dict(spec.params)),
        "seed": spec.seed,
        "target": spec.target or "",
        "features": MetadataValue.json(list(model.features)),
        "input_data_versions": MetadataValue.json(input_versions),
        "trained_against": MetadataValue.json(model.lineage()),
        "library_versions": MetadataValue.json(library_versions()),
        "evaluation_window": spec.split.describe(),
        "seconds": round(seconds, 3),
    }
    for metric, value in model.metrics.items():
        metadata[f"metric/{metric}"] = float(value)
    return metadata


def _requirements(node: NodeSpec, packed: Any, recorder: Any, recipe: dict[str, Any]) -> dict[str, Any] | None:
    """What the version needs to load and predict, resolved against the lock its recipe recorded."""
    from depmesh.deps.needs import lock_from_pylock, lock_from_text, requirements

    lock = recipe.get("lock") or {}
    uv_lock = lock.get("name") == "uv.lock"
    digest = lock.get("sha256") if uv_lock else (recipe.get("environment") or {}).get("sha256")
    if digest and digest not in _LOCKS:
        payload = recorder.tracking.blob(digest)
        text = payload.decode("utf-8") if payload else ""
        _LOCKS[digest] = (lock_from_text(text) if uv_lock else lock_from_pylock(text)) if text else {}
    return requirements(node.model.trainer, packed.payload, _LOCKS.get(digest, {}) if digest else {})


_LOCKS: dict[str, Any] = {}  # a lock's sha256 -> its parsed packages (read once per process)


def _gate_latencies(context: AssetExecutionContext, node: NodeSpec, inputs: dict[str, Any]) -> dict[str, float]:
    """For each upstream model with a latency budget on this edge: the p95 its
    own latency gate measured, when the stored materialization is the very
    version loaded (so one model is timed once per version, not once per consumer)."""
    from depmesh.models import TrainedModel

    found: dict[str, float] = {}
    for name, edge in node.edges.items():
        value = inputs.get(name)
        if edge.latency_p95_ms is None or not isinstance(value, TrainedModel):
            continue
        metadata = _previous_metadata(context, asset_key(name)) or {}
        if metadata.get("model_version") == value.version and LATENCY_P95_KEY in metadata:
            found[name] = float(metadata[LATENCY_P95_KEY])
    return found


def _previous_metadata(context: AssetExecutionContext, key: AssetKey) -> dict[str, Any] | None:
    event = context.instance.get_latest_materialization_event(key)
    if event is None or event.asset_materialization is None:
        return None
    return {k: v.value for k, v in event.asset_materialization.metadata.items()}


def _check_table(context: AssetExecutionContext, node: NodeSpec, df: Any,
                 runtime: "MeshRuntime") -> tuple[list[AssetCheckResult], dict[str, Any] | None]:
    """The table's check results, and the extra metadata to store it with, or
    None when a blocking contract failed and it must not be stored."""
    import pandas as pd

    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"node {node.name}: {node.compute} returned {type(df).__name__}, expected a pandas DataFrame")
    previous = _previous_metadata(context, asset_key(node.name))
    extra: dict[str, Any] = {}
    results: list[AssetCheckResult] = []
    passed = True
    if node.contract is not None:
        report, prof = run_contract(node, df, previous, runtime.now())
        results.extend(contract_results(node, report))
        extra[PROFILE_KEY] = MetadataValue.json(prof)
        if not report.passed("ERROR"):
            passed = False
        for outcome in report.failed("WARN"):
            context.log.warning(f"depmesh: {node.name} contract warning {outcome.id}: {outcome.description}")
    results.append(schema_change_result(df, previous))
    return results, (extra if passed else None)


def trigger_of(tags: dict[str, str]) -> str:
    """What started a run, from its tags: its depmesh/trigger tag if it has one."""
    if TRIGGER_TAG in tags:
        return tags[TRIGGER_TAG]
    if "dagster/schedule_name" in tags:
        return f"schedule:{tags['dagster/schedule_name']}"
    if "dagster/sensor_name" in tags:
        return f"sensor:{tags['dagster/sensor_name']}"
    if "dagster/backfill" in tags:
        return "backfill"
    return "ui"  # launched through the webserver (the UI or its GraphQL API)


_triggers_tagged: set[str] = set()  # runs this process already tagged (once per run, not once per step)


def _tag_trigger(context: AssetExecutionContext) -> str:
    """Runs started by `depmesh run` and the sensor carry their trigger tag
    already; a run launched from the UI, a schedule or a backfill gets one
    here, at its first step, so the run list says who or what started it.
    Returns the trigger."""
    tags = context.run.tags  # as the run started: a tag added by an earlier step is not in it
    trigger = trigger_of(tags)
    if TRIGGER_TAG in tags or context.run.run_id in _triggers_tagged:
        return trigger
    context.instance.add_run_tags(context.run.run_id, {TRIGGER_TAG: trigger})
    _triggers_tagged.add(context.run.run_id)
    return trigger


def with_run_params(node: NodeSpec, tags: dict[str, str]) -> NodeSpec:
    """The node with the parameters a run's depmesh/params tag sets for it
    merged over the catalog's (a tuning candidate's run); else the node."""
    import dataclasses
    import json

    raw = tags.get(PARAMS_TAG)
    if not raw or node.model is None:
        return node
    try:
        overrides = json.loads(raw)
    except ValueError as exc:
        raise ValueError(f"the run's {PARAMS_TAG} tag is not JSON ({exc}): {raw[:200]!r}") from None
    mine = overrides.get(node.name) if isinstance(overrides, dict) else None
    if mine is None:
        return node
    if not isinstance(mine, dict):
        raise ValueError(f"the run's {PARAMS_TAG} tag gives {node.name} {mine!r}, expected a mapping of parameters")
    model = dataclasses.replace(node.model, params={**dict(node.model.params), **mine})
    return dataclasses.replace(node, model=model)


class MissingInputColumn(KeyError):
    """A builder read a column its input does not have."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0])


def _missing_column(node: NodeSpec, inputs: dict[str, Any], exc: KeyError) -> MissingInputColumn | None:
    """The KeyError a builder raised, read as a column missing from an input:
    named with the node, the column, the input and the edge contract to extend."""
    import re

    import pandas as pd

    text = str(exc.args[0]) if exc.args else ""
    wanted = re.findall(r"'([^']+)'", text) or ([text] if text else [])
    frames = {name: value for name, value in inputs.items() if isinstance(value, pd.DataFrame)}
    for column in wanted:
        lacking = [name for name, frame in frames.items() if column not in frame.columns]
        if lacking:
            where = lacking[0] if len(lacking) == 1 else " or ".join(lacking)
            declared = [name for name in lacking if column in (node.edges.get(name).columns if node.edges.get(name)
                                                               else ())]
            hint = (f"its edge contract on {declared[0]} lists {column!r}, so the input contract should have caught "
                    "this: check that the input was rebuilt" if declared else
                    f"add {column!r} to the edge contract (inputs: - {{node: {lacking[0]}, columns: [..., {column}]}})"
                    " so that a change upstream that drops it is caught where it happens")
            return MissingInputColumn(f"node {node.name}: its builder reads column {column!r}, which {where} does "
                                      f"not have (it was dropped or renamed upstream); {hint}")
    return None


def _refuse_empty_inputs(node: NodeSpec, inputs: dict[str, Any]) -> None:
    from depmesh.models import EmptyTrainingData

    empty = sorted(name for name, value in inputs.items() if getattr(value, "shape", (1,))[0] == 0)
    if empty:
        raise EmptyTrainingData(
            f"model {node.name}: input {', '.join(empty)} has no rows, so there is nothing to train or evaluate on "
            f"(give {' and '.join(empty)} a row_count contract so an empty table is stopped where it is made)")


def _recorder(context: AssetExecutionContext, node: NodeSpec, code: str, trigger: str,
              catalog_path: Any) -> Any:
    from depmesh.assets.io import MeshStore, data_root
    from depmesh.tracking.recorder import TrainingRecorder

    store = getattr(context.resources, IO_MANAGER_KEY, None)
    storage = store.base if isinstance(store, MeshStore) else data_root(context.instance)
    tags = {k: v for k, v in context.run.tags.items() if not k.startswith("dagster/") or k in (
        "dagster/schedule_name", "dagster/sensor_name", "dagster/backfill")}
    study, trial = tags.get(STUDY_TAG), tags.get(TRIAL_TAG)
    return TrainingRecorder(registry=getattr(context.resources, REGISTRY_KEY).registry, node=node,
                            run_id=context.run.run_id, trigger=trigger, tags=tags, storage=storage,
                            catalog_path=catalog_path, code=code, study=study,
                            trial=int(trial) if trial and trial.isdigit() else None)


def _record_failure(context: AssetExecutionContext, recorder: Any, exc: BaseException) -> None:
    """Track a training that raised; a tracking error never hides the training's own."""
    try:
        recorder.record("failed", error=exc)
    except Exception as tracking_error:  # noqa: BLE001
        context.log.warning(f"depmesh: the failed training of {recorder.node.name} could not be tracked: "
                            f"{type(tracking_error).__name__}: {tracking_error}")

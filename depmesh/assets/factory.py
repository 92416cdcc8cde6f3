"""The factory: mesh spec -> Dagster software-defined assets.

One function builds every node's asset from its spec; nothing is written per
node by hand. The asset graph's edges are exactly the catalog's inputs.
"""


import contextlib
import inspect
import logging
import os
import signal
import threading
import time
import warnings
from datetime import timedelta
from typing import Any

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetExecutionContext,
    AssetIn,
    AssetKey,
    AssetOut,
    AssetsDefinition,
    BetaWarning,
    ConfigurableResource,
    DataVersion,
    FreshnessPolicy,
    MetadataValue,
    Output,
    RetryRequested,
    TableColumn,
    TableColumnConstraints,
    TableSchema,
    multi_asset,
)

from depmesh.catalog import MeshSpec, NodeSpec, resolve_entrypoint
from depmesh.catalog.spec import ServingSpec
from depmesh.contracts.checks import (
    PROFILE_KEY,
    SCHEMA_KEY,
    blocking_check_names,
    check_specs,
    contract_results,
    input_contract_result,
    run_contract,
    schema_change_result,
    schema_of,
)
from depmesh.keys import (
    BLOCKED_TAG,
    BLOCKING_KEY,
    DRILL_FAULT_TAG,
    IO_MANAGER_KEY,
    JUDGED_KEY,
    NOT_RUN_KEY,
    OUTPUT,
    PARAMS_TAG,
    REGISTRY_KEY,
    RUNTIME_KEY,
    SAMPLE_IGNORED_KEY,
    SERVED_BY_KEY,
    SERVED_CHECK,
    SERVING_KEY,
    SIGNATURE_KEY,
    STORED_KEY,
    TRAINING_KEY,
    TRAINING_POOL,
    TRIGGER_TAG,
)
from depmesh.kinds import NODE_KINDS
from depmesh.tracking.capture import library_versions  # noqa: F401 - kept under its old name here
from depmesh.versions import code_version, frame_version, model_version

# Every training step takes a slot of this Dagster concurrency pool: the team
# dagster.yaml caps it (concurrency.pools.default_limit) so that no more than N
# models train at once across all runs, while feature and scoring steps go on.
LATENCY_P95_KEY = "latency/single_p95_ms"  # a model's metadata: the single-row p95 its latency gate measured
KINDS_TAG = {name: kind.dagster_kind for name, kind in NODE_KINDS.items()}


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


def asset_key(name: str) -> AssetKey:
    return AssetKey(name.split("/"))


def argument_name(name: str) -> str:
    return name.replace("/", "__")


def node_code_version(node: NodeSpec) -> str:
    settings: dict[str, Any] = {"params": dict(node.params)}
    if node.model:
        m = node.model
        settings.update(target=m.target, params=dict(m.params), seed=m.seed, split=m.split.__dict__)
    return code_version(node.entrypoint, settings)


def column_schema(node: NodeSpec) -> TableSchema | None:
    if not node.contract or not node.contract.columns:
        return None
    columns = []
    for col in node.contract.columns:
        other = []
        if col.min is not None or col.max is not None:
            other.append(f"range [{col.min if col.min is not None else '-inf'}, {col.max if col.max is not None else 'inf'}]")
        if col.allowed is not None:
            other.append("one of " + ", ".join(map(str, col.allowed)))
        if col.max_null_fraction is not None:
            other.append(f"at most {col.max_null_fraction:.2%} nulls")
        if col.severity == "WARN":
            other.append("WARN: these rules warn, they do not block")
        columns.append(
            TableColumn(
                name=col.name,
                type=col.dtype,
                description=col.description or None,
                constraints=TableColumnConstraints(nullable=col.nullable, unique=col.unique, other=other),
            )
        )
    return TableSchema(columns=columns)




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


def gate_results(gates: list[Any]) -> list[AssetCheckResult]:
    """GateResults as Dagster check results, their figures as metadata."""
    results = []
    for gate in gates:
        metadata: dict[str, Any] = {}
        for key, value in gate.figures.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                metadata[key] = float(value)
            elif isinstance(value, str):
                metadata[key] = value
            else:
                metadata[key] = MetadataValue.json(value)
        results.append(AssetCheckResult(check_name=gate.name, passed=gate.passed, severity=AssetCheckSeverity.ERROR,
                                        description=gate.summary, metadata=metadata))
    return results


def _gate_and_register(context: AssetExecutionContext, node: NodeSpec, model: Any, inputs: dict[str, Any],
                       code: str, seconds: float, ctx: "NodeContext", recorder: Any,
                       params_from_run: bool) -> tuple[list[AssetCheckResult], Output | None]:
    """The gate results, and (only if every gate passed) the model's output,
    after recording the version in the registry with its model card and
    recipe. Either way the training is tracked (registered or rejected).
    ``params_from_run``: the run's depmesh/params tag set this node's parameters."""
    from depmesh.artifacts import PackedModel
    from depmesh.gates.evaluate import LATENCY, evaluate_gates
    from depmesh.registry.cards import render_card
    from depmesh.tracking.plots import curves_markdown
    from depmesh.tracking.recorder import curves_for

    if node.model.metrics is not None:
        from depmesh.metrics import declared_metrics

        model.metrics = {**model.metrics, **declared_metrics(model, node.model.metrics, ctx.evaluation)}
        model.primary_metric = (node.model.metrics.primary, node.model.metrics.higher_is_better)
    metadata = _model_metadata(model, node, inputs, code, seconds)
    registry = getattr(context.resources, REGISTRY_KEY).registry
    gates = evaluate_gates(model, node.model.gates, ctx.evaluation, registry.production_metrics(node.name))
    results = gate_results(gates)
    input_versions = metadata["input_data_versions"].value
    curves = curves_for(model, ctx)
    if any(not g.passed for g in gates):
        recorder.record("rejected", model=model, metrics=model.metrics, input_versions=input_versions, curves=curves)
        return results, None
    latency = next((g.figures for g in gates if g.name == LATENCY and g.figures), None)
    if latency and "single_p95_ms" in latency:
        metadata[LATENCY_P95_KEY] = round(float(latency["single_p95_ms"]), 3)
    card = render_card(node, model, gates, input_versions)
    metadata["model_card"] = MetadataValue.md(card)
    # packed once: the registry records the hash of the very bytes the store writes
    packed = PackedModel.of(model, node.model.serializer, node.model.trusted_types)
    from depmesh.assets.io import recorded_metadata

    records = {name: recorded_metadata(context.instance, asset_key(name).path) for name in inputs}
    recipe = recorder.recipe(model, inputs, records, input_versions)
    needs = _requirements(node, packed, recorder, recipe)
    # registered before the output is stored: if the registry cannot be reached
    # nothing is materialized, and the step's retry starts clean (registration
    # is idempotent, so a retry after this point records nothing twice)
    registry.register(
        node=node.name, version=model.version, artifact_hash=packed.sha256,
        artifact_path=f"artifacts/{packed.sha256[:2]}/{packed.sha256}.model", metrics=model.metrics,
        gates={g.name: {"passed": g.passed, "summary": g.summary} for g in gates}, run_id=context.run.run_id,
        input_versions=input_versions, upstream_models=model.lineage(), code_version=code,
        library_versions=library_versions(), card=card, recipe=recipe, requirements=needs,
    )
    training = recorder.record("registered", model=model, metrics=model.metrics, input_versions=input_versions,
                               curves=curves)
    metadata[TRAINING_KEY] = training
    metadata["git_commit"] = recipe.get("commit") or ""
    if params_from_run:
        metadata["params_from_run"] = MetadataValue.json(dict(node.model.params))
    if curves is not None and curves.series:
        metadata["training_curves"] = MetadataValue.md(curves_markdown(curves, f"{node.name} {model.version}"))
    return results, versioned_output(packed, model.version, metadata)


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






def annotate_verdict(result: AssetCheckResult, judged: str | None, stored: bool, blocking: bool) -> AssetCheckResult:
    """The result with what it judged and whether that was stored, for the UI."""
    metadata = {**(result.metadata or {}), STORED_KEY: stored, BLOCKING_KEY: blocking}
    if judged:
        metadata[JUDGED_KEY] = judged
    description = result.description or ""
    if not stored:
        description = f"NOT STORED ({judged or 'nothing built'}): {description}"
    return AssetCheckResult(check_name=result.check_name, passed=result.passed, severity=result.severity,
                            metadata=metadata, description=description)


def tag_blocked(context: AssetExecutionContext, name: str, checks: list[str]) -> str:
    """Add '<name>: <check> failed, ...' to the run's depmesh/blocked tag (after
    what earlier steps of the run added); returns that text."""
    why = f"{name}: " + ", ".join(f"{check} failed" for check in checks)
    previous = context.instance.get_run_by_id(context.run.run_id).tags.get(BLOCKED_TAG)
    context.instance.add_run_tags(context.run.run_id, {BLOCKED_TAG: f"{previous}; {why}" if previous else why})
    return why


def _blocked(context: AssetExecutionContext, node: NodeSpec, failed: list[AssetCheckResult],
             downstream_of: Any) -> list[Any]:
    """A blocking verdict failed: the step succeeds without output, so Dagster
    skips everything downstream (shown as skipped, not failed, and never
    retried). Say so in the log, on the run (a tag) and on each node
    downstream in this run (an observation naming the blocking node and check)."""
    from dagster import AssetObservation

    why = tag_blocked(context, node.name, [r.check_name for r in failed])
    context.log.error(f"depmesh: {node.name} blocked, not stored, nothing downstream of it runs: "
                      + "; ".join(f"{r.check_name}: {r.description}" for r in failed))
    selected = context.run.asset_selection
    keys = [asset_key(name) for name in downstream_of(node.name)]
    keys = [k for k in keys if not selected or k in selected]  # no selection (or an empty one): the whole job
    last = context.instance.get_latest_materialization_events(keys) if keys else {}
    notes = []
    for key in keys:
        event = last.get(key)
        stored = "nothing stored yet"
        if event is not None and event.asset_materialization is not None:
            version = (event.asset_materialization.tags or {}).get("dagster/data_version", "?")
            stored = f"{version} from run {event.run_id}: it stays current, with its verdicts"
        notes.append(AssetObservation(asset_key=key, description=f"not run: blocked upstream by {why}", metadata={
            NOT_RUN_KEY: f"not run: blocked upstream by {why}", "depmesh/blocked_by": node.name,
            "depmesh/blocked_in_run": context.run.run_id, "depmesh/last_stored": stored}))
    return notes


DATABASE_RETRIES = 2
DATABASE_RETRY_WAIT_S = 5


class LostDatabaseConnection(RuntimeError):
    """The step's database connection dropped and was re-established while it ran."""


class _ConnectionRetries(logging.Handler):
    """Collects dagster-postgres' "Retrying failed database connection"
    warnings in this process: Dagster rides out a short database restart by
    reconnecting, and depmesh does not let that pass unseen."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.seen: list[str] = []
        self.reported = 0

    def emit(self, record: logging.LogRecord) -> None:
        if str(record.msg).startswith("Retrying failed database connection"):
            self.seen.append(record.getMessage().splitlines()[0][:300])


_watcher: _ConnectionRetries | None = None
_watcher_lock = threading.Lock()


def connection_watcher() -> _ConnectionRetries:
    global _watcher
    with _watcher_lock:
        if _watcher is None:
            _watcher = _ConnectionRetries()
            logging.getLogger().addHandler(_watcher)
        return _watcher


@contextlib.contextmanager
def retry_on_lost_database(context: AssetExecutionContext, name: str):
    """Around a step's body:
    - reconnections Dagster made since the last step (writing events between
      steps) are reported in the run as a warning: everything was stored, but
      the run says the database went away;
    - a step during which the connection dropped (the instance's or the
      registry's) stores nothing from that attempt and asks Dagster to run it
      again in a few seconds: a STEP_UP_FOR_RETRY event with the error;
    - any other error fails the step as it is.
    Yields a function to call before storing the output."""
    from depmesh.registry.store import is_transient_database_error

    watcher = connection_watcher()
    missed = watcher.seen[watcher.reported:]
    if missed:
        context.log.warning(f"depmesh: the database connection dropped before {name} and Dagster re-established it "
                            f"({len(missed)} reconnect attempt(s), first: {missed[0]}); every event was stored")
    watcher.reported = mark = len(watcher.seen)

    def guard() -> None:
        if len(watcher.seen) > mark:
            watcher.reported = len(watcher.seen)
            raise LostDatabaseConnection(f"{name}: the database connection dropped while the step ran "
                                         f"({watcher.seen[mark]}); nothing from this attempt is stored")

    try:
        yield guard
    except Exception as exc:
        if not is_transient_database_error(exc):
            raise
        context.log.warning(f"depmesh: {name} lost its database connection ({type(exc).__name__}: "
                            f"{str(exc).splitlines()[0][:200]}); Dagster retries the step in {DATABASE_RETRY_WAIT_S} s")
        raise RetryRequested(max_retries=DATABASE_RETRIES, seconds_to_wait=DATABASE_RETRY_WAIT_S) from exc


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




_triggers_tagged: set[str] = set()  # runs this process already tagged (once per run, not once per step)


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


def freshness_policy(node: NodeSpec) -> FreshnessPolicy | None:
    """A contract's bound on the age of the last materialization (freshness
    without a column) is Dagster's own freshness policy: the UI shows the
    asset fresh, warning or failing. An ERROR bound fails at max_age; a WARN
    bound warns at max_age and fails at twice it."""
    fr = node.contract.freshness if node.contract else None
    if fr is None or fr.column is not None:
        return None
    age = timedelta(hours=fr.max_age_hours)
    if fr.severity == "ERROR":
        return FreshnessPolicy.time_window(fail_window=age)
    return FreshnessPolicy.time_window(fail_window=2 * age, warn_window=age)


def _recorder(context: AssetExecutionContext, node: NodeSpec, code: str, trigger: str,
              catalog_path: Any) -> Any:
    from depmesh.assets.io import MeshStore, data_root
    from depmesh.keys import STUDY_TAG, TRIAL_TAG
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


def check_text(result: AssetCheckResult) -> str:
    """What a failed check said, for a failure mode's match: its description and its failing rules."""
    failures = (result.metadata or {}).get("failures")
    return "\n".join(filter(None, [result.description or "", getattr(failures, "value", None) or ""]))


def with_failure_modes(result: AssetCheckResult, catalogue: Any, node: str) -> AssetCheckResult:
    """A failed check's result, with the failure modes it may mean (the mesh's
    failure-mode catalogue: owner, mitigation, runbook) in its metadata."""
    if result.passed or catalogue is None:
        return result
    modes = catalogue.detecting(node, result.check_name, check_text(result))
    if not modes:
        return result
    from depmesh.failure_modes.catalogue import FAILURE_MODES_KEY, modes_markdown

    metadata = {**(result.metadata or {}), FAILURE_MODES_KEY: MetadataValue.md(modes_markdown(modes)),
                "depmesh/failure_mode_ids": ", ".join(m.id for m in modes),
                "depmesh/owners_to_call": ", ".join(dict.fromkeys(m.owner for m in modes))}
    return AssetCheckResult(check_name=result.check_name, passed=result.passed, severity=result.severity,
                            metadata=metadata, description=result.description)


def _active_rollout(context: Any) -> Any:
    """The mesh's active rollout (depmesh.rollout.serving), if any: a scores step serves its candidate."""
    from depmesh.rollout.serving import active_rollout

    return active_rollout(getattr(context.resources, REGISTRY_KEY).registry)


def _serve(node: NodeSpec, inputs: dict[str, Any], builder: Any, ctx: Any, context: Any, rollout: Any) -> Any:
    """Score with Production's and the candidate's models (shadow or canary); None when no candidate feeds it."""
    from depmesh.rollout.serving import record, serve

    registry = getattr(context.resources, REGISTRY_KEY).registry
    served = serve(node, inputs, builder, ctx, registry, rollout)
    if served is not None:
        _, figures = served
        model = next(i for i in node.inputs if i in rollout["candidates"])
        figures["model"], figures["rollout"], figures["step"] = model, rollout["id"], rollout["step"]
        record(registry, rollout, node.name, model, context.run.run_id, figures)
        context.log.info(f"depmesh: {node.name} served by rollout {rollout['id']} ({rollout['mode']}, "
                         f"{figures['percent']:g}% candidate {model}@{figures['candidate']['version'][:12]})")
    return served


def _rollout_result(context: Any, node: NodeSpec, rollout: Any, figures: Any) -> AssetCheckResult:
    """The scores node's ``rollout`` check: the candidate beside Production on this batch (reported, not blocking)."""
    from dataclasses import replace

    from depmesh.rollout.serving import ROLLOUT_CHECK, judge, summarize

    if rollout is None or figures is None:
        why = "no rollout is active" if rollout is None else f"rollout {rollout['id']} has no candidate for {node.name}"
        return AssetCheckResult(check_name=ROLLOUT_CHECK, passed=True, description=why)
    summary = summarize([{"model": figures["model"], "figures": figures}])
    step = rollout["plan"].steps[rollout["step"] if rollout["mode"] == "canary" else 0]
    verdict, reasons = judge(summary, replace(step, min_rows=0), [figures["model"]])
    s = summary[figures["model"]]
    table = "\n".join(["| | production | candidate |", "|---|---|---|",
                       f"| version | {figures['production']['version'][:12]} | {figures['candidate']['version'][:12]} |",
                       f"| rows | {s['production']['rows']} | {s['candidate']['rows']} |",
                       f"| {s['metric']} (labelled rows) | {_fmt4(s['production']['metric'])} | "
                       f"{_fmt4(s['candidate']['metric'])} |",
                       f"| predict seconds (whole batch) | {s['production_s']:.3f} | {s['candidate_s']:.3f} |"])
    return AssetCheckResult(
        check_name=ROLLOUT_CHECK, passed=verdict != "break", severity=AssetCheckSeverity.WARN,
        description=f"{rollout['mode']} rollout {rollout['id']} at {figures['percent']:g}%: "
                    + ("; ".join(reasons) or "no threshold set"),
        metadata={"depmesh/rollout": MetadataValue.md(table), "rollout_id": rollout["id"],
                  "prediction_shift": s["shift"], "disagreement_rate": s["disagreement"],
                  "latency_ratio": s["latency_ratio"], "error_rate": s["error_rate"],
                  "candidate_error": figures.get("error") or ""})


def _fmt4(value: Any) -> str:
    return "-" if value is None else f"{value:.4g}"


def record_incidents(context: Any, catalogue: Any, node: str, failed: list[AssetCheckResult],
                     judged: str | None) -> None:
    """An incident per failure mode that a failed check detects (depmesh.failure_modes.incidents); a registry
    that cannot take it is a warning, never the step's failure."""
    if catalogue is None or not any(catalogue.detecting(node, r.check_name, check_text(r)) for r in failed):
        return
    from depmesh.failure_modes.incidents import record_check_failure

    try:
        registry = getattr(context.resources, REGISTRY_KEY).registry
        for r in failed:
            for found, new in record_check_failure(
                    registry, catalogue.teams, catalogue, node=node, check=r.check_name,
                    version=(judged or "unknown").split(" ")[-1], run_id=context.run.run_id,
                    summary=check_text(r) or f"{node}: check {r.check_name} failed"):
                seen = "opened" if new else f"seen again ({found['count']} times)"
                context.log.warning(f"depmesh: incident {found['id']} {seen}: {found['mode']} at {node}, "
                                    f"owner {found['owner']}")
    except Exception as exc:  # noqa: BLE001
        context.log.warning(f"depmesh: the incident for {node}'s failed checks was not recorded: "
                            f"{type(exc).__name__}: {exc}")


NODE_SIGNATURE = inspect.Signature([
    inspect.Parameter("context", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=AssetExecutionContext),
    inspect.Parameter("kwargs", inspect.Parameter.VAR_KEYWORD, annotation=Any),
])


def _judge_stored(context: Any, node: NodeSpec, blocking_checks: frozenset[str], failure_modes: Any):
    """The gate verdicts of the model's stored version (depmesh.gates.evaluate.judge_stored), verified against
    its record; the model is not trained and no training is recorded."""
    from depmesh.assets.io import recorded_metadata
    from depmesh.gates.evaluate import judge_stored

    record = recorded_metadata(context.instance, asset_key(node.name).path)
    if record is None:
        raise RuntimeError(f"{node.name} has no stored version to judge: materialize it first")
    registry = getattr(context.resources, REGISTRY_KEY).registry
    version = str(record["model_version"])
    model = registry.artifacts.get(str(record["artifact_hash"]), version)
    production = registry.production()
    metrics = registry.production_metrics(node.name) if production.get(node.name) not in (None, version) else None
    recorded = (registry.version(node.name, version) or {}).get("gates", {})
    context.log.info(f"depmesh: judging the stored {node.name}@{version} (its checks alone: nothing is trained)")
    for r in gate_results(judge_stored(model, node.model.gates, metrics, recorded)):
        yield with_failure_modes(annotate_verdict(r, f"model version {version}", True, r.check_name in blocking_checks),
                                 failure_modes, node.name)


def _serving_plan(context: Any, node: NodeSpec, inputs: dict[str, Any], serving_spec: Any) -> Any:
    """What this scores node serves (depmesh.rollout.production): the registry's Production set unless the
    catalog's serving: says otherwise."""
    from depmesh.rollout.production import plan

    registry = getattr(context.resources, REGISTRY_KEY).registry
    return plan(registry, serving_spec, node.name, inputs, registry.mesh)


def _not_served(context: Any, node: NodeSpec, served_plan: Any):
    """No Production version to serve and the catalog says skip: no scores, the served_set verdict says why."""
    from dagster import AssetObservation

    context.log.warning(f"depmesh: {node.name} {served_plan.reason}")
    yield AssetObservation(asset_key=asset_key(node.name), description=served_plan.reason,
                           metadata={NOT_RUN_KEY: served_plan.reason})
    yield annotate_verdict(AssetCheckResult(check_name=SERVED_CHECK, passed=True, severity=AssetCheckSeverity.ERROR,
                                            description=served_plan.reason), None, False, True)


def _served_result(context: Any, served_plan: Any, frame: Any, rollout: Any) -> AssetCheckResult:
    """The scores node's blocking served_set check, judged against the registry as it is now."""
    from depmesh.rollout.production import verify

    registry = getattr(context.resources, REGISTRY_KEY).registry
    if context.run.tags.get(DRILL_FAULT_TAG, "").startswith("served-drift:"):
        from depmesh.rollout.production import retire_for_drill

        retire_for_drill(registry, served_plan)  # the drill's fault: another writer moves Production mid-step
    passed, why = verify(registry, served_plan, frame, rollout)
    record = served_plan.record
    return AssetCheckResult(check_name=SERVED_CHECK, passed=passed, severity=AssetCheckSeverity.ERROR,
                            description=why, metadata={"serving_mode": record["mode"],
                                                       "served_versions": MetadataValue.json(record["versions"]),
                                                       "release_id": record.get("release_id") or 0})


def _served_metadata(served_plan: Any, rollout: Any) -> dict[str, Any]:
    """What served this scores materialization: first on its asset page."""
    from depmesh.rollout.production import signature

    record = served_plan.record
    return {SERVED_BY_KEY: served_plan.sentence(rollout), SERVING_KEY: MetadataValue.json(record),
            SIGNATURE_KEY: signature(record, rollout)}


def build_asset(node: NodeSpec, impact_row: dict[str, Any] | None = None, builder: Any = None,
                downstream_of: Any = None, catalog_path: Any = None, failure_modes: Any = None,
                serving_spec: Any = None) -> AssetsDefinition:
    """One node -> one Dagster asset, with its contract checks. ``impact_row``
    (from depmesh.impact.impact_table) puts the node's reach in its metadata;
    ``builder`` replaces the catalog's compute or trainer (failure simulation);
    ``downstream_of(name)`` names what lies downstream (told, when blocked, why it did not run);
    ``failure_modes``: the mesh's failure-mode catalogue (a failed check names the modes it may mean);
    ``serving_spec``: the mesh's serving: (which versions a scores node serves; default Production)."""
    serving_spec = serving_spec or ServingSpec()
    builder = builder or resolve_entrypoint(node.entrypoint)
    key = asset_key(node.name)
    specs = check_specs(node, key)
    blocking_checks = blocking_check_names(node)
    blocking = bool(blocking_checks)
    downstream_of = downstream_of or (lambda _name: [])
    code = node_code_version(node)
    ins = {argument_name(name): AssetIn(key=asset_key(name)) for name in node.inputs}
    names = {argument_name(name): name for name in node.inputs}
    metadata: dict[str, Any] = {"depmesh/kind": node.kind, "depmesh/criticality": node.criticality}
    schema = column_schema(node)
    if schema is not None:
        metadata["dagster/column_schema"] = schema
    if node.contract is not None:
        metadata["depmesh/contract_version"] = node.contract.version
    if impact_row is not None:
        metadata["depmesh/downstream"] = impact_row["downstream"]
        metadata["depmesh/models_downstream"] = impact_row["models_downstream"]
        metadata["depmesh/consumers"] = MetadataValue.json(impact_row["consumer_names"])
        metadata["depmesh/blast_radius"] = impact_row["blast_radius"]
        metadata["depmesh/blast_radius_share"] = impact_row["blast_radius_share"]
    tags = {**node.tags, "depmesh/kind": node.kind, "depmesh/criticality": node.criticality}

    # One asset, declared as a subsettable multi-asset: its check outputs are
    # then optional, so a check that had nothing to judge (the node was
    # blocked before it was built) is recorded by Dagster as skipped, not
    # as failed or missing.
    def _node_asset(context: AssetExecutionContext, **kwargs: Any):
        selected_checks = {k.name for k in context.selected_asset_check_keys}
        building = key in context.selected_asset_keys
        with retry_on_lost_database(context, node.name) as guard:
            # a model's gate checks executed alone judge the stored version: no training, nothing recorded
            events = (_judge_stored(context, node, blocking_checks, failure_modes)
                      if node.kind == "model" and not building else _build(context, kwargs))
            for event in events:
                if isinstance(event, Output):
                    if not building:
                        continue  # only some of its checks were asked for: they judge, nothing is stored
                    guard()
                elif isinstance(event, AssetCheckResult) and event.check_name not in selected_checks:
                    continue
                yield event

    # Dagster reads a compute function's signature about fifteen times while
    # building the asset; one signature object, made once, takes that off each
    # node (0.7 s of 15 s on a 10,000-node mesh: benches/scale_bench.py).
    _node_asset.__signature__ = NODE_SIGNATURE

    node_asset = multi_asset(
        name=key.to_python_identifier(),
        outs={OUTPUT: AssetOut(
            key=key, is_required=not blocking, io_manager_key=IO_MANAGER_KEY, group_name=node.group,
            owners=[node.owner], tags=tags, kinds={KINDS_TAG[node.kind]}, description=node.description or None,
            code_version=code, metadata=metadata, freshness_policy=freshness_policy(node))},
        ins=ins,
        check_specs=specs or None,
        can_subset=True,
        required_resource_keys={RUNTIME_KEY, REGISTRY_KEY},  # every node: a failed check records an incident
        pool=TRAINING_POOL if node.kind == "model" else None,
    )(_node_asset)

    def _build(context: AssetExecutionContext, kwargs: dict[str, Any]):
        if context.run.tags.get(DRILL_FAULT_TAG) == f"kill-step:{node.name}":
            os.kill(os.getpid(), signal.SIGKILL)  # a drill's killed step (depmesh drill); nothing otherwise
        inputs = {names[arg]: value for arg, value in kwargs.items()}
        runtime: MeshRuntime = getattr(context.resources, RUNTIME_KEY)
        trigger = _tag_trigger(context)
        results: list[AssetCheckResult] = []
        if node.edges:
            edge_result = input_contract_result(node, inputs, _gate_latencies(context, node, inputs))
            results.append(edge_result)
            if not edge_result.passed:
                yield from _finish(context, results, None, None)
                return
        recorder = None
        built = node
        if node.kind == "model":
            _refuse_empty_inputs(node, inputs)
            built = with_run_params(node, context.run.tags)
            recorder = _recorder(context, built, code, trigger, catalog_path)
        served_plan = None
        if node.kind == "scores":
            served_plan = _serving_plan(context, node, inputs, serving_spec)
            if served_plan.mode == "skip":
                yield from _not_served(context, node, served_plan)
                return
            drill = context.run.tags.get(DRILL_FAULT_TAG)
            if drill != f"serve-unapproved:{node.name}":  # the drill's fault: serving bypasses the registry
                inputs = served_plan.inputs
        ctx = NodeContext(node=built, sample_fraction=runtime.sample_fraction, log=context.log)
        serving = _active_rollout(context) if node.kind == "scores" else None
        figures = None
        started = time.perf_counter()
        try:
            with recorder.measure() if recorder is not None else contextlib.nullcontext():
                served = _serve(node, inputs, builder, ctx, context, serving) if serving is not None else None
                result, figures = served if served is not None else (builder(inputs, ctx), None)
        except Exception as exc:
            if recorder is not None:
                _record_failure(context, recorder, exc)
            if isinstance(exc, KeyError):
                missing = _missing_column(node, inputs, exc)
                if missing is not None:
                    raise missing from exc
            raise
        seconds = time.perf_counter() - started
        ignored_sample = not node.inputs and runtime.sample_fraction < 1 and not ctx.sample_read
        if ignored_sample:
            context.log.warning(f"depmesh: {node.name}'s loader ignored --sample {runtime.sample_fraction:g}: it "
                                "stored its full data (read ctx.sample_fraction to honour samples)")
        if node.kind == "model":
            from depmesh.models import TrainedModel

            if not isinstance(result, TrainedModel):
                raise TypeError(f"node {node.name}: trainer {node.model.trainer} returned {type(result).__name__}, "
                                "expected a TrainedModel")
            gate_results, output = _gate_and_register(context, built, result, inputs, code, seconds, ctx, recorder,
                                                      params_from_run=built is not node)
            results.extend(gate_results)
            judged = f"model version {result.version}"
        else:
            check_results, extra = _check_table(context, node, result, runtime)
            results.extend(check_results)
            if node.kind == "scores":
                results.append(_rollout_result(context, node, serving, figures))
                served = _served_result(context, served_plan, result, serving)
                results.append(served)
                if not served.passed:
                    extra = None
                elif extra is not None:
                    extra = {**_served_metadata(served_plan, serving), **extra}
            if extra is not None and ignored_sample:
                extra[SAMPLE_IGNORED_KEY] = f"the loader ignored the sample {runtime.sample_fraction:g}: full data"
            output = _table_output(result, node, seconds, extra) if extra is not None else None
            judged = f"data version {frame_version(result)}" if output is None else f"data version {output.data_version.value}"
        yield from _finish(context, results, output, judged)
        if output is not None:
            context.log.info(f"depmesh: built {node.name} in {seconds:.2f}s")

    def _finish(context: AssetExecutionContext, results: list[AssetCheckResult], output: Output | None,
                judged: str | None):
        """When every blocking verdict passed: the output first, then the
        verdicts, which so target the materialization they judged. When one
        failed: the verdicts alone, each naming the version it judged and that
        it was not stored; the step still succeeds."""
        if output is not None:
            yield output
        for r in results:
            yield with_failure_modes(annotate_verdict(r, judged, output is not None, r.check_name in blocking_checks),
                                     failure_modes, node.name)
        failed = [r for r in results if not r.passed and r.check_name in blocking_checks]
        record_incidents(context, failure_modes, node.name, [r for r in results if not r.passed], judged)
        if output is None:
            yield from _blocked(context, node, failed, downstream_of)

    return node_asset


def build_assets(mesh: MeshSpec, builders: dict[str, Any] | None = None,
                 extra_downstream: Any = None, failure_modes: Any = None) -> list[AssetsDefinition]:
    """Every node's asset. ``extra_downstream(name)``: assets outside the mesh
    graph that lie downstream of ``name`` (the release asset, below every model);
    ``failure_modes``: the mesh's failure-mode catalogue, if it has one."""
    from depmesh import graph
    from depmesh.impact import impact_table

    rows = {row["node"]: row for row in impact_table(mesh)}
    builders = builders or {}
    inputs = mesh.inputs_map()

    def downstream_of(name: str) -> list[str]:  # computed only when a node is blocked
        below = sorted(graph.downstream(inputs, name))
        return below + (list(extra_downstream(name, below)) if extra_downstream else [])

    return [build_asset(node, rows[node.name], builders.get(node.name), downstream_of, mesh.path, failure_modes,
                        mesh.serving) for node in mesh.nodes]


__all__ = ["MeshRuntime", "NodeContext", "asset_key", "build_asset", "build_assets"]

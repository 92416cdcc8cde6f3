"""Run a model's hyperparameter study (Optuna) on its current inputs."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from depmesh.catalog import MeshSpec, NodeSpec, resolve_entrypoint
from depmesh.keys import PARAMS_TAG, STUDY_TAG, TRIAL_TAG, TRIGGER_TAG
from depmesh.metrics import declared_metrics
from depmesh.versions import model_version

TUNE_TRIGGER = "tune"
TUNED_NODE_TAG = "depmesh/tuned_node"
TUNED_PARAMS_TAG = "depmesh/tuned_params"


class TuningError(ValueError):
    """A study that cannot run or found nothing, with what and why."""


@dataclass
class StudyResult:
    study: str
    node: str
    metric: str
    higher_is_better: bool
    best_params: dict[str, Any]
    best_value: float
    best_trial: int
    baseline_value: float | None  # the catalog's own parameters (the first trial of a new study)
    complete: int
    pruned: int
    failed: int
    seconds: float
    best_is_baseline: bool = False  # the catalog's own parameters won: there is nothing to try

    def summary(self) -> str:
        base = f" (catalog parameters: {self.baseline_value:.5g})" if self.baseline_value is not None else ""
        return (f"study {self.study}: best {self.metric} {self.best_value:.5g} in trial {self.best_trial}{base}; "
                f"{self.complete} complete, {self.pruned} pruned, {self.failed} failed, {self.seconds:.1f} s; "
                f"parameters {json.dumps(self.best_params, sort_keys=True)}")


def tunable(mesh: MeshSpec) -> list[NodeSpec]:
    return [n for n in mesh.nodes if n.kind == "model" and n.model.tune is not None]


def tunable_node(mesh: MeshSpec, name: str) -> NodeSpec:
    try:
        node = mesh.node(name)
    except KeyError:
        raise TuningError(f"{mesh.path.name}: no node named {name!r} (tunable: "
                          f"{', '.join(n.name for n in tunable(mesh)) or 'none'})") from None
    if node.kind != "model" or node.model.tune is None:
        raise TuningError(f"{name} declares no search space: add model.tune to its catalog entry (tunable: "
                          f"{', '.join(n.name for n in tunable(mesh)) or 'none'})")
    return node


OPTUNA_SCHEMA_LOCK = 0x64_6D_6F_70  # the PostgreSQL advisory lock held while Optuna creates its tables
OPTUNA_SCHEMA = "depmesh_optuna"  # PostgreSQL: Optuna's tables, in the registry's database, in a schema of their own


def study_storage(registry_url: str) -> Any:
    """Optuna's storage in the registry's database. On PostgreSQL its tables
    go into their own schema: the database also holds Dagster's storage, whose
    ``alembic_version`` table Optuna would otherwise read as its own. Optuna
    creates its tables on first use; workers starting together would race to
    create them, so that first use holds an advisory lock."""
    import optuna

    if not registry_url.startswith("postgresql"):
        return optuna.storages.RDBStorage(registry_url)
    import sqlalchemy as sa

    engine = sa.create_engine(registry_url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT pg_advisory_lock(:key)"), {"key": OPTUNA_SCHEMA_LOCK})
            try:
                conn.execute(sa.text(f"CREATE SCHEMA IF NOT EXISTS {OPTUNA_SCHEMA}"))
                conn.commit()
                return optuna.storages.RDBStorage(registry_url, engine_kwargs={
                    "pool_pre_ping": True, "connect_args": {"options": f"-csearch_path={OPTUNA_SCHEMA}"}})
            finally:
                conn.execute(sa.text("SELECT pg_advisory_unlock(:key)"), {"key": OPTUNA_SCHEMA_LOCK})
    finally:
        engine.dispose()


def _sampler(tune: Any, trials: int) -> Any:
    import optuna

    if tune.sampler == "random":
        return optuna.samplers.RandomSampler(seed=tune.seed)
    if tune.sampler == "grid":
        space = {}
        for p in tune.space:
            if p.type == "categorical":
                space[p.name] = list(p.choices)
            else:
                step = p.step or 1
                count = int(round((p.high - p.low) / step)) + 1
                values = [p.low + i * step for i in range(count)]
                space[p.name] = [int(v) for v in values] if p.type == "int" else [round(v, 12) for v in values]
        return optuna.samplers.GridSampler(space, seed=tune.seed)
    # Optuna's default of 10 random trials before TPE models anything is half of a 20-trial budget
    return optuna.samplers.TPESampler(seed=tune.seed, multivariate=True, n_startup_trials=min(10, max(3, trials // 4)))


def _pruner(tune: Any) -> Any:
    import optuna

    # the first rung at a third of the iterations: after a tenth, a low learning rate always looks worse
    # than a high one, and pruning there stops exactly the trials that end best
    first = max(1, tune.steps // 3)
    if tune.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=first, max_resource=tune.steps, reduction_factor=3)
    if tune.pruner == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=first, reduction_factor=3)
    if tune.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1)
    return optuna.pruners.NopPruner()


def _suggest(trial: Any, p: Any) -> Any:
    if p.type == "categorical":
        return trial.suggest_categorical(p.name, list(p.choices))
    if p.type == "int":
        return trial.suggest_int(p.name, int(p.low), int(p.high), step=int(p.step or 1), log=p.log)
    return trial.suggest_float(p.name, float(p.low), float(p.high), step=p.step, log=p.log)


def study_name(mesh: MeshSpec, node: NodeSpec, input_versions: dict[str, str], code: str) -> str:
    """One study per model, search space, inputs and code: trials of one study are comparable."""
    key = json.dumps({"tune": dataclasses.asdict(node.model.tune), "inputs": input_versions, "code": code,
                      "params": dict(node.model.params), "seed": node.model.seed}, sort_keys=True, default=str)
    return f"{mesh.name}:{node.name}:{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def load_inputs(node: NodeSpec, instance: Any, storage: Path) -> dict[str, Any]:
    """The model's inputs as their latest materializations recorded them, verified."""
    from depmesh.assets.io import MeshStore

    store = MeshStore(storage, instance=instance)
    try:
        return {name: store.load(name.split("/"), instance) for name in node.inputs}
    except FileNotFoundError as exc:
        raise TuningError(f"tuning {node.name} needs its inputs materialized first: {exc}") from None


def _record_trial(node: Any, model: Any, ctx: Any, fit: Any, recorder: Any, input_versions: dict) -> float:
    """Record a trained trial (declared metrics added, its curves with the pruner's); its objective value."""
    from depmesh.tracking.recorder import curves_for

    tune = node.model.tune
    if node.model.metrics is not None:

        model.metrics = {**model.metrics, **declared_metrics(model, node.model.metrics, ctx.evaluation)}
    curves = curves_for(model, ctx)
    if curves is not None:
        curves.series.update(fit.curves.series)
    if tune.metric not in model.metrics:
        error = TuningError(f"{node.name}'s trainer reported no metric {tune.metric!r} (it reports: "
                            f"{', '.join(sorted(model.metrics))}); set model.tune.metric to one of them")
        recorder.record("failed", model=model, metrics=model.metrics, error=error, input_versions=input_versions)
        raise error
    recorder.record("trial", model=model, metrics=model.metrics, input_versions=input_versions, curves=curves)
    return float(model.metrics[tune.metric])


def _best_so_far(study: Any, value: float, higher_is_better: bool) -> float:
    best = value
    try:
        best = study.best_value if study.best_value is not None else value
    except ValueError:  # no trial completed before this one
        pass
    return max(best, value) if higher_is_better else min(best, value)


def _study_result(study: Any, name: str, node: Any, started: float) -> StudyResult:
    """The best trial of the study (refused when none completed), beside the catalog's parameters' trial."""
    import optuna

    tune = node.model.tune
    states = [t.state for t in study.get_trials(deepcopy=False)]
    complete = [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE]
    if not complete:
        raise TuningError(f"study {name}: no trial completed ({states.count(optuna.trial.TrialState.FAIL)} failed, "
                          f"{states.count(optuna.trial.TrialState.PRUNED)} pruned): see depmesh runs list --study "
                          f"{name}")
    best = study.best_trial
    baseline_trial = next((t for t in complete if t.user_attrs.get("baseline")), None)
    return StudyResult(
        study=name, node=node.name, metric=tune.metric, higher_is_better=tune.higher_is_better,
        best_params=dict(best.params), best_value=float(best.value), best_trial=best.number,
        baseline_value=float(baseline_trial.value) if baseline_trial else None, complete=len(complete),
        pruned=states.count(optuna.trial.TrialState.PRUNED), failed=states.count(optuna.trial.TrialState.FAIL),
        seconds=time.perf_counter() - started, best_is_baseline=bool(best.user_attrs.get("baseline")))


def run_study(mesh: MeshSpec, node_name: str, instance: Any, registry: Any, storage: Path, *,
              trials: int | None = None, timeout_s: float | None = None, sample_fraction: float = 1.0,
              progress: Callable[[str], None] = print) -> StudyResult:
    """Run (or continue) the study of ``node_name``: until it holds ``trials``
    finished trials (catalog default), or ``timeout_s`` passes. Every trial is
    a tracked training. Returns the best trial."""
    import optuna

    from depmesh.assets.factory import NodeContext, input_version, node_code_version
    from depmesh.tracking.recorder import TrainingRecorder
    from depmesh.tuning.trial import TrialFit

    node = tunable_node(mesh, node_name)
    tune = node.model.tune
    trials = trials or tune.trials
    timeout_s = timeout_s if timeout_s is not None else tune.timeout_s
    inputs = load_inputs(node, instance, storage)
    input_versions = {name: input_version(value) for name, value in sorted(inputs.items())}
    code = node_code_version(node)
    name = study_name(mesh, node, input_versions, code)
    builder = resolve_entrypoint(node.entrypoint)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    direction = "maximize" if tune.higher_is_better else "minimize"
    study = optuna.create_study(study_name=name, storage=study_storage(registry.url), sampler=_sampler(tune, trials),
                                pruner=_pruner(tune), direction=direction, load_if_exists=True)
    baseline = {p.name: node.model.params[p.name] for p in tune.space if p.name in node.model.params}
    if not study.trials and len(baseline) == len(tune.space) and tune.sampler != "grid":
        study.enqueue_trial(baseline, user_attrs={"baseline": True})
    log = logging.getLogger(f"depmesh.tune.{node.name}")
    started = time.perf_counter()

    def objective(trial: Any) -> float:
        params = {p.name: _suggest(trial, p) for p in tune.space}
        model_spec = dataclasses.replace(node.model, params={**dict(node.model.params), **params})
        candidate = dataclasses.replace(node, model=model_spec)
        fit = TrialFit(trial, tune.metric, tune.steps, prunes=tune.pruner != "none")
        ctx = NodeContext(node=candidate, sample_fraction=sample_fraction, log=log, trial=fit)
        recorder = TrainingRecorder(registry=registry, node=candidate, run_id=None, trigger=TUNE_TRIGGER,
                                    tags={STUDY_TAG: name, TRIAL_TAG: str(trial.number)}, storage=storage,
                                    catalog_path=mesh.path, code=code, study=name, trial=trial.number)
        t0 = time.perf_counter()
        try:
            with recorder.measure():
                model = builder(inputs, ctx)
        except optuna.TrialPruned as exc:
            last = fit.curves.series.get(f"validation/{tune.metric}")
            recorder.record("pruned", metrics={tune.metric: last[1][-1]} if last else {}, curves=fit.curves,
                            input_versions=input_versions, error=exc)
            progress(f"trial {trial.number}: pruned ({exc}) after {time.perf_counter() - t0:.1f} s")
            raise
        except Exception as exc:
            recorder.record("failed", error=exc, input_versions=input_versions)
            progress(f"trial {trial.number}: FAILED: {type(exc).__name__}: {str(exc)[:200]}")
            raise
        model.version = model_version(input_versions, code, model_spec.params, model_spec.seed)
        value = _record_trial(node, model, ctx, fit, recorder, input_versions)
        best = _best_so_far(study, value, tune.higher_is_better)
        progress(f"trial {trial.number}: {tune.metric} {value:.5g} (best {best:.5g}) in {time.perf_counter() - t0:.1f} s"
                 f"{' [catalog parameters]' if trial.user_attrs.get('baseline') else ''}: "
                 + json.dumps(params, sort_keys=True) + (f" ({fit.note})" if fit.note else ""))
        return value

    remaining = trials - len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,
                                                                        optuna.trial.TrialState.PRUNED)))
    if remaining > 0:
        progress(f"tuning {node.name}: study {name}, {tune.sampler} sampler, {tune.pruner} pruner, up to {remaining} "
                 f"trial(s)" + (f" or {timeout_s:.0f} s" if timeout_s else "") + f", optimizing {tune.metric} "
                 f"({'higher' if tune.higher_is_better else 'lower'} is better)")
        callbacks = [optuna.study.MaxTrialsCallback(trials, states=(optuna.trial.TrialState.COMPLETE,
                                                                    optuna.trial.TrialState.PRUNED))]
        study.optimize(objective, n_trials=remaining, timeout=timeout_s, catch=(Exception,), callbacks=callbacks,
                       gc_after_trial=False)
    return _study_result(study, name, node, started)


def candidate_request(mesh: MeshSpec, node: str, params: dict[str, Any], study: str,
                      trial: int) -> tuple[list[str], dict[str, str]]:
    """What the best parameters' candidate run builds (the model, everything
    downstream of it, the release) and its tags (the parameters, the study)."""
    from depmesh.assets.release import release_key
    from depmesh.automation.changes import coordinated_selection

    selection = [node, *coordinated_selection(mesh.inputs_map(), [node])]
    tags = {PARAMS_TAG: json.dumps({node: params}, sort_keys=True), TRIGGER_TAG: TUNE_TRIGGER, STUDY_TAG: study,
            TRIAL_TAG: str(trial)}
    return [*selection, release_key(mesh).to_user_string()], tags

"""Failure simulation: perturb a copy of a node's latest data (or slow one of
its models), recompute what lies downstream in an ephemeral Dagster instance,
and report where the perturbation was caught, what it changed, and where it
stopped. Production storage and the production instance are only read.

Injection specs:

    NODE:COLUMN:shift=X      add X to a numeric column (distribution drift)
    NODE:COLUMN:scale=X      multiply a numeric column by X
    NODE:COLUMN:nulls=R      set a share R of the column's values to null
    NODE:COLUMN:drop         drop the column
    NODE:COLUMN:rename=NEW   rename the column
    NODE:COLUMN:dtype=T      change the column's dtype (string, float64, int64, ...)
    MODEL:latency=300ms      add this much time to every prediction of a model
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from depmesh import graph
from depmesh.artifacts import atomic_write
from depmesh.catalog import MeshSpec
from depmesh.injections import (  # noqa: F401 - re-exported: the injection syntax is simulate's
    DTYPE_NAMES,
    TABLE_KINDS,
    Injection,
    InjectionError,
    parse_injection,
)


def perturb(df: Any, injection: Injection, seed: int = 0) -> Any:
    import numpy as np

    col, kind = injection.column, injection.kind
    if col not in df.columns:
        raise InjectionError(f"--inject {injection.spec!r}: {injection.node} has no column {col!r} "
                             f"(it has {', '.join(map(str, df.columns))})")
    out = df.copy()
    if kind in ("shift", "scale"):
        if not np.issubdtype(out[col].dtype, np.number):
            raise InjectionError(f"--inject {injection.spec!r}: {col} is {out[col].dtype}, not numeric")
        out[col] = out[col].astype("float64") + injection.value if kind == "shift" else out[col] * injection.value
    elif kind == "nulls":
        mask = np.random.default_rng(seed).random(len(out)) < injection.value
        out[col] = out[col].astype("float64") if np.issubdtype(out[col].dtype, np.integer) else out[col]
        out.loc[mask, col] = None
    elif kind == "drop":
        out = out.drop(columns=[col])
    elif kind == "rename":
        out = out.rename(columns={col: injection.value})
    elif kind == "dtype":
        out[col] = out[col].astype(injection.value)
    return out


class DelayedEstimator:
    """An estimator whose every predict call takes ``seconds`` longer."""

    def __init__(self, estimator: Any, seconds: float):
        self.estimator, self.seconds = estimator, seconds

    def predict(self, X: Any) -> Any:
        time.sleep(self.seconds)
        return self.estimator.predict(X)

    def predict_proba(self, X: Any) -> Any:
        time.sleep(self.seconds)
        return self.estimator.predict_proba(X)


@dataclass
class NodeOutcome:
    node: str
    kind: str
    depth: int  # 0 for an injected node; every listed node is reachable from an injection
    outcome: str  # built | blocked | error | not run
    failed_checks: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    shift: dict[str, float] = field(default_factory=dict)
    error: str | None = None


@dataclass
class SimulationReport:
    injections: list[str]
    nodes: list[NodeOutcome]
    caught_at: list[str]  # nodes where a check caught the injection
    stopped_at: list[str]
    seconds: float
    failed_at: list[str] = field(default_factory=list)  # nodes whose step failed: the simulation could not judge

    def as_json(self) -> dict[str, Any]:
        from dataclasses import asdict

        return {"injections": self.injections, "caught_at": self.caught_at, "failed_at": self.failed_at,
                "stopped_at": self.stopped_at, "seconds": round(self.seconds, 2),
                "nodes": [asdict(n) for n in self.nodes]}


def _copy_asset(prod, sim, name: str, production_instance, instance) -> None:
    """Copy one asset's stored file from the production store to the
    simulation's, and its record (the materialization metadata a read
    verifies against) from the production instance to the simulation's."""
    from dagster import AssetKey, AssetMaterialization

    from depmesh.assets.io import ARTIFACT_HASH_KEY

    key_path = name.split("/")
    event = production_instance.get_latest_materialization_event(AssetKey(key_path))
    if event is None or event.asset_materialization is None:
        raise InjectionError(f"{name} has never been materialized: run the mesh first (depmesh run)")
    metadata = event.asset_materialization.metadata
    if ARTIFACT_HASH_KEY in metadata:
        digest = str(metadata[ARTIFACT_HASH_KEY].value)
        src = prod.artifacts.find(digest)
        if src is None:
            raise InjectionError(f"{name}: its recorded artifact {digest} is missing from {prod.artifacts.root}")
        dst = sim.artifacts.path_for(digest, src.suffix)
    else:
        src, dst = prod.table_path(key_path), sim.table_path(key_path)
        if not src.exists():
            raise InjectionError(f"{name} has never been materialized in {prod.base}: run the mesh first (depmesh run)")
    atomic_write(dst, src.read_bytes())
    instance.report_runless_asset_event(AssetMaterialization(AssetKey(key_path), metadata=dict(metadata)))


DEFAULT_PREDICTIONS = ("prediction", "probability")


def _shift(prod_value: Any, sim_value: Any, unique_key: str | None,
           columns: tuple[str, ...] = DEFAULT_PREDICTIONS) -> dict[str, float]:
    """How much the predictions moved, for each prediction column (the scores
    node's ``predictions`` in the catalog, else prediction and probability),
    rows aligned on the table's unique key: numbers by their mean absolute
    shift, labels (a class) by the share of rows whose label changed."""
    import numpy as np
    import pandas as pd

    out: dict[str, float] = {}
    for column in columns:
        if column not in getattr(prod_value, "columns", []) or column not in getattr(sim_value, "columns", []):
            continue
        numeric = pd.api.types.is_numeric_dtype(prod_value[column]) and pd.api.types.is_numeric_dtype(sim_value[column])
        if unique_key and unique_key in prod_value and unique_key in sim_value:
            joined = prod_value[[unique_key, column]].merge(sim_value[[unique_key, column]], on=unique_key,
                                                            suffixes=("_prod", "_sim"))
            before, after = joined[f"{column}_prod"], joined[f"{column}_sim"]
            if numeric:
                delta = (after - before).abs()
                out[f"{column}_mean_abs_shift"] = float(delta.mean()) if len(delta) else 0.0
                changed = delta > 1e-9
            else:
                changed = before.astype(str) != after.astype(str)
            out[f"{column}_changed_share"] = float(changed.mean()) if len(changed) else 0.0
        if numeric:
            out[f"{column}_mean_prod"] = float(np.mean(prod_value[column]))
            out[f"{column}_mean_sim"] = float(np.mean(sim_value[column]))
    return out


def _simulation_mesh(mesh: MeshSpec, by_node: dict[str, list[Injection]]) -> MeshSpec:
    """The mesh as the simulation builds it: a model slowed by a latency
    injection holds depmesh's DelayedEstimator, which skops does not know; it
    is stored with pickle in the simulation's own temporary store, never in production's."""
    slowed = {n for n, items in by_node.items() if any(i.kind == "latency" for i in items)}
    if not slowed:
        return mesh
    nodes = tuple(replace(n, model=replace(n.model, serializer="pickle")) if n.name in slowed else n
                  for n in mesh.nodes)
    return replace(mesh, nodes=nodes)


def _check_up_front(injections: list[Injection], prod: Any, production_instance: Any) -> None:
    """Fail fast, before any work, on what can be known up front: a node never built, a column it lacks."""
    from depmesh.assets.io import recorded_metadata

    for inj in injections:
        if recorded_metadata(production_instance, inj.node.split("/")) is None:
            raise InjectionError(f"{inj.node} has never been materialized: run the mesh first (depmesh run)")
        path = prod.table_path(inj.node.split("/"))
        if inj.kind != "latency":
            import pyarrow.parquet as pq

            with path.open("rb") as fh:
                columns = pq.read_schema(fh).names
            if inj.column not in columns:
                raise InjectionError(f"--inject {inj.spec!r}: {inj.node} has no column {inj.column!r} "
                                     f"(it has {', '.join(columns)})")


def _seed(prod: Any, sim_store: Any, production_instance: Any, instance: Any, inputs: dict, selection: list[str],
          depth: dict, by_node: dict) -> None:
    """Copy the tables the simulated nodes read and each simulated table's last schema and profile (the
    simulation compares against production)."""
    from dagster import AssetKey, AssetMaterialization

    from depmesh.contracts.checks import PROFILE_KEY, SCHEMA_KEY

    needed = {i for n in selection for i in inputs[n] if i not in depth}
    for name in sorted(needed):
        _copy_asset(prod, sim_store, name, production_instance, instance)
    # the simulation compares against production: seed each table's last schema and profile
    for name in selection:
        event = production_instance.get_latest_materialization_event(AssetKey(name.split("/")))
        if event is None or event.asset_materialization is None:
            if name in by_node:
                raise InjectionError(f"{name} has never been materialized: run the mesh first (depmesh run)")
            continue
        md = {k: v for k, v in event.asset_materialization.metadata.items() if k in (PROFILE_KEY, SCHEMA_KEY)}
        if md:
            instance.report_runless_asset_event(AssetMaterialization(AssetKey(name.split("/")), metadata=md))


def _verdicts(result: Any) -> tuple[set[str], dict[str, list[str]], dict[str, list[str]], dict[str, str]]:
    """(built, failed checks, warnings, errors) per node of the simulation's run."""
    built = {"/".join(e.asset_key.path) for e in result.get_asset_materialization_events()}
    failed: dict[str, list[str]] = {}
    warned: dict[str, list[str]] = {}
    for ev in result.get_asset_check_evaluations():
        if ev.passed:
            continue
        name = "/".join(ev.asset_key.path)
        rules = [f.get("id") for f in (ev.metadata.get("failures_json").value if ev.metadata.get("failures_json") else [])]
        label = ev.check_name + (f" ({', '.join(rules)})" if rules else "")
        (failed if ev.severity.value == "ERROR" else warned).setdefault(name, []).append(label)
    errors = {}
    for event in result.get_step_failure_events():
        error = event.step_failure_data.error
        cause = error.cause if error is not None and error.cause is not None else error
        if error is not None and "DagsterAssetCheckFailedError" not in (error.cls_name or ""):
            errors[event.step_key.replace("__", "/")] = f"{cause.cls_name}: {cause.message.strip()}"[:300]
    return built, failed, warned, errors


def simulate(mesh: MeshSpec, specs: list[str], production_instance, production_storage: Path) -> SimulationReport:
    """Run the injections against a copy of production's latest data."""
    from dagster import AssetKey, DagsterInstance

    from depmesh.assets import MeshIOManager, MeshStore
    from depmesh.assets.registry_resource import RegistryResource
    from depmesh.build import build_definitions
    from depmesh.models import TrainedModel

    started = time.perf_counter()
    injections = [parse_injection(s, mesh) for s in specs]
    by_node: dict[str, list[Injection]] = {}
    for inj in injections:
        by_node.setdefault(inj.node, []).append(inj)
    inputs = mesh.inputs_map()
    injected = sorted(by_node)
    depth = {**graph.downstream(inputs, injected), **{n: 0 for n in injected}}
    selection = [n for n in graph.topological_order(inputs) if n in depth]
    prod = MeshStore(production_storage, instance=production_instance)
    _check_up_front(injections, prod, production_instance)

    def replay(name: str, items: list[Injection]):
        def build(_inputs: dict, ctx: Any) -> Any:
            value = prod.load(name.split("/"), production_instance)
            for inj in items:
                if inj.kind == "latency":
                    value = replace(value, estimator=DelayedEstimator(value.estimator, inj.value))
                else:
                    value = perturb(value, inj)
            return value
        return build

    with tempfile.TemporaryDirectory(prefix="depmesh-simulate-") as tmp:
        instance = DagsterInstance.ephemeral(tempdir=tmp)
        sim_store = MeshStore(Path(tmp) / "depmesh", instance=instance)
        try:
            _seed(prod, sim_store, production_instance, instance, inputs, selection, depth, by_node)
            # production is only read: the simulation's versions go to a registry in its own temporary folder
            registry = RegistryResource(url=f"sqlite:///{Path(tmp) / 'simulation_registry.db'}", mesh=mesh.name,
                                        artifacts_dir=str(sim_store.artifacts.root))
            defs = build_definitions(_simulation_mesh(mesh, by_node), io_manager=MeshIOManager(base_dir=str(sim_store.base)),
                                     builders={n: replay(n, items) for n, items in by_node.items()},
                                     registry=registry)
            job = defs.resolve_implicit_global_asset_job_def()
            result = job.execute_in_process(
                instance=instance, asset_selection=[AssetKey(n.split("/")) for n in selection],
                raise_on_error=False, tags={"depmesh/simulation": ", ".join(specs)},
                run_config={"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}},
            )
            built, failed, warned, errors = _verdicts(result)
            outcomes = []
            for name in selection:
                node = mesh.node(name)
                outcome = ("built" if name in built else "blocked" if name in failed
                           else "error" if name in errors else "not run")
                shift: dict[str, float] = {}
                if name in built and name not in by_node:
                    prod_value = prod.load(name.split("/"), production_instance)
                    sim_value = sim_store.load(name.split("/"), instance)
                    if isinstance(sim_value, TrainedModel):
                        shift = {f"{k}_prod": float(v) for k, v in prod_value.metrics.items() if k != "eval_rows"}
                        shift.update({f"{k}_sim": float(v) for k, v in sim_value.metrics.items() if k != "eval_rows"})
                    else:
                        unique = next((c.name for c in (node.contract.columns if node.contract else ()) if c.unique), None)
                        shift = _shift(prod_value, sim_value, unique, node.predictions or DEFAULT_PREDICTIONS)
                outcomes.append(NodeOutcome(name, node.kind, depth[name], outcome,
                                            failed.get(name, []), warned.get(name, []), shift, errors.get(name)))
        finally:
            instance.dispose()
    outcomes.sort(key=lambda o: (o.depth, selection.index(o.node)))
    caught = [o.node for o in outcomes if o.failed_checks]
    failed = [o.node for o in outcomes if o.error]  # a crash (an artifact that fails its hash, a bug) is no catch
    stopped = [o.node for o in outcomes if o.outcome != "built"]
    return SimulationReport([i.spec for i in injections], outcomes, caught, stopped, time.perf_counter() - started,
                            failed)

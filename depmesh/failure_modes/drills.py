"""Drills: inject a failure mode's fault into a copy of production (the
simulation's ephemeral instance; production is only read) and verify that the
checks the catalogue says detect it catch it: caught or missed, by which
check, after how long. Results are recorded in the registry database."""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from depmesh import graph
from depmesh.failure_modes.catalogue import FailureCatalogue, FailureMode
from depmesh.injections import (  # noqa: F401 - re-exported: drills run these faults
    DRILL_SAMPLE,
    PROCESS_FAULTS,
    SERVING_FAULTS,
    UNREACHABLE_URL,
    check_drill,
    process_fault,
)
from depmesh.keys import DRILL_FAULT_TAG, PARAMS_TAG, REGISTRY_KEY


class DrillError(ValueError):
    """A drill that cannot run: the mode has no injection, or production lacks the data."""


@dataclass
class DrillResult:
    mode: str
    injection: str
    caught: bool
    caught_by: list[str]  # declared detectors that fired (node:check)
    also_fired: list[str]  # checks that fired but are not declared for this mode
    missed_by: list[str]  # declared detectors that did not fire
    seconds: float
    stopped_at: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def fired_checks(report: Any) -> list[str]:
    """node:check for every check that failed in a simulation (rule ids stripped)."""
    return [f"{o.node}:{label.split(' ')[0]}" for o in report.nodes for label in o.failed_checks]


def run_drill(mesh: Any, mode: FailureMode, production_instance: Any, storage: Path) -> DrillResult:
    if not mode.drill:
        raise DrillError(f"failure mode {mode.id} declares no drill injection (drill: \"NODE:COLUMN:nulls=0.3\" ...)")
    if process_fault(mode.drill) is not None:
        if process_fault(mode.drill)[0] in SERVING_FAULTS:
            return run_serving_drill(mesh, mode)
        return run_process_drill(mesh, mode)
    from depmesh.simulate import simulate

    started = time.perf_counter()
    report = simulate(mesh, [mode.drill], production_instance, storage)
    fired = fired_checks(report)
    return _verdict(mode, fired, started, report.stopped_at)


def _verdict(mode: FailureMode, fired: list[str], started: float, stopped_at: list[str]) -> DrillResult:
    declared = [d.label for d in mode.detected_by]
    caught_by = [c for c in declared if c in fired]
    return DrillResult(mode=mode.id, injection=mode.drill or "", caught=bool(caught_by), caught_by=caught_by,
                       also_fired=[c for c in dict.fromkeys(fired) if c not in declared],
                       missed_by=[c for c in declared if c not in fired], seconds=round(time.perf_counter() - started, 2),
                       stopped_at=stopped_at)


@contextlib.contextmanager
def _environment(**values: str):
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def run_process_drill(mesh: Any, mode: FailureMode, sample: float = DRILL_SAMPLE) -> DrillResult:
    """Run the fault's node (and what it needs) in a multiprocess run on a throwaway instance with the fault
    injected, then ask the run-failure detectors of the catalogue (what the run-failure sensor asks) which
    modes the failed steps match. Production is not touched: the run, its storage and registry are temporary."""
    from depmesh.automation.routing import failed_steps
    from depmesh.runs import run_mesh

    fault, node = process_fault(mode.drill or "")
    started = time.perf_counter()
    selection = sorted({*graph.upstream(mesh.inputs_map(), node), node})
    # the fault travels with the run (a tag, the resource's config), not in this process's environment: step
    # processes may come from a fork server started before this drill, with the environment of that time
    tags = {DRILL_FAULT_TAG: mode.drill} if fault == "kill-step" else {}
    run_config = ({"resources": {REGISTRY_KEY: {"config": {"url": UNREACHABLE_URL}}}}
                  if fault == "unreachable-database" else {})
    with _throwaway_instance() as instance:  # never production's database
        outcome = run_mesh(mesh.path, instance, sample=sample, executor="multiprocess", mesh=mesh,
                           selection=selection, tags=tags, run_config=run_config)
        steps = failed_steps(mesh, outcome.result.get_step_failure_events())
    fired = [d.label for step, error in steps for d in mode.detected_by if d.catches_run_failure(step, error)]
    return _verdict(mode, fired, started, [step for step, _ in steps])


@contextlib.contextmanager
def _throwaway_instance():
    """A temporary embedded instance and registry (never production's database)."""
    import tempfile

    from dagster import DagsterInstance

    from depmesh.instance import EMBEDDED_CONFIG, POSTGRES_ENV

    with tempfile.TemporaryDirectory(prefix="depmesh-drill-") as home:
        Path(home, "dagster.yaml").write_text(EMBEDDED_CONFIG, encoding="utf-8")
        with _environment(DAGSTER_HOME=home, **{POSTGRES_ENV: ""}):
            instance = DagsterInstance.from_config(home)
            try:
                yield instance
            finally:
                instance.dispose()


SERVING_DRILL_SAMPLE = 0.2  # the models must pass their gates to be promoted: a twentieth of the flights is too few


def run_serving_drill(mesh: Any, mode: FailureMode, sample: float = SERVING_DRILL_SAMPLE) -> DrillResult:
    """Train the scores node's models on a throwaway instance, record and promote their release, then build the
    scores with the serving fault in place (a run tag) and read which checks failed."""
    import json

    from depmesh.artifacts import ArtifactStore
    from depmesh.assets.io import artifacts_location, recorded_metadata
    from depmesh.governance import open_governed
    from depmesh.registry.store import default_url
    from depmesh.runs import run_mesh

    fault, node = process_fault(mode.drill or "")
    started = time.perf_counter()
    inputs = mesh.inputs_map()
    models = [m for m in graph.upstream(inputs, node) if mesh.node(m).kind == "model"]
    trained = sorted({*graph.upstream(inputs, node)})
    with _throwaway_instance() as instance:
        first = run_mesh(mesh.path, instance, sample=sample, mesh=mesh, selection=trained)
        if not first.result.success:
            raise DrillError(f"{mode.id}: the models behind {node} did not train on the drill's instance")
        # the throwaway instance's own registry: the drill promotes there without approvals (no team's Production
        # moves), under the mesh's dependency rules
        registry = open_governed(default_url(Path(instance.root_directory)), mesh,
                                 ArtifactStore(artifacts_location(instance)), teams=None)
        try:
            records = {m: recorded_metadata(instance, m.split("/")) for m in models}
            unbuilt = sorted(m for m, r in records.items() if r is None)
            if unbuilt:
                raise DrillError(f"{mode.id}: {', '.join(unbuilt)} did not pass {'its' if len(unbuilt) == 1 else 'their'} "
                                 f"gates on the drill's sample ({sample:g}), so there is no release to serve")
            members = {m: r["model_version"] for m, r in records.items()}
            release = registry.record_release(members, run_id=first.run_id, actor="depmesh/drill", reason="drill")
            registry.promote(release["id"], actor="depmesh/drill", reason=f"drill {mode.id}")
            tags = {DRILL_FAULT_TAG: mode.drill}
            selection = [node]
            if fault == "serve-unapproved":  # a retrain nobody promoted, then the faulty serving path
                direct = [m for m in mesh.node(node).inputs if m in models]
                retrain = run_mesh(mesh.path, instance, sample=sample, mesh=mesh, selection=direct,
                                   tags={PARAMS_TAG: json.dumps({m: _nudged(mesh.node(m)) for m in direct})})
                if not retrain.result.success:
                    raise DrillError(f"{mode.id}: the retrain of {', '.join(direct)} failed on the drill's instance")
            outcome = run_mesh(mesh.path, instance, sample=sample, mesh=mesh, selection=selection, tags=tags)
            fired = [f"{e.asset_key.to_user_string()}:{e.check_name}"
                     for e in outcome.result.get_asset_check_evaluations() if not e.passed]
        finally:
            registry.dispose()
    return _verdict(mode, fired, started, [f.split(":")[0] for f in fired])


def _nudged(node: Any) -> dict[str, Any]:
    """A parameter of the model moved a little (a new version nobody promoted)."""
    for name, value in node.model.params.items():
        if isinstance(value, float):
            return {name: value * 1.1}
        if isinstance(value, int) and not isinstance(value, bool):
            return {name: value + 1}
    raise DrillError(f"{node.name} has no numeric parameter to retrain it with (the serve-unapproved drill needs one)")


def record_drill(registry: Any, result: DrillResult) -> None:
    import json

    from depmesh.registry.schema import drills

    with registry.transaction() as conn:
        conn.execute(drills.insert().values(
            mesh=registry.mesh, mode=result.mode, injection=result.injection, caught=result.caught,
            caught_by=json.dumps(result.caught_by), also_fired=json.dumps(result.also_fired),
            missed_by=json.dumps(result.missed_by), seconds=result.seconds, at=datetime.now(UTC)))


def drill_history(registry: Any, mode: str | None = None) -> list[dict[str, Any]]:
    import json

    import sqlalchemy as sa

    from depmesh.registry.schema import drills

    query = sa.select(drills).where(drills.c.mesh == registry.mesh)
    if mode:
        query = query.where(drills.c.mode == mode)
    with registry.engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(query.order_by(drills.c.id))]
    for row in rows:
        for key in ("caught_by", "also_fired", "missed_by"):
            row[key] = json.loads(row[key])
    return rows


def drillable(catalogue: FailureCatalogue, wanted: list[str]) -> list[FailureMode]:
    """The modes to drill: those named (each must declare a drill), else every mode that declares one."""
    if wanted:
        modes = [catalogue.mode(w) for w in wanted]
        missing = [m.id for m in modes if not m.drill]
        if missing:
            raise DrillError(f"no drill injection declared for {', '.join(missing)} (add drill: to the mode)")
        return modes
    return [m for m in catalogue.modes if m.drill]

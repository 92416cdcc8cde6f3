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

from depmesh.failure_modes.catalogue import FailureCatalogue, FailureMode


# Process faults a drill can inject, besides the simulation's data injections ("NODE:COLUMN:op"):
#   kill-step:NODE             the step building NODE dies (SIGKILL) as it starts, in a multiprocess run
#                              (the run's depmesh/drill_fault tag asks for it)
#   unreachable-database:NODE  the registry's database cannot be reached while NODE runs (a closed port)
PROCESS_FAULTS = ("kill-step", "unreachable-database")
UNREACHABLE_URL = "postgresql://depmesh-drill@127.0.0.1:9/unreachable?connect_timeout=2"
DRILL_SAMPLE = 0.05


class DrillError(ValueError):
    """A drill that cannot run: the mode has no injection, or production lacks the data."""


def process_fault(drill: str) -> tuple[str, str] | None:
    """(fault, node) for a process-fault drill, else None (a data injection)."""
    fault, _, node = drill.partition(":")
    return (fault, node) if fault in PROCESS_FAULTS else None


def check_drill(drill: str, mesh: Any) -> None:
    """Raise (InjectionError) when ``drill`` is neither a process fault on a node of ``mesh`` nor a data injection."""
    from depmesh.simulate import InjectionError, parse_injection

    fault = process_fault(drill)
    if fault is None:
        parse_injection(drill, mesh)
    elif fault[1] not in mesh.names:
        raise InjectionError(f"{fault[0]}: unknown node {fault[1]!r} in mesh {mesh.name}")


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
    import tempfile

    from dagster import DagsterInstance

    from depmesh import graph
    from depmesh.automation.routing import failed_steps
    from depmesh.instance import EMBEDDED_CONFIG, POSTGRES_ENV
    from depmesh.assets.factory import DRILL_FAULT_TAG, REGISTRY_KEY
    from depmesh.runs import run_mesh

    fault, node = process_fault(mode.drill or "")
    started = time.perf_counter()
    selection = sorted({*graph.upstream(mesh.inputs_map(), node), node})
    # the fault travels with the run (a tag, the resource's config), not in this process's environment: step
    # processes may come from a fork server started before this drill, with the environment of that time
    tags = {DRILL_FAULT_TAG: mode.drill} if fault == "kill-step" else {}
    run_config = ({"resources": {REGISTRY_KEY: {"config": {"url": UNREACHABLE_URL}}}}
                  if fault == "unreachable-database" else {})
    with tempfile.TemporaryDirectory(prefix="depmesh-drill-") as home:
        Path(home, "dagster.yaml").write_text(EMBEDDED_CONFIG, encoding="utf-8")  # never production's database
        with _environment(DAGSTER_HOME=home, **{POSTGRES_ENV: ""}):
            instance = DagsterInstance.from_config(home)
            try:
                outcome = run_mesh(mesh.path, instance, sample=sample, executor="multiprocess", mesh=mesh,
                                   selection=selection, tags=tags, run_config=run_config)
                steps = failed_steps(mesh, outcome.result.get_step_failure_events())
            finally:
                instance.dispose()
    fired = [d.label for step, error in steps for d in mode.detected_by if d.catches_run_failure(step, error)]
    return _verdict(mode, fired, started, [step for step, _ in steps])


def record_drill(registry: Any, result: DrillResult) -> None:
    import json

    from depmesh.registry.schema import drills

    with registry._write() as conn:
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

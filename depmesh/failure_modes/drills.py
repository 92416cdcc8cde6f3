"""Drills: inject a failure mode's fault into a copy of production (the
simulation's ephemeral instance; production is only read) and verify that the
checks the catalogue says detect it catch it: caught or missed, by which
check, after how long. Results are recorded in the registry database."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from depmesh.failure_modes.catalogue import FailureCatalogue, FailureMode


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
    from depmesh.simulate import simulate

    if not mode.drill:
        raise DrillError(f"failure mode {mode.id} declares no drill injection (drill: \"NODE:COLUMN:nulls=0.3\" ...)")
    started = time.perf_counter()
    report = simulate(mesh, [mode.drill], production_instance, storage)
    fired = fired_checks(report)
    declared = [f"{d.node}:{d.check}" for d in mode.detected_by]
    caught_by = [c for c in declared if c in fired]
    return DrillResult(mode=mode.id, injection=mode.drill, caught=bool(caught_by), caught_by=caught_by,
                       also_fired=[c for c in dict.fromkeys(fired) if c not in declared],
                       missed_by=[c for c in declared if c not in fired], seconds=round(time.perf_counter() - started, 2),
                       stopped_at=report.stopped_at)


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

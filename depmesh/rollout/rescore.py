"""Re-scoring: after a stage change, materialize again what serves differently, and nothing else.

A promotion, a rollback (whole or per node), a canary step or a canary's end
changes which model versions the registry says serve. ``stale_scores``
(depmesh.rollout.production) compares each scores node's latest
materialization with the registry; ``selection`` adds the consumers
downstream of them (never a model: nothing is retrained). ``rescore`` runs it
at once in this process (the commands' ``--rescore``); under the daemon the
``serve_production`` sensor requests the same run, keyed by the registry's
revision and what is stale, so a second evaluation launches nothing and two
stage changes in quick succession end with the last one served (each scores
step reads the registry when it runs, and its blocking ``served_set`` check
refuses a table whose set moved while it was built).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from depmesh.keys import RESCORE_TAG, REVISION_TAG, TRIGGER_TAG
from depmesh.rollout.production import (  # noqa: F401 - the plan lives with the Production set; re-exported
    SERVING_PAGE,
    rescore_key,
    selection,
    stale_scores,
)


@dataclass
class Rescore:
    stale: dict[str, str]  # node -> why it was stale
    selection: list[str]  # what was materialized again: the stale scores, their consumers, the serving page
    outcome: Any = None  # depmesh.runs.RunOutcome, None when nothing was stale

    @property
    def ok(self) -> bool:
        return self.outcome is None or self.outcome.ok


def rescore(catalog: Any, instance: Any, registry: Any, mesh: Any, *, trigger: str = "cli") -> Rescore:
    """Materialize the stale scores and their consumers now, in this process; nothing when none is stale."""
    from depmesh.runs import run_mesh

    stale = stale_scores(instance, registry, mesh)
    if not stale:
        return Rescore({}, [])
    chosen = selection(mesh, stale) + [SERVING_PAGE.format(mesh=mesh.name)]
    revision = registry.state()["revision"]
    tags = {TRIGGER_TAG: f"rescore:{trigger}", RESCORE_TAG: rescore_key(mesh, revision, stale),
            REVISION_TAG: str(revision)}
    outcome = run_mesh(catalog, instance, mesh=mesh, selection=chosen, tags=tags)
    return Rescore(stale, chosen, outcome)


__all__ = ["RESCORE_TAG", "Rescore", "rescore", "rescore_key", "selection"]

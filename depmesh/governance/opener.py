"""The one way to a mesh's registry: migrated, verifying artifacts, governed by the mesh's policy.

The command line, the Dagster resource (assets, stage jobs, sensors, canary steps, drills) and every job open the
registry here, so a promotion or rollback made by any of them obeys the same rules (depmesh.governance.rules).
"""

from __future__ import annotations

from typing import Any

from depmesh.governance.rules import policy_for
from depmesh.registry.store import Registry, open_registry

_FROM_MESH = object()


def govern(registry: Registry, teams: Any, dependency_policy: Any) -> Registry:
    """``registry`` (shared engine) under the policy of a mesh with these teams and dependency policy."""
    return registry.governed_by(policy_for(teams, dependency_policy))


def open_governed(url: str, mesh: Any, artifacts: Any = None, *, teams: Any = _FROM_MESH) -> Registry:
    """The registry at ``url`` for ``mesh`` (a MeshSpec), its schema migrated, artifacts verified in
    ``artifacts``, under the mesh's policy: its teams (read from beside the catalog unless given; None for none)
    and its catalog's dependency policy."""
    if teams is _FROM_MESH:
        from depmesh.teams import load_teams

        teams = load_teams(mesh)
    return govern(open_registry(url, mesh.name, artifacts), teams, mesh.dependencies)

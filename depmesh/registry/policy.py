"""The hook through which a mesh's governance reaches the registry.

The registry does not know what makes a promotion allowed: it calls a stage-change policy at fixed points, inside
the transaction of the change and under the mesh lock, so a rule sees exactly the state the change is made on and
a refusal (an exception) commits nothing. ``depmesh.governance`` builds the policy of a mesh (approvals, on-call,
dependency conflicts, vulnerabilities) and its opener is the one way every path gets a registry governed by it.

This base class allows everything; a registry opened without a policy (a test, a simulation's scratch registry)
has it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class StagePolicy:
    """Hooks called by ``depmesh.registry.store.Registry`` around its stage changes.

    ``teams`` is the teams declaration the changes are made under (None: none). The registry itself compares it
    with the declaration it recorded for the mesh (``Registry.check_declaration``): that is the registry's record,
    not a rule, and holds under every policy.
    """

    teams: Any = None

    def before_release(self, registry: Any, conn: Any, members: Mapping[str, str], needs: Mapping[str, Any]) -> None:
        """A release of ``members`` is about to be recorded. ``needs``: node -> recorded requirements."""

    def before_promote(self, registry: Any, conn: Any, release_id: int, members: Mapping[str, str],
                       needs: Mapping[str, Any], actor: str) -> Any:
        """Release ``release_id`` is about to become Production; what is returned reaches ``after_promote``."""
        return None

    def after_promote(self, registry: Any, conn: Any, release_id: int, decision: Any) -> None:
        """The release is Production (same transaction)."""

    def before_rollback(self, registry: Any, actor: str) -> None:
        """``actor`` is about to roll back the mesh's Production release or one model of it."""

    def after_rollback(self, registry: Any, conn: Any, rolled_back_release_id: int) -> None:
        """``rolled_back_release_id`` left Production by a rollback (same transaction)."""


UNGOVERNED = StagePolicy()

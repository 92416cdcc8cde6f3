"""The rules a mesh's stage changes obey, each a ``depmesh.registry.policy.StagePolicy`` the registry calls inside
the transaction of the change (so a refusal commits nothing):

- ``ApprovalRule``: with declared teams, Production needs an approved promotion request whose approvals still
  hold (depmesh.governance.approvals.verify_approvals: in the audit chain as made, from owners, signed where
  required); promotion consumes the request; a rollback voids the rolled-back release's open requests.
- ``ConflictRule``: models released or deployed together must load in one environment (depmesh.deps.check).
- ``VulnerabilityRule``: with advisories in the catalog's dependency policy, a release with a finding at or above
  its severity that no waiver covers is refused (depmesh.deps.audit).
- ``OnCallRule``: with declared teams, only an on-call member rolls back (depmesh's own actors may).

A new rule is a class here and one line in ``policy_for``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from depmesh.deps.audit import blocking_findings
from depmesh.deps.check import conflict_message, member_conflicts
from depmesh.governance.approvals import (
    approved_request,
    mark_promoted,
    verify_approvals,
    void_open,
)
from depmesh.governance.waivers import waivers
from depmesh.registry.policy import StagePolicy
from depmesh.registry.store import SYSTEM_ACTOR, ApprovalRequired, RegistryError
from depmesh.teams import ActorError


class ApprovalRule(StagePolicy):
    def __init__(self, teams: Any):
        self.teams = teams

    def before_promote(self, registry, conn, release_id, members, needs, actor):
        if self.teams is None:
            return None
        request_id = approved_request(conn, registry.mesh, release_id)
        if request_id is None:
            raise ApprovalRequired(f"release {release_id} needs approval before Production (mesh {registry.mesh} "
                                   f"declares its teams): depmesh release request {release_id} --reason TEXT, then "
                                   "its approvers run depmesh release approve REQUEST")
        problems = verify_approvals(conn, registry, self.teams, request_id)
        if problems:
            raise ApprovalRequired(f"release {release_id} is refused: request {request_id}'s approvals do not hold: "
                                   + "; ".join(problems))
        return request_id

    def after_promote(self, registry, conn, release_id, decision):
        if decision is not None:
            mark_promoted(conn, decision)

    def after_rollback(self, registry, conn, rolled_back_release_id):
        void_open(conn, registry.mesh, rolled_back_release_id)  # no old approval brings a rolled-back release back


class ConflictRule(StagePolicy):
    @staticmethod
    def _refuse(needs: Mapping[str, Any], what: str) -> None:
        conflicts = member_conflicts(needs)
        if conflicts:
            raise RegistryError(conflict_message(what, conflicts))

    def before_release(self, registry, conn, members, needs):
        self._refuse(needs, "this release")

    def before_promote(self, registry, conn, release_id, members, needs, actor):
        self._refuse(needs, f"release {release_id}")


class VulnerabilityRule(StagePolicy):
    def __init__(self, dependency_policy: Any):
        self.dependency_policy = dependency_policy

    def before_promote(self, registry, conn, release_id, members, needs, actor):
        policy = self.dependency_policy
        if policy is None or not policy.advisories:
            return None
        blocked = blocking_findings(dict(needs), policy, waivers(registry, conn, release_id))
        if blocked:
            listed = "; ".join(f"{f['advisory']} ({f['severity']}) in {f['package']} {f['version']}, needed by "
                               f"{', '.join(f['models'])}" for f in blocked)
            raise RegistryError(f"release {release_id} is refused: known vulnerabilities at or above "
                                f"{policy.block_severity}: {listed}. Upgrade and retrain, or waive one with "
                                "depmesh deps waive ADVISORY --package P --reason TEXT")
        return None


class OnCallRule(StagePolicy):
    def __init__(self, teams: Any):
        self.teams = teams

    def before_rollback(self, registry, actor):
        if self.teams is None or actor.startswith(SYSTEM_ACTOR + "/"):
            return
        try:
            self.teams.require_member(actor, "on-call", "roll back")
        except ActorError as exc:
            raise RegistryError(str(exc)) from None


class MeshPolicy(StagePolicy):
    """The rules of one mesh, applied in order (the first refusal wins)."""

    def __init__(self, teams: Any, rules: list[StagePolicy]):
        self.teams, self.rules = teams, rules

    def before_release(self, registry, conn, members, needs):
        for rule in self.rules:
            rule.before_release(registry, conn, members, needs)

    def before_promote(self, registry, conn, release_id, members, needs, actor):
        return [rule.before_promote(registry, conn, release_id, members, needs, actor) for rule in self.rules]

    def after_promote(self, registry, conn, release_id, decision):
        for rule, own in zip(self.rules, decision, strict=True):
            rule.after_promote(registry, conn, release_id, own)

    def before_rollback(self, registry, actor):
        for rule in self.rules:
            rule.before_rollback(registry, actor)

    def after_rollback(self, registry, conn, rolled_back_release_id):
        for rule in self.rules:
            rule.after_rollback(registry, conn, rolled_back_release_id)


def policy_for(teams: Any, dependency_policy: Any) -> MeshPolicy:
    """The stage-change policy of a mesh with these teams (or None) and this dependency policy (or None)."""
    return MeshPolicy(teams, [
        ApprovalRule(teams), ConflictRule(), VulnerabilityRule(dependency_policy), OnCallRule(teams)])

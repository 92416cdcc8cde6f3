"""A decision on a promotion request and what the last approval does: promote the release, or start its canary."""

from __future__ import annotations

from typing import Any

from depmesh.governance.approvals import decide
from depmesh.rollout.serving import start


def decide_and_apply(registry: Any, mesh: Any, teams: Any, request_id: int, *, actor: str, reason: str,
                     approve: bool, signature: str | None = None) -> dict[str, Any]:
    """A decision, and what the last approval does: promote the release, or start its canary.
    Returns {request, action: rejected | waiting | promoted | canary, release?: dict, rollout?: dict}."""
    request = decide(registry, teams, request_id, actor=actor, reason=reason, approve=approve, signature=signature)
    if not approve:
        return {"request": request, "action": "rejected"}
    if request["status"] != "approved":
        return {"request": request, "action": "waiting"}
    release_id = request["release_id"]
    if request["rollout"] == "canary":
        rollout = start(registry, mesh, teams, release_id, mode="canary", actor=actor,
                        reason=f"request {request_id} approved: {reason}")
        return {"request": request, "action": "canary", "rollout": rollout}
    release = registry.promote(release_id, actor=actor,
                               reason=f"request {request_id} approved ({request['reason']}): {reason}")
    return {"request": request, "action": "promoted", "release": release}

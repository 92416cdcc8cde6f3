"""Stage changes from the Dagster UI: request, approve, reject, promote and roll back, one job each.

Each job takes typed config (the launchpad scaffolds it: release or request id, actor, reason) and does what
the command of the same name does, through the same library functions and the same governance (approvals
when the mesh declares its teams, an on-call member to roll back, DEPMESH_IDENTITY binding the actor). A
refusal fails the run with a ``Failure`` whose description names what is missing and who must act. Every
stage change shows as observations on the models and the release asset; the ``serve_production`` sensor then
re-scores what serves differently.
"""


from typing import Any

from dagster import Config, Failure, OpExecutionContext, job, op
from pydantic import Field

from depmesh.assets.release import release_key
from depmesh.keys import REGISTRY_KEY

ACTOR_HELP = ("Who acts (recorded in the audit trail). Checked like --actor on the command line: a member of the "
              "mesh's teams, and the bound identity when DEPMESH_IDENTITY is set.")
REASON_HELP = "Why (recorded in the audit trail)."


class PromoteConfig(Config):
    release_id: int = Field(description="The release to make Production (depmesh release list).")
    actor: str = Field(description=ACTOR_HELP)
    reason: str = Field(description=REASON_HELP)


class RequestConfig(Config):
    release_id: int = Field(description="The Staging release to ask a promotion for.")
    actor: str = Field(description=ACTOR_HELP)
    reason: str = Field(description="Why this release should go to Production.")
    canary: bool = Field(default=False, description="Once approved, roll it out by the catalog's canary steps.")


class DecideConfig(Config):
    request_id: int = Field(description="The promotion request (depmesh release requests).")
    actor: str = Field(description=ACTOR_HELP)
    reason: str = Field(description=REASON_HELP)
    signature: str = Field(default="", description="Approving where teams.yaml requires signatures: base64 ed25519 "
                                                   "signature over `depmesh release payload REQUEST --actor YOU`.")


class RollbackConfig(Config):
    actor: str = Field(description=ACTOR_HELP + " Must be on call when the mesh declares its teams.")
    reason: str = Field(description=REASON_HELP)
    node: str = Field(default="", description="Roll back this model alone (empty: the whole Production release).")
    with_dependents: bool = Field(default=False, description="With node: also the models trained against it.")


def _refused(doing: str, exc: Exception) -> Failure:
    return Failure(description=f"{doing} refused: {exc}", metadata={"refused": str(exc)}, allow_retries=False)


def _governed(context: OpExecutionContext, mesh: Any, teams: Any, actor: str, doing: str) -> tuple[Any, str]:
    """The registry governed as the command line governs it, and the actor as DEPMESH_IDENTITY binds it."""
    from depmesh.governance import govern
    from depmesh.teams import ActorError, resolve_actor

    try:
        actor = resolve_actor(actor)
    except ActorError as exc:
        raise _refused(doing, exc) from None
    registry = getattr(context.resources, REGISTRY_KEY).registry
    return govern(registry, teams, mesh.dependencies), actor


def _acting(doing: str, fn):
    from depmesh.registry.store import RegistryError
    from depmesh.teams import ActorError

    try:
        return fn()
    except (RegistryError, ActorError) as exc:
        raise _refused(doing, exc) from None


def _report(context: OpExecutionContext, registry: Any, before: int, teams: Any) -> None:
    from depmesh.assets.stages import stage_observations
    from depmesh.notify import deliver_quietly

    for event in stage_observations(registry, registry.history(after_id=before), release_key(registry.mesh)):
        context.log_event(event)
    if teams is not None:
        deliver_quietly(registry, teams, context.log.warning)
    context.log.info("depmesh: the serve_production sensor re-scores what now serves differently "
                     "(or: depmesh serving rescore)")


def _promote(context: OpExecutionContext, mesh: Any, teams: Any, config: PromoteConfig) -> None:
    doing = f"promoting release {config.release_id}"
    registry, actor = _governed(context, mesh, teams, config.actor, doing)
    before = registry.last_transition_id()
    release = _acting(doing, lambda: registry.promote(config.release_id, actor=actor, reason=config.reason))
    _report(context, registry, before, teams)
    context.log.info(f"release {config.release_id} is Production: {release['members']}")


def _request(context: OpExecutionContext, mesh: Any, teams: Any, config: RequestConfig) -> None:
    from depmesh.governance.approvals import request_promotion

    doing = f"requesting the promotion of release {config.release_id}"
    if teams is None:
        raise Failure(description=f"{doing}: mesh {mesh.name} declares no teams, so no approval is needed: "
                                  "run the promote_release job", allow_retries=False)
    registry, actor = _governed(context, mesh, teams, config.actor, doing)
    request = _acting(doing, lambda: request_promotion(registry, mesh, teams, config.release_id, actor=actor,
                                                        reason=config.reason, canary=config.canary))
    _report(context, registry, registry.last_transition_id(), teams)
    waiting = "; ".join(f"{w['team']} ({', '.join(w['owners'])})" for w in request["waiting_for"])
    context.log.info(f"promotion request {request['id']} for release {config.release_id}: waiting for {waiting}")


def _decide(context: OpExecutionContext, mesh: Any, teams: Any, config: DecideConfig, approve: bool) -> None:
    from depmesh.rollout.decisions import decide_and_apply

    doing = f"{'approving' if approve else 'rejecting'} promotion request {config.request_id}"
    if teams is None:
        raise Failure(description=f"{doing}: mesh {mesh.name} declares no teams, so there are no requests",
                      allow_retries=False)
    registry, actor = _governed(context, mesh, teams, config.actor, doing)
    before = registry.last_transition_id()
    done = _acting(doing, lambda: decide_and_apply(registry, mesh, teams, config.request_id, actor=actor,
                                                   reason=config.reason, approve=approve,
                                                   signature=(config.signature or None) if approve else None))
    _report(context, registry, before, teams)
    request = done["request"]
    context.log.info({
        "rejected": f"request {config.request_id} rejected: release {request['release_id']} stays where it is",
        "waiting": f"approved by {actor}; still waiting for "
                   + "; ".join(w["team"] for w in request["waiting_for"]),
        "promoted": f"approved by every team concerned: release {request['release_id']} is Production",
        "canary": f"approved by every team concerned: the canary of release {request['release_id']} started",
    }[done["action"]])


def _rollback(context: OpExecutionContext, mesh: Any, teams: Any, config: RollbackConfig) -> None:
    from depmesh.governance.approvals import notify_change

    doing = f"rolling back {config.node or 'the Production release'}"
    registry, actor = _governed(context, mesh, teams, config.actor, doing)
    before = registry.last_transition_id()
    if config.node:
        moves = _acting(doing, lambda: registry.rollback_model(config.node, actor=actor, reason=config.reason,
                                                               with_dependents=config.with_dependents))
        nodes = sorted(moves)
    else:
        release = _acting(doing, lambda: registry.rollback(actor=actor, reason=config.reason))
        nodes = sorted(release["members"])
    if teams is not None:
        notify_change(registry, mesh, teams, "rollback", nodes, by=actor, reason=config.reason)
    _report(context, registry, before, teams)


def build_stage_jobs(mesh: Any, teams: Any) -> list[Any]:
    """The five jobs of ``mesh``; ``teams``: its declared teams (None: no approvals required)."""

    @op(name="promote_release_op", required_resource_keys={REGISTRY_KEY},
        description="Make every version of a release Production at once (atomic); needs an approved request when "
                    "the mesh declares its teams.")
    def promote_release_op(context: OpExecutionContext, config: PromoteConfig) -> None:
        _promote(context, mesh, teams, config)

    @op(name="request_promotion_op", required_resource_keys={REGISTRY_KEY},
        description="Ask for a release to go to Production; the teams that must approve are notified.")
    def request_promotion_op(context: OpExecutionContext, config: RequestConfig) -> None:
        _request(context, mesh, teams, config)

    @op(name="approve_request_op", required_resource_keys={REGISTRY_KEY},
        description="Approve a promotion request for every required team of which the actor is an owner; the last "
                    "approval promotes the release (or starts its canary).")
    def approve_request_op(context: OpExecutionContext, config: DecideConfig) -> None:
        _decide(context, mesh, teams, config, approve=True)

    @op(name="reject_request_op", required_resource_keys={REGISTRY_KEY},
        description="Reject a promotion request (an owner of a team that must approve it).")
    def reject_request_op(context: OpExecutionContext, config: DecideConfig) -> None:
        _decide(context, mesh, teams, config, approve=False)

    @op(name="rollback_release_op", required_resource_keys={REGISTRY_KEY},
        description="Make the previous release Production again (or one model, with node); an on-call member when "
                    "the mesh declares its teams.")
    def rollback_release_op(context: OpExecutionContext, config: RollbackConfig) -> None:
        _rollback(context, mesh, teams, config)

    def one(name: str, the_op: Any, description: str) -> Any:
        @job(name=name, description=description, tags={"depmesh/mesh": mesh.name})
        def _job() -> None:
            the_op()

        return _job

    return [
        one("promote_release", promote_release_op, "Make every version of a release Production at once; archive "
            "what it replaces."),
        one("request_promotion", request_promotion_op, "Ask for a release to go to Production (the teams that must "
            "approve are notified)."),
        one("approve_request", approve_request_op, "Approve a promotion request; the last approval promotes."),
        one("reject_request", reject_request_op, "Reject a promotion request."),
        one("rollback_release", rollback_release_op, "Roll back the Production release, or one model."),
    ]


__all__ = ["build_stage_jobs"]

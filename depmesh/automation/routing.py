"""Route failures and changes to the teams that own them: the run-failure
sensor records incidents for the failure modes a failed step matches, and the
delivery sensor posts queued notifications to teams' webhooks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dagster import DefaultSensorStatus, SkipReason, run_failure_sensor, sensor

from depmesh.catalog import MeshSpec

INCIDENT_SENSOR = "incidents_on_run_failure"
DELIVERY_SENSOR = "deliver_notifications"


def error_text(error: Any) -> str:
    """A step's error with its causes, as the run-failure detectors' ``match`` sees it."""
    parts, seen = [], 0
    while error is not None and seen < 10:
        parts.append(f"{error.cls_name}: {error.message.strip()}")
        error, seen = error.cause or getattr(error, "context", None), seen + 1
    return "\n".join(parts)


def failed_steps(mesh: MeshSpec, step_failures: list) -> list[tuple[str, str]]:
    """(node, error text) for each failed step that builds a node of the mesh."""
    from depmesh.assets.factory import asset_key

    by_step = {asset_key(n.name).to_python_identifier(): n.name for n in mesh.nodes}
    out = []
    for event in step_failures:
        node = by_step.get(event.step_key or "")
        if node is not None:
            error = getattr(event.event_specific_data, "error", None)
            out.append((node, error_text(error) if error is not None else event.message or ""))
    return out


def incidents_for_failed_run(mesh: MeshSpec, catalogue: Any, registry: Any, run_id: str,
                             steps: list[tuple[str, str]]) -> list[tuple[dict, bool]]:
    """Record an incident for each failure mode a failed step matches (version: the node's code version)."""
    from depmesh.assets.factory import node_code_version
    from depmesh.failure_modes.incidents import record_run_failure

    found = []
    for node, error in steps:
        found += record_run_failure(registry, catalogue.teams, catalogue, node=node,
                                    version=node_code_version(mesh.node(node)), error=error, run_id=run_id)
    return found


def instance_registry(mesh: MeshSpec, instance: Any) -> Any:
    """The registry of ``mesh`` beside ``instance`` (as the registry resource's default finds it), under the
    mesh's policy."""
    from depmesh.artifacts import ArtifactStore
    from depmesh.assets.io import artifacts_location
    from depmesh.governance import open_governed
    from depmesh.registry.store import default_url

    return open_governed(default_url(Path(instance.root_directory)), mesh,
                         ArtifactStore(artifacts_location(instance)))


def build_incident_sensor(mesh: MeshSpec, catalogue: Any):
    @run_failure_sensor(name=INCIDENT_SENSOR, default_status=DefaultSensorStatus.RUNNING,
                        description="When a run fails, record an incident for each failure mode of "
                                    f"{catalogue.path.name} whose run-failure detector matches a failed step, and "
                                    "notify the mode's owner team once per mode, node and version.")
    def incidents_on_run_failure(context):
        steps = failed_steps(mesh, context.get_step_failure_events())
        if not steps:
            return SkipReason(f"run {context.dagster_run.run_id} failed outside the mesh's steps")
        registry = instance_registry(mesh, context.instance)
        try:
            found = incidents_for_failed_run(mesh, catalogue, registry, context.dagster_run.run_id, steps)
            from depmesh.notify import deliver_quietly

            deliver_quietly(registry, catalogue.teams, context.log.warning)
        finally:
            registry.dispose()
        if not found:
            return SkipReason(f"no failure mode matches the failed steps of {context.dagster_run.run_id}: "
                              + ", ".join(node for node, _ in steps))
        context.log.info("depmesh: incidents " + ", ".join(f"{i['id']} {i['mode']}@{i['node']}"
                                                          f"{'' if new else ' (seen again)'}" for i, new in found))
        return None

    return incidents_on_run_failure


def build_delivery_sensor(mesh: MeshSpec, teams: Any):
    @sensor(name=DELIVERY_SENSOR, minimum_interval_seconds=30, default_status=DefaultSensorStatus.RUNNING,
            description="Post the notifications queued by registry changes and incidents to the owner teams' "
                        "webhooks (bounded retries; a failing webhook never blocks a change).")
    def deliver_notifications(context):
        from depmesh.notify import deliver

        registry = instance_registry(mesh, context.instance)
        try:
            counts = deliver(registry, teams)
        finally:
            registry.dispose()
        return SkipReason(f"sent {counts['sent']}, to retry {counts['retry']}, given up {counts['failed']}")

    return deliver_notifications


CANARY_SENSOR = "canary_rollouts"


def build_canary_sensor(mesh: MeshSpec, teams: Any):
    @sensor(name=CANARY_SENSOR, minimum_interval_seconds=60, default_status=DefaultSensorStatus.RUNNING,
            description="Judge the active canary's step against the catalog's rollout thresholds once its candidate "
                        "arm has the step's rows: advance it, promote the release after the last step, or roll the "
                        "candidate back (actor depmesh/canary).")
    def canary_rollouts(context):
        from depmesh.notify import deliver_quietly
        from depmesh.rollout.canary import advance

        registry = instance_registry(mesh, context.instance)
        try:
            outcome = advance(registry, mesh, teams)
            deliver_quietly(registry, teams, context.log.warning)
        finally:
            registry.dispose()
        if outcome is None:
            return SkipReason("no canary is active")
        return SkipReason(f"rollout {outcome['rollout']} step {outcome['step'] + 1}: {outcome['verdict']}"
                          + (f", {outcome['action']}" if outcome.get("action") else "") + ": "
                          + "; ".join(outcome["reasons"])[:800])

    return canary_rollouts

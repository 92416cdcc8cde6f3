"""Jobs for manual launches (one per domain) and the retraining schedules
that models declare in the catalog."""

from __future__ import annotations

from dagster import (
    AssetSelection,
    DefaultScheduleStatus,
    ScheduleDefinition,
    define_asset_job,
)

from depmesh.assets import asset_key
from depmesh.automation.sensors import TRIGGER_TAG
from depmesh.catalog import KIND_GROUPS, MeshSpec
from depmesh.kinds import NODE_KINDS

DOMAIN_DESCRIPTIONS = {kind.group: kind.job_description for kind in NODE_KINDS.values()}


def domain_jobs(mesh: MeshSpec, exclude: AssetSelection | None = None) -> list:
    """One job per node group; ``exclude``: checks no job runs (the freshness checks: their sensor does)."""
    groups = [g for g in KIND_GROUPS.values() if any(n.group == g for n in mesh.nodes)]
    return [
        define_asset_job(f"{group}_job", selection=AssetSelection.groups(group) - exclude if exclude is not None
                         else AssetSelection.groups(group),
                         description=DOMAIN_DESCRIPTIONS[group], tags={"depmesh/domain": group})
        for group in groups
    ]


def retrain_schedules(mesh: MeshSpec) -> list[ScheduleDefinition]:
    schedules = []
    for node in mesh.nodes:
        if node.model is None or not node.model.schedule:
            continue
        short = node.name.replace("/", "__")
        schedules.append(ScheduleDefinition(
            name=f"retrain_{short}",
            cron_schedule=node.model.schedule,
            execution_timezone="UTC",
            target=AssetSelection.assets(asset_key(node.name)),
            default_status=DefaultScheduleStatus.RUNNING,
            tags={TRIGGER_TAG: f"schedule {node.model.schedule}"},
            description=f"Retrain {node.name} on its catalog schedule; its dependents follow through the sensor.",
        ))
    return schedules

"""Staleness as an asset check: a contract's ``freshness: {max_age}`` (without a column) is also Dagster's own
last-update freshness check (``freshness_check`` on the node), evaluated by a sensor every few minutes, so a
source that stops arriving fails a check that the failure-mode catalogue (FM-STALE) and the incident routing see
like any other. The contract's severity is the check's: ERROR fails, WARN warns.

Dagster 1.11+ marks these factories as superseded by ``FreshnessPolicy`` (which depmesh attaches as well, for the
UI's freshness state); a policy's state is not an asset check, and a check is what gates, incidents and the
failure-mode catalogue read, so both are kept and the supersession warning is silenced here."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from depmesh.catalog import MeshSpec
from depmesh.catalog.spec import freshness_bounded
from depmesh.keys import FRESHNESS_CHECK

FRESHNESS_SENSOR_INTERVAL_S = 300


def build_freshness_checks(mesh: MeshSpec) -> tuple[list[Any], Any]:
    """(the freshness checks, the sensor that evaluates them) of the mesh; ([], None) when no node has one."""
    import warnings

    from dagster import (
        AssetCheckSeverity,
        AssetKey,
        DefaultSensorStatus,
        build_last_update_freshness_checks,
        build_sensor_for_freshness_checks,
    )

    checks: list[Any] = []
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is superseded.*")
        for node in freshness_bounded(mesh):
            bound = node.contract.freshness
            checks += build_last_update_freshness_checks(
                assets=[AssetKey(node.name.split("/"))], lower_bound_delta=timedelta(hours=bound.max_age_hours),
                severity=AssetCheckSeverity.ERROR if bound.severity == "ERROR" else AssetCheckSeverity.WARN)
        if not checks:
            return [], None
        sensor = build_sensor_for_freshness_checks(
            freshness_checks=checks, minimum_interval_seconds=FRESHNESS_SENSOR_INTERVAL_S,
            name=f"{mesh.name.replace('-', '_')}_freshness_checks", default_status=DefaultSensorStatus.RUNNING)
    return checks, sensor


__all__ = ["FRESHNESS_CHECK", "build_freshness_checks"]

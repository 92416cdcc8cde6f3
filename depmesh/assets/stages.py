"""Stage changes as events in the Dagster UI.

The registry does not know Dagster; what it records (promotions, rollbacks,
releases moving versions to Staging) is shown on the assets it concerns as
observations: on each model, the version that moved, from and to which stage,
who, why, when and in which release, and the version now in Production; on
the release asset, what the mesh's Production release now is. Each model's
page then says its current stage and which version is in Production."""

from __future__ import annotations

from typing import Any

from dagster import AssetObservation

from depmesh.assets.factory import asset_key

STAGE_KEY = "depmesh/stage"
PRODUCTION_KEY = "depmesh/production_version"


def stage_observations(registry: Any, transitions: list[dict[str, Any]], release_asset: Any) -> list[AssetObservation]:
    """One observation per stage change (on its model), and one on the release
    asset when any happened."""
    if not transitions:
        return []
    production = registry.production()
    out = []
    for t in transitions:
        out.append(AssetObservation(
            asset_key=asset_key(t["node"]),
            description=f"{t['version']}: {t['from_stage'] or 'new'} -> {t['to_stage']} by {t['actor']}",
            metadata={"depmesh/version": t["version"], STAGE_KEY: t["to_stage"],
                      "depmesh/from_stage": t["from_stage"] or "-", "depmesh/actor": t["actor"],
                      "depmesh/reason": t["reason"], "depmesh/release_id": t["release_id"] or 0,
                      "depmesh/at": str(t["at"])[:19], PRODUCTION_KEY: production.get(t["node"]) or "none"}))
    state = registry.state()
    pointer = state["production_release_id"]
    status = registry.release(pointer)["status"] if pointer else "none"
    last = transitions[-1]
    out.append(AssetObservation(
        asset_key=release_asset,
        description=f"{len(transitions)} stage change(s) by {last['actor']}: {last['reason']}",
        metadata={"depmesh/production_release": pointer or 0, "depmesh/production_release_status": status,
                  "depmesh/actor": last["actor"], "depmesh/reason": last["reason"],
                  "depmesh/changes": "\n".join(f"{t['node']}@{t['version']}: {t['from_stage'] or 'new'} -> "
                                               f"{t['to_stage']}" for t in transitions),
                  "depmesh/production": "\n".join(f"{n}@{v}" for n, v in sorted(production.items())) or "none"}))
    return out


def report_stage_changes(instance: Any, registry: Any, after_id: int, release_asset: Any) -> int:
    """Record the registry's stage changes after audit entry ``after_id`` on
    ``instance``; returns how many observations were written."""
    events = stage_observations(registry, registry.history(after_id=after_id), release_asset)
    for event in events:
        instance.report_runless_asset_event(event)
    return len(events)

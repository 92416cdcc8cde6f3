"""A scores step's serving: the Production set (or candidate) it serves, an active rollout's arms, and the served_set and rollout verdicts."""

from __future__ import annotations

from typing import Any

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    MetadataValue,
)

from depmesh.assets.declare import asset_key
from depmesh.assets.verdicts import _fmt4, annotate_verdict
from depmesh.catalog import NodeSpec
from depmesh.keys import (
    DRILL_FAULT_TAG,
    NOT_RUN_KEY,
    REGISTRY_KEY,
    SERVED_BY_KEY,
    SERVED_CHECK,
    SERVING_KEY,
    SIGNATURE_KEY,
)


def _active_rollout(context: Any) -> Any:
    """The mesh's active rollout (depmesh.rollout.serving), if any: a scores step serves its candidate."""
    from depmesh.rollout.serving import active_rollout

    return active_rollout(getattr(context.resources, REGISTRY_KEY).registry)


def _serve(node: NodeSpec, inputs: dict[str, Any], builder: Any, ctx: Any, context: Any, rollout: Any) -> Any:
    """Score with Production's and the candidate's models (shadow or canary); None when no candidate feeds it."""
    from depmesh.rollout.arms import record, serve

    registry = getattr(context.resources, REGISTRY_KEY).registry
    served = serve(node, inputs, builder, ctx, registry, rollout)
    if served is not None:
        _, figures = served
        model = next(i for i in node.inputs if i in rollout["candidates"])
        figures["model"], figures["rollout"], figures["step"] = model, rollout["id"], rollout["step"]
        record(registry, rollout, node.name, model, context.run.run_id, figures)
        context.log.info(f"depmesh: {node.name} served by rollout {rollout['id']} ({rollout['mode']}, "
                         f"{figures['percent']:g}% candidate {model}@{figures['candidate']['version'][:12]})")
    return served


def _rollout_result(context: Any, node: NodeSpec, rollout: Any, figures: Any) -> AssetCheckResult:
    """The scores node's ``rollout`` check: the candidate beside Production on this batch (reported, not blocking)."""
    from dataclasses import replace

    from depmesh.rollout.canary import judge, summarize
    from depmesh.rollout.serving import ROLLOUT_CHECK

    if rollout is None or figures is None:
        why = "no rollout is active" if rollout is None else f"rollout {rollout['id']} has no candidate for {node.name}"
        return AssetCheckResult(check_name=ROLLOUT_CHECK, passed=True, description=why)
    summary = summarize([{"model": figures["model"], "figures": figures}])
    step = rollout["plan"].steps[rollout["step"] if rollout["mode"] == "canary" else 0]
    verdict, reasons = judge(summary, replace(step, min_rows=0), [figures["model"]])
    s = summary[figures["model"]]
    table = "\n".join(["| | production | candidate |", "|---|---|---|",
                       f"| version | {figures['production']['version'][:12]} | {figures['candidate']['version'][:12]} |",
                       f"| rows | {s['production']['rows']} | {s['candidate']['rows']} |",
                       f"| {s['metric']} (labelled rows) | {_fmt4(s['production']['metric'])} | "
                       f"{_fmt4(s['candidate']['metric'])} |",
                       f"| predict seconds (whole batch) | {s['production_s']:.3f} | {s['candidate_s']:.3f} |"])
    return AssetCheckResult(
        check_name=ROLLOUT_CHECK, passed=verdict != "break", severity=AssetCheckSeverity.WARN,
        description=f"{rollout['mode']} rollout {rollout['id']} at {figures['percent']:g}%: "
                    + ("; ".join(reasons) or "no threshold set"),
        metadata={"depmesh/rollout": MetadataValue.md(table), "rollout_id": rollout["id"],
                  "prediction_shift": s["shift"], "disagreement_rate": s["disagreement"],
                  "latency_ratio": s["latency_ratio"], "error_rate": s["error_rate"],
                  "candidate_error": figures.get("error") or ""})


def _serving_plan(context: Any, node: NodeSpec, inputs: dict[str, Any], serving_spec: Any) -> Any:
    """What this scores node serves (depmesh.rollout.production): the registry's Production set unless the
    catalog's serving: says otherwise."""
    from depmesh.rollout.production import plan

    registry = getattr(context.resources, REGISTRY_KEY).registry
    return plan(registry, serving_spec, node.name, inputs, registry.mesh)


def _not_served(context: Any, node: NodeSpec, served_plan: Any):
    """No Production version to serve and the catalog says skip: no scores, the served_set verdict says why."""
    from dagster import AssetObservation

    context.log.warning(f"depmesh: {node.name} {served_plan.reason}")
    yield AssetObservation(asset_key=asset_key(node.name), description=served_plan.reason,
                           metadata={NOT_RUN_KEY: served_plan.reason})
    yield annotate_verdict(AssetCheckResult(check_name=SERVED_CHECK, passed=True, severity=AssetCheckSeverity.ERROR,
                                            description=served_plan.reason), None, False, True)


def _served_result(context: Any, served_plan: Any, frame: Any, rollout: Any) -> AssetCheckResult:
    """The scores node's blocking served_set check, judged against the registry as it is now."""
    from depmesh.rollout.production import verify

    registry = getattr(context.resources, REGISTRY_KEY).registry
    if context.run.tags.get(DRILL_FAULT_TAG, "").startswith("served-drift:"):
        from depmesh.rollout.production import retire_for_drill

        retire_for_drill(registry, served_plan)  # the drill's fault: another writer moves Production mid-step
    passed, why = verify(registry, served_plan, frame, rollout)
    record = served_plan.record
    return AssetCheckResult(check_name=SERVED_CHECK, passed=passed, severity=AssetCheckSeverity.ERROR,
                            description=why, metadata={"serving_mode": record["mode"],
                                                       "served_versions": MetadataValue.json(record["versions"]),
                                                       "release_id": record.get("release_id") or 0})


def _served_metadata(served_plan: Any, rollout: Any) -> dict[str, Any]:
    """What served this scores materialization: first on its asset page."""
    from depmesh.rollout.production import signature

    record = served_plan.record
    return {SERVED_BY_KEY: served_plan.sentence(rollout), SERVING_KEY: MetadataValue.json(record),
            SIGNATURE_KEY: signature(record, rollout)}

"""A step's verdicts: gate results and registration, each verdict annotated with what it judged, a blocked node's observations, incidents and failure modes."""

from __future__ import annotations

from typing import Any

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetExecutionContext,
    MetadataValue,
    Output,
)

from depmesh.assets.declare import asset_key
from depmesh.assets.step import (
    LATENCY_P95_KEY,
    _model_metadata,
    _requirements,
    versioned_output,
)
from depmesh.catalog import NodeSpec
from depmesh.keys import (
    BLOCKED_TAG,
    BLOCKING_KEY,
    JUDGED_KEY,
    NOT_RUN_KEY,
    REGISTRY_KEY,
    STORED_KEY,
    TRAINING_KEY,
)
from depmesh.metrics import declared_metrics
from depmesh.tracking.capture import library_versions


def gate_results(gates: list[Any]) -> list[AssetCheckResult]:
    """GateResults as Dagster check results, their figures as metadata."""
    results = []
    for gate in gates:
        metadata: dict[str, Any] = {}
        for key, value in gate.figures.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                metadata[key] = float(value)
            elif isinstance(value, str):
                metadata[key] = value
            else:
                metadata[key] = MetadataValue.json(value)
        results.append(AssetCheckResult(check_name=gate.name, passed=gate.passed, severity=AssetCheckSeverity.ERROR,
                                        description=gate.summary, metadata=metadata))
    return results


def _gate_and_register(context: AssetExecutionContext, node: NodeSpec, model: Any, inputs: dict[str, Any],
                       code: str, seconds: float, ctx: Any, recorder: Any,
                       params_from_run: bool) -> tuple[list[AssetCheckResult], Output | None]:
    """The gate results, and (only if every gate passed) the model's output,
    after recording the version in the registry with its model card and
    recipe. Either way the training is tracked (registered or rejected).
    ``params_from_run``: the run's depmesh/params tag set this node's parameters."""
    from depmesh.artifacts import PackedModel
    from depmesh.gates.evaluate import LATENCY, evaluate_gates
    from depmesh.registry.cards import render_card
    from depmesh.tracking.plots import curves_markdown
    from depmesh.tracking.recorder import curves_for

    if node.model.metrics is not None:

        model.metrics = {**model.metrics, **declared_metrics(model, node.model.metrics, ctx.evaluation)}
        model.primary_metric = (node.model.metrics.primary, node.model.metrics.higher_is_better)
    metadata = _model_metadata(model, node, inputs, code, seconds)
    registry = getattr(context.resources, REGISTRY_KEY).registry
    gates = evaluate_gates(model, node.model.gates, ctx.evaluation, registry.production_metrics(node.name))
    results = gate_results(gates)
    input_versions = metadata["input_data_versions"].value
    curves = curves_for(model, ctx)
    if any(not g.passed for g in gates):
        recorder.record("rejected", model=model, metrics=model.metrics, input_versions=input_versions, curves=curves)
        return results, None
    latency = next((g.figures for g in gates if g.name == LATENCY and g.figures), None)
    if latency and "single_p95_ms" in latency:
        metadata[LATENCY_P95_KEY] = round(float(latency["single_p95_ms"]), 3)
    card = render_card(node, model, gates, input_versions)
    metadata["model_card"] = MetadataValue.md(card)
    # packed once: the registry records the hash of the very bytes the store writes
    packed = PackedModel.of(model, node.model.serializer, node.model.trusted_types)
    from depmesh.assets.io import recorded_metadata

    records = {name: recorded_metadata(context.instance, asset_key(name).path) for name in inputs}
    recipe = recorder.recipe(model, inputs, records, input_versions)
    needs = _requirements(node, packed, recorder, recipe)
    # registered before the output is stored: if the registry cannot be reached
    # nothing is materialized, and the step's retry starts clean (registration
    # is idempotent, so a retry after this point records nothing twice)
    registry.register(
        node=node.name, version=model.version, artifact_hash=packed.sha256,
        artifact_path=f"artifacts/{packed.sha256[:2]}/{packed.sha256}.model", metrics=model.metrics,
        gates={g.name: {"passed": g.passed, "summary": g.summary} for g in gates}, run_id=context.run.run_id,
        input_versions=input_versions, upstream_models=model.lineage(), code_version=code,
        library_versions=library_versions(), card=card, recipe=recipe, requirements=needs,
    )
    training = recorder.record("registered", model=model, metrics=model.metrics, input_versions=input_versions,
                               curves=curves)
    metadata[TRAINING_KEY] = training
    metadata["git_commit"] = recipe.get("commit") or ""
    if params_from_run:
        metadata["params_from_run"] = MetadataValue.json(dict(node.model.params))
    if curves is not None and curves.series:
        metadata["training_curves"] = MetadataValue.md(curves_markdown(curves, f"{node.name} {model.version}"))
    return results, versioned_output(packed, model.version, metadata)


def annotate_verdict(result: AssetCheckResult, judged: str | None, stored: bool, blocking: bool) -> AssetCheckResult:
    """The result with what it judged and whether that was stored, for the UI."""
    metadata = {**(result.metadata or {}), STORED_KEY: stored, BLOCKING_KEY: blocking}
    if judged:
        metadata[JUDGED_KEY] = judged
    description = result.description or ""
    if not stored:
        description = f"NOT STORED ({judged or 'nothing built'}): {description}"
    return AssetCheckResult(check_name=result.check_name, passed=result.passed, severity=result.severity,
                            metadata=metadata, description=description)


def tag_blocked(context: AssetExecutionContext, name: str, checks: list[str]) -> str:
    """Add '<name>: <check> failed, ...' to the run's depmesh/blocked tag (after
    what earlier steps of the run added); returns that text."""
    why = f"{name}: " + ", ".join(f"{check} failed" for check in checks)
    previous = context.instance.get_run_by_id(context.run.run_id).tags.get(BLOCKED_TAG)
    context.instance.add_run_tags(context.run.run_id, {BLOCKED_TAG: f"{previous}; {why}" if previous else why})
    return why


def _blocked(context: AssetExecutionContext, node: NodeSpec, failed: list[AssetCheckResult],
             downstream_of: Any) -> list[Any]:
    """A blocking verdict failed: the step succeeds without output, so Dagster
    skips everything downstream (shown as skipped, not failed, and never
    retried). Say so in the log, on the run (a tag) and on each node
    downstream in this run (an observation naming the blocking node and check)."""
    from dagster import AssetObservation

    why = tag_blocked(context, node.name, [r.check_name for r in failed])
    context.log.error(f"depmesh: {node.name} blocked, not stored, nothing downstream of it runs: "
                      + "; ".join(f"{r.check_name}: {r.description}" for r in failed))
    selected = context.run.asset_selection
    keys = [asset_key(name) for name in downstream_of(node.name)]
    keys = [k for k in keys if not selected or k in selected]  # no selection (or an empty one): the whole job
    last = context.instance.get_latest_materialization_events(keys) if keys else {}
    notes = []
    for key in keys:
        event = last.get(key)
        stored = "nothing stored yet"
        if event is not None and event.asset_materialization is not None:
            version = (event.asset_materialization.tags or {}).get("dagster/data_version", "?")
            stored = f"{version} from run {event.run_id}: it stays current, with its verdicts"
        notes.append(AssetObservation(asset_key=key, description=f"not run: blocked upstream by {why}", metadata={
            NOT_RUN_KEY: f"not run: blocked upstream by {why}", "depmesh/blocked_by": node.name,
            "depmesh/blocked_in_run": context.run.run_id, "depmesh/last_stored": stored}))
    return notes


def check_text(result: AssetCheckResult) -> str:
    """What a failed check said, for a failure mode's match: its description and its failing rules."""
    failures = (result.metadata or {}).get("failures")
    return "\n".join(filter(None, [result.description or "", getattr(failures, "value", None) or ""]))


def with_failure_modes(result: AssetCheckResult, catalogue: Any, node: str) -> AssetCheckResult:
    """A failed check's result, with the failure modes it may mean (the mesh's
    failure-mode catalogue: owner, mitigation, runbook) in its metadata."""
    if result.passed or catalogue is None:
        return result
    modes = catalogue.detecting(node, result.check_name, check_text(result))
    if not modes:
        return result
    from depmesh.failure_modes.catalogue import FAILURE_MODES_KEY, modes_markdown

    metadata = {**(result.metadata or {}), FAILURE_MODES_KEY: MetadataValue.md(modes_markdown(modes)),
                "depmesh/failure_mode_ids": ", ".join(m.id for m in modes),
                "depmesh/owners_to_call": ", ".join(dict.fromkeys(m.owner for m in modes))}
    return AssetCheckResult(check_name=result.check_name, passed=result.passed, severity=result.severity,
                            metadata=metadata, description=result.description)


def _fmt4(value: Any) -> str:
    return "-" if value is None else f"{value:.4g}"


def record_incidents(context: Any, catalogue: Any, node: str, failed: list[AssetCheckResult],
                     judged: str | None) -> None:
    """An incident per failure mode that a failed check detects (depmesh.failure_modes.incidents); a registry
    that cannot take it is a warning, never the step's failure."""
    if catalogue is None or not any(catalogue.detecting(node, r.check_name, check_text(r)) for r in failed):
        return
    from depmesh.failure_modes.incidents import record_check_failure

    try:
        registry = getattr(context.resources, REGISTRY_KEY).registry
        for r in failed:
            for found, new in record_check_failure(
                    registry, catalogue.teams, catalogue, node=node, check=r.check_name,
                    version=(judged or "unknown").split(" ")[-1], run_id=context.run.run_id,
                    summary=check_text(r) or f"{node}: check {r.check_name} failed"):
                seen = "opened" if new else f"seen again ({found['count']} times)"
                context.log.warning(f"depmesh: incident {found['id']} {seen}: {found['mode']} at {node}, "
                                    f"owner {found['owner']}")
    except Exception as exc:  # noqa: BLE001
        context.log.warning(f"depmesh: the incident for {node}'s failed checks was not recorded: "
                            f"{type(exc).__name__}: {exc}")


def _judge_stored(context: Any, node: NodeSpec, blocking_checks: frozenset[str], failure_modes: Any):
    """The gate verdicts of the model's stored version (depmesh.gates.evaluate.judge_stored), verified against
    its record; the model is not trained and no training is recorded."""
    from depmesh.assets.io import recorded_metadata
    from depmesh.gates.evaluate import judge_stored

    record = recorded_metadata(context.instance, asset_key(node.name).path)
    if record is None:
        raise RuntimeError(f"{node.name} has no stored version to judge: materialize it first")
    registry = getattr(context.resources, REGISTRY_KEY).registry
    version = str(record["model_version"])
    model = registry.artifacts.get(str(record["artifact_hash"]), version)
    production = registry.production()
    metrics = registry.production_metrics(node.name) if production.get(node.name) not in (None, version) else None
    recorded = (registry.version(node.name, version) or {}).get("gates", {})
    context.log.info(f"depmesh: judging the stored {node.name}@{version} (its checks alone: nothing is trained)")
    for r in gate_results(judge_stored(model, node.model.gates, metrics, recorded)):
        yield with_failure_modes(annotate_verdict(r, f"model version {version}", True, r.check_name in blocking_checks),
                                 failure_modes, node.name)

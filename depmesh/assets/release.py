"""The release asset (the stage-change jobs are depmesh.assets.stage_jobs).

``releases/<mesh>`` sits downstream of every model asset. Each model's gates
are blocking checks in its own step, so when a run reaches the release every
gate of every model it rebuilt has passed: it records the set of versions
that were trained against each other as a release and moves them to Staging.
A failed gate skips it, and the UI shows the red gate on the model.
"""

from typing import Any

from dagster import (
    AssetExecutionContext,
    AssetKey,
    MetadataValue,
    Output,
    asset,
)

from depmesh.assets.factory import (
    annotate_verdict,
    asset_key,
    gate_results,
    retry_on_lost_database,
    tag_blocked,
    with_failure_modes,
)
from depmesh.catalog import MeshSpec
from depmesh.keys import IO_MANAGER_KEY, REGISTRY_KEY


def release_key(mesh: MeshSpec | str) -> AssetKey:
    """Each mesh's own release asset (several meshes share one instance and registry)."""
    return AssetKey(["releases", mesh if isinstance(mesh, str) else mesh.name])


def _record_release(context: AssetExecutionContext, mesh: MeshSpec, models: list[str], key: Any,
                    failure_modes: Any):
    """Record the set of the models' latest versions as a release when every release gate passes; else the
    verdicts alone (nothing recorded)."""
    import pandas as pd

    from depmesh.assets.stages import stage_observations
    from depmesh.gates.release import evaluate_release

    name = key.to_user_string()
    registry = getattr(context.resources, REGISTRY_KEY).registry
    events = context.instance.get_latest_materialization_events([asset_key(m) for m in models])
    members = {}
    for model in models:
        event = events.get(asset_key(model))
        if event is None or event.asset_materialization is None:
            raise RuntimeError(f"{model} has never passed its gates, so there is nothing to release")
        members[model] = event.asset_materialization.metadata["model_version"].value
    records = {m: registry.version(m, v) for m, v in members.items()}
    records = {m: r if r is None else {**r, "recipe_problems": registry.recipe_problems(m, members[m])}
               for m, r in records.items()}
    gates = evaluate_release(members, records, registry.artifact_problems(members))
    judged = "the set " + ", ".join(f"{m}@{v}" for m, v in members.items())
    results = gate_results(gates)
    failed = [g for g in gates if not g.passed]
    if failed:
        for r in results:
            yield with_failure_modes(annotate_verdict(r, judged, False, True), failure_modes, name)
        tag_blocked(context, name, [g.name for g in failed])
        context.log.error(f"depmesh: release of {mesh.name} refused, nothing recorded: "
                          + "; ".join(f"{g.name}: {g.summary}" for g in failed))
        return
    before = registry.last_transition_id()
    recorded = registry.record_release(members, run_id=context.run.run_id)
    release_id = recorded["id"]
    table = pd.DataFrame({"node": list(members), "version": list(members.values())})
    table.insert(0, "release_id", release_id)
    moved = recorded["moved"]
    if recorded["created"]:
        context.log.info(f"depmesh: release {release_id} of mesh {mesh.name} recorded; "
                         + (f"{len(moved)} version(s) moved to Staging: {', '.join(moved)}" if moved
                            else "no version moved (each was already Staging or Production)"))
    else:
        context.log.info(f"depmesh: these versions are already release {release_id} ({recorded['status']}): "
                         "no new release, nothing moved")
    yield Output(table, metadata={
        "release_id": release_id,
        "mesh": mesh.name,
        "status": recorded["status"],
        "new_release": recorded["created"],
        "moved_to_staging": MetadataValue.json(moved),
        "members": MetadataValue.md(table.to_markdown(index=False)),
        "promote with": promote_hint(mesh, release_id),
    })
    for r in results:
        yield annotate_verdict(r, judged, True, True)
    yield from stage_observations(registry, registry.history(after_id=before), key)
    if recorded["created"]:
        yield from staging_notes(mesh, registry, release_id)


def build_release_asset(mesh: MeshSpec, failure_modes: Any = None):
    from dagster import AssetCheckSpec

    from depmesh.contracts.checks import BLOCKS
    from depmesh.gates.release import RELEASE_GATES

    models = [n.name for n in mesh.nodes if n.kind == "model"]
    key = release_key(mesh)
    specs = [AssetCheckSpec(gate, asset=key, description=description + BLOCKS)
             for gate, description, _ in RELEASE_GATES]

    @asset(
        key=key,
        deps=[asset_key(m) for m in models],
        group_name="releases",
        io_manager_key=IO_MANAGER_KEY,
        required_resource_keys={REGISTRY_KEY},
        kinds={"pandas"},
        tags={"depmesh/kind": "release"},
        check_specs=specs,
        output_required=False,
        description=f"A release of the {mesh.name} mesh: the model versions trained against each other, recorded "
                    "in the registry and moved to Staging once every gate passed. Its checks are the deployment "
                    "gate of the set: every member passed its gates, its artifact verifies, the members were "
                    "trained against each other and none depends on a model outside the set.",
    )
    def mesh_release(context: AssetExecutionContext):
        with retry_on_lost_database(context, key.to_user_string()) as guard:
            for event in _record_release(context, mesh, models, key, failure_modes):
                if isinstance(event, Output):
                    guard()
                yield event

    return mesh_release


def staging_notes(mesh: MeshSpec, registry: Any, release_id: int) -> list[Any]:
    """On each scores asset, why it did not change with the new Staging release (a production mesh)."""
    from dagster import AssetObservation

    from depmesh.rollout.production import production_set

    if mesh.serving.mode != "production":
        return []
    production = production_set(registry)
    serving = (production.describe() if production.release_id is not None else
               "the gated candidate, NOT APPROVED" if mesh.serving.before_first_promotion == "candidate" else "nothing")
    why = (f"release {release_id} was recorded in Staging; these scores keep serving {serving} until it is "
           f"promoted ({promote_hint(mesh, release_id)})")
    return [AssetObservation(asset_key=asset_key(n.name), description=why, metadata={"depmesh/staging_release": release_id,
                                                                                       "depmesh/why_unchanged": why})
            for n in mesh.nodes if n.kind == "scores"]


def promote_hint(mesh: MeshSpec, release_id: int) -> str:
    """How this release reaches Production: directly, or through approvals when the mesh declares its teams."""
    from depmesh.teams import teams_path

    if teams_path(mesh).is_file():
        return f"depmesh release request {release_id} --reason TEXT (then its approvers: depmesh release approve REQUEST)"
    return f"depmesh release promote {release_id} --actor NAME --reason TEXT"

"""``serving/<mesh>``: one asset page that says what serves now.

Materialized by every run of the whole mesh, by every re-score, and by the ``serve_production`` sensor after
any registry change (its metadata records the registry revision it read): what each scores node serves and
whether that is the registry's set, the Production release and who approved it, what waits in Staging (and
whose approval it waits for), and the history of Production.
"""


from typing import Any

from dagster import AssetExecutionContext, AssetKey, MetadataValue, Output, asset

from depmesh.assets.factory import asset_key
from depmesh.catalog import MeshSpec
from depmesh.keys import IO_MANAGER_KEY, REGISTRY_KEY, SERVING_REVISION_KEY
from depmesh.rollout.production import serving_state


def serving_key(mesh: "MeshSpec | str") -> AssetKey:
    return AssetKey(["serving", mesh if isinstance(mesh, str) else mesh.name])


def _md(rows: list[dict[str, Any]]) -> str:
    import pandas as pd

    return pd.DataFrame(rows).to_markdown(index=False) if rows else "none"


def build_serving_asset(mesh: MeshSpec):
    scores = [n.name for n in mesh.nodes if n.kind == "scores"]

    @asset(
        key=serving_key(mesh),
        deps=[asset_key(n) for n in scores],
        group_name="releases",
        io_manager_key=IO_MANAGER_KEY,
        required_resource_keys={REGISTRY_KEY},
        kinds={"pandas"},
        tags={"depmesh/kind": "serving"},
        description=f"What the {mesh.name} mesh serves now: the release behind each scores table, who approved it, "
                    "what waits in Staging and the history of Production. Materialized again after every stage "
                    "change (the serve_production sensor) and every re-score.",
    )
    def serving(context: AssetExecutionContext):
        import pandas as pd

        registry = getattr(context.resources, REGISTRY_KEY).registry
        state = serving_state(context.instance, registry, mesh)
        production = state["production"]
        if state["mode"] == "latest":
            now = "serving: latest: the scores serve what each run trains, not governed by the registry"
        elif production.release_id is None:
            now = ("no release is Production yet: the scores serve "
                   + ("the gated candidate, NOT APPROVED" if mesh.serving.before_first_promotion == "candidate"
                      else "nothing") + " (depmesh release list; depmesh release request ID)")
        else:
            now = f"serving {production.describe()}, Production since {production.promoted_at}"
        stale = [n["node"] for n in state["nodes"] if n["current"] != "yes"]
        if stale:
            now += f"; NOT YET RE-SCORED: {', '.join(stale)}"
        context.log.info(f"depmesh: {mesh.name}: {now}")
        frame = pd.DataFrame(state["nodes"] or [{"node": "-"}]).astype(str)
        return Output(frame, metadata={
            "depmesh/serving_now": now,
            "scores": MetadataValue.md(_md(state["nodes"])),
            "waiting in Staging": MetadataValue.md(_md(state["staging"])),
            "history of Production": MetadataValue.md(_md(state["history"])),
            "production_release": production.release_id or 0,
            "production_versions": MetadataValue.json(production.versions),
            "approved_by": ", ".join(production.approvers) or "-",
            SERVING_REVISION_KEY: production.revision,
        })

    return serving


__all__ = ["build_serving_asset", "serving_key"]

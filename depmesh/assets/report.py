"""The mesh's impact report as an asset: one row per node with its reach,
consumers and blast radius, so the UI shows the whole map in one place."""


from typing import Any

from dagster import AssetExecutionContext, AssetKey, MetadataValue, Output, asset

from depmesh.catalog import MeshSpec
from depmesh.keys import IO_MANAGER_KEY, REGISTRY_KEY


def report_key(mesh: MeshSpec) -> AssetKey:
    """Each mesh's own impact report (several meshes share one instance)."""
    return AssetKey(["reports", mesh.name, "impact"])


def build_impact_report(mesh: MeshSpec):
    @asset(
        key=report_key(mesh),
        group_name="reports",
        io_manager_key=IO_MANAGER_KEY,
        kinds={"pandas"},
        description=f"Impact of a change to each node of the {mesh.name} mesh: downstream nodes, models "
                    "downstream, consumers and blast radius (criticality-weighted reach).",
        tags={"depmesh/kind": "report"},
    )
    def impact_report(context: AssetExecutionContext) -> Output:
        import pandas as pd

        from depmesh.impact import impact_table

        rows = impact_table(mesh)
        df = pd.DataFrame(rows)
        df["consumer_names"] = df["consumer_names"].map(", ".join)
        df = df.sort_values(["blast_radius", "node"], ascending=[False, True]).reset_index(drop=True)
        top: dict[str, Any] = {
            "dagster/row_count": len(df),
            "highest_blast_radius": MetadataValue.md(df.head(20).to_markdown(index=False)),
        }
        return Output(df, metadata=top)

    return impact_report


def rollout_report_key(mesh: MeshSpec) -> AssetKey:
    return AssetKey(["reports", mesh.name, "rollout"])


def build_rollout_report(mesh: MeshSpec):
    """The shadow or canary report: per model the candidate beside Production at each step, the A/B evidence on
    the latest scores, and a link to the HTML report (the release's page links it too)."""
    from dagster import AssetIn

    from depmesh.assets.factory import asset_key

    scores = [n.name for n in mesh.nodes if n.kind == "scores"]
    ins = {asset_key(name).to_python_identifier(): AssetIn(key=asset_key(name)) for name in scores}

    @asset(
        key=rollout_report_key(mesh),
        group_name="reports",
        io_manager_key=IO_MANAGER_KEY,
        ins=ins,
        kinds={"pandas"},
        required_resource_keys={REGISTRY_KEY},
        description=f"The {mesh.name} mesh's rollout (shadow or canary) summed up: per model, each arm's rows and "
                    "metric per step, prediction shift, disagreement, latency and errors, and the A/B decision.",
        tags={"depmesh/kind": "report"},
    )
    def rollout_report(context: AssetExecutionContext, **_scores: Any) -> Output:
        import pandas as pd

        from depmesh.assets.io import storage_dir
        from depmesh.rollout.evidence import evidence, report_markdown, write_report
        from depmesh.rollout.serving import active_rollout, list_rollouts

        registry = getattr(context.resources, REGISTRY_KEY).registry
        rollout = active_rollout(registry) or next(iter(reversed(list_rollouts(registry))), None)
        if rollout is None:
            return Output(pd.DataFrame({"model": pd.Series([], dtype="string")}),
                          metadata={"rollout": "no rollout yet (depmesh rollout start RELEASE --shadow, or "
                                               "depmesh release request RELEASE --canary)"})
        found = evidence(registry, mesh, rollout)  # the scores (inputs) ran first: their figures are recorded
        path = write_report(storage_dir(context.instance), found)
        rows = [{"model": model, "percent": s["percent"], "step": s["step"] + 1, "production_metric":
                 s["production_metric"], "candidate_metric": s["candidate_metric"], "shift": s["shift"],
                 "disagreement": s["disagreement"], "latency_ratio": s["latency_ratio"],
                 "error_rate": s["error_rate"], "decision": (m["ab"] or {}).get("decision")}
                for model, m in found["models"].items() for s in m["steps"]]
        return Output(pd.DataFrame(rows), metadata={
            "rollout": MetadataValue.md(report_markdown(found)), "report": MetadataValue.path(str(path)),
            "rollout_id": rollout["id"], "release_id": rollout["release_id"], "status": rollout["status"]})

    return rollout_report

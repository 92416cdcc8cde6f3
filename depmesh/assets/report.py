"""The mesh's impact report as an asset: one row per node with its reach,
consumers and blast radius, so the UI shows the whole map in one place."""


from typing import Any

from dagster import AssetExecutionContext, AssetKey, MetadataValue, Output, asset

from depmesh.assets.factory import IO_MANAGER_KEY
from depmesh.catalog import MeshSpec

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

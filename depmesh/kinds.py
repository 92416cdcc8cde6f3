"""The kinds of node a catalog may declare, in one table: every builder and renderer reads its column here.

A new kind of node is one row: its Dagster group (the domain its assets and job land in), the kind tag the Dagster
UI shows, its Mermaid shape, its colours (graph drawings, the impact page) and what its domain job does.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class NodeKind:
    name: str
    group: str  # the Dagster asset group (domain)
    dagster_kind: str  # the kind tag on the asset (the UI's icon)
    shape: tuple[str, str]  # Mermaid's brackets around the label
    fill: str
    stroke: str
    job_description: str  # what the domain's job (`<group>_job`) does


NODE_KINDS: dict[str, NodeKind] = {k.name: k for k in (
    NodeKind("dataset", "ingestion", "pandas", ("[(", ")]"), "#e8f1fb", "#4a78b0", "Load every raw dataset."),
    NodeKind("features", "features", "pandas", ("[", "]"), "#eef7ea", "#5a9a45", "Rebuild every feature table."),
    NodeKind("model", "training", "scikitlearn", ("{{", "}}"), "#fdf0dc", "#c98a1a",
             "Retrain every model (the coordinated-retraining sensor then rebuilds what depends on them)."),
    NodeKind("scores", "scoring", "pandas", ("[/", "/]"), "#f3e9f7", "#8a55a8", "Rescore with the current models."),
    NodeKind("consumer", "consumers", "pandas", ("([", "])"), "#fbe7e7", "#b04a4a", "Rebuild the consumer reports."),
)}
KINDS = tuple(NODE_KINDS)

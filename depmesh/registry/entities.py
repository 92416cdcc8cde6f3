"""The registry's records as typed entities: a release, a model version, a stage change.

Each reads as typed attributes (``release.members``, ``version.stage``) and, as every caller before them did, as
the mapping of its columns (``release["members"]``, ``json.dumps(version)``): an entity is a ``dict`` whose keys are
the table's columns, with one typed property per column.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any


def _column(name: str, doc: str) -> property:
    return property(lambda self: self[name], doc=doc)


class Release(dict):
    """A set of model versions that belong together, and where it stands."""

    id: int = _column("id", "The release id (per registry).")  # type: ignore[assignment]
    mesh: str = _column("mesh", "The mesh it belongs to.")  # type: ignore[assignment]
    status: str = _column("status", "Staging, Production, Superseded, RolledBack or PartlyRolledBack.")  # type: ignore[assignment]
    run_id: str | None = _column("run_id", "The Dagster run that recorded it.")  # type: ignore[assignment]
    created_at: datetime = _column("created_at", "When it was recorded.")  # type: ignore[assignment]
    promoted_at: datetime | None = _column("promoted_at", "When it last became Production.")  # type: ignore[assignment]
    replaced_release_id: int | None = _column("replaced_release_id", "The Production release it replaced.")  # type: ignore[assignment]
    members: dict[str, str] = _column("members", "node -> version.")  # type: ignore[assignment]


class ModelVersion(dict):
    """A registered version of a model: its record, stage and recipe."""

    id: int = _column("id", "Row id.")  # type: ignore[assignment]
    mesh: str = _column("mesh", "The mesh it belongs to.")  # type: ignore[assignment]
    node: str = _column("node", "The model node.")  # type: ignore[assignment]
    version: str = _column("version", "The content version (a hash of what made it).")  # type: ignore[assignment]
    stage: str = _column("stage", "Development, Staging, Production or Archived.")  # type: ignore[assignment]
    rejected: bool = _column("rejected", "Rolled back: never restored by a rollback.")  # type: ignore[assignment]
    artifact_hash: str = _column("artifact_hash", "SHA-256 of the stored bundle.")  # type: ignore[assignment]
    artifact_path: str = _column("artifact_path", "Where the bundle was stored.")  # type: ignore[assignment]
    metrics: dict[str, float] = _column("metrics", "Metrics on the evaluation window.")  # type: ignore[assignment]
    gates: dict[str, Any] = _column("gates", "Each gate's verdict and summary.")  # type: ignore[assignment]
    run_id: str = _column("run_id", "The run that trained it.")  # type: ignore[assignment]
    input_versions: dict[str, str] = _column("input_versions", "Each input's data version.")  # type: ignore[assignment]
    upstream_models: dict[str, str] = _column("upstream_models", "The model versions it was trained against.")  # type: ignore[assignment]
    code_version: str = _column("code_version", "The node's code version.")  # type: ignore[assignment]
    library_versions: dict[str, str] = _column("library_versions", "Library versions it was trained with.")  # type: ignore[assignment]
    card: str = _column("card", "The model card (Markdown).")  # type: ignore[assignment]
    recipe: dict[str, Any] | None = _column("recipe", "What rebuilds it (depmesh reproduce).")  # type: ignore[assignment]
    requirements: dict[str, Any] | None = _column("requirements", "What it needs installed.")  # type: ignore[assignment]
    created_at: datetime = _column("created_at", "When it was registered.")  # type: ignore[assignment]


class StageChange(dict):
    """One row of the stage-transition trail (hash-chained: depmesh.registry.chain)."""

    id: int = _column("id", "Row id.")  # type: ignore[assignment]
    node: str = _column("node", "The model node.")  # type: ignore[assignment]
    version: str = _column("version", "The version that moved.")  # type: ignore[assignment]
    from_stage: str | None = _column("from_stage", "The stage it left (None: registered).")  # type: ignore[assignment]
    to_stage: str = _column("to_stage", "The stage it entered.")  # type: ignore[assignment]
    actor: str = _column("actor", "Who moved it.")  # type: ignore[assignment]
    reason: str = _column("reason", "Why.")  # type: ignore[assignment]
    release_id: int | None = _column("release_id", "The release the move belonged to.")  # type: ignore[assignment]
    at: datetime = _column("at", "When.")  # type: ignore[assignment]

"""The retention rule for input snapshots: old ones go, except any that the
recipe of a Staging or Production version (of any mesh in the registry) needs."""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa

from depmesh.registry.schema import model_versions
from depmesh.tracking.snapshots import SnapshotStore


def protected_snapshots(registry: Any) -> set[str]:
    """The snapshot hashes that Staging and Production recipes name."""
    with registry.engine.connect() as conn:
        recipes = conn.execute(sa.select(model_versions.c.recipe).where(
            model_versions.c.stage.in_(["Staging", "Production"]), model_versions.c.recipe.is_not(None))).scalars()
        keep = set()
        for text in recipes:
            for part in (json.loads(text).get("inputs") or {}).values():
                if part.get("kind") == "table":
                    keep.add(part["sha256"])
    return keep


def prune_snapshots(registry: Any, older_than_days: float, dry_run: bool = False,
                    now: float | None = None) -> tuple[list[str], list[str]]:
    if registry.artifacts is None:
        raise ValueError("pruning snapshots needs the registry's artifact store (the instance's storage folder)")
    store = SnapshotStore.beside(registry.artifacts.root)
    keep = protected_snapshots(registry)
    if dry_run:
        import time

        now = time.time() if now is None else now
        old = {d: p for d, p in store.all().items() if now - p.stat().st_mtime >= older_than_days * 86400}
        return sorted(d for d in old if d not in keep), sorted(d for d in old if d in keep)
    return store.prune(keep, older_than_days, now)

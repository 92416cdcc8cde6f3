"""A version's recipe: everything needed to rebuild it.

    {"node", "version", "training_id",
     "lock":    {"name": "uv.lock", "sha256"}          the lock file (a blob)
     "commit":  "<git sha>",                          the code's commit
     "diff":    {"sha256", "bytes"},                  uncommitted changes (a blob; empty when clean)
     "catalog": {"path", "sha256"},                   the catalog file (a blob)
     "inputs":  {name: {"kind": "table"|"model", "sha256", "version"}},   content-addressed snapshots
     "seed": 13, "params": {...}}                     the parameters it was trained with

A recipe is complete when every part is there and every blob, snapshot and
upstream artifact it names is stored. A version moves to Staging only with a
complete recipe (depmesh.registry.store), and ``depmesh reproduce`` rebuilds
from it (depmesh.tracking.reproduce).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


def blob_hashes(recipe: Mapping[str, Any]) -> list[str]:
    return [part["sha256"] for part in (recipe.get("lock"), recipe.get("diff"), recipe.get("catalog"))
            if isinstance(part, Mapping) and part.get("sha256")]


def recipe_problems(recipe: Mapping[str, Any] | None, inputs: Iterable[str], stored_blobs: set[str],
                    snapshots: Any = None, artifacts: Any = None) -> list[str]:
    """What is missing from a recipe, in words; empty when it is complete.
    ``inputs``: the version's inputs (each needs a snapshot); ``stored_blobs``:
    which of the recipe's blobs the database holds; ``snapshots`` /
    ``artifacts``: the stores to find input snapshots and upstream artifacts
    in (not checked when None)."""
    if not recipe:
        return ["no recipe was recorded (a version registered before depmesh recorded recipes: retrain it)"]
    problems = []
    for part, what in (("lock", "the lock file"), ("diff", "the diff of uncommitted changes"),
                       ("catalog", "the catalog file")):
        value = recipe.get(part)
        if not isinstance(value, Mapping) or not value.get("sha256"):
            problems.append(f"{what} was not recorded" + (f" ({recipe.get('why', {}).get(part)})"
                                                            if recipe.get("why", {}).get(part) else ""))
        elif value["sha256"] not in stored_blobs:
            problems.append(f"{what} ({value['sha256'][:12]}) is not stored in the registry")
    if not recipe.get("commit"):
        problems.append("the git commit was not recorded" + (f" ({recipe['why']['commit']})"
                                                              if recipe.get("why", {}).get("commit") else ""))
    if not isinstance(recipe.get("seed"), int):
        problems.append("the seed was not recorded")
    if not isinstance(recipe.get("params"), Mapping):
        problems.append("the parameters were not recorded")
    recorded = recipe.get("inputs") or {}
    for name in sorted(inputs):
        snap = recorded.get(name)
        if not isinstance(snap, Mapping) or not snap.get("sha256"):
            problems.append(f"no snapshot of input {name}")
        elif snap.get("kind") == "table" and snapshots is not None and not snapshots.has(snap["sha256"]):
            problems.append(f"the snapshot of input {name} ({snap['sha256'][:12]}) is missing from {snapshots.root}")
        elif snap.get("kind") == "model" and artifacts is not None and artifacts.find(snap["sha256"]) is None:
            problems.append(f"the artifact of input {name} ({snap['sha256'][:12]}) is missing from {artifacts.root}")
    return problems

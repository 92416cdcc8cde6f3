"""A version's recipe: everything needed to rebuild it.

    {"node", "version", "training_id", "depmesh": "0.1.0", "python": "3.11.7",
     "code": {"kind": "git", "import_path": "."}         the code: a git commit and its diff ...
             | {"kind": "files", "sha256", "files": {path: sha256}, "root", "import_path"}
                                                       ... the module files by content hash (a tar blob) ...
             | {"kind": "distribution", "name", "version"}   ... or an installed distribution (in the environment)
     "commit": "<git sha>", "code_root", "diff": {"sha256", "bytes"}     (git only; the diff is a blob)
     "environment": {"name": "pylock.toml", "sha256", "packages", "unhashed"}   every installed distribution
                                                       (PEP 751; depmesh.tracking.environment), a blob
     "lock":    {"name": "uv.lock" | "requirements.txt" | ..., "sha256"}   the project's own lock, when it has one
     "catalog": {"path", "sha256"},                   the catalog file (a blob)
     "inputs":  {name: {"kind": "table"|"model", "sha256", "version"}},   content-addressed snapshots
     "seed": 13, "params": {...}}                     the parameters it was trained with

A recipe is complete when its code, environment, catalog, seed, parameters
and input snapshots are there and every blob, snapshot and upstream artifact
it names is stored: the project's own lock is recorded when there is one and
never required (the environment says what ran). Recipes written before the
environment was recorded need their lock (they rebuild with ``uv sync``).
A version moves to Staging only with a complete recipe
(depmesh.registry.store), and ``depmesh reproduce`` rebuilds from it
(depmesh.tracking.reproduce).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


def blob_hashes(recipe: Mapping[str, Any]) -> list[str]:
    code = recipe.get("code") if isinstance(recipe.get("code"), Mapping) else {}
    parts = (recipe.get("lock"), recipe.get("diff"), recipe.get("catalog"), recipe.get("environment"),
             code if code.get("kind") == "files" else None)
    return [part["sha256"] for part in parts if isinstance(part, Mapping) and part.get("sha256")]


def code_kind(recipe: Mapping[str, Any]) -> str | None:
    """git, files or distribution; git for recipes written before the code's kind was recorded."""
    code = recipe.get("code")
    if isinstance(code, Mapping):
        return code.get("kind")
    return "git" if "commit" in recipe else None


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
    why = recipe.get("why") if isinstance(recipe.get("why"), Mapping) else {}

    def blob(part: str, what: str, required: bool = True) -> None:
        value = recipe.get(part)
        if not isinstance(value, Mapping) or not value.get("sha256"):
            if required:
                problems.append(f"{what} was not recorded" + (f" ({why[part]})" if why.get(part) else ""))
        elif value["sha256"] not in stored_blobs:
            problems.append(f"{what} ({value['sha256'][:12]}) is not stored in the registry")

    kind = code_kind(recipe)
    if kind == "git":
        if not recipe.get("commit"):
            problems.append("the git commit was not recorded" + (f" ({why['commit']})" if why.get("commit") else ""))
        blob("diff", "the diff of uncommitted changes")
    elif kind == "files":
        code = recipe["code"]
        if not code.get("sha256") or not isinstance(code.get("files"), Mapping) or not code["files"]:
            problems.append("the module files were not recorded")
        elif code["sha256"] not in stored_blobs:
            problems.append(f"the module files ({code['sha256'][:12]}) are not stored in the registry")
    elif kind == "distribution":
        code = recipe["code"]
        if not code.get("name") or not code.get("version"):
            problems.append("the distribution holding the code was not named")
    else:
        problems.append("the code was not recorded" + (f" ({why.get('code') or why.get('commit')})"
                                                       if why.get("code") or why.get("commit") else ""))
    if "environment" in recipe:
        blob("environment", "the environment (pylock.toml)")
        blob("lock", "the project's lock file", required=False)
    elif isinstance(recipe.get("lock"), Mapping) and recipe["lock"].get("name") == "uv.lock":
        blob("lock", "the lock file")  # written before the environment was recorded: rebuilt by uv sync --locked
    else:
        problems.append("the environment (pylock.toml) was not recorded")
    blob("catalog", "the catalog file")
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

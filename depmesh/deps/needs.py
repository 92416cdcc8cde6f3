"""What a model version needs to load and predict, resolved against the lock.

The distributions come from two places: the modules the trainer's source
imports (parsed, not run), and the modules of the types inside the artifact
(skops lists them without loading anything). Module names map to the
installed distributions that provide them; each is pinned at the lock's
version, with the lock's dependency closure below it.
"""

from __future__ import annotations

import ast
import functools
import importlib.metadata
import importlib.util
import platform
import re
import sys
import tomllib
from pathlib import Path
from typing import Any

STDLIB = set(sys.stdlib_module_names)
IGNORED = {"depmesh", "__future__"}


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _applies(markers: Any) -> bool:
    """Whether a lock entry's markers (a string, or uv's resolution-markers list) hold in this environment."""
    from packaging.markers import Marker

    if not markers:
        return True
    return any(Marker(m).evaluate() for m in ([markers] if isinstance(markers, str) else markers))


def lock_from_text(text: str) -> dict[str, dict[str, Any]]:
    """uv.lock's packages for this environment: canonical name -> {name, version, dependencies, source}. A lock
    may hold several versions of a package for different Pythons or platforms (resolution-markers): the entry
    whose markers hold here is kept; a dependency whose marker does not hold here is left out."""
    data = tomllib.loads(text)
    out: dict[str, dict[str, Any]] = {}
    for package in data.get("package", []):
        name = canonical(package["name"])
        if not _applies(package.get("resolution-markers")) or name in out:
            continue
        deps = [canonical(d["name"]) for d in package.get("dependencies", []) if _applies(d.get("marker"))]
        out[name] = {"name": package["name"], "version": package.get("version", ""), "dependencies": deps,
                     "source": package.get("source", {})}
    return out


def lock_from_pylock(text: str) -> dict[str, dict[str, Any]]:
    """A recorded environment (PEP 751 pylock.toml, depmesh.tracking.environment) in lock_from_text's shape:
    every distribution at the version that ran (a pylock lists no dependency edges: the environment is flat)."""
    data = tomllib.loads(text)
    out: dict[str, dict[str, Any]] = {}
    unhashed = data.get("tool", {}).get("depmesh", {}).get("unhashed", [])
    for package in [*data.get("packages", []), *unhashed]:
        name = canonical(package["name"])
        source = ({"registry": package["index"]} if package.get("index") else
                  {"directory": package["directory"]["path"]} if package.get("directory") else {})
        out.setdefault(name, {"name": package["name"], "version": str(package.get("version", "")),
                              "dependencies": [], "source": source})
    return out


@functools.lru_cache(maxsize=8)
def read_lock(path: str) -> dict[str, dict[str, Any]]:
    return lock_from_text(Path(path).read_text(encoding="utf-8"))


def default_lock() -> Path:
    """The lock of the project depmesh runs from (its pyproject.toml and uv.lock sit beside the package)."""
    return Path(__file__).resolve().parents[2] / "uv.lock"


@functools.lru_cache(maxsize=1)
def _module_distributions() -> dict[str, list[str]]:
    return {k: [canonical(d) for d in v] for k, v in importlib.metadata.packages_distributions().items()}


def distributions_of(modules: set[str]) -> dict[str, list[str]]:
    """Top-level module -> the distributions that provide it (standard library and depmesh left out)."""
    found = {}
    table = _module_distributions()
    for module in sorted(modules):
        top = module.split(".")[0]
        if top in STDLIB or top in IGNORED or not top:
            continue
        found[top] = table.get(top, [])
    return found


def imported_modules(source: str) -> set[str]:
    """Every module a Python source imports, at any depth of its functions (absolute imports)."""
    modules = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules.add(node.module)
    return modules


def trainer_modules(entrypoint: str) -> set[str]:
    module = entrypoint.split(":")[0]
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return set()
    return imported_modules(Path(spec.origin).read_text(encoding="utf-8"))


def artifact_modules(payload: bytes) -> set[str]:
    """The modules of the types inside a model bundle's estimator (skops names them; nothing is loaded)."""
    from depmesh.artifacts import _unzip

    files = _unzip(payload, "artifact")
    found = set()
    for name, content in files.items():
        if name.endswith(".skops"):
            import skops.io as sio

            found.update(t.rsplit(".", 1)[0] for t in sio.get_untrusted_types(data=content))
            found.update(("sklearn", "numpy"))  # skops' own loaders: every estimator file needs them
    return found


def closure(lock: dict[str, dict[str, Any]], roots: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    stack = list(roots)
    while stack:
        name = stack.pop()
        if name in out or name not in lock:
            continue
        out[name] = lock[name]["version"]
        stack.extend(lock[name]["dependencies"])
    return dict(sorted(out.items()))


def requirements(entrypoint: str, payload: bytes | None, lock: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """{direct: {dist: locked version}, closure: {dist: version}, python, sources: {trainer, artifact}, unresolved}."""
    from_trainer = distributions_of(trainer_modules(entrypoint))
    from_artifact = distributions_of(artifact_modules(payload)) if payload else {}
    direct: dict[str, str] = {}
    unresolved = []
    for module, dists in {**from_trainer, **from_artifact}.items():
        locked = [d for d in dists if d in lock]
        if not locked:
            unresolved.append(module)
        for dist in locked:
            direct[dist] = lock[dist]["version"]
    return {"python": platform.python_version(), "direct": dict(sorted(direct.items())),
            "closure": closure(lock, sorted(direct)),
            "sources": {"trainer": sorted(from_trainer), "artifact": sorted(from_artifact)},
            "unresolved": sorted(unresolved)}


def installed_version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None

"""Which nodes changed since a git ref, in their catalog entry or in the
code that builds them: the state selection a pull-request CI runs impact on."""

from __future__ import annotations

import importlib.util
import subprocess
from dataclasses import replace
from pathlib import Path

from depmesh.catalog import MeshSpec, parse_catalog


class GitError(RuntimeError):
    pass


def _git(root: Path, *args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=root, check=True, capture_output=True, text=True).stdout
    except FileNotFoundError:
        raise GitError("git is not installed") from None
    except subprocess.CalledProcessError as exc:
        raise GitError(f"git {' '.join(args)}: {exc.stderr.strip()}") from None


def resolve_ref(root: Path, ref: str) -> str:
    """The commit a user-given ref names, checked by git as a ref and never
    read as an option (``--output=FILE`` is refused, not obeyed)."""
    if not ref or ref.startswith("-") or any(c in ref for c in "\0\n"):
        raise GitError(f"{ref!r} is not a git ref (a branch, tag or commit)")
    try:
        return _git(root, "rev-parse", "--verify", "--quiet", "--end-of-options", f"{ref}^{{commit}}").strip()
    except GitError:
        raise GitError(f"{ref!r} names no commit in {root}") from None


def _module_file(entrypoint: str) -> Path | None:
    module = entrypoint.partition(":")[0]
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    return Path(spec.origin).resolve() if spec and spec.origin else None


def changed_since(mesh: MeshSpec, ref: str) -> dict[str, list[str]]:
    """Node -> why it counts as changed since ``ref`` (catalog entry added or
    edited, or its builder's module file changed, committed or not)."""
    catalog = mesh.path.resolve()
    root = Path(_git(catalog.parent, "rev-parse", "--show-toplevel").strip())
    rel = catalog.relative_to(root).as_posix()
    commit = resolve_ref(root, ref)
    reasons: dict[str, list[str]] = {}
    try:
        old_text = _git(root, "show", f"{commit}:{rel}")
    except GitError:
        old_text = None  # the catalog did not exist at ref: every node is new
    old_nodes = {}
    if old_text is not None:
        old = parse_catalog(old_text, Path(f"{ref}:{catalog.name}"))
        old_nodes = {n.name: replace(n, line=None) for n in old.nodes}
    for node in mesh.nodes:
        before = old_nodes.get(node.name)
        if before is None:
            reasons.setdefault(node.name, []).append("new in the catalog")
        elif before != replace(node, line=None):
            reasons.setdefault(node.name, []).append("catalog entry changed")
    changed_files = set(_git(root, "diff", "--name-only", commit, "--").split())
    changed_files |= set(_git(root, "ls-files", "--others", "--exclude-standard").split())
    changed_paths = {(root / f).resolve() for f in changed_files}
    for node in mesh.nodes:
        path = _module_file(node.entrypoint)
        if path is not None and path in changed_paths:
            reasons.setdefault(node.name, []).append(f"code changed: {path.relative_to(root).as_posix()}")
    return reasons

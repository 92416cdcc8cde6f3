"""The compiled-catalog cache: a validated MeshSpec kept by content, so the
commands, the code server and every step process that load an unchanged
catalog skip parsing and validating it again (4,000 nodes a second at best).

An entry is keyed by the SHA-256 of the catalog's bytes, its resolved path,
the Python version and the state (size, modification time) of depmesh's own
catalog code. It also records the file of every module the catalog's
entrypoints were imported from, with its size and modification time; an entry
is used only while each module still resolves to that same, unchanged file
(validation imports those modules, so a moved, edited or deleted trainer
invalidates the entry and the catalog is validated again).

Entries are pickles, and a pickle runs code when loaded, so the cache is used
only where nobody else can write: a folder owned by this user with no group
or other write permission, files owned by this user. A planted, truncated or
foreign entry is ignored (and replaced), never trusted. Where the folder is
not safe, nothing is read or written and every load validates from scratch.

    DEPMESH_CACHE_DIR        the folder (default: $XDG_CACHE_HOME/depmesh or ~/.cache/depmesh);
                             the 64 most recently used catalogs are kept
    DEPMESH_CATALOG_CACHE=0  turn the cache off
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import pickle
import stat
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from depmesh.catalog.spec import MeshSpec
from depmesh.storage import write_whole

FORMAT = b"depmesh-catalog-cache/1\n"
KEEP = 64  # entries kept; writing one removes the least recently used beyond these
_CODE = ("load.py", "spec.py", "cache.py", "../graph.py")


def cache_dir() -> Path:
    explicit = os.environ.get("DEPMESH_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "depmesh"


def enabled() -> bool:
    return os.environ.get("DEPMESH_CATALOG_CACHE", "1").lower() not in ("0", "false", "no", "off")


def _code_state() -> bytes:
    here = Path(__file__).resolve().parent
    parts = []
    for name in _CODE:
        st = (here / name).stat()
        parts.append(f"{name}:{st.st_size}:{st.st_mtime_ns}")
    return "|".join(parts).encode()


def key_of(raw: bytes, path: Path) -> str:
    digest = hashlib.sha256()
    for part in (FORMAT, sys.version.encode(), _code_state(), str(path.resolve()).encode(), raw):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


def _private(st: os.stat_result) -> bool:
    """Owned by this user, and nobody else may write it."""
    return st.st_uid == os.geteuid() and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def _safe_folder(folder: Path, create: bool) -> bool:
    """This user's folder, writable by nobody else (made so when ``create``)."""
    try:
        if create:
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        st = folder.lstat()
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and _private(st)


def _module_state(module: str) -> tuple[str, int, int] | None:
    """Where ``module`` is found now, and that file's size and modification time."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    origin = getattr(spec, "origin", None) if spec is not None else None
    if not origin or not os.path.isfile(origin):
        return None
    st = os.stat(origin)
    return origin, st.st_size, st.st_mtime_ns


def _entry(key: str) -> Path:
    return cache_dir() / "catalogs" / f"{key}.pickle"


def recall(key: str, path: Path) -> Any:
    """The cached MeshSpec for ``key`` (with ``path`` as given), or None."""
    if not enabled():
        return None
    entry = _entry(key)
    if not (_safe_folder(cache_dir(), create=False) and _safe_folder(entry.parent, create=False)):
        return None
    try:
        fd = os.open(entry, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not (stat.S_ISREG(st.st_mode) and _private(st)):
            return None
        with os.fdopen(fd, "rb", closefd=False) as fh:
            payload = fh.read()
    finally:
        os.close(fd)
    if not payload.startswith(FORMAT):
        return None
    try:
        stored_key, modules, mesh = pickle.loads(payload[len(FORMAT):])
    except Exception:  # truncated or foreign: validate from scratch and replace it
        return None
    if stored_key != key or not isinstance(modules, dict) or not isinstance(mesh, MeshSpec):
        return None  # damaged behind a valid header: a miss, replaced by the next remember
    for module, state in modules.items():
        if _module_state(module) != state:
            return None
    try:
        os.utime(entry)  # recently used: the last to be pruned
    except OSError:
        pass
    return replace(mesh, path=path)


def remember(key: str, mesh: Any, modules: set[str]) -> None:
    """Keep ``mesh`` under ``key``; a cache that cannot be written is skipped silently."""
    if not enabled():
        return
    folder = _entry(key).parent
    if not (_safe_folder(cache_dir(), create=True) and _safe_folder(folder, create=True)):
        return
    states = {m: _module_state(m) for m in sorted(modules)}
    if any(state is None for state in states.values()):
        return  # a module not backed by a file (a namespace, a frozen module): nothing to watch it by
    try:
        write_whole(_entry(key), FORMAT + pickle.dumps((key, states, mesh), protocol=pickle.HIGHEST_PROTOCOL))
    except (OSError, pickle.PicklingError, TypeError, AttributeError):
        return
    _prune(folder)


def _prune(folder: Path) -> None:
    """Keep the KEEP most recently used entries (a hit touches its entry)."""
    try:
        entries = sorted(folder.glob("*.pickle"), key=lambda p: p.stat().st_mtime_ns, reverse=True)
    except OSError:
        return
    for stale in entries[KEEP:]:
        stale.unlink(missing_ok=True)

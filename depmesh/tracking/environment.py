"""The environment a training ran in, as a standard lock: every installed
distribution of this interpreter, written as a PEP 751 ``pylock.toml``
(``packaging.pylock`` builds and validates it), plus the project's own lock
file whatever its format, plus the code when it is not in git.

Hashes: an installer does not keep a wheel's hash in the environment, so
they come from where the installer knew them: the ``uv.lock`` or
``pylock*.toml`` of the code's repository and of every project installed
from a directory (an editable depmesh brings its own lock), and the
``archive_info`` hashes of direct-URL installs. PEP 751 requires a hash for
every archive, so a distribution installed from an index whose hash is
known nowhere cannot be a lock entry: it is listed by name and version under
``[tool.depmesh] unhashed`` and ``depmesh reproduce`` installs that exact
version from the index. A distribution installed from a directory is a
``directory`` entry (its path; the code's own repository is rebuilt from
the recorded code instead).
"""

from __future__ import annotations

import hashlib
import io
import json
import sys
import tarfile
import tomllib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

# the project's own lock file, whatever tool wrote it: the first found at the code's root is recorded
PROJECT_LOCKS = ("uv.lock", "pylock.toml", "poetry.lock", "pdm.lock", "Pipfile.lock", "requirements.lock",
                 "requirements.txt", "conda-lock.yml", "environment.yml")
MAX_LOCK_BYTES = 20_000_000
MAX_CODE_BYTES = 50_000_000  # the module files of code outside git, all together
CODE_SKIP = ("__pycache__", ".git", ".venv", "venv", "node_modules", ".mypy_cache", ".pytest_cache", ".ruff_cache")


def depmesh_version() -> str:
    import importlib.metadata as md

    try:
        return md.version("depmesh")
    except md.PackageNotFoundError:
        return "unknown (not installed as a distribution)"


def project_lock(root: Path) -> tuple[str, bytes] | None:
    """(name, bytes) of the project's lock at ``root``: a known lock name, else a ``pylock.*.toml``."""
    names = list(PROJECT_LOCKS) + sorted(p.name for p in root.glob("pylock.*.toml"))
    for name in names:
        path = root / name
        if path.is_file() and path.stat().st_size <= MAX_LOCK_BYTES:
            return name, path.read_bytes()
    return None


@dataclass(frozen=True)
class Environment:
    """The running environment: ``pylock`` (the file's bytes), how many
    distributions it lists, and which of them have no known hash."""

    pylock: bytes
    packages: int
    unhashed: tuple[str, ...]


def _norm(name: str) -> str:
    from packaging.utils import canonicalize_name

    return canonicalize_name(name)


def _direct_url(dist: Any) -> dict[str, Any] | None:
    try:
        text = dist.read_text("direct_url.json")
        return json.loads(text) if text else None
    except (OSError, ValueError):
        return None


def _known_sources(lock_files: tuple[str, ...]) -> dict[tuple[str, str], dict[str, Any]]:
    """(name, version) -> {"index", "sdist", "wheels"} (pylock shapes) from uv.lock and pylock files."""
    known: dict[tuple[str, str], dict[str, Any]] = {}
    for where in lock_files:
        path = Path(where)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if path.name == "uv.lock":
            for package in data.get("package", []):
                source = package.get("source") or {}
                if "registry" not in source or "version" not in package:
                    continue

                def part(entry: dict[str, Any]) -> dict[str, Any] | None:
                    algorithm, _, value = str(entry.get("hash", "")).partition(":")
                    if not value or "url" not in entry:
                        return None
                    out = {"url": entry["url"], "hashes": {algorithm: value}}
                    if "size" in entry:
                        out["size"] = entry["size"]
                    return out

                sdist = part(package["sdist"]) if "sdist" in package else None
                wheels = [w for w in (part(entry) for entry in package.get("wheels", [])) if w]
                known[(_norm(package["name"]), str(package["version"]))] = {
                    "index": source["registry"], "sdist": sdist, "wheels": wheels}
        else:  # a PEP 751 lock
            for package in data.get("packages", []):
                if "version" in package and ("wheels" in package or "sdist" in package):
                    known[(_norm(package["name"]), str(package["version"]))] = {
                        "index": package.get("index"), "sdist": package.get("sdist"),
                        "wheels": list(package.get("wheels") or [])}
    return known


def _compatible(wheels: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The wheels this interpreter can install (a lock of every platform's wheels would be mostly noise)."""
    from packaging.tags import sys_tags
    from packaging.utils import InvalidWheelFilename, parse_wheel_filename

    supported = set(sys_tags())
    out = []
    for wheel in wheels:
        name = unquote(urlparse(str(wheel.get("url") or wheel.get("path") or "")).path.rsplit("/", 1)[-1])
        try:
            tags = parse_wheel_filename(name)[3]
        except InvalidWheelFilename:
            continue
        if tags & supported:
            out.append({**wheel, "name": name})
    return out


@lru_cache(maxsize=8)
def _folder_installs(_env_stamp: Any) -> tuple[Path, ...]:
    """The folders projects were installed from (an editable depmesh): read once per installed set."""
    import importlib.metadata as md

    roots = []
    for dist in md.distributions():
        direct = _direct_url(dist) or {}
        if "dir_info" in direct and str(direct.get("url", "")).startswith("file://"):
            roots.append(Path(unquote(urlparse(direct["url"]).path)))
    return tuple(roots)


def lock_files_for(code_root: str | None, env_stamp: Any = None) -> tuple[str, ...]:
    """Where hashes may be known: the code's repository's locks and those of directory-installed projects."""
    roots = [Path(code_root)] if code_root else []
    roots += _folder_installs(env_stamp if env_stamp is not None else _stamp())
    found = []
    for root in roots:
        for path in [root / "uv.lock", root / "pylock.toml", *sorted(root.glob("pylock.*.toml"))]:
            if path.is_file() and str(path) not in found:
                found.append(str(path))
    return tuple(found)


def _stamp() -> tuple[Any, ...]:
    """Changes when a distribution is installed or removed (the site-packages folders' mtimes)."""
    stamps = []
    for entry in sys.path:
        path = Path(entry)
        if path.name in ("site-packages", "dist-packages") and path.is_dir():
            stamps.append((entry, path.stat().st_mtime_ns))
    return tuple(stamps)


def capture(code_root: str | None = None) -> Environment:
    """The running interpreter's environment as a pylock.toml (see the module's docstring)."""
    env_stamp = _stamp()
    locks = lock_files_for(code_root, env_stamp)
    stamps = tuple((p, Path(p).stat().st_mtime_ns) for p in locks)
    return _capture(locks, stamps, env_stamp)


@lru_cache(maxsize=8)
def _capture(locks: tuple[str, ...], _lock_stamps: Any, _env_stamp: Any) -> Environment:
    import importlib.metadata as md

    import tomli_w
    from packaging.pylock import (
        Package,
        PackageArchive,
        PackageDirectory,
        PackageSdist,
        PackageVcs,
        PackageWheel,
        Pylock,
    )
    from packaging.specifiers import SpecifierSet
    from packaging.version import InvalidVersion, Version

    known = _known_sources(locks)
    packages, unhashed, seen = [], [], set()
    for dist in sorted(md.distributions(), key=lambda d: _norm(d.metadata["Name"] or "")):
        raw = dist.metadata["Name"]
        if not raw or _norm(raw) in seen:
            continue  # a shadowed duplicate on the path: the first one is what imports
        name = _norm(raw)
        seen.add(name)
        try:
            version = Version(dist.version)
        except InvalidVersion:
            unhashed.append({"name": name, "version": dist.version})
            continue
        direct = _direct_url(dist) or {}
        fields: dict[str, Any] = {}
        if "dir_info" in direct:
            path = unquote(urlparse(direct.get("url", "")).path)
            fields["directory"] = PackageDirectory(path=path, editable=bool(direct["dir_info"].get("editable")))
        elif "vcs_info" in direct:
            info = direct["vcs_info"]
            fields["vcs"] = PackageVcs(type=info.get("vcs", "git"), url=direct.get("url"),
                                       requested_revision=info.get("requested_revision"),
                                       commit_id=info.get("commit_id", ""))
        elif "archive_info" in direct and (direct["archive_info"].get("hashes") or direct["archive_info"].get("hash")):
            info = direct["archive_info"]
            hashes = dict(info.get("hashes") or {})
            if not hashes and "=" in info.get("hash", ""):
                algorithm, _, value = info["hash"].partition("=")
                hashes[algorithm] = value
            fields["archive"] = PackageArchive(url=direct.get("url"), hashes=hashes)
        else:
            source = known.get((name, str(version)))
            wheels = _compatible(source["wheels"]) if source else []
            if not source or not (wheels or source.get("sdist")):
                unhashed.append({"name": name, "version": str(version)})
                continue
            fields["index"] = source.get("index")
            if wheels:
                fields["wheels"] = [PackageWheel(name=w["name"], url=w.get("url"), path=w.get("path"),
                                                 size=w.get("size"), hashes=w["hashes"]) for w in wheels]
            if source.get("sdist"):
                sdist = source["sdist"]
                fields["sdist"] = PackageSdist(url=sdist.get("url"), path=sdist.get("path"), size=sdist.get("size"),
                                               hashes=sdist["hashes"])
        packages.append(Package(name=name, version=version, **fields))
    lock = Pylock(lock_version=Version("1.0"), created_by="depmesh",
                  requires_python=SpecifierSet(f"=={sys.version_info[0]}.{sys.version_info[1]}.*"),
                  packages=packages,
                  tool={"depmesh": {"depmesh": depmesh_version(), "python": sys.version.split()[0],
                                    "unhashed": unhashed}})
    lock.validate()
    text = tomli_w.dumps(lock.to_dict())
    header = ("# The environment a depmesh training ran in (PEP 751). Distributions whose hash no installer\n"
              "# recorded are listed under [tool.depmesh] unhashed; depmesh reproduce installs them by version.\n")
    return Environment(pylock=(header + text).encode(), packages=len(packages) + len(unhashed),
                       unhashed=tuple(u["name"] for u in unhashed))


def read(pylock: bytes) -> dict[str, Any]:
    """A recorded environment, parsed and validated (ValueError names what is wrong)."""
    from packaging.pylock import Pylock, PylockValidationError

    try:
        data = tomllib.loads(pylock.decode("utf-8"))
        Pylock.from_dict(data)
    except (UnicodeDecodeError, tomllib.TOMLDecodeError, PylockValidationError) as exc:
        raise ValueError(f"the recorded environment is not a valid pylock.toml: {exc}") from None
    return data


# -- code outside git --------------------------------------------------------------------------------
def import_root(module_name: str, module_file: str) -> tuple[Path, Path]:
    """(the folder to put on sys.path, the top-level file or package folder) for a module's file."""
    path = Path(module_file).resolve()
    parts = module_name.split(".")
    top = path.parent if path.name == "__init__.py" else path
    for _ in parts[1:]:
        top = top.parent
    return top.parent, top


def pack_code(module_name: str, module_file: str) -> tuple[bytes, dict[str, str], str]:
    """The module's top-level package (or lone file) as a reproducible tar: (bytes, {path: sha256}, root).
    ValueError when the files are larger than MAX_CODE_BYTES together."""
    root, top = import_root(module_name, module_file)
    files = [top] if top.is_file() else sorted(
        p for p in top.rglob("*") if p.is_file() and not any(part in CODE_SKIP for part in p.relative_to(root).parts))
    total = sum(p.stat().st_size for p in files)
    if total > MAX_CODE_BYTES:
        raise ValueError(f"the code under {top} is {total / 1e6:.0f} MB, more than {MAX_CODE_BYTES / 1e6:.0f} MB "
                         "(put it in a git repository, or install it as a package)")
    buffer, digests = io.BytesIO(), {}
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in files:
            data = path.read_bytes()
            name = path.relative_to(root).as_posix()
            digests[name] = hashlib.sha256(data).hexdigest()
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue(), digests, str(root)


def installed_distribution(module_name: str, module_file: str) -> tuple[str, str] | None:
    """(name, version) of the distribution installed in site-packages that holds the module (then the
    recorded environment holds the code), or None."""
    import importlib.metadata as md

    path = Path(module_file).resolve()
    if not any(part in ("site-packages", "dist-packages") for part in path.parts):
        return None
    names = md.packages_distributions().get(module_name.split(".")[0]) or []
    for name in names:
        try:
            return _norm(name), md.version(name)
        except md.PackageNotFoundError:
            continue
    return None

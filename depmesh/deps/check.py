"""Models deployed together must load in one environment: the versions a release's members were trained with
must agree, on major and minor version, for every library they need, with each other and with the environment
that serves them."""

from __future__ import annotations

import re
from typing import Any, Mapping


def major_minor(version: str) -> tuple[int, ...] | None:
    found = re.match(r"(\d+)(?:\.(\d+))?", version or "")
    return tuple(int(g) for g in found.groups() if g is not None) if found else None


def _needed(requirements: Mapping[str, Any] | None) -> dict[str, str]:
    return dict((requirements or {}).get("closure") or {})


def member_conflicts(members: Mapping[str, Mapping[str, Any] | None]) -> list[dict[str, Any]]:
    """Libraries the members need at different major.minor versions: [{library, versions: {node: version}}]."""
    by_library: dict[str, dict[str, str]] = {}
    for node, requirements in members.items():
        for library, version in _needed(requirements).items():
            by_library.setdefault(library, {})[node] = version
    return [{"library": library, "versions": versions} for library, versions in sorted(by_library.items())
            if len({major_minor(v) for v in versions.values()}) > 1]


def serving_mismatches(members: Mapping[str, Mapping[str, Any] | None],
                       installed: Mapping[str, str | None]) -> list[dict[str, Any]]:
    """Members trained under another major.minor of a library than the serving environment has (or lacks it)."""
    out = []
    for node, requirements in sorted(members.items()):
        for library, version in _needed(requirements).items():
            here = installed.get(library)
            if here is None or major_minor(here) != major_minor(version):
                out.append({"node": node, "library": library, "trained": version, "serving": here})
    return out


def conflict_message(release: str, conflicts: list[dict[str, Any]]) -> str:
    parts = [f"{c['library']} (" + ", ".join(f"{n} needs {v}" for n, v in sorted(c["versions"].items())) + ")"
             for c in conflicts]
    return (f"{release}: its models cannot load in one environment, they need different versions of "
            + "; ".join(parts) + ". Retrain the older ones under the current lock (depmesh run)")


def installed(libraries: list[str]) -> dict[str, str | None]:
    from depmesh.deps.needs import installed_version

    return {library: installed_version(library) for library in libraries}

"""Every locked package's license, from its installed distribution's metadata, normalized to SPDX where
possible (the ``license-expression`` library), judged against the catalog's policy."""

from __future__ import annotations

import functools
import importlib.metadata
from typing import Any

# trove classifiers -> SPDX ids (the common ones; others stay unknown and are flagged)
CLASSIFIERS = {
    "MIT License": "MIT", "Apache Software License": "Apache-2.0", "BSD License": "BSD-3-Clause",
    "Python Software Foundation License": "PSF-2.0", "Mozilla Public License 2.0 (MPL 2.0)": "MPL-2.0",
    "ISC License (ISCL)": "ISC", "GNU Library or Lesser General Public License (LGPL)": "LGPL-2.1-or-later",
    "GNU Lesser General Public License v3 (LGPLv3)": "LGPL-3.0-only",
    "GNU General Public License v3 (GPLv3)": "GPL-3.0-only", "GNU General Public License v2 (GPLv2)": "GPL-2.0-only",
    "GNU Affero General Public License v3": "AGPL-3.0-only", "The Unlicense (Unlicense)": "Unlicense",
    "Historical Permission Notice and Disclaimer (HPND)": "HPND", "zlib/libpng License": "Zlib",
    "Eclipse Public License 2.0 (EPL-2.0)": "EPL-2.0", "Academic Free License (AFL)": "AFL-3.0",
}


@functools.lru_cache(maxsize=1)
def _licensing():
    from license_expression import get_spdx_licensing

    return get_spdx_licensing()


ALIASES = {"CC0": "CC0-1.0", "3-Clause BSD License": "BSD-3-Clause", "BSD 3-Clause": "BSD-3-Clause",
           "Apache 2.0": "Apache-2.0", "Apache License 2.0": "Apache-2.0", "MIT License": "MIT"}


def normalize(text: str | None) -> str | None:
    """An SPDX expression for ``text`` (an id, an expression, a known alias), else None ('BSD' alone is
    ambiguous: which clauses? it stays unknown)."""
    if not text or len(text) > 200 or "\n" in text.strip():
        return None
    text = ALIASES.get(text.strip(), text)
    licensing = _licensing()
    try:
        parsed = licensing.parse(text.strip(), validate=True, strict=False)
    except Exception:  # noqa: BLE001 - any text the library cannot read as an expression is unknown
        return None
    if parsed is None or licensing.unknown_license_keys(parsed):
        return None
    return str(parsed)


def license_of(dist: str) -> dict[str, Any]:
    """{raw, spdx, source} from the installed distribution (License-Expression, License, classifiers)."""
    try:
        md = importlib.metadata.metadata(dist)
    except importlib.metadata.PackageNotFoundError:
        return {"raw": None, "spdx": None, "source": "not installed here (another platform's dependency?)"}
    for field in ("License-Expression", "License"):
        raw = md.get(field)
        spdx = normalize(raw)
        if spdx:
            return {"raw": raw, "spdx": spdx, "source": field}
    found = [c.split(" :: ")[-1] for c in md.get_all("Classifier") or [] if c.startswith("License ::")]
    mapped = [CLASSIFIERS[c] for c in found if c in CLASSIFIERS]
    if mapped:
        return {"raw": "; ".join(found), "spdx": " OR ".join(dict.fromkeys(mapped)), "source": "classifier"}
    raw = md.get("License-Expression") or md.get("License") or "; ".join(found) or None
    return {"raw": (raw or "")[:120] or None, "spdx": None, "source": "unknown"}


def _allowed(expression: Any, allowed: set[str]) -> bool:
    name = type(expression).__name__
    if name == "OR":
        return any(_allowed(a, allowed) for a in expression.args)
    if name == "AND":
        return all(_allowed(a, allowed) for a in expression.args)
    return str(getattr(expression, "key", expression)) in allowed


def verdict(spdx: str | None, allowed: tuple[str, ...], denied: tuple[str, ...]) -> str:
    """ok | denied | not allowed | unknown."""
    if spdx is None:
        return "unknown"
    licensing = _licensing()
    parsed = licensing.parse(spdx)
    symbols = {s.key for s in licensing.license_symbols(parsed)}
    if denied and symbols & set(denied) and not (allowed and _allowed(parsed, set(allowed))):
        return "denied"
    if allowed and not _allowed(parsed, set(allowed)):
        return "not allowed"
    return "ok"


def scan(lock: dict[str, dict[str, Any]], policy: Any) -> list[dict[str, Any]]:
    allowed = tuple(policy.allowed_licenses) if policy else ()
    denied = tuple(policy.denied_licenses) if policy else ()
    rows = []
    for name, package in sorted(lock.items()):
        if package.get("source", {}).get("editable") or package.get("source", {}).get("virtual"):
            continue  # the project itself
        found = license_of(name)
        rows.append({"package": package["name"], "version": package["version"], **found,
                     "verdict": verdict(found["spdx"], allowed, denied)})
    return rows

"""Known vulnerabilities in the locked versions: offline from a directory of OSV advisories (the format of
OSV's bulk exports: one JSON document per advisory, loose or in .zip files), or through pip-audit's service
where the network allows it. Findings per package, per model version (through what it needs) and per release."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any, Iterator

from depmesh.catalog.spec import ADVISORY_SEVERITIES as SEVERITIES
from depmesh.deps.needs import canonical

MAX_ADVISORY_BYTES = 2_000_000


class AuditError(ValueError):
    """Advisories that cannot be read, named by file."""


def _documents(root: Path) -> Iterator[tuple[str, bytes]]:
    if not root.is_dir():
        raise AuditError(f"no advisory directory at {root}")
    for path in sorted(root.rglob("*")):
        if path.is_symlink() or not path.is_file():
            continue
        if path.suffix == ".json":
            if path.stat().st_size > MAX_ADVISORY_BYTES:
                raise AuditError(f"{path}: {path.stat().st_size:,} bytes, more than an advisory holds")
            yield str(path), path.read_bytes()
        elif path.suffix == ".zip":
            yield from _zip_documents(path)


MAX_ZIP_ENTRIES = 1_000_000
MAX_ZIP_TOTAL_BYTES = 4_000_000_000  # inflated, all entries of one archive together


def _zip_documents(path: Path) -> Iterator[tuple[str, bytes]]:
    """Each .json entry of an OSV export zip, inflated through a size cap whatever its header claims (a header
    may lie: 100 bytes claimed, 1 GB inside); a bad, encrypted or unsupported archive or entry is named."""
    import zlib

    total = 0
    try:
        with zipfile.ZipFile(path) as archive:
            entries = archive.infolist()
            if len(entries) > MAX_ZIP_ENTRIES:
                raise AuditError(f"{path}: {len(entries):,} entries, more than {MAX_ZIP_ENTRIES:,}")
            for info in entries:
                if not info.filename.endswith(".json"):
                    continue
                where = f"{path}!{info.filename}"
                if info.flag_bits & 0x1:
                    raise AuditError(f"{where}: encrypted, so it cannot be read")
                if info.file_size > MAX_ADVISORY_BYTES:
                    raise AuditError(f"{where}: {info.file_size:,} bytes, more than an advisory holds")
                with archive.open(info) as entry:
                    payload = entry.read(MAX_ADVISORY_BYTES + 1)
                if len(payload) > MAX_ADVISORY_BYTES:
                    raise AuditError(f"{where}: inflates to more than {MAX_ADVISORY_BYTES:,} bytes (its header "
                                     f"claims {info.file_size:,}): refused")
                total += len(payload)
                if total > MAX_ZIP_TOTAL_BYTES:
                    raise AuditError(f"{path}: inflates to more than {MAX_ZIP_TOTAL_BYTES:,} bytes: refused")
                yield where, payload
    except AuditError:
        raise
    except NotImplementedError as exc:
        raise AuditError(f"{path}: uses a compression this reader does not support ({exc})") from None
    except (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, RuntimeError, OSError, EOFError, ValueError) as exc:
        raise AuditError(f"{path}: not a readable zip archive ({type(exc).__name__}: {exc})") from None


def load_advisories(root: str | Path) -> list[dict[str, Any]]:
    out = []
    for where, payload in _documents(Path(root)):
        try:
            doc = json.loads(payload)
        except ValueError as exc:
            raise AuditError(f"{where}: not JSON ({exc})") from None
        except RecursionError:
            raise AuditError(f"{where}: JSON nested too deeply to be an advisory") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("id"), str) or not isinstance(doc.get("affected"), list):
            raise AuditError(f"{where}: not an OSV advisory (it needs an id and an affected list)")
        doc["_file"] = where
        out.append(doc)
    return out


def severity(advisory: dict[str, Any]) -> str:
    raw = str((advisory.get("database_specific") or {}).get("severity") or "").lower()
    raw = {"moderate": "medium"}.get(raw, raw)
    if raw in SEVERITIES:
        return raw
    for entry in advisory.get("severity") or []:
        try:
            score = float(entry.get("score"))
        except (TypeError, ValueError):
            continue
        return "critical" if score >= 9 else "high" if score >= 7 else "medium" if score >= 4 else "low"
    return "unknown"


def _in_range(version: Any, events: list[dict[str, str]]) -> bool:
    from packaging.version import InvalidVersion, Version

    affected = False
    for event in events:
        if not isinstance(event, dict):
            continue
        try:
            if "introduced" in event:
                if event["introduced"] == "0" or version >= Version(event["introduced"]):
                    affected = True
            elif "fixed" in event and version >= Version(event["fixed"]):
                affected = False
            elif "last_affected" in event and version > Version(event["last_affected"]):
                affected = False
        except (InvalidVersion, TypeError):
            continue
    return affected


def affects(advisory: dict[str, Any], package: str, version: str) -> dict[str, Any] | None:
    """The affected entry of ``advisory`` that holds ``package==version`` (PyPI), else None."""
    from packaging.version import InvalidVersion, Version

    try:
        parsed = Version(version)
    except InvalidVersion:
        return None
    for entry in advisory.get("affected") or []:
        pkg = entry.get("package") or {}
        if pkg.get("ecosystem") != "PyPI" or canonical(pkg.get("name", "")) != canonical(package):
            continue
        if version in (entry.get("versions") or []):
            return entry
        for rng in entry.get("ranges") or []:
            if rng.get("type") in ("ECOSYSTEM", "SEMVER") and _in_range(parsed, rng.get("events") or []):
                return entry
    return None


def _fixed(entry: dict[str, Any]) -> list[str]:
    return [e["fixed"] for r in entry.get("ranges") or [] for e in r.get("events") or [] if "fixed" in e]


def audit(packages: dict[str, str], advisories: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Findings for ``packages`` (canonical name -> version)."""
    findings = []
    for name, version in sorted(packages.items()):
        for advisory in advisories:
            entry = affects(advisory, name, version)
            if entry is not None:
                findings.append({"package": name, "version": version, "advisory": advisory["id"],
                                 "aliases": advisory.get("aliases") or [], "severity": severity(advisory),
                                 "summary": (advisory.get("summary") or advisory.get("details") or "")[:200],
                                 "fixed": _fixed(entry), "source": advisory.get("_file", "")})
    return findings


def audit_online(packages: dict[str, str]) -> list[dict[str, Any]]:
    """Through pip-audit (its PyPI vulnerability service); pip-audit must be installed where depmesh runs."""
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as fh:
        fh.write("".join(f"{n}=={v}\n" for n, v in sorted(packages.items())))
        requirements = fh.name
    try:
        run = subprocess.run([sys.executable, "-m", "pip_audit", "-r", requirements, "--no-deps", "--disable-pip",
                              "--format", "json", "--progress-spinner", "off"], capture_output=True, text=True,
                             timeout=600)
    except FileNotFoundError as exc:
        raise AuditError(f"pip-audit could not run ({exc})") from None
    finally:
        Path(requirements).unlink(missing_ok=True)
    if "No module named pip_audit" in run.stderr:
        raise AuditError("pip-audit is not installed here, or audit offline: --osv DIR")
    try:
        report = json.loads(run.stdout)
    except ValueError:
        raise AuditError(f"pip-audit failed: {run.stderr.strip()[-500:]}") from None
    findings = []
    skipped = [f"{dep['name']}: {dep['skip_reason']}" for dep in report.get("dependencies", []) if dep.get("skip_reason")]
    if skipped:  # never "no known vulnerability" for a package nobody looked up
        raise AuditError(f"pip-audit could not audit {len(skipped)} of {len(packages)} packages (first: {skipped[0]}); "
                         "where its service is out of reach, audit offline: --osv DIR")
    for dep in report.get("dependencies", []):
        for vuln in dep.get("vulns", []):
            findings.append({"package": canonical(dep["name"]), "version": dep.get("version", ""),
                             "advisory": vuln["id"], "aliases": vuln.get("aliases", []), "severity": "unknown",
                             "summary": (vuln.get("description") or "")[:200], "fixed": vuln.get("fix_versions", []),
                             "source": "pip-audit"})
    return findings


def at_or_above(found: str, threshold: str) -> bool:
    """``unknown`` counts as at the threshold: a finding whose severity nobody rated is not waved through."""
    if found == "unknown":
        return True
    return SEVERITIES.index(found) >= SEVERITIES.index(threshold)


def per_model(needs: dict[str, dict[str, Any]], findings: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each finding with the model versions that need the package (``needs``: node -> requirements)."""
    out = []
    for finding in findings:
        models = sorted(n for n, r in needs.items() if finding["package"] in ((r or {}).get("closure") or {}))
        out.append({**finding, "models": models})
    return out


def blocking_findings(needs: dict[str, dict[str, Any]], policy: Any,
                      waived: set[tuple[str, str]]) -> list[dict[str, Any]]:
    """The findings in what ``needs`` closes over at or above the policy's severity that no waiver
    (advisory, canonical package) covers."""
    packages: dict[str, str] = {}
    for requirements in needs.values():
        packages.update((requirements or {}).get("closure") or {})
    found = per_model(needs, audit(packages, load_advisories(policy.advisories)))
    return [f for f in found if at_or_above(f["severity"], policy.block_severity)
            and (f["advisory"], f["package"]) not in waived]

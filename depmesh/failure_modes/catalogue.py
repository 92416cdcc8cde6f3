"""Load and validate a mesh's failure-mode catalogue.

    modes:
      - id: FM-SCHEMA
        title: An upstream source changes its schema
        type: external                 # internal | external
        layer: external dependency     # data | features | model | serving | infrastructure | external dependency
        severity: critical             # critical | high | medium | low
        owner: team:ingestion          # a team that owns a node of the mesh
        nodes: [raw/flights]           # where it happens (optional)
        signals: [...]                 # what a person sees
        detected_by: [{node: raw/flights, check: contract}, ...]
        mitigation: ...
        runbook: ...                   # a URL or the steps
        rollback: ...

The file is ``failure_modes.yaml`` beside the catalog. Problems are named
like the catalog's (file, line, mode, field): an unknown node, check or
team, a duplicate id, a missing field; every problem at once.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from depmesh.catalog import CatalogError, MeshSpec
from depmesh.catalog.reader import Problem, _Checker, load_yaml
from depmesh.catalog.spec import freshness_bounded
from depmesh.keys import FRESHNESS_CHECK

FILE_NAME = "failure_modes.yaml"
TYPES = ("internal", "external")
LAYERS = ("data", "features", "model", "serving", "infrastructure", "external dependency")
SEVERITIES = ("critical", "high", "medium", "low")
MODES_FILE_KEYS = {"mesh", "modes"}
MODE_KEYS = {"id", "title", "type", "layer", "severity", "owner", "nodes", "signals", "detected_by", "mitigation",
             "runbook", "rollback", "drill"}
REQUIRED = ("id", "title", "type", "layer", "severity", "owner", "signals", "mitigation", "runbook", "rollback")


class FailureModeError(CatalogError):
    """A failure-mode catalogue that cannot be used; ``problems`` lists every reason."""


RUN_FAILURE = "run_failure"  # a detector that is not an asset check: the run-failure sensor, at a node or "*"


@dataclass(frozen=True)
class Detector:
    node: str  # a node, or "*" (any node) for a run-failure detector
    check: str  # an asset check's name, or RUN_FAILURE
    # a regular expression: for run_failure, the step's error must match it; for a check, the failed check's text
    # (its description and failing rules), so a check that can fail several ways names only the mode that fits
    match: str | None = None

    @property
    def label(self) -> str:
        return f"{self.node}:{self.check}"

    def catches_run_failure(self, node: str, error: str) -> bool:
        import re

        return (self.check == RUN_FAILURE and self.node in ("*", node)
                and (self.match is None or re.search(self.match, error[:20_000]) is not None))


@dataclass(frozen=True)
class FailureMode:
    id: str
    title: str
    type: str
    layer: str
    severity: str
    owner: str
    nodes: tuple[str, ...]
    signals: tuple[str, ...]
    detected_by: tuple[Detector, ...]
    mitigation: str
    runbook: str
    rollback: str
    drill: str | None = None  # a simulation injection (depmesh simulate --inject syntax)
    line: int | None = None

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "title": self.title, "type": self.type, "layer": self.layer, "severity": self.severity,
                "owner": self.owner, "nodes": list(self.nodes), "signals": list(self.signals),
                "detected_by": [{"node": d.node, "check": d.check, **({"match": d.match} if d.match else {})}
                                for d in self.detected_by],
                "mitigation": self.mitigation, "runbook": self.runbook, "rollback": self.rollback, "drill": self.drill}


@dataclass(frozen=True)
class FailureCatalogue:
    path: Path
    modes: tuple[FailureMode, ...]
    teams: Any = None  # the mesh's declared Teams (depmesh.teams), whose webhooks incidents notify

    def detecting(self, node: str, check: str, text: str | None = None) -> list[FailureMode]:
        """The modes that ``node``'s ``check`` detects (what a failure of it may mean); with ``text`` (what the
        failed check said), only those whose detector's ``match`` it fits."""
        import re

        return [m for m in self.modes if any(
            d.node == node and d.check == check
            and (d.match is None or text is None or re.search(d.match, text[:20_000]) is not None)
            for d in m.detected_by)]

    def for_run_failure(self, node: str, error: str) -> list[tuple[FailureMode, Detector]]:
        """The modes a step of ``node`` that failed with ``error`` may mean, each with the detector that matched."""
        out = []
        for m in self.modes:
            hit = next((d for d in m.detected_by if d.catches_run_failure(node, error)), None)
            if hit is not None:
                out.append((m, hit))
        return out

    def mode(self, mode_id: str) -> FailureMode:
        for m in self.modes:
            if m.id == mode_id:
                return m
        raise KeyError(f"{self.path.name}: no failure mode {mode_id!r} (known: {', '.join(m.id for m in self.modes)})")


def catalogue_path(mesh: MeshSpec) -> Path:
    return Path(mesh.path).parent / FILE_NAME


def mesh_checks(mesh: MeshSpec) -> dict[str, list[str]]:
    """Every node's asset checks by name, and the release's gates under ``releases/<mesh>``."""
    from depmesh.contracts.compile import node_checks
    from depmesh.gates.release import RELEASE_GATES

    out = {n.name: [name for name, _, _ in node_checks(n)] for n in mesh.nodes}
    for node in freshness_bounded(mesh):  # Dagster's own freshness check (depmesh.automation.freshness)
        out[node.name].append(FRESHNESS_CHECK)
    if any(n.kind == "model" for n in mesh.nodes):
        out[f"releases/{mesh.name}"] = [name for name, _, _ in RELEASE_GATES]
    return out


def _text_list(c: _Checker, raw: dict, key: str, label: str) -> tuple[str, ...] | None:
    value = raw.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        c.add(f"expected a list of texts, got {value!r}", node=label, field=key, at=raw)
        return None
    return tuple(value)


def _parse_detectors(c: _Checker, raw_detectors: list, label: str, mesh: MeshSpec, checks: dict[str, list[str]],
                     detectors: list) -> bool:
    """Append each valid {node, check, match} of ``detected_by`` to ``detectors``; False when one is not."""
    ok = True
    for i, item in enumerate(raw_detectors):
        field = f"detected_by[{i}]"
        if not isinstance(item, dict) or not {"node", "check"} <= set(item) or not set(item) <= {"node", "check", "match"}:
            c.add(f"expected {{node: NODE, check: CHECK}} (and optionally match: REGEX), got {item!r}",
                  node=label, field=field, at=raw_detectors)
            ok = False
            continue
        node, check, match = item["node"], item["check"], item.get("match")
        if check == RUN_FAILURE:
            if node != "*" and node not in checks:
                c.add(f"unknown node {node!r} in mesh {mesh.name} (or \"*\": any node)", node=label,
                      field=f"{field}.node", at=item)
                ok = False
            elif match is not None and not _valid_pattern(c, match, label, f"{field}.match", item):
                ok = False
            else:
                detectors.append(Detector(node, check, match))
        elif node not in checks:
            c.add(f"unknown node {node!r} in mesh {mesh.name}", node=label, field=f"{field}.node", at=item)
            ok = False
        elif check not in checks[node]:
            c.add(f"unknown check {check!r} on {node} (its checks: {', '.join(checks[node]) or 'none'}; "
                  f"or {RUN_FAILURE})", node=label, field=f"{field}.check", at=item)
            ok = False
        elif match is not None and not _valid_pattern(c, match, label, f"{field}.match", item):
            ok = False
        else:
            detectors.append(Detector(node, check, match))
    return ok


def _parse_mode(c: _Checker, raw: Any, index: int, mesh: MeshSpec, checks: dict[str, list[str]],
                teams: set[str]) -> FailureMode | None:
    if not isinstance(raw, dict):
        c.add(f"expected a mapping, got {raw!r}", field=f"modes[{index}]", at=raw)
        return None
    label = f"mode {raw['id']}" if isinstance(raw.get("id"), str) else f"modes[{index}]"
    c.keys(raw, MODE_KEYS, node=label, prefix="")
    ok = True
    for key in REQUIRED:
        if key not in raw:
            c.add(f"missing required key {key!r}", node=label, field=key, at=raw)
            ok = False
        elif key != "signals" and (not isinstance(raw[key], str) or not raw[key].strip()):
            c.add(f"expected a non-empty text, got {raw[key]!r}", node=label, field=key, at=raw)
            ok = False
    for key, allowed in (("type", TYPES), ("layer", LAYERS), ("severity", SEVERITIES)):
        if isinstance(raw.get(key), str) and raw[key] not in allowed:
            c.add(f"unknown {key} {raw[key]!r} (known: {', '.join(allowed)})", node=label, field=key, at=raw)
            ok = False
    owner = raw.get("owner")
    if isinstance(owner, str) and owner.strip():
        owner = owner if owner.startswith("team:") or "@" in owner else "team:" + owner
        if owner not in teams:
            c.add(f"unknown team {owner!r}: no node of mesh {mesh.name} is owned by it (teams: "
                  f"{', '.join(sorted(teams))})", node=label, field="owner", at=raw)
            ok = False
    nodes = _text_list(c, raw, "nodes", label)
    signals = _text_list(c, raw, "signals", label) if "signals" in raw else ()
    ok = ok and nodes is not None and signals is not None
    for node in nodes or ():
        if node not in checks:
            c.add(f"unknown node {node!r} in mesh {mesh.name}", node=label, field="nodes", at=raw)
            ok = False
    detectors = []
    raw_detectors = raw.get("detected_by", [])
    if not isinstance(raw_detectors, list):
        c.add(f"expected a list of {{node, check}}, got {raw_detectors!r}", node=label, field="detected_by", at=raw)
        return None
    ok = _parse_detectors(c, raw_detectors, label, mesh, checks, detectors) and ok
    drill = raw.get("drill")
    if drill is not None:
        from depmesh.injections import InjectionError, check_drill

        try:
            if not isinstance(drill, str):
                raise InjectionError(f"expected an injection text, got {drill!r}")
            check_drill(drill, mesh)
        except InjectionError as exc:
            c.add(f"not a drill injection: {exc}", node=label, field="drill", at=raw)
            ok = False
    if not ok:
        return None
    return FailureMode(id=raw["id"], title=raw["title"], type=raw["type"], layer=raw["layer"],
                       severity=raw["severity"], owner=owner, nodes=tuple(nodes), signals=tuple(signals),
                       detected_by=tuple(detectors), mitigation=raw["mitigation"], runbook=raw["runbook"],
                       rollback=raw["rollback"], drill=drill, line=getattr(raw, "line", None))


def _valid_pattern(c: _Checker, match: Any, label: str, field: str, at: Any) -> bool:
    import re

    if not isinstance(match, str) or not match or len(match) > 500:
        c.add(f"expected a regular expression of 1 to 500 characters, got {match!r}", node=label, field=field, at=at)
        return False
    try:
        re.compile(match)
    except re.error as exc:
        c.add(f"not a regular expression: {exc}", node=label, field=field, at=at)
        return False
    return True


def parse_failure_modes(text: str, path: Path, mesh: MeshSpec, declared_teams: Any = ()) -> FailureCatalogue:
    """``declared_teams``: team names from the teams file, owners besides the nodes' owners."""
    c = _Checker(path)
    data = load_yaml(text, c, FailureModeError)
    if not isinstance(data, dict) or not isinstance(data.get("modes"), list):
        c.add("expected a mapping with a list under 'modes' at the top")
        raise FailureModeError(c.problems)
    c.keys(data, MODES_FILE_KEYS, node=None, prefix="")
    if data.get("mesh") not in (None, mesh.name):
        c.add(f"this catalogue is for mesh {data['mesh']!r}, the catalog beside it is mesh {mesh.name!r}",
              field="mesh", at=data)
    checks = mesh_checks(mesh)
    teams = {n.owner for n in mesh.nodes} | set(declared_teams)
    modes, seen = [], {}
    for i, raw in enumerate(data["modes"]):
        mode = _parse_mode(c, raw, i, mesh, checks, teams)
        mode_id = raw.get("id") if isinstance(raw, dict) else None
        if isinstance(mode_id, str):
            if mode_id in seen:
                c.add(f"duplicate id {mode_id!r} (first at line {seen[mode_id]})", node=f"mode {mode_id}", field="id",
                      at=raw)
            seen.setdefault(mode_id, getattr(raw, "line", None))
        if mode is not None:
            modes.append(mode)
    if c.problems:
        raise FailureModeError(c.problems)
    return FailureCatalogue(path, tuple(modes))


def load_failure_modes(mesh: MeshSpec, path: Path | None = None) -> FailureCatalogue | None:
    """The catalogue beside the mesh's catalog (or at ``path``); None when there is none."""
    path = Path(path) if path else catalogue_path(mesh)
    if not path.is_file():
        if path != catalogue_path(mesh):
            raise FailureModeError([Problem(path.name, None, None, None, f"no failure-mode catalogue at {path}")])
        return None
    from depmesh.teams import load_teams

    teams = load_teams(mesh)
    from depmesh.catalog.reader import read_capped

    text = read_capped(path, FailureModeError, "failure-mode catalogue")
    found = parse_failure_modes(text, path, mesh, teams.teams if teams else ())
    return replace(found, teams=teams)


def coverage(mesh: MeshSpec, catalogue: FailureCatalogue) -> dict[str, Any]:
    """Modes no check detects, nodes no mode names, checks that serve no mode."""
    checks = mesh_checks(mesh)
    used = {(d.node, d.check) for m in catalogue.modes for d in m.detected_by}
    named = {n for m in catalogue.modes for n in (*m.nodes, *(d.node for d in m.detected_by))} - {"*"}
    return {
        "modes": len(catalogue.modes),
        "undetected_modes": [m.id for m in catalogue.modes if not m.detected_by],
        "nodes_without_mode": [n.name for n in mesh.nodes if n.name not in named],
        "checks_without_mode": [f"{node}:{check}" for node, names in checks.items() for check in names
                                if (node, check) not in used],
        "by_mode": [{"id": m.id, "title": m.title, "severity": m.severity, "owner": m.owner,
                     "detected_by": [d.label for d in m.detected_by], "drill": m.drill}
                    for m in catalogue.modes],
    }


FAILURE_MODES_KEY = "depmesh/failure_modes"  # a failed check's metadata: the modes it may mean, and what to do


def modes_markdown(modes: list[FailureMode]) -> str:
    """What a failed check may mean, for its metadata in the UI: each matching mode with owner, mitigation, runbook."""
    lines = ["| mode | owner | severity | mitigation | runbook | rollback |", "|---|---|---|---|---|---|"]
    for m in modes:
        cells = [f"**{m.id}** {m.title}", m.owner, m.severity, m.mitigation, m.runbook, m.rollback]
        lines.append("| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) + " |")
    return "\n".join(lines)

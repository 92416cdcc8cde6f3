"""The release's own deployment gates: what must hold of a set of model
versions before it is recorded as a release. Pure functions over the members
(node -> version) and their registry records; one table, so a new release
gate is one line."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from depmesh.gates.evaluate import GateResult

Records = Mapping[str, Mapping[str, Any] | None]  # node -> its registry row (None: not registered)


def members_passed_gates(members: Mapping[str, str], records: Records, artifact_problems: list[str]) -> GateResult:
    failing = []
    for node, version in sorted(members.items()):
        record = records.get(node)
        if record is None:
            failing.append(f"{node}@{version} is not registered")
            continue
        bad = sorted(g for g, r in record["gates"].items() if not r.get("passed"))
        if bad:
            failing.append(f"{node}@{version} failed {', '.join(bad)}")
    return GateResult("release_gates_passed", not failing,
                      "; ".join(failing) or f"all {len(members)} members passed every gate",
                      {"members": len(members), "failing": failing})


def artifacts_verified(members: Mapping[str, str], records: Records, artifact_problems: list[str]) -> GateResult:
    return GateResult("release_artifacts_verified", not artifact_problems,
                      "; ".join(artifact_problems) or f"all {len(members)} artifacts match their recorded hashes",
                      {"members": len(members), "problems": artifact_problems})


def _upstream(records: Records, node: str) -> dict[str, str]:
    record = records.get(node)
    return dict(record["upstream_models"]) if record else {}


def trained_together(members: Mapping[str, str], records: Records, artifact_problems: list[str]) -> GateResult:
    mismatches = [f"{node}@{members[node]} was trained against {up}@{version}, the release holds {up}@{members[up]}"
                  for node in sorted(members) for up, version in sorted(_upstream(records, node).items())
                  if up in members and members[up] != version]
    return GateResult("release_trained_together", not mismatches,
                      "; ".join(mismatches) or "every member was trained against the other members' versions",
                      {"mismatches": mismatches})


def upstream_in_set(members: Mapping[str, str], records: Records, artifact_problems: list[str]) -> GateResult:
    outside = [f"{node}@{members[node]} needs {up}@{version}, which is not in the release"
               for node in sorted(members) for up, version in sorted(_upstream(records, node).items())
               if up not in members]
    return GateResult("release_upstream_in_set", not outside,
                      "; ".join(outside) or "no member depends on a model outside the release", {"outside": outside})


def recipes_complete(members: Mapping[str, str], records: Records, artifact_problems: list[str]) -> GateResult:
    missing = [f"{node}@{version}: " + "; ".join(records[node].get("recipe_problems") or [])
               for node, version in sorted(members.items())
               if records.get(node) is not None and records[node].get("recipe_problems")]
    return GateResult("release_recipes_complete", not missing,
                      "; ".join(missing) or "every member can be rebuilt from its recorded recipe", {"missing": missing})


ReleaseGate = Callable[[Mapping[str, str], Records, list[str]], GateResult]
RELEASE_GATES: tuple[tuple[str, str, ReleaseGate], ...] = (
    ("release_gates_passed", "Every member version passed all of its deployment gates.", members_passed_gates),
    ("release_artifacts_verified", "Every member's artifact exists and matches the hash recorded for its version.",
     artifacts_verified),
    ("release_trained_together", "Each member was trained against the very versions of the other members.",
     trained_together),
    ("release_upstream_in_set", "No member depends on an upstream model outside the release.", upstream_in_set),
    ("release_recipes_complete", "Every member has a complete reproducibility recipe (lock, commit and diff, catalog, "
     "input snapshots, seed, parameters): nothing reaches Staging that cannot be rebuilt.", recipes_complete),
)


def evaluate_release(members: Mapping[str, str], records: Records, artifact_problems: list[str]) -> list[GateResult]:
    return [fn(members, records, artifact_problems) for _, _, fn in RELEASE_GATES]

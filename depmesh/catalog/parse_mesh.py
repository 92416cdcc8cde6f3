"""The mesh-wide sections of a catalog: rollout, serving and the dependency policy."""

from __future__ import annotations

import re
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

from depmesh.catalog.reader import _Checker
from depmesh.catalog.spec import (
    ADVISORY_SEVERITIES,
    BEFORE_FIRST_PROMOTION,
    SERVING_MODES,
    DependencyPolicy,
    NodeSpec,
    RolloutSpec,
    RolloutStep,
    RolloutThresholds,
    ServingSpec,
)

SERVING_KEYS = {f.name for f in fields(ServingSpec)}
ROLLOUT_KEYS = {"key", "steps", "min_rows", "thresholds", "disagreement_tolerance", "confidence", "bootstrap"}
STEP_KEYS = {"percent", "min_rows", "thresholds"}
THRESHOLD_KEYS = {f.name for f in fields(RolloutThresholds)}


def _parse_thresholds(c: _Checker, raw: Any, base: RolloutThresholds, field: str) -> RolloutThresholds:
    if raw is None:
        return base
    if not isinstance(raw, dict):
        c.add(f"expected a mapping of thresholds ({', '.join(sorted(THRESHOLD_KEYS))}), got {raw!r}", node="rollout",
              field=field, at=raw)
        return base
    c.keys(raw, THRESHOLD_KEYS, node="rollout", prefix=field + ".")
    values = {}
    for key, value in raw.items():
        if key in THRESHOLD_KEYS:
            if value is not None and (not c.typed(value, (int, float), "a number or null", node="rollout",
                                                  field=f"{field}.{key}", at=raw) or value < 0):
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    c.add(f"expected a number >= 0, got {value!r}", node="rollout", field=f"{field}.{key}", at=raw)
                continue
            values[key] = None if value is None else float(value)
    return replace(base, **values)


def _parse_rollout(c: _Checker, raw: Any, nodes: list[NodeSpec]) -> RolloutSpec | None:
    """The catalog's ``rollout:``: the key that splits rows, and the steps with their thresholds."""
    if not isinstance(raw, dict):
        c.add(f"expected a mapping with key and steps, got {raw!r}", field="rollout", at=raw)
        return None
    c.keys(raw, ROLLOUT_KEYS, node="rollout", prefix="")
    key = raw.get("key")
    scores = [n for n in nodes if n.kind == "scores"]
    if not isinstance(key, str) or not key:
        c.add(f"missing or empty 'key': the column whose hash splits rows between the arms, got {key!r}",
              node="rollout", field="key", at=raw)
    else:
        lacking = [n.name for n in scores if n.contract and n.contract.column_names and key not in
                   n.contract.column_names]
        if lacking:
            c.add(f"key {key!r} is not a column of {', '.join(lacking)} (their contracts)", node="rollout",
                  field="key", at=raw)
    default_rows = raw.get("min_rows", 100)
    if not isinstance(default_rows, int) or isinstance(default_rows, bool) or default_rows < 1:
        c.add(f"expected a whole number >= 1, got {default_rows!r}", node="rollout", field="min_rows", at=raw)
        default_rows = 100
    base = _parse_thresholds(c, raw.get("thresholds"), RolloutThresholds(), "thresholds")
    steps: list[RolloutStep] = []
    raw_steps = raw.get("steps")
    if not isinstance(raw_steps, list) or not raw_steps:
        c.add(f"expected a list of steps (percent, or {{percent, min_rows, thresholds}}), got {raw_steps!r}",
              node="rollout", field="steps", at=raw)
        raw_steps = []
    for i, item in enumerate(raw_steps):
        field = f"steps[{i}]"
        item = {"percent": item} if isinstance(item, (int, float)) and not isinstance(item, bool) else item
        if not isinstance(item, dict) or "percent" not in item:
            c.add(f"expected a percent or {{percent, min_rows, thresholds}}, got {item!r}", node="rollout",
                  field=field, at=raw_steps)
            continue
        c.keys(item, STEP_KEYS, node="rollout", prefix=field + ".")
        percent, rows = item["percent"], item.get("min_rows", default_rows)
        if isinstance(percent, bool) or not isinstance(percent, (int, float)) or not 0 < percent <= 100:
            c.add(f"expected a percent in (0, 100], got {percent!r}", node="rollout", field=f"{field}.percent",
                  at=raw_steps)
            continue
        if steps and percent <= steps[-1].percent:
            c.add(f"steps must grow: {percent}% after {steps[-1].percent}%", node="rollout",
                  field=f"{field}.percent", at=raw_steps)
        if not isinstance(rows, int) or isinstance(rows, bool) or rows < 1:
            c.add(f"expected a whole number >= 1, got {rows!r}", node="rollout", field=f"{field}.min_rows",
                  at=raw_steps)
            rows = default_rows
        steps.append(RolloutStep(float(percent), rows, _parse_thresholds(c, item.get("thresholds"), base,
                                                                         f"{field}.thresholds")))
    if steps and steps[-1].percent != 100:
        c.add(f"the last step must be 100% (it is {steps[-1].percent}%): a canary ends with the whole traffic",
              node="rollout", field="steps", at=raw)
    tolerance = raw.get("disagreement_tolerance", 0.0)
    confidence = raw.get("confidence", 0.95)
    resamples = raw.get("bootstrap", 2000)
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or tolerance < 0:
        c.add(f"expected a number >= 0, got {tolerance!r}", node="rollout", field="disagreement_tolerance", at=raw)
        tolerance = 0.0
    if isinstance(confidence, bool) or not isinstance(confidence, float) or not 0.5 <= confidence < 1:
        c.add(f"expected a fraction in [0.5, 1), got {confidence!r}", node="rollout", field="confidence", at=raw)
        confidence = 0.95
    if isinstance(resamples, bool) or not isinstance(resamples, int) or not 100 <= resamples <= 100_000:
        c.add(f"expected a whole number from 100 to 100000, got {resamples!r}", node="rollout", field="bootstrap",
              at=raw)
        resamples = 2000
    return RolloutSpec(key=key if isinstance(key, str) else "", steps=tuple(steps),
                       disagreement_tolerance=float(tolerance), confidence=confidence, bootstrap=resamples,
                       line=getattr(raw, "line", None))


DEPENDENCY_KEYS = {"licenses", "audit", "upgrade"}
LICENSE_KEYS, AUDIT_KEYS, UPGRADE_KEYS = ("allowed", "denied"), ("advisories", "block"), ("tolerance",)
SPDX_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.+-]{0,63}$")


def _dependency_section(c: _Checker, raw: dict, name: str, keys: tuple[str, ...], shape: str) -> dict:
    """``dependencies.<name>``: a mapping of ``keys`` (an absent section is empty; a wrong one is reported)."""
    section = raw.get(name) or {}
    if not isinstance(section, dict):
        c.add(f"expected {shape}, got {section!r}", node="dependencies", field=name, at=raw)
        return {}
    c.keys(section, set(keys), node="dependencies", prefix=f"{name}.")
    return section


def _parse_serving(c: _Checker, raw: Any) -> ServingSpec:
    """``serving: {mode: production | latest, before_first_promotion: skip | candidate}``."""
    if not isinstance(raw, dict):
        c.add(f"expected a mapping with mode and before_first_promotion, got {raw!r}", field="serving", at=raw)
        return ServingSpec()
    c.keys(raw, SERVING_KEYS, node=None, prefix="serving.")
    values = {}
    for key, allowed in (("mode", SERVING_MODES), ("before_first_promotion", BEFORE_FIRST_PROMOTION)):
        if key in raw:
            if raw[key] not in allowed:
                c.add(f"expected one of {', '.join(allowed)}, got {raw[key]!r}", field=f"serving.{key}", at=raw)
            else:
                values[key] = raw[key]
    if values.get("mode") == "latest" and "before_first_promotion" in values:
        c.add("before_first_promotion applies to mode production only (a latest mesh always serves what it "
              "trained)", field="serving.before_first_promotion", at=raw)
    return ServingSpec(**values)


def _parse_dependencies(c: _Checker, raw: Any, path: Path) -> DependencyPolicy | None:
    """``dependencies: {licenses: {allowed: [...], denied: [...]}, audit: {advisories: DIR, block: high}}``."""
    if not isinstance(raw, dict):
        c.add(f"expected a mapping with licenses and audit, got {raw!r}", node="dependencies", at=raw)
        return None
    c.keys(raw, DEPENDENCY_KEYS, node="dependencies", prefix="")
    lists: dict[str, tuple[str, ...]] = {}
    licenses = _dependency_section(c, raw, "licenses", LICENSE_KEYS, "{allowed: [...], denied: [...]}")
    for key in ("allowed", "denied"):
        values = licenses.get(key, [])
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            c.add(f"expected a list of SPDX license ids, got {values!r}", node="dependencies",
                  field=f"licenses.{key}", at=licenses)
            values = []
        for value in values:
            if not SPDX_ID_RE.match(value):
                c.add(f"{value!r} is not an SPDX license id (e.g. MIT, Apache-2.0, BSD-3-Clause)",
                      node="dependencies", field=f"licenses.{key}", at=licenses)
        lists[key] = tuple(values)
    audit = _dependency_section(c, raw, "audit", AUDIT_KEYS, "{advisories: DIR, block: SEVERITY}")
    block = audit.get("block", "high")
    if block not in ADVISORY_SEVERITIES:
        c.add(f"unknown severity {block!r} (known: {', '.join(ADVISORY_SEVERITIES)})", node="dependencies",
              field="audit.block", at=audit)
        block = "high"
    advisories = audit.get("advisories")
    if advisories is not None and not isinstance(advisories, str):
        c.add(f"expected a directory path, got {advisories!r}", node="dependencies", field="audit.advisories",
              at=audit)
        advisories = None
    if advisories is not None and not Path(advisories).is_absolute():
        advisories = str((Path(path).parent / advisories).resolve())
    upgrade = _dependency_section(c, raw, "upgrade", UPGRADE_KEYS, "{tolerance: NUMBER}")
    tolerance = upgrade.get("tolerance", 1e-9)
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or tolerance < 0:
        c.add(f"expected a number >= 0, got {tolerance!r}", node="dependencies", field="upgrade.tolerance",
              at=upgrade)
        tolerance = 1e-9
    return DependencyPolicy(allowed_licenses=lists["allowed"], denied_licenses=lists["denied"],
                            advisories=advisories, block_severity=block, upgrade_tolerance=float(tolerance))

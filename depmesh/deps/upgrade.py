"""Behaviour on upgrade: a second environment from the lock with some packages overridden (uv, an isolated
folder), where every Production model's artifact is loaded and the model retrained from its recipe; both
environments score the fixed evaluation window, and the report says per model how far the predictions moved,
how the retrained metrics moved, and whether retraining still gives the same version."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable

from depmesh.deps.needs import canonical

OVERRIDE_RE = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([A-Za-z0-9][A-Za-z0-9.+!-]*)$")
DEFAULT_TOLERANCE = 1e-9


class UpgradeError(ValueError):
    """An upgrade that cannot be tried: a malformed override, a package not in the lock, a failed environment."""


def parse_overrides(specs: list[str], lock: dict[str, dict[str, Any]]) -> dict[str, str]:
    out = {}
    for spec in specs:
        found = OVERRIDE_RE.match(spec)
        if not found:
            raise UpgradeError(f"{spec!r}: expected PACKAGE==VERSION (e.g. numpy==2.4.5)")
        name, version = canonical(found.group(1)), found.group(2)
        if name not in lock:
            raise UpgradeError(f"{spec!r}: {name} is not in the lock, so nothing of the mesh uses it")
        out[name] = version
    if not out:
        raise UpgradeError("name at least one PACKAGE==VERSION to try")
    return out


def _jobs(registry: Any, production: dict[str, str]) -> list[dict[str, Any]]:
    from depmesh.tracking.snapshots import SnapshotStore

    snapshots = SnapshotStore.beside(registry.artifacts.root)
    jobs = []
    for node, version in sorted(production.items()):
        info = registry.version(node, version)
        problems = registry.recipe_problems(node, version)
        if problems:
            raise UpgradeError(f"{node}@{version} cannot be retrained: its recipe is incomplete: " + "; ".join(problems))
        recipe = info["recipe"]
        inputs = {name: ({"kind": "table", "path": str(snapshots.path_for(p["sha256"])), "sha256": p["sha256"]}
                         if p["kind"] == "table" else {"kind": "model", "sha256": p["sha256"], "version": p["version"]})
                  for name, p in recipe["inputs"].items()}
        jobs.append({"node": node, "version": version, "artifact_hash": info["artifact_hash"],
                     "params": recipe["params"], "seed": recipe["seed"], "inputs": inputs})
    return jobs


def _probe(python: str, job: Path, out: Path, cwd: Path) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    script = out.parent / "upgrade_probe.py"
    shutil.copyfile(Path(__file__).with_name("upgrade_probe.py"), script)
    done = subprocess.run([python, str(script), str(job), str(out)], capture_output=True, cwd=cwd, env=env,
                          timeout=3600)
    if done.returncode != 0:
        raise UpgradeError(f"the probe failed with {python} (exit {done.returncode}): "
                           + done.stderr.decode(errors="replace").strip()[-2000:])
    return json.loads(done.stdout.decode().strip().splitlines()[-1])


def build_upgraded(repo: Path, work: Path, overrides: dict[str, str], uv: str,
                   progress: Callable[[str], None]) -> Path:
    """The project's locked environment in ``work``/venv, then the overrides installed over it."""
    from depmesh.tracking.reproduce import _run, build_environment

    source = work / "source"
    source.mkdir(parents=True)
    for name in ("pyproject.toml", "uv.lock", "README.md"):
        shutil.copy2(repo / name, source / name)
    shutil.copytree(repo / "depmesh", source / "depmesh", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    venv = work / "venv"
    progress(f"environment: uv sync --locked (no dev tools) into {venv}")
    seconds = build_environment(source, venv, uv)
    pins = [f"{n}=={v}" for n, v in sorted(overrides.items())]
    progress(f"built in {seconds:.1f} s; overriding {', '.join(pins)}")
    _run([uv, "pip", "install", "--python", str(venv / "bin" / "python"), *pins],
         f"installing {', '.join(pins)} (uv pip install)", cwd=source)
    return venv


def compare(a: dict[str, Any], b: dict[str, Any], tolerance: float) -> dict[str, dict[str, Any]]:
    import numpy as np

    report = {}
    for node, before in a["models"].items():
        after = b["models"].get(node, {})
        entry: dict[str, Any] = {"rows": before.get("rows")}
        if "error" in before or "error" in after:
            entry.update(error_before=before.get("error"), error_after=after.get("error"), beyond_tolerance=True)
            report[node] = entry
            continue
        x, y = np.load(before["predictions"]), np.load(after["predictions"])
        diff = np.abs(x - y) if x.shape == y.shape else None
        if diff is None:
            entry.update(error_after=f"predictions of shape {y.shape}, before {x.shape}", beyond_tolerance=True)
        else:
            entry.update(max_abs_difference=float(np.nanmax(diff)) if diff.size else 0.0,
                         mean_abs_difference=float(np.nanmean(diff)) if diff.size else 0.0,
                         share_beyond_tolerance=float(np.mean(diff.reshape(len(x), -1).max(axis=1) > tolerance))
                         if diff.size else 0.0)
            entry["beyond_tolerance"] = entry["max_abs_difference"] > tolerance
        entry["metric_change"] = {k: after["metrics"][k] - v for k, v in before["metrics"].items()
                                  if isinstance(v, (int, float)) and isinstance(after["metrics"].get(k), (int, float))}
        entry.update(same_version=after["retrained_version"] == before["retrained_version"],
                     same_bytes=after["retrained_hash"] == before["retrained_hash"],
                     retrained_version=before["retrained_version"])
        report[node] = entry
    return report


def upgrade_diff(registry: Any, mesh: Any, overrides: dict[str, str], *, repo: Path, tolerance: float,
                 models: list[str] | None = None, work_dir: Path | None = None, keep: bool = False,
                 progress: Callable[[str], None] = print) -> dict[str, Any]:
    """``models``: only these Production models (default: every one)."""
    from depmesh.tracking.reproduce import ReproduceError, find_uv

    production = registry.production()
    if not production:
        raise UpgradeError(f"no Production models in mesh {registry.mesh}: nothing to compare")
    unknown = [m for m in models or [] if m not in production]
    if unknown:
        raise UpgradeError(f"not a Production model of mesh {registry.mesh}: {', '.join(unknown)} "
                           f"(Production: {', '.join(sorted(production))})")
    if models:
        production = {m: v for m, v in production.items() if m in models}
    work = Path(work_dir or tempfile.mkdtemp(prefix="depmesh-upgrade-"))
    work.mkdir(parents=True, exist_ok=True)
    libraries = sorted(set(overrides) | {"numpy", "scikit-learn", "scipy", "pandas"})
    job = {"catalog": str(mesh.path), "artifacts": str(registry.artifacts.root), "libraries": libraries,
           "models": _jobs(registry, production)}
    (work / "job.json").write_text(json.dumps(job, indent=2))
    try:
        progress(f"current environment: loading and retraining {len(production)} Production models")
        before = _probe(sys.executable, work / "job.json", work / "before", repo)
        venv = build_upgraded(repo, work / "upgraded", overrides, find_uv(), progress)
        progress("upgraded environment: loading and retraining them again")
        after = _probe(str(venv / "bin" / "python"), work / "job.json", work / "after", work / "upgraded" / "source")
    except ReproduceError as exc:
        raise UpgradeError(str(exc)) from None
    wrong = {n: (after["libraries"].get(n), v) for n, v in overrides.items() if after["libraries"].get(n) != v}
    if wrong:
        raise UpgradeError("the upgraded environment does not hold the asked versions: "
                           + ", ".join(f"{n} {got} (asked {want})" for n, (got, want) in wrong.items()))
    models = compare(before, after, tolerance)
    report = {"overrides": overrides, "tolerance": tolerance, "libraries_before": before["libraries"],
              "libraries_after": after["libraries"], "models": models,
              "beyond_tolerance": sorted(n for n, m in models.items() if m.get("beyond_tolerance")),
              "work_dir": str(work)}
    if work_dir is None and not keep:
        shutil.rmtree(work, ignore_errors=True)
        report["work_dir"] = f"{work} (removed; --keep keeps it)"
    return report

"""``depmesh reproduce MODEL@VERSION``: rebuild a registered version from its
recipe in a fresh environment and say how close the rebuild is.

1. The code: ``git archive`` of the recorded commit, with the recorded diff
   (uncommitted and untracked changes) applied, in a new folder.
2. The environment: the stored lock file, installed by ``uv sync --locked``
   into an isolated virtual environment (uv's cache makes this seconds when
   the packages were installed before; nothing of the current environment is used).
3. The training: in that environment, depmesh.tracking.rebuild (as a script) trains the node from the stored catalog with the recorded parameters and
   seed on the input snapshots (each verified by its hash), packs the
   artifact and compares it with the registered one: the same bytes, or else
   the predictions of both on the evaluation window (largest difference).

Exit codes of the command: 0 bit-identical, 3 different bytes but equal
predictions, 1 not reproduced.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

IDENTICAL, SAME_PREDICTIONS, DIFFERENT = 0, 3, 1


class ReproduceError(RuntimeError):
    """The version cannot be rebuilt: what is missing or what failed."""


def find_uv() -> str:
    """uv: the one installed beside this Python (a depmesh dependency), else on PATH."""
    beside = Path(sys.executable).parent / "uv"
    if beside.is_file():
        return str(beside)
    found = shutil.which("uv")
    if found:
        return found
    raise ReproduceError("uv is not installed (it is a depmesh dependency: reinstall depmesh, or put uv on PATH)")


def _run(command: list[str], what: str, **kwargs: Any) -> subprocess.CompletedProcess:
    done = subprocess.run(command, capture_output=True, **kwargs)
    if done.returncode != 0:
        tail = (done.stderr or b"").decode(errors="replace").strip()[-1500:]
        raise ReproduceError(f"{what} failed (exit {done.returncode}): {tail}")
    return done


def checkout(root: str, commit: str, diff: bytes, target: Path) -> None:
    """The recorded code in ``target``: the commit's files, then the diff applied."""
    if not root or not Path(root).is_dir():
        raise ReproduceError(f"the code's repository {root!r} is not here")
    try:
        _run(["git", "-C", root, "cat-file", "-e", f"{commit}^{{commit}}"], f"finding commit {commit}")
    except ReproduceError:
        raise ReproduceError(f"commit {commit} is not in the repository at {root}: fetch it first") from None
    archive = _run(["git", "-C", root, "archive", "--format=tar", commit], f"exporting commit {commit}").stdout
    target.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(target, filter="data")
    if diff:
        patch = target.parent / "changes.patch"
        patch.write_bytes(diff)
        _run(["git", "apply", "--binary", "--whitespace=nowarn", str(patch)], "applying the recorded diff", cwd=target)


def build_environment(source: Path, venv: Path, uv: str) -> float:
    """``uv sync --locked`` of ``source`` (its stored lock) into ``venv``; seconds taken."""
    import time

    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "UV_PROJECT_ENVIRONMENT")}
    env["UV_PROJECT_ENVIRONMENT"] = str(venv)
    started = time.perf_counter()
    _run([uv, "sync", "--locked", "--no-dev", "--project", str(source), "--python", sys.executable],
         "building the environment from the stored lock (uv sync --locked)", env=env, cwd=source)
    return time.perf_counter() - started


def reproduce(registry: Any, node: str, version: str, *, work_dir: Path | None = None, keep: bool = False,
              progress: Callable[[str], None] = print) -> dict[str, Any]:
    """Rebuild ``node@version`` from its recipe; the report (see ``verdict``). A failure removes the work
    folder too, unless it was given (``work_dir``) or ``keep``."""
    info = registry.version(node, version)
    if info is None:
        raise ReproduceError(f"{node} has no registered version {version} in mesh {registry.mesh} "
                             f"(see depmesh registry history {node})")
    problems = registry.recipe_problems(node, version)
    if problems:
        raise ReproduceError(f"{node}@{version} cannot be rebuilt: its recipe is incomplete: " + "; ".join(problems))
    work = Path(work_dir or tempfile.mkdtemp(prefix="depmesh-reproduce-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        report = _rebuild(registry, node, version, info, work, progress)
    except BaseException:
        if work_dir is None and not keep:  # a failed rebuild leaves no environment behind (hundreds of MB)
            shutil.rmtree(work, ignore_errors=True)
        raise
    if work_dir is None and not keep:
        shutil.rmtree(work, ignore_errors=True)
        report["work_dir"] = f"{work} (removed; --keep keeps it)"
    return report


def _rebuild(registry: Any, node: str, version: str, info: dict[str, Any], work: Path, progress: Any) -> dict:
    """Check out the code, build the environment, retrain in it; the rebuild's report."""
    from depmesh.tracking.snapshots import SnapshotStore
    from depmesh.tracking.store import Tracking

    recipe = info["recipe"]
    tracking = Tracking(registry)
    source, venv = work / "source", work / "venv"
    progress(f"code: commit {recipe['commit'][:12]} of {recipe.get('code_root')} with a "
             f"{recipe['diff']['bytes']}-byte diff, into {source}")
    root = recipe.get("code_root") or ""
    if not Path(root).is_dir():  # the checkout moved since: the repository this command runs in may hold the commit
        from depmesh.tracking.capture import repository_of

        here = repository_of(Path.cwd())
        progress(f"the recorded repository {root or '(none)'} is not here; using {here}")
        root = str(here) if here else root
    checkout(root, recipe["commit"], tracking.blob(recipe["diff"]["sha256"]) or b"", source)
    (source / recipe["lock"]["name"]).write_bytes(tracking.blob(recipe["lock"]["sha256"]))
    catalog = work / "catalog.yaml"
    catalog.write_bytes(tracking.blob(recipe["catalog"]["sha256"]))
    progress(f"environment: uv sync --locked from the stored lock ({recipe['lock']['sha256'][:12]}) into {venv}")
    seconds = build_environment(source, venv, find_uv())
    progress(f"environment built in {seconds:.1f} s; retraining {node} with seed {recipe['seed']}")
    snapshots = SnapshotStore.beside(registry.artifacts.root)
    inputs = {}
    for name, part in recipe["inputs"].items():
        if part["kind"] == "table":
            inputs[name] = {"kind": "table", "path": str(snapshots.path_for(part["sha256"])), "sha256": part["sha256"]}
        else:
            inputs[name] = {"kind": "model", "sha256": part["sha256"], "version": part["version"]}
    job = {"node": node, "version": version, "catalog": str(catalog), "params": recipe["params"],
           "seed": recipe["seed"], "inputs": inputs, "artifacts": str(registry.artifacts.root),
           "artifact_hash": info["artifact_hash"]}
    (work / "job.json").write_text(json.dumps(job, indent=2))
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    # the rebuild script is this depmesh's (a version's own code may predate it); what it
    # imports (the trainer, depmesh's model and artifact code) comes from the rebuilt environment
    script = work / "rebuild.py"
    shutil.copyfile(Path(__file__).with_name("rebuild.py"), script)
    done = subprocess.run([str(venv / "bin" / "python"), str(script), str(work / "job.json")],
                          capture_output=True, cwd=source, env=env)
    if done.returncode != 0:
        lines = done.stderr.decode(errors="replace").strip().splitlines()
        (work / "rebuild.log").write_text("\n".join(lines), encoding="utf-8")
        raise ReproduceError(f"the rebuild failed in the rebuilt environment (exit {done.returncode}): "
                             f"{(lines or ['no output'])[-1][:2000]} (its whole output: rebuild.log in the work "
                             "folder, which --keep or --work-dir keeps)")
    report = json.loads(done.stdout.decode().strip().splitlines()[-1])
    report.update(work_dir=str(work), environment_seconds=round(seconds, 1))
    return report


def verdict(report: dict[str, Any]) -> int:
    if report["bit_identical"]:
        return IDENTICAL
    if report.get("max_abs_difference") == 0.0:
        return SAME_PREDICTIONS
    return DIFFERENT

"""``depmesh reproduce MODEL@VERSION``: rebuild a registered version from its
recipe in a fresh environment and say how close the rebuild is.

1. The code: ``git archive`` of the recorded commit, with the recorded diff
   (uncommitted and untracked changes) applied, in a new folder; or the
   recorded module files (code outside git), each checked against its hash;
   or nothing, when the code is an installed distribution of the environment.
2. The environment, in an isolated virtual environment (uv's cache makes this
   seconds when the packages were installed before; nothing of the current
   environment is used): a uv project (its stored ``uv.lock`` beside a
   ``pyproject.toml`` in the recorded code) by ``uv sync --locked``; any
   other repository (``requirements.txt``, ``poetry.lock``, no lock at all)
   from the recorded environment, ``uv pip sync pylock.toml`` (every
   distribution at the version that ran, hash-checked where a hash was
   known), then the distributions without a known hash by exact version.
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


def _uv_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "UV_PROJECT_ENVIRONMENT")}


def build_environment(source: Path, venv: Path, uv: str) -> float:
    """``uv sync --locked`` of ``source`` (its stored lock) into ``venv``; seconds taken."""
    import time

    env = _uv_env()
    env["UV_PROJECT_ENVIRONMENT"] = str(venv)
    started = time.perf_counter()
    _run([uv, "sync", "--locked", "--no-dev", "--project", str(source), "--python", sys.executable],
         "building the environment from the stored lock (uv sync --locked)", env=env, cwd=source)
    return time.perf_counter() - started


def install_recorded(pylock: bytes, venv: Path, uv: str, *, code_root: str | None, source: Path) -> float:
    """A new virtual environment in ``venv`` holding the recorded environment: ``uv pip sync`` of the
    pylock.toml (a directory install of the code's own repository points at the rebuilt code instead),
    then each distribution without a known hash at its exact version. Seconds taken."""
    import time

    import tomli_w

    from depmesh.tracking.environment import read

    data = read(pylock)
    for package in data.get("packages", []):
        directory = package.get("directory")
        if not directory:
            continue
        path = Path(directory["path"])
        if code_root and (path == Path(code_root) or Path(code_root) in path.parents):
            directory["path"] = str(source / path.relative_to(code_root))
        elif not path.is_dir():
            raise ReproduceError(f"{package['name']} {package.get('version', '')} was installed from the folder "
                                 f"{path}, which is not here: the environment cannot be rebuilt without it")
    started = time.perf_counter()
    lock = venv.parent / "pylock.toml"  # PEP 751 names: pylock.toml or pylock.<name>.toml
    lock.write_text(tomli_w.dumps(data), encoding="utf-8")
    _run([uv, "venv", "--quiet", str(venv), "--python", sys.executable], "creating the virtual environment",
         env=_uv_env())
    python = str(venv / "bin" / "python")
    _run([uv, "pip", "sync", "--quiet", "--python", python, str(lock)],
         "installing the recorded environment (uv pip sync pylock.toml)", env=_uv_env())
    unhashed = [f"{u['name']}=={u['version']}" for u in data.get("tool", {}).get("depmesh", {}).get("unhashed", [])]
    if unhashed:
        _run([uv, "pip", "install", "--quiet", "--no-deps", "--python", python, "--", *unhashed],
             "installing the distributions without a recorded hash", env=_uv_env())
    return time.perf_counter() - started


def unpack_code(tar: bytes, files: dict[str, str], target: Path) -> None:
    """The recorded module files in ``target``, each checked against the hash recorded for it."""
    import hashlib

    target.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(tar)) as archive:
        names = {m.name: m for m in archive.getmembers() if m.isfile()}
        if set(names) != set(files):
            raise ReproduceError("the stored module files do not match the recorded list: "
                                 f"{sorted(set(names) ^ set(files))[:5]}")
        for name, member in names.items():
            data = archive.extractfile(member).read()
            if hashlib.sha256(data).hexdigest() != files[name]:
                raise ReproduceError(f"the stored module file {name} does not hash to {files[name][:12]}")
        archive.extractall(target, filter="data")


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


def _checkout_code(recipe: dict[str, Any], tracking: Any, source: Path, progress: Any) -> tuple[str, str]:
    """The recorded code into ``source`` (a git commit and its diff, the recorded module files, or nothing when
    the code is an installed distribution); (its kind, the code root)."""
    from depmesh.tracking.recipe import code_kind

    kind = code_kind(recipe)
    root = recipe.get("code_root") or ""
    if kind == "git":
        progress(f"code: commit {recipe['commit'][:12]} of {root} with a {recipe['diff']['bytes']}-byte diff, "
                 f"into {source}")
        if not Path(root).is_dir():  # the checkout moved since: the repository this command runs in may hold it
            from depmesh.tracking.capture import repository_of

            here = repository_of(Path.cwd())
            progress(f"the recorded repository {root or '(none)'} is not here; using {here}")
            root = str(here) if here else root
        checkout(root, recipe["commit"], tracking.blob(recipe["diff"]["sha256"]) or b"", source)
    elif kind == "files":
        code = recipe["code"]
        progress(f"code: {len(code['files'])} module files recorded from {code.get('root')} "
                 f"({code['sha256'][:12]}), into {source}")
        unpack_code(tracking.blob(code["sha256"]) or b"", code["files"], source)
        root = code.get("root") or ""
    else:
        progress(f"code: the installed distribution {recipe['code']['name']} {recipe['code']['version']} "
                 "(part of the recorded environment)")
        source.mkdir(parents=True)
    return kind, root


def _write_job(registry: Any, node: str, version: str, info: dict[str, Any], recipe: dict[str, Any], catalog: Path,
               work: Path) -> None:
    """The rebuild script's job: the stored inputs (table snapshots, upstream models), parameters, seed."""
    from depmesh.tracking.snapshots import SnapshotStore

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


def _rebuild(registry: Any, node: str, version: str, info: dict[str, Any], work: Path, progress: Any) -> dict:
    """Check out the code, build the environment, retrain in it; the rebuild's report."""
    from depmesh.tracking.store import Tracking

    recipe = info["recipe"]
    tracking = Tracking(registry)
    source, venv = work / "source", work / "venv"
    kind, root = _checkout_code(recipe, tracking, source, progress)
    lock = recipe.get("lock")
    if lock:
        (source / lock["name"]).write_bytes(tracking.blob(lock["sha256"]))
    catalog = work / "catalog.yaml"
    catalog.write_bytes(tracking.blob(recipe["catalog"]["sha256"]))
    if lock and lock["name"] == "uv.lock" and (kind == "git" and (source / "pyproject.toml").is_file()
                                                or "environment" not in recipe):
        progress(f"environment: uv sync --locked from the stored lock ({lock['sha256'][:12]}) into {venv}")
        seconds = build_environment(source, venv, find_uv())
    else:
        env = recipe["environment"]
        progress(f"environment: uv pip sync of the recorded pylock.toml ({env['sha256'][:12]}, {env['packages']} "
                 f"distributions{', ' + str(len(env['unhashed'])) + ' without a known hash' if env['unhashed'] else ''}"
                 f") into {venv}")
        seconds = install_recorded(tracking.blob(env["sha256"]) or b"", venv, find_uv(), code_root=root,
                                   source=source)
    progress(f"environment built in {seconds:.1f} s; retraining {node} with seed {recipe['seed']}")
    _write_job(registry, node, version, info, recipe, catalog, work)
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    import_path = (recipe.get("code") or {}).get("import_path")
    if import_path and kind in ("git", "files"):  # where the trainer's module imports from, as it did when trained
        where = (source / import_path).resolve()
        if where != source.resolve() and source.resolve() not in where.parents:
            raise ReproduceError(f"the recorded import path {import_path!r} leaves the rebuilt code")
        env["PYTHONPATH"] = str(where)
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

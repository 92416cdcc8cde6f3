"""`depmesh reproduce`: a registered version rebuilt from its recipe alone, in a
fresh environment built from the stored lock, end to end."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from depmesh.artifacts import ArtifactStore
from depmesh.assets.io import artifacts_dir
from depmesh.registry import Registry
from depmesh.registry.store import default_url
from depmesh.tracking.snapshots import SnapshotStore
from depmesh_tests.conftest import REPO, depmesh_cli


def registry_of(home) -> Registry:
    return Registry(default_url(home), mesh="flights", artifacts=ArtifactStore(artifacts_dir(home)))


@pytest.fixture
def home(golden_home):
    return golden_home


def test_a_version_is_rebuilt_bit_identical_from_its_recipe(home, tmp_path):
    registry = registry_of(home)
    [arr] = registry.versions("models/arr_delay")
    work = tmp_path / "work"
    out = subprocess.run(depmesh_cli("reproduce", f"models/arr_delay@{arr['version']}", "--home", str(home),
                                     "--work-dir", str(work), "--format", "json"),
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout)
    assert report["bit_identical"] and report["same_version"] and report["rebuilt_hash"] == arr["artifact_hash"]
    assert report["metrics"]["mae"] == arr["metrics"]["mae"]
    # it really ran in its own environment, from the recorded code
    assert (work / "venv" / "bin" / "python").exists()
    assert (work / "source" / "uv.lock").read_bytes() == (REPO / "uv.lock").read_bytes()  # the lock it was trained with
    assert "environment built in" in out.stderr and "uv sync --locked" in out.stderr
    # an input snapshot changed after the fact is caught by its hash, and nothing is claimed
    [dep] = registry.versions("models/dep_delay")
    snapshot = SnapshotStore.beside(registry.artifacts.root).path_for(
        dep["recipe"]["inputs"]["features/aircraft"]["sha256"])
    snapshot.chmod(0o644)
    snapshot.write_bytes(snapshot.read_bytes()[:-100] + b"\0" * 100)
    scratch = tmp_path / "tmp"  # where the command's temporary work folder goes
    scratch.mkdir()
    out = subprocess.run(depmesh_cli("reproduce", f"models/dep_delay@{dep['version']}", "--home", str(home)),
                         capture_output=True, text=True, timeout=900, env={**os.environ, "TMPDIR": str(scratch)})
    assert out.returncode == 1 and "the snapshot of features/aircraft" in out.stderr and "does not hash to" in out.stderr
    # the failed rebuild leaves no environment behind (it left 785 MB per run), and says why in one line
    assert not list(scratch.glob("depmesh-reproduce-*")), list(scratch.iterdir())
    assert "Traceback" not in out.stderr


def test_reproduce_refuses_what_it_cannot_rebuild(home):
    registry = registry_of(home)
    [dep] = registry.versions("models/dep_delay")
    for args, code, words in (
        (["models/dep_delay"], 2, "is not MODEL@VERSION"),
        (["--help@x"], 2, "No such option '--help@x'"),
        (["models/dep_delay@0000000000000000"], 1, "has no registered version 0000000000000000"),
    ):
        out = subprocess.run(depmesh_cli("reproduce", *args, "--home", str(home)), capture_output=True, text=True,
                             timeout=300)
        assert out.returncode == code and words in out.stdout + out.stderr, (args, out.stderr)
    # a missing snapshot makes the recipe incomplete: named, nothing built
    snapshot = SnapshotStore.beside(registry.artifacts.root).path_for(
        dep["recipe"]["inputs"]["features/flight_weather"]["sha256"])
    snapshot.unlink()
    out = subprocess.run(depmesh_cli("reproduce", f"models/dep_delay@{dep['version']}", "--home", str(home)),
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 1 and "its recipe is incomplete: the snapshot of input features/flight_weather" in out.stderr


# -- any team's repository ---------------------------------------------------------------------------------
def _team_mesh(where, monkeypatch, module: str):
    """The clinic mesh with its trainer in ``module`` (a file under ``where``), importable as the team runs it."""
    from depmesh.examples import CLINIC_CATALOG

    path = where / (module.replace(".", "/") + ".py")
    path.parent.mkdir(parents=True, exist_ok=True)
    for parent in list(path.relative_to(where).parents)[:-1]:
        (where / parent / "__init__.py").touch()
    path.write_text("from depmesh.examples.clinic.builders import train_progression as train\n")
    monkeypatch.syspath_prepend(str(where))
    catalog = where / "clinic.yaml"
    catalog.write_text(CLINIC_CATALOG.read_text().replace(
        "depmesh.examples.clinic.builders:train_progression", f"{module}:train"))
    return catalog


def _train_and_release(catalog, home):
    """Materialize the mesh on a fresh embedded instance; (its registry, the trained version)."""
    from dagster import AssetKey, instance_for_test

    from depmesh.catalog import load_catalog
    from depmesh_tests.conftest import materialize_mesh

    mesh = load_catalog(catalog)
    home.mkdir()
    with instance_for_test(temp_dir=str(home)) as instance:
        result = materialize_mesh(mesh, instance, sample=1.0)
        assert result.success
        checks = {e.check_name: e for e in result.get_asset_check_evaluations()
                  if e.asset_key == AssetKey(["releases", "clinic"])}
        assert checks["release_recipes_complete"].passed, checks["release_recipes_complete"].description
    registry = Registry(default_url(home), mesh="clinic", artifacts=ArtifactStore(artifacts_dir(home)))
    [version] = registry.versions("models/progression")
    return registry, version


def _team_cli(catalog, *args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    """A depmesh command as the team runs it: from its repository, its modules on PYTHONPATH."""
    return subprocess.run(depmesh_cli(*args, "--catalog", str(catalog)), capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "PYTHONPATH": str(catalog.parent)})


def _reproduce(catalog, home, node: str, version: str, work) -> tuple[dict, str]:
    out = _team_cli(catalog, "reproduce", f"{node}@{version}", "--home", str(home), "--work-dir", str(work),
                    "--format", "json")
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout), out.stderr


def test_a_mesh_in_its_own_repository_pinned_by_requirements_txt_reaches_staging_and_is_rebuilt(tmp_path,
                                                                                                monkeypatch):
    """A team's repository with its catalog, its trainer module and a requirements.txt (no uv.lock): the
    release reaches Staging, the recipe records the environment that ran (PEP 751) and the team's own lock,
    and `depmesh reproduce` rebuilds the version bit for bit from them."""
    repo = tmp_path / "team"
    repo.mkdir()
    catalog = _team_mesh(repo, monkeypatch, "team_mesh.trainers")
    (repo / "requirements.txt").write_text("depmesh\nscikit-learn>=1.5\n")
    git = ["git", "-C", str(repo), "-c", "user.email=t@example.org", "-c", "user.name=team"]
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "team mesh"], check=True)
    registry, version = _train_and_release(catalog, tmp_path / "home")
    assert version["stage"] == "Staging" and registry.releases()[0]["status"] == "Staging"
    recipe = version["recipe"]
    assert recipe["code"] == {"kind": "git", "import_path": "."} and recipe["code_root"] == str(repo)
    assert recipe["lock"]["name"] == "requirements.txt"
    from depmesh.tracking.environment import read
    from depmesh.tracking.store import Tracking

    lock = read(Tracking(registry).blob(recipe["environment"]["sha256"]))
    installed = {p["name"]: p for p in lock["packages"]}
    import sklearn

    assert installed["scikit-learn"]["version"] == sklearn.__version__
    assert installed["scikit-learn"]["wheels"][0]["hashes"]["sha256"]  # the hash uv knew (from depmesh's uv.lock)
    assert installed["depmesh"]["directory"]["path"] == str(REPO)
    report, stderr = _reproduce(catalog, tmp_path / "home", "models/progression", version["version"], tmp_path / "work")
    assert report["bit_identical"] and report["same_version"], report
    assert "uv pip sync of the recorded pylock.toml" in stderr and "uv sync --locked" not in stderr
    assert (tmp_path / "work" / "source" / "team_mesh" / "trainers.py").is_file()
    assert (tmp_path / "work" / "source" / "requirements.txt").read_text() == "depmesh\nscikit-learn>=1.5\n"


def test_a_trainer_outside_git_with_no_lock_is_recorded_by_its_files_and_rebuilt(tmp_path, monkeypatch):
    """No repository, no lock file: the module's files are recorded by content hash, the environment as it
    ran; the release reaches Staging and the version is rebuilt bit for bit. A stored module file that no
    longer matches its hash is refused by name."""
    outside = tmp_path / "outside"
    outside.mkdir()
    catalog = _team_mesh(outside, monkeypatch, "loose_trainer")
    registry, version = _train_and_release(catalog, tmp_path / "home")
    assert version["stage"] == "Staging"
    recipe = version["recipe"]
    assert recipe["code"]["kind"] == "files" and set(recipe["code"]["files"]) == {"loose_trainer.py"}
    assert "lock" not in recipe and "commit" not in recipe and registry.recipe_problems(
        "models/progression", version["version"]) == []
    report, stderr = _reproduce(catalog, tmp_path / "home", "models/progression", version["version"], tmp_path / "work")
    assert report["bit_identical"], report
    assert "1 module files recorded from" in stderr
    # a recipe whose seed no longer matches what trained the artifact rebuilds different bytes: never "identical"
    import sqlalchemy as sa

    from depmesh.registry.schema import model_versions

    changed = {**recipe, "seed": recipe["seed"] + 1}
    where = (model_versions.c.node == "models/progression") & (model_versions.c.version == version["version"])
    with registry.engine.begin() as conn:
        conn.execute(sa.update(model_versions).where(where).values(recipe=json.dumps(changed)))
    out = _team_cli(catalog, "reproduce", f"models/progression@{version['version']}", "--home",
                    str(tmp_path / "home"), "--format", "json")
    report = json.loads(out.stdout)
    assert report["bit_identical"] is False and report["rebuilt_hash"] != version["artifact_hash"]
    assert out.returncode == (3 if report["max_abs_difference"] == 0.0 else 1), out.stderr[-2000:]
    with registry.engine.begin() as conn:
        conn.execute(sa.update(model_versions).where(where).values(recipe=json.dumps(recipe)))
    # a module file edited in the registry after the fact is caught by its hash
    import io
    import tarfile

    from depmesh.registry.schema import blobs

    digest = recipe["code"]["sha256"]
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        data = b"def train(inputs, ctx):\n    raise SystemExit('planted')\n"
        info = tarfile.TarInfo("loose_trainer.py")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    with registry.engine.begin() as conn:
        conn.execute(sa.update(blobs).where(blobs.c.sha256 == digest).values(content=buffer.getvalue()))
    out = _team_cli(catalog, "reproduce", f"models/progression@{version['version']}", "--home",
                    str(tmp_path / "home"))
    assert out.returncode == 1 and "the stored module file loose_trainer.py does not hash to" in out.stderr
    assert "Traceback" not in out.stderr


def test_each_missing_part_of_a_recipe_is_named_alone(golden):
    """A recipe missing exactly one part is incomplete for that part and nothing else; a recipe with no
    project lock at all is complete (the environment says what ran)."""
    from depmesh.tracking.recipe import blob_hashes, recipe_problems

    registry = registry_of(golden.home)
    [arr] = registry.versions("models/arr_delay")
    recipe = arr["recipe"]
    inputs = list(arr["input_versions"])
    stored = set(blob_hashes(recipe))
    assert recipe_problems(recipe, inputs, stored) == []
    without_lock = {k: v for k, v in recipe.items() if k != "lock"}
    assert recipe_problems(without_lock, inputs, stored) == []
    for part, words in (("environment+lock", "the environment (pylock.toml) was not recorded"),
                        ("diff", "the diff of uncommitted changes was not recorded"),
                        ("catalog", "the catalog file was not recorded"),
                        ("commit", "the git commit was not recorded"),
                        ("seed", "the seed was not recorded")):
        broken = {k: v for k, v in recipe.items() if k not in part.split("+")}
        if part == "commit":
            broken["commit"] = None
        assert recipe_problems(broken, inputs, stored) == [words], part
    for part in ("environment", "lock", "catalog"):
        problems = recipe_problems(recipe, inputs, stored - {recipe[part]["sha256"]})
        assert len(problems) == 1 and "is not stored in the registry" in problems[0], (part, problems)
    # a recipe from before the environment was recorded rebuilds from its uv.lock (uv sync --locked)
    legacy = {k: v for k, v in recipe.items() if k not in ("environment", "code")}
    assert recipe_problems(legacy, inputs, stored) == []
    assert recipe_problems(legacy, inputs, stored - {recipe["lock"]["sha256"]}) == [
        f"the lock file ({recipe['lock']['sha256'][:12]}) is not stored in the registry"]
    assert recipe_problems(recipe, inputs[1:] + ["features/nowhere"], stored) == ["no snapshot of input features/nowhere"]

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
from depmesh_tests.conftest import REPO, copy_of, depmesh_cli


def registry_of(home) -> Registry:
    return Registry(default_url(home), mesh="flights", artifacts=ArtifactStore(artifacts_dir(home)))


@pytest.fixture
def home(golden, tmp_path):
    """A copy of the golden instance (its registry, snapshots and artifacts) to break things in."""
    path = tmp_path / "home"
    with copy_of(golden, path):
        pass
    return path


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

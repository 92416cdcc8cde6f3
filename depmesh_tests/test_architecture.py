"""The house rules (issue #26): the layer contracts hold and catch a wrong-way import, no module imports itself in a
circle, and every path that changes stages gets the registry governed by the same policy."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

import depmesh
from depmesh.examples import DEMO_CATALOG
from depmesh.registry.store import ApprovalRequired, default_url, open_registry
from depmesh_tests.conftest import copy_of

PACKAGE = Path(depmesh.__file__).parent
ROOT = PACKAGE.parent
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=root, env=env, capture_output=True, text=True,
                          timeout=300)


def test_the_layer_contracts_hold():
    done = lint_imports(ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "BROKEN" not in done.stdout and done.stdout.count("KEPT") == 2


@pytest.mark.parametrize("module, planted, offending", [
    # the registry reaching up into governance: the circle issue #26 broke
    ("registry/store.py", "from depmesh.governance import rules", "depmesh.registry.store -> depmesh.governance"),
    # the catalog parsing with SQLAlchemy
    ("catalog/spec.py", "import sqlalchemy", "depmesh.catalog.spec -> sqlalchemy"),
    # an import inside a function counts as much as one at the top
    ("keys.py", "def _hidden():\n    from depmesh.cli import main", "depmesh.keys -> depmesh.cli"),
])
def test_a_wrong_way_import_breaks_a_contract(tmp_path, module, planted, offending):
    shutil.copytree(PACKAGE, tmp_path / "depmesh", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    assert lint_imports(tmp_path).returncode == 0  # the copy holds before the plant
    target = tmp_path / "depmesh" / module
    target.write_text(target.read_text() + f"\n\n{planted}\n")
    done = lint_imports(tmp_path)
    assert done.returncode != 0
    assert offending in done.stdout


def test_no_module_imports_itself_through_a_circle():
    import grimp

    graph = grimp.build_graph("depmesh", include_external_packages=False)
    circles = [sorted(m) for m in _strongly_connected(graph)]
    assert circles == []


def _strongly_connected(graph) -> list[set[str]]:
    """Tarjan's components of more than one module (iterative: the graph has ~130 modules)."""
    index, low, on, stack, found, counter = {}, {}, set(), [], [], [0]
    for root in sorted(graph.modules):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root))))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter[0]
                    counter[0] += 1
                    stack.append(child)
                    on.add(child)
                    work.append((child, iter(sorted(graph.find_modules_directly_imported_by(child)))))
                elif child in on:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(component)
    return found


# where a registry may be built without the mesh's policy: the store (its own opener), the governed opener, the
# Dagster resource (which governs what it opens) and doctor (reads the schema revision, changes no stage)
UNGOVERNED_OPENERS = {"registry/store.py", "governance/opener.py", "assets/registry_resource.py", "doctor.py"}


def test_only_the_governed_openers_build_a_registry():
    """Every other module gets its registry from depmesh.governance.open_governed or the resource: a new path that
    built one by hand would change stages under no policy."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        where = path.relative_to(PACKAGE).as_posix()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call):
                name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
                if name in ("Registry", "open_registry") and where not in UNGOVERNED_OPENERS:
                    found.append(f"{where}:{node.lineno} {name}(...)")
    assert found == []


def test_every_promotion_path_enforces_the_same_policy(golden, demo_mesh, tmp_path):
    """The flights mesh declares its teams; its golden release has no approved request. The command line, the UI's
    promote job, the Dagster registry resource, the opener the sensors and drills use, and the governing the canary
    applies: each refuses the promotion for the same reason, and nothing becomes Production."""
    from dagster import build_init_resource_context

    from depmesh.artifacts import ArtifactStore
    from depmesh.assets.io import artifacts_location
    from depmesh.assets.registry_resource import RegistryResource
    from depmesh.build import build_definitions
    from depmesh.cli import main
    from depmesh.governance import govern, open_governed
    from depmesh.teams import load_teams

    release = golden.release_id
    refusals: dict[str, str] = {}
    with copy_of(golden, tmp_path / "home") as instance:
        home = Path(instance.root_directory)
        url, artifacts = default_url(home), ArtifactStore(artifacts_location(instance))

        out = CliRunner().invoke(main, ["release", "promote", str(release), "--home", str(home), "--catalog",
                                        str(DEMO_CATALOG), "--actor", "eli", "--reason", "go"])
        assert out.exit_code == 1
        refusals["cli"] = out.output

        job = build_definitions(demo_mesh).resolve_job_def("promote_release")
        result = job.execute_in_process(instance=instance, raise_on_error=False, run_config={"ops": {
            "promote_release_op": {"config": {"release_id": release, "actor": "eli", "reason": "go"}}}})
        assert not result.success
        refusals["ui job"] = result.get_step_failure_events()[0].step_failure_data.user_failure_data.description

        resource = RegistryResource(mesh=demo_mesh.name, catalog=str(DEMO_CATALOG))
        resource.setup_for_execution(build_init_resource_context(instance=instance))
        governed = {"resource": resource.registry,
                    "opener": open_governed(url, demo_mesh, artifacts),
                    "canary": govern(open_registry(url, demo_mesh.name, artifacts), load_teams(demo_mesh),
                                     demo_mesh.dependencies)}
        for path, registry in governed.items():
            with pytest.raises(ApprovalRequired) as refused:
                registry.promote(release, actor="eli", reason="go")
            refusals[path] = str(refused.value)
            registry.dispose()

        assert open_registry(url, demo_mesh.name).production() == {}
    for path, said in refusals.items():
        assert f"release {release} needs approval before Production" in said, path


def test_rooms_stay_small():
    """No module over 500 lines, no function over 80 (docs/content/architecture.md): a room that outgrows them is
    split along its responsibilities before more is added."""
    large, long = [], []
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text()
        where = path.relative_to(PACKAGE).as_posix()
        if len(text.splitlines()) > 500:
            large.append(f"{where}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text, str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > 80:
                long.append(f"{where}:{node.lineno} {node.name}: {node.end_lineno - node.lineno + 1} lines")
    assert (large, long) == ([], [])


def test_registry_records_are_typed_entities_that_still_read_as_mappings(tmp_path):
    import json

    from depmesh.artifacts import ArtifactStore
    from depmesh.registry.entities import ModelVersion, Release, StageChange
    from depmesh_tests.test_registry import register

    registry = open_registry(f"sqlite:///{tmp_path / 'r.db'}", "m", ArtifactStore(tmp_path / "a"))
    register(registry, "models/a", "v1")
    release_id = registry.create_release({"models/a": "v1"}, run_id="run-1", actor="ana", reason="gates passed")
    release, version, change = registry.release(release_id), registry.version("models/a", "v1"), \
        registry.history("models/a")[-1]
    assert (type(release), type(version), type(change)) == (Release, ModelVersion, StageChange)
    assert release.members == release["members"] == {"models/a": "v1"} and release.status == "Staging"
    assert version.stage == "Staging" and version.metrics == {"mae": 10.0} and version.upstream_models == {}
    assert (change.from_stage, change.to_stage, change.actor) == ("Development", "Staging", "ana")
    assert json.loads(json.dumps(release, default=str))["members"] == release.members  # still a plain mapping
    registry.dispose()

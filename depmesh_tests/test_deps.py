"""Dependency governance on the golden release: what each version needs (checked against uv.lock), conflicts
refused at record and promotion, licenses against a policy, a CycloneDX SBOM that validates, an offline audit
from OSV advisories the test writes (refusing a promotion until waived), and a container build context whose
entry point verifies the artifacts it loads."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

from depmesh.cli import main
from depmesh.examples import DEMO_CATALOG
from depmesh_tests.conftest import REPO, approve_release, copy_of


def _locked() -> dict[str, str]:
    """The lock's versions for this Python (a lock may hold several versions of a package, one per marker)."""
    from packaging.markers import Marker

    out = {}
    for p in tomllib.loads((REPO / "uv.lock").read_text())["package"]:
        markers = p.get("resolution-markers")
        if not markers or any(Marker(m).evaluate() for m in markers):
            out.setdefault(p["name"], p.get("version", ""))
    return out


LOCKED = _locked()


def cli(*args: str, code: int = 0) -> str:
    out = CliRunner().invoke(main, list(args))
    assert out.exit_code == code, out.output
    return out.output


@pytest.fixture
def home(golden, tmp_path):
    with copy_of(golden, tmp_path / "home"):
        yield tmp_path / "home"


def policy_catalog(folder: Path, block: str) -> Path:
    folder.mkdir(exist_ok=True)
    for name in ("teams.yaml", "failure_modes.yaml"):
        shutil.copy(DEMO_CATALOG.parent / name, folder / name)
    text = DEMO_CATALOG.read_text()
    start, end = text.index("\ndependencies:\n"), text.index("\nnodes:\n")
    text = text[:start] + "\n" + block + "\n" + text[end:]  # the test's policy instead of the demo's
    (folder / "catalog.yaml").write_text(text)
    return folder / "catalog.yaml"


def test_each_version_records_what_it_needs_resolved_against_the_lock(home, golden):
    found = json.loads(cli("deps", "show", "models/dep_delay", "--home", str(home), "--format", "json"))
    assert {"scikit-learn", "numpy"} <= set(found["direct"])
    assert all(found["direct"][d] == LOCKED[d] for d in found["direct"])
    assert {"scipy", "joblib", "threadpoolctl"} <= set(found["closure"])  # what scikit-learn needs, from the lock
    assert "sklearn" in found["sources"]["artifact"] and "sklearn" in found["sources"]["trainer"]
    assert "depmesh" not in found["direct"] and found["unresolved"] == []
    text = cli("deps", "show", "models/late_arrival", "--home", str(home))
    assert "scikit-learn" in text and LOCKED["scikit-learn"] in text
    assert "no registered version" in cli("deps", "show", "models/dep_delay@feedface", "--home", str(home), code=1)


def _pin(home: Path, node: str, library: str, version: str) -> None:
    """Rewrite one version's recorded requirement, as if it had been trained under another release of it."""
    import sqlalchemy as sa

    from depmesh.registry.schema import model_versions
    from depmesh.registry.store import default_url

    engine = sa.create_engine(default_url(home))
    with engine.begin() as conn:
        row = conn.execute(sa.select(model_versions.c.id, model_versions.c.requirements)
                           .where(model_versions.c.node == node)).first()
        needs = json.loads(row.requirements)
        needs["closure"][library] = needs["direct"][library] = version
        conn.execute(model_versions.update().where(model_versions.c.id == row.id)
                     .values(requirements=json.dumps(needs)))
    engine.dispose()


def test_the_lock_is_read_for_this_python(tmp_path):
    """uv.lock holds numpy twice (one per Python range): the entry for this Python is the one the venv has."""
    from depmesh.deps.needs import installed_version, read_lock

    lock = read_lock(str(REPO / "uv.lock"))
    for name in ("numpy", "scipy", "scikit-learn", "pandas"):
        assert lock[name]["version"] == installed_version(name), name


def test_members_needing_different_minor_versions_are_refused_at_promotion_and_flagged(home, golden):
    assert "every member loads in one environment" in cli("deps", "check", "--home", str(home))
    _pin(home, "models/arr_delay", "scikit-learn", "1.4.2")
    flagged = cli("deps", "check", str(golden.release_id), "--home", str(home), code=1)
    assert "CONFLICT scikit-learn: models/arr_delay 1.4.2" in flagged
    assert "SERVING models/arr_delay was trained with scikit-learn 1.4.2" in flagged
    approve_release(home, golden.release_id)
    refused = cli("release", "promote", str(golden.release_id), "--home", str(home), "--actor", "eli", "--reason",
                  "go", code=1)
    assert f"release {golden.release_id}: its models cannot load in one environment" in refused
    assert "scikit-learn (models/arr_delay needs 1.4.2, models/dep_delay needs" in refused


def test_a_release_is_refused_when_recorded_with_conflicting_members(tmp_path):
    from depmesh.artifacts import ArtifactStore
    from depmesh.governance import govern
    from depmesh.registry import Registry, RegistryError
    from depmesh_tests.test_registry import complete_recipe, register

    registry = govern(Registry(f"sqlite:///{tmp_path / 'r.db'}", mesh="flights", artifacts=ArtifactStore(tmp_path / "a")),
                      None, None)
    registry.migrate()
    for node, version in (("models/a", "1.5.2"), ("models/b", "1.6.0")):
        needs = {"python": "3.11", "direct": {"scikit-learn": version}, "closure": {"scikit-learn": version},
                 "sources": {}, "unresolved": []}
        register(registry, node, "v1", recipe=complete_recipe(registry), requirements=needs)
    with pytest.raises(RegistryError, match=r"this release: its models cannot load in one environment, they need "
                                            r"different versions of scikit-learn \(models/a needs 1.5.2, models/b "
                                            r"needs 1.6.0\)"):
        registry.create_release({"models/a": "v1", "models/b": "v1"}, run_id="r")
    assert registry.releases() == []


def test_licenses_are_judged_against_the_catalogs_policy(tmp_path):
    out = json.loads(cli("deps", "licenses", "--format", "json"))
    by_name = {r["package"]: r for r in out}
    assert set(by_name) >= {"pandas", "dagster", "scikit-learn"} and all(r["verdict"] != "denied" for r in out)
    assert by_name["pandas"]["spdx"] == "BSD-3-Clause" and by_name["pandas"]["version"] == LOCKED["pandas"]
    denying = policy_catalog(tmp_path / "deny", "dependencies: {licenses: {denied: [BSD-3-Clause]}}")
    refused = cli("deps", "licenses", "--catalog", str(denying), "--format", "json", code=1)
    assert {r["package"] for r in json.loads(refused) if r["verdict"] == "denied"} >= {"pandas", "scikit-learn"}
    allowing = policy_catalog(tmp_path / "allow", "dependencies: {licenses: {allowed: [MIT, Apache-2.0, BSD-3-Clause,"
                                                  " BSD-2-Clause, PSF-2.0, ISC, MPL-2.0]}}")
    listed = json.loads(cli("deps", "licenses", "--catalog", str(allowing), "--format", "json", code=1))
    assert by_name["pandas"]["verdict"] == "ok" and any(r["verdict"] == "not allowed" for r in listed)
    bad = policy_catalog(tmp_path / "bad", "dependencies: {licenses: {denied: ['GPL 3 or so']}, audit: {block: dire}}")
    problems = cli("validate", str(bad), code=1)
    assert "'GPL 3 or so' is not an SPDX license id" in problems and "unknown severity 'dire'" in problems


def test_the_sbom_is_valid_cyclonedx_with_the_models_and_their_libraries(home, golden, tmp_path):
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    from depmesh.registry import Registry
    from depmesh.registry.store import default_url

    path = tmp_path / "sbom.json"
    cli("deps", "sbom", str(golden.release_id), "--home", str(home), "-o", str(path))
    text = path.read_text()
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(text) is None
    doc = json.loads(text)
    models = {c["name"]: c for c in doc["components"] if c["type"] == "machine-learning-model"}
    registry = Registry(default_url(home), mesh="flights")
    release = registry.release(golden.release_id)
    assert set(models) == set(release["members"])
    for node, version in release["members"].items():
        assert models[node]["hashes"][0]["content"] == registry.version(node, version)["artifact_hash"]
    libraries = {c["name"]: c for c in doc["components"] if c["type"] == "library"}
    assert libraries["scikit-learn"]["version"] == LOCKED["scikit-learn"]
    assert libraries["scikit-learn"]["purl"] == f"pkg:pypi/scikit-learn@{LOCKED['scikit-learn']}"
    depends = {d["ref"]: d.get("dependsOn", []) for d in doc["dependencies"]}
    dep = next(r for r in depends if r.startswith("model:models/dep_delay@"))
    assert f"pypi:scikit-learn@{LOCKED['scikit-learn']}" in depends[dep]


def advisory(folder: Path, name: str, package: str, events: list[dict], severity: str = "HIGH") -> None:
    folder.mkdir(exist_ok=True)
    (folder / f"{name}.json").write_text(json.dumps({
        "id": name, "summary": f"a test advisory for {package}", "aliases": [f"CVE-2099-{name[-4:]}"],
        "affected": [{"package": {"ecosystem": "PyPI", "name": package}, "ranges": [{"type": "ECOSYSTEM",
                                                                                    "events": events}]}],
        "database_specific": {"severity": severity}}))


def test_an_offline_audit_finds_locked_versions_and_blocks_promotion_until_waived(home, golden, tmp_path):
    osv = tmp_path / "osv"
    advisory(osv, "GHSA-test-0001", "numpy", [{"introduced": "0"}, {"fixed": "999.0"}])
    advisory(osv, "GHSA-test-0002", "pandas", [{"introduced": "0"}, {"fixed": "0.1"}])  # fixed long ago: not ours
    advisory(osv, "GHSA-test-0003", "Jinja2", [{"introduced": "0"}, {"fixed": "999.0"}], severity="LOW")
    catalog = policy_catalog(tmp_path / "c", f"dependencies: {{audit: {{advisories: {osv}, block: high}}}}")
    found = json.loads(cli("deps", "audit", "--catalog", str(catalog), "--home", str(home), "--format", "json",
                           code=1))
    by_id = {f["advisory"]: f for f in found}
    assert set(by_id) == {"GHSA-test-0001", "GHSA-test-0003"}
    numpy = by_id["GHSA-test-0001"]
    assert numpy["version"] == LOCKED["numpy"] and numpy["severity"] == "high" and numpy["fixed"] == ["999.0"]
    assert {m.split("@")[0] for m in numpy["models"]} == {"models/dep_delay", "models/arr_delay",
                                                          "models/late_arrival", "models/route_segment"}
    assert numpy["releases"] == [golden.release_id] and by_id["GHSA-test-0003"]["models"] == []
    approve_release(home, golden.release_id, catalog)
    where = ["--catalog", str(catalog), "--home", str(home)]
    refused = cli("release", "promote", str(golden.release_id), *where, "--actor", "eli", "--reason", "go", code=1)
    assert "known vulnerabilities at or above high: GHSA-test-0001 (high) in numpy" in refused
    assert "is not owner" in cli("deps", "waive", "GHSA-test-0001", "--package", "numpy", *where, "--actor", "gus",
                                 "--reason", "no", code=1)
    cli("deps", "waive", "GHSA-test-0001", "--package", "numpy", "--release", str(golden.release_id), *where,
        "--actor", "eli", "--reason", "not reachable from our scoring path")
    assert "is Production" in cli("release", "promote", str(golden.release_id), *where, "--actor", "eli",
                                  "--reason", "go")
    audit = json.loads(cli("release", "audit", str(golden.release_id), *where, "--format", "json"))
    assert any(a["action"] == "vulnerability_waived" and a["actor"] == "eli" for a in audit)
    (osv / "broken.json").write_text("{not json")
    assert "broken.json: not JSON" in cli("deps", "audit", "--osv", str(osv), "--home", str(home), code=1)


def test_the_container_context_pins_the_lock_and_its_entry_point_verifies_the_artifacts(home, golden, tmp_path):
    import pandas as pd

    from depmesh.assets.io import MeshStore, storage_dir
    from depmesh.examples.flights.transforms import model_frame

    context = tmp_path / "ctx"
    cli("deps", "container", str(golden.release_id), "-o", str(context), "--home", str(home))
    dockerfile = (context / "Dockerfile").read_text()
    assert f"FROM python:{sys.version.split()[0]}-slim" in dockerfile and "uv sync --locked --no-dev" in dockerfile
    assert (context / "uv.lock").read_bytes() == (REPO / "uv.lock").read_bytes()
    manifest = json.loads((context / "release" / "release.json").read_text())
    assert manifest["release"] == golden.release_id and len(manifest["members"]) == 4
    check = subprocess.run([sys.executable, "-m", "depmesh.deps.serve_release", str(context / "release"), "--check"],
                           capture_output=True, text=True, cwd=context, timeout=300)
    assert check.returncode == 0 and "4 models loaded and verified" in check.stdout, check.stderr
    from dagster import DagsterInstance

    instance = DagsterInstance.from_config(str(home))
    store = MeshStore(storage_dir(instance), instance=instance)
    inputs = {n: store.load(n.split("/"), instance) for n in ("features/flight_weather", "features/aircraft")}
    model = store.load(["models", "dep_delay"], instance)
    instance.dispose()
    frame = model_frame({**inputs, "models/dep_delay": model}).head(50)
    frame.to_parquet(tmp_path / "in.parquet")
    scored = subprocess.run([sys.executable, "-m", "depmesh.deps.serve_release", str(context / "release"),
                             "--predict", "models/dep_delay", str(tmp_path / "in.parquet"), str(tmp_path / "out.parquet")],
                            capture_output=True, text=True, cwd=context, timeout=300)
    assert scored.returncode == 0, scored.stderr
    assert pd.read_parquet(tmp_path / "out.parquet")["prediction"].tolist() == pytest.approx(list(model.predict(frame)))
    served = serve_the_entry_point(context, frame)
    assert served == model.predict(frame).tolist()  # the container's server answers with the bundled versions
    planted = next((context / "release" / "artifacts").iterdir())
    payload = bytearray(planted.read_bytes())
    payload[len(payload) // 2] ^= 0xFF  # one byte flipped in the middle of the bundle
    planted.write_bytes(bytes(payload))
    tampered = subprocess.run([sys.executable, "-m", "depmesh.deps.serve_release", str(context / "release")],
                              capture_output=True, text=True, cwd=context, timeout=300)
    assert tampered.returncode == 1 and "release not loaded" in tampered.stderr and "hashes to" in tampered.stderr
    refused = subprocess.run(entry_point(context), capture_output=True, text=True, cwd=context, timeout=300)
    assert refused.returncode == 1 and "release not loaded" in refused.stderr and "hashes to" in refused.stderr
    assert "is not empty" in cli("deps", "container", "-o", str(context), "--home", str(home), code=1)


def entry_point(context: Path) -> list[str]:
    """The Dockerfile's ENTRYPOINT and CMD as this machine runs them without Docker: `uv run --locked --no-dev`
    becomes this environment's interpreter (the lock is the same), run in the context so the context's own copy
    of the code is what serves; /app is the context; the port any free one on loopback."""
    lines = (context / "Dockerfile").read_text().splitlines()
    entry = json.loads(next(line for line in lines if line.startswith("ENTRYPOINT "))[len("ENTRYPOINT "):])
    cmd = json.loads(next(line for line in lines if line.startswith("CMD "))[len("CMD "):])
    assert entry[:4] == ["uv", "run", "--locked", "--no-dev"] and entry[4] == "depmesh"
    assert cmd == ["--host", "0.0.0.0", "--port", "8080"]
    args = [str(context / a[len("/app/"):]) if a.startswith("/app/") else a for a in entry[5:]]
    return [sys.executable, "-m", "depmesh.cli", *args, "--host", "127.0.0.1", "--port", "0"]


def serve_the_entry_point(context: Path, frame) -> list:
    """Start the container's entry point, ask it for predictions of ``frame``'s rows; returns them."""
    from depmesh_tests.online_server import Server
    from depmesh_tests.test_serve import records_for

    server = Server(command=entry_point(context), cwd=context, env={"DEPMESH_SERVE_TOKEN": "t0ken"})
    try:
        server.wait_ready()
        client = server.client(token="t0ken")
        status, release = client.get("/v1/release")
        assert status == 200 and release["source"].startswith("folder") and len(release["models"]) == 4
        status, described = client.get("/v1/models/models/dep_delay")
        assert status == 200 and described["features"][0]["source"]  # the catalog's bounds travel in the manifest
        names = [f["name"] for f in described["features"]]
        status, body = client.predict("models/dep_delay", records_for(frame, names))
        assert status == 200, body
        assert server.client().get("/v1/release")[0] == 401  # the token from the environment guards it
        return body["predictions"]
    finally:
        server.stop()


def test_an_upgrade_is_tried_for_real_in_a_second_environment(home, golden):
    """A no-op upgrade (the locked numpy itself) changes nothing; a neighbouring scikit-learn release is really
    installed beside the lock, the Production artifacts load and retrain there, and the report compares both."""
    approve_release(home, golden.release_id)
    cli("release", "promote", str(golden.release_id), "--home", str(home), "--actor", "eli", "--reason", "go")
    assert "expected PACKAGE==VERSION" in cli("deps", "upgrade-diff", "--home", str(home), "numpy>=1", code=1)
    assert "not in the lock" in cli("deps", "upgrade-diff", "--home", str(home), "left-pad==1.0", code=1)
    assert "not a Production model" in cli("deps", "upgrade-diff", "numpy==2.0.0", "--model", "models/nope",
                                           "--home", str(home), code=1)
    shown = cli("deps", "upgrade-diff", f"numpy=={LOCKED['numpy']}", "--model", "models/dep_delay",
                "--model", "models/route_segment", "--home", str(home), "--format", "json")
    assert "overriding numpy==" in shown  # progress, on stderr
    same = json.loads(shown[shown.index("\n{") + 1:])
    assert set(same["models"]) == {"models/dep_delay", "models/route_segment"}
    assert all(m["max_abs_difference"] == 0 and m["same_bytes"] and m["rows"] > 0 for m in same["models"].values())
    assert same["beyond_tolerance"] == [] and same["libraries_after"]["numpy"] == LOCKED["numpy"]
    major, minor, patch = LOCKED["scikit-learn"].split(".")[:3]
    neighbour = f"{major}.{minor}.{int(patch) - 1}" if int(patch) > 0 else f"{major}.{int(minor) - 1}.0"
    out = CliRunner().invoke(main, ["deps", "upgrade-diff", f"scikit-learn=={neighbour}", "--home", str(home),
                                    "--format", "json"])
    assert out.exit_code in (0, 1), out.output
    report = json.loads(out.output[out.output.index("\n{") + 1:])
    assert report["libraries_before"]["scikit-learn"] == LOCKED["scikit-learn"]
    assert report["libraries_after"]["scikit-learn"] == neighbour
    for node, m in report["models"].items():
        if "max_abs_difference" in m:  # loaded and retrained there: the figures are real comparisons
            assert m["max_abs_difference"] >= m["mean_abs_difference"] >= 0 and 0 <= m["share_beyond_tolerance"] <= 1
            assert m["beyond_tolerance"] == (m["max_abs_difference"] > report["tolerance"])
        else:  # the artifact would not load or retrain under the neighbour: named, and beyond tolerance
            assert m["beyond_tolerance"] and (m.get("error_after") or m.get("error_before"))
    assert out.exit_code == (1 if report["beyond_tolerance"] else 0)


def test_an_online_audit_never_passes_packages_it_could_not_look_up():
    """pip-audit answers 'not found on PyPI' for what its service cannot reach (this machine reaches the package
    index only): depmesh says they were not audited and fails, instead of 'no known vulnerability'."""
    from depmesh.deps.audit import AuditError, audit_online

    try:
        findings = audit_online({"requests": "2.19.0"})  # a release with published advisories
    except AuditError as exc:
        assert "could not audit 1 of 1 packages" in str(exc) and "--osv DIR" in str(exc)
    else:  # where the service answers, the advisories of that old release are found
        assert any(f["package"] == "requests" for f in findings)


def test_a_refused_container_context_leaves_nothing_behind(home, golden, tmp_path):
    """A member whose stored artifact fails its hash refuses the build context: the folder asked for is not
    left half-written (it held the other members' artifacts and no manifest), and no scratch folder remains."""
    from depmesh.artifacts import ArtifactStore
    from depmesh.assets.io import artifacts_dir
    from depmesh.assets.registry_resource import open_registry
    from depmesh.registry.store import default_url

    registry = open_registry(default_url(home), "flights")
    members = registry.release(golden.release_id)["members"]
    digest = registry.version("models/late_arrival", members["models/late_arrival"])["artifact_hash"]
    registry.dispose()
    artifact = ArtifactStore(artifacts_dir(home)).path_for(digest)
    artifact.write_bytes(artifact.read_bytes() + b"tampered")
    context = tmp_path / "ctx"
    said = cli("deps", "container", str(golden.release_id), "-o", str(context), "--home", str(home), code=1)
    assert "does not match its recorded hash" in said or "late_arrival" in said
    assert not context.exists() or not any(context.iterdir())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home"] + (["ctx"] if context.exists() else [])

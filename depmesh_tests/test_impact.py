"""Impact analysis on the demo mesh, --changed-since on a git repository made
here, and the HTML page rendered by a real headless Chromium."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from depmesh.cli import main
from depmesh.impact import impact
from depmesh_tests.conftest import in_ci

DEP_DELAY_DOWNSTREAM = {
    "models/arr_delay": 1, "scores/dep_delay": 1, "models/late_arrival": 2, "scores/arr_delay": 2,
    "consumers/ops_report": 2, "scores/late_arrival": 3,
}


def test_dep_delay_reaches_exactly_its_dependents(demo_mesh):
    report = impact(demo_mesh, "models/dep_delay")
    assert {r.node: r.depth for r in report.downstream} == DEP_DELAY_DOWNSTREAM
    assert report.by_kind == {"model": ["models/arr_delay", "models/late_arrival"],
                              "scores": ["scores/dep_delay", "scores/arr_delay", "scores/late_arrival"],
                              "consumer": ["consumers/ops_report"]}
    assert report.consumers == ["consumers/ops_report"]
    assert report.owners == ["team:airport-operations", "team:customer-ops", "team:delay-models"]
    assert report.rollback_set == ["models/dep_delay", "models/arr_delay", "models/late_arrival"]
    assert report.paths == [
        ["models/dep_delay", "scores/dep_delay", "consumers/ops_report"],
        ["models/dep_delay", "models/arr_delay", "scores/arr_delay", "consumers/ops_report"],
        ["models/dep_delay", "models/arr_delay", "models/late_arrival", "scores/late_arrival", "consumers/ops_report"],
    ]
    # weights: high 4 + medium 2 + critical 8 + medium 2 + critical 8 + high 4
    assert report.blast_radius == 28


def test_weather_reaches_the_diamond_through_every_path(demo_mesh):
    report = impact(demo_mesh, "raw/weather")
    assert set(r.node for r in report.downstream) == {
        "features/flight_weather", *DEP_DELAY_DOWNSTREAM, "models/dep_delay"}
    assert report.rollback_set == ["models/dep_delay", "models/arr_delay", "models/late_arrival"]
    # the diamond: flight_weather reaches arr_delay directly and through dep_delay
    assert ["raw/weather", "features/flight_weather", "models/arr_delay", "scores/arr_delay",
            "consumers/ops_report"] in report.paths
    assert ["raw/weather", "features/flight_weather", "models/dep_delay", "models/arr_delay",
            "scores/arr_delay", "consumers/ops_report"] in report.paths
    assert [len(p) for p in report.paths] == sorted(len(p) for p in report.paths)
    checked = {c["node"]: c["checks"] for c in report.contracts}
    assert checked["raw/weather"] == ["contract", "contract_warnings", "schema_change"]
    assert "input_contract" in checked["models/late_arrival"]
    assert report.owners == ["team:airport-operations", "team:customer-ops", "team:delay-models",
                             "team:features", "team:ingestion"]


def test_route_segment_rollback_set_and_consumer(demo_mesh):
    report = impact(demo_mesh, "models/route_segment")
    assert report.rollback_set == ["models/route_segment", "models/arr_delay", "models/late_arrival"]
    assert "scores/dep_delay" not in {r.node for r in report.downstream}


def test_impact_json_has_the_documented_keys(demo_mesh):
    out = CliRunner().invoke(main, ["impact", "models/dep_delay", "--format", "json"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.output)
    for k in ("node", "downstream", "consumers", "owners", "contracts", "paths", "rollback_set", "blast_radius"):
        assert k in data
    assert data["node"] == "models/dep_delay"
    assert {d["node"]: d["depth"] for d in data["downstream"]} == DEP_DELAY_DOWNSTREAM
    assert all(set(d) >= {"node", "kind", "depth"} for d in data["downstream"])


def test_unknown_node_is_named(demo_mesh):
    out = CliRunner().invoke(main, ["impact", "models/nope"])
    assert out.exit_code == 1 and "no node named models/nope" in out.output


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        if in_ci():
            pytest.fail("Chromium is not installed (.ci/run installs Debian's chromium)")
        pytest.skip("install Debian's chromium to render the impact page")
    return path


def test_html_page_renders_in_headless_chromium(tmp_path):
    browser = chromium()
    page = tmp_path / "impact.html"
    out = CliRunner().invoke(main, ["impact", "models/dep_delay", "--format", str(page)])
    assert out.exit_code == 0, out.output
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([browser, *flags, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    # the page's script counted what the browser drew: every node, the six reached, the one changed
    assert 'data-nodes-drawn="16"' in dom.stdout, dom.stderr[-2000:]
    assert 'data-affected-drawn="6"' in dom.stdout
    assert 'data-changed-drawn="1"' in dom.stdout
    shot = tmp_path / "impact.png"
    subprocess.run([browser, *flags, "--window-size=1400,1200", f"--screenshot={shot}", page.as_uri()],
                   capture_output=True, timeout=120)
    assert shot.exists() and shot.stat().st_size > 20_000  # a drawn page, not a blank one


def make_repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    (repo / "meshcode").mkdir(parents=True)
    (repo / "meshcode" / "__init__.py").write_text("")
    (repo / "meshcode" / "steps.py").write_text("def load(inputs, ctx):\n    return None\n")
    (repo / "meshcode" / "model.py").write_text("def build(inputs, ctx):\n    return None\n")
    (repo / "mesh.yaml").write_text(textwrap.dedent("""\
        mesh: small
        nodes:
          - {name: raw/a, kind: dataset, owner: team:a, compute: "meshcode.steps:load", description: first}
          - {name: features/b, kind: features, owner: team:b, inputs: [raw/a], compute: "meshcode.model:build"}
          - {name: features/c, kind: features, owner: team:c, inputs: [features/b], compute: "meshcode.steps:load"}
          - {name: raw/d, kind: dataset, owner: team:d, compute: "meshcode.steps:load"}
    """))
    git = lambda *a: subprocess.run(["git", *a], cwd=repo, check=True, capture_output=True)  # noqa: E731
    git("init", "-q")
    git("add", ".")
    git("-c", "user.email=t@t", "-c", "user.name=t", "commit", "-q", "-m", "mesh")
    return repo


def run_impact(repo: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(repo)}
    return subprocess.run([sys.executable, "-m", "depmesh.cli", "impact", "--catalog", str(repo / "mesh.yaml"),
                           *args], capture_output=True, text=True, cwd=repo, env=env)


def test_changed_since_takes_catalog_and_code_changes(tmp_path):
    repo = make_repo(tmp_path)
    clean = run_impact(repo, "--changed-since", "HEAD")
    assert clean.returncode == 0 and "no node changed since HEAD" in clean.stdout
    # a code change to the module that builds features/b
    (repo / "meshcode" / "model.py").write_text("def build(inputs, ctx):\n    return 1\n")
    out = run_impact(repo, "--changed-since", "HEAD", "--format", "json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["changed"] == ["features/b"]
    assert data["changed_since"]["reasons"] == {"features/b": ["code changed: meshcode/model.py"]}
    assert [d["node"] for d in data["downstream"]] == ["features/c"]
    # a catalog edit to raw/d joins the union
    text = (repo / "mesh.yaml").read_text().replace("owner: team:d,", "owner: team:d, criticality: high,")
    (repo / "mesh.yaml").write_text(text)
    data = json.loads(run_impact(repo, "--changed-since", "HEAD", "--format", "json").stdout)
    assert set(data["changed"]) == {"features/b", "raw/d"}
    assert data["changed_since"]["reasons"]["raw/d"] == ["catalog entry changed"]
    bad = run_impact(repo, "--changed-since", "no-such-ref")
    assert bad.returncode == 1 and "--changed-since no-such-ref" in bad.stderr


def test_depth_is_the_shortest_distance_not_the_order_of_a_walk(write_catalog):
    """raw/a reaches features/d directly and through b and c: breadth-first gives d depth 1 (and e depth 2);
    a depth-first walk that went through b first would say 3 and 4."""
    from depmesh.catalog import load_catalog

    build = "compute: depmesh.examples.synthetic:combine"
    mesh = load_catalog(write_catalog(textwrap.dedent(f"""\
        mesh: depths
        nodes:
          - {{name: raw/a, kind: dataset, owner: team:a, compute: depmesh.examples.synthetic:source}}
          - {{name: features/b, kind: features, owner: team:a, inputs: [raw/a], {build}}}
          - {{name: features/c, kind: features, owner: team:a, inputs: [features/b], {build}}}
          - {{name: features/d, kind: features, owner: team:a, inputs: [features/c, raw/a], {build}}}
          - {{name: features/e, kind: features, owner: team:a, inputs: [features/d], {build}}}
        """)))
    report = impact(mesh, "raw/a")
    assert {r.node: r.depth for r in report.downstream} == {
        "features/b": 1, "features/d": 1, "features/c": 2, "features/e": 2}
    assert [r.node for r in report.downstream] == ["features/b", "features/d", "features/c", "features/e"]

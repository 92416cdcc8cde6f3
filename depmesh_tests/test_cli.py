"""The command line as a user runs it: a real process, a real instance folder."""

from __future__ import annotations

import os
import subprocess
import sys

from dagster import AssetKey, DagsterInstance


def depmesh(*args: str, cwd=None, env=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "depmesh.cli", *args], capture_output=True, text=True, cwd=cwd,
        env={**os.environ, **(env or {})}, timeout=600,
    )


def test_run_materializes_the_mesh_and_prints_a_summary(tmp_path, demo_mesh, golden):
    home = tmp_path / "home"
    out = depmesh("run", "--sample", "0.2", "--home", str(home))
    assert out.returncode == 0, out.stderr[-3000:]
    # progress on stderr, one line per built asset
    for node in demo_mesh.nodes:
        assert f"built {node.name} in" in out.stderr
    # the summary names every node and where to open the UI
    for node in demo_mesh.nodes:
        assert node.name in out.stdout
    assert "NOT BUILT" not in out.stdout
    assert "succeeded" in out.stdout and f"DAGSTER_HOME={home}" in out.stdout
    # the instance folder is a SQLite instance holding the materializations
    assert (home / "dagster.yaml").exists()
    instance = DagsterInstance.from_config(str(home))
    try:
        assert "Sqlite" in type(instance.run_storage).__name__
        assert instance.get_latest_materialization_event(AssetKey(["consumers", "ops_report"])) is not None
        [run] = instance.get_runs()
        assert run.tags["depmesh/sample"] == "0.2" and run.tags["depmesh/catalog"].endswith("catalog.yaml")
        # another launch (a CLI process) of the same versions wrote the same artifact bytes as the golden run
        golden_instance = DagsterInstance.from_config(str(golden.home))
        try:
            for node in demo_mesh.nodes:
                if node.kind != "model":
                    continue
                ours, theirs = (i.get_latest_materialization_event(AssetKey(node.name.split("/"))).asset_materialization
                                .metadata for i in (instance, golden_instance))
                assert ours["model_version"] == theirs["model_version"], node.name
                assert ours["artifact_hash"] == theirs["artifact_hash"], node.name
        finally:
            golden_instance.dispose()
    finally:
        instance.dispose()
    # re-execution from failure needs a failed run of this instance, and says so
    again = depmesh("run", "--from-failure", run.run_id, "--home", str(home))
    assert again.returncode == 2 and f"run {run.run_id} is SUCCESS, not FAILURE" in again.stderr
    again = depmesh("run", "--from-failure", "no-such-run", "--home", str(home))
    assert again.returncode == 2 and "no run no-such-run on the instance" in again.stderr


def test_run_with_a_bad_catalog_fails_before_touching_the_instance(tmp_path, write_catalog):
    bad = write_catalog("mesh: x\nnodes: []\n")
    home = tmp_path / "home"
    out = depmesh("run", "--catalog", str(bad), "--home", str(home))
    assert out.returncode == 1
    assert "a mesh needs at least one node" in out.stderr
    assert not home.exists()


def test_run_rejects_a_sample_outside_0_1(tmp_path):
    out = depmesh("run", "--sample", "1.5", "--home", str(tmp_path / "h"))
    assert out.returncode == 2
    assert "--sample" in out.stderr


def test_readme_graph_is_the_demo_catalog(demo_mesh):
    from pathlib import Path

    from depmesh.cli import mermaid

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    assert "```mermaid\n" + mermaid(demo_mesh) + "\n```" in readme, "regenerate with: depmesh show --format mermaid"


def test_readme_opens_with_the_run_and_test_commands():
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    lines = (root / "README.md").read_text().split("```bash\n", 1)[1].splitlines()
    assert "uv run --locked depmesh run" in lines[0]
    assert "uv run --locked pytest" in lines[1]
    test_command = lines[1].split("#")[0].strip()
    assert test_command in (root / ".ci" / "run").read_text()


def test_dev_takes_host_and_port_and_says_where_dagster_options_go(tmp_path):
    out = depmesh("dev", "-h")
    text = " ".join(out.stdout.split())
    assert out.returncode == 0
    assert "--host" in text and "--port" in text and "its own options: dagster dev --help" in text
    bad = depmesh("dev", "--port", "70000", "--home", str(tmp_path / "h"))
    assert bad.returncode == 2 and "70000" in bad.stderr


def test_the_embedded_instance_limits_training_steps_like_the_team_one(tmp_path):
    from depmesh.instance import prepare_home
    from depmesh.keys import TRAINING_POOL

    home = prepare_home(tmp_path / "home")
    instance = DagsterInstance.from_config(str(home))
    try:
        assert "Sqlite" in type(instance.event_log_storage).__name__
        assert instance.event_log_storage.get_concurrency_info(TRAINING_POOL).limit == 2
    finally:
        instance.dispose()


def test_every_command_that_reads_a_catalog_takes_catalog_and_the_variable(tmp_path):
    from click.testing import CliRunner

    from depmesh.cli import main
    from depmesh.examples import CLINIC_CATALOG

    runner = CliRunner()
    for args in (["validate"], ["show", "--format", "json"], ["impact", "models/progression", "--format", "json"]):
        by_option = runner.invoke(main, [*args, "--catalog", str(CLINIC_CATALOG)])
        by_variable = CliRunner(env={"DEPMESH_CATALOG": str(CLINIC_CATALOG)}).invoke(main, args)
        for out in (by_option, by_variable):
            assert out.exit_code == 0, (args, out.output)
            assert "clinic" in out.output or "models/high_risk" in out.output, (args, out.output)
    for group, command in (("release", "list"), ("release", "show"), ("release", "promote"), ("release", "rollback"),
                           ("registry", "history"), ("registry", "migrate"), ("run", None), ("dev", None),
                           ("simulate", None), ("impact", None)):
        args = [group, command, "--help"] if command else [group, "--help"]
        assert "--catalog" in runner.invoke(main, args).output, args
    both = runner.invoke(main, ["validate", str(CLINIC_CATALOG), "--catalog", "other.yaml"])
    assert both.exit_code == 2 and "two catalogs given" in both.output


def test_a_bad_catalog_is_one_error_style_everywhere(write_catalog):
    from click.testing import CliRunner

    from depmesh.cli import main

    bad = write_catalog("mesh: x\nnodes: []\n")
    for args in (["validate", str(bad)], ["show", "--catalog", str(bad)], ["impact", "a", "--catalog", str(bad)],
                 ["release", "list", "--catalog", str(bad)]):
        out = CliRunner().invoke(main, args)
        assert out.exit_code == 1 and "Error: invalid catalog" in out.output and "a mesh needs at least one node" \
            in out.output, (args, out.output)


def test_runs_recorded_before_the_job_moved_still_rebuild(demo_mesh):
    """Run records hold the job's module path: depmesh.executors:mesh_job (before) and depmesh.runs:mesh_job."""
    from dagster import build_reconstructable_job

    from depmesh.examples import DEMO_CATALOG

    kwargs = {"catalog": str(DEMO_CATALOG), "sample": 0.05, "executor": "in_process", "as_of": ""}
    for module in ("depmesh.executors", "depmesh.runs"):
        job = build_reconstructable_job(module, "mesh_job", reconstructable_kwargs=kwargs).get_definition()
        assert job.name == "mesh_job" and len(job.asset_layer.executable_asset_keys) == len(demo_mesh.nodes) + 4  # reports, release, serving page


def test_impact_answers_without_importing_the_database_or_dagster(tmp_path):
    """`depmesh impact` on a catalog is a quick question: the command line must not import SQLAlchemy or Dagster
    to answer it (SQLAlchemy came in through the tracking commands' status list, 0.4 s of every command)."""
    import textwrap

    from depmesh.examples import DEMO_CATALOG

    code = textwrap.dedent(f"""
        import sys
        from depmesh.cli import main
        try:
            main(["impact", "models/dep_delay", "--format", "json", "--catalog", {str(DEMO_CATALOG)!r}])
        except SystemExit as stop:
            print("exit", stop.code, file=sys.stderr)
        print("heavy", ",".join(m for m in ("sqlalchemy", "dagster", "great_expectations", "sklearn")
                                if m in sys.modules), file=sys.stderr)
    """)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DEPMESH_", "DAGSTER_"))}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env,
                         timeout=120)
    assert "exit 0" in out.stderr and '"node": "models/arr_delay"' in out.stdout, out.stderr[-2000:]
    assert "heavy \n" in out.stderr, out.stderr[-2000:]

"""Experiment tracking: every training recorded with what made it (passed,
rejected by a gate, or failed), queried and compared, its inputs kept as
snapshots, the cost of a retraining cascade estimated from it."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from click.testing import CliRunner
from dagster import AssetKey

from depmesh.artifacts import ArtifactStore
from depmesh.assets.io import artifacts_dir
from depmesh.registry import Registry
from depmesh.registry.store import default_url
from depmesh.tracking.capture import Curves
from depmesh.tracking.query import WhereError, compile_where
from depmesh.tracking.snapshots import SnapshotStore
from depmesh.tracking.store import Tracking
from depmesh_tests.conftest import REPO, copy_of, fresh_database, materialize_mesh

MODELS = ["models/route_segment", "models/dep_delay", "models/arr_delay", "models/late_arrival"]


def golden_tracking(home) -> Tracking:
    return Tracking(Registry(default_url(home), mesh="flights", artifacts=ArtifactStore(artifacts_dir(home))))


def test_every_training_is_tracked_with_what_made_it(golden):
    tracking = golden_tracking(golden.home)
    rows = {r["node"]: r for r in tracking.query(status=["registered"])}
    assert sorted(rows) == sorted(MODELS)
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    lock = (REPO / "uv.lock").read_bytes()
    registry = tracking.registry
    for node, row in rows.items():
        version = registry.version(node, row["model_version"])
        assert version is not None and version["stage"] == "Staging", node
        assert row["run_id"] == golden.run_id and row["seed"] == 13
        assert row["git_commit"] == head
        assert row["lock_sha256"] == hashlib.sha256(lock).hexdigest() and tracking.blob(row["lock_sha256"]) == lock
        diff = subprocess.run(["git", "-C", str(REPO), "diff", "HEAD", "--binary", "--no-color", "--no-ext-diff"],
                              capture_output=True).stdout
        assert tracking.blob(row["diff_sha256"]).startswith(diff)  # then the untracked files, if any
        assert row["input_versions"] == version["input_versions"]
        assert sorted(row["inputs"]) == sorted(version["input_versions"])  # every input has a snapshot
        assert row["host"] and row["duration_s"] > 0 and row["peak_memory_mb"] > 50
        assert row["ended_at"] > row["started_at"]
        assert row["library_versions"]["scikit-learn"] and row["metrics"] == version["metrics"]
        assert row["tags"]["trigger"] == row["trigger"]
    dep = rows["models/dep_delay"]
    # every parameter of the fitted estimator, defaults included, beside the declared ones
    assert dep["declared_params"] == {"loss": "absolute_error", "max_iter": 150, "learning_rate": 0.1,
                                      "max_leaf_nodes": 31}
    assert dep["params"]["model__max_iter"] == 150 and "model__l2_regularization" in dep["params"]
    # the per-iteration curves of a gradient-boosting model, train and validation
    curves = tracking.curves([dep["id"]])[dep["id"]]
    assert sorted(curves) == ["train/mae", "validation/mae"]
    steps, values = curves["validation/mae"]
    assert steps == list(range(1, 151)) and values[-1] < values[0]
    assert abs(values[-1] - dep["metrics"]["mae"]) / dep["metrics"]["mae"] < 0.1  # measured on a sample of the window
    late = rows["models/late_arrival"]
    assert sorted(tracking.curves([late["id"]])[late["id"]]) == ["train/log_loss", "validation/log_loss"]


def test_the_materialization_links_its_training_and_shows_its_curves(golden):
    from dagster import DagsterInstance

    instance = DagsterInstance.from_config(str(golden.home))
    try:
        metadata = instance.get_latest_materialization_event(AssetKey(["models", "arr_delay"])).asset_materialization.metadata
    finally:
        instance.dispose()
    training = golden_tracking(golden.home).get(metadata["depmesh/training_id"].value)
    assert training["model_version"] == metadata["model_version"].value
    picture = metadata["training_curves"].value
    assert picture.startswith("![training curves](data:image/svg+xml;base64,")
    import base64

    svg = base64.b64decode(picture.split("base64,")[1].split(")")[0]).decode()
    assert svg.count("<polyline") == 2 and "validation/mae" in svg


def test_a_training_stopped_by_its_gates_or_an_error_is_tracked_too(golden, demo_mesh, tmp_path):
    def with_trainer(trainer):
        return replace(demo_mesh, nodes=tuple(
            replace(n, model=replace(n.model, trainer=trainer)) if n.name == "models/dep_delay" else n
            for n in demo_mesh.nodes))

    with copy_of(golden, tmp_path / "home") as instance:
        materialize_mesh(with_trainer("depmesh_tests.faults:slow_dep_delay"), instance,
                         selection=[AssetKey(["models", "dep_delay"])], tags={"depmesh/trigger": "cli"})
        materialize_mesh(with_trainer("depmesh_tests.faults:raising_dep_delay"), instance,
                         selection=[AssetKey(["models", "dep_delay"])])
    tracking = golden_tracking(tmp_path / "home")
    [rejected] = tracking.query(status=["rejected"])
    assert rejected["node"] == "models/dep_delay" and rejected["trigger"] == "cli"
    assert rejected["metrics"]["mae"] > 0 and rejected["model_version"]
    assert tracking.registry.version("models/dep_delay", rejected["model_version"]) is None  # never registered
    [failed] = tracking.query(status=["failed"])
    assert "RuntimeError: the feature store answered 503" in failed["error"] and failed["trigger"] == "ui"
    assert failed["model_version"] is None and failed["git_commit"]
    # the failed and rejected trainings are found by the filters like any other
    assert [r["status"] for r in tracking.query(node="models/dep_delay", since=datetime.now(UTC) - timedelta(hours=1))
            ] == ["failed", "rejected", "registered"]


@pytest.fixture(params=["sqlite", "postgres"])
def tracking(request, tmp_path):
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'registry.db'}"
        reg = Registry(url, mesh="m")
        reg.migrate()
        yield Tracking(reg)
        reg.dispose()
    else:
        server = request.getfixturevalue("postgres_server_url")
        with fresh_database(server) as url:
            reg = Registry(url, mesh="m")
            reg.migrate()
            yield Tracking(reg)
            reg.dispose()


def record(tracking: Tracking, node: str, params: dict, metrics: dict, *, status="registered", trigger="cli",
           started=None, tags=None) -> str:
    started = started or datetime.now(UTC)
    curves = Curves()
    curves.add("validation/mae", [1, 2, 3], [metrics.get("mae", 1.0) * 2, metrics.get("mae", 1.0) * 1.5,
                                               metrics.get("mae", 1.0)])
    return tracking.record({
        "node": node, "status": status, "run_id": "r", "trigger": trigger, "tags": tags or {}, "params": {
            f"model__{k}": v for k, v in params.items()}, "declared_params": params, "seed": 1, "metrics": metrics,
        "model_version": None, "code_version": "c", "git_commit": None, "diff_sha256": None, "lock_sha256": None,
        "catalog_sha256": None, "library_versions": {}, "input_versions": {}, "inputs": {}, "host": "h",
        "started_at": started, "ended_at": started + timedelta(seconds=2), "duration_s": 2.0,
        "peak_memory_mb": 100.0}, curves)


def test_where_filters_on_params_and_metrics_and_sorts_by_any_metric(tracking):
    now = datetime.now(UTC)
    ids = {}
    for i, (max_iter, mae) in enumerate([(50, 14.0), (100, 11.5), (150, 12.5), (200, 10.0), (300, 13.0)]):
        ids[max_iter] = record(tracking, "models/a", {"max_iter": max_iter, "loss": "absolute_error"}, {"mae": mae},
                               started=now - timedelta(days=i), trigger="schedule:weekly" if i % 2 else "cli")
    record(tracking, "models/b", {"alpha": 1.0}, {"roc_auc": 0.7}, status="rejected", tags={"team": "ops"})
    found = tracking.query(where="params.max_iter >= 100 and metrics.mae < 12.6", sort="metrics.mae")
    assert [r["id"] for r in found] == [ids[200], ids[100], ids[150]]
    assert [r["id"] for r in tracking.query(where="params.max_iter >= 100 and metrics.mae < 12.6",
                                            sort="-metrics.mae")] == [ids[150], ids[100], ids[200]]
    # a training without the field is not a match, and sorts last
    assert len(tracking.query(where="metrics.roc_auc > 0.5")) == 1
    assert tracking.query(sort="-metrics.roc_auc")[0]["node"] == "models/b"
    # the full estimator parameters answer too (params.X matches model__X), and text compares
    assert len(tracking.query(where="params.loss == 'absolute_error' and not params.max_iter in [50, 300]")) == 3
    assert len(tracking.query(trigger="schedule:*")) == 2
    assert len(tracking.query(since=now - timedelta(days=1, hours=1))) == 3  # two of models/a, and models/b
    assert [r["node"] for r in tracking.query(tags={"team": "ops"})] == ["models/b"]
    assert len(tracking.query(node="models/a", limit=2)) == 2
    assert len(tracking.query(status=["rejected"])) == 1
    assert tracking.curves([ids[100]])[ids[100]]["validation/mae"][1][-1] == 11.5


@pytest.mark.parametrize("expression,complaint", [
    ("__import__('os').system('touch /tmp/pwned')", "is not allowed here"),
    ("metrics.mae.__class__ < 1", "no name starts with '__'"),
    ("(lambda: 1)() == 1", "is not allowed here"),
    ("metrics.mae < [x for x in ()]", "is not allowed here"),
    ("metrics.mae in [1, metrics.rmse]", "lists hold plain values"),
    ("params.max_iter >= ", "not an expression"),
    ("secret > 1", "unknown field 'secret'"),
    ("metrics.mae @ 2", "is not allowed here"),
    ("x" * 3000, "at most 2000"),
])
def test_a_hostile_or_broken_where_is_refused_with_what_is_wrong(expression, complaint):
    with pytest.raises(WhereError, match=complaint.replace("(", r"\(")):
        compile_where(expression)


def test_runs_list_and_compare_on_the_command_line(golden, tmp_path):
    from depmesh.cli import main

    runner = CliRunner()
    home = str(golden.home)
    out = runner.invoke(main, ["runs", "list", "--home", home, "--where", "params.max_iter >= 100 and metrics.mae < 100",
                               "--sort", "metrics.mae"])
    assert out.exit_code == 0, out.output
    lines = out.output.splitlines()
    assert lines[0].split()[:3] == ["id", "node", "status"] and "metrics.mae" in lines[0]
    assert [line.split()[1] for line in lines[2:]] == ["models/dep_delay", "models/arr_delay"]  # mae ascending
    listed = json.loads(runner.invoke(main, ["runs", "list", "--home", home, "--format", "json"]).output)
    assert {r["node"] for r in listed} == set(MODELS)
    shown = runner.invoke(main, ["runs", "show", listed[0]["id"][:8], "--home", home])
    assert shown.exit_code == 0 and listed[0]["id"] in shown.output and "curve " in shown.output
    page = tmp_path / "compare.html"
    out = runner.invoke(main, ["runs", "compare", "--home", home, "--node", "models/dep_delay", "--node",
                               "models/arr_delay", "--metric", "mae", "--format", "html", "-o", str(page)])
    assert out.exit_code == 0 and "wrote" in out.output and page.stat().st_size > 1_000_000  # plotly.js inlined
    for bad, complaint in ((["--since", "yesterday"], "neither an ISO date"), (["--where", "os.system"], "unknown group"),
                           (["--tag", "novalue"], "is not KEY=VALUE")):
        out = runner.invoke(main, ["runs", "list", "--home", home, *bad])
        assert out.exit_code == 2 and complaint in out.output, out.output
    out = runner.invoke(main, ["runs", "compare", "deadbeef", "--home", home])
    assert out.exit_code == 2 and "no tracked training with id 'deadbeef'" in out.output


def test_snapshots_are_content_addressed_and_retention_keeps_what_staging_needs(golden, tmp_path):
    from depmesh.tracking.retention import prune_snapshots

    home = tmp_path / "home"
    with copy_of(golden, home):
        pass
    tracking = golden_tracking(home)
    registry = tracking.registry
    store = SnapshotStore.beside(registry.artifacts.root)
    needed = {part["sha256"] for v in registry.versions() for part in v["recipe"]["inputs"].values()
              if part["kind"] == "table"}
    assert needed and all(store.has(d) for d in needed)
    for digest in needed:  # each snapshot is the exact bytes of the stored table it was taken from
        assert hashlib.sha256(store.path_for(digest).read_bytes()).hexdigest() == digest
    stray = store.put_bytes(b"an input of a training nobody kept")
    old = time.time() - 90 * 86400
    for path in store.all().values():
        os.utime(path, (old, old))
    deleted, protected = prune_snapshots(registry, older_than_days=30)
    assert deleted == [stray] and sorted(protected) == sorted(needed)
    assert not store.has(stray) and all(store.has(d) for d in needed)
    # once nothing in Staging or Production needs them, they go too
    for v in registry.versions():
        registry.transition(v["node"], v["version"], "Archived", actor="ana", reason="retired")
    deleted, protected = prune_snapshots(registry, older_than_days=30)
    assert sorted(deleted) == sorted(needed) and protected == []


def test_impact_estimates_the_cost_of_retraining_from_history(golden, tmp_path):
    from depmesh.cli import main

    runner = CliRunner()
    out = runner.invoke(main, ["impact", "models/dep_delay", "--home", str(golden.home), "--format", "json"])
    assert out.exit_code == 0, out.output
    cost = json.loads(out.output)["cost"]
    rows = golden_tracking(golden.home).query(status=["registered"])
    seconds = {r["node"]: r["duration_s"] for r in rows}
    for node in ("models/dep_delay", "models/arr_delay", "models/late_arrival"):
        assert cost["nodes"][node]["seconds"] == pytest.approx(seconds[node], abs=1e-3)
        assert cost["nodes"][node]["peak_mb"] > 0 and cost["nodes"][node]["history"] == 1
    assert cost["nodes"]["scores/dep_delay"]["seconds"] is not None  # tables: from their materializations
    assert cost["no_history"] == []
    assert cost["critical_path_seconds"] <= cost["serial_seconds"]
    assert cost["critical_path_seconds"] >= seconds["models/dep_delay"] + seconds["models/arr_delay"] + seconds[
        "models/late_arrival"]  # a chain: they cannot overlap
    text = runner.invoke(main, ["impact", "models/dep_delay", "--home", str(golden.home)]).output
    assert f"expected retraining cost: {cost['serial_seconds']:g} s of work" in text
    page = tmp_path / "impact.html"
    assert runner.invoke(main, ["impact", "models/dep_delay", "--home", str(golden.home), "--format", str(page)]
                         ).exit_code == 0
    assert f'id="cost">{cost["serial_seconds"]:g} s of work' in page.read_text()
    # an instance with no history names the nodes it cannot estimate
    empty = tmp_path / "empty"
    empty.mkdir()
    from dagster import DagsterInstance

    DagsterInstance.local_temp(str(empty)).dispose()
    (empty / "dagster.yaml").write_text("")
    cost = json.loads(runner.invoke(main, ["impact", "models/arr_delay", "--home", str(empty), "--format", "json"]
                                    ).output)["cost"]
    assert set(cost["no_history"]) == {"models/arr_delay", "models/late_arrival", "scores/arr_delay",
                                       "scores/late_arrival", "consumers/ops_report"}
    assert cost["serial_seconds"] == 0 and cost["peak_mb"] is None

"""Coordinated retraining against rebuilding the whole mesh, per model.

    python3 -m uv run python benches/retrain_bench.py [--sample 1.0]

For each model of the demo mesh: retrain it with a changed parameter, let the
coordinated-retraining sensor (one real evaluation) request its run, execute
that run, and compare the number of assets it rebuilt and its wall time with
a rebuild of the whole mesh. All on one SQLite instance, in one process.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace

from dagster import AssetKey, build_sensor_context, instance_for_test

from depmesh.assets import MeshRuntime
from depmesh.automation.sensors import SENSOR_NAME
from depmesh.build import MESH_JOB, build_definitions
from depmesh.catalog import load_catalog
from depmesh.examples import DEMO_CATALOG

QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
CHANGES = {
    "models/route_segment": {"n_clusters": 5},
    "models/dep_delay": {"max_iter": 120},
    "models/arr_delay": {"max_iter": 120},
    "models/late_arrival": {"max_iter": 120},
}


def with_params(mesh, name, params):
    return replace(mesh, nodes=tuple(
        replace(n, model=replace(n.model, params={**n.model.params, **params})) if n.name == name else n
        for n in mesh.nodes))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sample", type=float, default=1.0)
    args = parser.parse_args()
    runtime = MeshRuntime(sample_fraction=args.sample)
    base = load_catalog(DEMO_CATALOG)
    rows = []
    with tempfile.TemporaryDirectory() as home, instance_for_test(temp_dir=home) as instance:
        defs = build_definitions(base, runtime=runtime)
        started = time.perf_counter()
        assert defs.resolve_job_def(MESH_JOB).execute_in_process(instance=instance, run_config=QUIET).success
        print(f"warm-up: whole mesh built in {time.perf_counter() - started:.1f}s", flush=True)
        started = time.perf_counter()
        assert defs.resolve_job_def(MESH_JOB).execute_in_process(instance=instance, run_config=QUIET).success
        whole = time.perf_counter() - started
        total = len(defs.resolve_job_def(MESH_JOB).asset_layer.selected_asset_keys)  # catalog + report + release
        for name, params in CHANGES.items():
            mesh = with_params(base, name, params)
            defs = build_definitions(mesh, runtime=runtime)
            job = defs.resolve_implicit_global_asset_job_def()
            started = time.perf_counter()
            assert job.execute_in_process(instance=instance, asset_selection=[AssetKey(name.split("/"))],
                                        run_config=QUIET).success
            retrain = time.perf_counter() - started
            data = defs.resolve_sensor_def(SENSOR_NAME).evaluate_tick(
                build_sensor_context(instance=instance, definitions=defs))
            assert len(data.run_requests) == 1, data.skip_message
            request = data.run_requests[0]
            started = time.perf_counter()
            assert job.execute_in_process(instance=instance, asset_selection=request.asset_selection,
                                          tags=request.tags, run_config=QUIET).success
            coordinated = time.perf_counter() - started
            rows.append((name, len(request.asset_selection), total, retrain, coordinated, whole))
            print(f"  {name}: {len(request.asset_selection)} assets rebuilt", flush=True)
            base = mesh  # the next change starts from this state
    print(f"\nsample fraction {args.sample}; whole mesh = {total} assets (the catalog's nodes, the impact report "
          f"and the release), rebuilt in {whole:.1f}s\n")
    print(f"{'changed model':<22} {'assets':>7} {'of':>4} {'retrain s':>10} {'coordinated s':>14} "
          f"{'whole mesh s':>13} {'time ratio':>11}")
    for name, n, total, retrain, coordinated, whole in rows:
        print(f"{name:<22} {n:>7} {total:>4} {retrain:>10.1f} {coordinated:>14.1f} {whole:>13.1f} "
              f"{(retrain + coordinated) / whole:>10.2f}x")
    print("\ntime ratio = (retraining the model + the coordinated run) / rebuilding the whole mesh")


if __name__ == "__main__":
    main()

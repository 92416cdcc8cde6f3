"""Random search, TPE and TPE with Hyperband pruning on one demo model
(models/dep_delay, the catalog's search space), side by side in one run on
the same stored inputs: trials and wall time until a trial reaches a target
MAE (the catalog parameters' MAE improved by --gain), and where each ends.

    python3 -m uv run python benches/tuning_bench.py [--sample 0.2] [--trials 25] [--gain 0.01]
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time

from dagster import instance_for_test

from depmesh.artifacts import ArtifactStore
from depmesh.assets import MeshRuntime
from depmesh.assets.io import storage_dir
from depmesh.build import MESH_JOB, build_definitions
from depmesh.catalog import load_catalog
from depmesh.examples import DEMO_CATALOG
from depmesh.registry import Registry
from depmesh.registry.store import default_url
from depmesh.tracking.store import Tracking
from depmesh.tuning.study import run_study

MODEL = "models/dep_delay"
STRATEGIES = [("random search", "random", "none"), ("TPE", "tpe", "none"), ("TPE + Hyperband", "tpe", "hyperband")]
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def with_strategy(mesh, sampler: str, pruner: str, trials: int):
    nodes = []
    for node in mesh.nodes:
        if node.name == MODEL:
            tune = dataclasses.replace(node.model.tune, sampler=sampler, pruner=pruner, trials=trials, timeout_s=None)
            node = dataclasses.replace(node, model=dataclasses.replace(node.model, tune=tune))
        nodes.append(node)
    return dataclasses.replace(mesh, nodes=tuple(nodes))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sample", type=float, default=0.2)
    parser.add_argument("--trials", type=int, default=25)
    parser.add_argument("--gain", type=float, default=0.005, help="target: the catalog parameters' MAE lowered by this share")
    args = parser.parse_args()
    mesh = load_catalog(DEMO_CATALOG)
    with tempfile.TemporaryDirectory() as home, instance_for_test(temp_dir=home) as instance:
        defs = build_definitions(mesh, runtime=MeshRuntime(sample_fraction=args.sample))
        assert defs.resolve_job_def(MESH_JOB).execute_in_process(instance=instance, run_config=QUIET).success
        storage = storage_dir(instance)
        registry = Registry(default_url(home), mesh=mesh.name, artifacts=ArtifactStore(storage / "artifacts"))
        tracking = Tracking(registry)
        rows = []
        target = None
        for label, sampler, pruner in STRATEGIES:
            started = time.time()
            result = run_study(with_strategy(mesh, sampler, pruner, args.trials), MODEL, instance, registry, storage,
                               progress=lambda line: None)
            wall = time.time() - started
            trials = sorted(tracking.query(study=result.study), key=lambda r: r["trial"])
            if target is None:
                target = result.baseline_value * (1 - args.gain)
            reached = next((r for r in trials if r["status"] == "trial" and r["metrics"]["mae"] <= target), None)
            to_target = (reached["ended_at"].timestamp() - started) if reached else None
            rows.append((label, result, wall, reached["trial"] + 1 if reached else None, to_target))
            print(f"{label}: best {result.best_value:.4f} in {wall:.0f} s", flush=True)
    print(f"\n{MODEL}, sample {args.sample}, {args.trials} trials each; target MAE {target:.4f} "
          f"(catalog parameters {rows[0][1].baseline_value:.4f} lowered by {args.gain:.0%})\n")
    print(f"{'strategy':<17} {'trials to target':>17} {'s to target':>12} {'best MAE':>9} {'pruned':>7} "
          f"{'wall s':>7} {'wall vs random':>15}")
    base = rows[0][2]
    for label, result, wall, trials, seconds in rows:
        print(f"{label:<17} {trials if trials else 'not reached':>17} {f'{seconds:.0f}' if seconds else '-':>12} "
              f"{result.best_value:>9.4f} {result.pruned:>7} {wall:>7.0f} {wall / base:>14.2f}x")


if __name__ == "__main__":
    main()

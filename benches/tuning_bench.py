"""Random search, TPE and TPE with Hyperband pruning on one demo model
(models/dep_delay, the catalog's search space), side by side in one run on
the same stored inputs, each with several seeds: trials and wall time until a
trial reaches a target MAE (the catalog parameters' MAE improved by --gain),
and where each ends. Medians over the seeds; "not reached" counts as the
whole budget.

    python3 -m uv run python benches/tuning_bench.py [--sample 0.2] [--trials 25] [--gain 0.008] [--seeds 3]
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
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


def with_strategy(mesh, sampler: str, pruner: str, trials: int, seed: int = 13):
    nodes = []
    for node in mesh.nodes:
        if node.name == MODEL:
            tune = dataclasses.replace(node.model.tune, sampler=sampler, pruner=pruner, trials=trials, timeout_s=None,
                                       seed=seed)
            node = dataclasses.replace(node, model=dataclasses.replace(node.model, tune=tune))
        nodes.append(node)
    return dataclasses.replace(mesh, nodes=tuple(nodes))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sample", type=float, default=0.2)
    parser.add_argument("--trials", type=int, default=25)
    parser.add_argument("--gain", type=float, default=0.008, help="target: the catalog parameters' MAE lowered by this share")
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    mesh = load_catalog(DEMO_CATALOG)
    with tempfile.TemporaryDirectory() as home, instance_for_test(temp_dir=home) as instance:
        defs = build_definitions(mesh, runtime=MeshRuntime(sample_fraction=args.sample))
        assert defs.resolve_job_def(MESH_JOB).execute_in_process(instance=instance, run_config=QUIET).success
        storage = storage_dir(instance)
        registry = Registry(default_url(home), mesh=mesh.name, artifacts=ArtifactStore(storage / "artifacts"))
        tracking = Tracking(registry)
        runs: dict[str, list] = {label: [] for label, _, _ in STRATEGIES}
        target = None
        baseline = None
        for seed in range(13, 13 + args.seeds):
            for label, sampler, pruner in STRATEGIES:
                started = time.time()
                result = run_study(with_strategy(mesh, sampler, pruner, args.trials, seed), MODEL, instance, registry,
                                   storage, progress=lambda line: None)
                wall = time.time() - started
                trials = sorted(tracking.query(study=result.study), key=lambda r: r["trial"])
                if target is None:
                    baseline = result.baseline_value
                    target = baseline * (1 - args.gain)
                reached = next((r for r in trials if r["status"] == "trial" and r["metrics"]["mae"] <= target), None)
                to_target = (reached["ended_at"].timestamp() - started) if reached else wall
                runs[label].append((reached["trial"] + 1 if reached else args.trials, to_target, result.best_value,
                                    result.pruned, wall, reached is not None))
                print(f"seed {seed}, {label}: best {result.best_value:.4f}, "
                      f"{'target at trial ' + str(reached['trial'] + 1) if reached else 'target not reached'}, "
                      f"{wall:.0f} s", flush=True)
    med = statistics.median
    print(f"\n{MODEL}, sample {args.sample}, {args.trials} trials per study, {args.seeds} seeds; target MAE {target:.4f} "
          f"(catalog parameters {baseline:.4f} lowered by {args.gain:.1%}); medians over seeds\n")
    print(f"{'strategy':<17} {'reached':>8} {'trials to target':>17} {'s to target':>12} {'best MAE':>9} "
          f"{'pruned':>7} {'wall s':>7} {'wall vs random':>15}")
    base = med(r[4] for r in runs[STRATEGIES[0][0]])
    for label, results in runs.items():
        print(f"{label:<17} {sum(r[5] for r in results):>4}/{len(results):<3} {med(r[0] for r in results):>17.0f} "
              f"{med(r[1] for r in results):>12.0f} {med(r[2] for r in results):>9.4f} {med(r[3] for r in results):>7.0f} "
              f"{med(r[4] for r in results):>7.0f} {med(r[4] for r in results) / base:>14.2f}x")


if __name__ == "__main__":
    main()

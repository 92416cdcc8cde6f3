"""Do the latency and memory gates give the same verdict on a busy machine?

Two CPU-bound processes run beside the gates the whole time (on a two-core
machine: every core busy). The same model versions are gated 20 times each:

- the demo's departure-delay model (gradient boosting) with its catalog
  budgets: every verdict must pass;
- the same model made three times slower than its budget, once by CPU work
  and once by waiting (as a model calling a slow service would): every
  verdict must fail;
- the same model with a budget only 1.5x its unloaded p95 (how much margin
  the measurement needs).

For contrast, each row also counts the verdicts plain wall-clock p95 (what
the gate used to read) would have given. Side by side, in one run:

    python3 -m uv run python benches/gate_stability_bench.py [--evaluations 20] [--sample 0.05]
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from dagster import AssetKey, instance_for_test

from depmesh.assets import MeshRuntime, MeshStore
from depmesh.assets.io import storage_dir
from depmesh.build import MESH_JOB, build_definitions
from depmesh.catalog import load_catalog
from depmesh.examples import DEMO_CATALOG
from depmesh.gates import evaluate as gates


def burn(stop) -> None:
    """A CPU-bound neighbour."""
    x = 0
    while not stop.is_set():
        for i in range(100_000):
            x = (x + i * i) % 1_000_003


class SpinningEstimator:
    """Every predict call burns ``ms`` of this thread's CPU time first."""

    def __init__(self, estimator, ms: float):
        self.estimator, self.ms = estimator, ms

    def predict(self, X):
        end = time.thread_time() + self.ms / 1000
        while time.thread_time() < end:
            pass
        return self.estimator.predict(X)


class WaitingEstimator:
    """Every predict call waits ``ms`` first (a slow service, not the CPU)."""

    def __init__(self, estimator, ms: float):
        self.estimator, self.ms = estimator, ms

    def predict(self, X):
        time.sleep(self.ms / 1000)
        return self.estimator.predict(X)


def trained_model(sample: float, home: Path):
    mesh = load_catalog(DEMO_CATALOG)
    selection = [AssetKey(n.split("/")) for n in ("raw/flights", "raw/weather", "raw/planes", "features/flight_weather",
                                                  "features/aircraft", "models/dep_delay")]
    with instance_for_test(temp_dir=str(home)) as instance:
        defs = build_definitions(mesh, runtime=MeshRuntime(sample_fraction=sample))
        run = defs.resolve_job_def(MESH_JOB).execute_in_process(
            instance=instance, asset_selection=selection,
            run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}})
        assert run.success
        model = MeshStore(storage_dir(instance), instance=instance).load(["models", "dep_delay"])
    return model, mesh.node("models/dep_delay").model.gates


def gate_many(model, spec, evaluations: int) -> dict:
    verdicts, own, wall, waits, wall_verdicts = [], [], [], [], []
    for _ in range(evaluations):
        result = gates.latency(model, spec)
        f = result.figures
        verdicts.append(result.passed)
        own.append(f["single_p95_ms"])
        wall.append(max(f["round_single_wall_p95_ms"]))
        waits.append(f["runqueue_wait_share"])
        wall_verdicts.append(min(f["round_single_wall_p95_ms"][:1]) <= spec.single_p95_ms
                             and f["batch_wall_p95_ms"] <= spec.batch_p95_ms)
    return {"pass": sum(verdicts), "fail": evaluations - sum(verdicts), "wall_pass": sum(wall_verdicts),
            "own_med": statistics.median(own), "own_max": max(own), "wall_med": statistics.median(wall),
            "wall_max": max(wall), "wait": statistics.median(waits)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--evaluations", type=int, default=20)
    parser.add_argument("--sample", type=float, default=0.05)
    parser.add_argument("--neighbours", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as home:
        model, spec = trained_model(args.sample, Path(home))
    alone = gates.latency(model, spec).figures
    print(f"alone: single-row p95 {alone['single_p95_ms']:.2f} ms, batch p95 {alone['batch_p95_ms']:.1f} ms "
          f"(budgets {spec.single_p95_ms:g} / {spec.batch_p95_ms:g} ms)", flush=True)
    tight = replace(spec, single_p95_ms=round(1.5 * alone["single_p95_ms"], 2),
                    batch_p95_ms=round(1.5 * alone["batch_p95_ms"], 1))
    slow_budget = replace(spec, single_p95_ms=20.0)
    scenarios = [
        ("catalog budgets, as trained", model, spec, "pass"),
        ("3x its budget by CPU work", replace(model, estimator=SpinningEstimator(model.estimator, 60)), slow_budget,
         "fail"),
        ("3x its budget by waiting", replace(model, estimator=WaitingEstimator(model.estimator, 60)), slow_budget,
         "fail"),
        ("budget 1.5x its unloaded p95", model, tight, "pass"),
    ]
    stop = multiprocessing.Event()
    neighbours = [multiprocessing.Process(target=burn, args=(stop,), daemon=True) for _ in range(args.neighbours)]
    for p in neighbours:
        p.start()
    rows = []
    try:
        time.sleep(1)
        for label, m, s, expected in scenarios:
            row = gate_many(m, s, args.evaluations)
            rows.append((label, s, expected, row))
            print(f"{label}: {row['pass']} pass / {row['fail']} fail", flush=True)
        peaks = []
        for _ in range(args.evaluations):
            result = gates.memory(model, spec)
            peaks.append((result.passed, result.figures["peak_mb"]))
    finally:
        stop.set()
        for p in neighbours:
            p.join(timeout=10)
    print(f"\n{args.neighbours} CPU-bound neighbours, {args.evaluations} evaluations per row, "
          f"{multiprocessing.cpu_count()} CPUs\n")
    print(f"{'model and budget':<32} {'single budget':>13} {'expected':>8} {'pass':>5} {'fail':>5} "
          f"{'same verdict':>12} {'p95 own med/max ms':>19} {'p95 wall med/max ms':>20} {'wait':>5} "
          f"{'wall-time pass':>14}")
    for label, s, expected, r in rows:
        same = max(r["pass"], r["fail"])
        print(f"{label:<32} {s.single_p95_ms:>13g} {expected:>8} {r['pass']:>5} {r['fail']:>5} "
              f"{same:>6}/{args.evaluations:<5} {r['own_med']:>9.1f}/{r['own_max']:<9.1f} "
              f"{r['wall_med']:>9.1f}/{r['wall_max']:<10.1f} {r['wait']:>5.0%} {r['wall_pass']:>8}/{args.evaluations}")
    verdicts = {p for p, _ in peaks}
    values = sorted({v for _, v in peaks})
    print(f"\ngate_memory: {len(peaks)} evaluations, verdicts {sorted(verdicts)}, distinct peaks (MB): {values}")


if __name__ == "__main__":
    main()

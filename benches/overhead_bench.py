"""Orchestration overhead: the full demo mesh (every asset, check and gate)
through Dagster with the in-process executor and with the multiprocess
executor (default and forkserver start methods), against the same builders
and trainers called as plain Python functions in one process. One run each,
side by side, on the same data.

    python3 -m uv run python benches/overhead_bench.py [--sample 1.0]

"plain Python" runs only the transforms and trainers (no contracts, gates,
storage or events): the difference is everything depmesh and Dagster add.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

from dagster import execute_job, instance_for_test, multiprocess_executor, reconstructable

from depmesh import graph
from depmesh.assets import MeshRuntime
from depmesh.assets.factory import NodeContext
from depmesh.build import MESH_JOB, build_definitions
from depmesh.catalog import load_catalog, resolve_entrypoint
from depmesh.examples import DEMO_CATALOG

QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def _defs():
    return build_definitions(load_catalog(DEMO_CATALOG),
                             runtime=MeshRuntime(sample_fraction=float(os.environ.get("BENCH_SAMPLE", "1"))))


def multiprocess_mesh_job():
    """Module-level so that the multiprocess executor can rebuild it in each step process."""
    return _defs().resolve_job_def(MESH_JOB).with_executor_def(multiprocess_executor)


class _Log:
    def info(self, *_):
        pass


def plain_python(sample: float) -> float:
    mesh = load_catalog(DEMO_CATALOG)
    values: dict = {}
    started = time.perf_counter()
    for name in graph.topological_order(mesh.inputs_map()):
        node = mesh.node(name)
        inputs = {i: values[i] for i in node.inputs}
        values[name] = resolve_entrypoint(node.entrypoint)(inputs, NodeContext(node, sample, _Log()))
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sample", type=float, default=1.0)
    args = parser.parse_args()
    os.environ["BENCH_SAMPLE"] = str(args.sample)
    # warm imports (GX, scikit-learn) so the first contender is not charged for them
    from depmesh.contracts.validate import _gx

    _gx()
    plain = plain_python(args.sample)
    print(f"plain Python: {plain:.1f} s", flush=True)
    rows = [("plain Python (builders only)", plain)]
    with tempfile.TemporaryDirectory() as home, instance_for_test(temp_dir=home) as instance:
        started = time.perf_counter()
        assert _defs().resolve_job_def(MESH_JOB).execute_in_process(instance=instance, run_config=QUIET).success
        rows.append(("Dagster, in-process executor", time.perf_counter() - started))
        print(f"{rows[-1][0]}: {rows[-1][1]:.1f} s", flush=True)
        for method in ("spawn", "forkserver"):
            config = {**QUIET, "execution": {"config": {"start_method": {method: {}}}}}
            started = time.perf_counter()
            result = execute_job(reconstructable(multiprocess_mesh_job), instance=instance, run_config=config)
            assert result.success, method
            rows.append((f"Dagster, multiprocess ({method})", time.perf_counter() - started))
            print(f"{rows[-1][0]}: {rows[-1][1]:.1f} s", flush=True)
    print(f"\nsample fraction {args.sample}\n")
    print(f"{'how':<34} {'wall s':>8} {'vs plain':>9} {'overhead':>9}")
    for how, seconds in rows:
        print(f"{how:<34} {seconds:>8.1f} {seconds / plain:>8.2f}x {(seconds - plain) / plain:>8.0%}")


if __name__ == "__main__":
    main()

"""Scale: catalog load and validation, Dagster definitions load, and impact
queries on synthetic meshes of 100, 1,000 and 10,000 nodes, against a plain
breadth-first search over the same adjacency as the floor.

    python3 -m uv run python benches/scale_bench.py [--sizes 100,1000,10000] [--queries 200]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from collections import deque
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from generate_mesh import generate  # noqa: E402

from depmesh import graph  # noqa: E402
from depmesh.build import build_definitions  # noqa: E402
from depmesh.catalog import load_catalog  # noqa: E402
from depmesh.impact import MeshIndex, impact, impact_table  # noqa: E402


def plain_bfs(children: dict[str, list[str]], start: str) -> set[str]:
    seen, queue = {start}, deque([start])
    while queue:
        for nxt in children[queue.popleft()]:
            if nxt not in seen:
                seen.add(nxt)
                queue.append(nxt)
    return seen - {start}


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="100,1000,10000")
    parser.add_argument("--queries", type=int, default=200)
    args = parser.parse_args()
    rows = []
    for n in [int(s) for s in args.sizes.split(",")]:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"mesh{n}.yaml"
            path.write_text(generate(n))
            started = time.perf_counter()
            mesh = load_catalog(path)
            load_s = time.perf_counter() - started
        inputs = mesh.inputs_map()
        depth = graph.longest_chain(inputs)
        started = time.perf_counter()
        defs = build_definitions(mesh)
        defs.resolve_asset_graph()
        defs.resolve_job_def("mesh_job")
        defs_s = time.perf_counter() - started
        children = graph.children_of(inputs)
        index = MeshIndex.of(mesh)
        rng = random.Random(n)
        sample = rng.sample(mesh.names, k=min(args.queries, len(mesh.names)))
        floor, down, full = [], [], []
        for name in sample:
            t = time.perf_counter()
            expected = plain_bfs(children, name)
            floor.append(time.perf_counter() - t)
            t = time.perf_counter()
            got = graph.downstream(inputs, name, children)
            down.append(time.perf_counter() - t)
            assert set(got) == expected
            t = time.perf_counter()
            report = impact(mesh, name, index)
            full.append(time.perf_counter() - t)
            assert {r.node for r in report.downstream} == expected
        t = time.perf_counter()
        impact_table(mesh)
        table_s = time.perf_counter() - t
        rows.append((n, depth, load_s, defs_s, percentiles(floor), percentiles(down), percentiles(full), table_s))
        print(f"  {n:,} nodes done", flush=True)
    print(f"\n{'nodes':>7} {'depth':>6} {'catalog s':>10} {'dagster defs s':>15} | {'BFS p50/p99 ms':>16} "
          f"{'downstream p50/p99 ms':>22} {'ratio p50':>9} | {'impact() p50/p99 ms':>20} {'ratio p50':>9} | {'all-node table s':>16}")
    for n, depth, load_s, defs_s, fl, dn, fu, table_s in rows:
        print(f"{n:>7,} {depth:>6} {load_s:>10.2f} {defs_s:>15.2f} | {fl[0] * 1e3:>7.3f}/{fl[1] * 1e3:<8.3f} "
              f"{dn[0] * 1e3:>10.3f}/{dn[1] * 1e3:<11.3f} {dn[0] / fl[0]:>8.1f}x | {fu[0] * 1e3:>9.2f}/{fu[1] * 1e3:<10.2f} "
              f"{fu[0] / fl[0]:>8.0f}x | {table_s:>16.3f}")
    print("\nimpact() is the full report (depths, owners, contracts, propagation paths, rollback set, blast radius);"
          "\ndownstream is the graph function alone; ratios are against the plain BFS floor on the same adjacency.")


if __name__ == "__main__":
    main()

"""Scale: catalog load (validated, and from the compiled-catalog cache),
`depmesh impact` end to end, Dagster definitions load with its peak memory,
and impact queries on synthetic meshes of 100, 1,000 and 10,000 nodes.

Floors, measured side by side in the same run:
- impact queries: a plain breadth-first search over the same adjacency;
- definitions: bare Dagster, the same assets (one subsettable multi-asset per
  node with as many check specs, the same inputs) with no depmesh logic, in
  a process of its own like depmesh's, so the ratio says what depmesh adds.

    python3 -m uv run python benches/scale_bench.py [--sizes 100,1000,10000] [--queries 200]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections import deque
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from generate_mesh import generate  # noqa: E402

from depmesh import graph  # noqa: E402
from depmesh.catalog import load_catalog  # noqa: E402
from depmesh.impact import MeshIndex, impact, impact_table  # noqa: E402

DEFS_CHILD = """
import json, resource, sys, time
started = time.perf_counter()
import dagster
import depmesh.build
from depmesh.catalog import load_catalog
mesh = load_catalog(sys.argv[1])
loaded = time.perf_counter()
if sys.argv[2] == "depmesh":
    from depmesh.build import build_definitions
    defs = build_definitions(mesh)
else:
    from dagster import AssetCheckSpec, AssetIn, AssetKey, AssetOut, Definitions, Output, define_asset_job, multi_asset
    from depmesh.assets.factory import check_specs
    def bare(node):
        key = AssetKey(node.key_path)
        specs = [AssetCheckSpec(s.name, asset=key, blocking=s.blocking) for s in check_specs(node, key)]
        @multi_asset(name=key.to_python_identifier(), outs={"result": AssetOut(key=key, is_required=False)},
                     ins={f"in{i}": AssetIn(key=AssetKey(n.split("/"))) for i, n in enumerate(node.inputs)},
                     check_specs=specs or None, can_subset=True)
        def _asset(context, **kwargs):
            yield Output(None, "result")
        return _asset
    defs = Definitions(assets=[bare(n) for n in mesh.nodes], jobs=[define_asset_job("mesh_job", selection="*")])
defs.resolve_asset_graph()
defs.resolve_job_def("mesh_job")
done = time.perf_counter()
print(json.dumps({"seconds": done - loaded, "with_imports": done - started,
                  "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


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


def definitions(path: Path, flavour: str, cache_dir: str) -> dict:
    env = {**os.environ, "DEPMESH_CACHE_DIR": cache_dir}
    out = subprocess.run([sys.executable, "-c", DEFS_CHILD, str(path), flavour], capture_output=True, text=True,
                         env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def cli_impact(path: Path, node: str, env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "depmesh.cli", "impact", node, "--catalog", str(path)], env=env,
                   capture_output=True, check=True)
    return time.perf_counter() - started


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
            cache_dir = str(Path(tmp) / "cache")
            os.environ["DEPMESH_CATALOG_CACHE"] = "0"
            started = time.perf_counter()
            mesh = load_catalog(path)
            load_s = time.perf_counter() - started
            os.environ["DEPMESH_CATALOG_CACHE"] = "1"
            os.environ["DEPMESH_CACHE_DIR"] = cache_dir
            load_catalog(path)  # fills the cache
            started = time.perf_counter()
            load_catalog(path)
            cached_s = time.perf_counter() - started
            node = sorted(mesh.names)[len(mesh.names) // 2]
            cold_env = {**os.environ, "DEPMESH_CATALOG_CACHE": "0"}
            warm_env = {**os.environ, "DEPMESH_CACHE_DIR": cache_dir}
            cli_cold = min(cli_impact(path, node, cold_env) for _ in range(2))
            cli_warm = min(cli_impact(path, node, warm_env) for _ in range(3))
            dm = definitions(path, "depmesh", cache_dir)
            floor = definitions(path, "bare", cache_dir)
        inputs = mesh.inputs_map()
        depth = graph.longest_chain(inputs)
        children = graph.children_of(inputs)
        index = MeshIndex.of(mesh)
        rng = random.Random(n)
        sample = rng.sample(mesh.names, k=min(args.queries, len(mesh.names)))
        bfs, full = [], []
        for name in sample:
            t = time.perf_counter()
            expected = plain_bfs(children, name)
            bfs.append(time.perf_counter() - t)
            t = time.perf_counter()
            report = impact(mesh, name, index)
            full.append(time.perf_counter() - t)
            assert {r.node for r in report.downstream} == expected
        t = time.perf_counter()
        impact_table(mesh)
        table_s = time.perf_counter() - t
        rows.append((n, depth, load_s, cached_s, cli_cold, cli_warm, dm, floor, percentiles(bfs), percentiles(full),
                     table_s))
        print(f"  {n:,} nodes done", flush=True)
    os.environ.pop("DEPMESH_CATALOG_CACHE", None)

    print(f"\n{'nodes':>7} {'depth':>5} | {'catalog s':>9} {'cached s':>8} | {'impact CLI s':>12} {'cached':>7} | "
          f"{'defs s':>7} {'bare Dagster s':>14} {'ratio':>6} {'peak MB':>8} {'bare MB':>8}")
    for n, depth, load_s, cached_s, cold, warm, dm, floor, *_ in rows:
        print(f"{n:>7,} {depth:>5} | {load_s:>9.2f} {cached_s:>8.3f} | {cold:>12.2f} {warm:>7.2f} | "
              f"{dm['seconds']:>7.2f} {floor['seconds']:>14.2f} {dm['seconds'] / floor['seconds']:>5.2f}x "
              f"{dm['peak_mb']:>8.0f} {floor['peak_mb']:>8.0f}")
    print(f"\n{'nodes':>7} | {'BFS p50/p99 ms':>16} | {'impact() p50/p99 ms':>20} | {'all-node table s':>16}")
    for n, *_, bfs, full, table_s in rows:
        print(f"{n:>7,} | {bfs[0] * 1e3:>7.3f}/{bfs[1] * 1e3:<8.3f} | {full[0] * 1e3:>9.2f}/{full[1] * 1e3:<10.2f} | "
              f"{table_s:>16.3f}")
    print("\ncatalog s: parse and validate; cached: the same catalog from the compiled-catalog cache. impact CLI: "
          "`depmesh impact NODE --catalog` as a new process (imports included), best of 2 without the cache and of "
          "3 with it. defs: Dagster definitions built and the asset graph and mesh job resolved, in a fresh process "
          "(catalog from the cache, imports excluded); bare Dagster: the same assets and check specs with no depmesh "
          "logic. impact() is the full report (depths, owners, contracts, propagation paths, rollback set, blast "
          "radius); BFS the plain reach floor on the same adjacency.")


if __name__ == "__main__":
    main()

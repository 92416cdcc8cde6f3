"""Online serving, measured side by side in one run (depmesh serve on loopback):

- p50/p99 of one row and of 100 rows through HTTP beside the same loaded model called in-process (the request
  check and the predictor the server runs), and what HTTP adds;
- requests per second at 1 and 2 workers (single-row requests from client threads on this machine);
- the swap moment: the p99 of requests answered within half a second of a promotion or rollback beside the
  steady p99 (targets: HTTP adds at most 2 ms at p50 for one row; single-row p99 under 15 ms for
  models/arr_delay; the swap window's p99 at most 2x the steady p99).

    uv run python benches/serve_bench.py [--home HOME] [--model models/arr_delay] [--seconds 8]

Without --home it builds one: the sampled demo mesh, release 1 promoted, a second release trained (the swap
part alternates between them). Targets are read, not asserted: this machine is shared and noisy.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from depmesh_tests.online_server import Server  # noqa: E402


def percentiles(seconds: list[float]) -> tuple[float, float]:
    ordered = sorted(seconds)
    return (ordered[len(ordered) // 2] * 1e3, ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1e3)


def build_home(root: Path) -> tuple[Path, int, int]:
    from dagster import instance_for_test

    from depmesh.catalog import load_catalog
    from depmesh.examples import DEMO_CATALOG
    from depmesh_tests.conftest import materialize_mesh
    from depmesh_tests.test_rollout import train_candidate

    home = root / "home"
    home.mkdir()
    mesh = load_catalog(DEMO_CATALOG)
    print("building a sampled mesh and two releases (about two minutes) ...", file=sys.stderr, flush=True)
    with instance_for_test(temp_dir=str(home)) as instance:
        result = materialize_mesh(mesh, instance)
        assert result.success
        first = next(e for e in result.get_asset_materialization_events()
                     if e.asset_key.path == ["releases", "flights"]).materialization.metadata["release_id"].value
        flip(home, first)
        second = train_candidate(mesh, instance, {"models/dep_delay": {"max_iter": 151}})
    return home, first, second


def registry_of(home: Path):
    from depmesh.artifacts import ArtifactStore
    from depmesh.assets.io import artifacts_dir
    from depmesh.catalog import load_catalog
    from depmesh.examples import DEMO_CATALOG
    from depmesh.governance import open_governed
    from depmesh.registry.store import default_url

    return open_governed(default_url(home), load_catalog(DEMO_CATALOG), ArtifactStore(artifacts_dir(home)))


def flip(home: Path, to: int | None) -> None:
    """Promote ``to`` (approved by the demo teams' owners), or roll back when ``to`` is None."""
    from depmesh_tests.conftest import approve_release

    registry = registry_of(home)
    try:
        if to is None:
            registry.rollback(actor="jun", reason="serve bench")
        else:
            approve_release(home, to)
            registry.promote(to, actor="eli", reason="serve bench")
    finally:
        registry.dispose()


def rows_for(home: Path, node: str, n: int) -> list[dict]:
    """``n`` request records taken from the scoring rows of the stored features."""
    import pandas as pd
    from dagster import DagsterInstance

    from depmesh.assets.io import MeshStore, storage_dir
    from depmesh.examples.flights.transforms import model_frame

    instance = DagsterInstance.from_config(str(home))
    try:
        store = MeshStore(storage_dir(instance), instance=instance)
        inputs = {name: store.load(name.split("/"), instance) for name in
                  ("features/flight_weather", "features/aircraft", "features/route_stats")}
    finally:
        instance.dispose()
    registry = registry_of(home)
    try:
        from depmesh.online.served import Loader, from_registry

        served = from_registry(registry, Loader())
    finally:
        registry.dispose()
    model = served.models[node]
    frame = model_frame(inputs).tail(n)
    records = [{k: (None if pd.isna(v) else (v.item() if hasattr(v, "item") else v)) for k, v in r.items()}
               for r in frame[model.schema.names].to_dict("records")]
    return records, model


def in_process(model, records: list[dict], rounds: int) -> list[float]:
    from depmesh.online.requests import check

    columns = {k: [r[k] for r in records] for k in records[0]}
    timings = []
    for i in range(rounds + 5):
        started = time.perf_counter()
        checked = check(model.schema, columns, model.dtypes)
        model.predictor.answer(checked.columns, checked.dtypes)
        if i >= 5:
            timings.append(time.perf_counter() - started)
    return timings


def over_http(server: Server, node: str, records: list[dict], rounds: int) -> list[float]:
    client, timings = server.client(), []
    for i in range(rounds + 5):
        started = time.perf_counter()
        status, body = client.predict(node, records)
        assert status == 200, body
        if i >= 5:
            timings.append(time.perf_counter() - started)
    client.close()
    return timings


def throughput(server: Server, node: str, record: dict, seconds: float, clients: int = 4) -> float:
    done, stop = [0] * clients, threading.Event()

    def run(i: int) -> None:
        client = server.client()
        while not stop.is_set():
            status, _ = client.predict(node, [record])
            done[i] += status == 200

    threads = [threading.Thread(target=run, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join()
    return sum(done) / seconds


def swap_spike(server: Server, home: Path, node: str, record: dict, releases: tuple[int, int],
               flips: int) -> tuple[list[float], list[float]]:
    """Latencies of single-row requests away from any swap and within 0.5 s of one."""
    samples, stop, moments = [], threading.Event(), []

    def run() -> None:
        client = server.client()
        while not stop.is_set():
            started = time.perf_counter()
            status, _ = client.predict(node, [record])
            samples.append((started, time.perf_counter() - started, status))

    thread = threading.Thread(target=run)
    thread.start()
    try:
        time.sleep(3)
        client = server.client()
        for i in range(flips):
            target = None if i % 2 else releases[1]
            flip(home, target)
            moments.append(time.perf_counter())
            want = releases[0] if i % 2 else releases[1]
            while client.get("/v1/release")[1]["release"] != want:
                time.sleep(0.01)
            time.sleep(1.5)
    finally:
        stop.set()
        thread.join()
    assert all(status == 200 for _, _, status in samples)
    near = [s for at, s, _ in samples if any(abs(at - m) <= 0.5 or 0 <= at - m <= 1.0 for m in moments)]
    steady = [s for at, s, _ in samples if all(abs(at - m) > 1.0 for m in moments)]
    return steady, near


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", type=Path, help="an instance with a Production release (and --second)")
    parser.add_argument("--second", type=int, help="with --home: another release to swap with")
    parser.add_argument("--model", default="models/arr_delay")
    parser.add_argument("--rounds", type=int, default=400)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--flips", type=int, default=10)
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="depmesh-serve-bench-"))
    try:
        if args.home:
            home, second = args.home, args.second
            registry = registry_of(home)
            first = registry.state()["production_release_id"]
            registry.dispose()
        else:
            home, first, second = build_home(scratch)
        records, model = rows_for(home, args.model, 100)
        env = {"DAGSTER_HOME": str(home)}
        table = []
        with_server(home, env, 1, lambda server: table.extend(measure(server, model, args, records, first, second,
                                                                       home)))
        rps2 = []
        with_server(home, env, 2, lambda server: rps2.append(throughput(server, args.model, records[0],
                                                                        args.seconds)))
        print_table(table, rps2[0])
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def with_server(home: Path, env: dict, workers: int, use) -> None:
    server = Server("--home", str(home), "--workers", str(workers), "--poll", "0.1", env=env)
    try:
        server.wait_ready()
        use(server)
    finally:
        server.stop()


def measure(server: Server, model, args, records: list[dict], first: int, second: int | None, home: Path) -> list:
    print("measuring latency in-process and over HTTP ...", file=sys.stderr, flush=True)
    out = []
    for n in (1, 100):
        rounds = args.rounds if n == 1 else max(50, args.rounds // 4)
        local = percentiles(in_process(model, records[:n], rounds))
        http = percentiles(over_http(server, args.model, records[:n], rounds))
        out.append((f"{n} row(s)", local, http))
    out.append(("rps, 1 worker", throughput(server, args.model, records[0], args.seconds)))
    if second is not None:
        print(f"swapping {args.flips} times under traffic ...", file=sys.stderr, flush=True)
        over_http(server, args.model, records[:1], 5)
        steady, near = swap_spike(server, home, args.model, records[0], (first, second), args.flips)
        out.append(("swap", percentiles(steady), percentiles(near), max(near) * 1e3, len(near)))
    return out


def print_table(rows: list, rps2: float) -> None:
    from tabulate import tabulate

    lines = []
    for row in rows:
        if row[0].endswith("row(s)"):
            _, (lp50, lp99), (hp50, hp99) = row
            lines.append([row[0], f"{lp50:.2f}", f"{lp99:.2f}", f"{hp50:.2f}", f"{hp99:.2f}",
                          f"{hp50 - lp50:+.2f} ms", f"{hp50 / lp50:.2f}x"])
    print(tabulate(lines, headers=["rows", "in-process p50 ms", "p99 ms", "HTTP p50 ms", "p99 ms",
                                   "HTTP adds at p50", "HTTP / in-process"]))
    rps1 = next(r[1] for r in rows if r[0] == "rps, 1 worker")
    print()
    print(tabulate([["1", f"{rps1:.0f}", "1.00x"], ["2", f"{rps2:.0f}", f"{rps2 / rps1:.2f}x"]],
                   headers=["workers", "requests/s (1 row)", "vs 1 worker"]))
    swap = next((r for r in rows if r[0] == "swap"), None)
    if swap is not None:
        _, (sp50, sp99), (np50, np99), worst, count = swap
        print()
        print(tabulate([["steady", f"{sp50:.2f}", f"{sp99:.2f}", "", "1.00x"],
                        [f"within a swap ({count} requests)", f"{np50:.2f}", f"{np99:.2f}", f"{worst:.2f}",
                         f"{np99 / sp99:.2f}x"]],
                       headers=["single-row requests", "p50 ms", "p99 ms", "max ms", "p99 vs steady"]))


if __name__ == "__main__":
    main()

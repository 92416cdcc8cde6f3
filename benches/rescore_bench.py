"""How long from `depmesh release rollback` returning to the consumers holding the restored versions?

On the embedded instance (SQLite) with a real `dagster-daemon` (as `depmesh dev` runs it): the demo mesh is
built on a sample, release 1 promoted, a retrain with one parameter changed records release 2, which is
promoted; then, in rounds, release 2 is rolled back (and promoted again) on the command line, and the clock
runs until every scores table holds the versions the registry now serves and the consumer was built after
them. Each round splits the time into: waiting for the serve_production sensor's tick, the run in the queue
and starting (a new process that loads the code location), and the re-score run itself.

    python3 -m uv run python benches/rescore_bench.py [--rounds 3] [--sample 0.2]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SCORES = ("scores/dep_delay", "scores/arr_delay", "scores/late_arrival")


def cli(env: dict[str, str], *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "depmesh.cli", *args], env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=900)
    if done.returncode != 0:
        raise SystemExit(f"depmesh {' '.join(args)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    return done.stdout


def served_now(instance, registry, mesh) -> bool:
    """Every scores table holds the registry's Production versions, and the consumer was built after them."""
    from depmesh.rollout.production import served_record

    production = registry.production()
    stamps = []
    for node in SCORES:
        record = served_record(instance, node)
        model = f"models/{node.split('/')[1]}"
        if record is None or record.get("mode") != "production" or record["versions"].get(model) != production[model]:
            return False
        stamps.append(instance.get_latest_materialization_event(_key(node)).timestamp)
    consumer = instance.get_latest_materialization_event(_key("consumers/ops_report"))
    return consumer is not None and consumer.timestamp >= max(stamps)


def _key(name: str):
    from dagster import AssetKey

    return AssetKey(name.split("/"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sample", type=float, default=0.2)
    args = parser.parse_args()

    from dagster import DagsterInstance

    from depmesh.automation.routing import instance_registry
    from depmesh.catalog import load_catalog
    from depmesh.examples import DEMO_CATALOG
    from depmesh.instance import EMBEDDED_CONFIG
    from depmesh.keys import RESCORE_TAG
    from depmesh.runs import run_mesh

    work = Path(tempfile.mkdtemp(prefix="depmesh-rescore-bench-"))
    home = work / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text(EMBEDDED_CONFIG)
    catalog = work / "flights.yaml"  # the demo catalog without its teams.yaml: promotions need no approval here
    catalog.write_text(Path(DEMO_CATALOG).read_text())
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DEPMESH_", "DAGSTER_"))}
    env.update(DAGSTER_HOME=str(home), DEPMESH_CATALOG=str(catalog), DEPMESH_ACTOR="bench")
    os.environ.update(DAGSTER_HOME=str(home))
    mesh = load_catalog(catalog)
    instance = DagsterInstance.from_config(str(home))
    daemon = None
    try:
        print(f"building the demo mesh on a {args.sample:g} sample ...", flush=True)
        assert run_mesh(catalog, instance, sample=args.sample, mesh=mesh).ok
        registry = instance_registry(mesh, instance)
        cli(env, "release", "promote", "1", "--reason", "bench", "--catalog", str(catalog), "--home", str(home),
            "--rescore")
        changed = {"depmesh/params": json.dumps({"models/dep_delay": {"learning_rate": 0.12}})}
        assert run_mesh(catalog, instance, sample=args.sample, mesh=mesh, tags=changed).ok
        release2 = registry.releases()[-1]["id"]
        cli(env, "release", "promote", str(release2), "--reason", "bench", "--catalog", str(catalog), "--home",
            str(home), "--rescore")
        print("starting dagster-daemon ...", flush=True)
        daemon = subprocess.Popen([sys.executable, "-m", "dagster._daemon", "run", "-m", "depmesh.definitions"],
                                  env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                  start_new_session=True)
        rows = []
        for round_ in range(args.rounds):
            for action in ("rollback", "promote"):
                before = {r.run_id for r in instance.get_runs()}
                if action == "rollback":
                    cli(env, "release", "rollback", "--reason", "bench", "--catalog", str(catalog), "--home", str(home))
                else:
                    cli(env, "release", "promote", str(release2), "--reason", "bench", "--catalog", str(catalog),
                        "--home", str(home))
                returned = time.time()
                deadline = returned + 600
                while not served_now(instance, registry, mesh):
                    if time.time() > deadline:
                        raise SystemExit(f"round {round_ + 1} {action}: not served after 600 s")
                    time.sleep(0.25)
                served = time.time()
                runs = [r for r in instance.get_run_records() if r.dagster_run.run_id not in before
                        and RESCORE_TAG in r.dagster_run.tags]
                run = runs[-1]
                created = run.create_timestamp.timestamp()
                started = run.start_time or created
                rows.append({"round": round_ + 1, "after": action, "total_s": served - returned,
                             "until_requested_s": created - returned, "queue_and_launch_s": started - created,
                             "run_s": served - started, "runs": len(runs)})
                r = rows[-1]
                print(f"round {r['round']} {action:8}: served after {r['total_s']:.1f} s (sensor {r['until_requested_s']:.1f}"
                      f" s, queue+launch {r['queue_and_launch_s']:.1f} s, run {r['run_s']:.1f} s)", flush=True)
        print()
        print(f"{'after':10} {'total s':>8} {'sensor s':>9} {'queue+launch s':>15} {'run s':>7}  (median of {args.rounds})")
        for action in ("rollback", "promote"):
            mine = [r for r in rows if r["after"] == action]
            med = {k: statistics.median(r[k] for r in mine) for k in
                   ("total_s", "until_requested_s", "queue_and_launch_s", "run_s")}
            print(f"{action:10} {med['total_s']:8.1f} {med['until_requested_s']:9.1f} "
                  f"{med['queue_and_launch_s']:15.1f} {med['run_s']:7.1f}")
        worst = max(r["total_s"] for r in rows)
        print(f"\nworst of {len(rows)}: {worst:.1f} s (target: under 60 s); "
              f"share of the sensor's wait: {statistics.mean(r['until_requested_s'] / r['total_s'] for r in rows):.0%}")
    finally:
        if daemon is not None:
            os.killpg(daemon.pid, signal.SIGTERM)
            daemon.wait(timeout=60)
        instance.dispose()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

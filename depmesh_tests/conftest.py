"""Shared fixtures: the demo mesh, real Dagster instances, a real PostgreSQL database.

PostgreSQL tests read DEPMESH_TEST_POSTGRES_URL (for example
postgresql://postgres@127.0.0.1:5432/test). Outside CI they skip with that
message when it is not set; with CI=true a missing server fails the run.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from depmesh.catalog import MeshSpec, load_catalog
from depmesh.examples import DEMO_CATALOG
from depmesh_tests import seaweed as seaweed_module
from depmesh_tests.seaweed import S3_KEY, S3_SECRET  # noqa: F401 - tests import them from here

POSTGRES_VAR = "DEPMESH_TEST_POSTGRES_URL"
REDIS_VAR = "DEPMESH_TEST_REDIS_URL"
POSTGRES_CTL_VAR = "DEPMESH_TEST_POSTGRES_CTL"  # a command that takes stop/start, e.g. "pg_ctlcluster 15 main"
REPO = Path(__file__).resolve().parent.parent
SAMPLE = 0.2  # tests run the real mesh on every 5th flight (about 67k rows): enough for every model to pass its gates


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(scope="session")
def demo_mesh() -> MeshSpec:
    return load_catalog(DEMO_CATALOG)


@dataclass(frozen=True)
class Golden:
    """One full materialization of the demo mesh, made once per test session."""

    home: Path
    run_id: str
    built: frozenset[str]
    release_id: int


@pytest.fixture(scope="session")
def golden(demo_mesh, tmp_path_factory) -> Golden:
    from dagster import instance_for_test

    home = tmp_path_factory.mktemp("golden_home")
    with instance_for_test(temp_dir=str(home)) as instance:
        result = materialize_mesh(demo_mesh, instance)
        assert result.success
        events = result.get_asset_materialization_events()
        release = next(e for e in events if e.asset_key.path == ["releases", "flights"])
        return Golden(home, result.run_id, frozenset("/".join(e.asset_key.path) for e in events),
                      release.materialization.metadata["release_id"].value)


@contextlib.contextmanager
def copy_of(golden: Golden, target: Path):
    """A SQLite instance holding exactly the golden run's state (runs, events,
    stored tables and models, registry), to change freely."""
    from dagster import instance_for_test

    shutil.copytree(golden.home, target)
    with instance_for_test(temp_dir=str(target)) as instance:
        yield instance


@pytest.fixture
def golden_home(golden, tmp_path) -> Path:
    """A copy of the golden instance's folder (registry, tables, snapshots, artifacts) to break things in."""
    path = tmp_path / "home"
    with copy_of(golden, path):
        pass
    return path


def materialize_mesh(mesh: MeshSpec, instance, sample: float = SAMPLE, selection=None, tags=None):
    """Run the mesh job (or a selection of it) on ``instance``; returns the result."""
    from depmesh.assets import MeshRuntime
    from depmesh.build import MESH_JOB, build_definitions

    defs = build_definitions(mesh, runtime=MeshRuntime(sample_fraction=sample))
    job = defs.resolve_job_def(MESH_JOB)
    return job.execute_in_process(
        instance=instance, raise_on_error=False, asset_selection=selection, tags=tags or {}
    )


@pytest.fixture(scope="session")
def postgres_server_url() -> str:
    url = os.environ.get(POSTGRES_VAR)
    if not url:
        _unavailable(f"set {POSTGRES_VAR}=postgresql://postgres@127.0.0.1:5432/test to run the PostgreSQL tests")
    import sqlalchemy as sa

    try:
        with sa.create_engine(url).connect() as conn:
            conn.execute(sa.text("select 1"))
    except Exception as exc:  # noqa: BLE001
        _unavailable(f"PostgreSQL at {POSTGRES_VAR}={url} is unreachable: {exc}")
    return url


def _unavailable(message: str) -> None:
    if in_ci():
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The Redis server the Celery tests use as broker and result backend."""
    url = os.environ.get(REDIS_VAR)
    if not url:
        _unavailable(f"set {REDIS_VAR}=redis://127.0.0.1:6379/0 to run the Celery tests")
    import redis

    try:
        redis.Redis.from_url(url, socket_connect_timeout=3).ping()
    except Exception as exc:  # noqa: BLE001
        _unavailable(f"Redis at {REDIS_VAR}={url} is unreachable: {exc}")
    return url


@pytest.fixture(scope="session")
def postgres_ctl(postgres_server_url) -> str:
    """How to stop and start the PostgreSQL server (the restart fault test)."""
    ctl = os.environ.get(POSTGRES_CTL_VAR)
    if not ctl:
        _unavailable(f"set {POSTGRES_CTL_VAR} to a command that takes stop/start for the server at "
                     f"{POSTGRES_VAR}, e.g. 'pg_ctlcluster --skip-systemctl-redirect 15 main'")
    return ctl


def team_env(home: Path, database_url: str, **extra: str) -> dict[str, str]:
    """The environment of a process on a PostgreSQL-backed team instance at ``home``."""
    home.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(REPO / "dagster.yaml", home / "dagster.yaml")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DEPMESH_", "DAGSTER_"))}
    return {**env, "DAGSTER_HOME": str(home), "DAGSTER_POSTGRES_URL": database_url,
            "DAGSTER_EVENT_BATCH_SIZE": "100", **extra}


@contextlib.contextmanager
def team_instance(env: dict[str, str]):
    """The DagsterInstance a process with ``env`` (see team_env) uses."""
    from dagster import DagsterInstance

    old = os.environ.get("DAGSTER_POSTGRES_URL")
    os.environ["DAGSTER_POSTGRES_URL"] = env["DAGSTER_POSTGRES_URL"]
    instance = DagsterInstance.from_config(env["DAGSTER_HOME"])
    try:
        yield instance
    finally:
        instance.dispose()
        if old is None:
            os.environ.pop("DAGSTER_POSTGRES_URL", None)
        else:
            os.environ["DAGSTER_POSTGRES_URL"] = old


def stop_process_group(proc) -> None:
    """SIGTERM a process started with start_new_session=True and its children; SIGKILL after 30 s."""
    import signal
    import subprocess

    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def depmesh_cli(*args: str) -> list[str]:
    import sys

    return [sys.executable, "-m", "depmesh.cli", *args]


@contextlib.contextmanager
def fresh_database(server_url: str):
    """A new, empty database on the server; dropped afterwards."""
    import sqlalchemy as sa
    from sqlalchemy.engine import make_url

    name = f"depmesh_test_{uuid.uuid4().hex[:10]}"
    # a new connection each time: a test may restart the server in between
    admin = sa.create_engine(server_url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(server_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                 "WHERE datname = :n AND pid <> pg_backend_pid()"), {"n": name})
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}"'))
        admin.dispose()


@pytest.fixture(scope="session")
def postgres_url(postgres_server_url: str):
    """A fresh database for this test session's Dagster instance."""
    with fresh_database(postgres_server_url) as url:
        yield url


@pytest.fixture
def write_catalog(tmp_path: Path):
    """Write catalog text to a file named ``name`` and return its path."""

    def _write(text: str, name: str = "mesh.yaml") -> Path:
        path = tmp_path / name
        path.write_text(text)
        return path

    return _write


def approve_release(home: Path | str, release_id: int, catalog: Path | str = DEMO_CATALOG) -> int:
    """An approved promotion request for ``release_id``, as the mesh's declared teams would give it: asked by a
    member (gus), approved by an owner of each team that must approve. Returns the request's id."""
    from depmesh.assets.registry_resource import open_registry
    from depmesh.governance.approvals import decide, get_request, request_promotion
    from depmesh.registry.store import default_url
    from depmesh.teams import load_teams

    mesh = load_catalog(catalog)
    teams = load_teams(mesh)
    registry = open_registry(default_url(Path(home)), mesh.name)
    try:
        request = request_promotion(registry, mesh, teams, release_id, actor="gus", reason="tests go live")
        while request["status"] == "pending":
            waiting = request["waiting_for"][0]
            decide(registry, teams, request["id"], actor=waiting["owners"][0], reason="looks right", approve=True)
            request = get_request(registry, request["id"])
        assert request["status"] == "approved", request
        return request["id"]
    finally:
        registry.dispose()


class WebhookReceiver:
    """A local HTTP receiver on 127.0.0.1 that records every POST; ``fail_next`` answers that many with 500."""

    def __init__(self):
        import json
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.received: list[dict] = []
        self.paths: list[str] = []
        self.fail_next = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - the http.server name
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if receiver.fail_next > 0:
                    receiver.fail_next -= 1
                    self.send_response(500)
                    self.end_headers()
                    return
                receiver.received.append(json.loads(body))
                receiver.paths.append(self.path)
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):  # quiet
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/{path.lstrip('/')}"

    def to(self, path: str) -> list[dict]:
        return [body for body, p in zip(self.received, self.paths) if p == "/" + path.lstrip("/")]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


FLIGHTS_TEAMS = ("ingestion", "features", "delay-models", "customer-ops", "airport-operations", "network-planning")


@pytest.fixture
def webhooks(monkeypatch):
    """A receiver, with every flights team's webhook variable pointing at its own path on it."""
    receiver = WebhookReceiver()
    for team in FLIGHTS_TEAMS:
        monkeypatch.setenv(f"DEPMESH_WEBHOOK_{team.upper().replace('-', '_')}", receiver.url(team))
    yield receiver
    receiver.close()


CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory) -> Path:
    folder = Path(os.environ.get("DEPMESH_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    print(f"\nUI screenshots: {folder}")
    return folder


@pytest.fixture(scope="module")
def browser():
    """Debian's chromium driven by Playwright (nothing downloads a browser); in CI a missing one fails."""
    if not Path(CHROMIUM).exists():
        message = "Debian's chromium is not installed (.ci/run installs it)"
        if in_ci():
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield chromium
        finally:
            chromium.close()


# -- an S3-compatible object store: SeaweedFS, started by the tests ---------------------------


class SeaweedServer(seaweed_module.SeaweedServer):
    """depmesh_tests.seaweed's server, reporting trouble as a test failure (or a skip outside CI)."""

    def __init__(self, folder: Path):
        try:
            super().__init__(folder)
        except seaweed_module.SeaweedUnavailable as exc:
            _unavailable(str(exc))

    def start(self, timeout: float = 90) -> None:
        try:
            super().start(timeout)
        except seaweed_module.SeaweedUnavailable as exc:
            pytest.fail(str(exc))


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory):
    server = SeaweedServer(tmp_path_factory.mktemp("seaweedfs"))
    server.start()
    yield server
    server.stop()

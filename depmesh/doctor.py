"""`depmesh doctor`: check a deployment and say what was found.

Read-only: it creates nothing, migrates nothing and starts nothing. Each
check gives one finding (ok / warn / fail) with what it saw and, for a
problem, the command that fixes it. Any ``fail`` makes the command exit 1.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

OK, WARN, FAIL = "ok", "warn", "fail"
CONNECT_TIMEOUT_S = 5


@dataclass(frozen=True)
class Finding:
    status: str
    area: str
    message: str
    fix: str = ""

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def _safe(url: str) -> str:
    from depmesh.redact import shown_url

    return shown_url(url)


def _masked(text: str, url: str) -> str:
    from depmesh.redact import mask_credentials

    return mask_credentials(text, url)


def _url_problem(url: str, where: str) -> str | None:
    """What makes ``url`` unusable as a database URL, said without quoting it (it may hold a password)."""
    if "://" not in url:
        return (f"{where} is not a URL (a keyword DSN such as 'host=... user=... password=...' is not accepted): "
                "give postgresql://USER:PASSWORD@HOST:5432/DB")
    netloc = url.split("://", 1)[1].split("/", 1)[0]
    if netloc.count("@") > 1:
        return (f"{where}: the user part holds an unencoded '@' (a password with '@' must be percent-encoded "
                "as %40; likewise ':' as %3A and '/' as %2F)")
    return None


def _value(field: Any) -> str | None:
    """A dagster.yaml value: a literal or {env: NAME}."""
    if isinstance(field, dict) and "env" in field:
        return os.environ.get(str(field["env"]))
    return None if field is None else str(field)


def _postgres_url(config: dict[str, Any]) -> tuple[str | None, str | None]:
    """(url, problem) of the PostgreSQL storage a dagster.yaml asks for; (None, None) when it asks for none."""
    pg = (config.get("storage") or {}).get("postgres")
    if pg is None:
        return None, None
    if "postgres_url" in pg:
        field = pg["postgres_url"]
        url = _value(field)
        if not url:
            name = field.get("env") if isinstance(field, dict) else "postgres_url"
            return None, f"dagster.yaml takes the PostgreSQL URL from {name}, which is not set"
        return url, None
    db = pg.get("postgres_db") or {}
    parts = {k: _value(db.get(k)) for k in ("username", "password", "hostname", "db_name", "port")}
    missing = [k for k in ("username", "hostname", "db_name") if not parts[k]]
    if missing:
        return None, f"dagster.yaml's postgres_db lacks {', '.join(missing)} (or their environment variables are unset)"
    from sqlalchemy.engine import URL

    try:
        port = int(parts["port"] or 5432)
    except ValueError:
        return None, f"dagster.yaml's postgres_db port {parts['port']!r} is not a number"
    # URL.create quotes each part: a password with @, / or : stays one password
    url = URL.create("postgresql", username=parts["username"], password=parts["password"] or None,
                     host=parts["hostname"], port=port, database=parts["db_name"])
    return url.render_as_string(hide_password=False), None


def _probe(url: str) -> str | None:
    """None when a connection opens within the timeout, else the error's first line."""
    import sqlalchemy as sa

    problem = _url_problem(url, "the database URL")
    if problem:
        return problem
    kwargs: dict[str, Any] = {}
    if url.startswith("postgresql"):
        kwargs["connect_args"] = {"connect_timeout": CONNECT_TIMEOUT_S}
    try:
        engine = sa.create_engine(url, **kwargs)
    except Exception as exc:  # noqa: BLE001 - a URL SQLAlchemy cannot use is the finding (never quoted whole)
        return _masked(f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}", url)
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("select 1"))
        return None
    except Exception as exc:  # noqa: BLE001 - any failure to connect is the finding
        text = _masked(str(getattr(exc, "orig", None) or exc).strip(), url)
        return text.splitlines()[0] if text else type(exc).__name__
    finally:
        engine.dispose()


def _missing_storage(home: Path, url: str | None) -> str | None:
    """Why the instance's storage is not there yet (opening it would create it), or None."""
    import sqlalchemy as sa

    if url:
        engine = sa.create_engine(url, connect_args={"connect_timeout": CONNECT_TIMEOUT_S})
        try:
            tables = set(sa.inspect(engine).get_table_names())
        finally:
            engine.dispose()
        if not {"runs", "event_logs"} <= tables:
            return f"PostgreSQL at {_safe(url)} has no Dagster tables yet"
        return None
    if not (home / "history" / "runs.db").exists():
        return f"no Dagster run storage yet under {home} (history/runs.db)"
    return None


def check_instance(home: Path) -> tuple[list[Finding], Any]:
    """Findings about the Dagster instance at ``home``, and the instance (None if it cannot be opened)."""
    import yaml

    config_path = home / "dagster.yaml"
    if not config_path.exists():
        return [Finding(FAIL, "instance", f"no dagster.yaml in {home}",
                        "run `depmesh run` once, or set DAGSTER_HOME to the deployment's instance folder")], None
    config = yaml.safe_load(config_path.read_text()) or {}
    url, problem = _postgres_url(config)
    if problem:
        return [Finding(FAIL, "instance storage", problem, "export DAGSTER_POSTGRES_URL=postgresql://USER:PASSWORD@HOST:5432/DB")], None
    if url:
        error = _probe(url)
        if error:
            return [Finding(FAIL, "instance storage", f"PostgreSQL at {_safe(url)} is unreachable: {error}",
                            "start the server or fix DAGSTER_POSTGRES_URL")], None
    missing = _missing_storage(home, url)
    if missing:  # opening the instance would create Dagster's tables: doctor changes nothing, ever
        return [Finding(WARN, "instance storage", missing, "`depmesh run` (or `dagster instance migrate`) "
                                                           "creates them")], None
    from dagster import DagsterInstance

    try:
        instance = DagsterInstance.from_config(str(home))
    except Exception as exc:  # noqa: BLE001 - a config Dagster refuses is the finding
        return [Finding(FAIL, "instance", f"Dagster cannot open the instance at {home}: "
                        f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
                        f"fix {config_path}")], None
    findings = []
    where = _safe(url) if url else str(home)
    for label, storage in (("run storage", instance.run_storage), ("event log", instance.event_log_storage),
                           ("schedule storage", instance.schedule_storage)):
        kind = type(storage).__name__
        try:
            current, head = storage.alembic_version()
        except Exception as exc:  # noqa: BLE001
            findings.append(Finding(FAIL, label, f"{kind} at {where}: cannot read its schema version: {exc}"))
            continue
        heads = head if isinstance(head, tuple) else (head,)
        if current in heads:
            findings.append(Finding(OK, label, f"{kind} at {where}, schema at revision {current} (current)"))
        else:
            findings.append(Finding(FAIL, label, f"{kind} at {where}: schema behind, at revision {current}, "
                                    f"this Dagster needs {head}", "dagster instance migrate"))
    return findings, instance


def _chain_finding(registry: Any) -> Finding:
    from depmesh.registry.chain import verify

    with registry.engine.connect() as conn:
        state = verify(conn, registry.mesh)
    rows = ", ".join(f"{c} {h['rows']} rows" for c, h in state["heads"].items())
    if state["ok"]:
        return Finding(OK, "audit trail", f"mesh {registry.mesh}: the hash chain verifies ({rows}); keep its head "
                                          f"elsewhere: depmesh audit head --notify")
    return Finding(FAIL, "audit trail", f"mesh {registry.mesh}: the hash chain is broken: "
                   + "; ".join(state["problems"][:5]) + (" ..." if len(state["problems"]) > 5 else ""),
                   "restore the registry database from a backup; depmesh audit verify lists every broken row")


def check_registry(home: Path) -> list[Finding]:
    from depmesh.registry.store import Registry, default_url

    url = default_url(home)
    where = _safe(url)
    if url.startswith("sqlite") and not Path(url.removeprefix("sqlite:///")).exists():
        return [Finding(WARN, "registry", f"no registry database yet at {where}",
                        "the first run creates it; or `depmesh registry migrate`")]
    error = _probe(url)
    if error:
        return [Finding(FAIL, "registry", f"registry database at {where} is unreachable: {error}")]
    from depmesh.artifacts import ArtifactStore
    from depmesh.assets.io import artifacts_dir
    from depmesh.storage import StorageConfigError

    try:
        artifacts = ArtifactStore(artifacts_dir(home))
    except StorageConfigError:  # the storage finding names it; the artifacts cannot be checked meanwhile
        artifacts = None
    registry = Registry(url, artifacts=artifacts)
    try:
        current, head = registry.schema_revision(), Registry.head_revision()
        if current is None:
            return [Finding(WARN, "registry", f"registry database at {where} has no depmesh tables yet (head is {head})",
                            "the first run creates them; or `depmesh registry migrate`")]
        if current != head:
            return [Finding(FAIL, "registry", f"registry at {where}: migration level {current}, this depmesh needs {head}",
                            "depmesh registry migrate")]
        meshes = registry.meshes()
        findings = [Finding(OK, "registry", f"{where} at migration {current} (current): "
                            + (", ".join(f"mesh {m}: {registry.for_mesh(m).release_count()} release(s)" for m in meshes)
                               or "no mesh has recorded anything yet"))]
        for mesh in meshes:
            view = registry.for_mesh(mesh)
            production = view.production()
            problems = view.artifact_problems(production) if artifacts is not None else []
            if artifacts is None:
                findings.append(Finding(WARN, "artifacts", f"mesh {mesh}: not checked (the storage is not usable: "
                                        "see the storage finding)"))
            elif problems:
                findings.append(Finding(FAIL, "artifacts", f"mesh {mesh}: Production artifacts that fail verification: "
                                        + "; ".join(problems), "rebuild those versions, or roll back"))
            elif production:
                findings.append(Finding(OK, "artifacts", f"mesh {mesh}: the {len(production)} Production artifact(s) "
                                        "exist, match their recorded hashes and hold their recorded versions"))
            findings.append(_chain_finding(view))
        return findings
    finally:
        registry.dispose()


def check_run_settings(instance) -> list[Finding]:
    from depmesh.keys import TRAINING_POOL

    findings = []
    coordinator = type(instance.run_coordinator).__name__
    queue = instance.get_concurrency_config().run_queue_config
    if coordinator == "QueuedRunCoordinator":
        limit = queue.max_concurrent_runs if queue else "?"
        findings.append(Finding(OK, "run queue", f"QueuedRunCoordinator, at most {limit} runs in progress"))
    else:
        findings.append(Finding(WARN, "run queue", f"{coordinator}: runs from the UI, schedules and sensors start at "
                                "once, without a queue or a run limit", "use the repository's dagster.yaml"))
    pool = instance.event_log_storage.get_concurrency_info(TRAINING_POOL)
    if pool.limit is None:
        findings.append(Finding(WARN, "training pool", f"no limit on pool {TRAINING_POOL}: every model in every run may "
                                "train at once", f"dagster instance concurrency set {TRAINING_POOL} 2"))
    else:
        findings.append(Finding(OK, "training pool", f"{TRAINING_POOL}: at most {pool.limit} training steps at once "
                                f"({len(pool.claimed_slots)} claimed, {len(pool.pending_steps)} waiting)"))
    if instance.run_retries_enabled:
        on_steps = "also" if instance.run_retries_retry_on_asset_or_op_failure else "not"
        findings.append(Finding(OK, "run retries", f"up to {instance.run_retries_max_retries} retries of a failed run, "
                                f"from the failure ({on_steps} when a step failed)"))
    else:
        findings.append(Finding(WARN, "run retries", "disabled: a run that lost its worker or database stays failed",
                                "run_retries: {enabled: true} in dagster.yaml"))
    if instance.run_monitoring_enabled:
        findings.append(Finding(OK, "run monitoring", f"start timeout {instance.run_monitoring_start_timeout_seconds} s, "
                                f"run-time limit {instance.run_monitoring_max_runtime_seconds or 'none'} s"))
    else:
        findings.append(Finding(WARN, "run monitoring", "disabled: a run whose worker died stays STARTED forever",
                                "run_monitoring: {enabled: true} in dagster.yaml"))
    batch = os.environ.get("DAGSTER_EVENT_BATCH_SIZE")
    if batch and batch.isdigit() and int(batch) > 0:
        findings.append(Finding(OK, "event batching", f"DAGSTER_EVENT_BATCH_SIZE={batch}"))
    else:
        findings.append(Finding(WARN, "event batching", "DAGSTER_EVENT_BATCH_SIZE is not set: batched events are "
                                "written one by one", "export DAGSTER_EVENT_BATCH_SIZE=100 (depmesh run/dev/worker "
                                "set it themselves)"))
    return findings


def check_daemon(instance) -> list[Finding]:
    from dagster._daemon.controller import get_daemon_statuses

    required = list(instance.get_required_daemon_types())
    statuses = get_daemon_statuses(instance, required, curr_time_seconds=time.time())
    beating = {t: s for t, s in statuses.items() if s.last_heartbeat is not None}
    if not beating:
        return [Finding(FAIL, "daemon", "no daemon heartbeat: schedules, sensors (coordinated retraining), the run "
                        "queue and run monitoring do nothing", "dagster-daemon run -m depmesh.definitions "
                        "(same DAGSTER_HOME), or `depmesh dev`")]
    unhealthy = sorted(t for t, s in statuses.items() if not s.healthy)
    newest = max(s.last_heartbeat.timestamp for s in beating.values())
    if unhealthy:
        return [Finding(FAIL, "daemon", f"daemons without a recent healthy heartbeat: {', '.join(unhealthy)} "
                        f"(newest heartbeat {time.time() - newest:.0f} s ago)", "restart dagster-daemon; its log says why")]
    return [Finding(OK, "daemon", f"{len(beating)} daemons heartbeating, the newest {time.time() - newest:.0f} s ago")]


def check_executor(instance) -> list[Finding]:
    from depmesh.execution import (
        BROKER_ENV,
        EXECUTOR_ENV,
        ExecutorConfigError,
        build_executor,
        executor_name,
    )

    try:
        name = executor_name()
        build_executor(name)
    except ExecutorConfigError as exc:
        return [Finding(FAIL, "executor", str(exc))]
    if name == "in_process":
        return [Finding(OK, "executor", f"in_process (the default; {EXECUTOR_ENV} picks another): each run's steps "
                        "in the run's own process")]
    if name in ("multiprocess", "k8s"):
        return [Finding(OK, "executor", f"{name} ({EXECUTOR_ENV})")]
    findings = []
    if instance is not None and "Sqlite" in type(instance.run_storage).__name__:
        findings.append(Finding(FAIL, "executor", "celery workers need a shared instance, and this one is SQLite",
                                "export DAGSTER_POSTGRES_URL=..."))
    broker = os.environ[BROKER_ENV]
    workers, error = celery_workers(broker)
    if error:
        findings.append(Finding(FAIL, "executor", f"celery broker {_safe(broker)} is unreachable: {error}"))
    elif not workers:
        findings.append(Finding(FAIL, "executor", f"celery on {_safe(broker)}: no worker answered", "depmesh worker"))
    else:
        findings.append(Finding(OK, "executor", f"celery on {_safe(broker)}: {len(workers)} worker(s) answered: "
                                f"{', '.join(sorted(workers))}"))
    return findings


def celery_workers(broker: str, timeout: float = 2.0) -> tuple[list[str], str | None]:
    """(names of the workers that answered a ping, error reaching the broker)."""
    from celery import Celery

    app = Celery("depmesh-doctor", broker=broker)
    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=timeout)
        answers = app.control.ping(timeout=timeout) or []
    except Exception as exc:  # noqa: BLE001 - a broker we cannot reach is the finding
        return [], _masked(str(exc).splitlines()[0], broker) if str(exc) else type(exc).__name__
    finally:
        app.close()
    return [name for answer in answers for name in answer], None


def check_storage(home: Path) -> list[Finding]:
    """Where tables and artifacts go; on an object store, a probe object written, read back and removed."""
    import uuid

    from depmesh import storage

    url = os.environ.get(storage.STORAGE_URL_ENV, "").strip()
    shown = _safe(url) if url else ""
    if not url:
        return [Finding(OK, "storage", f"tables and artifacts on local disk under {home / 'storage' / 'depmesh'} "
                                       f"(set {storage.STORAGE_URL_ENV}=s3://bucket/prefix for workers on other machines)")]
    try:
        root = storage.location(url)
        probe = root / f".depmesh-doctor-{uuid.uuid4().hex}"
        payload = uuid.uuid4().bytes
        storage.write_whole(probe, payload)
        try:
            if probe.read_bytes() != payload:
                return [Finding(FAIL, "storage", f"{shown}: a probe object read back different bytes")]
        finally:
            probe.unlink(missing_ok=True)
    except storage.StorageConfigError as exc:
        return [Finding(FAIL, "storage", _masked(str(exc), url))]
    except Exception as exc:  # noqa: BLE001 - any failure to reach the store (no credentials, a bad URL) is the finding
        first = str(exc).splitlines()[0] if str(exc) else ""
        return [Finding(FAIL, "storage", _masked(f"{shown}: cannot write and read back a probe object: "
                                                 f"{type(exc).__name__}: {first}", url),
                        "check the bucket, the endpoint (AWS_ENDPOINT_URL) and the credentials in the environment")]
    return [Finding(OK, "storage", f"tables and artifacts on {shown} (a probe object written, read back, removed)")]


def diagnose(home: Path) -> list[Finding]:
    findings, instance = check_instance(home)
    try:
        findings += check_registry(home)
        if instance is not None:
            findings += check_run_settings(instance)
            findings += check_daemon(instance)
        findings += check_executor(instance)
        findings += check_storage(home)
    finally:
        if instance is not None:
            instance.dispose()
    return findings

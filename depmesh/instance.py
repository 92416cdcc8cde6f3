"""Which Dagster instance depmesh runs on.

Embedded by default: with nothing set, a SQLite instance under
``./.dagster_home`` (or ``$DAGSTER_HOME``), no server needed. One setting
moves it to PostgreSQL: ``DAGSTER_POSTGRES_URL``. The instance then uses the
repository's top-level ``dagster.yaml`` (run, event-log and schedule storage
in PostgreSQL through dagster-postgres) under ``./.dagster_home_pg``.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from depmesh.keys import POSTGRES_ENV

TEAM_CONFIG = Path(__file__).resolve().parent.parent / "dagster.yaml"
EMBEDDED_CONFIG = """\
# Written by depmesh: the embedded default. Run, event-log and schedule storage
# are SQLite files in this folder; no server needed.
telemetry:
  enabled: false

# As in the team configuration: model steps take a slot of the
# depmesh_training pool, so at most 2 models train at once across all runs
# (the UI and the daemon of `depmesh dev` launch runs side by side).
concurrency:
  pools:
    default_limit: 2
    granularity: op

# Runs tagged dagster/max_retries are retried by the daemon (the serve_production
# sensor's re-scores are); other runs are not (max_retries 0).
run_retries:
  enabled: true
  max_retries: 0
"""


def uses_postgres() -> bool:
    return bool(os.environ.get(POSTGRES_ENV))


def default_home() -> Path:
    if os.environ.get("DAGSTER_HOME"):
        return Path(os.environ["DAGSTER_HOME"])
    return Path.cwd() / (".dagster_home_pg" if uses_postgres() else ".dagster_home")


def prepare_home(home: Path | None = None) -> Path:
    """Create the instance folder and its dagster.yaml if it has none."""
    home = (home or default_home()).resolve()
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        if uses_postgres():
            if not TEAM_CONFIG.exists():
                raise RuntimeError(
                    f"{POSTGRES_ENV} is set but the team configuration {TEAM_CONFIG} is missing; "
                    "set DAGSTER_HOME to a folder whose dagster.yaml configures PostgreSQL storage"
                )
            shutil.copyfile(TEAM_CONFIG, config)
        else:
            config.write_text(EMBEDDED_CONFIG)
    return home


def get_instance(home: Path | None = None):
    """The DagsterInstance at ``home`` (prepared first)."""
    from dagster import DagsterInstance

    home = prepare_home(home)
    os.environ["DAGSTER_HOME"] = str(home)
    return DagsterInstance.from_config(str(home))


def storage_kind(instance) -> str:
    return type(instance.run_storage).__name__

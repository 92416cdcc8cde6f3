"""A step that lost its database connection is retried (Dagster's RetryRequested) instead of failing its run."""

from __future__ import annotations

import contextlib
import logging
import threading

from dagster import (
    AssetExecutionContext,
    RetryRequested,
)

DATABASE_RETRIES = 2
DATABASE_RETRY_WAIT_S = 5


class LostDatabaseConnection(RuntimeError):
    """The step's database connection dropped and was re-established while it ran."""


class _ConnectionRetries(logging.Handler):
    """Collects dagster-postgres' "Retrying failed database connection"
    warnings in this process: Dagster rides out a short database restart by
    reconnecting, and depmesh does not let that pass unseen."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.seen: list[str] = []
        self.reported = 0

    def emit(self, record: logging.LogRecord) -> None:
        if str(record.msg).startswith("Retrying failed database connection"):
            self.seen.append(record.getMessage().splitlines()[0][:300])


_watcher: _ConnectionRetries | None = None
_watcher_lock = threading.Lock()


def connection_watcher() -> _ConnectionRetries:
    global _watcher
    with _watcher_lock:
        if _watcher is None:
            _watcher = _ConnectionRetries()
            logging.getLogger().addHandler(_watcher)
        return _watcher


@contextlib.contextmanager
def retry_on_lost_database(context: AssetExecutionContext, name: str):
    """Around a step's body:
    - reconnections Dagster made since the last step (writing events between
      steps) are reported in the run as a warning: everything was stored, but
      the run says the database went away;
    - a step during which the connection dropped (the instance's or the
      registry's) stores nothing from that attempt and asks Dagster to run it
      again in a few seconds: a STEP_UP_FOR_RETRY event with the error;
    - any other error fails the step as it is.
    Yields a function to call before storing the output."""
    from depmesh.registry.store import is_transient_database_error

    watcher = connection_watcher()
    missed = watcher.seen[watcher.reported:]
    if missed:
        context.log.warning(f"depmesh: the database connection dropped before {name} and Dagster re-established it "
                            f"({len(missed)} reconnect attempt(s), first: {missed[0]}); every event was stored")
    watcher.reported = mark = len(watcher.seen)

    def guard() -> None:
        if len(watcher.seen) > mark:
            watcher.reported = len(watcher.seen)
            raise LostDatabaseConnection(f"{name}: the database connection dropped while the step ran "
                                         f"({watcher.seen[mark]}); nothing from this attempt is stored")

    try:
        yield guard
    except Exception as exc:
        if not is_transient_database_error(exc):
            raise
        context.log.warning(f"depmesh: {name} lost its database connection ({type(exc).__name__}: "
                            f"{str(exc).splitlines()[0][:200]}); Dagster retries the step in {DATABASE_RETRY_WAIT_S} s")
        raise RetryRequested(max_retries=DATABASE_RETRIES, seconds_to_wait=DATABASE_RETRY_WAIT_S) from exc

"""Sending OpenLineage events, configured the client's standard way, never slowing or breaking a run.

Configured means any of what openlineage-python reads: ``OPENLINEAGE_URL`` (with ``OPENLINEAGE_API_KEY`` and
``OPENLINEAGE_ENDPOINT``), ``OPENLINEAGE_CONFIG`` or an ``openlineage.yml`` in the working directory or
``~/.openlineage``, or ``OPENLINEAGE__TRANSPORT__TYPE`` (and its ``OPENLINEAGE__TRANSPORT__...`` settings); ``OPENLINEAGE_DISABLED=true`` turns it off.
With nothing configured nothing is built or sent (the client would otherwise print every event). From
``OPENLINEAGE_URL`` the HTTP transport gets a short timeout and a few quick retries; a failure is logged and the
step goes on.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

log = logging.getLogger("depmesh.lineage")

TIMEOUT_S = 2.0
RETRIES = 2
QUIET_AFTER_FAILURE_S = 60.0  # after a delivery fails, this process sends nothing for this long
_failed_at: list[float] = []


def configured() -> bool:
    if os.environ.get("OPENLINEAGE_DISABLED", "").strip().lower() == "true":
        return False
    if os.environ.get("OPENLINEAGE_URL") or os.environ.get("OPENLINEAGE__TRANSPORT__TYPE"):
        return True
    config = os.environ.get("OPENLINEAGE_CONFIG")
    if config and Path(config).is_file():
        return True
    return any(p.is_file() for p in (Path.cwd() / "openlineage.yml", Path.home() / ".openlineage" / "openlineage.yml"))


def client() -> Any:
    """An OpenLineage client as configured (None when nothing is). The client writes aliases of
    ``OPENLINEAGE_URL`` into the environment as it reads it; they are taken out again, so a long-lived process
    (the daemon, the UI) whose URL is later unset is not left configured by them."""
    if not configured():
        return None
    before = {k: v for k, v in os.environ.items() if k.startswith("OPENLINEAGE__")}
    try:
        return _client()
    finally:
        for key in [k for k in os.environ if k.startswith("OPENLINEAGE__") and k not in before]:
            del os.environ[key]
        os.environ.update(before)


def _client() -> Any:
    from openlineage.client import OpenLineageClient

    url = os.environ.get("OPENLINEAGE_URL")
    if url and not os.environ.get("OPENLINEAGE_CONFIG") and not os.environ.get("OPENLINEAGE__TRANSPORT__TYPE"):
        from openlineage.client.transport.http import HttpConfig, HttpTransport

        settings: dict[str, Any] = {
            "url": url, "endpoint": os.environ.get("OPENLINEAGE_ENDPOINT", "api/v1/lineage"), "timeout": TIMEOUT_S,
            "retry": {"total": RETRIES, "connect": RETRIES, "read": RETRIES, "backoff_factor": 0.1,
                      "status_forcelist": [500, 502, 503, 504]}}
        if os.environ.get("OPENLINEAGE_API_KEY"):
            settings["auth"] = {"type": "api_key", "apiKey": os.environ["OPENLINEAGE_API_KEY"]}
        return OpenLineageClient(transport=HttpTransport(HttpConfig.from_dict(settings)))
    return OpenLineageClient()


def emit(sender: Any, events: list[Any], what: str, logger: Any = None) -> int:
    """Send ``events`` in order; returns how many were sent. A failure is logged, never raised, and for a
    minute this process does not try again (an endpoint that is down costs a run one failed attempt, not one
    per step)."""
    import time

    if _failed_at and time.monotonic() - _failed_at[-1] < QUIET_AFTER_FAILURE_S:
        (logger or log).warning(f"depmesh: OpenLineage events for {what} not sent: the endpoint failed "
                                f"{time.monotonic() - _failed_at[-1]:.0f} s ago; the run goes on")
        return 0
    sent = 0
    for event in events:
        try:
            sender.emit(event)
            sent += 1
        except Exception as exc:  # noqa: BLE001 - lineage delivery never fails the step
            _failed_at.append(time.monotonic())
            (logger or log).warning(f"depmesh: OpenLineage event for {what} not delivered ({type(exc).__name__}: "
                                    f"{str(exc)[:200]}); the run goes on")
            return sent
    return sent

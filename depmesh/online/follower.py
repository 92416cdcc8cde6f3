"""The server follows the registry: it polls the mesh's registry revision and active rollout (every
``poll_s``, at most a second), and when either moves it loads and verifies the whole new set in this thread,
then swaps the one reference requests read. Until the new set is complete the old one answers; a set that
does not verify is refused (logged, counted, shown by /v1/release) and the old one keeps serving."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from depmesh.online.served import Loader, ServedSet, SetRefused, from_registry

log = logging.getLogger("depmesh.serve")

FLUSH_S = 2.0  # how often a rollout's online figures are written
RETRY_REFUSED_S = 10.0  # a refused set is tried again after this long even if the registry has not moved


class Holder:
    """The served set (one reference, swapped whole) and what the server knows about swaps and refusals."""

    def __init__(self, metrics: Any = None):
        self.current: ServedSet | None = None
        self.metrics = metrics
        self.last_refusal: dict[str, Any] | None = None

    def swap(self, new: ServedSet) -> None:
        old, self.current = self.current, new
        if self.metrics is not None:
            self.metrics.swaps.inc()
            self.metrics.release.set(new.release_id or 0)
            self.metrics.revision.set(new.revision or 0)
        log.warning("depmesh serve: now serving release %s (registry revision %s)%s%s", new.release_id, new.revision,
                    f", {new.rollout.mode} rollout {new.rollout.id} at {new.rollout.percent:g}%" if new.rollout else "",
                    f"; was release {old.release_id}" if old is not None else "")

    def refuse(self, signature: tuple, reason: str) -> None:
        self.last_refusal = {"signature": list(signature), "reason": reason,
                             "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        if self.metrics is not None:
            self.metrics.swap_refusals.inc()
        log.error("depmesh serve: refused the new set (registry %s): %s; still serving release %s", signature,
                  reason, self.current.release_id if self.current else None)


def signature_of(registry: Any) -> tuple:
    """What decides the served set: the registry revision and Production release, and the active rollout's
    id and step."""
    from depmesh.rollout.serving import active_rollout

    state = registry.state()
    rollout = active_rollout(registry)
    return (state["revision"], state["production_release_id"],
            None if rollout is None else rollout["id"], None if rollout is None else rollout["step"])


class Follower(threading.Thread):
    def __init__(self, registry: Any, holder: Holder, loader: Loader, figures: Any, poll_s: float = 0.25):
        super().__init__(name="depmesh-serve-follower", daemon=True)
        self.registry, self.holder, self.loader, self.figures = registry, holder, loader, figures
        self.poll_s = min(poll_s, 1.0)
        self.stopped = threading.Event()
        self._refused: tuple[tuple, float] | None = None
        self._flushed = time.monotonic()

    def load_once(self) -> None:
        """Build the set the registry names now, and swap it in (or refuse it)."""
        signature = signature_of(self.registry)
        current = self.holder.current
        if current is not None and current.signature == signature:
            return
        if self._refused is not None and self._refused[0] == signature and \
                time.monotonic() - self._refused[1] < RETRY_REFUSED_S:
            return
        try:
            new = from_registry(self.registry, self.loader, signature)
        except SetRefused as exc:
            self._refused = (signature, time.monotonic())
            self.holder.refuse(signature, str(exc))
            return
        if current is not None and current.rollout is not None and self.figures is not None:
            self.figures.flush(self.registry)  # the old step's figures belong to the old step
        self._refused = None
        self.holder.swap(new)

    def run(self) -> None:
        while not self.stopped.wait(self.poll_s):
            try:
                self.load_once()
                if self.figures is not None and time.monotonic() - self._flushed >= FLUSH_S:
                    self._flushed = time.monotonic()
                    self.figures.flush(self.registry)
            except Exception:  # noqa: BLE001 - a registry that cannot be read now is read again next poll
                log.exception("depmesh serve: could not read the registry; still serving what is loaded")

    def stop(self) -> None:
        self.stopped.set()
        self.join(timeout=10)
        if self.figures is not None:
            try:
                self.figures.flush(self.registry)
            except Exception:  # noqa: BLE001
                log.exception("depmesh serve: the last online rollout figures could not be written")

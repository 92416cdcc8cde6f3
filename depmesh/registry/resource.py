"""The registry as a Dagster resource: SQLite beside the instance, or
PostgreSQL with DAGSTER_POSTGRES_URL; migrated on first use."""

from __future__ import annotations

import threading
from pathlib import Path

from dagster import ConfigurableResource, InitResourceContext
from pydantic import PrivateAttr

from depmesh.registry.store import Registry, default_url

_lock = threading.Lock()
_migrated: set[str] = set()


def open_registry(url: str) -> Registry:
    """A registry at ``url`` with its schema at the newest migration."""
    registry = Registry(url)
    with _lock:
        if url not in _migrated:
            registry.migrate()
            _migrated.add(url)
    return registry


class RegistryResource(ConfigurableResource):
    """``url`` empty: the default for the instance (see depmesh.registry.store.default_url)."""

    url: str = ""
    _registry: Registry | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: InitResourceContext) -> None:
        url = self.url
        if not url:
            if context.instance is None:
                raise RuntimeError("the registry resource needs a Dagster instance or an explicit url")
            url = default_url(Path(context.instance.root_directory))
        self._registry = open_registry(url)

    def teardown_after_execution(self, context: InitResourceContext) -> None:
        if self._registry is not None:
            self._registry.dispose()

    @property
    def registry(self) -> Registry:
        assert self._registry is not None, "resource not set up"
        return self._registry
